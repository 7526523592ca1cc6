"""Rule 11: one lint and format policy: the root Cargo.toml has `[workspace.lints.rust]` or
`[workspace.lints.clippy]`, every workspace member's manifest has `[lints]` with `workspace = true`,
and layout.RUSTFMT_FILE exists at the root."""

from __future__ import annotations

import re
import tomllib

from .. import layout
from ..model import Crate
from ._selftest import Expect, good_crates, mutate

NAME = "11 lints"
SUMMARY = "workspace lints are declared once and inherited by every crate; rustfmt.toml exists"


def _parse(text: str, where: str, out: list[str]) -> dict | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        out.append(f"{where}: cannot parse: {e}")
        return None


def _line(text: str, rx: str) -> int | None:
    m = re.search(rx, text, re.M)
    return text.count("\n", 0, m.start()) + 1 if m else None


def check(root_manifest: str | None, crates: list[Crate], rustfmt_exists: bool) -> list[str]:
    out = []
    if root_manifest is None:
        out.append("Cargo.toml: missing at the root")
    else:
        data = _parse(root_manifest, "Cargo.toml", out)
        lints = ((data or {}).get("workspace") or {}).get("lints") or {}
        if data is not None and not (isinstance(lints.get("rust"), dict) or isinstance(lints.get("clippy"), dict)):
            out.append("Cargo.toml: no `[workspace.lints.rust]` or `[workspace.lints.clippy]` table: declare the "
                       "lint policy once for the workspace")
    for c in crates:
        if not c.path:  # the root package, if any, is the workspace manifest itself
            continue
        data = _parse(c.manifest_text, c.manifest, out)
        if data is None:
            continue
        lints = data.get("lints")
        if lints is None:
            out.append(f"{c.manifest}: {c.name} has no `[lints]` table: add `[lints]` with `workspace = true` "
                       "so it inherits the workspace lints")
        elif not (isinstance(lints, dict) and lints.get("workspace") is True):
            line = _line(c.manifest_text, r"^[ \t]*\[[ \t]*lints\b|^[ \t]*lints[ \t]*[.=]")
            out.append(f"{c.manifest}:{line or 1}: {c.name}'s `[lints]` does not say `workspace = true`: inherit "
                       "the workspace lints (change them in the root Cargo.toml, not per crate)")
    if not rustfmt_exists:
        out.append(f"{layout.RUSTFMT_FILE}: missing at the root: one format policy for every crate")
    return out


_ROOT = '[workspace]\nmembers = ["a"]\n\n[workspace.lints.rust]\nunsafe_op_in_unsafe_fn = "deny"\n'


def self_test() -> list[str]:
    e = Expect("11")
    e.good("good manifests", check(_ROOT, good_crates(), True))
    e.good("clippy table only", check(_ROOT.replace(".rust]", ".clippy]"), good_crates(), True))
    e.good("inline form", check(_ROOT, mutate(lambda c: setattr(
        c["api"], "manifest_text", 'lints.workspace = true\n[package]\nname = "api"\n')), True))
    e.bad("no workspace lints", check('[workspace]\nmembers = ["a"]\n', good_crates(), True), "Cargo.toml",
          "workspace.lints")
    e.bad("root manifest missing", check(None, good_crates(), True), "Cargo.toml")
    e.bad("root manifest broken", check("[workspace\n", good_crates(), True), "cannot parse")
    e.bad("member without [lints]", check(_ROOT, mutate(lambda c: setattr(
        c["node-agent"], "manifest_text", '[package]\nname = "node-agent"\n')), True), "node-agent/Cargo.toml", "[lints]")
    e.bad("member with its own lints", check(_ROOT, mutate(lambda c: setattr(
        c["cli"], "manifest_text", '[package]\nname = "cli"\n\n[lints.rust]\nunsafe_code = "allow"\n')), True),
        "cli/Cargo.toml:4", "workspace = true")
    e.bad("workspace = false", check(_ROOT, mutate(lambda c: setattr(
        c["e2e"], "manifest_text", '[package]\nname = "e2e"\n[lints]\nworkspace = false\n')), True), "e2e/Cargo.toml:3")
    e.bad("member manifest broken", check(_ROOT, mutate(lambda c: setattr(
        c["runtime"], "manifest_text", '[package\n')), True), "runtime/Cargo.toml", "cannot parse")
    e.bad("no rustfmt.toml", check(_ROOT, good_crates(), False), "rustfmt.toml")
    return e.failures
