//! Node identity. An operator creates an expiring, single-use join token; the agent exchanges it
//! once, at registration, for a per-node credential: the public half of a keypair generated on
//! the host. Afterwards the agent proves itself by signing a short-lived assertion with its
//! private key, which never leaves the host; the database holds only public keys.

use crate::secrets::{self, NewSecret, SecretKind};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use shared_ids::NodeId;
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use uuid::Uuid;

pub const MAX_JOIN_TOKEN_TTL_S: i64 = 7 * 24 * 3600;
/// How long a node's assertion is good for, and how far clocks may disagree.
pub const ASSERTION_MAX_AGE_S: i64 = 300;

#[derive(Debug, Clone, Serialize)]
pub struct JoinToken {
    pub id: Uuid,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

pub async fn create_join_token(
    pool: &PgPool,
    created_by: Uuid,
    ttl_s: i64,
) -> DomainResult<(JoinToken, NewSecret)> {
    if !(60..=MAX_JOIN_TOKEN_TTL_S).contains(&ttl_s) {
        return Err(DomainError::invalid(
            "invalid_ttl",
            format!("a join token lives 60 to {MAX_JOIN_TOKEN_TTL_S} seconds"),
        ));
    }
    let secret = secrets::generate(SecretKind::JoinToken);
    let (id, created_at, expires_at): (Uuid, _, _) = sqlx::query_as(
        "INSERT INTO iam.join_tokens (id, secret_hash, created_by, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8)) RETURNING id, created_at, expires_at",
    )
    .bind(Uuid::now_v7())
    .bind(&secret.hash)
    .bind(created_by)
    .bind(ttl_s as f64)
    .fetch_one(pool)
    .await?;
    Ok((
        JoinToken {
            id,
            created_at,
            expires_at,
        },
        secret,
    ))
}

fn invalid_join_token() -> DomainError {
    DomainError::invalid(
        "invalid_join_token",
        "the join token is unknown, used or expired",
    )
}

/// The id of a usable (unexpired, unused) join token, without using it.
pub async fn check_join_token(pool: &PgPool, token: &str) -> DomainResult<Uuid> {
    if !secrets::well_formed(SecretKind::JoinToken, token) {
        return Err(invalid_join_token());
    }
    sqlx::query_scalar(
        "SELECT id FROM iam.join_tokens WHERE secret_hash = $1 AND used_at IS NULL AND expires_at > now()",
    )
    .bind(secrets::hash(token))
    .fetch_optional(pool)
    .await?
    .ok_or_else(invalid_join_token)
}

/// A node's public keys: Ed25519 (it signs assertions and reports) and X25519 (commands are
/// sealed for it). Raw 32-byte keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeKeys {
    pub public_key: Vec<u8>,
    pub encryption_key: Option<Vec<u8>>,
}

/// A join without both keys, or an encryption key without its signing key.
pub fn keys_required() -> DomainError {
    DomainError::invalid(
        "public_key_required",
        "joining needs the node's Ed25519 public_key and X25519 encryption_key (base64url)",
    )
}

impl NodeKeys {
    /// The keys a registration reports (base64url without padding): none, or the signing key
    /// with an optional encryption key.
    pub fn decode(
        public_key: Option<&str>,
        encryption_key: Option<&str>,
    ) -> DomainResult<Option<Self>> {
        let decode = |text: Option<&str>, code: &'static str| {
            text.map(|k| {
                URL_SAFE_NO_PAD.decode(k).map_err(|_| {
                    DomainError::invalid(code, "a node key is 32 bytes, base64url without padding")
                })
            })
            .transpose()
        };
        let public_key = decode(public_key, "invalid_public_key")?;
        let encryption_key = decode(encryption_key, "invalid_encryption_key")?;
        match (public_key, encryption_key) {
            (Some(public_key), encryption_key) => {
                let keys = Self {
                    public_key,
                    encryption_key,
                };
                keys.check()?;
                Ok(Some(keys))
            }
            (None, None) => Ok(None),
            (None, Some(_)) => Err(keys_required()),
        }
    }

    fn check(&self) -> DomainResult<()> {
        if self.public_key.len() != 32 {
            return Err(DomainError::invalid(
                "invalid_public_key",
                "a node's public key is a raw Ed25519 key (32 bytes, base64url)",
            ));
        }
        if self.encryption_key.as_ref().is_some_and(|k| k.len() != 32) {
            return Err(DomainError::invalid(
                "invalid_encryption_key",
                "a node's encryption key is a raw X25519 key (32 bytes, base64url)",
            ));
        }
        Ok(())
    }
}

/// Uses the join token (once) and records `node`'s public key. A node that already holds a live
/// credential cannot be joined again (an operator revokes it first).
pub async fn join(pool: &PgPool, token: &str, node: NodeId, keys: &NodeKeys) -> DomainResult<()> {
    keys.check()?;
    let public_key = keys.public_key.as_slice();
    if !secrets::well_formed(SecretKind::JoinToken, token) {
        return Err(invalid_join_token());
    }
    let mut tx = pool.begin().await?;
    let used: Option<Uuid> = sqlx::query_scalar(
        "UPDATE iam.join_tokens SET used_at = now(), used_by = $2
         WHERE secret_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING id",
    )
    .bind(secrets::hash(token))
    .bind(node.uuid())
    .fetch_optional(&mut *tx)
    .await?;
    let token_id = used.ok_or_else(invalid_join_token)?;
    let inserted = sqlx::query(
        "INSERT INTO iam.node_credentials (node_id, public_key, encryption_key, join_token)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (node_id) DO UPDATE SET public_key = EXCLUDED.public_key,
             encryption_key = EXCLUDED.encryption_key, join_token = EXCLUDED.join_token,
             created_at = now(), rotated_at = NULL, revoked_at = NULL
         WHERE iam.node_credentials.revoked_at IS NOT NULL",
    )
    .bind(node.uuid())
    .bind(public_key)
    .bind(keys.encryption_key.as_deref())
    .bind(token_id)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(DomainError::conflict(
            "node_already_joined",
            format!("node {node} already holds a credential; revoke it before joining again"),
        ));
    }
    tx.commit().await?;
    Ok(())
}

/// Whether `node` holds a live credential.
pub async fn has_credential(pool: &PgPool, node: NodeId) -> DomainResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM iam.node_credentials WHERE node_id = $1 AND revoked_at IS NULL)",
    )
    .bind(node.uuid())
    .fetch_one(pool)
    .await?)
}

/// The live credential's keys of `node`, if it has one.
pub async fn keys(pool: &PgPool, node: NodeId) -> DomainResult<Option<NodeKeys>> {
    let row: Option<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT public_key, encryption_key FROM iam.node_credentials
         WHERE node_id = $1 AND revoked_at IS NULL",
    )
    .bind(node.uuid())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(public_key, encryption_key)| NodeKeys {
        public_key,
        encryption_key,
    }))
}

/// A registered node reports its keys: the same signing key (an encryption key recorded if it
/// had none yet, or changed), or a new pair (rotation: the caller proved the old key). Every
/// change takes effect at once; commands sealed before it fail on the node and are retried.
pub async fn update_keys(pool: &PgPool, node: NodeId, keys: &NodeKeys) -> DomainResult<()> {
    keys.check()?;
    let updated = sqlx::query(
        "UPDATE iam.node_credentials SET
             rotated_at = CASE WHEN public_key <> $2 THEN now() ELSE rotated_at END,
             public_key = $2,
             encryption_key = coalesce($3, encryption_key)
         WHERE node_id = $1 AND revoked_at IS NULL",
    )
    .bind(node.uuid())
    .bind(&keys.public_key)
    .bind(keys.encryption_key.as_deref())
    .execute(pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(DomainError::not_found(
            "node_not_found",
            format!("node {node} holds no live credential"),
        ));
    }
    Ok(())
}

/// Ends a node's credential (decommissioned or compromised host).
pub async fn revoke_credential(pool: &PgPool, node: NodeId) -> DomainResult<()> {
    sqlx::query("UPDATE iam.node_credentials SET revoked_at = coalesce(revoked_at, now()) WHERE node_id = $1")
        .bind(node.uuid())
        .execute(pool)
        .await?;
    Ok(())
}

/// What a node signs to prove itself: `gpuaas-node-assertion.v1.<node>.<unix seconds>.<nonce>`
/// (the `Authorization: Node <node>.<unix seconds>.<nonce>.<signature>` header).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assertion {
    pub node: NodeId,
    pub issued_at: i64,
    pub nonce: String,
    pub signature: Vec<u8>,
}

impl Assertion {
    pub fn message(node: NodeId, issued_at: i64, nonce: &str) -> Vec<u8> {
        format!("gpuaas-node-assertion.v1.{node}.{issued_at}.{nonce}").into_bytes()
    }

    /// Parses the header value `<node>.<unix seconds>.<nonce>.<signature base64url>`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let node = parts.next()?.parse().ok()?;
        let issued_at = parts.next()?.parse().ok()?;
        let nonce = parts.next()?.to_string();
        let signature = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        if parts.next().is_some() || nonce.is_empty() || nonce.len() > 64 {
            return None;
        }
        Some(Self {
            node,
            issued_at,
            nonce,
            signature,
        })
    }
}

/// Verifies a node's assertion against its registered public key; the node it proves, or None.
pub async fn verify_assertion(pool: &PgPool, header: &str) -> DomainResult<Option<NodeId>> {
    let Some(assertion) = Assertion::parse(header) else {
        return Ok(None);
    };
    if chrono::Utc::now().timestamp().abs_diff(assertion.issued_at) > ASSERTION_MAX_AGE_S as u64 {
        return Ok(None);
    }
    let key: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT public_key FROM iam.node_credentials WHERE node_id = $1 AND revoked_at IS NULL",
    )
    .bind(assertion.node.uuid())
    .fetch_optional(pool)
    .await?;
    let Some(key) = key else {
        return Ok(None);
    };
    let message = Assertion::message(assertion.node, assertion.issued_at, &assertion.nonce);
    if UnparsedPublicKey::new(&ED25519, &key)
        .verify(&message, &assertion.signature)
        .is_err()
    {
        return Ok(None);
    }
    // Good once: a header captured in its window cannot be replayed. Entries older than the
    // window (twice, for clock skew) are pruned on the way.
    let first_use = sqlx::query(
        "WITH pruned AS (DELETE FROM iam.node_assertions_seen
                         WHERE node_id = $1 AND seen_at < now() - make_interval(secs => $3))
         INSERT INTO iam.node_assertions_seen (node_id, nonce) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(assertion.node.uuid())
    .bind(&assertion.nonce)
    .bind((2 * ASSERTION_MAX_AGE_S) as f64)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    Ok(first_use.then_some(assertion.node))
}
