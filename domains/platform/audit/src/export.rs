//! A time range of the log as a self-contained, offline-verifiable bundle.

use crate::anchor::{ANCHOR_COLUMNS, AnchorRow, from_row};
use crate::verify::{Problems, Walker, check_signatures};
use crate::{Anchor, AnchorVerifier, AuditEvent, EVENT_COLUMNS, EventRow, VerifyReport, scope_of};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_ids::OrgId;
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use std::collections::BTreeMap;

/// [`Bundle::format`] of this version.
pub const BUNDLE_FORMAT: &str = "gpuaas-audit-bundle-v1";

/// The events of a time range, and what proves them: for each chain with an event in
/// `since <= at < until`, the chain's contiguous segment from the last event before the range
/// (or from chain_seq 1) to the first anchor at or after the range's last event, and that
/// anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The org exported; `None`: every chain.
    pub org: Option<OrgId>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// The events in the range, by chain, then chain_seq.
    pub events: Vec<AuditEvent>,
    /// The segments' other events, outside the range: per chain, the one just before it and
    /// those after it up to the covering anchor. Needed to check the links, not part of the range.
    pub context: Vec<AuditEvent>,
    /// The signed anchors covering the range: per chain, those at the segment's last event (when
    /// the chain moved on after its newest anchor: that anchor, and the events after it are not
    /// covered).
    pub heads: Vec<Anchor>,
}

/// The events of `org` (`None`: of every org and the platform) with `since <= at < until`, with
/// the context and anchors [`verify_bundle`] needs. Call [`anchor`](crate::anchor) first: events
/// after the newest anchor are exported, but `verify_bundle` reports them as not covered.
pub async fn export(
    pool: &PgPool,
    org: Option<OrgId>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> DomainResult<Bundle> {
    if since >= until {
        return Err(DomainError::invalid(
            "audit_range_invalid",
            "an export needs since < until",
        ));
    }
    let (lo, hi) = match org {
        Some(o) => {
            let scope = scope_of(Some(o));
            (format!("{scope}/"), Some(format!("{scope}0")))
        }
        None => (String::new(), None),
    };
    let upper = if hi.is_some() { " AND chain < $4" } else { "" };
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let ranges: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT chain, min(chain_seq), max(chain_seq) FROM audit.events
         WHERE at >= $1 AND at < $2 AND chain >= $3{upper}
         GROUP BY chain ORDER BY chain"
    ))
    .bind(since)
    .bind(until)
    .bind(&lo)
    .bind(&hi)
    .fetch_all(&mut *tx)
    .await?;
    let mut bundle = Bundle {
        format: BUNDLE_FORMAT.to_string(),
        org,
        since,
        until,
        events: Vec::new(),
        context: Vec::new(),
        heads: Vec::new(),
    };
    for (chain, first, last) in ranges {
        let heads: Vec<AnchorRow> = sqlx::query_as(&format!(
            "SELECT {ANCHOR_COLUMNS} FROM audit.anchors
             WHERE chain = $1 AND chain_seq = COALESCE(
                 (SELECT min(chain_seq) FROM audit.anchors WHERE chain = $1 AND chain_seq >= $2),
                 (SELECT max(chain_seq) FROM audit.anchors
                  WHERE chain = $1 AND chain_seq >= $3 AND chain_seq < $2))
             ORDER BY key_id"
        ))
        .bind(&chain)
        .bind(last)
        .bind((first - 1).max(1))
        .fetch_all(&mut *tx)
        .await?;
        // The covering anchor, else (events after the newest anchor) the newest one inside.
        let end = heads.first().map_or(last, |h| h.1.max(last));
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM audit.events
             WHERE chain = $1 AND chain_seq >= $2 AND chain_seq <= $3 ORDER BY chain_seq"
        ))
        .bind(&chain)
        .bind((first - 1).max(1))
        .bind(end)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            let e = row.into_event()?;
            if e.at >= since && e.at < until {
                bundle.events.push(e);
            } else {
                bundle.context.push(e);
            }
        }
        bundle.heads.extend(heads.into_iter().map(from_row));
    }
    tx.commit().await?;
    Ok(bundle)
}

/// Checks a bundle offline: the anchors' signatures; per chain, every event's hash, every link
/// and no gap from the segment's first event to its last; that the segment starts at chain_seq
/// 1 or before `since` (so no event at the start of the range was left out) and ends at a valid
/// anchor (so none at its end was); that exactly the events in the range are in `events`; and,
/// for an org's bundle, that every chain is that org's.
///
/// What a bundle cannot show: a chain left out entirely, with its anchors (compare with anchors
/// published elsewhere).
pub fn verify_bundle(bundle: &Bundle, verifier: &dyn AnchorVerifier) -> VerifyReport {
    let mut problems = Problems::default();
    let mut report = VerifyReport::default();
    if bundle.format != BUNDLE_FORMAT {
        problems.add(format!(
            "bundle format {:?} is not {BUNDLE_FORMAT:?}",
            bundle.format
        ));
    }
    let mut anchors = check_signatures(
        &bundle.heads,
        verifier,
        &mut problems,
        &mut report.anchors_checked,
    );
    let mut chains: BTreeMap<&str, Vec<(&AuditEvent, bool)>> = BTreeMap::new();
    for (list, in_range) in [(&bundle.events, true), (&bundle.context, false)] {
        for e in list {
            chains.entry(&e.chain).or_default().push((e, in_range));
        }
    }
    let prefix = bundle.org.map(|o| format!("{}/", scope_of(Some(o))));
    for (chain, mut events) in chains {
        events.sort_by_key(|(e, _)| e.chain_seq);
        if let Some(p) = &prefix
            && !chain.starts_with(p.as_str())
        {
            problems.add(format!(
                "chain {chain}: not a chain of org {}",
                bundle.org.map(|o| o.to_string()).unwrap_or_default()
            ));
        }
        let (first, _) = events[0];
        if first.chain_seq != 1 && first.at >= bundle.since {
            problems.add(format!(
                "chain {chain} chain_seq {}: the segment starts inside the range, without the \
                 event before it: events at the start of the range may have been left out",
                first.chain_seq
            ));
        }
        let mut w = Walker::new(
            chain,
            false,
            anchors.remove(chain).unwrap_or_default(),
            &mut problems,
        );
        for (e, in_events) in events {
            let in_range = e.at >= bundle.since && e.at < bundle.until;
            if in_range != in_events {
                problems.add(format!(
                    "chain {chain} chain_seq {} (seq {}): at {} is {} the range but the event is \
                     listed in `{}`",
                    e.chain_seq,
                    e.seq,
                    e.at,
                    if in_range { "inside" } else { "outside" },
                    if in_events { "events" } else { "context" }
                ));
            }
            w.push(e, &mut problems);
        }
        report.chains_checked += 1;
        report.events_checked += w.events;
        let last = w.last.as_ref().map_or(0, |l| l.0);
        let unanchored = w.finish(&mut problems);
        if unanchored > 0 {
            problems.add(format!(
                "chain {chain} chain_seq {last}: the last {unanchored} events of the segment are \
                 not covered by a valid signed anchor (anchor before exporting)"
            ));
        }
        report.unanchored_events += unanchored;
    }
    for chain in anchors.keys() {
        problems.add(format!(
            "chain {chain}: the bundle holds an anchor of this chain but none of its events"
        ));
    }
    report.problems = problems.into_list();
    report.ok = report.problems.is_empty();
    report
}
