//! The usage outbox. Products call in with their own open transaction (ADR 0007), so a fact and its
//! usage commit together or not at all; the producer's id makes every call idempotent.
//!
//! - A **span** is usage over time: [`open_span`] when the product confirms a resource running,
//!   [`close_span`] once when it confirms it stopped. A GPU instance's span counts `units` GPUs
//!   per second; an instance that never ran has no span, so no charge.
//! - An **event** is discrete usage (tokens): [`record`] one in a product's transaction, or
//!   [`record_batch`] many from the ingest endpoint. Both refuse (`unpriced_meter`) an event the
//!   price book in effect at its start does not price. Spans are not checked: products open them
//!   for meters they know.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shared_ids::{OrgId, ProjectId};
use shared_kernel::{DomainError, DomainResult};
use sqlx::{PgConnection, PgPool};
use std::collections::HashSet;

/// The meter of GPU instances: GPU-seconds, priced per SKU.
pub const GPU_SECONDS: &str = "gpu_seconds";

/// Usage over time, opened once per resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanStart {
    /// The source resource, `instance/<uuid>`: one span per resource.
    pub id: String,
    pub org: OrgId,
    pub project: Option<ProjectId>,
    pub meter: String,
    pub sku: String,
    /// How many units run at once (GPUs): the quantity is units × seconds.
    pub units: i32,
    pub started_at: DateTime<Utc>,
}

/// Opens a span. Idempotent: a second open of the same id changes nothing (returns false).
pub async fn open_span(conn: &mut PgConnection, span: &SpanStart) -> DomainResult<bool> {
    check_meter(&span.meter)?;
    if span.units <= 0 {
        return Err(DomainError::invalid(
            "invalid_quantity",
            format!("a span runs at least one unit, not {}", span.units),
        ));
    }
    let inserted = sqlx::query(
        "INSERT INTO billing.usage_spans (id, org_id, project_id, meter, sku, units, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&span.id)
    .bind(span.org.uuid())
    .bind(span.project.map(ProjectId::uuid))
    .bind(&span.meter)
    .bind(&span.sku)
    .bind(span.units)
    .bind(span.started_at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Closes a span at `ended_at` (never before it started). Idempotent: a span closes once; a
/// later close, or one of a span never opened, changes nothing (returns false).
pub async fn close_span(
    conn: &mut PgConnection,
    id: &str,
    ended_at: DateTime<Utc>,
) -> DomainResult<bool> {
    let closed = sqlx::query(
        "UPDATE billing.usage_spans SET ended_at = greatest(started_at, $2), closed_at = now()
         WHERE id = $1 AND ended_at IS NULL",
    )
    .bind(id)
    .bind(ended_at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(closed == 1)
}

/// A span as recorded (for tests, reconciliation and the instance's cost so far).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Span {
    pub id: String,
    pub meter: String,
    pub sku: String,
    pub units: i32,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

pub async fn span(pool: &PgPool, id: &str) -> DomainResult<Option<Span>> {
    Ok(sqlx::query_as(
        "SELECT id, meter, sku, units, started_at, ended_at FROM billing.usage_spans WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// Discrete usage. `id` is the producer's idempotency key, unique within the org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub id: String,
    pub org: OrgId,
    pub project: Option<ProjectId>,
    pub meter: String,
    pub sku: String,
    pub quantity: Decimal,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// Who produced it (`tokenfactory`, a service account's label).
    pub source: String,
}

/// The most one event may count: a bound on absurd input, far above any real request.
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;

impl UsageEvent {
    pub fn validate(&self) -> DomainResult<()> {
        check_meter(&self.meter)?;
        if self.id.is_empty() || self.id.len() > 200 {
            return Err(DomainError::invalid(
                "invalid_event_id",
                "an event id is 1 to 200 characters",
            ));
        }
        if self.quantity.is_sign_negative() || self.quantity > Decimal::from(MAX_QUANTITY) {
            return Err(DomainError::invalid(
                "invalid_quantity",
                format!(
                    "event {}: a quantity is between 0 and {MAX_QUANTITY}",
                    short(&self.id)
                ),
            ));
        }
        if self.quantity.scale() > 9 {
            return Err(DomainError::invalid(
                "invalid_quantity",
                format!("event {}: at most 9 decimal places", short(&self.id)),
            ));
        }
        if self.ended_at < self.started_at {
            return Err(DomainError::invalid(
                "invalid_interval",
                format!("event {}: ends before it starts", short(&self.id)),
            ));
        }
        Ok(())
    }
}

fn short(id: &str) -> String {
    id.chars().take(64).collect()
}

fn check_meter(meter: &str) -> DomainResult<()> {
    let ok = meter.len() <= 63
        && meter.starts_with(|c: char| c.is_ascii_lowercase())
        && meter
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "invalid_meter",
            format!("meter '{}' is not [a-z][a-z0-9_]*", short(meter)),
        ))
    }
}

/// Records one event in the caller's transaction. Idempotent by id (returns false for a
/// duplicate).
///
/// Refuses (`unpriced_meter`, invalid, writing nothing) an event whose meter and SKU have no
/// price in the price book version in effect at its `started_at` (or with no version in effect
/// then): it could never be rated, and would block its period's metering run.
pub async fn record(conn: &mut PgConnection, event: &UsageEvent) -> DomainResult<bool> {
    event.validate()?;
    let events = std::slice::from_ref(event);
    check_priced(conn, events).await?;
    Ok(insert_events(conn, events).await? == 1)
}

/// `unpriced_meter` unless every event's (meter, SKU) has a price in the price book version in
/// effect at its `started_at` (the newest whose `effective_from <= started_at`; of several from
/// the same instant, the highest). Loads the versions and the prices of those the events need
/// once per call (a batch's events usually share one version; several are handled).
async fn check_priced(conn: &mut PgConnection, events: &[UsageEvent]) -> DomainResult<()> {
    // Ascending by (effective_from, version): the last one at or before an instant is in effect.
    let versions: Vec<(i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT version, effective_from FROM billing.price_book_versions
         ORDER BY effective_from, version",
    )
    .fetch_all(&mut *conn)
    .await?;
    let in_effect = |at: DateTime<Utc>| -> Option<i32> {
        let n = versions.partition_point(|(_, from)| *from <= at);
        n.checked_sub(1).map(|i| versions[i].0)
    };
    let per_event: Vec<Option<i32>> = events.iter().map(|e| in_effect(e.started_at)).collect();
    let mut needed: Vec<i32> = per_event.iter().flatten().copied().collect();
    needed.sort_unstable();
    needed.dedup();
    let priced: HashSet<(i32, String, String)> = if needed.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_as::<_, (i32, String, String)>(
            "SELECT version, meter, sku FROM billing.prices WHERE version = ANY($1)",
        )
        .bind(&needed)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    let mut unpriced: Vec<String> = Vec::new();
    let mut first: Option<&UsageEvent> = None;
    for (e, version) in events.iter().zip(&per_event) {
        let known = version.is_some_and(|v| priced.contains(&(v, e.meter.clone(), e.sku.clone())));
        if known {
            continue;
        }
        first.get_or_insert(e);
        let what = match version {
            Some(v) => format!("{}/{} (price book version {v})", e.meter, short(&e.sku)),
            None => format!(
                "{}/{} (no price book version in effect at {})",
                e.meter,
                short(&e.sku),
                e.started_at
            ),
        };
        if !unpriced.contains(&what) {
            unpriced.push(what);
        }
    }
    let Some(first) = first else {
        return Ok(());
    };
    let shown = unpriced.len().min(10);
    let more = if unpriced.len() > shown {
        format!(" and {} more", unpriced.len() - shown)
    } else {
        String::new()
    };
    Err(DomainError::invalid(
        "unpriced_meter",
        format!(
            "event {}: no price for meter/sku {}{more}: the price book in effect at the event's \
             start does not price it, so it cannot be billed; nothing was recorded",
            short(&first.id),
            unpriced[..shown].join(", ")
        ),
    ))
}

/// What a batch did: events new now, and duplicates of events already recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    pub accepted: u64,
    pub duplicates: u64,
}

/// The most events one batch may hold.
pub const MAX_BATCH: usize = 5000;

/// Records a batch for one org, all or nothing: one invalid event refuses the whole batch (its
/// error names the event), so a producer never has to work out which half landed. An event whose
/// meter and SKU the price book in effect at its start does not price refuses the batch
/// (`unpriced_meter`, naming them), as in [`record`].
pub async fn record_batch(
    pool: &PgPool,
    org: OrgId,
    events: &[UsageEvent],
) -> DomainResult<BatchOutcome> {
    if events.is_empty() || events.len() > MAX_BATCH {
        return Err(DomainError::invalid(
            "invalid_batch",
            format!("a batch holds 1 to {MAX_BATCH} events"),
        ));
    }
    for e in events {
        e.validate()?;
        if e.org != org {
            return Err(DomainError::invalid(
                "invalid_org",
                format!("event {}: the org comes from the credential", short(&e.id)),
            ));
        }
    }
    let mut conn = pool.acquire().await?;
    check_priced(&mut conn, events).await?;
    let accepted = insert_events(&mut conn, events).await?;
    Ok(BatchOutcome {
        accepted,
        duplicates: events.len() as u64 - accepted,
    })
}

/// One multi-row insert (UNNEST), duplicates skipped: the ingest path's whole cost.
async fn insert_events(conn: &mut PgConnection, events: &[UsageEvent]) -> DomainResult<u64> {
    let mut ids = Vec::with_capacity(events.len());
    let (mut orgs, mut projects, mut meters, mut skus) = (vec![], vec![], vec![], vec![]);
    let (mut quantities, mut starts, mut ends, mut sources) = (vec![], vec![], vec![], vec![]);
    for e in events {
        ids.push(e.id.as_str());
        orgs.push(e.org.uuid());
        projects.push(e.project.map(ProjectId::uuid));
        meters.push(e.meter.as_str());
        skus.push(e.sku.as_str());
        quantities.push(e.quantity);
        starts.push(e.started_at);
        ends.push(e.ended_at);
        sources.push(e.source.as_str());
    }
    let done = sqlx::query(
        "INSERT INTO billing.usage_events
             (id, org_id, project_id, meter, sku, quantity, started_at, ended_at, source)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                              $6::numeric[], $7::timestamptz[], $8::timestamptz[], $9::text[])
         ON CONFLICT (org_id, id) DO NOTHING",
    )
    .bind(ids)
    .bind(orgs)
    .bind(projects)
    .bind(meters)
    .bind(skus)
    .bind(quantities)
    .bind(starts)
    .bind(ends)
    .bind(sources)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
