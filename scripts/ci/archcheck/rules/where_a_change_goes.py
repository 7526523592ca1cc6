"""Rule 9: layout.WHERE_A_CHANGE_GOES exists and holds a markdown table whose header asks the five
questions of the layer model (layout.QUESTIONS: contract, route family, business decision, table
family, worker path), with a row for each change in layout.REQUIRED_CHANGES and no empty answer.
Every backticked token in the table that contains `/` is a path from the repository root and must
exist: a trailing `/` means a folder, `*` (one folder level; `**` any depth) and `<name>` (one
name) make it a glob that must match at least once, `{a,b}` names each alternative. Tokens with a
space, or starting with `/` (a route) or holding `://` (a URL), are not paths."""

from __future__ import annotations

import re

from .. import layout
from ._selftest import Expect

NAME = "9 where-a-change-goes"
SUMMARY = "the where-a-change-goes table answers the five questions for each product, and its paths exist"

_EMPTY = {"", "-", "--", "—", "–", "?", "tbd", "todo", "…", "..."}


def _cells(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    return [c.replace("\\|", "|").strip() for c in re.split(r"(?<!\\)\|", s)]


def tables(text: str) -> list[tuple[int, list[str], list[tuple[int, list[str]]]]]:
    """(header line, header cells, [(line, cells)]) of every markdown table."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines) - 1:
        if lines[i].lstrip().startswith("|") and re.fullmatch(r"\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*",
                                                              lines[i + 1]):
            header, rows, j = _cells(lines[i]), [], i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append((j + 1, _cells(lines[j])))
                j += 1
            out.append((i + 1, header, rows))
            i = j
        else:
            i += 1
    return out


def _expand_braces(token: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", token)
    if not m:
        return [token]
    return [x for alt in m.group(1).split(",") for x in _expand_braces(token[: m.start()] + alt + token[m.end():])]


def _glob_rx(pattern: str) -> re.Pattern:
    rx, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            rx, i = rx + ".*", i + 2
        elif pattern[i] == "*":
            rx, i = rx + "[^/]*", i + 1
        elif pattern[i] == "<":
            j = pattern.find(">", i)
            j = len(pattern) - 1 if j < 0 else j
            rx, i = rx + "[^/]+", j + 1
        else:
            rx, i = rx + re.escape(pattern[i]), i + 1
    return re.compile(rx)


def is_path_token(token: str) -> bool:
    return "/" in token and not token.startswith("/") and "://" not in token and not re.search(r"\s", token)


def missing(token: str, paths: set[str]) -> list[str]:
    """The expansions of a path token that name nothing in `paths` (files, and folders ending in /)."""
    token = re.sub(r"(#.*|:\d+(-\d+)?)$", "", token)  # an anchor or a :line suffix
    out = []
    for p in _expand_braces(token):
        p = p[2:] if p.startswith("./") else p
        if "*" in p or "<" in p:
            rx = _glob_rx(p)
            found = any(rx.fullmatch(x) for x in paths if x.endswith("/") == p.endswith("/"))
        else:
            found = p in paths or (not p.endswith("/") and p + "/" in paths)
        if not found:
            out.append(p)
    return out


def check(doc: str | None, paths: set[str], doc_path: str = layout.WHERE_A_CHANGE_GOES) -> list[str]:
    """`doc`: the text of the document (None: missing); `paths`: every file of the repository, and
    every folder with a trailing `/`."""
    if doc is None:
        return [f"{doc_path}: missing: write the table that says, per product or platform change, which contract, "
                "route family, package, table family and worker path it touches"]
    keys = [k for k, _ in layout.QUESTIONS]
    table = None
    for hline, header, rows in tables(doc):
        cols = {}
        for k in keys:
            idx = next((n for n, h in enumerate(header) if n > 0 and k in h.lower()), None)
            if idx is not None:
                cols[k] = idx
        if len(cols) == len(keys):
            table = (hline, header, rows, cols)
            break
    if table is None:
        asks = ", ".join(f"{q} ({k!r})" for k, q in layout.QUESTIONS)
        return [f"{doc_path}: no markdown table whose header asks the five questions of the layer model: "
                f"a first column naming the change, then columns for {asks}"]
    hline, header, rows, cols = table
    out = []
    for what, words in layout.REQUIRED_CHANGES:
        if not any(any(w in cells[0].lower() for w in words) for _, cells in rows if cells):
            out.append(f"{doc_path}:{hline}: the table has no row for {what} (a row label containing "
                       f"{' or '.join(repr(w) for w in words)}): add one")
    for line, cells in rows:
        label = cells[0] if cells else ""
        if len(cells) != len(header):
            out.append(f"{doc_path}:{line}: row {label!r} has {len(cells)} cells, the header {len(header)}: "
                       "escape `|` inside cells as `\\|`")
        for k, q in layout.QUESTIONS:
            idx = cols[k]
            cell = cells[idx] if idx < len(cells) else ""
            if cell.strip("*_ ").lower() in _EMPTY:
                out.append(f"{doc_path}:{line}: row {label!r}, column {header[idx]!r} is empty: answer "
                           f"the {q} question (write `none` and why, if nothing)")
        for n, cell in enumerate(cells):
            for token in re.findall(r"`([^`]+)`", cell):
                if not is_path_token(token):
                    continue
                col = header[n] if n < len(header) else f"#{n + 1}"
                for p in missing(token, paths):
                    kind = "folder" if p.endswith("/") else "path"
                    out.append(f"{doc_path}:{line}: row {label!r}, column {col!r}: {kind} `{p}` does not exist "
                               "(fix the path, or create the placeholder folder with a README.md)")
    return out


_PATHS = {
    "contracts/", "contracts/node/", "contracts/node/src/", "contracts/node/src/lib.rs",
    "contracts/node/src/vocabulary.rs", "api/", "api/src/", "api/src/routes/", "api/src/routes/iam.rs",
    "api/src/routes/instances.rs", "domains/", "domains/platform/", "domains/platform/iam/",
    "domains/platform/billing/", "domains/platform/billing/README.md", "domains/products/",
    "domains/products/appplatform/", "domains/products/tokenfactory/", "domains/products/gpuaas/",
    "migrations/", "migrations/20261127000001_iam_init.sql", "workers/", "workers/src/", "workers/src/lib.rs",
}
_HEADER = "| change | contract | route family | business decision (package) | table family (data) | worker / async path |"
_GOOD = f"""# Where a change goes

Prose with `not/a/path in a cell` outside the table: `nowhere/` is not checked here.

{_HEADER}
|---|---|---|---|---|---|
| IAM: a new role | none (synchronous) | `/v1/orgs` and `GET /v1/projects` in `api/src/routes/iam.rs` | `domains/platform/iam/` | `iam.*` via `migrations/*_iam_*.sql` | none |
| Billing: usage | `contracts/<name>/` later | `api/src/routes/*.rs` | `domains/platform/billing/` | `billing.*` (planned) | `workers/src/lib.rs` |
| App deployment | `contracts/node/src/{{lib,vocabulary}}.rs` | `api/src/routes/` | `domains/products/appplatform/` | `appplatform.*` | `workers/` |
| Token Factory rollout | `contracts/**/vocabulary.rs` | `https://example.com/a/b` | `domains/products/tokenfactory/` | **tokenfactory.\\*** | `./workers/src/lib.rs:10` |
"""


def self_test() -> list[str]:
    e = Expect("9")
    d = layout.WHERE_A_CHANGE_GOES
    e.good("good table", check(_GOOD, _PATHS))
    e.good("loose header", check(_GOOD.replace(_HEADER, "| Change | Contract? | Routes | Decisions | Tables | Workers |"),
                                 _PATHS))
    e.bad("missing document", check(None, _PATHS), d, "missing")
    e.bad("no table", check("# Where a change goes\n\nprose only\n", _PATHS), "no markdown table")
    e.bad("a question missing from the header", check(_GOOD.replace("worker / async path", "async"), _PATHS),
          "'worker'")
    for row, label in (("| IAM", "IAM"), ("| Billing", "billing"), ("| App deployment", "app deployment"),
                       ("| Token Factory rollout", "Token Factory")):
        gone = "\n".join(ln for ln in _GOOD.splitlines() if not ln.startswith(row))
        e.bad(f"no {label} row", check(gone, _PATHS), f"{d}:5", label)
    e.good("tokenfactory spelt as one word", check(_GOOD.replace("Token Factory rollout", "tokenfactory"), _PATHS))
    e.bad("empty cell", check(_GOOD.replace("| none |\n", "|  |\n"), _PATHS), f"{d}:7", "'IAM: a new role'",
          "'worker / async path'")
    e.bad("dash as an answer", check(_GOOD.replace("| `billing.*` (planned) |", "| — |"), _PATHS),
          "'table family (data)'")
    e.bad("short row", check(_GOOD.replace(" | none |\n", "\n"), _PATHS), "cells")
    e.bad("missing file", check(_GOOD.replace("routes/iam.rs", "routes/orgs.rs"), _PATHS),
          f"{d}:7", "'IAM: a new role'", "'route family'", "`api/src/routes/orgs.rs`")
    e.bad("file where a folder is meant", check(_GOOD.replace("`workers/`", "`workers/src/lib.rs/`"), _PATHS),
          "folder `workers/src/lib.rs/`")
    e.bad("missing placeholder folder",
          check(_GOOD, _PATHS - {"domains/products/tokenfactory/"}), "'Token Factory rollout'",
          "`domains/products/tokenfactory/`")
    e.bad("glob matching nothing", check(_GOOD.replace("*_iam_*.sql", "*_billing_*.sql"), _PATHS),
          "`migrations/*_billing_*.sql`")
    e.bad("one brace alternative missing", check(_GOOD.replace("{lib,vocabulary}", "{lib,queues}"), _PATHS),
          "`contracts/node/src/queues.rs`")
    e.bad("placeholder matching nothing", check(_GOOD.replace("contracts/<name>/", "contracts/<name>/src/x/"), _PATHS),
          "contracts/<name>/src/x/")
    return e.failures
