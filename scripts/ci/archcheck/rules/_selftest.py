"""Helpers for the rules' self-tests: an expectation recorder and a good synthetic workspace."""

from __future__ import annotations

import copy

from ..model import Crate, Dep, Target


class Expect:
    """Collects failures: `good` inputs must pass, `bad` inputs must be caught."""

    def __init__(self, rule: str):
        self.rule = rule
        self.failures: list[str] = []

    def good(self, label: str, violations: list[str]) -> None:
        if violations:
            self.failures.append(f"rule {self.rule}: {label}: expected no violation, got {violations}")

    def bad(self, label: str, violations: list[str], *mentions: str) -> None:
        """A violation is expected; if `mentions` are given, one violation must contain them all
        (a file:line, the name of the culprit), so messages stay useful."""
        if not violations:
            self.failures.append(f"rule {self.rule}: {label}: expected a violation, got none")
        elif mentions and not any(all(m in v for m in mentions) for v in violations):
            self.failures.append(f"rule {self.rule}: {label}: no violation mentions {list(mentions)}: {violations}")


LINTS = "\n[lints]\nworkspace = true\n"


def _crate(name: str, path: str, deps: list[Dep], targets: list[Target] | None = None) -> Crate:
    lib = path + "/src/lib.rs"
    manifest = f'[package]\nname = "{name}"\n\n[dependencies]\n' + "".join(
        f"{d.name}.workspace = true\n" for d in deps if d.kind is None) + LINTS
    return Crate(name, path, deps, {}, targets or [Target(name.replace("-", "_"), ["lib"], lib)], manifest)


def good_crates() -> list[Crate]:
    """The target layout, as a valid crate graph."""
    D = Dep
    return [
        _crate("shared-ids", "domains/shared/ids", [D("serde"), D("uuid")]),
        _crate("shared-kernel", "domains/shared/kernel", [D("shared-ids"), D("sqlx"), D("tokio"), D("thiserror")]),
        _crate("platform-iam", "domains/platform/iam", [D("shared-kernel"), D("shared-ids"), D("sqlx")]),
        _crate("product-gpuaas", "domains/products/gpuaas",
               [D("shared-kernel"), D("shared-ids"), D("platform-iam"), D("sqlx"),
                D("shared-kernel", "dev", features=["testing"])],
               [Target("product_gpuaas", ["lib"], "domains/products/gpuaas/src/lib.rs"),
                Target("placement", ["bench"], "domains/products/gpuaas/benches/placement.rs")]),
        _crate("contract-node", "contracts/node", [D("shared-ids"), D("temporalio-sdk"), D("serde")]),
        _crate("activities", "activities",
               [D("contract-node"), D("product-gpuaas"), D("platform-iam"), D("shared-kernel"), D("shared-ids"),
                D("sqlx"), D("temporalio-sdk")]),
        _crate("workflows", "workflows", [D("activities"), D("contract-node"), D("temporalio-workflow")]),
        _crate("api", "api", [D("workflows"), D("product-gpuaas"), D("api-types"), D("runtime"), D("axum")],
               [Target("api", ["lib"], "api/src/lib.rs"), Target("gpuaas-api", ["bin"], "api/src/main.rs")]),
        _crate("workers", "workers", [D("workflows"), D("activities"), D("runtime"), D("api", "dev")]),
        _crate("node-agent", "node-agent",
               [D("contract-node"), D("api-types"), D("runtime"), D("shared-ids"), D("reqwest"), D("sqlx", "dev")]),
        _crate("e2e", "e2e",
               [D("api", "dev"), D("workers", "dev"), D("node-agent", "dev"), D("cli", "dev"), D("tokio")],
               [Target("e2e", ["lib"], "e2e/src/lib.rs"), Target("platform", ["test"], "e2e/tests/platform/main.rs"),
                Target("provisioning", ["bench"], "e2e/benches/provisioning.rs")]),
        _crate("runtime", "runtime", [D("tokio"), D("tracing")]),
        _crate("api-types", "api/types", [D("shared-ids"), D("serde")]),
        _crate("cli", "cli", [D("api-types"), D("shared-ids"), D("reqwest")],
               [Target("gpuaas", ["bin"], "cli/src/main.rs")]),
    ]


def mutate(edit) -> list[Crate]:
    """good_crates() after `edit({name: crate})`."""
    crates = copy.deepcopy(good_crates())
    edit({c.name: c for c in crates})
    return crates


def add_dep(crate: str, dep: Dep) -> list[Crate]:
    return mutate(lambda c: c[crate].deps.append(dep))


def with_crate(crate: Crate) -> list[Crate]:
    return good_crates() + [crate]


def without(path: str) -> list[Crate]:
    return [c for c in good_crates() if c.path != path]
