//! Reading events back.

use crate::{AuditEvent, EVENT_COLUMNS, EventRow};
use chrono::{DateTime, Utc};
use shared_ids::OrgId;
use shared_kernel::{DomainError, DomainResult};
use sqlx::{PgPool, Postgres, QueryBuilder};

/// The page size when `limit` is 0 or negative.
pub const DEFAULT_LIST_LIMIT: i64 = 100;
/// The largest page; a larger `limit` is lowered to it.
pub const MAX_LIST_LIMIT: i64 = 1000;

/// Which events [`list`] returns. Every field narrows; the default lists every event.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this org's events.
    pub org: Option<OrgId>,
    /// Only events with no org (the platform's). Cannot be combined with `org`.
    pub platform_only: bool,
    /// Exactly this action (`instance.create`).
    pub action: Option<String>,
    /// Exactly this actor label (`user:<uuid>`, `system:reconciler`).
    pub actor: Option<String>,
    /// `at >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `at < until`.
    pub until: Option<DateTime<Utc>>,
    /// Cursor: only events with `seq > after_seq` (the last `seq` of the previous page).
    pub after_seq: Option<i64>,
    /// Page size: [`DEFAULT_LIST_LIMIT`] when ≤ 0, at most [`MAX_LIST_LIMIT`].
    pub limit: i64,
}

/// Events matching `filter`, **ascending by `seq`** (oldest first), at most `limit` of them; the
/// next page is `after_seq = last.seq`.
///
/// `seq` is taken when an event is appended, but an event appended inside a longer transaction
/// ([`append_in`](crate::append_in)) becomes visible when that transaction commits, possibly
/// after events with a higher `seq`. A page read at the very end of the log can therefore miss
/// an event that appears behind the cursor a moment later. Browsing is unaffected; a consumer
/// that must see every event should stop its cursor a few seconds short of the newest event (the
/// longest audited transaction), or rely on [`export`](crate::export) and the chains, which
/// have no gaps.
pub async fn list(pool: &PgPool, filter: &Filter) -> DomainResult<Vec<AuditEvent>> {
    if filter.org.is_some() && filter.platform_only {
        return Err(DomainError::invalid(
            "audit_filter_invalid",
            "filter by an org or by platform events, not both",
        ));
    }
    let limit = match filter.limit {
        l if l <= 0 => DEFAULT_LIST_LIMIT,
        l => l.min(MAX_LIST_LIMIT),
    };
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
        "SELECT {EVENT_COLUMNS} FROM audit.events WHERE true"
    ));
    if let Some(org) = filter.org {
        q.push(" AND org_id = ").push_bind(org.uuid());
    }
    if filter.platform_only {
        q.push(" AND org_id IS NULL");
    }
    if let Some(action) = &filter.action {
        q.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(actor) = &filter.actor {
        q.push(" AND actor = ").push_bind(actor.clone());
    }
    if let Some(since) = filter.since {
        q.push(" AND at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        q.push(" AND at < ").push_bind(until);
    }
    if let Some(after) = filter.after_seq {
        q.push(" AND seq > ").push_bind(after);
    }
    q.push(" ORDER BY seq LIMIT ").push_bind(limit);
    let rows: Vec<EventRow> = q.build_query_as().fetch_all(pool).await?;
    rows.into_iter().map(EventRow::into_event).collect()
}
