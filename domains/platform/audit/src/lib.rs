//! Platform audit: a tamper-evident, append-only record of who did what, for whom, with what
//! outcome (doc/architecture/0009-audit-hash-chain.md).
//!
//! - [`append`] / [`append_in`] record one event. Events form hash chains: each stores the hash
//!   of the previous event of its chain and its own hash over every stored field
//!   ([`entry_hash`]). A chain is one *lane* of a *scope*: scope `org:<uuid>` for an org's events,
//!   `platform` for events without an org; each scope has [`LANES`] lanes (chain
//!   `org:<uuid>/3`), and an append takes the first lane no other transaction holds, so appends
//!   never wait for each other unless more than [`LANES`] transactions append to one scope at once.
//! - [`anchor`] signs the head of every chain that moved ([`AnchorSigner`]) and stores it; anchors
//!   published outside the database are what make deleting the newest events detectable.
//! - [`verify`] / [`verify_with`] walk the chains and check every link, hash and anchor;
//!   [`export`] cuts a time range into a [`Bundle`] that [`verify_bundle`] checks offline.
//! - [`list`] reads events back, ascending by `seq`, with a cursor.
//!
//! The tables are append-only (triggers refuse UPDATE, DELETE and TRUNCATE); the hash chain is
//! what detects changes made by someone who can disable the triggers.

mod anchor;
mod append;
mod export;
mod hash;
mod list;
mod verify;

pub use anchor::{Anchor, AnchorSigner, AnchorVerifier, anchor};
pub use append::{
    LANES, MAX_ACTION_CHARS, MAX_RESOURCE_CHARS, MAX_TEXT_CHARS, append, append_in, append_many_in,
    ensure_chains,
};
pub use export::{BUNDLE_FORMAT, Bundle, export, verify_bundle};
pub use hash::{
    ANCHOR_DOMAIN, EVENT_DOMAIN, GENESIS_HASH, anchor_message, canonical_time, entry_hash,
};
pub use list::{DEFAULT_LIST_LIMIT, Filter, MAX_LIST_LIMIT, list};
pub use shared_kernel::{AuthMethod, OperationContext, Principal, PrincipalKind};
pub use verify::{VerifyReport, verify, verify_with};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_ids::{OrgId, ProjectId};

/// Whether the audited operation succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    /// `success` / `failure`: what is stored and hashed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            _ => None,
        }
    }
}

/// What the caller records. Who acted, how they authenticated, with which credential id (never a
/// secret), in which org and project, the request id and the source address come from `ctx`.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub ctx: &'a OperationContext,
    /// `instance.create`, `node.cordon`, `auth.login`: 1 to [`MAX_ACTION_CHARS`] of
    /// `[a-z0-9._-]`, else the append is refused (`audit_action_invalid`).
    pub action: &'a str,
    /// `/v1/instances/0190…`: free text, cut to [`MAX_RESOURCE_CHARS`] characters (ending in `…`).
    pub resource: &'a str,
    pub outcome: Outcome,
    /// The HTTP status answered.
    pub status: u16,
    /// The problem code on failure.
    pub error_code: Option<&'a str>,
}

/// One stored event. Every field but `hash` is covered by `hash` ([`entry_hash`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Global id, from one sequence; grows along each chain (taken under the chain's lock), but
    /// events commit in a different order than their `seq` (see [`list`]).
    pub seq: i64,
    /// `<scope>/<lane>`: `org:<uuid>/<n>` or `platform/<n>`.
    pub chain: String,
    /// Position in the chain, 1, 2, 3, … without gaps.
    pub chain_seq: i64,
    /// The database's clock when the event was appended (microseconds).
    pub at: DateTime<Utc>,
    /// [`Principal::label`]: `user:<id>`, `service_account:<id>`, `node:<id>`, `system:<job>`,
    /// `anonymous`.
    pub actor: String,
    pub actor_name: String,
    /// `user`, `service_account`, `node`, `system`, `anonymous`.
    pub actor_kind: String,
    /// [`AuthMethod::as_str`].
    pub auth_method: String,
    pub credential_id: Option<String>,
    pub org_id: Option<OrgId>,
    pub project_id: Option<ProjectId>,
    pub action: String,
    pub resource: String,
    pub outcome: Outcome,
    pub status: i32,
    pub error_code: Option<String>,
    pub request_id: String,
    pub source_ip: Option<String>,
    /// Hex SHA-256 of the previous event of the chain; [`GENESIS_HASH`] for `chain_seq` 1.
    pub prev_hash: String,
    /// Hex SHA-256: [`entry_hash`]`(prev_hash, self)`.
    pub hash: String,
}

/// The scope an org's events (or, for `None`, the platform's) are chained in: `org:<uuid>` or
/// `platform`. Its chains are `<scope>/0` … `<scope>/<LANES - 1>`.
pub fn scope_of(org: Option<OrgId>) -> String {
    match org {
        Some(org) => format!("org:{org}"),
        None => "platform".to_string(),
    }
}

/// The org whose events a chain holds: `Some(Some(org))`, `Some(None)` for a platform chain,
/// `None` for a name that is neither.
pub fn chain_org(chain: &str) -> Option<Option<OrgId>> {
    let scope = chain.rsplit_once('/')?.0;
    if scope == "platform" {
        return Some(None);
    }
    scope.strip_prefix("org:")?.parse().ok().map(Some)
}

/// `user`, `service_account`, … (the serde name of [`PrincipalKind`]).
pub(crate) fn kind_str(kind: PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::User => "user",
        PrincipalKind::ServiceAccount => "service_account",
        PrincipalKind::Node => "node",
        PrincipalKind::System => "system",
        PrincipalKind::Anonymous => "anonymous",
    }
}

/// The row as stored (ids as bare UUIDs), shared by every query that reads events.
#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    seq: i64,
    chain: String,
    chain_seq: i64,
    at: DateTime<Utc>,
    actor: String,
    actor_name: String,
    actor_kind: String,
    auth_method: String,
    credential_id: Option<String>,
    org_id: Option<uuid::Uuid>,
    project_id: Option<uuid::Uuid>,
    action: String,
    resource: String,
    outcome: String,
    status: i32,
    error_code: Option<String>,
    request_id: String,
    source_ip: Option<String>,
    prev_hash: String,
    hash: String,
}

/// The columns of [`EventRow`], in order.
pub(crate) const EVENT_COLUMNS: &str = "seq, chain, chain_seq, at, actor, actor_name, actor_kind, \
     auth_method, credential_id, org_id, project_id, action, resource, outcome, status, \
     error_code, request_id, source_ip, prev_hash, hash";

impl EventRow {
    pub(crate) fn into_event(self) -> shared_kernel::DomainResult<AuditEvent> {
        // The CHECK constraint allows only these two; a row that says otherwise was tampered
        // with at the storage level, and reading it must not hide that.
        let outcome = Outcome::parse(&self.outcome).ok_or_else(|| {
            shared_kernel::DomainError::conflict(
                "audit_row_corrupt",
                format!(
                    "audit event seq {} (chain {} chain_seq {}) has outcome {:?}",
                    self.seq, self.chain, self.chain_seq, self.outcome
                ),
            )
        })?;
        Ok(AuditEvent {
            seq: self.seq,
            chain: self.chain,
            chain_seq: self.chain_seq,
            at: self.at,
            actor: self.actor,
            actor_name: self.actor_name,
            actor_kind: self.actor_kind,
            auth_method: self.auth_method,
            credential_id: self.credential_id,
            org_id: self.org_id.map(OrgId::from),
            project_id: self.project_id.map(ProjectId::from),
            action: self.action,
            resource: self.resource,
            outcome,
            status: self.status,
            error_code: self.error_code,
            request_id: self.request_id,
            source_ip: self.source_ip,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}
