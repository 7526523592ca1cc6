//! Wire types of billing (platform route family): an org's billing account and balance, usage,
//! top-ups, payment methods and payments, invoices, metering runs, the price book, and the usage
//! events producers post.
//!
//! Money: integers in minor units of `currency` (cents for USD), named `*_minor`. Amounts and
//! quantities finer than that (exact, before rounding) travel as decimal strings (`"0.0830555"`),
//! never as JSON floats.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use shared_ids::{InvoiceId, OrgId, ProjectId};
use uuid::Uuid;

/// `GET /v1/orgs/{org}/billing`: where an org stands now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BillingAccount {
    pub org_id: OrgId,
    /// `prepaid` (usage burns credit) or `postpaid` (invoiced monthly).
    pub mode: String,
    pub currency: String,
    /// Prepaid credit: top-ups and grants, less what finalized invoices used.
    pub credit_minor: i64,
    /// Usage rated but not yet on a finalized invoice, up to now.
    pub unbilled_minor: i64,
    /// What may still be spent (prepaid: credit less unbilled).
    pub available_minor: i64,
    /// Spent this calendar month, against the spend limit.
    pub spent_this_month_minor: i64,
    pub monthly_spend_limit_minor: Option<i64>,
    /// Owed on open invoices.
    pub receivable_minor: i64,
    /// `good`, `credit_exhausted`, `spend_limit_reached` or `delinquent`.
    pub standing: String,
}

/// `GET /v1/orgs/{org}/billing/usage`: quantities per UTC day, meter and SKU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub items: Vec<DailyUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DailyUsage {
    pub day: NaiveDate,
    pub meter: String,
    /// `""` for a meter without SKUs.
    pub sku: String,
    /// Exact, as a decimal string (GPU-seconds, tokens).
    pub quantity: String,
}

/// `GET /v1/orgs/{org}/billing/usage/live`: the current period's usage, rated up to now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveUsage {
    /// The period's label (`2026-12`).
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub currency: String,
    /// The sum of the items' exact amounts, rounded once (half away from zero).
    pub total_minor: i64,
    pub total_exact_minor: String,
    pub items: Vec<RatedUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RatedUsage {
    pub meter: String,
    pub sku: String,
    pub quantity: String,
    /// What the price is per (`GPU-hour`, `million input tokens`).
    pub unit_label: String,
    pub price_version: i32,
    /// Rounded (half away from zero).
    pub amount_minor: i64,
    /// Exact minor units, a decimal string.
    pub amount_exact_minor: String,
    pub currency: String,
}

/// `PUT /v1/orgs/{org}/billing/spend-limit`. `null` removes the limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SetSpendLimitRequest {
    pub monthly_spend_limit_minor: Option<i64>,
}

/// `PUT /v1/orgs/{org}/billing/mode` (finance).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SetBillingModeRequest {
    /// `prepaid` or `postpaid`.
    pub mode: String,
}

/// `POST /v1/orgs/{org}/billing/top-ups`: charge a payment method, credit the account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    pub amount_minor: i64,
    pub payment_method_id: Uuid,
    /// Makes a retry charge once (or send the `Idempotency-Key` header; one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// What a charge came to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentOutcome {
    /// `paid`, `pending` (confirmed later), `retry_later` (a soft decline) or `declined`.
    pub result: String,
    pub reason: Option<String>,
}

/// A top-up's outcome and the balance after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopUp {
    pub outcome: PaymentOutcome,
    pub billing: BillingAccount,
}

/// `POST /v1/orgs/{org}/billing/payments`: pay every unpaid invoice now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// Default: the org's default payment method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InvoicePayment {
    pub invoice_id: InvoiceId,
    pub outcome: PaymentOutcome,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Payments {
    /// One per invoice that was unpaid; empty when nothing was due.
    pub items: Vec<InvoicePayment>,
    pub billing: BillingAccount,
}

/// A payment method (the provider's token is not shown again).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentMethod {
    pub id: Uuid,
    pub org_id: OrgId,
    /// `sandbox`, `stripe`.
    pub provider: String,
    pub label: String,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/orgs/{org}/payment-methods`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AddPaymentMethodRequest {
    /// The provider's token (sandbox: `pm_sandbox_success`, …).
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Make it the default (the first method always is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub make_default: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Invoice {
    pub id: InvoiceId,
    pub org_id: OrgId,
    /// The period's label (`2026-12`).
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// `invoice`, `adjusting` or `credit_note`.
    pub kind: String,
    /// The invoice an adjusting invoice or credit note corrects.
    pub corrects: Option<InvoiceId>,
    /// `draft`, `open`, `paid`, `void` or `uncollectible`.
    pub state: String,
    pub currency: String,
    pub total_minor: i64,
    pub credit_applied_minor: i64,
    pub amount_due_minor: i64,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    /// Empty in lists; `GET /v1/orgs/{org}/invoices/{invoice}` has them.
    pub lines: Vec<InvoiceLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InvoiceLine {
    pub line_no: i32,
    pub meter: String,
    pub sku: String,
    pub price_version: i32,
    pub description: String,
    pub quantity: String,
    pub amount_exact_minor: String,
    pub amount_minor: i64,
}

/// `POST /v1/orgs/{org}/metering-runs` (finance): rate a period again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MeteringRunRequest {
    /// `YYYY-MM`, or `START-END` as `YYYYMMDDTHHMMSSZ`.
    pub period: String,
    /// Default: the version in effect at the period's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_version: Option<i32>,
}

/// What a run changed: empty `changes` when nothing did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeteringRunOutcome {
    pub org_id: OrgId,
    pub period: String,
    pub price_version: i32,
    /// The id on the lines it wrote; `null` when nothing changed.
    pub run_id: Option<Uuid>,
    pub changes: Vec<LineChange>,
    pub total_before_exact_minor: String,
    pub total_after_exact_minor: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LineChange {
    pub line_id: Uuid,
    /// `original` or `adjustment`.
    pub kind: String,
    pub meter: String,
    pub sku: String,
    pub price_version: i32,
    pub quantity_before: String,
    pub quantity_after: String,
    pub amount_before_exact_minor: String,
    pub amount_after_exact_minor: String,
}

/// One version of the price book.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PriceBookVersion {
    pub version: i32,
    pub effective_from: DateTime<Utc>,
    pub note: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub prices: Vec<Price>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub meter: String,
    /// `""` (or absent, in a request) for a meter without SKUs.
    #[serde(default)]
    pub sku: String,
    /// Minor units per `per_units` of the meter, exact: a decimal string.
    pub unit_price_minor: String,
    pub per_units: i64,
    pub unit_label: String,
    pub currency: String,
}

/// `POST /v1/price-book/versions` (finance, operators): the next version, whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewPriceBookVersion {
    pub effective_from: DateTime<Utc>,
    #[serde(default)]
    pub note: String,
    pub prices: Vec<Price>,
}

/// `POST /v1/usage-events`: a batch of discrete usage, all or nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UsageEventBatch {
    pub events: Vec<UsageEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    /// The producer's idempotency key: an id seen before counts as a duplicate.
    pub id: String,
    pub meter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub quantity: Quantity,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// Default: the project the request acts in (the key's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<ProjectId>,
}

/// A quantity: a decimal string (`"1500.25"`) or an integer; never a JSON float.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Quantity {
    Whole(i64),
    Decimal(String),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct UsageBatchOutcome {
    /// Events recorded now.
    pub accepted: u64,
    /// Events whose id was recorded before (counted once).
    pub duplicates: u64,
}
