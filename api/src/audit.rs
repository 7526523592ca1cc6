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

/// Appends the entry for one mutating request. An audit failure is logged, not answered: the
/// change it describes has already happened (or failed) by now.
pub async fn record(
    state: &AppState,
    ctx: &OperationContext,
    action: &str,
    resource: &str,
    status: axum::http::StatusCode,
    code: Option<&str>,
) {
    let entry = NewEntry {
        ctx,
        action,
        resource,
        outcome: if status.is_success() || status.is_redirection() {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        status: status.as_u16(),
        error_code: code,
    };
    if let Err(e) = platform_audit::append(&state.pool, &entry).await {
        tracing::error!(error = %e, action, resource, "could not append the audit entry");
    }
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
