"""Rule 4: the node agent never links the database or the control plane.

(a) its normal and build workspace dependencies are among layout.NODE_AGENT_ALLOWED;
(b) its resolved normal dependency tree holds none of layout.NODE_AGENT_FORBIDDEN, checked twice:
    as resolved for the agent alone (`cargo tree -p node-agent -e normal`), and as a workspace build
    unifies features (`cargo tree --workspace -e normal -i <crate>` must not list the agent);
(c) shared-ids, which the agent links, has no database dependency at all, optional or not: a feature
    that some other crate turns on would be unified into the agent by a workspace build.
"""

from __future__ import annotations

from .. import layout
from ..model import Crate, Dep, tree_packages
from ._selftest import Expect, add_dep, good_crates, mutate, without

NAME = "4 node-agent-tree"
SUMMARY = "the node agent's dependency tree (alone and workspace-unified) holds no database or control plane"


def _agent(crates: list[Crate]) -> Crate | None:
    return next((c for c in crates if c.path == layout.NODE_AGENT_PATH), None)


def _expected(c: Crate) -> str:
    p = layout.place(c.path)
    return p.expected_name if p else c.name


def forbidden_names(crates: list[Crate]) -> set[str]:
    """Actual names of the workspace crates the agent must not link (also mid-rename)."""
    return {c.name for c in crates if layout.name_matches(_expected(c), layout.NODE_AGENT_FORBIDDEN)}


def is_forbidden(name: str, crates: list[Crate]) -> bool:
    return layout.name_matches(name, layout.NODE_AGENT_FORBIDDEN) or name in forbidden_names(crates)


def specs(crates: list[Crate], locked: list[tuple[str, str]]) -> list[str]:
    """The `cargo tree -i` specs to check: every forbidden package in the lock file (`name@version`
    where the lock holds several versions), and every forbidden workspace crate."""
    versions: dict[str, list[str]] = {}
    for name, version in locked:
        if is_forbidden(name, crates):
            versions.setdefault(name, []).append(version)
    out = []
    for name in sorted(versions):
        vs = versions[name]
        out += [name] if len(vs) == 1 else [f"{name}@{v}" for v in sorted(vs)]
    out += sorted(n for n in forbidden_names(crates) if n not in versions)
    return out


def check(crates: list[Crate], agent_tree: str | None, inverted: dict[str, str],
          errors: list[str] | None = None) -> list[str]:
    out = []
    agent = _agent(crates)
    ids = next((c for c in crates if c.path == layout.SHARED_IDS_PATH), None)
    if ids is not None:
        for d in ids.deps:
            if layout.name_matches(d.name, layout.SHARED_IDS_FORBIDDEN):
                kind = f"{d.kind}-" if d.kind else ("optional " if d.optional else "")
                out.append(
                    f"{ids.where(d)}: {ids.name} has a {kind}dependency on {d.name}: the node agent links the typed "
                    "ids, so they must not know the database at all (a feature turned on elsewhere would be "
                    "unified into the agent); put the sqlx impls in shared-kernel or the domain crate"
                )
    if agent is None:
        return out + [f"no workspace crate at {layout.NODE_AGENT_PATH}/: did the layout change? (layout.NODE_AGENT_PATH)"]
    by_name = {c.name: c for c in crates}
    for d in agent.deps:
        t = by_name.get(d.name)
        if d.is_dev or t is None:
            continue
        if not layout.name_matches(_expected(t), layout.NODE_AGENT_ALLOWED):
            out.append(
                f"{agent.where(d)}: {agent.name} depends on workspace crate {d.name}: the agent may use only "
                f"{', '.join(layout.NODE_AGENT_ALLOWED)} (move what it needs into the node contract or runtime)"
            )
    by_cause: dict[str, list[str]] = {}
    for e in errors or []:
        command, _, cause = e.partition(" failed: ")
        by_cause.setdefault(cause, []).append(command)
    for cause, commands in by_cause.items():
        more = f" and {len(commands) - 1} more" if len(commands) > 1 else ""
        hint = (" (Cargo.lock is stale: update it with `cargo update --workspace --offline`)"
                if "lock file" in cause else "")
        out.append(f"{agent.manifest}: cannot resolve the agent's dependency tree: {commands[0]}{more} failed: "
                   f"{cause}{hint}")
    if agent_tree is not None:
        pkgs = tree_packages(agent_tree)
        if not pkgs or pkgs[0][0] != agent.name:
            out.append(f"{agent.manifest}: `cargo tree -p {agent.name}` output does not start with {agent.name}")
        seen: set[tuple[str, str]] = set()
        for name, version in pkgs[1:]:
            if is_forbidden(name, crates) and (name, version) not in seen:
                seen.add((name, version))
                out.append(
                    f"{agent.manifest}: {agent.name} links {name} v{version} (`cargo tree -p {agent.name} -e normal`): "
                    "the node agent never links the database or the control plane; find the path with "
                    f"`cargo tree -p {agent.name} -e normal -i {name}` and cut it"
                )
    linked_alone = {name for name, _ in tree_packages(agent_tree or "")[1:]}
    for spec, text in sorted(inverted.items()):
        if spec.split("@")[0] in linked_alone:  # reported above: the agent links it on its own
            continue
        if any(name == agent.name for name, _ in tree_packages(text)[1:]):
            out.append(
                f"{agent.manifest}: a workspace build links {spec} into {agent.name} "
                f"(`cargo tree --workspace -e normal -i {spec}` lists it): a feature another crate enables is "
                f"unified into a crate the agent shares; find it with `cargo tree --workspace -e normal,features -i {spec}` "
                "and take the database out of that shared crate (not even behind a feature)"
            )
    return out


_GOOD_AGENT = """node-agent v0.1.0 (/w/node-agent)
anyhow v1.0.100
contract-node v0.1.0 (/w/contracts/node)
shared-ids v0.1.0 (/w/domains/shared/ids)
serde v1.0.228
temporalio-sdk v1.1.1
postgres-protocol v0.6.8
api-types v0.1.0 (/w/api/types)
shared-ids v0.1.0 (/w/domains/shared/ids) (*)
runtime v0.1.0 (/w/runtime)
"""
_GOOD_SQLX_INVERTED = """sqlx v0.8.6
shared-kernel v0.1.0 (/w/domains/shared/kernel)
platform-iam v0.1.0 (/w/domains/platform/iam)
activities v0.1.0 (/w/activities)
workers v0.1.0 (/w/workers)
e2e v0.1.0 (/w/e2e)
api v0.1.0 (/w/api)
e2e v0.1.0 (/w/e2e) (*)
"""


def self_test() -> list[str]:
    e = Expect("4")
    good = good_crates()
    inv = {"sqlx": _GOOD_SQLX_INVERTED}
    e.good("good crate graph and trees", check(good, _GOOD_AGENT, inv))
    # (a) direct workspace dependencies
    for dep in ("shared-kernel", "activities", "workflows", "platform-iam", "product-gpuaas", "api"):
        e.bad(f"agent -> {dep}", check(add_dep("node-agent", Dep(dep, line=14)), _GOOD_AGENT, inv),
              "node-agent/Cargo.toml:14", dep)
    e.bad("agent -build-> shared-kernel", check(add_dep("node-agent", Dep("shared-kernel", "build")), _GOOD_AGENT, inv),
          "shared-kernel")
    e.good("agent -dev-> workers", check(add_dep("node-agent", Dep("workers", "dev")), _GOOD_AGENT, inv))
    # (b) the agent's own tree
    for line in ("sqlx v0.8.6", "sqlx-core v0.8.6", "sqlx-postgres v0.8.6", "sqlx-macros v0.8.6 (proc-macro)",
                 "tokio-postgres v0.7.13", "postgres v0.19.10", "shared-kernel v0.1.0 (/w/domains/shared/kernel)",
                 "platform-billing v0.1.0 (/w/domains/platform/billing)", "product-gpuaas v0.1.0 (/w/x) (*)",
                 "activities v0.1.0 (/w/activities)", "workflows v0.1.0 (/w/workflows)", "api v0.1.0 (/w/api)",
                 "workers v0.1.0 (/w/workers)"):
        name = line.split()[0]
        e.bad(f"agent tree holds {name}", check(good, _GOOD_AGENT + line + "\n", inv), f"links {name} v")
    renamed = mutate(lambda c: setattr(c["shared-kernel"], "name", "gpuaas-shared"))
    e.bad("agent tree holds the kernel under an old name",
          check(renamed, _GOOD_AGENT + "gpuaas-shared v0.1.0 (/w/domains/shared/kernel)\n", inv), "gpuaas-shared")
    e.bad("tree of another crate", check(good, "api v0.1.0 (/w/api)\nserde v1.0.0\n", inv), "does not start with")
    e.bad("tree not resolved", check(good, None, {}, ["`cargo tree -p node-agent` failed: lock"]), "cannot resolve")
    stale = [f"`cargo tree -i {n}` failed: error: cannot update the lock file" for n in ("a", "b", "c")]
    one = check(good, None, {}, stale)
    if len(one) != 1 or "and 2 more" not in one[0] or "stale" not in one[0]:
        e.failures.append(f"rule 4: one failure cause is reported once, with a hint: got {one}")
    # (b) the workspace-unified tree
    e.bad("unified: agent under sqlx", check(good, _GOOD_AGENT, {"sqlx": _GOOD_SQLX_INVERTED
                                                             + "shared-ids v0.1.0 (/w/domains/shared/ids)\n"
                                                             + "node-agent v0.1.0 (/w/node-agent)\n"}), "-i sqlx")
    e.bad("unified: agent under sqlx-core, deduplicated",
          check(good, _GOOD_AGENT, {"sqlx-core@0.8.6": "sqlx-core v0.8.6\nnode-agent v0.1.0 (/w/node-agent) (*)\n"}),
          "sqlx-core@0.8.6")
    both = check(good, _GOOD_AGENT + "sqlx v0.8.6\n", {"sqlx": "sqlx v0.8.6\nnode-agent v0.1.0 (/w/node-agent)\n"})
    if len(both) != 1:
        e.failures.append(f"rule 4: a crate the agent links on its own is reported once, got {both}")
    e.good("unified: agent as the root only", check(good, _GOOD_AGENT, {"x": "node-agent v0.1.0 (/w/node-agent)\n"}))
    # (c) shared-ids and the database
    for dep in (Dep("sqlx", optional=True), Dep("sqlx"), Dep("sqlx-core"), Dep("sqlx", "dev"), Dep("tokio-postgres")):
        e.bad(f"shared-ids -> {dep.name} ({dep.kind or ('optional' if dep.optional else 'normal')})",
              check(add_dep("shared-ids", dep), _GOOD_AGENT, inv), "domains/shared/ids/Cargo.toml", dep.name)
    e.bad("agent missing", check(without("node-agent"), None, {}), "node-agent/")
    # which trees to invert
    locked = [("sqlx", "0.8.6"), ("sqlx", "0.7.4"), ("sqlx-core", "0.8.6"), ("postgres-types", "0.2.0"),
              ("serde", "1.0.0"), ("shared-kernel", "0.1.0"), ("platform-iam", "0.1.0")]
    got = specs(good, locked)
    want = ["platform-iam", "shared-kernel", "sqlx@0.7.4", "sqlx@0.8.6", "sqlx-core",
            "activities", "api", "product-gpuaas", "workers", "workflows"]
    if got != want:
        e.failures.append(f"rule 4: specs(): got {got}, want {want}")
    return e.failures
