//! Payments: the [`PaymentProvider`] interface (a Stripe adapter implements it without touching
//! any workflow), the sandbox provider, payment methods, and charge attempts. Each charge carries
//! an idempotency key derived from what it pays and the attempt number, so a retried activity
//! charges once.
//!
//! Sandbox tokens (the test payment methods): `pm_sandbox_success`, `pm_sandbox_insufficient_funds`
//! (soft decline), `pm_sandbox_hard_decline`, `pm_sandbox_network_error`, `pm_sandbox_slow_confirm`
//! (pending, confirmed on a later look), `pm_sandbox_declines_twice` (soft, soft, then success).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_ids::{InvoiceId, OrgId};
use shared_kernel::DomainResult;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// One charge, as a provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRequest {
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    /// The provider's payment method token.
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ChargeOutcome {
    Succeeded {
        provider_ref: String,
    },
    /// Worth retrying later (insufficient funds).
    SoftDecline {
        reason: String,
    },
    /// Never worth retrying (card reported stolen, closed account).
    HardDecline {
        reason: String,
    },
    /// Accepted, not confirmed yet: ask [`PaymentProvider::confirm`] later.
    Pending {
        provider_ref: String,
    },
}

/// The provider could not be asked (network, timeout): the outcome is unknown, retry with the
/// same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUnreachable(pub String);

impl std::fmt::Display for ProviderUnreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "payment provider unreachable: {}", self.0)
    }
}

impl std::error::Error for ProviderUnreachable {}

#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// `sandbox`, `stripe`.
    fn name(&self) -> &'static str;
    /// Charges once per idempotency key: the same key again answers the first outcome.
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderUnreachable>;
    /// The outcome now of a charge that was pending.
    async fn confirm(&self, provider_ref: &str) -> Result<ChargeOutcome, ProviderUnreachable>;
    /// Whether `token` is a payment method this provider knows.
    fn accepts(&self, token: &str) -> bool;
}

/// The sandbox: behaviour by token, its own book of charges in `billing.sandbox_charges`.
#[derive(Clone)]
pub struct SandboxProvider {
    pub pool: PgPool,
    /// How long `pm_sandbox_slow_confirm` stays pending.
    pub confirm_after: Duration,
}

#[async_trait]
impl PaymentProvider for SandboxProvider {
    fn name(&self) -> &'static str {
        "sandbox"
    }
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderUnreachable> {
        unimplemented!("SandboxProvider::charge")
    }
    async fn confirm(&self, provider_ref: &str) -> Result<ChargeOutcome, ProviderUnreachable> {
        unimplemented!("SandboxProvider::confirm")
    }
    fn accepts(&self, token: &str) -> bool {
        unimplemented!("SandboxProvider::accepts")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    pub id: Uuid,
    pub org: OrgId,
    pub provider: String,
    pub token: String,
    pub label: String,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

/// Adds a method the provider accepts (`invalid_payment_method` otherwise); the first one, or
/// `make_default`, becomes the default.
pub async fn add_method(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    org: OrgId,
    token: &str,
    label: &str,
    make_default: bool,
) -> DomainResult<PaymentMethod> {
    unimplemented!("payment::add_method")
}

pub async fn methods(pool: &PgPool, org: OrgId) -> DomainResult<Vec<PaymentMethod>> {
    unimplemented!("payment::methods")
}

/// The key of attempt `attempt` (from 1) at paying `invoice`.
pub fn invoice_attempt_key(invoice: InvoiceId, attempt: i32) -> String {
    format!("invoice/{invoice}/attempt/{attempt}")
}

/// What one attempt at collecting an invoice came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AttemptResult {
    /// Paid now, or before (nothing due).
    Paid,
    /// Accepted, not confirmed: look again (the same attempt) after a while.
    Pending,
    /// Soft decline, network error, no payment method: try again on the schedule.
    RetryLater { reason: String },
    /// Hard decline: stop retrying.
    Stop { reason: String },
}

/// Attempt `attempt` at paying `invoice` with the org's default method. Idempotent: the same
/// attempt again reuses its recorded outcome (and its key at the provider). A success records
/// the payment on the invoice and ledger in one transaction.
pub async fn attempt_invoice(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    invoice: InvoiceId,
    attempt: i32,
) -> DomainResult<AttemptResult> {
    unimplemented!("payment::attempt_invoice")
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAttempt {
    pub idempotency_key: String,
    pub invoice: Option<InvoiceId>,
    pub attempt: i32,
    pub amount_minor: i64,
    pub outcome: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

pub async fn attempts(pool: &PgPool, invoice: InvoiceId) -> DomainResult<Vec<PaymentAttempt>> {
    unimplemented!("payment::attempts")
}

/// Tops up prepaid credit: charges `amount_minor` to `method` (key `topup/<key>`), and on success
/// posts cash → prepaid credit and refreshes standing. Idempotent by `key`.
pub async fn top_up(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    org: OrgId,
    amount_minor: i64,
    method: Uuid,
    key: &str,
) -> DomainResult<AttemptResult> {
    unimplemented!("payment::top_up")
}

/// Pays every unpaid invoice of an org now (`gpuaas billing pay`), with the default method or
/// `method`; a success clears delinquency. Returns each invoice's result.
pub async fn pay_unpaid(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    org: OrgId,
    method: Option<Uuid>,
    key: &str,
) -> DomainResult<Vec<(InvoiceId, AttemptResult)>> {
    unimplemented!("payment::pay_unpaid")
}

/// When attempts happen: attempt 1 at once, then after each delay. Default: 8 attempts over 14
/// days; a hard decline stops early.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrySchedule {
    /// Delay before attempt 2, 3, …
    pub delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        let day = Duration::from_secs(86_400);
        Self {
            delays: vec![day, day, 2 * day, 2 * day, 2 * day, 3 * day, 3 * day],
        }
    }
}

impl RetrySchedule {
    pub fn attempts(&self) -> usize {
        self.delays.len() + 1
    }
}
