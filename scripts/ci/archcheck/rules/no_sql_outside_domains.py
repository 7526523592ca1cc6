"""Rule 6: no `sqlx::query*` / `sqlx::raw_sql` outside the domain crates: not in any folder of
layout.NO_SQL_DIRS (files under `tests/` or `benches/`, and the crates in layout.NO_SQL_EXEMPT,
are exempt)."""

from __future__ import annotations

import re

from .. import layout
from ..lexers import Source, lex_rust, line_of
from ..model import under
from ._selftest import Expect

NAME = "6 no-sql-outside-domains"
SUMMARY = "no sqlx queries outside domains/ (tests, benches and e2e exempt)"

_SQLX_QUERY = re.compile(r"\bsqlx\s*::\s*(?:query\w*|raw_sql)\b|\bsqlx\s*::\s*\{[^}]*\b(?:query\w*|raw_sql)\b")


def in_scope(path: str) -> bool:
    if not any(under(path, d) for d in layout.NO_SQL_DIRS):
        return False
    if any(under(path, d) for d in layout.NO_SQL_EXEMPT):
        return False
    return not any(seg in ("tests", "benches") for seg in path.split("/")[:-1])


def check(files: list[Source]) -> list[str]:
    """`files`: .rs files anywhere; those in scope are checked."""
    out = []
    for path, text in files:
        if not in_scope(path):
            continue
        code = lex_rust(text).code  # comments and string contents blanked
        for m in _SQLX_QUERY.finditer(code):
            out.append(
                f"{path}:{line_of(code, m.start())}: `{' '.join(m.group(0).split())}` outside domains/: "
                "SQL belongs in the domain crate that owns the table (call its API)"
            )
    return out


def self_test() -> list[str]:
    e = Expect("6")
    q = 'fn f() {\n    sqlx::query("SELECT 1"); }'
    for path in ("activities/src/lib.rs", "workflows/src/a.rs", "workers/src/main.rs", "api/src/routes/x.rs",
                 "api/types/src/lib.rs", "node-agent/src/lib.rs", "cli/src/main.rs", "runtime/src/lib.rs",
                 "contracts/node/src/lib.rs", "activities/src/deep/er/x.rs"):
        e.bad(path, check([(path, q)]), f"{path}:2")
    e.bad("query_as", check([("api/src/a.rs", "let r = sqlx::query_as::<_, X>(s);")]), "sqlx::query_as")
    e.bad("query_scalar", check([("api/src/a.rs", "let r = sqlx :: query_scalar(s);")]), "query_scalar")
    e.bad("raw_sql", check([("workers/src/a.rs", "sqlx::raw_sql(s)")]), "raw_sql")
    e.bad("imported", check([("api/src/a.rs", "use sqlx::{PgPool, query};")]), "api/src/a.rs:1")
    e.good("exempt: tests, benches, e2e, domains, comments", check([
        ("workers/tests/e2e.rs", q), ("api/benches/b.rs", q), ("contracts/node/tests/t.rs", q),
        ("e2e/src/harness.rs", q), ("e2e/tests/platform/main.rs", q), ("domains/products/gpuaas/src/a.rs", q),
        ("activities/src/a.rs", "// sqlx::query\n/* sqlx::query */ use sqlx::PgPool;"),
        ("api/src/a.rs", 'let s = "sqlx::query";'),
    ]))
    return e.failures
