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
use shared_kernel::{DomainError, DomainResult};
use sqlx::{PgExecutor, PgPool};
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::Period;
use crate::price_book::{self, PriceBook};

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

/// An org's quantity per meter and SKU in `[$2, $3)`, in one statement: a span counts
/// `units × seconds of overlap` (an open one up to the statement's start, never past the period's
/// end), an event its quantity when it starts in the period. Cast to the scale `rated_lines`
/// stores, so what is computed and what is read back compare equal.
const USAGE_SQL: &str = "
    SELECT meter, sku, sum(q)::numeric(38, 9) AS quantity FROM (
        SELECT meter, sku,
               units * greatest(0,
                   extract(epoch FROM least(coalesce(ended_at, statement_timestamp()), $3))
                   - extract(epoch FROM greatest(started_at, $2))) AS q
          FROM billing.usage_spans
         WHERE org_id = $1 AND started_at < $3 AND (ended_at IS NULL OR ended_at > $2)
        UNION ALL
        SELECT meter, sku, quantity AS q
          FROM billing.usage_events
         WHERE org_id = $1 AND started_at >= $2 AND started_at < $3
    ) u
    GROUP BY meter, sku
    ORDER BY meter, sku";

async fn usage<'e, E: PgExecutor<'e>>(
    executor: E,
    org: OrgId,
    period: Period,
) -> DomainResult<Vec<(String, String, Decimal)>> {
    Ok(sqlx::query_as(USAGE_SQL)
        .bind(org.uuid())
        .bind(period.start)
        .bind(period.end)
        .fetch_all(executor)
        .await?)
}

/// The version a run rates with: the one asked for, or the one in effect at the period's start.
async fn book_for(
    pool: &PgPool,
    period: Period,
    price_version: Option<i32>,
) -> DomainResult<PriceBook> {
    match price_version {
        Some(v) => price_book::get(pool, v).await,
        None => price_book::in_effect(pool, period.start).await,
    }
}

/// Rates usage with `book`. A meter and SKU with usage (quantity > 0) and no price in the version
/// refuses the whole rating (`unpriced_usage`, naming each): finance fixes the book, nothing is
/// rated 0 by accident. Groups of zero quantity are left out.
fn rate_usage(
    book: &PriceBook,
    usage: Vec<(String, String, Decimal)>,
) -> DomainResult<Vec<RatedUsage>> {
    let mut rated = Vec::with_capacity(usage.len());
    let mut unpriced = Vec::new();
    for (meter, sku, quantity) in usage {
        if quantity.is_zero() {
            continue;
        }
        let Some(price) = book.price(&meter, &sku) else {
            unpriced.push(format!("{meter}/{sku} ({quantity})"));
            continue;
        };
        let amount_exact = price.checked_rate(quantity).ok_or_else(|| {
            DomainError::invalid(
                "amount_out_of_range",
                format!("{meter}/{sku}: {quantity} units rate beyond the exact decimal range"),
            )
        })?;
        rated.push(RatedUsage {
            meter,
            sku,
            quantity: quantity.normalize(),
            amount_exact,
            price_version: book.version,
            unit_label: price.unit_label.clone(),
            currency: price.currency.clone(),
        });
    }
    if !unpriced.is_empty() {
        return Err(DomainError::conflict(
            "unpriced_usage",
            format!(
                "price book version {} has no price for usage of {}: publish a version that \
                 prices it, then run again",
                book.version,
                unpriced.join(", ")
            ),
        ));
    }
    Ok(rated)
}

/// What is already written for one meter and SKU of an org's period: sums over every line.
#[derive(sqlx::FromRow)]
struct Written {
    meter: String,
    sku: String,
    quantity: Decimal,
    amount: Decimal,
    original: Option<Uuid>,
    currency: String,
    last_version: i32,
}

/// Rates `period` for `org` with `price_version` (`None`: the version in effect at the period's
/// start) and writes the difference from what is already written. Idempotent; concurrent runs of
/// one org and period serialize. `by` is the principal's label (`system:billing-cycle`).
///
/// In one transaction, under an advisory lock on (org, period): the target per meter and SKU is
/// compared with the sum of the lines already written; a group that differs gets an `original`
/// (none yet) or an `adjustment` of the difference linked to the original (`late usage`, `usage
/// removed`, `price version N`); a group whose usage vanished is adjusted back to zero. Unchanged
/// inputs write nothing. Refuses `unpriced_usage` (writing nothing), and `currency_changed` when
/// a version prices a group already rated in another currency.
pub async fn run(
    pool: &PgPool,
    org: OrgId,
    period: Period,
    price_version: Option<i32>,
    by: &str,
) -> DomainResult<RunOutcome> {
    let book = book_for(pool, period, price_version).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!(
            "billing.metering:{}:{}:{}",
            org.uuid(),
            period.start.to_rfc3339(),
            period.end.to_rfc3339()
        ))
        .execute(&mut *tx)
        .await?;
    // Read after the lock: a run that held it has committed, and this statement sees its lines.
    let target = rate_usage(&book, usage(&mut *tx, org, period).await?)?;
    let written: Vec<Written> = sqlx::query_as(
        "SELECT meter, sku, sum(quantity) AS quantity, sum(amount_exact) AS amount,
                (array_agg(id) FILTER (WHERE kind = 'original'))[1] AS original,
                (array_agg(currency ORDER BY created_at, id))[1] AS currency,
                (array_agg(price_version ORDER BY created_at DESC, id DESC))[1] AS last_version
           FROM billing.rated_lines
          WHERE org_id = $1 AND period_start = $2 AND period_end = $3
          GROUP BY meter, sku",
    )
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .fetch_all(&mut *tx)
    .await?;

    let mut groups: BTreeMap<(String, String), (Option<RatedUsage>, Option<Written>)> =
        BTreeMap::new();
    for t in target {
        let key = (t.meter.clone(), t.sku.clone());
        groups.entry(key).or_default().0 = Some(t);
    }
    for w in written {
        let key = (w.meter.clone(), w.sku.clone());
        groups.entry(key).or_default().1 = Some(w);
    }

    let run_id = Uuid::now_v7();
    let (mut total_before, mut total_after) = (Decimal::ZERO, Decimal::ZERO);
    let mut changes = Vec::new();
    // Columns of the lines to insert, in one statement.
    let mut rows = NewLines::default();
    for ((meter, sku), (target, written)) in groups {
        let (q_after, a_after) = target.as_ref().map_or((Decimal::ZERO, Decimal::ZERO), |t| {
            (t.quantity, t.amount_exact)
        });
        let (q_before, a_before) = written
            .as_ref()
            .map_or((Decimal::ZERO, Decimal::ZERO), |w| (w.quantity, w.amount));
        total_before += a_before;
        total_after += a_after;
        if q_before == q_after && a_before == a_after {
            continue;
        }
        let currency = match (&target, &written) {
            (Some(t), Some(w)) if t.currency != w.currency => {
                return Err(DomainError::conflict(
                    "currency_changed",
                    format!(
                        "{meter}/{sku} is rated in {} for {period}; price book version {} prices \
                         it in {}",
                        w.currency, book.version, t.currency
                    ),
                ));
            }
            (Some(t), _) => t.currency.clone(),
            (None, Some(w)) => w.currency.clone(),
            (None, None) => unreachable!("a group comes from a target or a written line"),
        };
        let id = Uuid::now_v7();
        let (kind, corrects, reason) =
            match written.as_ref().and_then(|w| w.original.map(|o| (w, o))) {
                None => ("original", None, "first rating".to_string()),
                Some((w, original)) => {
                    let mut why = Vec::new();
                    if target.is_none() || q_after < q_before {
                        why.push("usage removed".to_string());
                    } else if q_after > q_before {
                        why.push("late usage".to_string());
                    }
                    if w.last_version != book.version {
                        why.push(format!("price version {}", book.version));
                    }
                    if why.is_empty() {
                        why.push("recomputed".to_string());
                    }
                    ("adjustment", Some(original), why.join("; "))
                }
            };
        rows.id.push(id);
        rows.meter.push(meter.clone());
        rows.sku.push(sku.clone());
        rows.quantity.push(q_after - q_before);
        rows.amount.push(a_after - a_before);
        rows.currency.push(currency);
        rows.kind.push(kind);
        rows.corrects.push(corrects);
        rows.reason.push(reason);
        changes.push(LineChange {
            line_id: id,
            kind: kind.to_string(),
            meter,
            sku,
            quantity_before: q_before,
            quantity_after: q_after,
            amount_before: a_before,
            amount_after: a_after,
            price_version: book.version,
        });
    }

    if !changes.is_empty() {
        sqlx::query(
            "INSERT INTO billing.rated_lines
                 (id, run_id, org_id, period_start, period_end, meter, sku, price_version,
                  quantity, amount_exact, currency, kind, corrects, reason, created_by)
             SELECT l.id, $1, $2, $3, $4, l.meter, l.sku, $5, l.quantity, l.amount, l.currency,
                    l.kind, l.corrects, l.reason, $6
               FROM UNNEST($7::uuid[], $8::text[], $9::text[], $10::numeric[], $11::numeric[],
                           $12::text[], $13::text[], $14::uuid[], $15::text[])
                    AS l(id, meter, sku, quantity, amount, currency, kind, corrects, reason)",
        )
        .bind(run_id)
        .bind(org.uuid())
        .bind(period.start)
        .bind(period.end)
        .bind(book.version)
        .bind(by)
        .bind(&rows.id)
        .bind(&rows.meter)
        .bind(&rows.sku)
        .bind(&rows.quantity)
        .bind(&rows.amount)
        .bind(&rows.currency)
        .bind(&rows.kind)
        .bind(&rows.corrects)
        .bind(&rows.reason)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if !changes.is_empty() {
        tracing::info!(
            org = %org, period = %period, price_version = book.version, %run_id,
            lines = changes.len(), "metering run wrote rated lines"
        );
    }
    Ok(RunOutcome {
        org,
        period,
        price_version: book.version,
        run_id: (!changes.is_empty()).then_some(run_id),
        changes,
        total_before,
        total_after,
    })
}

#[derive(Default)]
struct NewLines {
    id: Vec<Uuid>,
    meter: Vec<String>,
    sku: Vec<String>,
    quantity: Vec<Decimal>,
    amount: Vec<Decimal>,
    currency: Vec<String>,
    kind: Vec<&'static str>,
    corrects: Vec<Option<Uuid>>,
    reason: Vec<String>,
}

/// What a run would compute, without writing (rating only). Usage of a period not over yet is
/// counted up to now: the live view.
pub async fn rate(
    pool: &PgPool,
    org: OrgId,
    period: Period,
    price_version: Option<i32>,
) -> DomainResult<Vec<RatedUsage>> {
    let book = book_for(pool, period, price_version).await?;
    rate_usage(&book, usage(pool, org, period).await?)
}

/// Quantity per day, meter and SKU in `[from, to)` (UTC days; spans split at midnight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyUsage {
    pub day: NaiveDate,
    pub meter: String,
    pub sku: String,
    pub quantity: Decimal,
}

/// The longest range [`daily`] answers.
pub const MAX_DAILY_DAYS: i64 = 400;

/// Quantity per UTC day, meter and SKU in `[from, to)`, days (then meter, SKU) ascending; a span
/// is split at each midnight (an open one counts up to now), an event counts on the day it
/// starts. Days without usage are left out. `invalid_interval` unless `from < to` and the range is
/// at most [`MAX_DAILY_DAYS`].
pub async fn daily(
    pool: &PgPool,
    org: OrgId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> DomainResult<Vec<DailyUsage>> {
    if to <= from || to - from > chrono::Duration::days(MAX_DAILY_DAYS) {
        return Err(DomainError::invalid(
            "invalid_interval",
            format!("daily usage needs from < to, at most {MAX_DAILY_DAYS} days apart"),
        ));
    }
    // Days as UTC timestamps (without time zone), so a session time zone never shifts midnight.
    let rows: Vec<(NaiveDate, String, String, Decimal)> = sqlx::query_as(
        "WITH days AS (
             SELECT d::date AS day,
                    greatest((d AT TIME ZONE 'UTC'), $2) AS lo,
                    least(((d + interval '1 day') AT TIME ZONE 'UTC'), $3) AS hi
               FROM generate_series(date_trunc('day', $2 AT TIME ZONE 'UTC'),
                                    $3 AT TIME ZONE 'UTC', interval '1 day') AS d
         ),
         per_day AS (
             SELECT days.day, s.meter, s.sku,
                    s.units * greatest(0,
                        extract(epoch FROM least(coalesce(s.ended_at, statement_timestamp()), days.hi))
                        - extract(epoch FROM greatest(s.started_at, days.lo))) AS q
               FROM billing.usage_spans s
               JOIN days ON s.started_at < days.hi
                        AND (s.ended_at IS NULL OR s.ended_at > days.lo)
              WHERE s.org_id = $1 AND s.started_at < $3 AND (s.ended_at IS NULL OR s.ended_at > $2)
             UNION ALL
             SELECT (e.started_at AT TIME ZONE 'UTC')::date, e.meter, e.sku, e.quantity
               FROM billing.usage_events e
              WHERE e.org_id = $1 AND e.started_at >= $2 AND e.started_at < $3
         )
         SELECT day, meter, sku, sum(q)::numeric(38, 9) FROM per_day
          GROUP BY day, meter, sku
         HAVING sum(q) > 0
          ORDER BY day, meter, sku",
    )
    .bind(org.uuid())
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(day, meter, sku, quantity)| DailyUsage {
            day,
            meter,
            sku,
            quantity: quantity.normalize(),
        })
        .collect())
}

/// What one span has cost so far (exact minor units); `None` if no span has that id. For
/// `instance get`.
///
/// Simplification: the whole span (its seconds so far × units; an open one up to now) is priced
/// by the version in effect at the span's *start*, not split at each version's
/// `effective_from`; the rated lines (and so the invoice) are what bills, this is the estimate
/// shown beside the instance. `unpriced_usage` if that version has no price for its meter and
/// SKU, `price_book_version_not_found` if none was in effect at its start.
pub async fn cost_of_span(pool: &PgPool, span_id: &str) -> DomainResult<Option<Decimal>> {
    let row: Option<(String, String, DateTime<Utc>, Decimal)> = sqlx::query_as(
        "SELECT meter, sku, started_at,
                (units * greatest(0, extract(epoch FROM coalesce(ended_at, statement_timestamp()))
                                     - extract(epoch FROM started_at)))::numeric(38, 9)
           FROM billing.usage_spans WHERE id = $1",
    )
    .bind(span_id)
    .fetch_optional(pool)
    .await?;
    let Some((meter, sku, started_at, quantity)) = row else {
        return Ok(None);
    };
    let book = price_book::in_effect(pool, started_at).await?;
    let price = book.price(&meter, &sku).ok_or_else(|| {
        DomainError::conflict(
            "unpriced_usage",
            format!(
                "price book version {} has no price for {meter}/{sku}",
                book.version
            ),
        )
    })?;
    price.checked_rate(quantity).map(Some).ok_or_else(|| {
        DomainError::invalid(
            "amount_out_of_range",
            format!("span {span_id}: its cost is beyond the exact decimal range"),
        )
    })
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

#[derive(sqlx::FromRow)]
struct LineRow {
    id: Uuid,
    run_id: Uuid,
    org_id: Uuid,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    meter: String,
    sku: String,
    price_version: i32,
    quantity: Decimal,
    amount_exact: Decimal,
    currency: String,
    kind: String,
    corrects: Option<Uuid>,
    reason: String,
    created_by: String,
    created_at: DateTime<Utc>,
}

/// Every rated line of an org's period, oldest first.
pub async fn lines(pool: &PgPool, org: OrgId, period: Period) -> DomainResult<Vec<RatedLine>> {
    let rows: Vec<LineRow> = sqlx::query_as(
        "SELECT id, run_id, org_id, period_start, period_end, meter, sku, price_version, quantity,
                amount_exact, currency, kind, corrects, reason, created_by, created_at
           FROM billing.rated_lines
          WHERE org_id = $1 AND period_start = $2 AND period_end = $3
          ORDER BY created_at, id",
    )
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| RatedLine {
            id: r.id,
            run_id: r.run_id,
            org: r.org_id.into(),
            period: Period {
                start: r.period_start,
                end: r.period_end,
            },
            meter: r.meter,
            sku: r.sku,
            price_version: r.price_version,
            quantity: r.quantity.normalize(),
            amount_exact: r.amount_exact.normalize(),
            currency: r.currency,
            kind: r.kind,
            corrects: r.corrects,
            reason: r.reason,
            created_by: r.created_by,
            created_at: r.created_at,
        })
        .collect())
}
