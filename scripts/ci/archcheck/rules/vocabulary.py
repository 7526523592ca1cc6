"""Rule 10: Temporal names (workflow types and ids, task queues, signals, activity names, search
attributes) are spelt only in vocabulary modules: files named layout.VOCABULARY_FILE under
layout.VOCABULARY_DIRS (recursive). From those, every string literal that looks like a name
(`gpuaas-control`, `node.start_workload`, `waiting_for_capacity`, `ProvisionInstance`) or a template
(`instance-provision-{id}`: prefix `instance-provision-`; `{region}-reconciler`: suffix
`-reconciler`) is collected; any other .rs file under layout.VOCABULARY_USERS (src, tests, benches)
that has a literal equal to a name, or a format string starting with a template's prefix or ending
with its suffix (or a literal equal to either), spells it by hand. Plain lowercase words such as
`running` are not names (they collide with domain states). The search attributes declared in
layout.SEARCH_ATTRIBUTES_FILE (`SEARCH_ATTRIBUTES=(Name=Type ...)`) must be exactly the vocabulary
literals of the form `Gpuaas<Name>=<Type>`.

Names derived by the SDK's macros are caught too: in layout.NAMED_TYPE_DIRS every `#[run]`,
`#[signal]`, `#[query]`, `#[update]` and `#[activity]` must say `name = <vocabulary constant>` (or
`definition = ...`, for an implementation of a contract), so renaming a Rust item never renames a
Temporal type; and `ctx.patched(..)` takes a constant, not a literal (patch ids are frozen
names too)."""

from __future__ import annotations

import re

from .. import layout
from ..lexers import Source, rust_strings
from ..model import under
from ._selftest import Expect

NAME = "10 vocabulary"
SUMMARY = "Temporal names are spelt only in vocabulary.rs modules; search attributes match scripts/lib.sh"

_DOTTED = re.compile(r"^[A-Za-z][A-Za-z0-9]*([._-][A-Za-z0-9]+)+$")
_CAMEL = re.compile(r"^[A-Z][a-z0-9]+([A-Z][a-z0-9]*)+$")
_SEARCH_ATTRIBUTE = re.compile(r"^(Gpuaas|Billing)\w+=\w+$")
_DECLARATION = re.compile(r"^[ \t]*(?:export[ \t]+|declare[ \t]+-a[ \t]+)?SEARCH_ATTRIBUTES=\(([^)]*)\)", re.M)


def is_name(s: str) -> bool:
    return bool(_DOTTED.match(s) or _CAMEL.match(s))


def template_parts(s: str) -> tuple[str | None, str | None]:
    """(prefix, suffix) of a format-string literal: the text before the first `{` if it ends with
    `-` or `.` and is at least 3 characters; the text after the last `}` if it starts with `-`."""
    if "{" not in s:
        return None, None
    pre = s[: s.index("{")]
    post = s[s.rindex("}") + 1:] if "}" in s else ""
    prefix = pre if len(pre) >= 3 and pre[-1] in "-." else None
    suffix = post if len(post) >= 2 and post[0] == "-" else None
    return prefix, suffix


def is_vocabulary(path: str) -> bool:
    return path.rsplit("/", 1)[-1] == layout.VOCABULARY_FILE and any(under(path, d) for d in layout.VOCABULARY_DIRS)


_MACRO_ATTR = re.compile(r"#\[\s*(run|signal|query|update|activity)\s*(\((?P<args>[^)]*)\))?\s*\]")
_PATCHED_LITERAL = re.compile(r"\.patched\(\s*\"")


def unnamed_types(files: list[Source]) -> list[str]:
    """`#[run]`-style attributes without an explicit name, and patch ids spelt as literals."""
    from ..lexers import lex_rust, line_of
    out = []
    for path, text in files:
        if not any(under(path, d) for d in layout.NAMED_TYPE_DIRS):
            continue
        code = lex_rust(text).no_comments
        for m in _MACRO_ATTR.finditer(code):
            args = m.group("args") or ""
            if not re.search(r"\b(name|definition)\s*=", args):
                out.append(f"{path}:{line_of(code, m.start())}: `#[{m.group(1)}]` takes its Temporal name from the Rust "
                           f"item's name: say `#[{m.group(1)}(name = <constant>)]` with the constant in the vocabulary, "
                           "so a rename in Rust never renames the type in Temporal")
        for m in _PATCHED_LITERAL.finditer(text):
            out.append(f"{path}:{line_of(text, m.start())}: a patch id spelt as a literal: declare it in the "
                       "vocabulary (patch ids are frozen names) and pass the constant")
    return out


def check(files: list[Source], lib_sh: str | None) -> list[str]:
    """`files`: .rs files anywhere (the vocabulary modules and their users are picked out);
    `lib_sh`: the text of layout.SEARCH_ATTRIBUTES_FILE (None: missing)."""
    vocab = sorted((p, t) for p, t in files if is_vocabulary(p))
    users = sorted((p, t) for p, t in files
                   if not is_vocabulary(p) and p not in layout.VOCABULARY_PINS
                   and any(under(p, d) for d in layout.VOCABULARY_USERS))
    if not vocab:
        where = " or ".join(f"{d}/**/{layout.VOCABULARY_FILE}" for d in layout.VOCABULARY_DIRS)
        return [f"no vocabulary module ({where}): Temporal names must be spelt in one place; "
                "did the layout change? (layout.VOCABULARY_DIRS)"]
    names: dict[str, str] = {}  # literal -> "file:line" of its vocabulary module
    prefixes: dict[str, tuple[str, str]] = {}  # prefix -> (template, "file:line")
    suffixes: dict[str, tuple[str, str]] = {}
    attributes: dict[str, str] = {}
    for path, text in vocab:
        for line, s in rust_strings(text):
            at = f"{path}:{line}"
            if is_name(s):
                names.setdefault(s, at)
            prefix, suffix = template_parts(s)
            if prefix:
                prefixes.setdefault(prefix, (s, at))
            if suffix:
                suffixes.setdefault(suffix, (s, at))
            if _SEARCH_ATTRIBUTE.match(s):
                attributes.setdefault(s, at)
    out = unnamed_types(files)
    for path, text in users:
        for line, s in rust_strings(text):
            at = f"{path}:{line}"
            if s in names:
                out.append(f"{at}: {s!r} spells a Temporal name by hand: use the constant for it in "
                           f"{names[s].rsplit(':', 1)[0]} (line {names[s].rsplit(':', 1)[1]})")
                continue
            hit = None  # the longest prefix (or suffix) it matches names the template meant
            for p in sorted(prefixes, key=len, reverse=True):
                if ("{" in s and s.startswith(p)) or s == p:
                    hit = (f"prefix {p!r}", *prefixes[p])
                    break
            for x in sorted(suffixes, key=len, reverse=True):
                if hit is None and (("{" in s and s.endswith(x)) or s == x):
                    hit = (f"suffix {x!r}", *suffixes[x])
            if hit:
                what, tpl, owner = hit
                out.append(f"{at}: {s!r} builds a Temporal id or queue by hand ({what} of {tpl!r}): call the "
                           f"function for it in {owner.rsplit(':', 1)[0]} (line {owner.rsplit(':', 1)[1]})")
    f = layout.SEARCH_ATTRIBUTES_FILE
    if lib_sh is None:
        return out + [f"{f}: missing: it declares SEARCH_ATTRIBUTES for the Temporal dev and test servers"]
    m = _DECLARATION.search(lib_sh)
    if m is None:
        return out + [f"{f}: no `SEARCH_ATTRIBUTES=(Name=Type ...)` declaration (the dev and test servers register them)"]
    decl_line = lib_sh.count("\n", 0, m.start(1)) + 1
    declared = {x.strip("'\"") for x in m.group(1).split()}
    for a in sorted(declared - attributes.keys()):
        out.append(f"{f}:{decl_line}: search attribute {a!r} is registered but no vocabulary module declares it: "
                   f"add {a!r} to the vocabulary (or drop it here)")
    for a in sorted(attributes.keys() - declared):
        out.append(f"{attributes[a]}: search attribute {a!r} is not registered in SEARCH_ATTRIBUTES of {f}:{decl_line}: "
                   "add it there, or workflows that upsert it fail on the dev and test servers")
    return out


_CONTRACT_VOCAB = """//! Temporal names of the node contract. "commented-name" in a comment is not collected.
pub const NODE_QUEUE_PREFIX: &str = "node-";
pub fn node_queue(node: &str) -> String { format!("node-{node}") }
pub fn lifecycle_id(node: &str) -> String { format!("node-lifecycle-{node}") }
pub const START_WORKLOAD: &str = "node.start_workload";
"""
_ACTIVITIES_VOCAB = """pub const CONTROL_QUEUE: &str = "gpuaas-control";
pub const PROVISION: &str = "ProvisionInstance";
pub fn provision_id(id: u64) -> String { format!("instance-provision-{id}") }
pub fn reconciler_id(region: &str) -> String { format!("{region}-reconciler") }
pub const STEP: &str = "GpuaasStep";
pub const WAITING: &str = "waiting_for_capacity";
pub const RUNNING: &str = "running";
pub const ERROR: &str = "instance {id} failed";
pub const SEARCH_ATTRIBUTES: &[&str] = &["GpuaasInstanceId=Keyword", "GpuaasStep=Keyword"];
"""
_LIB_SH = 'ROOT=x\nSEARCH_ATTRIBUTES=(GpuaasInstanceId=Keyword "GpuaasStep=Keyword")\nmkdir -p x\n'
_VOCAB = [("contracts/node/src/vocabulary.rs", _CONTRACT_VOCAB), ("activities/src/vocabulary.rs", _ACTIVITIES_VOCAB),
          ("activities/src/fleet/vocabulary.rs", 'pub const RECONCILE: &str = "ReconcileFleet";\n')]
_GOOD_USERS = [
    ("workflows/src/provision.rs", """use activities::vocabulary::{provision_id, PROVISION};
// not a literal: "gpuaas-control" in a comment
fn f(id: u64) { let s = "running"; let e = format!("instance {id} failed: {}", 1); let t = "gpuaas-control-test";
  let n = "node"; let p = "Provision"; let u = "Node-X{}"; let h = "h100-80gb"; }
"""),
    ("cli/src/main.rs", 'const Q: &str = "gpuaas-control"; fn f() { format!("node-{}", 1); }'),
    ("domains/products/gpuaas/src/instance.rs", 'fn f(id: u64) -> String { format!("instance-provision-{id}") }'),
    ("scripts/x.rs", 'const Q: &str = "ProvisionInstance";'),
]


def self_test() -> list[str]:
    e = Expect("10")
    good = _VOCAB + _GOOD_USERS
    e.good("good vocabulary and users", check(good, _LIB_SH))
    bad = [
        ("queue name in a worker", "workers/src/main.rs", 'fn f() {\n let q = "gpuaas-control"; }', ":2", "activities/src/vocabulary.rs (line 1)"),
        ("raw string", "workers/src/main.rs", 'const Q: &str = r#"gpuaas-control"#;', ":1", "'gpuaas-control'"),
        ("workflow type in the API", "api/src/workflows.rs", 'let t = "ProvisionInstance";', ":1", "ProvisionInstance"),
        ("activity name in the agent", "node-agent/src/activities.rs", '#[activity(name = "node.start_workload")]', ":1",
         "contracts/node/src/vocabulary.rs (line 5)"),
        ("search attribute in runtime", "runtime/src/lib.rs", 'let a = "GpuaasStep";', ":1", "GpuaasStep"),
        ("step value in activities", "activities/src/fleet.rs", 'let s = "waiting_for_capacity";', ":1", "waiting_for_capacity"),
        ("nested vocabulary's name", "e2e/src/lib.rs", 'let w = "ReconcileFleet";', ":1", "activities/src/fleet/vocabulary.rs"),
        ("same crate, other file", "contracts/node/src/lib.rs", 'const N: &str = "node.start_workload";', ":1", "node.start_workload"),
        ("vocabulary.rs outside the vocabulary dirs", "workflows/src/vocabulary.rs", 'const X: &str = "ProvisionInstance";',
         "workflows/src/vocabulary.rs:1", "ProvisionInstance"),
        ("id by hand in an e2e test", "e2e/tests/platform/fleet.rs", 'fn f() { format!("node-lifecycle-{node_id}"); }', ":1",
         "prefix 'node-lifecycle-' of 'node-lifecycle-{node}'"),
        ("queue by hand in a workflow", "workflows/src/reconcile.rs", 'let q = format!("node-{}", n);', ":1", "prefix 'node-'"),
        ("id by hand in a bench", "workers/benches/b.rs", '"instance-provision-{id}"', ":1", "'instance-provision-{id}'"),
        ("suffix by hand", "api/src/a.rs", 'let id = format!("{}-reconciler", r);', ":1", "suffix '-reconciler'"),
        ("bare prefix", "workers/src/a.rs", 'let q = String::from("node-") + &n;', ":1", "prefix 'node-'"),
        ("api types", "api/types/src/lib.rs", '#[serde(rename = "waiting_for_capacity")]', ":1", "waiting_for_capacity"),
    ]
    for label, path, text, mention, owner in bad:
        at = mention if mention.startswith(path) else path + mention
        e.bad(label, check(good + [(path, text)], _LIB_SH), at, owner)
    named = [
        ("workflows/src/a.rs", "#[run(name = workflow::PROVISION)]\n#[signal(name = signal::DRAIN)]\nfn f() { ctx.patched(FENCE); }"),
        ("node-agent/src/a.rs", "#[activity(definition = definitions::StartWorkload)]"),
        ("e2e/tests/e2e/sdk.rs", "#[run]\n#[activity]\nfn f() { ctx.patched(\"x\"); }"),
    ]
    e.good("named types and patch constants; tests exempt", check(good + named, _LIB_SH))
    for label, path, text, what in [
        ("unnamed workflow type", "workflows/src/a.rs", "\n#[run]\npub async fn run() {}", "`#[run]`"),
        ("unnamed signal", "workflows/src/a.rs", "#[signal]", "`#[signal]`"),
        ("unnamed activity", "activities/src/gpuaas/a.rs", "#[activity()]", "`#[activity]`"),
        ("unnamed contract activity", "contracts/node/src/lib.rs", "#[activity(foo = 1)]", "`#[activity]`"),
        ("patch id literal", "workflows/src/a.rs", 'fn f() { ctx.patched("fence-x"); }', "patch id"),
    ]:
        e.bad(label, check(good + [(path, text)], _LIB_SH), path, what)
    e.bad("no vocabulary modules", check(_GOOD_USERS, _LIB_SH), "no vocabulary module")
    e.bad("attribute registered but not in the vocabulary",
          check(good, _LIB_SH.replace("GpuaasInstanceId", "GpuaasInstanceId=Keyword GpuaasNodeId")),
          "scripts/lib.sh:2", "GpuaasNodeId=Keyword")
    e.bad("attribute in the vocabulary but not registered", check(good, _LIB_SH.replace('"GpuaasStep=Keyword"', "")),
          "activities/src/vocabulary.rs:9", "GpuaasStep=Keyword")
    e.bad("attribute of another type", check(good, _LIB_SH.replace("GpuaasStep=Keyword", "GpuaasStep=Text")),
          "GpuaasStep=Text")
    e.bad("no declaration", check(good, "ROOT=x\n"), "scripts/lib.sh", "no `SEARCH_ATTRIBUTES")
    e.bad("no lib.sh", check(good, None), "scripts/lib.sh", "missing")
    if [is_name(s) for s in ("gpuaas-control", "node.start_workload", "waiting_for_capacity", "ProvisionInstance",
                             "GpuaasStep", "StartFailed", "running", "Running", "node-", "a b-c", "GPU-x")] != \
            [True] * 6 + [False] * 4 + [True]:
        e.failures.append("rule 10: is_name() misclassifies")
    if template_parts("instance-provision-{id}") != ("instance-provision-", None) or \
            template_parts("{region}-reconciler") != (None, "-reconciler") or template_parts("a-{x}-") != (None, None):
        e.failures.append("rule 10: template_parts() misparses")
    return e.failures
