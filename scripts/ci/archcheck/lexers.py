"""Small lexers for Rust and SQL: enough to tell comments and string literals from code, with
offsets and newlines kept so that every finding maps back to a file:line."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# A source file: (path relative to the repository root, text).
Source = tuple[str, str]


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _blank(buf: list[str], start: int, end: int) -> None:
    for k in range(start, end):
        if buf[k] != "\n":
            buf[k] = " "


# --------------------------------------------------------------------------------------------------
# Rust
# --------------------------------------------------------------------------------------------------

_IDENT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_RUST_RAW_OPEN = re.compile(r'r(#*)"')
_RUST_CHAR = re.compile(r"'(?:\\(?:u\{[0-9a-fA-F_]{1,8}\}|x[0-9a-fA-F]{2}|[^\n])|[^\\'\n])'")


@dataclass(frozen=True)
class RustText:
    no_comments: str  # comments blanked (newlines kept, offsets unchanged)
    code: str  # comments and the contents of string and char literals blanked
    strings: tuple[tuple[int, str], ...]  # (offset of the contents, raw contents) of every string literal


@functools.lru_cache(maxsize=None)
def lex_rust(text: str) -> RustText:
    """Comments (line, nested block), string literals (plain, byte, C, raw with any number of `#`),
    char literals and lifetimes. String contents are returned raw (escapes not decoded)."""
    n = len(text)
    nc, co = list(text), list(text)
    strings: list[tuple[int, str]] = []
    i = 0
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            _blank(nc, i, j)
            _blank(co, i, j)
            i = j
            continue
        if c == "/" and text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            _blank(nc, i, j)
            _blank(co, i, j)
            i = j
            continue
        if c == "r":
            prev = text[i - 1] if i else ""
            prev2 = text[i - 2] if i > 1 else ""
            starts_token = prev not in _IDENT_CHARS or (prev in "bc" and prev2 not in _IDENT_CHARS)
            m = _RUST_RAW_OPEN.match(text, i) if starts_token else None
            if m:
                close = '"' + m.group(1)
                start = m.end()
                j = text.find(close, start)
                j = n if j < 0 else j
                strings.append((start, text[start:j]))
                _blank(co, start, j)
                i = j + len(close)
                continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j, n)
            strings.append((i + 1, text[i + 1 : j]))
            _blank(co, i + 1, j)
            i = j + 1
            continue
        if c == "'":
            m = _RUST_CHAR.match(text, i)
            if m:  # a char literal; otherwise a lifetime or a label
                _blank(co, i + 1, m.end() - 1)
                i = m.end()
                continue
        i += 1
    return RustText("".join(nc), "".join(co), tuple(strings))


def rust_strings(text: str) -> list[tuple[int, str]]:
    """(line, contents) of every string literal in a Rust file."""
    return [(line_of(text, off), s) for off, s in lex_rust(text).strings]


# --------------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------------


def strip_sql(text: str) -> str:
    """Blanks SQL comments and the contents of '...' literals (offsets and newlines kept)."""
    n = len(text)
    out = list(text)
    i = 0
    while i < n:
        if text.startswith("--", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            _blank(out, i, j)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            _blank(out, i, j)
            i = j
        elif text[i] == "'":
            j = i + 1
            while j < n:
                if text[j] == "'" and text.startswith("''", j):
                    j += 2
                elif text[j] == "'":
                    break
                else:
                    j += 1
            _blank(out, i + 1, min(j, n))
            i = j + 1
        else:
            i += 1
    return "".join(out)


_SQL_IDENT = r'(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)'
QNAME = rf"({_SQL_IDENT}(?:\s*\.\s*{_SQL_IDENT})?)"


def split_qname(qname: str) -> tuple[str | None, str]:
    """`"Iam".projects` -> ("Iam", "projects"); unquoted identifiers fold to lower case."""
    parts = re.findall(_SQL_IDENT, qname)
    parts = [p[1:-1] if p.startswith('"') else p.lower() for p in parts]
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


# --------------------------------------------------------------------------------------------------


def self_test() -> list[str]:
    failures = []

    def eq(label, got, want):
        if got != want:
            failures.append(f"lexers: {label}: got {got!r}, want {want!r}")

    src = (
        '// "not a string"\n'
        "/* outer /* nested \"x\" */ still comment */\n"
        'let a = "one \\" two"; let b = r#"raw "quoted""#; let c = br"bytes";\n'
        "fn f<'a>(x: &'a str) -> char { let q = '\"'; let e = '\\''; 'l: loop { break 'l; } }\n"
        'let d = c"cstr"; let var = "after r"; let ident_r = 1; let s = "multi\nline";\n'
    )
    t = lex_rust(src)
    eq("string literals", [s for _, s in t.strings],
       ['one \\" two', 'raw "quoted"', "bytes", "cstr", "after r", "multi\nline"])
    eq("lines of literals", [ln for ln, _ in rust_strings(src)], [3, 3, 3, 5, 5, 5])
    eq("comments blanked", "not a string" in t.no_comments or "nested" in t.no_comments, False)
    eq("offsets kept", (len(t.code), t.code.count("\n")), (len(src), src.count("\n")))
    eq("code blanks literal contents", "quoted" in t.code or "cstr" in t.code, False)
    eq("lifetimes are code", "'a str" in t.code and "break 'l" in t.code, True)
    sql = "SELECT 'a -- b' FROM x; -- c\n/* d */ SELECT 'it''s'"
    eq("sql comments and literals", " ".join(strip_sql(sql).split()), "SELECT ' ' FROM x; SELECT ' '")
    eq("qualified name", split_qname('"Iam" . Projects'), ("Iam", "projects"))
    eq("bare name", split_qname("Nodes"), (None, "nodes"))
    return failures
