"""Rule 8: API handlers stay thin: every function with a body under layout.ROUTES_DIR (recursive)
spans at most layout.MAX_HANDLER_LINES lines, from its `fn` line to its closing brace."""

from __future__ import annotations

import re

from .. import layout
from ..lexers import Source, lex_rust, line_of
from ..model import under
from ._selftest import Expect

NAME = "8 thin-handlers"
SUMMARY = f"functions in {layout.ROUTES_DIR} are at most {layout.MAX_HANDLER_LINES} lines"

_FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def function_spans(text: str) -> list[tuple[str, int, int]]:
    """(name, first line, last line) of every function with a body; `fn` line to closing brace."""
    code = lex_rust(text).code
    n = len(code)
    spans = []
    for m in _FN.finditer(code):
        j, depth = m.end(), 0
        while j < n:  # the body's `{`, or the `;` of a declaration without one
            ch = code[j]
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            elif depth <= 0 and ch in "{;":
                break
            j += 1
        if j >= n or code[j] == ";":
            continue
        depth, k = 0, j
        while k < n:
            if code[k] == "{":
                depth += 1
            elif code[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        spans.append((m.group(1), line_of(code, m.start()), line_of(code, min(k, n - 1))))
    return spans


def check(files: list[Source], max_lines: int = layout.MAX_HANDLER_LINES) -> list[str]:
    """`files`: .rs files anywhere; those under layout.ROUTES_DIR are checked."""
    files = [f for f in files if under(f[0], layout.ROUTES_DIR)]
    if not files:
        return [f"no .rs files under {layout.ROUTES_DIR}/: did the layout change? (layout.ROUTES_DIR)"]
    out = []
    for path, text in files:
        for name, first, last in function_spans(text):
            length = last - first + 1
            if length > max_lines:
                out.append(
                    f"{path}:{first}: fn {name} is {length} lines (at most {max_lines}): handlers stay "
                    "thin; move logic into the domain crate or a workflow"
                )
    return out


def _route(body_lines: int) -> str:
    body = "\n".join(f'    let x{i} = "{{}}";' for i in range(body_lines))
    return f"pub async fn handler(\n    State(s): State<AppState>,\n) -> Json<()> {{\n{body}\n    Json(())\n}}\n"


def self_test() -> list[str]:
    e = Expect("8")
    m = layout.MAX_HANDLER_LINES
    ok = _route(m - 5) + "fn helper() -> u8 { 1 }\ntrait T { fn decl(&self); }\n"
    e.good(f"{m}-line handler", check([("api/src/routes/a.rs", ok), ("api/src/lib.rs", _route(m * 2))]))
    e.bad(f"{m + 1}-line handler", check([("api/src/routes/a.rs", _route(m - 4))]), "api/src/routes/a.rs:1", "fn handler")
    e.bad("nested routes folder", check([("api/src/routes/iam/orgs.rs", _route(m))]), "api/src/routes/iam/orgs.rs:1")
    braces = "fn f() {\n" + "    let s = \"}}}}\"; // }\n" * m + "}\n"
    e.bad("braces in strings and comments", check([("api/src/routes/a.rs", braces)]), "fn f")
    e.bad("no files", check([("api/src/lib.rs", ok)]), "api/src/routes")
    if [s[1:] for s in function_spans(ok)] != [(1, m), (m + 1, m + 1)]:
        e.failures.append(f"rule 8: function_spans miscounted: {function_spans(ok)}")
    return e.failures
