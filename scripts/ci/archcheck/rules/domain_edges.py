"""Rule 3: platform crates never depend on product crates (dev-dependencies included: a reverse
edge in tests is still one); product crates call each other only along the edges declared in
layout.PRODUCT_EDGES, and those go along layout.PRODUCT_ORDER (so they cannot form a cycle)."""

from __future__ import annotations

from .. import layout
from ..model import Crate, Dep
from ._selftest import Expect, add_dep, good_crates, with_crate, _crate

NAME = "3 domain-edges"
SUMMARY = "platform never depends on products; product -> product only along declared edges"


def _layer(c: Crate) -> int | None:
    p = layout.place(c.path)
    return p.slot.layer if p else None


def _expected(c: Crate) -> str:
    p = layout.place(c.path)
    return p.expected_name if p else c.name


def check(crates: list[Crate], edges: dict[str, set[str]] | None = None,
          order: tuple[str, ...] = layout.PRODUCT_ORDER) -> list[str]:
    edges = layout.PRODUCT_EDGES if edges is None else edges
    by_name = {c.name: c for c in crates}
    out = []
    for src, dsts in sorted(edges.items()):
        for dst in sorted(dsts):
            if src not in order or dst not in order or not order.index(src) < order.index(dst):
                out.append(
                    f"scripts/ci/archcheck/layout.py: PRODUCT_EDGES declares {src} -> {dst}, which does not go "
                    f"along PRODUCT_ORDER {' -> '.join(order)}: product edges must follow the declared order"
                )
    for c in crates:
        for d in c.deps:
            t = by_name.get(d.name)
            if t is None:
                continue
            kind = {"dev": "dev-", "build": "build-"}.get(d.kind or "", "")
            if _layer(c) == layout.PLATFORM and _layer(t) == layout.PRODUCTS:
                out.append(
                    f"{c.where(d)}: {c.name} ({c.path}) has a {kind}dependency on product crate {t.name} "
                    f"({t.path}): platform crates never depend on products (invert it: the product calls the platform)"
                )
            if _layer(c) == layout.PRODUCTS == _layer(t) and _expected(t) not in edges.get(_expected(c), set()):
                out.append(
                    f"{c.where(d)}: {c.name} ({c.path}) has a {kind}dependency on product crate {t.name}: "
                    "not a declared edge; declare it in PRODUCT_EDGES in scripts/ci/archcheck/layout.py "
                    f"(along PRODUCT_ORDER {' -> '.join(layout.PRODUCT_ORDER)}) or go through a read model or event"
                )
    return out


def self_test() -> list[str]:
    e = Expect("3")
    e.good("good crate graph", check(good_crates()))
    e.bad("platform -> product", check(add_dep("platform-iam", Dep("product-gpuaas", line=9))),
          "domains/platform/iam/Cargo.toml:9", "never depend on products")
    e.bad("platform -dev-> product", check(add_dep("platform-iam", Dep("product-gpuaas", "dev"))), "dev-dependency")
    app = _crate("product-appplatform", "domains/products/appplatform", [Dep("product-gpuaas")])
    e.bad("undeclared product -> product", check(with_crate(app)), "product-appplatform", "not a declared edge")
    dev_app = _crate("product-appplatform", "domains/products/appplatform", [Dep("product-gpuaas", "dev")])
    e.bad("undeclared product -dev-> product", check(with_crate(dev_app)), "dev-dependency")
    declared = {"product-appplatform": {"product-gpuaas"}}
    e.good("declared edge", check(with_crate(app), declared))
    e.bad("declared edge against the order", check(good_crates(), {"product-gpuaas": {"product-tokenfactory"}}),
          "layout.py", "product-gpuaas -> product-tokenfactory")
    e.bad("declared edge to an unknown product", check(good_crates(), {"product-gpuaas": {"product-x"}}), "product-x")
    back = _crate("product-appplatform", "domains/products/appplatform", [])
    gpu_to_app = add_dep("product-gpuaas", Dep("product-appplatform")) + [back]
    e.bad("edge declared the other way", check(gpu_to_app, declared), "product-gpuaas", "not a declared edge")
    return e.failures
