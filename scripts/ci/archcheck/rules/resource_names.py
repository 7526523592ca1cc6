"""Rule 13: the same word names a resource in every layer. For each product route family
(`api/src/routes/<product>/` with a domain crate at `domains/products/<product>/`), every
resource file `<resources>.rs` (plural, as in its URL) has a domain module `<resource>.rs`
(singular) in that crate, a top-level OpenAPI tag `<resources>`, and a CLI noun `<Resource>` in
`enum Noun` of layout.CLI_MAIN. Family plumbing (layout.ROUTE_PLUMBING) is not a resource."""

from __future__ import annotations

import re

from .. import layout
from ._selftest import Expect

NAME = "13 resource-names"
SUMMARY = "each resource's route file, domain module, OpenAPI tag and CLI noun use one word"

_TAGS = re.compile(r"^tags:\s*\n((?:[ \t]+.*\n|\s*\n)*)", re.M)
_TAG_NAME = re.compile(r"^[ \t]*-[ \t]*name:[ \t]*['\"]?([\w-]+)", re.M)
_NOUN_ENUM = re.compile(r"enum\s+Noun\s*\{(?P<body>.*?)\n\}", re.S)
_VARIANT = re.compile(r"^\s{4}([A-Z][A-Za-z0-9]*)\s*[{(,]", re.M)


def openapi_tags(spec: str) -> set[str]:
    m = _TAGS.search(spec)
    return set(_TAG_NAME.findall(m.group(1))) if m else set()


def cli_nouns(main_rs: str) -> set[str]:
    m = _NOUN_ENUM.search(main_rs)
    return set(_VARIANT.findall(m.group("body"))) if m else set()


def check(paths: set[str], spec: str | None, cli_main: str | None) -> list[str]:
    """`paths`: every file of the tree (relative); `spec`, `cli_main`: their texts (None: missing)."""
    out = []
    tags = openapi_tags(spec or "")
    nouns = cli_nouns(cli_main or "")
    prefix = layout.ROUTES_DIR + "/"
    for path in sorted(paths):
        if not path.startswith(prefix) or not path.endswith(".rs"):
            continue
        family, _, file = path[len(prefix):].partition("/")
        domain = f"domains/products/{family}"
        if "/" in file or file in layout.ROUTE_PLUMBING or not any(p.startswith(domain + "/") for p in paths):
            continue
        plural = file[:-3]
        singular = plural[:-1] if plural.endswith("s") else plural
        if f"{domain}/src/{singular}.rs" not in paths:
            out.append(f"{path}: resource `{plural}` has no domain module {domain}/src/{singular}.rs: name the "
                       "domain module with the resource's word (singular), or rename the route file")
        if plural not in tags:
            out.append(f"{path}: resource `{plural}` has no top-level tag `{plural}` in {layout.OPENAPI_SPEC}")
        noun = singular.replace("_", " ").title().replace(" ", "")
        if noun not in nouns:
            out.append(f"{path}: resource `{plural}` has no CLI noun `{noun}` (`gpuaas {singular} …`) in `enum Noun` "
                       f"of {layout.CLI_MAIN}")
    return out


_SPEC = "openapi: 3.1.0\ntags:\n  - name: health\n  - name: nodes\n    description: x\n  - name: instances\npaths: {}\n"
_CLI = "enum Noun {\n    /// hosts\n    Node {\n        verb: V,\n    },\n    Instance {\n        verb: I,\n    },\n}\n"
_PATHS = {
    "api/src/routes/gpuaas/mod.rs", "api/src/routes/gpuaas/convert.rs", "api/src/routes/gpuaas/config.rs",
    "api/src/routes/gpuaas/nodes.rs", "api/src/routes/gpuaas/instances.rs",
    "api/src/routes/platform/health.rs", "api/src/routes/appplatform/mod.rs",
    "domains/products/gpuaas/src/node.rs", "domains/products/gpuaas/src/instance.rs",
}


def self_test() -> list[str]:
    e = Expect("13")
    e.good("one word in every layer; plumbing and platform routes exempt", check(_PATHS, _SPEC, _CLI))
    e.bad("route file without a domain module", check(_PATHS - {"domains/products/gpuaas/src/node.rs"}, _SPEC, _CLI),
          "api/src/routes/gpuaas/nodes.rs", "domains/products/gpuaas/src/node.rs")
    e.bad("no OpenAPI tag", check(_PATHS, _SPEC.replace("  - name: nodes\n", ""), _CLI), "nodes.rs", "tag `nodes`")
    e.bad("no CLI noun", check(_PATHS, _SPEC, _CLI.replace("Node {", "Host {")), "nodes.rs", "noun `Node`")
    e.bad("a new resource everywhere but the domain", check(
        _PATHS | {"api/src/routes/gpuaas/volumes.rs"}, _SPEC + "", _CLI), "volumes.rs", "volume.rs")
    if openapi_tags(_SPEC) != {"health", "nodes", "instances"} or cli_nouns(_CLI) != {"Node", "Instance"}:
        e.failures.append("rule 13: the tag or noun parser misreads its input")
    return e.failures
