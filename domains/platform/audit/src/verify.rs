//! Checking the chains: every link, every hash, every anchor.

use crate::anchor::{ANCHOR_COLUMNS, AnchorRow, from_row};
use crate::{
    Anchor, AnchorVerifier, AuditEvent, EVENT_COLUMNS, EventRow, GENESIS_HASH, chain_org,
    entry_hash, scope_of,
};
use serde::Serialize;
use shared_ids::OrgId;
use shared_kernel::DomainResult;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};

/// What [`verify`] (or [`verify_bundle`](crate::verify_bundle)) found. `ok` is true exactly when
/// `problems` is empty.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub events_checked: i64,
    pub chains_checked: i64,
    /// Anchors whose signature was checked (valid or not).
    pub anchors_checked: i64,
    /// Events after the newest valid anchor of their chain: protected by the hash chain against
    /// edits and deletions in the middle, but not yet against truncation.
    pub unanchored_events: i64,
    /// Each starts `chain <chain> chain_seq <n>:` (or `chain <chain>:`) and says what is wrong.
    /// At most [`MAX_PROBLEMS`] are listed, then one line counts the rest.
    pub problems: Vec<String>,
}

/// Problems listed one by one in a report.
pub const MAX_PROBLEMS: usize = 1000;

/// Events read per query while walking a chain.
const PAGE: i64 = 5000;

#[derive(Default)]
pub(crate) struct Problems {
    list: Vec<String>,
    more: usize,
}

impl Problems {
    pub(crate) fn add(&mut self, problem: String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(problem);
        } else {
            self.more += 1;
        }
    }

    pub(crate) fn into_list(mut self) -> Vec<String> {
        if self.more > 0 {
            self.list.push(format!("… and {} more problems", self.more));
        }
        self.list
    }
}

/// Splits anchors into valid ones, by chain, reporting each bad signature.
pub(crate) fn check_signatures<'a>(
    anchors: impl IntoIterator<Item = &'a Anchor>,
    verifier: &dyn AnchorVerifier,
    problems: &mut Problems,
    checked: &mut i64,
) -> BTreeMap<String, BTreeMap<i64, Vec<Anchor>>> {
    let mut valid: BTreeMap<String, BTreeMap<i64, Vec<Anchor>>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for a in anchors {
        if !seen.insert((
            &a.chain,
            a.chain_seq,
            &a.key_id,
            &a.hash,
            &a.signature,
            a.at,
        )) {
            continue;
        }
        *checked += 1;
        if a.signature_ok(verifier) {
            valid
                .entry(a.chain.clone())
                .or_default()
                .entry(a.chain_seq)
                .or_default()
                .push(a.clone());
        } else {
            problems.add(format!(
                "chain {} chain_seq {}: the anchor signed by key {:?} at {} does not verify \
                 (forged or altered anchor, or unknown key); it was not used",
                a.chain, a.chain_seq, a.key_id, a.at
            ));
        }
    }
    valid
}

/// Walks one chain's events in `chain_seq` order.
pub(crate) struct Walker {
    chain: String,
    /// The org every event must carry (`Some(None)`: none); `None` for a malformed chain name.
    org: Option<Option<OrgId>>,
    /// The chain must start at chain_seq 1 (the database); a bundle starts anywhere.
    from_genesis: bool,
    anchors: BTreeMap<i64, Vec<Anchor>>,
    matched: BTreeSet<i64>,
    first: Option<i64>,
    pub(crate) last: Option<(i64, String)>,
    pub(crate) events: i64,
}

impl Walker {
    pub(crate) fn new(
        chain: &str,
        from_genesis: bool,
        anchors: BTreeMap<i64, Vec<Anchor>>,
        problems: &mut Problems,
    ) -> Self {
        let org = chain_org(chain);
        if org.is_none() {
            problems.add(format!(
                "chain {chain}: not a chain name (`org:<uuid>/<lane>` or `platform/<lane>`)"
            ));
        }
        Self {
            chain: chain.to_string(),
            org,
            from_genesis,
            anchors,
            matched: BTreeSet::new(),
            first: None,
            last: None,
            events: 0,
        }
    }

    pub(crate) fn push(&mut self, e: &AuditEvent, problems: &mut Problems) {
        let c = &self.chain;
        let n = e.chain_seq;
        self.events += 1;
        let expected = match &self.last {
            Some((seq, _)) => Some(seq + 1),
            None if self.from_genesis => Some(1),
            None => None,
        };
        let mut linked = true;
        if let Some(expected) = expected {
            if n < expected {
                problems.add(format!(
                    "chain {c} chain_seq {n} (seq {}): out of order or duplicate (expected \
                     chain_seq {expected})",
                    e.seq
                ));
                return;
            }
            if n > expected {
                let missing = if n == expected + 1 {
                    format!("chain_seq {expected} is missing")
                } else {
                    format!("chain_seq {expected}..{} are missing", n - 1)
                };
                problems.add(format!(
                    "chain {c} chain_seq {expected}: {missing} (deleted from the middle of the \
                     chain)"
                ));
                linked = false;
            }
        }
        if e.chain != *c {
            problems.add(format!(
                "chain {c} chain_seq {n} (seq {}): the event names chain {}",
                e.seq, e.chain
            ));
        }
        let prev = match &self.last {
            Some((_, hash)) if linked => Some(hash.as_str()),
            None if n == 1 => Some(GENESIS_HASH),
            _ => None,
        };
        if let Some(prev) = prev
            && e.prev_hash != prev
        {
            problems.add(format!(
                "chain {c} chain_seq {n} (seq {}): prev_hash {} is not the hash of chain_seq {} \
                 ({prev}): an event before it was edited, replaced or reordered",
                e.seq,
                short(&e.prev_hash),
                n - 1
            ));
        }
        let recomputed = entry_hash(&e.prev_hash, e);
        if recomputed != e.hash {
            problems.add(format!(
                "chain {c} chain_seq {n} (seq {}): the stored fields do not hash to the stored \
                 hash (row edited, or rows' contents swapped)",
                e.seq
            ));
        }
        if let Some(org) = self.org
            && e.org_id != org
        {
            problems.add(format!(
                "chain {c} chain_seq {n} (seq {}): org {:?} does not belong to this chain",
                e.seq, e.org_id
            ));
        }
        if let Some(anchors) = self.anchors.get(&n) {
            self.matched.insert(n);
            for a in anchors.iter().filter(|a| a.hash != e.hash) {
                problems.add(format!(
                    "chain {c} chain_seq {n} (seq {}): hash {} differs from the anchor signed by \
                     key {:?} at {} ({}): the chain was rewritten from here or before",
                    e.seq,
                    short(&e.hash),
                    a.key_id,
                    a.at,
                    short(&a.hash)
                ));
            }
        }
        self.first.get_or_insert(n);
        self.last = Some((n, e.hash.clone()));
    }

    /// Checks the anchors beyond or inside gaps of what was walked; returns how many events
    /// follow the newest anchor that matched.
    pub(crate) fn finish(self, problems: &mut Problems) -> i64 {
        let c = &self.chain;
        let last = self.last.as_ref().map_or(0, |l| l.0);
        let first = self.first.unwrap_or(if self.from_genesis { 1 } else { 0 });
        for (&n, anchors) in &self.anchors {
            if self.matched.contains(&n) || (!self.from_genesis && n < first) {
                continue;
            }
            for a in anchors {
                let what = if n > last {
                    if last == 0 {
                        "the chain holds no events".to_string()
                    } else {
                        format!(
                            "the chain ends at chain_seq {last}: chain_seq {}..{n} were deleted \
                             from its end (truncation)",
                            last + 1
                        )
                    }
                } else {
                    "that event is missing".to_string()
                };
                problems.add(format!(
                    "chain {c} chain_seq {n}: the anchor signed by key {:?} at {} covers chain_seq \
                     {n}, but {what}",
                    a.key_id, a.at
                ));
            }
        }
        let anchored = self
            .matched
            .iter()
            .next_back()
            .copied()
            .unwrap_or(first.max(1) - 1);
        (last - anchored).max(0)
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// [`verify_with`] with only the anchors stored in the database.
pub async fn verify(
    pool: &PgPool,
    verifier: &dyn AnchorVerifier,
    org: Option<OrgId>,
) -> DomainResult<VerifyReport> {
    verify_with(pool, verifier, org, &[]).await
}

/// Walks every chain of `org` (`None`: every chain of every org and of the platform) in one
/// snapshot and checks: each event's hash over its stored fields; each `prev_hash` against the
/// previous event's hash; `chain_seq` 1, 2, 3, … without gaps; each event's org against its
/// chain; each chain's head row against its newest event; each anchor's signature; and each
/// valid anchor's event still there with the signed hash (so events deleted from the end of a
/// chain up to its newest anchor are reported).
///
/// `extra_anchors` are anchors kept outside the database (a log, an append-only file): someone
/// who can rewrite the tables can delete the stored anchors with the events they cover, but not
/// these. Those of other scopes are ignored.
///
/// Reads everything once, 5000 events per query; the time is linear in the events checked.
pub async fn verify_with(
    pool: &PgPool,
    verifier: &dyn AnchorVerifier,
    org: Option<OrgId>,
    extra_anchors: &[Anchor],
) -> DomainResult<VerifyReport> {
    let prefix = org.map(|o| format!("{}/", scope_of(Some(o))));
    // Bytewise (collation "C"): `org:<uuid>/` … `org:<uuid>0` is exactly the org's chains.
    let (lo, hi) = match &prefix {
        Some(p) => (p.clone(), Some(format!("{}0", &p[..p.len() - 1]))),
        None => (String::new(), None),
    };
    let upper = if hi.is_some() { " AND chain < $2" } else { "" };
    let in_scope = |chain: &str| prefix.as_deref().is_none_or(|p| chain.starts_with(p));

    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let heads: Vec<(String, i64, String)> = sqlx::query_as(&format!(
        "SELECT chain, head_seq, head_hash FROM audit.chains WHERE chain >= $1{upper}"
    ))
    .bind(&lo)
    .bind(&hi)
    .fetch_all(&mut *tx)
    .await?;
    let stored: Vec<AnchorRow> = sqlx::query_as(&format!(
        "SELECT {ANCHOR_COLUMNS} FROM audit.anchors WHERE chain >= $1{upper}
         ORDER BY chain, chain_seq"
    ))
    .bind(&lo)
    .bind(&hi)
    .fetch_all(&mut *tx)
    .await?;
    let stored: Vec<Anchor> = stored.into_iter().map(from_row).collect();

    let mut problems = Problems::default();
    let mut report = VerifyReport::default();
    let extra = extra_anchors.iter().filter(|a| in_scope(&a.chain));
    let mut anchors = check_signatures(
        stored.iter().chain(extra),
        verifier,
        &mut problems,
        &mut report.anchors_checked,
    );
    let heads: BTreeMap<String, (i64, String)> = heads
        .into_iter()
        .map(|(chain, seq, hash)| (chain, (seq, hash)))
        .collect();
    let mut unwalked: BTreeSet<String> = heads.keys().chain(anchors.keys()).cloned().collect();

    let mut walker: Option<Walker> = None;
    let mut cursor = (lo.clone(), 0_i64);
    loop {
        let page: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM audit.events
             WHERE (chain, chain_seq) > ($3, $4) AND chain >= $1{upper}
             ORDER BY chain, chain_seq LIMIT {PAGE}"
        ))
        .bind(&lo)
        .bind(&hi)
        .bind(&cursor.0)
        .bind(cursor.1)
        .fetch_all(&mut *tx)
        .await?;
        let full = page.len() as i64 == PAGE;
        for row in page {
            cursor = (row.chain.clone(), row.chain_seq);
            if walker.as_ref().is_none_or(|w| w.chain != row.chain) {
                if let Some(w) = walker.take() {
                    end_chain(w, &heads, &mut problems, &mut report);
                }
                unwalked.remove(&row.chain);
                let chain_anchors = anchors.remove(&row.chain).unwrap_or_default();
                walker = Some(Walker::new(&row.chain, true, chain_anchors, &mut problems));
            }
            let w = walker.as_mut().expect("walker set above");
            let (chain, chain_seq, seq) = (row.chain.clone(), row.chain_seq, row.seq);
            match row.into_event() {
                Ok(e) => w.push(&e, &mut problems),
                Err(err) => problems.add(format!(
                    "chain {chain} chain_seq {chain_seq} (seq {seq}): unreadable row: {err}"
                )),
            }
        }
        if !full {
            break;
        }
    }
    if let Some(w) = walker.take() {
        end_chain(w, &heads, &mut problems, &mut report);
    }
    for chain in unwalked {
        let chain_anchors = anchors.remove(&chain).unwrap_or_default();
        let w = Walker::new(&chain, true, chain_anchors, &mut problems);
        end_chain(w, &heads, &mut problems, &mut report);
    }
    tx.commit().await?;
    report.problems = problems.into_list();
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// Closes a chain's walk and checks its head row against its newest event.
fn end_chain(
    w: Walker,
    heads: &BTreeMap<String, (i64, String)>,
    problems: &mut Problems,
    report: &mut VerifyReport,
) {
    report.chains_checked += 1;
    report.events_checked += w.events;
    let chain = w.chain.clone();
    let (last_seq, last_hash) = w.last.clone().unwrap_or((0, GENESIS_HASH.to_string()));
    report.unanchored_events += w.finish(problems);
    match heads.get(&chain) {
        None if last_seq > 0 => problems.add(format!(
            "chain {chain} chain_seq {last_seq}: the chain holds events but has no head row \
             (written outside append)"
        )),
        Some((head_seq, head_hash))
            if (*head_seq, head_hash.as_str()) != (last_seq, last_hash.as_str()) =>
        {
            problems.add(format!(
                "chain {chain} chain_seq {head_seq}: the head row says chain_seq {head_seq} ({}), \
                 but the newest event is chain_seq {last_seq} ({}): events were deleted from the \
                 end, or written past the head",
                short(head_hash),
                short(&last_hash)
            ))
        }
        _ => {}
    }
}
