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
use shared_kernel::{DomainError, DomainResult};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

use crate::account;
use crate::invoice::{self, InvoiceState};
use crate::ledger::{self, Account, Entry, NewTransaction};

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
        if request.token == sandbox::NETWORK_ERROR {
            return Err(ProviderUnreachable(
                "sandbox: simulated network error (nothing was charged)".into(),
            ));
        }
        let key = request.idempotency_key.as_str();
        let subject = sandbox::subject_of(key);
        let mut tx = self.pool.begin().await.map_err(sandbox::unreachable)?;
        // One charge of a subject at a time, so `declines_twice` counts distinct keys exactly.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("billing.sandbox:{subject}"))
            .execute(&mut *tx)
            .await
            .map_err(sandbox::unreachable)?;
        if let Some(row) = sandbox::charge_row(&mut tx, key).await? {
            tx.commit().await.map_err(sandbox::unreachable)?;
            return Ok(row.answer());
        }
        let outcome = match request.token.as_str() {
            sandbox::SUCCESS => "succeeded",
            sandbox::INSUFFICIENT_FUNDS => "soft_decline",
            sandbox::SLOW_CONFIRM => "pending",
            sandbox::DECLINES_TWICE => {
                let keys: Vec<String> = sqlx::query_scalar(
                    "SELECT idempotency_key FROM billing.sandbox_charges
                     WHERE token = $1 AND starts_with(idempotency_key, $2)",
                )
                .bind(&request.token)
                .bind(subject)
                .fetch_all(&mut *tx)
                .await
                .map_err(sandbox::unreachable)?;
                let before = keys
                    .iter()
                    .filter(|k| sandbox::subject_of(k) == subject && k.as_str() != key)
                    .count();
                if before < 2 {
                    "soft_decline"
                } else {
                    "succeeded"
                }
            }
            // Unknown tokens (and pm_sandbox_hard_decline) are refused for good.
            _ => "hard_decline",
        };
        let confirm_after = (outcome == "pending").then(|| {
            Utc::now()
                + chrono::Duration::from_std(self.confirm_after)
                    .unwrap_or(chrono::Duration::days(3650))
        });
        sqlx::query(
            "INSERT INTO billing.sandbox_charges (idempotency_key, token, amount_minor, outcome, confirm_after)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(key)
        .bind(&request.token)
        .bind(request.amount_minor)
        .bind(outcome)
        .bind(confirm_after)
        .execute(&mut *tx)
        .await
        .map_err(sandbox::unreachable)?;
        let row = sandbox::charge_row(&mut tx, key)
            .await?
            .ok_or_else(|| ProviderUnreachable("sandbox: charge vanished".into()))?;
        tx.commit().await.map_err(sandbox::unreachable)?;
        Ok(row.answer())
    }
    async fn confirm(&self, provider_ref: &str) -> Result<ChargeOutcome, ProviderUnreachable> {
        let Some(key) = provider_ref.strip_prefix(sandbox::REF_PREFIX) else {
            return Ok(ChargeOutcome::HardDecline {
                reason: format!("sandbox: no charge {provider_ref}"),
            });
        };
        let mut conn = self.pool.acquire().await.map_err(sandbox::unreachable)?;
        Ok(match sandbox::charge_row(&mut conn, key).await? {
            Some(row) => row.answer(),
            None => ChargeOutcome::HardDecline {
                reason: format!("sandbox: no charge {provider_ref}"),
            },
        })
    }
    fn accepts(&self, token: &str) -> bool {
        sandbox::TOKENS.contains(&token)
    }
}

mod sandbox {
    use super::{ChargeOutcome, ProviderUnreachable};
    use chrono::{DateTime, Utc};
    use sqlx::PgConnection;

    pub const SUCCESS: &str = "pm_sandbox_success";
    pub const INSUFFICIENT_FUNDS: &str = "pm_sandbox_insufficient_funds";
    pub const HARD_DECLINE: &str = "pm_sandbox_hard_decline";
    pub const NETWORK_ERROR: &str = "pm_sandbox_network_error";
    pub const SLOW_CONFIRM: &str = "pm_sandbox_slow_confirm";
    pub const DECLINES_TWICE: &str = "pm_sandbox_declines_twice";
    pub const TOKENS: [&str; 6] = [
        SUCCESS,
        INSUFFICIENT_FUNDS,
        HARD_DECLINE,
        NETWORK_ERROR,
        SLOW_CONFIRM,
        DECLINES_TWICE,
    ];
    /// A sandbox charge's reference is its idempotency key under this prefix.
    pub const REF_PREFIX: &str = "sandbox:";

    /// What a key pays for: what comes before `/attempt/` (`invoice/<id>`), else the whole key.
    pub fn subject_of(key: &str) -> &str {
        key.find("/attempt/").map_or(key, |i| &key[..i])
    }

    pub fn unreachable(e: sqlx::Error) -> ProviderUnreachable {
        ProviderUnreachable(format!("sandbox: its book of charges is unreachable: {e}"))
    }

    #[derive(sqlx::FromRow)]
    pub struct ChargeRow {
        idempotency_key: String,
        token: String,
        outcome: String,
        confirm_after: Option<DateTime<Utc>>,
    }

    impl ChargeRow {
        pub fn answer(&self) -> ChargeOutcome {
            let provider_ref = format!("{REF_PREFIX}{}", self.idempotency_key);
            match self.outcome.as_str() {
                "succeeded" => ChargeOutcome::Succeeded { provider_ref },
                "soft_decline" => ChargeOutcome::SoftDecline {
                    reason: "sandbox: insufficient funds".into(),
                },
                "pending" if self.confirm_after.is_none_or(|t| Utc::now() >= t) => {
                    ChargeOutcome::Succeeded { provider_ref }
                }
                "pending" => ChargeOutcome::Pending { provider_ref },
                _ if self.token == HARD_DECLINE => ChargeOutcome::HardDecline {
                    reason: "sandbox: card declined (do not retry)".into(),
                },
                _ => ChargeOutcome::HardDecline {
                    reason: format!("sandbox: unknown payment method {}", self.token),
                },
            }
        }
    }

    pub async fn charge_row(
        conn: &mut PgConnection,
        key: &str,
    ) -> Result<Option<ChargeRow>, ProviderUnreachable> {
        sqlx::query_as(
            "SELECT idempotency_key, token, outcome, confirm_after FROM billing.sandbox_charges
             WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(unreachable)
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
    if !provider.accepts(token) {
        return Err(DomainError::invalid(
            "invalid_payment_method",
            format!(
                "payment provider {} does not know token '{}'",
                provider.name(),
                token.chars().take(64).collect::<String>()
            ),
        ));
    }
    let label = if label.trim().is_empty() {
        token
    } else {
        label.trim()
    };
    if label.chars().count() > 100 {
        return Err(DomainError::invalid(
            "invalid_label",
            "a payment method's label is at most 100 characters",
        ));
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("billing.payment_methods:{}", org.uuid()))
        .execute(&mut *tx)
        .await?;
    let has_default: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM billing.payment_methods WHERE org_id = $1 AND is_default)",
    )
    .bind(org.uuid())
    .fetch_one(&mut *tx)
    .await?;
    let is_default = make_default || !has_default;
    if is_default && has_default {
        sqlx::query(
            "UPDATE billing.payment_methods SET is_default = false WHERE org_id = $1 AND is_default",
        )
        .bind(org.uuid())
        .execute(&mut *tx)
        .await?;
    }
    let method: MethodRow = sqlx::query_as(&format!(
        "INSERT INTO billing.payment_methods (id, org_id, provider, token, label, is_default)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {METHOD_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(org.uuid())
    .bind(provider.name())
    .bind(token)
    .bind(label)
    .bind(is_default)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(method.into())
}

pub async fn methods(pool: &PgPool, org: OrgId) -> DomainResult<Vec<PaymentMethod>> {
    let rows: Vec<MethodRow> = sqlx::query_as(&format!(
        "SELECT {METHOD_COLUMNS} FROM billing.payment_methods WHERE org_id = $1
         ORDER BY created_at, id"
    ))
    .bind(org.uuid())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
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
///
/// A recorded success, soft or hard decline is final for its key; a recorded pending is asked
/// again through [`PaymentProvider::confirm`]; a recorded error (provider unreachable, no
/// payment method) is not: the attempt charges again with the same key, which the provider
/// answers once. A draft invoice is refused (`invoice_not_open`); a void one is `Stop`.
///
/// Collecting one invoice is serialised (with [`pay_unpaid`]) on a per-invoice advisory lock,
/// held from reading what is due, through the charge, to recording its outcome, so a workflow
/// attempt and a manual payment never both charge the full amount. The lock is held on a
/// dedicated connection (its own transaction, which writes nothing) for the whole collection,
/// the provider's network call included: one connection per invoice being collected, which is
/// acceptable at the rate invoices are collected.
///
/// A provider success is never dropped: an attempt recorded `pending` (or `succeeded`) under this
/// key is confirmed and recorded even when the invoice was paid (by hand, or by a credit note) or
/// voided meanwhile; what it charged then becomes prepaid credit (see
/// [`invoice::record_payment`]). Such an attempt answers `Paid` (paid invoice) or `Stop` (void
/// one) once the provider has answered, `Pending` until then.
pub async fn attempt_invoice(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    invoice: InvoiceId,
    attempt: i32,
) -> DomainResult<AttemptResult> {
    if attempt < 1 {
        return Err(DomainError::invalid(
            "invalid_attempt",
            "attempts are numbered from 1",
        ));
    }
    let lock = lock_invoice(pool, invoice).await?;
    let result = collect(
        pool,
        provider,
        invoice,
        attempt,
        &invoice_attempt_key(invoice, attempt),
        None,
    )
    .await;
    release(lock, result).await
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
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "SELECT idempotency_key, invoice_id, attempt, amount_minor, outcome, message, created_at
         FROM billing.payment_attempts WHERE invoice_id = $1
         ORDER BY attempt, created_at, idempotency_key",
    )
    .bind(invoice.uuid())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PaymentAttempt {
            idempotency_key: r.idempotency_key,
            invoice: r.invoice_id.map(InvoiceId::from),
            attempt: r.attempt,
            amount_minor: r.amount_minor,
            outcome: r.outcome,
            message: r.message,
            created_at: r.created_at,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    idempotency_key: String,
    invoice_id: Option<Uuid>,
    attempt: i32,
    amount_minor: i64,
    outcome: String,
    message: String,
    created_at: DateTime<Utc>,
}

/// The most one top-up may add, in minor units.
pub const MAX_TOP_UP_MINOR: i64 = 10_000_000;

/// Tops up prepaid credit: charges `amount_minor` to `method` (key `topup/<key>`), and on success
/// posts cash → prepaid credit and refreshes standing. Idempotent by `key`.
///
/// The charge and the ledger posting both use key `topup/<org>/<key>`. `amount_minor` is 1 to
/// [`MAX_TOP_UP_MINOR`] (`invalid_amount`); the same key with another amount is refused
/// (`idempotency_key_reused`). `method` must be one of the org's (`payment_method_not_found`), and
/// the org must have a billing account (`billing_account_not_found`).
pub async fn top_up(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    org: OrgId,
    amount_minor: i64,
    method: Uuid,
    key: &str,
) -> DomainResult<AttemptResult> {
    if amount_minor <= 0 || amount_minor > MAX_TOP_UP_MINOR {
        return Err(DomainError::invalid(
            "invalid_amount",
            format!("a top-up is 1 to {MAX_TOP_UP_MINOR} minor units, not {amount_minor}"),
        ));
    }
    check_key(key)?;
    let currency: Option<String> =
        sqlx::query_scalar("SELECT currency FROM billing.accounts WHERE org_id = $1")
            .bind(org.uuid())
            .fetch_optional(pool)
            .await?;
    let Some(currency) = currency else {
        return Err(DomainError::not_found(
            "billing_account_not_found",
            format!("org {org} has no billing account"),
        ));
    };
    let method = method_of(pool, org, Some(method)).await?;
    let charge_key = format!("topup/{}/{key}", org.uuid());
    let subject = Subject::TopUp {
        org,
        amount_minor,
        currency: currency.clone(),
    };
    let recorded = recorded(pool, &charge_key).await?;
    if let Some(r) = &recorded
        && r.amount_minor != amount_minor
    {
        return Err(DomainError::conflict(
            "idempotency_key_reused",
            format!(
                "top-up {key} was made for {} minor units, not {amount_minor}",
                r.amount_minor
            ),
        ));
    }
    let charge = Charge {
        subject: &subject,
        key: &charge_key,
        attempt: 1,
        amount_minor,
        currency: &currency,
    };
    let result = settle(pool, provider, &charge, method, recorded).await?;
    if result == AttemptResult::Paid {
        account::refresh_standing(pool, org, &[]).await?;
    }
    Ok(result)
}

/// Pays every unpaid invoice of an org now (`gpuaas billing pay`), with the default method or
/// `method`; a success clears delinquency. Returns each invoice's result.
///
/// Each invoice is charged under key `invoice/<id>/attempt/manual-<key>` (so the same `key` again
/// charges nothing twice), recorded as the invoice's next attempt, under the same per-invoice
/// lock as [`attempt_invoice`]. Refused (`payment_pending`, a conflict) when an invoice's latest
/// attempt is still pending confirmation at the provider (under another key): charging it again
/// could take the amount twice; wait for it to be confirmed. That is checked for every invoice
/// before anything is charged, and again under each invoice's lock.
pub async fn pay_unpaid(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    org: OrgId,
    method: Option<Uuid>,
    key: &str,
) -> DomainResult<Vec<(InvoiceId, AttemptResult)>> {
    check_key(key)?;
    if method.is_some() {
        // Refuse a foreign method before charging anything.
        method_of(pool, org, method).await?;
    }
    let unpaid = invoice::unpaid(pool, org).await?;
    let manual_key = |id: InvoiceId| format!("invoice/{id}/attempt/manual-{key}");
    // Refuse a pending payment before charging anything.
    for inv in &unpaid {
        refuse_if_pending(pool, inv.id, &manual_key(inv.id)).await?;
    }
    let mut results = Vec::new();
    for inv in unpaid {
        let attempt_key = manual_key(inv.id);
        let lock = lock_invoice(pool, inv.id).await?;
        let result = async {
            refuse_if_pending(pool, inv.id, &attempt_key).await?;
            let next: i32 = sqlx::query_scalar(
                "SELECT coalesce(max(attempt), 0) + 1 FROM billing.payment_attempts
                 WHERE invoice_id = $1",
            )
            .bind(inv.id.uuid())
            .fetch_one(pool)
            .await?;
            collect(pool, provider, inv.id, next, &attempt_key, method).await
        }
        .await;
        results.push((inv.id, release(lock, result).await?));
    }
    Ok(results)
}

/// `payment_pending` when the latest attempt at `invoice` is pending at the provider under
/// another key than `key` (the same key confirms it instead of charging again).
async fn refuse_if_pending(pool: &PgPool, invoice: InvoiceId, key: &str) -> DomainResult<()> {
    let latest: Option<(String, String, i32)> = sqlx::query_as(
        "SELECT idempotency_key, outcome, attempt FROM billing.payment_attempts
         WHERE invoice_id = $1 ORDER BY attempt DESC, created_at DESC LIMIT 1",
    )
    .bind(invoice.uuid())
    .fetch_optional(pool)
    .await?;
    match latest {
        Some((latest_key, outcome, attempt)) if outcome == "pending" && latest_key != key => {
            Err(DomainError::conflict(
                "payment_pending",
                format!(
                    "invoice {invoice}: payment attempt {attempt} is pending confirmation at the                      payment provider; wait for it to be confirmed before paying again"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Takes the advisory lock that serialises collecting `invoice`, on a dedicated connection: a
/// transaction that only holds the lock (everything else goes through the pool and commits on
/// its own, so whoever takes the lock next reads it). Released by [`release`].
async fn lock_invoice(
    pool: &PgPool,
    invoice: InvoiceId,
) -> DomainResult<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut lock = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("billing.collect:{}", invoice.uuid()))
        .execute(&mut *lock)
        .await?;
    Ok(lock)
}

/// Ends the lock's transaction (releasing the lock at once, whatever `result` is) and answers
/// `result`.
async fn release<T>(
    lock: sqlx::Transaction<'static, sqlx::Postgres>,
    result: DomainResult<T>,
) -> DomainResult<T> {
    let released = lock.commit().await;
    let value = result?;
    released?;
    Ok(value)
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

// ── internals ───────────────────────────────────────────────────────────────────────────────────

const METHOD_COLUMNS: &str = "id, org_id, provider, token, label, is_default, created_at";

#[derive(sqlx::FromRow)]
struct MethodRow {
    id: Uuid,
    org_id: Uuid,
    provider: String,
    token: String,
    label: String,
    is_default: bool,
    created_at: DateTime<Utc>,
}

impl From<MethodRow> for PaymentMethod {
    fn from(r: MethodRow) -> Self {
        Self {
            id: r.id,
            org: r.org_id.into(),
            provider: r.provider,
            token: r.token,
            label: r.label,
            is_default: r.is_default,
            created_at: r.created_at,
        }
    }
}

/// `Some(id)`: that method of the org (`payment_method_not_found` otherwise); `None`: the org's
/// default, if any.
async fn method_of(
    pool: &PgPool,
    org: OrgId,
    method: Option<Uuid>,
) -> DomainResult<Option<MethodRow>> {
    match method {
        Some(id) => {
            let row: Option<MethodRow> = sqlx::query_as(&format!(
                "SELECT {METHOD_COLUMNS} FROM billing.payment_methods WHERE id = $1 AND org_id = $2"
            ))
            .bind(id)
            .bind(org.uuid())
            .fetch_optional(pool)
            .await?;
            row.map(Some).ok_or_else(|| {
                DomainError::not_found(
                    "payment_method_not_found",
                    format!("payment method {id} not found"),
                )
            })
        }
        None => Ok(sqlx::query_as(&format!(
            "SELECT {METHOD_COLUMNS} FROM billing.payment_methods WHERE org_id = $1 AND is_default"
        ))
        .bind(org.uuid())
        .fetch_optional(pool)
        .await?),
    }
}

fn check_key(key: &str) -> DomainResult<()> {
    if key.is_empty() || key.len() > 128 {
        return Err(DomainError::invalid(
            "invalid_key",
            "an idempotency key is 1 to 128 bytes",
        ));
    }
    Ok(())
}

/// What a charge pays for.
enum Subject {
    Invoice {
        id: InvoiceId,
        org: OrgId,
    },
    TopUp {
        org: OrgId,
        amount_minor: i64,
        currency: String,
    },
}

impl Subject {
    fn org(&self) -> OrgId {
        match self {
            Self::Invoice { org, .. } | Self::TopUp { org, .. } => *org,
        }
    }
    fn invoice(&self) -> Option<InvoiceId> {
        match self {
            Self::Invoice { id, .. } => Some(*id),
            Self::TopUp { .. } => None,
        }
    }
}

/// A recorded attempt, as settling reads it.
#[derive(sqlx::FromRow)]
struct Recorded {
    amount_minor: i64,
    payment_method: Option<Uuid>,
    outcome: String,
    provider_ref: Option<String>,
    message: String,
}

async fn recorded(pool: &PgPool, key: &str) -> DomainResult<Option<Recorded>> {
    Ok(sqlx::query_as(
        "SELECT amount_minor, payment_method, outcome, provider_ref, message
         FROM billing.payment_attempts WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(pool)
    .await?)
}

/// One charge: what it pays, under which key, for how much.
struct Charge<'a> {
    subject: &'a Subject,
    key: &'a str,
    attempt: i32,
    amount_minor: i64,
    currency: &'a str,
}

/// Records (or, over an `error` or `pending` row, updates) the attempt row of `charge`. A final
/// outcome already recorded is never overwritten.
async fn record(
    conn: &mut PgConnection,
    charge: &Charge<'_>,
    method: Option<Uuid>,
    outcome: &str,
    provider_ref: Option<&str>,
    message: &str,
) -> DomainResult<()> {
    sqlx::query(
        "INSERT INTO billing.payment_attempts (idempotency_key, org_id, invoice_id, attempt,
             amount_minor, currency, payment_method, outcome, provider_ref, message)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (idempotency_key) DO UPDATE SET amount_minor = EXCLUDED.amount_minor,
             payment_method = EXCLUDED.payment_method, outcome = EXCLUDED.outcome,
             provider_ref = EXCLUDED.provider_ref, message = EXCLUDED.message
         WHERE billing.payment_attempts.outcome IN ('error', 'pending')",
    )
    .bind(charge.key)
    .bind(charge.subject.org().uuid())
    .bind(charge.subject.invoice().map(InvoiceId::uuid))
    .bind(charge.attempt)
    .bind(charge.amount_minor)
    .bind(charge.currency)
    .bind(method)
    .bind(outcome)
    .bind(provider_ref)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

/// Collects what is due on `invoice` under `key` (attempt number `attempt`).
async fn collect(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    invoice: InvoiceId,
    attempt: i32,
    key: &str,
    method: Option<Uuid>,
) -> DomainResult<AttemptResult> {
    let inv = invoice::get(pool, None, invoice).await?;
    let subject = Subject::Invoice {
        id: invoice,
        org: inv.org,
    };
    match inv.state {
        InvoiceState::Paid | InvoiceState::Void => {
            // A charge made under this key before the invoice was paid or voided is still
            // confirmed and recorded (as prepaid credit): a provider success is never dropped.
            let charged = recorded(pool, key).await?.filter(|r| {
                r.outcome == "succeeded" || (r.outcome == "pending" && r.provider_ref.is_some())
            });
            if let Some(r) = charged {
                let charge = Charge {
                    subject: &subject,
                    key,
                    attempt,
                    amount_minor: r.amount_minor,
                    currency: &inv.currency,
                };
                let result = settle(pool, provider, &charge, None, Some(r)).await?;
                return Ok(match (inv.state, result) {
                    // Not known yet (pending, or the provider unreachable): look again.
                    (_, AttemptResult::Pending | AttemptResult::RetryLater { .. }) => {
                        AttemptResult::Pending
                    }
                    (InvoiceState::Paid, _) => AttemptResult::Paid,
                    (_, AttemptResult::Paid) => AttemptResult::Stop {
                        reason: format!(
                            "invoice {invoice} is void; what this attempt charged is kept as \
                             prepaid credit"
                        ),
                    },
                    (_, stop) => stop,
                });
            }
            return Ok(if inv.state == InvoiceState::Paid {
                AttemptResult::Paid
            } else {
                AttemptResult::Stop {
                    reason: format!("invoice {invoice} is void"),
                }
            });
        }
        InvoiceState::Draft => {
            return Err(DomainError::conflict(
                "invoice_not_open",
                format!("invoice {invoice} is a draft; finalize it before collecting"),
            ));
        }
        InvoiceState::Open | InvoiceState::Uncollectible => {}
    }
    if inv.amount_due_minor <= 0 {
        return Ok(AttemptResult::Paid);
    }
    let recorded = recorded(pool, key).await?;
    let method = method_of(pool, inv.org, method).await?;
    let charge = Charge {
        subject: &subject,
        key,
        attempt,
        amount_minor: inv.amount_due_minor,
        currency: &inv.currency,
    };
    settle(pool, provider, &charge, method, recorded).await
}

/// Settles one charge: reuses its recorded outcome if final, confirms a recorded pending one,
/// else charges `method` once under the charge's key.
async fn settle(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    charge: &Charge<'_>,
    method: Option<MethodRow>,
    recorded: Option<Recorded>,
) -> DomainResult<AttemptResult> {
    if let Some(r) = recorded {
        // What a final outcome was charged for stays what it was.
        let charge = Charge {
            amount_minor: r.amount_minor,
            ..*charge
        };
        match r.outcome.as_str() {
            "succeeded" => {
                let provider_ref = r.provider_ref.unwrap_or_default();
                return succeed(pool, &charge, r.payment_method, &provider_ref).await;
            }
            "soft_decline" => return Ok(AttemptResult::RetryLater { reason: r.message }),
            "hard_decline" => return Ok(AttemptResult::Stop { reason: r.message }),
            "pending" => {
                if let Some(provider_ref) = r.provider_ref {
                    return match provider.confirm(&provider_ref).await {
                        Ok(outcome) => apply(pool, &charge, r.payment_method, outcome).await,
                        Err(e) => Ok(AttemptResult::RetryLater {
                            reason: e.to_string(),
                        }),
                    };
                }
            }
            // `error`: the provider was not reached (or there was no method); charge again.
            _ => {}
        }
    }
    let Some(method) = method else {
        let reason = "no payment method".to_string();
        let mut conn = pool.acquire().await?;
        record(&mut conn, charge, None, "error", None, &reason).await?;
        return Ok(AttemptResult::RetryLater { reason });
    };
    let request = ChargeRequest {
        idempotency_key: charge.key.to_string(),
        amount_minor: charge.amount_minor,
        currency: charge.currency.to_string(),
        token: method.token.clone(),
    };
    match provider.charge(&request).await {
        Ok(outcome) => apply(pool, charge, Some(method.id), outcome).await,
        Err(e) => {
            let reason = e.to_string();
            let mut conn = pool.acquire().await?;
            record(&mut conn, charge, Some(method.id), "error", None, &reason).await?;
            Ok(AttemptResult::RetryLater { reason })
        }
    }
}

async fn apply(
    pool: &PgPool,
    charge: &Charge<'_>,
    method: Option<Uuid>,
    outcome: ChargeOutcome,
) -> DomainResult<AttemptResult> {
    let (row_outcome, provider_ref, result) = match outcome {
        ChargeOutcome::Succeeded { provider_ref } => {
            return succeed(pool, charge, method, &provider_ref).await;
        }
        ChargeOutcome::SoftDecline { reason } => {
            ("soft_decline", None, AttemptResult::RetryLater { reason })
        }
        ChargeOutcome::HardDecline { reason } => {
            ("hard_decline", None, AttemptResult::Stop { reason })
        }
        ChargeOutcome::Pending { provider_ref } => {
            ("pending", Some(provider_ref), AttemptResult::Pending)
        }
    };
    let message = match &result {
        AttemptResult::RetryLater { reason } | AttemptResult::Stop { reason } => reason.clone(),
        _ => "pending confirmation".to_string(),
    };
    let mut conn = pool.acquire().await?;
    record(
        &mut conn,
        charge,
        method,
        row_outcome,
        provider_ref.as_deref(),
        &message,
    )
    .await?;
    Ok(result)
}

/// A charge succeeded: the attempt row is recorded `succeeded` first, on its own (a provider
/// success is never rolled back by what follows), then what it paid in one transaction (the
/// invoice's payment of the amount charged, or the top-up's posting). Idempotent: a failure in
/// between leaves a `succeeded` row, which the same attempt again records the payment of.
async fn succeed(
    pool: &PgPool,
    charge: &Charge<'_>,
    method: Option<Uuid>,
    provider_ref: &str,
) -> DomainResult<AttemptResult> {
    {
        let mut conn = pool.acquire().await?;
        record(
            &mut conn,
            charge,
            method,
            "succeeded",
            Some(provider_ref).filter(|r| !r.is_empty()),
            "paid",
        )
        .await?;
    }
    let mut tx = pool.begin().await?;
    match charge.subject {
        Subject::Invoice { id, .. } => {
            invoice::record_payment(&mut tx, *id, charge.key, charge.amount_minor).await?;
        }
        Subject::TopUp {
            org,
            amount_minor,
            currency,
        } => {
            ledger::post(
                &mut tx,
                &NewTransaction {
                    key: charge.key.to_string(),
                    org: Some(*org),
                    description: format!("top-up of prepaid credit ({provider_ref})"),
                    corrects: None,
                    currency: currency.clone(),
                    entries: vec![
                        Entry {
                            account: Account::Cash,
                            amount_minor: *amount_minor,
                        },
                        Entry {
                            account: Account::PrepaidCredit(*org),
                            amount_minor: -*amount_minor,
                        },
                    ],
                },
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(AttemptResult::Paid)
}
