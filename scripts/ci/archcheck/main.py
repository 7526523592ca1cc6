"""Runs every rule's self-test, then loads the real tree once and feeds every rule."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from . import layout, lexers, model
from .rules import RULES, domain_edges, domain_tech, layers, lints, no_sql_outside_domains, node_agent_tree
from .rules import one_e2e_binary, resource_names, sql_ownership, thin_handlers, vocabulary, where_a_change_goes
from .rules import workflow_determinism

ROOT = Path(__file__).resolve().parents[3]

USAGE = """Enforces the workspace layout and layering (doc/architecture/; the layout as data:
scripts/ci/archcheck/layout.py). Standard library only; runs from any working directory.

    scripts/ci/check-architecture              # self-test, then check the tree
    scripts/ci/check-architecture --self-test  # only prove that every rule can fail

Exit status: 0 OK, 1 violations (or the workspace cannot be read), 2 self-test failure, usage
error or a crash of the check itself.

Rules:
"""


def usage() -> str:
    return USAGE + "\n".join(f"  {r.NAME:<26} {r.SUMMARY}" for r in RULES)


def unit_test_files(crates: list[model.Crate]) -> dict[str, list[str]]:
    """Per crate path, its src files that hold unit tests (`#[cfg(test)]` in code)."""
    found: dict[str, list[str]] = {}
    for c in crates:
        src = ROOT / c.path / "src"
        for f in sorted(src.rglob("*.rs")) if src.is_dir() else []:
            code = lexers.lex_rust(f.read_text(encoding="utf-8", errors="replace")).no_comments
            if "#[cfg(test)]" in code:
                found.setdefault(c.path, []).append(f.relative_to(ROOT).as_posix())
    return found


def self_test() -> list[str]:
    failures = []
    for name, fn in [("lexers", lexers.self_test)] + [(r.NAME, r.self_test) for r in RULES]:
        try:
            failures += fn()
        except Exception:  # a crashing self-test is a failing one
            failures.append(f"{name}: self-test crashed:\n{traceback.format_exc()}")
    return failures


def check_tree(root: Path) -> tuple[int, list[tuple[str, list[str]]]]:
    """(number of crates, [(rule name, violations)]); raises model.CargoError if cargo metadata fails."""
    crates = model.load_crates(model.cargo_metadata(root))
    files = model.read_files(root)
    mig_dir = root / layout.MIGRATIONS_DIR
    migrations = [
        (f.relative_to(root).as_posix(), f.read_text(encoding="utf-8", errors="replace"))
        for f in sorted(mig_dir.iterdir()) if f.is_file() and not f.name.startswith(".")
    ] if mig_dir.is_dir() else []
    locked = model.lock_packages(model.read_text(root, "Cargo.lock") or "")
    agent = next((c for c in crates if c.path == layout.NODE_AGENT_PATH), None)
    trees = model.load_agent_trees(root, agent.name if agent else None, node_agent_tree.specs(crates, locked))
    inputs = {
        layers: lambda: layers.check(crates),
        domain_tech: lambda: domain_tech.check(crates),
        domain_edges: lambda: domain_edges.check(crates),
        node_agent_tree: lambda: node_agent_tree.check(crates, trees.agent, trees.inverted, trees.errors),
        sql_ownership: lambda: sql_ownership.check(crates, files.rust, migrations),
        no_sql_outside_domains: lambda: no_sql_outside_domains.check(files.rust),
        workflow_determinism: lambda: workflow_determinism.check(files.rust),
        thin_handlers: lambda: thin_handlers.check(files.rust),
        where_a_change_goes: lambda: where_a_change_goes.check(
            model.read_text(root, layout.WHERE_A_CHANGE_GOES), files.paths),
        vocabulary: lambda: vocabulary.check(files.rust, model.read_text(root, layout.SEARCH_ATTRIBUTES_FILE)),
        lints: lambda: lints.check(model.read_text(root, "Cargo.toml"), crates,
                                   (root / layout.RUSTFMT_FILE).is_file()),
        one_e2e_binary: lambda: one_e2e_binary.check(crates, unit_test_files(crates)),
        resource_names: lambda: resource_names.check(
            files.paths, model.read_text(root, layout.OPENAPI_SPEC), model.read_text(root, layout.CLI_MAIN)),
    }
    missing = [r.NAME for r in RULES if r not in inputs]
    if missing:
        raise RuntimeError(f"main.py feeds no input to rule(s) {missing}")
    return len(crates), [(r.NAME, inputs[r]()) for r in RULES]


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        return 0
    unknown = [a for a in argv if a != "--self-test"]
    if unknown:
        print(f"architecture check: unknown argument(s) {unknown}; see --help", file=sys.stderr)
        return 2
    failures = self_test()
    if failures:
        print("architecture check: SELF-TEST FAILED (a rule no longer catches what it should):", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 2
    if "--self-test" in argv:
        print(f"architecture check: self-test OK ({len(RULES)} rules)")
        return 0
    try:
        n_crates, results = check_tree(ROOT)
    except model.CargoError as e:
        print(f"architecture check: FAILED: cannot read the workspace (`cargo metadata`): {e}", file=sys.stderr)
        return 1
    except Exception:
        print(f"architecture check: CRASHED (a bug in the check):\n{traceback.format_exc()}", file=sys.stderr)
        return 2
    violations = [(rule, v) for rule, vs in results for v in vs]
    if violations:
        print(f"architecture check: FAILED ({len(violations)} violation(s)); the layout is "
              "scripts/ci/archcheck/layout.py, the reasons doc/architecture/", file=sys.stderr)
        for rule, v in violations:
            print(f"  [rule {rule}] {v}", file=sys.stderr)
        return 1
    print(f"architecture check: OK ({n_crates} crates, {len(results)} rules)")
    return 0
