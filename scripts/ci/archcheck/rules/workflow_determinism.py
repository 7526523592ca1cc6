"""Rule 7: workflows are deterministic: no tokio, clocks, randomness, random uuids, I/O, threads,
the environment, HTTP or the database anywhere under layout.WORKFLOWS_SRC (recursive). And a
workflow module that runs branches side by side (`select!`, `join_all`, `join!`) uses no local
activities: sdk-core crashes a run evicted while a local activity runs beside a command
(doc/sdk-issues.md), and concurrent branches cannot keep the two apart."""

from __future__ import annotations

import re

from .. import layout
from ..lexers import Source, lex_rust, line_of
from ..model import under
from ._selftest import Expect

NAME = "7 workflow-determinism"
SUMMARY = "no clock, randomness, I/O, threads or tokio in workflows/src"

FORBIDDEN = [
    (r"\btokio\b", "tokio (use the workflow context's timers and select)"),
    (r"\bSystemTime\s*::\s*now\b", "the wall clock (use ctx.workflow_time())"),
    (r"\bInstant\s*::\s*now\b", "the monotonic clock (use ctx.workflow_time())"),
    (r"\b(?:Utc|Local)\s*::\s*now\b", "the wall clock (use ctx.workflow_time())"),
    (r"\b(?:rand|fastrand|getrandom)\s*::|\bthread_rng\b", "randomness (use the workflow context's random)"),
    (r"\bUuid\s*::\s*(?:new_v4|now_v\d)\b", "random or clock-based uuids (use the workflow context)"),
    (r"\bstd\s*::\s*(?:fs|thread|env|net|process)\b", "I/O, threads or the environment"),
    (r"\bstd\s*::\s*\{[^}]*\b(?:fs|thread|env|net|process)\b", "I/O, threads or the environment"),
    (r"\breqwest\b", "HTTP (do it in an activity)"),
    (r"\bsqlx\b", "the database (do it in an activity)"),
]
_FORBIDDEN = [(re.compile(p), why) for p, why in FORBIDDEN]


def check(files: list[Source]) -> list[str]:
    """`files`: .rs files anywhere; those under layout.WORKFLOWS_SRC are checked."""
    files = [f for f in files if under(f[0], layout.WORKFLOWS_SRC)]
    if not files:
        return [f"no .rs files under {layout.WORKFLOWS_SRC}/: did the layout change? (layout.WORKFLOWS_SRC)"]
    out = []
    for path, text in files:
        code = lex_rust(text).code
        hits = set()
        for rx, why in _FORBIDDEN:
            for m in rx.finditer(code):
                line = line_of(code, m.start())
                if (line, why) not in hits:
                    hits.add((line, why))
                    out.append(f"{path}:{line}: `{' '.join(m.group(0).split())}` in a workflow: {why}; "
                               "workflows must be deterministic")
        local = _LOCAL_ACTIVITY.search(code)
        branches = _CONCURRENT.search(code)
        if local and branches:
            out.append(f"{path}:{line_of(code, local.start())}: a local activity in a module that runs branches side "
                       f"by side (`{branches.group(0)}` at line {line_of(code, branches.start())}): use a regular "
                       "activity (doc/sdk-issues.md: a command beside a local activity crashes an evicted run)")
    return out


_LOCAL_ACTIVITY = re.compile(r"\bexecute_local_activity\b")
_CONCURRENT = re.compile(r"\bselect!|\bjoin_all\b|\bjoin!")


_GOOD = """//! No clock: never call SystemTime::now() or tokio::spawn here.
use std::time::{Duration, SystemTime};
pub async fn run(ctx: WfContext) { let t = ctx.workflow_time().unwrap_or(SystemTime::UNIX_EPOCH); }
fn msg() -> &'static str { "tokio::spawn is not allowed" }
"""


def self_test() -> list[str]:
    e = Expect("7")
    e.good("good workflow", check([("workflows/src/a.rs", _GOOD), ("workflows/tests/replay.rs", "use tokio;")]))
    for snippet in ("tokio::spawn(async {});", "let t = std::time::SystemTime::now();", "SystemTime::now()",
                    "Instant::now()", "let x: u8 = rand::random();", "std::fs::read(p)", "std::thread::sleep(d)",
                    "let c = reqwest::Client::new();", "sqlx::query(q)", "std::env::var(k)", "use std::{env, fs};",
                    "chrono::Utc::now()", "Uuid::new_v4()", "Uuid::now_v7()", "use tokio;", "rand::thread_rng()"):
        e.bad(snippet, check([("workflows/src/a.rs", f"fn f() {{ {snippet} }}")]), "workflows/src/a.rs:1")
    e.bad("nested module", check([("workflows/src/fleet/drain.rs", "\nfn f() { Instant::now() }")]),
          "workflows/src/fleet/drain.rs:2")
    e.bad("no files", check([("activities/src/a.rs", "")]), "workflows/src")
    e.bad("local activity beside a select", check([("workflows/src/a.rs",
          "fn f() {\n select! { a = x => {} }\n ctx.execute_local_activity(A::b, (), o) }")]),
          "workflows/src/a.rs:3", "select!")
    e.bad("local activity beside join_all", check([("workflows/src/a.rs",
          "fn f() { join_all(v).await; ctx.execute_local_activity(A::b, (), o) }")]), "join_all")
    e.good("local activities alone, or branches alone", check([
        ("workflows/src/a.rs", "fn f() { ctx.execute_local_activity(A::b, (), o) }"),
        ("workflows/src/b.rs", "fn f() { join_all(v).await; ctx.execute_activity(A::b, (), o) }")]))
    return e.failures
