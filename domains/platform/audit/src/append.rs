//! Recording an event: lock one lane of the scope's chains, link the event to its head, insert it
//! and move the head: two statements, in a short transaction of its own or at the end of the
//! caller's.

use crate::{AuditEvent, GENESIS_HASH, NewEntry, entry_hash, kind_str, scope_of};
use chrono::{DateTime, Utc};
use shared_kernel::{DomainError, DomainResult};
use sqlx::{Connection, PgConnection, PgPool};

/// Chains per scope. An append takes the lowest lane no other transaction holds, so up to this
/// many transactions append to one org at once without waiting; more wait for a random lane.
pub const LANES: i32 = 16;
/// Longest accepted action (`instance.create`); longer ones are refused.
pub const MAX_ACTION_CHARS: usize = 64;
/// Longest stored resource; longer ones are cut, ending in `…`.
pub const MAX_RESOURCE_CHARS: usize = 512;
/// Longest stored actor name, credential id, request id and error code; longer ones are cut,
/// ending in `…` (they come from callers' headers and names, and must not fail the operation).
pub const MAX_TEXT_CHARS: usize = 256;

/// Records one event in its own transaction and returns it as stored.
///
/// Errors: `audit_action_invalid` for an empty, too long or non-`[a-z0-9._-]` action; database
/// errors (retryable).
pub async fn append(pool: &PgPool, entry: &NewEntry<'_>) -> DomainResult<AuditEvent> {
    let mut tx = pool.begin().await?;
    let event = append_locked(&mut tx, entry).await?;
    tx.commit().await?;
    Ok(event)
}

/// Records one event in the caller's open transaction, so the audited change and its record
/// commit together or not at all (doc/architecture/0007, point 2). `conn` is `&mut *tx`; a
/// connection outside a transaction gets one of its own.
///
/// The lane stays locked until the caller commits, so call this last, just before the commit:
/// other appends to the same org then use another lane meanwhile. Run the caller's transaction at
/// READ COMMITTED (the default): under REPEATABLE READ a lane that moved since the snapshot
/// answers a serialization failure.
///
/// The first append of a scope creates its lanes, inside this transaction: until it commits,
/// other first appends to the same org wait for it. Call [`ensure_chains`] when an org is created
/// to avoid even that.
pub async fn append_in(conn: &mut PgConnection, entry: &NewEntry<'_>) -> DomainResult<AuditEvent> {
    if conn.is_in_transaction() {
        return append_locked(conn, entry).await;
    }
    let mut tx = conn.begin().await?;
    let event = append_locked(&mut tx, entry).await?;
    tx.commit().await?;
    Ok(event)
}

/// Records several events in the caller's transaction, in order: per org, one lane is locked
/// once, the events are linked in memory and inserted in one statement. What a group-committing
/// writer uses, so a batch costs a few statements instead of a few per event. Scopes are locked
/// in name order (no deadlock between batches). A bad entry fails the whole call (and so the
/// caller's transaction); the result is in scope order, each scope's events in their order.
pub async fn append_many_in(
    conn: &mut PgConnection,
    entries: &[NewEntry<'_>],
) -> DomainResult<Vec<AuditEvent>> {
    for e in entries {
        check_action(e.action)?;
    }
    // Group by scope, keeping each scope's order.
    let mut scopes: Vec<(String, Vec<&NewEntry<'_>>)> = Vec::new();
    for e in entries {
        let scope = scope_of(e.ctx.org);
        match scopes.iter_mut().find(|(s, _)| *s == scope) {
            Some((_, group)) => group.push(e),
            None => scopes.push((scope, vec![e])),
        }
    }
    // One order for every caller, so two batches never wait on each other's lanes in a cycle.
    scopes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(entries.len());
    for (scope, group) in scopes {
        let (chain, head_seq, head_hash, first_seq, at) =
            lock_lane(conn, &scope, group[0].ctx.org).await?;
        let mut seqs = vec![first_seq];
        if group.len() > 1 {
            let more: Vec<i64> =
                sqlx::query_scalar("SELECT nextval('audit.event_seq') FROM generate_series(2, $1)")
                    .bind(group.len() as i64)
                    .fetch_all(&mut *conn)
                    .await?;
            seqs.extend(more);
            seqs.sort_unstable();
        }
        let mut prev = head_hash;
        let mut events = Vec::with_capacity(group.len());
        for (i, entry) in group.iter().enumerate() {
            let mut event = new_event(entry, seqs[i], &chain, head_seq + 1 + i as i64, at, prev);
            event.hash = entry_hash(&event.prev_hash, &event);
            prev = event.hash.clone();
            events.push(event);
        }
        let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "INSERT INTO audit.events (seq, chain, chain_seq, at, actor, actor_name, actor_kind,
                 auth_method, credential_id, org_id, project_id, action, resource, outcome, status,
                 error_code, request_id, source_ip, prev_hash, hash) ",
        );
        insert.push_values(&events, |mut row, e| {
            row.push_bind(e.seq)
                .push_bind(&e.chain)
                .push_bind(e.chain_seq)
                .push_bind(e.at)
                .push_bind(&e.actor)
                .push_bind(&e.actor_name)
                .push_bind(&e.actor_kind)
                .push_bind(&e.auth_method)
                .push_bind(&e.credential_id)
                .push_bind(e.org_id.map(|o| o.uuid()))
                .push_bind(e.project_id.map(|p| p.uuid()))
                .push_bind(&e.action)
                .push_bind(&e.resource)
                .push_bind(e.outcome.as_str())
                .push_bind(e.status)
                .push_bind(&e.error_code)
                .push_bind(&e.request_id)
                .push_bind(&e.source_ip)
                .push_bind(&e.prev_hash)
                .push_bind(&e.hash);
        });
        insert.build().execute(&mut *conn).await?;
        let last = events.last().expect("a group is never empty");
        sqlx::query("UPDATE audit.chains SET head_seq = $2, head_hash = $3 WHERE chain = $1")
            .bind(&last.chain)
            .bind(last.chain_seq)
            .bind(&last.hash)
            .execute(&mut *conn)
            .await?;
        out.extend(events);
    }
    Ok(out)
}

fn new_event(
    entry: &NewEntry<'_>,
    seq: i64,
    chain: &str,
    chain_seq: i64,
    at: DateTime<Utc>,
    prev_hash: String,
) -> AuditEvent {
    let ctx = entry.ctx;
    AuditEvent {
        seq,
        chain: chain.to_string(),
        chain_seq,
        at,
        actor: ctx.principal.label(),
        actor_name: cut(&ctx.principal.name, MAX_TEXT_CHARS),
        actor_kind: kind_str(ctx.principal.kind).to_string(),
        auth_method: ctx.auth_method.as_str().to_string(),
        credential_id: ctx.credential_id.as_deref().map(|c| cut(c, MAX_TEXT_CHARS)),
        org_id: ctx.org,
        project_id: ctx.project,
        action: entry.action.to_string(),
        resource: cut(entry.resource, MAX_RESOURCE_CHARS),
        outcome: entry.outcome,
        status: i32::from(entry.status),
        error_code: entry.error_code.map(|c| cut(c, MAX_TEXT_CHARS)),
        request_id: cut(&ctx.request_id, MAX_TEXT_CHARS),
        source_ip: ctx.source_ip.map(|ip| ip.to_string()),
        prev_hash,
        hash: String::new(),
    }
}

/// Creates the [`LANES`] chains of `org` (`None`: the platform's) if they do not exist yet, in
/// their own short transaction. Optional: the first append creates them otherwise.
pub async fn ensure_chains(pool: &PgPool, org: Option<shared_ids::OrgId>) -> DomainResult<()> {
    create_lanes(&mut *pool.acquire().await?, &scope_of(org), org).await
}

async fn create_lanes(
    conn: &mut PgConnection,
    scope: &str,
    org: Option<shared_ids::OrgId>,
) -> DomainResult<()> {
    // A concurrent creator wins harmlessly (this waits for its commit, then does nothing).
    sqlx::query(
        "INSERT INTO audit.chains (chain, scope, org_id, lane, head_hash)
         SELECT $1 || '/' || lane, $1, $2, lane, $3 FROM generate_series(0, $4 - 1) AS lane
         ON CONFLICT DO NOTHING",
    )
    .bind(scope)
    .bind(org.map(|o| o.uuid()))
    .bind(GENESIS_HASH)
    .bind(LANES)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What a lock query answers: chain, head_seq, head_hash, the event's seq and time.
type Head = (String, i64, String, i64, DateTime<Utc>);

async fn append_locked(conn: &mut PgConnection, entry: &NewEntry<'_>) -> DomainResult<AuditEvent> {
    check_action(entry.action)?;
    let scope = scope_of(entry.ctx.org);
    // Statement 1: lock a lane, read its head.
    let (chain, head_seq, head_hash, seq, at) = lock_lane(conn, &scope, entry.ctx.org).await?;
    let mut event = new_event(entry, seq, &chain, head_seq + 1, at, head_hash);
    event.hash = entry_hash(&event.prev_hash, &event);
    // Statement 2: the event, and the head moved to it.
    sqlx::query(
        "WITH head AS (
             UPDATE audit.chains SET head_seq = $3, head_hash = $20 WHERE chain = $2
         )
         INSERT INTO audit.events (seq, chain, chain_seq, at, actor, actor_name, actor_kind,
             auth_method, credential_id, org_id, project_id, action, resource, outcome, status,
             error_code, request_id, source_ip, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
             $19, $20)",
    )
    .bind(event.seq)
    .bind(&event.chain)
    .bind(event.chain_seq)
    .bind(event.at)
    .bind(&event.actor)
    .bind(&event.actor_name)
    .bind(&event.actor_kind)
    .bind(&event.auth_method)
    .bind(&event.credential_id)
    .bind(event.org_id.map(|o| o.uuid()))
    .bind(event.project_id.map(|p| p.uuid()))
    .bind(&event.action)
    .bind(&event.resource)
    .bind(event.outcome.as_str())
    .bind(event.status)
    .bind(&event.error_code)
    .bind(&event.request_id)
    .bind(&event.source_ip)
    .bind(&event.prev_hash)
    .bind(&event.hash)
    .execute(&mut *conn)
    .await?;
    Ok(event)
}

/// Locks a lane of `scope` for this transaction and reads its head. The seq and the time are
/// taken after the lock (outer query), so both grow along the chain.
async fn lock_lane(
    conn: &mut PgConnection,
    scope: &str,
    org: Option<shared_ids::OrgId>,
) -> DomainResult<Head> {
    for _ in 0..3 {
        // The lowest lane nobody else holds (one this transaction holds already is free to it).
        let free: Option<Head> = sqlx::query_as(
            "SELECT l.chain, l.head_seq, l.head_hash, nextval('audit.event_seq'), clock_timestamp()
             FROM (SELECT chain, head_seq, head_hash FROM audit.chains WHERE scope = $1
                   ORDER BY lane LIMIT 1 FOR UPDATE SKIP LOCKED) l",
        )
        .bind(scope)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(head) = free {
            return Ok(head);
        }
        // Every lane is held (wait for a random one), or the scope has none yet.
        let busy: Option<Head> = sqlx::query_as(
            "SELECT l.chain, l.head_seq, l.head_hash, nextval('audit.event_seq'), clock_timestamp()
             FROM (SELECT chain, head_seq, head_hash FROM audit.chains WHERE scope = $1
                   ORDER BY random() LIMIT 1 FOR UPDATE) l",
        )
        .bind(scope)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(head) = busy {
            return Ok(head);
        }
        // The scope's first event: create its lanes.
        create_lanes(conn, scope, org).await?;
    }
    Err(DomainError::Busy {
        code: "audit_chain_unavailable",
        message: format!("no audit chain of {scope} could be locked"),
    })
}

fn check_action(action: &str) -> DomainResult<()> {
    let ok = !action.is_empty()
        && action.chars().count() <= MAX_ACTION_CHARS
        && action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "audit_action_invalid",
            format!("audit action {action:?} must be 1 to {MAX_ACTION_CHARS} of [a-z0-9._-]"),
        ))
    }
}

/// `s` cut to at most `max` characters, the last being `…` when anything was cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let keep: String = s.chars().take(max - 1).collect();
            keep + "…"
        }
    }
}
