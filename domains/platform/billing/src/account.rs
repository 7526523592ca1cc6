//! Billing accounts: one per org. Mode `prepaid` (usage burns credit; the default for sign-ups,
//! with a trial credit) or `postpaid` (invoiced monthly; finance sets it). An optional monthly
//! spend limit. Standing is what admission asks before a product allocates: good, credit
//! exhausted, spend limit reached, or delinquent. Money lives in the ledger; this table holds
//! settings and the instants standing changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_ids::OrgId;
use shared_kernel::DomainResult;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

/// Admission refusals (stable API codes).
pub const CREDIT_EXHAUSTED: &str = "credit_exhausted";
pub const SPEND_LIMIT_REACHED: &str = "spend_limit_reached";
pub const ORG_DELINQUENT: &str = "org_delinquent";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingMode {
    Prepaid,
    Postpaid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    Good,
    CreditExhausted,
    SpendLimitReached,
    Delinquent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingAccount {
    pub org: OrgId,
    pub mode: BillingMode,
    pub currency: String,
    pub monthly_spend_limit_minor: Option<i64>,
    pub exhausted_since: Option<DateTime<Utc>>,
    pub delinquent_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Where an org stands now, in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub org: OrgId,
    pub mode: BillingMode,
    pub currency: String,
    /// Prepaid credit on the ledger (top-ups and grants, less what finalized invoices used).
    pub credit_minor: i64,
    /// Usage rated but not yet on a finalized invoice, live up to now (rounded once, up).
    pub unbilled_minor: i64,
    /// `credit - unbilled` for prepaid; what may still be spent.
    pub available_minor: i64,
    /// Spent in the current calendar month (finalized and unbilled), against the spend limit.
    pub spent_this_month_minor: i64,
    pub monthly_spend_limit_minor: Option<i64>,
    /// Owed on open invoices.
    pub receivable_minor: i64,
    pub standing: Standing,
}

/// The account of `org`, created on first call in `mode` with `trial_credit_minor` granted once
/// (ledger: promotions → prepaid credit, key `trial/<org>`). Idempotent.
pub async fn ensure(
    pool: &PgPool,
    org: OrgId,
    mode: BillingMode,
    trial_credit_minor: i64,
) -> DomainResult<BillingAccount> {
    unimplemented!("account::ensure")
}

/// `billing_account_not_found` when the org has none.
pub async fn get(pool: &PgPool, org: OrgId) -> DomainResult<BillingAccount> {
    unimplemented!("account::get")
}

pub async fn set_mode(
    pool: &PgPool,
    org: OrgId,
    mode: BillingMode,
) -> DomainResult<BillingAccount> {
    unimplemented!("account::set_mode")
}

/// `None` removes the limit. Re-evaluates standing at once.
pub async fn set_spend_limit(
    pool: &PgPool,
    org: OrgId,
    limit_minor: Option<i64>,
) -> DomainResult<BillingAccount> {
    unimplemented!("account::set_spend_limit")
}

/// Credit given by the platform (finance, a goodwill credit): promotions → prepaid credit.
/// Idempotent by `key`.
pub async fn grant_credit(
    pool: &PgPool,
    org: OrgId,
    amount_minor: i64,
    key: &str,
    description: &str,
) -> DomainResult<Balance> {
    unimplemented!("account::grant_credit")
}

pub async fn balance(pool: &PgPool, org: OrgId) -> DomainResult<Balance> {
    unimplemented!("account::balance")
}

/// Admission, inside the product's allocation transaction: refuses with `credit_exhausted`,
/// `spend_limit_reached` or `org_delinquent` (a conflict naming what to do). An org billing has
/// no account for is admitted (it predates billing; sign-up creates one).
pub async fn admit(conn: &mut PgConnection, org: OrgId) -> DomainResult<()> {
    unimplemented!("account::admit")
}

/// What [`refresh_standing`] changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandingChange {
    pub org: OrgId,
    pub before: Standing,
    pub after: Standing,
    /// Threshold events recorded now (`credit_below_50_percent`, …).
    pub events: Vec<String>,
}

/// Recomputes standing from the balance: sets or clears `exhausted_since`, records each
/// threshold crossing of `thresholds_percent` once (of the credit at its last top-up). Idempotent.
pub async fn refresh_standing(
    pool: &PgPool,
    org: OrgId,
    thresholds_percent: &[u8],
) -> DomainResult<StandingChange> {
    unimplemented!("account::refresh_standing")
}

/// Orgs whose credit or limit ran out, or that are delinquent, longer than `grace` ago: their
/// running instances are to be stopped.
pub async fn past_grace(pool: &PgPool, grace: Duration) -> DomainResult<Vec<OrgId>> {
    unimplemented!("account::past_grace")
}

/// Every org with an account, for sweeps (ordered, paged by `after`).
pub async fn orgs(pool: &PgPool, after: Option<OrgId>, limit: i64) -> DomainResult<Vec<OrgId>> {
    unimplemented!("account::orgs")
}

pub async fn mark_delinquent(pool: &PgPool, org: OrgId) -> DomainResult<BillingAccount> {
    unimplemented!("account::mark_delinquent")
}

pub async fn clear_delinquent(conn: &mut PgConnection, org: OrgId) -> DomainResult<()> {
    unimplemented!("account::clear_delinquent")
}

/// A recorded account event (threshold crossing, exhausted, restored, delinquent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvent {
    pub seq: i64,
    pub org: OrgId,
    pub kind: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

pub async fn events(pool: &PgPool, org: OrgId, after_seq: i64) -> DomainResult<Vec<AccountEvent>> {
    unimplemented!("account::events")
}
