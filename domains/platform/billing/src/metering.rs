//! Metering: aggregates an org's usage in a period and rates it with a price book version into
//! rated lines (`billing.rated_lines`, append-only). The first run writes one `original` line per
//! meter and SKU; a rerun compares what it computes with the sum of the lines already written and
//! writes only the difference, as an `adjustment` linked to the original. A rerun with unchanged
//! inputs writes nothing. Amounts stay exact (sub-minor) here; invoices round once per line.
//!
//! A span counts its units × seconds of overlap with the period (an open span up to the period's
//! end, or up to now for a period not over yet); an event counts in the period holding its start.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shared_ids::OrgId;
use shared_kernel::DomainResult;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Period;

/// A period's usage of one meter and SKU, rated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatedUsage {
    pub meter: String,
    pub sku: String,
    pub quantity: Decimal,
    /// Exact minor units.
    pub amount_exact: Decimal,
    pub price_version: i32,
    pub unit_label: String,
    pub currency: String,
}

/// One line a run wrote, or would write: the totals before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineChange {
    pub line_id: Uuid,
    /// `original` or `adjustment`.
    pub kind: String,
    pub meter: String,
    pub sku: String,
    pub quantity_before: Decimal,
    pub quantity_after: Decimal,
    pub amount_before: Decimal,
    pub amount_after: Decimal,
    pub price_version: i32,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub org: OrgId,
    pub period: Period,
    pub price_version: i32,
    /// The id stamped on the lines it wrote; `None` when nothing changed.
    pub run_id: Option<Uuid>,
    pub changes: Vec<LineChange>,
    /// Exact totals over every meter, before and after.
    pub total_before: Decimal,
    pub total_after: Decimal,
}

/// Rates `period` for `org` with `price_version` (`None`: the version in effect at the period's
/// start) and writes the difference from what is already written. Idempotent; concurrent runs of
/// one org and period serialize. `by` is the principal's label (`system:billing-cycle`).
pub async fn run(
    pool: &PgPool,
    org: OrgId,
    period: Period,
    price_version: Option<i32>,
    by: &str,
) -> DomainResult<RunOutcome> {
    unimplemented!("metering::run")
}

/// What a run would compute, without writing (rating only). Usage of a period not over yet is
/// counted up to now: the live view.
pub async fn rate(
    pool: &PgPool,
    org: OrgId,
    period: Period,
    price_version: Option<i32>,
) -> DomainResult<Vec<RatedUsage>> {
    unimplemented!("metering::rate")
}

/// Quantity per day, meter and SKU in `[from, to)` (UTC days; spans split at midnight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyUsage {
    pub day: NaiveDate,
    pub meter: String,
    pub sku: String,
    pub quantity: Decimal,
}

pub async fn daily(
    pool: &PgPool,
    org: OrgId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> DomainResult<Vec<DailyUsage>> {
    unimplemented!("metering::daily")
}

/// What one span has cost so far (exact minor units), priced by the version in effect at each
/// instant it ran; `None` if no span has that id. For `instance get`.
pub async fn cost_of_span(pool: &PgPool, span_id: &str) -> DomainResult<Option<Decimal>> {
    unimplemented!("metering::cost_of_span")
}

/// A rated line as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatedLine {
    pub id: Uuid,
    pub run_id: Uuid,
    pub org: OrgId,
    pub period: Period,
    pub meter: String,
    pub sku: String,
    pub price_version: i32,
    pub quantity: Decimal,
    pub amount_exact: Decimal,
    pub currency: String,
    pub kind: String,
    pub corrects: Option<Uuid>,
    pub reason: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// Every rated line of an org's period, oldest first.
pub async fn lines(pool: &PgPool, org: OrgId, period: Period) -> DomainResult<Vec<RatedLine>> {
    unimplemented!("metering::lines")
}
