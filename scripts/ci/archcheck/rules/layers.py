"""Rule 1: every workspace crate sits where layout.py puts it, with the name layout.py gives it, and
its normal and build dependencies point to a strictly lower layer or to a side crate that accepts
them (dev-dependencies are exempt)."""

from __future__ import annotations

from .. import layout
from ..layout import Placed, Slot
from ..model import Crate, Dep
from ._selftest import Expect, add_dep, good_crates, mutate, with_crate, without, _crate

NAME = "1 layers"
SUMMARY = "crates sit where layout.py says and depend only on strictly lower layers or allowed side crates"


def _label(c: Crate, p: Placed) -> str:
    return f"{c.name} ({c.path or '.'}, {p.slot.describe()})"


def _why_not(src: Placed, dst: Placed) -> str | None:
    """Why a normal/build dependency src -> dst breaks the layout, or None when it is allowed."""
    s, d = src.slot, dst.slot
    if d.is_side:
        accepted = (s.layer is not None and s.layer in d.used_by_layers) or src.expected_name in d.used_by
        if not accepted:
            who = [f"layer {n} {layout.LAYERS[n]}" for n in d.used_by_layers] + list(d.used_by)
            return (f"only {' and '.join(who)} may depend on {dst.expected_name}" if who
                    else f"nothing may depend on {dst.expected_name}")
    if s.may_depend_on is not None:
        if not layout.name_matches(dst.expected_name, s.may_depend_on):
            allowed = ", ".join(s.may_depend_on) or "no workspace crate"
            return f"{src.expected_name} may depend on {allowed}"
        return None
    if d.is_side or s.is_side:
        return None
    if not d.layer < s.layer:
        return "a dependency must go to a strictly lower layer"
    return None


def check(crates: list[Crate], slots: tuple[Slot, ...] = layout.SLOTS) -> list[str]:
    out = []
    placed: dict[str, Placed] = {}
    for c in crates:
        p = layout.place(c.path, slots)
        if p is None:
            out.append(
                f"{c.manifest}: crate {c.name} at {c.path or '.'}/ has no place in the layout: add its path "
                "to SLOTS in scripts/ci/archcheck/layout.py (and say why in doc/architecture/), or move it"
            )
            continue
        placed[c.name] = p
        if c.name != p.expected_name:
            out.append(
                f"{c.manifest}: the crate at {c.path}/ is named {c.name}; layout.py names it "
                f"{p.expected_name}: rename the package (or change SLOTS in layout.py)"
            )
    present = {c.path for c in crates}
    for s in slots:
        if s.required and "<name>" not in s.path and s.path not in present:
            out.append(f"no workspace crate at {s.path}/ (layout.py expects {s.crate}, {s.what}): "
                       "add it to the workspace members, or remove the slot from layout.py")
    for c in crates:
        src = placed.get(c.name)
        if src is None:
            continue
        for d in c.deps:
            dst = placed.get(d.name)
            if dst is None or d.is_dev:  # external (or unplaced) crate, or a dev-dependency
                continue
            why = _why_not(src, dst)
            if why:
                kind = "build-" if d.kind == "build" else ""
                t = next(x for x in crates if x.name == d.name)
                out.append(f"{c.where(d)}: {_label(c, src)} has a {kind}dependency on {_label(t, dst)}: {why}")
    return out


def self_test() -> list[str]:
    e = Expect("1")
    e.good("good crate graph", check(good_crates()))
    e.good("dev-dependency exempt", check(add_dep("platform-iam", Dep("workers", "dev"))))
    e.good("a second platform crate", check(with_crate(_crate("platform-billing", "domains/platform/billing",
                                                                 [Dep("shared-kernel")]))))
    e.good("a second contract", check(with_crate(_crate("contract-billing", "contracts/billing", [Dep("shared-ids")]))))
    e.good("e2e -> runtime", check(add_dep("e2e", Dep("runtime"))))
    bad = [
        ("product -> activities", "product-gpuaas", Dep("activities"), "product-gpuaas"),
        ("same layer (api -> workers)", "api", Dep("workers"), "strictly lower"),
        ("shared-ids -> kernel", "shared-ids", Dep("shared-kernel"), "no workspace crate"),
        ("kernel -> platform (build)", "shared-kernel", Dep("platform-iam", "build"), "build-dependency"),
        ("contract -> kernel", "contract-node", Dep("shared-kernel"), "contract-node may depend on shared-ids"),
        ("contract -> product", "contract-node", Dep("product-gpuaas"), "contract-node"),
        ("contract -> runtime", "contract-node", Dep("runtime"), "runtime"),
        ("activities -> workflows", "activities", Dep("workflows"), "activities/Cargo.toml"),
        ("runtime -> shared-ids", "runtime", Dep("shared-ids"), "runtime may depend on no workspace crate"),
        ("activities -> runtime", "activities", Dep("runtime"), "only layer 7 top"),
        ("api-types -> kernel", "api-types", Dep("shared-kernel"), "api-types may depend on shared-ids"),
        ("workflows -> api-types", "workflows", Dep("api-types"), "api-types"),
        ("cli -> product", "cli", Dep("product-gpuaas"), "cli may depend on api-types, shared-ids"),
        ("cli -> runtime", "cli", Dep("runtime"), "runtime"),
        ("api -> cli", "api", Dep("cli"), "nothing may depend on cli"),
        ("workers -> e2e", "workers", Dep("e2e"), "strictly lower"),
        ("api -> workers (same layer)", "api", Dep("workers"), "strictly lower"),
    ]
    for label, crate, dep, mention in bad:
        e.bad(label, check(add_dep(crate, dep)), mention)
    e.bad("same layer (platform -> platform)",
          check(with_crate(_crate("platform-billing", "domains/platform/billing", [Dep("platform-iam")]))),
          "platform-billing", "strictly lower")
    e.bad("crate outside the layout", check(with_crate(_crate("billing", "billing", []))), "billing/Cargo.toml", "layout.py")
    e.bad("nested too deep", check(with_crate(_crate("product-x", "domains/products/x/y", []))), "no place")
    e.bad("wrong name for its path", check(mutate(lambda c: setattr(c["platform-iam"], "name", "gpuaas-iam"))),
          "domains/platform/iam/Cargo.toml", "platform-iam")
    e.bad("wrong name for a product", check(with_crate(_crate("gpuaas-billing", "domains/products/billing", []))),
          "product-billing")
    for path in ("domains/shared/ids", "node-agent", "e2e", "runtime", "api/types"):
        e.bad(f"missing {path}", check(without(path)), f"{path}/")
    lined = mutate(lambda c: c["api"].deps.append(Dep("cli", line=12)))
    e.bad("manifest line in the message", check(lined), "api/Cargo.toml:12")
    return e.failures
