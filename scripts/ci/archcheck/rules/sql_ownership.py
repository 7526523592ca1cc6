"""Rule 5: SQL ownership. Each domain crate's SQL names only the schema layout.CRATE_SCHEMA gives it
(a crate that owns no schema runs only migrations and `SELECT 1`); migrations are named
`<14 digits>_<schema>_<name>.sql`, have unique versions, and touch only that schema."""

from __future__ import annotations

import re

from .. import layout
from ..lexers import QNAME, Source, lex_rust, line_of, split_qname, strip_sql
from ..model import Crate, under
from ._selftest import Expect, good_crates, with_crate, _crate

NAME = "5 sql-ownership"
SUMMARY = "each domain crate's SQL names only its own schema; migrations are named and scoped by schema"

_RUST_SQL_REF = re.compile(
    r'\b(?i:FROM|JOIN|INTO|UPDATE|TABLE|TRUNCATE|REFERENCES)\s+(?i:ONLY\s+)?'
    r'(?:\\?")?([A-Za-z_][A-Za-z0-9_]*)(?:\\?")?\.(?:\\?")?([A-Za-z_][A-Za-z0-9_]*)'
)
_SQL_WORD = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WITH|FROM|JOIN|MERGE|TRUNCATE)\b")
_SQL_DML = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|MERGE|TRUNCATE|COPY)\b")


def known_schemas(schema_of: dict[str, str | None]) -> set[str]:
    return {s for s in schema_of.values() if s}


def check_crate_sql(crate: str, own: str | None, files: list[Source], schemas: set[str]) -> list[str]:
    out, seen = [], set()
    foreign = sorted(schemas - {own})
    foreign_re = re.compile(rf"\b({'|'.join(map(re.escape, foreign))})\.([A-Za-z_][A-Za-z0-9_]*)") if foreign else None
    owner = f"schema `{own}`" if own else "no schema"
    for path, text in files:
        for start, s in lex_rust(text).strings:
            hits = [(m.start(), m.group(1), m.group(2)) for m in _RUST_SQL_REF.finditer(s)]
            if foreign_re and _SQL_WORD.search(s):
                hits += [(m.start(), m.group(1), m.group(2)) for m in foreign_re.finditer(s)]
            for off, schema, table in hits:
                if schema.lower() == own:
                    continue
                line = line_of(text, start + off)
                key = (path, line, schema.lower(), table)
                if key not in seen:
                    seen.add(key)
                    out.append(
                        f"{path}:{line}: {crate} names table `{schema}.{table}` but owns {owner}: "
                        "read other domains through their crate's API, a read model or an event"
                    )
            # Plumbing may probe (`SELECT 1`) and keep test databases tidy (the `pg_database` catalog).
            plumbing = re.fullmatch(r"\s*SELECT\s+1\s*;?\s*", s) or re.search(r"\bpg_database\b", s)
            if own is None and _SQL_DML.search(s) and not plumbing:
                out.append(
                    f"{path}:{line_of(text, start)}: {crate} owns no tables and may only run "
                    f"migrations and `SELECT 1`, found SQL {s.strip()[:60]!r}: move it to the domain that owns the table"
                )
    return out


_MIGRATION_NAME = re.compile(r"^(\d{14})_(.+)\.sql$")
_MIGRATION_OBJECTS = [
    # (regex with QNAME as group 1, what it is, whether an unqualified name is a violation)
    (re.compile(rf"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:GLOBAL|LOCAL)\s+)?(?:(?:TEMP|TEMPORARY|UNLOGGED)\s+)?"
                rf"(?:TABLE|VIEW|MATERIALIZED\s+VIEW|SEQUENCE|TYPE|FUNCTION|PROCEDURE|DOMAIN)\s+"
                rf"(?:IF\s+NOT\s+EXISTS\s+)?{QNAME}", re.I), "CREATE", True),
    (re.compile(rf"\bALTER\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW|SEQUENCE|TYPE|FUNCTION|PROCEDURE|DOMAIN)\s+"
                rf"(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{QNAME}", re.I), "ALTER", True),
    (re.compile(rf"\bDROP\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW|SEQUENCE|TYPE|FUNCTION|PROCEDURE|DOMAIN|INDEX)\s+"
                rf"(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?{QNAME}", re.I), "DROP", True),
    (re.compile(rf"\bCREATE\s+(?:UNIQUE\s+)?INDEX\b[^;]*?\bON\s+(?:ONLY\s+)?{QNAME}", re.I), "CREATE INDEX ... ON", True),
    (re.compile(rf"\bINSERT\s+INTO\s+{QNAME}", re.I), "INSERT INTO", True),
    (re.compile(rf"\bREFERENCES\s+{QNAME}", re.I), "REFERENCES", True),
    (re.compile(rf"\bDELETE\s+FROM\s+(?:ONLY\s+)?{QNAME}", re.I), "DELETE FROM", False),
    (re.compile(rf"\bUPDATE\s+(?:ONLY\s+)?{QNAME}", re.I), "UPDATE", False),
    (re.compile(rf"\bTRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?{QNAME}", re.I), "TRUNCATE", False),
]
_CREATE_SCHEMA = re.compile(rf"\b(CREATE|ALTER|DROP)\s+SCHEMA\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?{QNAME}", re.I)


def check_migrations(migrations: list[Source], schemas: set[str]) -> list[str]:
    out = []
    versions: dict[str, str] = {}
    for path, text in migrations:
        name = path.rsplit("/", 1)[-1]
        m = _MIGRATION_NAME.match(name)
        schema = None
        if m:
            schema = next((s for s in sorted(schemas, key=len, reverse=True) if m.group(2).startswith(s + "_")), None)
        if not m or schema is None or len(m.group(2)) <= len(schema) + 1:
            out.append(
                f"{path}: migration must be named `<14 digits>_<schema>_<name>.sql` with schema one of "
                f"{sorted(schemas)} (one ordered stream, prefixed by the owning domain)"
            )
            continue
        if m.group(1) in versions:
            out.append(f"{path}: version {m.group(1)} is also used by {versions[m.group(1)]}: give it the next free version")
        versions[m.group(1)] = path
        sql = strip_sql(text)
        for sm in _CREATE_SCHEMA.finditer(sql):
            _, target = split_qname(sm.group(2))
            if target != schema:
                out.append(f"{path}:{line_of(sql, sm.start())}: {sm.group(1).upper()} SCHEMA {target} in a `{schema}` "
                           f"migration: schema `{target}` is changed only by `<version>_{target}_...sql` files")
        for rx, what, must_qualify in _MIGRATION_OBJECTS:
            for om in rx.finditer(sql):
                qual, obj = split_qname(om.group(1))
                where = f"{path}:{line_of(sql, om.start())}"
                if qual is None:
                    if must_qualify and obj.upper() not in ("SCHEMA",):
                        out.append(f"{where}: {what} {obj}: name it `{schema}.{obj}` (objects go in the file's schema, not the search path)")
                elif qual != schema:
                    stmt = " ".join(om.group(0).split())
                    out.append(f"{where}: `{stmt}` in a `{schema}` migration: it may only touch schema `{schema}`")
        # Any other mention of another domain's objects (views, functions, data fixes) on a line
        # not already reported above.
        reported = {v.split(": ", 1)[0] for v in out}
        for other in sorted(schemas - {schema}):
            for xm in re.finditer(rf"\b{re.escape(other)}\s*\.\s*[A-Za-z_]", sql):
                where = f"{path}:{line_of(sql, xm.start())}"
                if where not in reported:
                    out.append(f"{where}: names schema `{other}` in a `{schema}` migration: it may only touch schema `{schema}`")
    return sorted(set(out), key=out.index)


def check(crates: list[Crate], sources: list[Source], migrations: list[Source],
          schema_of: dict[str, str | None] | None = None) -> list[str]:
    """`sources`: .rs files (any; each domain crate's `src/` is picked out); `migrations`: the files of
    layout.MIGRATIONS_DIR."""
    schema_of = layout.CRATE_SCHEMA if schema_of is None else schema_of
    schemas = known_schemas(schema_of)
    out = []
    for c in crates:
        if not under(c.path + "/", layout.DOMAINS_DIR):
            continue
        placed = layout.place(c.path)
        name = placed.expected_name if placed else c.name
        if name not in schema_of:
            out.append(
                f"{c.manifest}: domain crate {c.name} has no declared schema: add `\"{name}\": \"<schema>\"` (or None) "
                "to CRATE_SCHEMA in scripts/ci/archcheck/layout.py (one schema per domain)"
            )
            continue
        files = [s for s in sources if under(s[0], f"{c.path}/src")]
        out += check_crate_sql(c.name, schema_of[name], files, schemas)
    if not migrations:
        out.append(f"no files in {layout.MIGRATIONS_DIR}/: did the layout change? (layout.MIGRATIONS_DIR)")
    out += check_migrations(migrations, schemas)
    return out


_GOOD_DOMAIN_RS = r'''
/// Reads `iam.projects`? No: a comment may say FROM iam.projects.
pub async fn get(pool: &PgPool) {
    sqlx::query("SELECT id FROM gpuaas.instances i JOIN gpuaas.skus s ON s.id = i.sku_id")
        .fetch_all(pool).await;
    let q = format!(r#"UPDATE gpuaas.nodes SET n = '{}' WHERE id = $1"#, 1);
    let c = '"'; let l: &'static str = "released r JOIN node ON x";
}
'''
_GOOD_MIGRATION = """-- gpuaas: FROM iam.projects in a comment is fine
CREATE SCHEMA IF NOT EXISTS gpuaas;
CREATE TABLE gpuaas.nodes (id uuid PRIMARY KEY, note text DEFAULT 'iam.x; CREATE TABLE public.y');
CREATE TABLE gpuaas.gpus (id uuid PRIMARY KEY, node_id uuid REFERENCES gpuaas.nodes (id));
CREATE UNIQUE INDEX gpus_node ON gpuaas.gpus (node_id) WHERE id IS NOT NULL;
ALTER TABLE gpuaas.gpus ADD COLUMN x int;
INSERT INTO gpuaas.nodes VALUES ('00000000-0000-0000-0000-000000000000', 'n')
    ON CONFLICT (id) DO UPDATE SET note = excluded.note;
"""
_MIG = [("migrations/20260101000000_gpuaas_init.sql", _GOOD_MIGRATION)]
_PATHS = {"product-gpuaas": "domains/products/gpuaas", "platform-iam": "domains/platform/iam",
          "shared-kernel": "domains/shared/kernel", "shared-ids": "domains/shared/ids"}


def self_test() -> list[str]:
    e = Expect("5")
    good = good_crates()

    def sql(crate: str, rs: str, where: str = "src/lib.rs"):
        return check(good, [(f"{_PATHS[crate]}/{where}", rs)], _MIG)

    e.good("own schema only", sql("product-gpuaas", _GOOD_DOMAIN_RS))
    e.good("tests are not scanned", sql("product-gpuaas", 'fn f() { q("SELECT 1 FROM iam.projects"); }', "tests/t.rs"))
    e.bad("product joins iam", sql("product-gpuaas", 'fn f() {\n q("SELECT 1 FROM gpuaas.a JOIN iam.projects p ON true"); }'),
          "domains/products/gpuaas/src/lib.rs:2", "iam.projects")
    e.bad("comma join to iam", sql("product-gpuaas", 'fn f() { q("SELECT * FROM gpuaas.a, iam.projects p"); }'), "iam.projects")
    e.bad("iam writes gpuaas", sql("platform-iam", 'fn f() { q(r#"insert into gpuaas.nodes VALUES (1)"#); }'), "gpuaas.nodes")
    e.bad("unknown schema", sql("platform-iam", 'fn f() { q("DELETE FROM public.t"); }'), "public.t")
    e.bad("quoted schema", sql("platform-iam", 'fn f() { q("SELECT * FROM \\"gpuaas\\".nodes"); }'), "gpuaas")
    e.bad("kernel names a table", sql("shared-kernel", 'fn f() { q("UPDATE iam.orgs SET x = 1"); }'), "iam.orgs")
    e.bad("kernel runs other SQL", sql("shared-kernel", 'fn f() { q("SELECT now()"); }'), "owns no tables")
    e.bad("ids run SQL", sql("shared-ids", 'fn f() { q("SELECT id FROM nodes"); }'), "owns no tables")
    e.good("kernel SELECT 1", sql("shared-kernel", 'fn f() { q("SELECT 1"); q("CREATE DATABASE x"); }'))
    e.good("kernel lists test DBs", sql("shared-kernel", 'fn f() { q("SELECT datname FROM pg_database"); }'))
    e.bad("kernel reads a table", sql("shared-kernel", 'fn f() { q("SELECT id FROM nodes"); }'), "owns no tables")
    e.bad("domain crate without schema",
          check(with_crate(_crate("product-billing", "domains/products/billing", [])), [], _MIG),
          "domains/products/billing/Cargo.toml", '"product-billing"')
    renamed = [c for c in good_crates()]
    next(c for c in renamed if c.path == "domains/platform/iam").name = "gpuaas-iam"
    e.bad("schema found by path mid-rename",
          check(renamed, [("domains/platform/iam/src/a.rs", 'fn f() { q("SELECT * FROM gpuaas.nodes"); }')], _MIG),
          "gpuaas-iam names table `gpuaas.nodes` but owns schema `iam`")
    e.bad("no migrations", check(good, [], []), "migrations/")
    schemas = known_schemas(layout.CRATE_SCHEMA)
    bad_migs = {
        "bad name": ("migrations/2026_gpuaas_init.sql", "SELECT 1;"),
        "unknown schema prefix": ("migrations/20260101000000_ledger_init.sql", "SELECT 1;"),
        "no name after schema": ("migrations/20260101000000_gpuaas.sql", "SELECT 1;"),
        "not .sql": ("migrations/20260101000000_gpuaas_init.txt", ""),
        "create other schema": ("migrations/20260101000000_gpuaas_x.sql", "CREATE SCHEMA iam;"),
        "create table elsewhere": ("migrations/20260101000000_gpuaas_x.sql", "CREATE TABLE iam.t (id int);"),
        "unqualified table": ("migrations/20260101000000_gpuaas_x.sql", "create table t (id int);"),
        "alter elsewhere": ("migrations/20260101000000_gpuaas_x.sql", "ALTER TABLE IF EXISTS public.t ADD c int;"),
        "index elsewhere": ("migrations/20260101000000_gpuaas_x.sql", "CREATE INDEX i ON iam.t (c);"),
        "insert elsewhere": ("migrations/20260101000000_gpuaas_x.sql", "INSERT INTO iam.orgs VALUES (1);"),
        "cross-schema FK": ("migrations/20260101000000_gpuaas_x.sql",
                            "CREATE TABLE gpuaas.t (p uuid REFERENCES iam.projects (id));"),
        "view reading iam": ("migrations/20260101000000_gpuaas_x.sql",
                             "CREATE VIEW gpuaas.v AS SELECT * FROM gpuaas.a, iam.projects;"),
    }
    for label, mig in bad_migs.items():
        e.bad(f"migration: {label}", check_migrations([mig], schemas), mig[0])
    e.bad("migration: line in message", check_migrations(
        [("migrations/20260101000000_gpuaas_x.sql", "-- x\n\nCREATE TABLE iam.t (id int);")], schemas),
        "migrations/20260101000000_gpuaas_x.sql:3")
    dup = [("migrations/20260101000000_gpuaas_a.sql", ""), ("migrations/20260101000000_iam_b.sql", "")]
    e.bad("migration: duplicate version", check_migrations(dup, schemas), "also used by")
    e.good("migration: good", check_migrations(_MIG, schemas))
    return e.failures
