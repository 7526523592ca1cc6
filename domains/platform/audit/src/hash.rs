//! The canonical encodings that are hashed (events) and signed (anchors). Pure and stable: the CLI
//! and any outside auditor re-implement them from these doc comments.

use crate::AuditEvent;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// The `prev_hash` of every chain's first event: 64 hex zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The first field of every event encoding (a version: a new encoding gets a new name).
pub const EVENT_DOMAIN: &str = "gpuaas-audit-event-v1";
/// The first field of every anchor message.
pub const ANCHOR_DOMAIN: &str = "gpuaas-audit-anchor-v1";

/// Appends one field: `0x00` for an absent value; else `0x01`, the UTF-8 length in bytes as a
/// 4-byte big-endian unsigned integer, then the UTF-8 bytes.
fn field(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            let len = u32::try_from(s.len()).expect("audit fields are far below 4 GiB");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// A time as hashed and signed: UTC, RFC 3339, always six fractional digits and `Z`
/// (`2026-12-01T09:30:00.000000Z`). Stored times have microsecond precision, so this is exact.
pub fn canonical_time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The hash of an event: lowercase hex of SHA-256 over the concatenation of these fields, in
/// this order, each encoded as `0x00` when absent, else `0x01 ‖ u32-big-endian(byte length) ‖
/// UTF-8 bytes`:
///
/// | # | field | text |
/// |---|---|---|
/// | 1 | domain | the constant `gpuaas-audit-event-v1` |
/// | 2 | `prev_hash` | the argument (64 lowercase hex; [`GENESIS_HASH`] for chain_seq 1), not `event.prev_hash` |
/// | 3 | `chain` | `org:<uuid>/<lane>` or `platform/<lane>` |
/// | 4 | `chain_seq` | decimal, no sign, no leading zeros |
/// | 5 | `seq` | decimal |
/// | 6 | `at` | [`canonical_time`]: `YYYY-MM-DDTHH:MM:SS.ffffffZ` |
/// | 7 | `actor` | |
/// | 8 | `actor_name` | |
/// | 9 | `actor_kind` | |
/// | 10 | `auth_method` | |
/// | 11 | `credential_id` | absent = `0x00` |
/// | 12 | `org_id` | lowercase hyphenated UUID; absent = `0x00` |
/// | 13 | `project_id` | lowercase hyphenated UUID; absent = `0x00` |
/// | 14 | `action` | |
/// | 15 | `resource` | |
/// | 16 | `outcome` | `success` or `failure` |
/// | 17 | `status` | decimal (`-` for a negative value) |
/// | 18 | `error_code` | absent = `0x00` |
/// | 19 | `request_id` | (may be empty: `0x01 00 00 00 00`) |
/// | 20 | `source_ip` | as stored (`203.0.113.7`, `2001:db8::1`); absent = `0x00` |
///
/// `event.hash` itself is not an input. Test vector (tests/audit.rs, `hash_test_vector`): the
/// event with seq 1, chain `platform/0`, chain_seq 1, at `2026-12-01T09:30:00.123456Z`, actor
/// `system:reconciler`, actor_name `reconciler`, actor_kind `system`, auth_method `system`,
/// no credential, org or project, action `node.cordon`, resource `/v1/nodes/n1`, outcome
/// `success`, status 200, no error code, request_id `req-1`, source_ip `10.0.0.1`, after
/// [`GENESIS_HASH`], hashes to
/// `4832b4d002795988239260f53518f2bd5076f8017585d85b97c25f701a2e004c`.
pub fn entry_hash(prev_hash: &str, event: &AuditEvent) -> String {
    let chain_seq = event.chain_seq.to_string();
    let seq = event.seq.to_string();
    let at = canonical_time(&event.at);
    let org = event.org_id.map(|o| o.to_string());
    let project = event.project_id.map(|p| p.to_string());
    let status = event.status.to_string();
    let mut buf = Vec::with_capacity(512);
    for value in [
        Some(EVENT_DOMAIN),
        Some(prev_hash),
        Some(event.chain.as_str()),
        Some(chain_seq.as_str()),
        Some(seq.as_str()),
        Some(at.as_str()),
        Some(event.actor.as_str()),
        Some(event.actor_name.as_str()),
        Some(event.actor_kind.as_str()),
        Some(event.auth_method.as_str()),
        event.credential_id.as_deref(),
        org.as_deref(),
        project.as_deref(),
        Some(event.action.as_str()),
        Some(event.resource.as_str()),
        Some(event.outcome.as_str()),
        Some(status.as_str()),
        event.error_code.as_deref(),
        Some(event.request_id.as_str()),
        event.source_ip.as_deref(),
    ] {
        field(&mut buf, value);
    }
    hex::encode(Sha256::digest(&buf))
}

/// The bytes an [`AnchorSigner`](crate::AnchorSigner) signs for a chain head: the same field
/// encoding as [`entry_hash`] over `gpuaas-audit-anchor-v1`, `chain`, `chain_seq` (decimal),
/// `hash` (64 lowercase hex) and `at` ([`canonical_time`]), in that order. Not hashed first: the
/// signer gets these bytes (Ed25519 hashes internally).
pub fn anchor_message(chain: &str, chain_seq: i64, hash: &str, at: &DateTime<Utc>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(160);
    for value in [
        ANCHOR_DOMAIN,
        chain,
        &chain_seq.to_string(),
        hash,
        &canonical_time(at),
    ] {
        field(&mut buf, Some(value));
    }
    buf
}
