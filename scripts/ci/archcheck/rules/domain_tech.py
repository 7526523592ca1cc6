"""Rule 2: domain crates (domains/*) know nothing of Temporal or HTTP: no normal or build
dependency on temporalio-*, axum, tower, hyper, reqwest or tonic."""

from __future__ import annotations

from .. import layout
from ..model import Crate, Dep, under
from ._selftest import Expect, add_dep, good_crates

NAME = "2 domain-tech"
SUMMARY = "domains/* know nothing of Temporal or HTTP"


def forbidden(dep: str) -> bool:
    if any(dep.startswith(p) for p in layout.DOMAIN_FORBIDDEN_PREFIXES):
        return True
    return any(dep == f or dep.startswith(f + "-") for f in layout.DOMAIN_FORBIDDEN_CRATES)


def check(crates: list[Crate]) -> list[str]:
    out = []
    for c in crates:
        if not under(c.path + "/", layout.DOMAINS_DIR):
            continue
        for d in c.deps:
            if not d.is_dev and forbidden(d.name):
                out.append(
                    f"{c.where(d)}: {c.name} ({c.path}) depends on {d.name}: domain crates know nothing of "
                    "Temporal, axum or HTTP (put the adapter in activities/, contracts/ or api/)"
                )
    return out


def self_test() -> list[str]:
    e = Expect("2")
    e.good("good crate graph", check(good_crates()))
    for crate in ("shared-ids", "shared-kernel", "platform-iam", "product-gpuaas"):
        for dep in ("temporalio-sdk", "temporalio-common", "axum", "tower-http", "hyper", "reqwest", "tonic"):
            e.bad(f"{crate} -> {dep}", check(add_dep(crate, Dep(dep, line=7))), "Cargo.toml:7", dep)
    e.bad("build-dependency", check(add_dep("platform-iam", Dep("tonic", "build"))), "tonic")
    e.good("dev-dependency exempt", check(add_dep("product-gpuaas", Dep("reqwest", "dev"))))
    e.good("towerlike name is not tower", check(add_dep("product-gpuaas", Dep("towering"))))
    e.good("contracts may use Temporal", check(add_dep("contract-node", Dep("temporalio-macros"))))
    return e.failures
