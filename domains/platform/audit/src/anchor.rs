//! Signed chain heads.

use crate::anchor_message;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use shared_kernel::DomainResult;
use sqlx::{PgPool, Postgres};

/// Signs anchor messages ([`anchor_message`]); the key never enters this crate.
pub trait AnchorSigner: Send + Sync {
    /// Names the key, so a verifier knows which public key to use (and keys can rotate).
    fn key_id(&self) -> String;
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

/// Checks anchor signatures; answers `false` for an unknown key.
pub trait AnchorVerifier: Send + Sync {
    fn verify(&self, key_id: &str, message: &[u8], signature: &[u8]) -> bool;
}

/// A chain's head as signed at `at`: "chain `chain` had reached `chain_seq`, whose event hashes to
/// `hash`". `signature` is lowercase hex of the signature over [`anchor_message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub chain: String,
    pub chain_seq: i64,
    pub hash: String,
    pub at: DateTime<Utc>,
    pub key_id: String,
    pub signature: String,
}

impl Anchor {
    /// The bytes the signature covers.
    pub fn message(&self) -> Vec<u8> {
        anchor_message(&self.chain, self.chain_seq, &self.hash, &self.at)
    }

    /// Whether the signature verifies (a signature that is not hex does not).
    pub fn signature_ok(&self, verifier: &dyn AnchorVerifier) -> bool {
        hex::decode(&self.signature)
            .is_ok_and(|sig| verifier.verify(&self.key_id, &self.message(), &sig))
    }
}

pub(crate) type AnchorRow = (String, i64, String, DateTime<Utc>, String, String);

pub(crate) fn from_row((chain, chain_seq, hash, at, key_id, signature): AnchorRow) -> Anchor {
    Anchor {
        chain,
        chain_seq,
        hash,
        at,
        key_id,
        signature,
    }
}

pub(crate) const ANCHOR_COLUMNS: &str = "chain, chain_seq, hash, at, key_id, signature";

/// Signs and stores the head of every chain that moved since its newest anchor, and returns the
/// new anchors (publish them outside the database too: log them, append them to a file; that is
/// what lets [`verify_with`](crate::verify_with) detect a truncated chain whose anchors were
/// deleted with it). Locks nothing: appends go on meanwhile, and the next call anchors them.
///
/// A chain whose head row does not match its newest event (tampered with since) is not signed;
/// it is logged, and [`verify`](crate::verify) reports it.
pub async fn anchor(pool: &PgPool, signer: &dyn AnchorSigner) -> DomainResult<Vec<Anchor>> {
    let heads: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT c.chain, c.head_seq, c.head_hash, e.hash
         FROM audit.chains c
         LEFT JOIN audit.events e ON e.chain = c.chain AND e.chain_seq = c.head_seq
         WHERE c.head_seq > COALESCE(
             (SELECT max(a.chain_seq) FROM audit.anchors a WHERE a.chain = c.chain), 0)
         ORDER BY c.chain",
    )
    .fetch_all(pool)
    .await?;
    // Stored with microsecond precision: sign exactly what will be read back.
    let at = Utc::now().trunc_subsecs(6);
    let key_id = signer.key_id();
    let mut new = Vec::with_capacity(heads.len());
    for (chain, chain_seq, head_hash, event_hash) in heads {
        if event_hash.as_deref() != Some(head_hash.as_str()) {
            tracing::error!(
                %chain, chain_seq, %head_hash, ?event_hash,
                "audit chain head does not match its newest event: not anchored (run verify)"
            );
            continue;
        }
        let signature =
            hex::encode(signer.sign(&anchor_message(&chain, chain_seq, &head_hash, &at)));
        new.push(Anchor {
            chain,
            chain_seq,
            hash: head_hash,
            at,
            key_id: key_id.clone(),
            signature,
        });
    }
    if new.is_empty() {
        return Ok(new);
    }
    let column = |f: fn(&Anchor) -> String| new.iter().map(f).collect::<Vec<_>>();
    let stored: Vec<AnchorRow> = sqlx::query_as::<Postgres, AnchorRow>(&format!(
        "INSERT INTO audit.anchors ({ANCHOR_COLUMNS})
         SELECT chain, chain_seq, hash, $4, $5, signature
         FROM UNNEST($1::text[], $2::int8[], $3::text[], $6::text[])
              AS a (chain, chain_seq, hash, signature)
         ON CONFLICT (chain, chain_seq, key_id) DO NOTHING
         RETURNING {ANCHOR_COLUMNS}"
    ))
    .bind(column(|a| a.chain.clone()))
    .bind(new.iter().map(|a| a.chain_seq).collect::<Vec<_>>())
    .bind(column(|a| a.hash.clone()))
    .bind(at)
    .bind(&key_id)
    .bind(column(|a| a.signature.clone()))
    .fetch_all(pool)
    .await?;
    let mut stored: Vec<Anchor> = stored.into_iter().map(from_row).collect();
    stored.sort_by(|a, b| a.chain.cmp(&b.chain));
    Ok(stored)
}
