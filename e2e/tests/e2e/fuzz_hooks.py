"""Schemathesis hooks of the contract fuzzing (`e2e/tests/e2e/fuzz.rs`, which sets the
environment): who calls each operation, and two checks of our own.

- Each operation is called as the caller its `x-gpuaas-access` names: a tenant (the owner of the
  seeded org), an operator for `platform:` routes, a fresh join token for `node`, nobody for
  `public`. Path and query parameters name the tenant's own org and project, and a member of
  its org, half of the time, so requests get past the lookup to their bodies.
- `errors_are_documented_problems`: every error response is `application/problem+json` with a
  `code` the contract's `Problem.code` lists, at the status it lists.
  (`/metrics` gets its scrape token.)
- `refused_requests_write_nothing`: no table of the `iam`, `gpuaas` and `policy` schemas gains
  or loses a row across a request answered 4xx or 5xx (the audit trail, and the in-process rate
  limits, are left out: refusals are audited and counted by design).
"""

import json
import os
import random

import psycopg
import schemathesis

TENANT = os.environ["GPUAAS_FUZZ_TENANT_TOKEN"]
OPERATOR = os.environ["GPUAAS_FUZZ_OPERATOR_TOKEN"]
SCRAPE = os.environ["GPUAAS_FUZZ_SCRAPE_TOKEN"]
JOIN_TOKENS = os.environ["GPUAAS_FUZZ_JOIN_TOKENS"].split(",")
OWN = {
    "org": os.environ["GPUAAS_FUZZ_ORG"],
    "project": os.environ["GPUAAS_FUZZ_PROJECT"],
    "user": os.environ["GPUAAS_FUZZ_USER"],
}
CODES = dict(
    (code, int(status))
    for code, status in (pair.split(":") for pair in os.environ["GPUAAS_FUZZ_CODES"].split(","))
)

DB = psycopg.connect(os.environ["GPUAAS_FUZZ_DATABASE_URL"], autocommit=True)
TABLES = [
    f'"{schema}"."{table}"'
    for schema, table in DB.execute(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_type = 'BASE TABLE' AND table_schema IN ('iam', 'gpuaas', 'policy')"
        " ORDER BY 1, 2"
    ).fetchall()
]
COUNT_ROWS = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)

# Row counts before each call, and what changed across it, by case.
BEFORE = {}
CHANGED = {}
random.seed(7)


def row_counts():
    return DB.execute(COUNT_ROWS).fetchone()


@schemathesis.hook
def before_call(context, case, kwargs):
    access = case.operation.definition.raw.get("x-gpuaas-access", "")
    if access == "node":
        token = JOIN_TOKENS.pop() if len(JOIN_TOKENS) > 1 else JOIN_TOKENS[0]
    elif access.startswith("platform:"):
        token = OPERATOR
    elif case.operation.path == "/metrics":
        token = SCRAPE
    elif access == "public":
        token = None
    else:
        token = TENANT
    headers = dict(case.headers or {})
    headers.pop("Authorization", None)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    case.headers = headers
    for where in (case.path_parameters, case.query):
        for name, own in OWN.items():
            if where and name in where and random.random() < 0.5:
                where[name] = own
    BEFORE[id(case)] = row_counts()


@schemathesis.hook
def after_call(context, case, response):
    before = BEFORE.pop(id(case), None)
    if before is None or response.status_code < 400:
        CHANGED.pop(id(case), None)
        return
    after = row_counts()
    CHANGED[id(case)] = [
        f"{table} {b} -> {a}" for table, b, a in zip(TABLES, before, after) if b != a
    ]


@schemathesis.check
def refused_requests_write_nothing(ctx, response, case):
    changed = CHANGED.get(id(case))
    if response.status_code >= 400 and changed:
        raise AssertionError(
            f"a request answered {response.status_code} changed rows: {', '.join(changed)}"
        )


@schemathesis.check
def errors_are_documented_problems(ctx, response, case):
    if response.status_code < 400:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    if content_type.split(";")[0].strip() != "application/problem+json":
        raise AssertionError(
            f"a {response.status_code} answered {content_type!r}, not application/problem+json"
        )
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"a {response.status_code} problem body is not JSON: {e}")
    code = body.get("code")
    if code not in CODES:
        raise AssertionError(f"a {response.status_code} problem has undocumented code {code!r}")
    if CODES[code] != response.status_code:
        raise AssertionError(
            f"`{code}` answered {response.status_code}; the contract says {CODES[code]}"
        )
