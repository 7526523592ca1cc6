"""The architecture, as data: the only file to edit when a crate, a platform domain or a product is
added (then say why in doc/architecture/). Every rule reads its constants from here.

Paths are relative to the repository root and use `/`. In a slot, `<name>` stands for one folder
name (lower case, digits, `-`) and is substituted into the crate name, so `domains/products/<name>`
holds the crate `product-<name>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------
# Crates and layers (rules 1-4).
# --------------------------------------------------------------------------------------------------

LAYERS = {
    0: "shared-ids",
    1: "shared",
    2: "platform",
    3: "products",
    4: "contracts",
    5: "activities",
    6: "workflows",
    7: "top",
    8: "tests",
}
PLATFORM, PRODUCTS, TOP, TESTS = 2, 3, 7, 8


@dataclass(frozen=True)
class Slot:
    path: str  # folder of the crate; `<name>` matches one folder name
    crate: str  # the name the crate must have; `<name>` is the folder name
    layer: int | None  # a key of LAYERS, or None for a side crate
    what: str  # what it is, for messages
    # Workspace crates (names as in this table, `*` wildcards) its normal and build dependencies
    # may name; None: any crate of a strictly lower layer, and side crates that accept it.
    may_depend_on: tuple[str, ...] | None = None
    # Side crates only: which crates may have a normal or build dependency on it.
    used_by_layers: tuple[int, ...] = ()
    used_by: tuple[str, ...] = ()
    # Fixed paths only: the crate must exist (a pattern slot may hold any number of crates).
    required: bool = True

    @property
    def is_side(self) -> bool:
        return self.layer is None

    def describe(self) -> str:
        if self.is_side:
            return f"side crate: {self.what}"
        return f"layer {self.layer} {LAYERS[self.layer]}"


SLOTS: tuple[Slot, ...] = (
    Slot("domains/shared/ids", "shared-ids", 0, "typed ids", may_depend_on=()),
    Slot("domains/shared/kernel", "shared-kernel", 1, "error vocabulary, DB pool, migrations",
         may_depend_on=("shared-ids",)),
    Slot("domains/platform/<name>", "platform-<name>", 2, "platform domain", required=False),
    Slot("domains/products/<name>", "product-<name>", 3, "product domain", required=False),
    Slot("contracts/<name>", "contract-<name>", 4, "Temporal contract", may_depend_on=("shared-ids",),
         required=False),
    Slot("activities", "activities", 5, "Temporal activities"),
    Slot("workflows", "workflows", 6, "Temporal workflows"),
    Slot("api", "api", 7, "REST API"),
    Slot("workers", "workers", 7, "control-plane worker"),
    Slot("node-agent", "node-agent", 7, "node agent"),
    # Above the binaries it drives: its harness library links the API, the worker and the agent.
    Slot("e2e", "e2e", 8, "end-to-end tests and benchmarks"),
    Slot("runtime", "runtime", None, "process plumbing", may_depend_on=(), used_by_layers=(TOP, TESTS)),
    Slot("api/types", "api-types", None, "wire types", may_depend_on=("shared-ids",),
         used_by_layers=(TOP, TESTS), used_by=("cli",)),
    Slot("cli", "cli", None, "HTTP client", may_depend_on=("api-types", "shared-ids")),
)

_NAME_SEGMENT = r"[a-z][a-z0-9-]*"


@dataclass(frozen=True)
class Placed:
    slot: Slot
    expected_name: str  # the crate name the layout gives this path


def place(path: str, slots: tuple[Slot, ...] = SLOTS) -> Placed | None:
    """The slot a crate folder falls in, or None when the layout has no place for it."""
    for s in slots:
        rx = "^" + re.escape(s.path).replace(re.escape("<name>"), f"({_NAME_SEGMENT})") + "$"
        m = re.match(rx, path)
        if m:
            name = s.crate.replace("<name>", m.group(1)) if m.groups() else s.crate
            return Placed(s, name)
    return None


def name_matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(re.fullmatch(re.escape(p).replace(r"\*", ".*"), name) for p in patterns)


# Rule 2: normal and build dependencies that domains/* crates must not have: a prefix, or a crate
# name (also matching `<name>-...`).
DOMAINS_DIR = "domains"
DOMAIN_FORBIDDEN_PREFIXES = ("temporalio",)
DOMAIN_FORBIDDEN_CRATES = ("axum", "tower", "tower-http", "hyper", "reqwest", "tonic")

# Rule 3: the declared, acyclic order in which product crates may call each other (earlier calls
# later), and the edges actually allowed today: {from: {to, ...}}, each along PRODUCT_ORDER.
PRODUCT_ORDER = ("product-tokenfactory", "product-appplatform", "product-gpuaas")
PRODUCT_EDGES: dict[str, set[str]] = {}

# Rule 4: the node agent.
NODE_AGENT_PATH = "node-agent"
NODE_AGENT_ALLOWED = ("contract-node", "api-types", "runtime", "shared-ids")  # workspace deps
NODE_AGENT_FORBIDDEN = (  # never in its resolved normal dependency tree
    "sqlx", "sqlx-core", "sqlx-postgres", "sqlx-macros", "tokio-postgres", "postgres",
    "shared-kernel", "platform-*", "product-*", "activities", "workflows", "api", "workers",
)
SHARED_IDS_PATH = "domains/shared/ids"
SHARED_IDS_FORBIDDEN = ("sqlx", "sqlx-*", "tokio-postgres", "postgres")  # any kind, optional or not

# --------------------------------------------------------------------------------------------------
# Data (rules 5, 6).
# --------------------------------------------------------------------------------------------------

# The Postgres schema each domain crate owns; None: owns no tables (migrations and `SELECT 1`).
CRATE_SCHEMA: dict[str, str | None] = {
    "shared-ids": None,
    "shared-kernel": None,
    "platform-iam": "iam",
    "platform-audit": "audit",
    "platform-policy": "policy",
    "platform-billing": "billing",
    "product-gpuaas": "gpuaas",
}
MIGRATIONS_DIR = "migrations"

# Where SQL must not appear; files under a `tests/` or `benches/` folder, and the crates in
# NO_SQL_EXEMPT, are exempt.
NO_SQL_DIRS = ("activities", "workflows", "workers", "api", "node-agent", "cli", "runtime", "contracts")
NO_SQL_EXEMPT = ("e2e",)

# --------------------------------------------------------------------------------------------------
# Code shape (rules 7, 8).
# --------------------------------------------------------------------------------------------------

WORKFLOWS_SRC = "workflows/src"
ROUTES_DIR = "api/src/routes"
MAX_HANDLER_LINES = 30

# --------------------------------------------------------------------------------------------------
# Docs, vocabulary, lints, tests (rules 9-12).
# --------------------------------------------------------------------------------------------------

WHERE_A_CHANGE_GOES = "doc/architecture/where-a-change-goes.md"
# The five questions of the layer model: (keyword its column header contains, what it asks).
QUESTIONS = (
    ("contract", "contract"),
    ("route", "route family"),
    ("decision", "business decision / package"),
    ("table", "table family / data"),
    ("worker", "worker or async path"),
)
# Rows the table must have: (what, keywords; the row label contains one of them).
REQUIRED_CHANGES = (
    ("IAM", ("iam",)),
    ("billing", ("billing",)),
    ("app deployment", ("app",)),
    ("Token Factory rollout", ("token factory", "tokenfactory")),
)

# Temporal names (workflow types and ids, task queues, signals, search attributes) live only in
# files with this name under these folders (`*` is one folder name; the search is recursive).
VOCABULARY_FILE = "vocabulary.rs"
VOCABULARY_DIRS = ("activities/src", "contracts/*/src")
# Every other .rs file under these folders (src, tests, benches) must not spell them by hand.
VOCABULARY_USERS = ("activities", "workflows", "api", "workers", "node-agent", "runtime", "contracts", "e2e")
# Where workflow, signal and activity types must be named explicitly (`#[run(name = ...)]`).
NAMED_TYPE_DIRS = ("activities/src", "workflows/src", "contracts", "node-agent/src")
# The one file that may spell them: the test that pins every name (a rename must fail a test).
VOCABULARY_PINS = ("e2e/tests/e2e/vocabulary.rs",)
# Declares `SEARCH_ATTRIBUTES=(Name=Type ...)` for the dev and test Temporal servers.
SEARCH_ATTRIBUTES_FILE = "scripts/lib.sh"

RUSTFMT_FILE = "rustfmt.toml"

# Rule 13: where the OpenAPI tags and the CLI nouns are; route-family files that are no resource.
OPENAPI_SPEC = "doc/api/openapi.yaml"
CLI_MAIN = "cli/src/main.rs"
ROUTE_PLUMBING = ("mod.rs", "convert.rs", "config.rs")
E2E_PATH = "e2e"  # the crate with the one platform-wide integration-test target
# Domain crates may keep their own integration tests (Postgres only): they link no Temporal, no
# HTTP, so their binaries are small.
OWN_INTEGRATION_TESTS = ("domains/",)
