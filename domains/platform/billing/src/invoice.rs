//! Invoices: `draft` → `open` (finalized, never edited again) → `paid` | `void` |
//! `uncollectible`. A draft bills every rated line of its org and period not yet on an invoice,
//! one invoice line per meter, SKU and price version, rounded once (half away from zero) from the
//! exact sum. Late adjustments to a period whose invoice is finalized go on an `adjusting`
//! invoice (more owed) or a `credit_note` (less), linked to it. Finalizing posts to the ledger:
//! prepaid credit covers what it can, the rest is receivable.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shared_ids::{InvoiceId, OrgId};
use shared_kernel::DomainResult;
use sqlx::{PgConnection, PgPool};

use crate::Period;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceState {
    Draft,
    Open,
    Paid,
    Void,
    Uncollectible,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceKind {
    Invoice,
    Adjusting,
    CreditNote,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub line_no: i32,
    pub meter: String,
    pub sku: String,
    pub price_version: i32,
    pub description: String,
    pub quantity: Decimal,
    pub amount_exact: Decimal,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: InvoiceId,
    pub org: OrgId,
    pub period: Period,
    pub kind: InvoiceKind,
    pub corrects: Option<InvoiceId>,
    pub state: InvoiceState,
    pub currency: String,
    pub total_minor: i64,
    pub credit_applied_minor: i64,
    /// What a payment must still cover: total less credit applied, 0 once paid.
    pub amount_due_minor: i64,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    /// Empty in lists.
    pub lines: Vec<InvoiceLine>,
}

/// Builds (or rebuilds) the draft of `org`'s `period` from its unbilled rated lines. `None` when
/// nothing is left to bill. Idempotent.
pub async fn build_draft(
    pool: &PgPool,
    org: OrgId,
    period: Period,
) -> DomainResult<Option<Invoice>> {
    unimplemented!("invoice::build_draft")
}

/// Finalizes a draft (draft → open) and posts it to the ledger (key `invoice/<id>/finalize`).
/// An invoice nothing is due on (credit covered it, or a credit note) goes straight to `paid`.
/// Idempotent: finalizing an open or paid invoice returns it unchanged.
pub async fn finalize(pool: &PgPool, id: InvoiceId) -> DomainResult<Invoice> {
    unimplemented!("invoice::finalize")
}

/// Records a payment covering the amount due (cash ← receivable, key `payment/<key>`) and marks
/// the invoice paid; clears the org's delinquency. In the caller's transaction. Idempotent.
pub async fn record_payment(
    conn: &mut PgConnection,
    id: InvoiceId,
    key: &str,
) -> DomainResult<Invoice> {
    unimplemented!("invoice::record_payment")
}

/// open → uncollectible (retries ran out). Idempotent.
pub async fn mark_uncollectible(pool: &PgPool, id: InvoiceId) -> DomainResult<Invoice> {
    unimplemented!("invoice::mark_uncollectible")
}

/// draft or open → void; an open one's ledger posting is reversed. Idempotent.
pub async fn void(pool: &PgPool, id: InvoiceId) -> DomainResult<Invoice> {
    unimplemented!("invoice::void")
}

/// With lines. `org` `Some`: only that org's (`invoice_not_found` otherwise, never a hint it
/// exists); `None`: finance and the workflows.
pub async fn get(pool: &PgPool, org: Option<OrgId>, id: InvoiceId) -> DomainResult<Invoice> {
    unimplemented!("invoice::get")
}

/// An org's invoices, newest first, without lines; `before` pages.
pub async fn list(
    pool: &PgPool,
    org: OrgId,
    before: Option<InvoiceId>,
    limit: i64,
) -> DomainResult<Vec<Invoice>> {
    unimplemented!("invoice::list")
}

/// Finalized invoices of an org with something due (open or uncollectible), oldest first.
pub async fn unpaid(pool: &PgPool, org: OrgId) -> DomainResult<Vec<Invoice>> {
    unimplemented!("invoice::unpaid")
}
