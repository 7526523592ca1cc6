//! Audit: every mutating request appends an entry (success and failure alike) after its
//! response is known, and a background task anchors the chain heads (signed with the token key,
//! logged, and appended to a file outside the database when one is configured), so a verify can
//! tell rows cut from the end of a chain.

use crate::AppState;
use platform_audit::{AnchorSigner, AnchorVerifier, NewEntry, Outcome};
use platform_iam::tokens::TokenKeys;
use shared_kernel::OperationContext;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Appends the entry for one mutating request and waits until it is committed. An audit failure
/// is logged, not answered: the change it describes has already happened (or failed) by now.
pub async fn record(
    state: &AppState,
    ctx: &OperationContext,
    action: &str,
    resource: &str,
    status: axum::http::StatusCode,
    code: Option<&str>,
) {
    let entry = OwnedEntry {
        ctx: ctx.clone(),
        action: action.to_string(),
        resource: resource.to_string(),
        outcome: if status.is_success() || status.is_redirection() {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        status: status.as_u16(),
        error_code: code.map(str::to_string),
    };
    let (done, committed) = oneshot::channel();
    if state.audit.send((entry, done)).await.is_err() {
        tracing::error!(action, resource, "the audit writer is gone; entry lost");
        return;
    }
    if let Ok(Err(e)) = committed.await {
        tracing::error!(error = %e, action, resource, "could not append the audit entry");
    }
}

pub struct OwnedEntry {
    ctx: OperationContext,
    action: String,
    resource: String,
    outcome: Outcome,
    status: u16,
    error_code: Option<String>,
}

impl OwnedEntry {
    fn entry(&self) -> NewEntry<'_> {
        NewEntry {
            ctx: &self.ctx,
            action: &self.action,
            resource: &self.resource,
            outcome: self.outcome,
            status: self.status,
            error_code: self.error_code.as_deref(),
        }
    }
}

pub type AuditQueue = mpsc::Sender<(OwnedEntry, oneshot::Sender<Result<(), String>>)>;

/// Group commit: requests hand their entry to one writer, which appends every entry waiting at
/// that moment in one transaction and answers each request once it committed. Under load many
/// requests share a commit (one fsync), so the chain costs little; alone, a request waits for
/// its own commit as before. No request is answered before its entry is durable.
pub fn spawn_writer(pool: shared_kernel::db::Pool) -> AuditQueue {
    let (tx, mut rx) = mpsc::channel::<(OwnedEntry, oneshot::Sender<Result<(), String>>)>(4096);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 256
                && let Ok(next) = rx.try_recv()
            {
                batch.push(next);
            }
            if append_batch(&pool, &batch).await.is_ok() {
                for (_, done) in batch {
                    let _ = done.send(Ok(()));
                }
                continue;
            }
            // One bad entry must not lose the others: each in its own transaction.
            for (entry, done) in batch {
                let result = platform_audit::append(&pool, &entry.entry()).await;
                let _ = done.send(result.map(|_| ()).map_err(|e| e.to_string()));
            }
        }
    });
    tx
}

async fn append_batch(
    pool: &shared_kernel::db::Pool,
    batch: &[(OwnedEntry, oneshot::Sender<Result<(), String>>)],
) -> shared_kernel::DomainResult<()> {
    let entries: Vec<NewEntry<'_>> = batch.iter().map(|(e, _)| e.entry()).collect();
    let mut tx = pool.begin().await?;
    platform_audit::append_many_in(&mut tx, &entries).await?;
    tx.commit().await?;
    Ok(())
}

/// Signs anchors with the access-token signing key.
pub struct KeySigner(pub Arc<TokenKeys>);

impl AnchorSigner for KeySigner {
    fn key_id(&self) -> String {
        self.0.sign(b"").0
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).1
    }
}

impl AnchorVerifier for KeySigner {
    fn verify(&self, key_id: &str, message: &[u8], signature: &[u8]) -> bool {
        self.0.verify(key_id, message, signature)
    }
}

/// Anchors every chain that moved, every `every`, until the process ends.
pub fn spawn_anchoring(state: AppState, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            anchor_now(&state).await;
        }
    });
}

pub async fn anchor_now(state: &AppState) {
    let signer = KeySigner(state.keys.clone());
    match platform_audit::anchor(&state.pool, &signer).await {
        Ok(anchors) => {
            for anchor in anchors {
                let line = serde_json::to_string(&anchor).unwrap_or_default();
                tracing::info!(anchor = %line, "audit chain anchored");
                if let Some(path) = &state.config.audit_anchor_file {
                    let appended = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .and_then(|mut f| writeln!(f, "{line}"));
                    if let Err(e) = appended {
                        tracing::error!(error = %e, path = %path.display(), "could not publish the anchor");
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "could not anchor the audit chains"),
    }
}
