"""Rule 12: integration tests are one binary: integration-test targets (cargo target kind `test`:
`tests/*.rs`, `tests/*/main.rs`, `[[test]]`) exist only in the crate at layout.E2E_PATH, and it has
exactly one; domain crates (layout.OWN_INTEGRATION_TESTS) may keep their own, which link only the
domain and Postgres. Lib and bin unit tests, benches and binaries are allowed anywhere, but a
crate that holds unit tests (`#[cfg(test)]`) must not turn its tests off (`test = false`, which
saves a test binary per crate that has none): they would never run."""

from __future__ import annotations

from .. import layout
from ..model import Crate, Target
from ._selftest import Expect, good_crates, mutate, without

NAME = "12 one-e2e-binary"
SUMMARY = "integration-test targets exist only in e2e (exactly one) and domain crates"


def check(crates: list[Crate], unit_tests: dict[str, list[str]] | None = None) -> list[str]:
    out = []
    for c in crates:
        files = (unit_tests or {}).get(c.path, [])
        off = [t for t in c.targets if ("lib" in t.kinds or "bin" in t.kinds) and not t.test]
        if files and off and not any(t.test for t in c.targets if "lib" in t.kinds or "bin" in t.kinds):
            out.append(f"{files[0]}: {c.name} holds unit tests (`#[cfg(test)]`) but its targets have "
                       f"`test = false` ({', '.join(t.name for t in off)}): they never run; remove `test = false`")
    e2e = next((c for c in crates if c.path == layout.E2E_PATH), None)
    for c in crates:
        tests = [t for t in c.targets if "test" in t.kinds]
        if c is e2e:
            if not tests:
                out.append(f"{c.manifest}: {c.name} has no integration-test target: add the one test binary "
                           f"({layout.E2E_PATH}/tests/<name>/main.rs with a module per area)")
            elif len(tests) > 1:
                names = ", ".join(f"{t.name} ({t.src_path})" for t in tests)
                out.append(f"{c.manifest}: {c.name} has {len(tests)} integration-test targets ({names}): keep one "
                           "binary and make the others modules of it (each test binary links everything again)")
            continue
        if any(c.path.startswith(p) for p in layout.OWN_INTEGRATION_TESTS):
            continue
        for t in tests:
            out.append(f"{t.src_path}: integration-test target `{t.name}` in {c.name}: integration tests live in the "
                       f"one {layout.E2E_PATH} test binary; move it there as a module, or make it a unit test "
                       "(`#[cfg(test)]` in src/)")
    if e2e is None:
        out.append(f"no workspace crate at {layout.E2E_PATH}/: the integration tests have no home (layout.E2E_PATH)")
    return out


def self_test() -> list[str]:
    e = Expect("12")
    e.good("good targets", check(good_crates()))

    def add_target(crate: str, target: Target):
        return mutate(lambda c: c[crate].targets.append(target))

    e.good("test target in a domain crate", check(add_target("product-gpuaas", Target(
        "placement", ["test"], "domains/products/gpuaas/tests/placement.rs"))))
    e.bad("test target in activities", check(add_target("activities", Target(
        "idempotency", ["test"], "activities/tests/idempotency.rs"))),
        "activities/tests/idempotency.rs", "activities")
    e.bad("test target in workers", check(add_target("workers", Target("platform", ["test"], "workers/tests/platform/main.rs"))),
          "workers/tests/platform/main.rs")
    e.bad("two e2e binaries", check(add_target("e2e", Target("fleet", ["test"], "e2e/tests/fleet.rs"))),
          "e2e/Cargo.toml", "2 integration-test targets")
    e.bad("no e2e binary", check(mutate(lambda c: setattr(c["e2e"], "targets", [Target("e2e", ["lib"], "e2e/src/lib.rs")]))),
          "e2e/Cargo.toml", "no integration-test target")
    e.bad("no e2e crate", check(without("e2e")), "e2e/")
    e.good("a bench", check(add_target("workers", Target("b", ["bench"], "workers/benches/b.rs"))))

    def tests_off(crate: str):
        def edit(c):
            c[crate].targets = [Target(t.name, t.kinds, t.src_path, False) for t in c[crate].targets]
        return mutate(edit)

    e.bad("unit tests in a crate with test = false",
          check(tests_off("workflows"), {"workflows": ["workflows/src/a.rs"]}), "workflows/src/a.rs", "never run")
    e.good("test = false without unit tests", check(tests_off("workflows"), {"api": ["api/src/a.rs"]}))
    e.good("a bin", check(add_target("api", Target("x", ["bin"], "api/src/bin/x.rs"))))
    return e.failures
