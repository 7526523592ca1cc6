//! The audit log against a real Postgres: appends under concurrency, the tamper cases the hash
//! chain and the anchors must detect (made as a superuser would: triggers disabled first),
//! export and offline verification, and the list filters.

use chrono::{DateTime, Utc};
use platform_audit::{
    Anchor, AnchorSigner, AnchorVerifier, AuditEvent, AuthMethod, Bundle, Filter, GENESIS_HASH,
    LANES, MAX_RESOURCE_CHARS, NewEntry, OperationContext, Outcome, Principal, PrincipalKind,
    VerifyReport, anchor, append, append_in, append_many_in, entry_hash, export, list, verify,
    verify_bundle, verify_with,
};
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use shared_ids::{OrgId, ProjectId};
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use uuid::Uuid;

// ---------------------------------------------------------------- helpers

struct Signer {
    id: String,
    pair: Ed25519KeyPair,
}

impl AnchorSigner for Signer {
    fn key_id(&self) -> String {
        self.id.clone()
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

#[derive(Default)]
struct Verifier(HashMap<String, Vec<u8>>);

impl AnchorVerifier for Verifier {
    fn verify(&self, key_id: &str, message: &[u8], signature: &[u8]) -> bool {
        self.0.get(key_id).is_some_and(|public| {
            UnparsedPublicKey::new(&ED25519, public)
                .verify(message, signature)
                .is_ok()
        })
    }
}

fn signer(id: &str) -> Signer {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Signer {
        id: id.into(),
        pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
    }
}

/// A signer and a verifier that knows its public key.
fn keys(id: &str) -> (Signer, Verifier) {
    let s = signer(id);
    let mut v = Verifier::default();
    v.0.insert(id.into(), s.pair.public_key().as_ref().to_vec());
    (s, v)
}

fn ctx(org: Option<OrgId>, user: Uuid, name: &str) -> OperationContext {
    OperationContext {
        principal: Principal {
            kind: PrincipalKind::User,
            id: user,
            name: name.into(),
        },
        auth_method: AuthMethod::ApiKey,
        credential_id: Some("key_0190abcd".into()),
        org,
        project: org.map(|_| ProjectId::from_u128(7)),
        operator: false,
        request_id: format!("req-{}", Uuid::new_v4().simple()),
        source_ip: Some("203.0.113.7".parse().unwrap()),
    }
}

fn entry<'a>(ctx: &'a OperationContext, action: &'a str, resource: &'a str) -> NewEntry<'a> {
    NewEntry {
        ctx,
        action,
        resource,
        outcome: Outcome::Success,
        status: 200,
        error_code: None,
    }
}

/// `n` events of `org` in lane 0 (appended one after the other), returning them.
async fn appended(pool: &PgPool, org: Option<OrgId>, n: usize) -> Vec<AuditEvent> {
    let c = ctx(org, Uuid::new_v4(), "alice@example.com");
    let mut out = Vec::new();
    for i in 0..n {
        let resource = format!("/v1/instances/{i}");
        out.push(
            append(pool, &entry(&c, "instance.create", &resource))
                .await
                .unwrap(),
        );
    }
    out
}

fn lane0(org: OrgId) -> String {
    format!("org:{org}/0")
}

/// Runs `sql` as an attacker with superuser rights would: the append-only triggers off first.
async fn as_superuser(pool: &PgPool, sql: &str) {
    let tables = ["events", "anchors", "chains"];
    let off: String = tables
        .iter()
        .map(|t| format!("ALTER TABLE audit.{t} DISABLE TRIGGER USER;"))
        .collect();
    let on: String = tables
        .iter()
        .map(|t| format!("ALTER TABLE audit.{t} ENABLE TRIGGER USER;"))
        .collect();
    sqlx::raw_sql(&format!("BEGIN; {off} {sql}; {on} COMMIT;"))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("tamper {sql}: {e}"));
}

/// Asserts that some problem contains every one of `needles`.
fn assert_problem(report: &VerifyReport, needles: &[&str]) {
    assert!(!report.ok, "expected problems, got {report:#?}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| needles.iter().all(|n| p.contains(n))),
        "no problem mentions all of {needles:?}: {:#?}",
        report.problems
    );
}

fn assert_ok(report: &VerifyReport) {
    assert!(
        report.ok && report.problems.is_empty(),
        "expected ok: {report:#?}"
    );
}

async fn pool_with(url: &str, connections: u32) -> PgPool {
    shared_kernel::db::connect_and_migrate(url, connections)
        .await
        .unwrap()
}

// ---------------------------------------------------------------- hashing

/// The vector in `entry_hash`'s doc comment, computed independently from the documented
/// encoding (a Python one-off: sha256 over 0x01 ‖ u32be(len) ‖ utf8 per field, 0x00 for none).
#[test]
fn hash_test_vector() {
    let event = AuditEvent {
        seq: 1,
        chain: "platform/0".into(),
        chain_seq: 1,
        at: "2026-12-01T09:30:00.123456Z".parse().unwrap(),
        actor: "system:reconciler".into(),
        actor_name: "reconciler".into(),
        actor_kind: "system".into(),
        auth_method: "system".into(),
        credential_id: None,
        org_id: None,
        project_id: None,
        action: "node.cordon".into(),
        resource: "/v1/nodes/n1".into(),
        outcome: Outcome::Success,
        status: 200,
        error_code: None,
        request_id: "req-1".into(),
        source_ip: Some("10.0.0.1".into()),
        prev_hash: GENESIS_HASH.into(),
        hash: String::new(),
    };
    assert_eq!(
        entry_hash(GENESIS_HASH, &event),
        "4832b4d002795988239260f53518f2bd5076f8017585d85b97c25f701a2e004c"
    );
    // Absent and empty differ; every field moves the hash.
    let mut other = event.clone();
    other.credential_id = Some(String::new());
    assert_ne!(
        entry_hash(GENESIS_HASH, &other),
        entry_hash(GENESIS_HASH, &event)
    );
    let mut other = event.clone();
    other.outcome = Outcome::Failure;
    assert_ne!(
        entry_hash(GENESIS_HASH, &other),
        entry_hash(GENESIS_HASH, &event)
    );
    // Moving bytes between adjacent fields changes the hash (length prefixes).
    let mut a = event.clone();
    (a.actor, a.actor_name) = ("ab".into(), "c".into());
    let mut b = event.clone();
    (b.actor, b.actor_name) = ("a".into(), "bc".into());
    assert_ne!(entry_hash(GENESIS_HASH, &a), entry_hash(GENESIS_HASH, &b));
}

// ---------------------------------------------------------------- appending

#[tokio::test]
async fn append_links_events_and_verify_accepts_them() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let events = appended(&pool, Some(org), 5).await;
    let platform = appended(&pool, None, 2).await;

    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.chain, lane0(org));
        assert_eq!(e.chain_seq, i as i64 + 1);
        assert_eq!(e.org_id, Some(org));
        assert_eq!(e.actor_kind, "user");
        assert_eq!(e.auth_method, "api_key");
        assert_eq!(e.credential_id.as_deref(), Some("key_0190abcd"));
        assert_eq!(e.source_ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(e.hash, entry_hash(&e.prev_hash, e));
        let prev = if i == 0 {
            GENESIS_HASH
        } else {
            &events[i - 1].hash
        };
        assert_eq!(e.prev_hash, prev);
    }
    assert_eq!(platform[1].chain, "platform/0");
    assert_eq!(platform[1].chain_seq, 2);
    assert!(platform.iter().all(|e| e.org_id.is_none()));

    // What list reads back is what append returned, field for field.
    let stored = list(&pool, &Filter::default()).await.unwrap();
    assert_eq!(stored, [events.clone(), platform.clone()].concat());

    let (s, v) = keys("k1");
    let report = verify(&pool, &v, None).await.unwrap();
    assert_ok(&report);
    assert_eq!(report.events_checked, 7);
    assert_eq!(report.unanchored_events, 7);
    let anchors = anchor(&pool, &s).await.unwrap();
    assert_eq!(anchors.len(), 2, "one per chain that moved: {anchors:?}");
    assert!(
        anchor(&pool, &s).await.unwrap().is_empty(),
        "nothing moved since"
    );
    let report = verify(&pool, &v, Some(org)).await.unwrap();
    assert_ok(&report);
    assert_eq!((report.events_checked, report.unanchored_events), (5, 0));
    // An org's chains are the org's lanes: one used, the others empty.
    assert_eq!(report.chains_checked, i64::from(LANES));
}

#[tokio::test]
async fn ensure_chains_creates_the_lanes_once() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    for _ in 0..2 {
        platform_audit::ensure_chains(&pool, Some(org))
            .await
            .unwrap();
    }
    let lanes: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.chains")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(lanes, i64::from(LANES));
    let (_, v) = keys("k1");
    let report = verify(&pool, &v, Some(org)).await.unwrap();
    assert_ok(&report);
    assert_eq!(
        (report.chains_checked, report.events_checked),
        (i64::from(LANES), 0)
    );
    assert_eq!(appended(&pool, Some(org), 1).await[0].chain, lane0(org));
}

#[tokio::test]
async fn the_tables_refuse_update_and_delete() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    appended(&pool, None, 2).await;
    let (s, _) = keys("k1");
    anchor(&pool, &s).await.unwrap();
    for sql in [
        "UPDATE audit.events SET actor = 'someone-else'",
        "DELETE FROM audit.events WHERE chain_seq = 2",
        "TRUNCATE audit.events",
        "UPDATE audit.anchors SET signature = '00'",
        "DELETE FROM audit.anchors",
        "DELETE FROM audit.chains",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "{sql} must be refused, got {err}"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn action_is_checked_and_long_text_is_cut() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let c = ctx(None, Uuid::new_v4(), "alice");
    for bad in ["", "Instance.Create", "instance create", &"a".repeat(65)] {
        let err = append(&pool, &entry(&c, bad, "/x")).await.unwrap_err();
        assert_eq!(err.code(), "audit_action_invalid", "{bad:?}");
    }
    let long = "é".repeat(600);
    let e = append(&pool, &entry(&c, &"a".repeat(64), &long))
        .await
        .unwrap();
    assert_eq!(e.resource.chars().count(), MAX_RESOURCE_CHARS);
    assert!(e.resource.ends_with('…'));
    let (_, v) = keys("k1");
    assert_ok(&verify(&pool, &v, None).await.unwrap());
}

#[tokio::test]
async fn append_in_commits_and_rolls_back_with_the_callers_transaction() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let c = ctx(Some(org), Uuid::new_v4(), "alice");
    let mut tx = pool.begin().await.unwrap();
    let e = append_in(&mut tx, &entry(&c, "instance.create", "/a"))
        .await
        .unwrap();
    assert_eq!(e.chain_seq, 1);
    tx.rollback().await.unwrap();
    assert!(list(&pool, &Filter::default()).await.unwrap().is_empty());

    let mut tx = pool.begin().await.unwrap();
    let e = append_in(&mut tx, &entry(&c, "instance.create", "/b"))
        .await
        .unwrap();
    // Two appends in one transaction stay on its lane, in order.
    let f = append_in(&mut tx, &entry(&c, "instance.start", "/b"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        (e.chain_seq, f.chain_seq),
        (1, 2),
        "the rolled-back one left no gap"
    );
    assert_eq!(e.chain, f.chain);
    let (_, v) = keys("k1");
    assert_ok(&verify(&pool, &v, None).await.unwrap());
}

/// Asserts every chain is 1..=n without gaps; returns the number of events.
async fn assert_contiguous(pool: &PgPool) -> i64 {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT chain, count(*), min(chain_seq), max(chain_seq) FROM audit.events GROUP BY chain",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (chain, count, min, max) in &rows {
        assert_eq!(
            (*min, *max),
            (1, *count),
            "chain {chain} has gaps or duplicates"
        );
    }
    rows.iter().map(|r| r.1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_across_orgs_stay_contiguous() {
    let (_, url) = shared_kernel::db::testing::fresh_database().await;
    let pool = pool_with(&url, 20).await;
    let orgs: Vec<OrgId> = (0..4).map(|_| OrgId::new()).collect();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let pool = pool.clone();
            let org = orgs[i % 4];
            tokio::spawn(async move {
                let c = ctx(Some(org), Uuid::new_v4(), "load");
                let resource = format!("/v1/instances/{i}");
                append(&pool, &entry(&c, "instance.create", &resource))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for t in tasks {
        assert!(seqs.insert(t.await.unwrap().seq), "seq given twice");
    }
    assert_eq!(assert_contiguous(&pool).await, 200);
    let (s, v) = keys("k1");
    anchor(&pool, &s).await.unwrap();
    let report = verify(&pool, &v, None).await.unwrap();
    assert_ok(&report);
    assert_eq!((report.events_checked, report.unanchored_events), (200, 0));
    for org in orgs {
        let r = verify(&pool, &v, Some(org)).await.unwrap();
        assert_ok(&r);
        assert_eq!(r.events_checked, 50);
    }
}

/// Batches (what the API's group-commit writer appends) interleaved with single appends, from
/// several tasks at once: every chain stays contiguous, each batch keeps its order, and the
/// chains verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_and_single_appends_interleave_and_stay_contiguous() {
    let (_, url) = shared_kernel::db::testing::fresh_database().await;
    let pool = pool_with(&url, 20).await;
    let orgs: Vec<OrgId> = (0..3).map(|_| OrgId::new()).collect();
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let pool = pool.clone();
            let orgs = orgs.clone();
            tokio::spawn(async move {
                let ctxs: Vec<OperationContext> = (0..10)
                    .map(|j| {
                        ctx(
                            if j % 4 == 3 {
                                None
                            } else {
                                Some(orgs[(i + j) % 3])
                            },
                            Uuid::new_v4(),
                            "batch",
                        )
                    })
                    .collect();
                let resources: Vec<String> = (0..10).map(|j| format!("/v1/x/{i}/{j}")).collect();
                if i % 3 == 0 {
                    for (c, r) in ctxs.iter().zip(&resources) {
                        append(&pool, &entry(c, "instance.create", r))
                            .await
                            .unwrap();
                    }
                    return Vec::new();
                }
                let entries: Vec<NewEntry<'_>> = ctxs
                    .iter()
                    .zip(&resources)
                    .map(|(c, r)| entry(c, "instance.create", r))
                    .collect();
                let mut tx = pool.begin().await.unwrap();
                let events = append_many_in(&mut tx, &entries).await.unwrap();
                tx.commit().await.unwrap();
                events
            })
        })
        .collect();
    for t in tasks {
        let events = t.await.unwrap();
        for pair in events.windows(2) {
            if pair[0].chain == pair[1].chain {
                assert_eq!(
                    pair[1].chain_seq,
                    pair[0].chain_seq + 1,
                    "a batch keeps its order"
                );
                assert_eq!(pair[1].prev_hash, pair[0].hash);
            }
        }
    }
    assert_eq!(assert_contiguous(&pool).await, 240);
    let (s, v) = keys("k1");
    anchor(&pool, &s).await.unwrap();
    let report = verify(&pool, &v, None).await.unwrap();
    assert_ok(&report);
    assert_eq!(report.events_checked, 240);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_concurrent_appends_than_lanes_wait_and_stay_contiguous() {
    let (_, url) = shared_kernel::db::testing::fresh_database().await;
    let pool = pool_with(&url, 40).await;
    let org = OrgId::new();
    // The org's first event creates its lanes (committed: see append_in on first appends).
    let c = ctx(Some(org), Uuid::new_v4(), "holder");
    append(&pool, &entry(&c, "org.create", "/first"))
        .await
        .unwrap();
    // Hold every lane of the org in an open transaction.
    let mut held = Vec::new();
    let mut chains = BTreeSet::new();
    for _ in 0..LANES {
        let mut tx = pool.begin().await.unwrap();
        let e = append_in(&mut tx, &entry(&c, "instance.create", "/held"))
            .await
            .unwrap();
        chains.insert(e.chain);
        held.push(tx);
    }
    assert_eq!(
        chains.len(),
        LANES as usize,
        "each open transaction took its own lane"
    );
    // Another org is not blocked by them.
    let other = ctx(Some(OrgId::new()), Uuid::new_v4(), "other");
    tokio::time::timeout(
        Duration::from_secs(5),
        append(&pool, &entry(&other, "instance.create", "/free")),
    )
    .await
    .expect("another org's append must not wait")
    .unwrap();
    // One more append to the org waits for a lane ...
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let c = ctx(Some(org), Uuid::new_v4(), "waiter");
            append(&pool, &entry(&c, "instance.create", "/waited"))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "every lane is held: the append must wait"
    );
    for tx in held {
        tx.commit().await.unwrap();
    }
    let e = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the append goes on once the lanes are free")
        .unwrap();
    // It follows the committed events of its lane (lane 0 holds two already).
    assert!(matches!(e.chain_seq, 2 | 3), "{e:?}");

    // And 120 concurrent appends on 40 connections to one org (more than its lanes).
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let c = ctx(Some(org), Uuid::new_v4(), "load");
                let resource = format!("/v1/instances/{i}");
                append(&pool, &entry(&c, "instance.create", &resource))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        assert_contiguous(&pool).await,
        1 + i64::from(LANES) + 1 + 1 + 120
    );
    let (_, v) = keys("k1");
    assert_ok(&verify(&pool, &v, None).await.unwrap());
}

// ---------------------------------------------------------------- tampering

#[tokio::test]
async fn an_edited_field_is_detected_and_names_the_row() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let events = appended(&pool, Some(org), 5).await;
    let (_, v) = keys("k1");
    let chain = lane0(org);
    let row = format!("chain = '{chain}' AND chain_seq = 3");
    let seq3 = events[2].seq;
    // (field, tampered value, original value) for every column the hash covers.
    let original_at = events[2].at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
    let edits = [
        (
            "actor",
            "'user:00000000-0000-0000-0000-000000000000'".to_string(),
            format!("'{}'", events[2].actor),
        ),
        (
            "actor_name",
            "'mallory'".into(),
            "'alice@example.com'".into(),
        ),
        ("actor_kind", "'system'".into(), "'user'".into()),
        ("auth_method", "'system'".into(), "'api_key'".into()),
        ("credential_id", "NULL".into(), "'key_0190abcd'".into()),
        ("org_id", format!("'{}'", OrgId::new()), format!("'{org}'")),
        (
            "project_id",
            "NULL".into(),
            format!("'{}'", ProjectId::from_u128(7)),
        ),
        (
            "action",
            "'instance.delete'".into(),
            "'instance.create'".into(),
        ),
        (
            "resource",
            "'/v1/instances/9'".into(),
            "'/v1/instances/2'".into(),
        ),
        ("outcome", "'failure'".into(), "'success'".into()),
        ("status", "500".into(), "200".into()),
        ("error_code", "'nope'".into(), "NULL".into()),
        (
            "request_id",
            "'req-forged'".into(),
            format!("'{}'", events[2].request_id),
        ),
        ("source_ip", "'198.51.100.1'".into(), "'203.0.113.7'".into()),
        (
            "at",
            format!("'{original_at}'::timestamptz + interval '1 microsecond'"),
            format!("'{original_at}'"),
        ),
        ("seq", "1000000".into(), seq3.to_string()),
    ];
    for (field, bad, good) in &edits {
        as_superuser(
            &pool,
            &format!("UPDATE audit.events SET {field} = {bad} WHERE {row}"),
        )
        .await;
        let report = verify(&pool, &v, Some(org)).await.unwrap();
        assert_problem(&report, &[&chain, "chain_seq 3", "do not hash"]);
        assert!(
            report.problems.iter().all(|p| p.contains("chain_seq 3")),
            "{field}: only row 3 is named: {:#?}",
            report.problems
        );
        as_superuser(
            &pool,
            &format!("UPDATE audit.events SET {field} = {good} WHERE {row}"),
        )
        .await;
        assert_ok(&verify(&pool, &v, Some(org)).await.unwrap());
    }

    // An attacker who also recomputes the edited row's hash breaks the next link.
    let mut forged = events[2].clone();
    forged.outcome = Outcome::Failure;
    let forged_hash = entry_hash(&forged.prev_hash, &forged);
    as_superuser(
        &pool,
        &format!("UPDATE audit.events SET outcome = 'failure', hash = '{forged_hash}' WHERE {row}"),
    )
    .await;
    let report = verify(&pool, &v, Some(org)).await.unwrap();
    assert_problem(&report, &[&chain, "chain_seq 4", "prev_hash"]);
}

#[tokio::test]
async fn a_rewritten_tail_is_detected_by_the_anchor() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let events = appended(&pool, Some(org), 5).await;
    let (s, v) = keys("k1");
    anchor(&pool, &s).await.unwrap();
    // Rewrite row 3 and re-hash rows 3..5 and the head consistently: only the anchor knows.
    let chain = lane0(org);
    let mut prev = events[1].hash.clone();
    let mut sql = String::new();
    for (i, e) in events.iter().enumerate().skip(2) {
        let mut e = e.clone();
        if i == 2 {
            e.outcome = Outcome::Failure;
        }
        e.prev_hash = prev;
        e.hash = entry_hash(&e.prev_hash, &e);
        sql += &format!(
            "UPDATE audit.events SET outcome = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {};",
            e.outcome.as_str(),
            e.prev_hash,
            e.hash,
            e.seq
        );
        prev = e.hash;
    }
    sql += &format!("UPDATE audit.chains SET head_hash = '{prev}' WHERE chain = '{chain}'");
    as_superuser(&pool, &sql).await;
    let report = verify(&pool, &v, Some(org)).await.unwrap();
    assert_problem(&report, &[&chain, "chain_seq 5", "differs from the anchor"]);
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
}

#[tokio::test]
async fn a_deleted_middle_row_is_detected() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    appended(&pool, Some(org), 5).await;
    let (_, v) = keys("k1");
    let chain = lane0(org);
    as_superuser(
        &pool,
        &format!("DELETE FROM audit.events WHERE chain = '{chain}' AND chain_seq = 3"),
    )
    .await;
    let report = verify(&pool, &v, Some(org)).await.unwrap();
    assert_problem(&report, &[&chain, "chain_seq 3 is missing"]);
}

#[tokio::test]
async fn swapped_rows_are_detected() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    appended(&pool, Some(org), 5).await;
    let (_, v) = keys("k1");
    let chain = lane0(org);
    let at = |n: i64| format!("chain = '{chain}' AND chain_seq = {n}");
    // Reorder: rows 2 and 3 exchange their positions.
    as_superuser(
        &pool,
        &format!(
            "UPDATE audit.events SET chain_seq = 1000 WHERE {};
             UPDATE audit.events SET chain_seq = 2 WHERE {};
             UPDATE audit.events SET chain_seq = 3 WHERE {}",
            at(2),
            at(3),
            at(1000)
        ),
    )
    .await;
    let report = verify(&pool, &v, Some(org)).await.unwrap();
    assert_problem(&report, &[&chain, "chain_seq 2", "do not hash"]);
    assert_problem(&report, &[&chain, "chain_seq 3", "do not hash"]);

    // Swap contents instead (every column but chain and chain_seq) of rows 4 and 5.
    let (_, url) = shared_kernel::db::testing::fresh_database().await;
    let pool = pool_with(&url, 2).await;
    appended(&pool, Some(org), 5).await;
    let cols = "seq = o.seq, at = o.at, resource = o.resource, request_id = o.request_id, \
                prev_hash = o.prev_hash, hash = o.hash";
    as_superuser(
        &pool,
        &format!(
            "CREATE TEMP TABLE o AS SELECT * FROM audit.events WHERE chain = '{chain}';
             UPDATE audit.events e SET seq = -e.seq WHERE chain = '{chain}' AND chain_seq IN (4, 5);
             UPDATE audit.events e SET {cols} FROM o
               WHERE e.chain = '{chain}' AND e.chain_seq = 4 AND o.chain_seq = 5;
             UPDATE audit.events e SET {cols} FROM o
               WHERE e.chain = '{chain}' AND e.chain_seq = 5 AND o.chain_seq = 4"
        ),
    )
    .await;
    let report = verify(&pool, &v, Some(org)).await.unwrap();
    assert_problem(&report, &[&chain, "chain_seq 4"]);
    assert_problem(&report, &[&chain, "chain_seq 5"]);
}

#[tokio::test]
async fn truncation_is_detected_by_the_head_row_and_by_anchors() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (s, v) = keys("k1");

    // Naive truncation (head row left alone): the head row gives it away.
    let naive = OrgId::new();
    appended(&pool, Some(naive), 5).await;
    as_superuser(
        &pool,
        &format!(
            "DELETE FROM audit.events WHERE chain = '{}' AND chain_seq >= 4",
            lane0(naive)
        ),
    )
    .await;
    let report = verify(&pool, &v, Some(naive)).await.unwrap();
    assert_problem(&report, &[&lane0(naive), "head row says chain_seq 5"]);

    // Careful truncation (head row moved back too) before any anchor: undetectable. This is
    // why anchors exist; the assertion pins the limit the ADR states.
    let careful = OrgId::new();
    appended(&pool, Some(careful), 5).await;
    truncate_to(&pool, &lane0(careful), 3).await;
    assert_ok(&verify(&pool, &v, Some(careful)).await.unwrap());

    // The same after an anchor: detected.
    let anchored = OrgId::new();
    appended(&pool, Some(anchored), 10).await;
    anchor(&pool, &s).await.unwrap();
    truncate_to(&pool, &lane0(anchored), 7).await;
    let report = verify(&pool, &v, Some(anchored)).await.unwrap();
    assert_problem(
        &report,
        &[
            &lane0(anchored),
            "chain_seq 10",
            "ends at chain_seq 7",
            "8..10 were deleted",
        ],
    );
}

/// Deletes the chain's events after `keep` and moves its head row back to `keep`.
async fn truncate_to(pool: &PgPool, chain: &str, keep: i64) {
    as_superuser(
        pool,
        &format!(
            "DELETE FROM audit.events WHERE chain = '{chain}' AND chain_seq > {keep};
             UPDATE audit.chains SET head_seq = {keep},
                 head_hash = (SELECT hash FROM audit.events WHERE chain = '{chain}' AND chain_seq = {keep})
             WHERE chain = '{chain}'"
        ),
    )
    .await;
}

#[tokio::test]
async fn anchors_kept_outside_the_database_catch_a_truncation_that_deleted_the_stored_ones() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (s, v) = keys("k1");
    let org = OrgId::new();
    appended(&pool, Some(org), 6).await;
    // What the API publishes (logs, an append-only file).
    let published: Vec<Anchor> = anchor(&pool, &s).await.unwrap();
    let chain = lane0(org);
    truncate_to(&pool, &chain, 2).await;
    as_superuser(
        &pool,
        &format!("DELETE FROM audit.anchors WHERE chain = '{chain}'"),
    )
    .await;
    assert_ok(&verify(&pool, &v, Some(org)).await.unwrap());
    let report = verify_with(&pool, &v, Some(org), &published).await.unwrap();
    assert_problem(
        &report,
        &[&chain, "ends at chain_seq 2", "3..6 were deleted"],
    );

    // Every event of the chain gone, with its head row: still caught.
    as_superuser(
        &pool,
        &format!(
            "DELETE FROM audit.events WHERE chain = '{chain}'; DELETE FROM audit.chains WHERE chain = '{chain}'"
        ),
    )
    .await;
    let report = verify_with(&pool, &v, Some(org), &published).await.unwrap();
    assert_problem(&report, &[&chain, "chain_seq 6", "holds no events"]);
    // Anchors of other orgs do not concern this org's verify.
    let other = OrgId::new();
    let report = verify_with(&pool, &v, Some(other), &published)
        .await
        .unwrap();
    assert_ok(&report);
    assert_eq!(report.anchors_checked, 0);
}

#[tokio::test]
async fn forged_anchors_are_rejected() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (s, v) = keys("k1");
    let org = OrgId::new();
    appended(&pool, Some(org), 6).await;
    let real = anchor(&pool, &s).await.unwrap().remove(0);
    let chain = lane0(org);

    // The attacker truncates, removes the true anchor, and signs the new head with their own
    // key under the real key's id.
    truncate_to(&pool, &chain, 3).await;
    let head: String = sqlx::query_scalar("SELECT head_hash FROM audit.chains WHERE chain = $1")
        .bind(&chain)
        .fetch_one(&pool)
        .await
        .unwrap();
    let mallory = signer("k1");
    let at = Utc::now();
    let at: DateTime<Utc> = at
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
        .parse()
        .unwrap();
    let sig = hex::encode(mallory.sign(&platform_audit::anchor_message(&chain, 3, &head, &at)));
    as_superuser(
        &pool,
        &format!(
            "DELETE FROM audit.anchors;
             INSERT INTO audit.anchors (chain, chain_seq, hash, at, key_id, signature)
             VALUES ('{chain}', 3, '{head}', '{}', 'k1', '{sig}')",
            at.to_rfc3339()
        ),
    )
    .await;
    let report = verify(&pool, &v, Some(org)).await.unwrap();
    assert_problem(&report, &[&chain, "chain_seq 3", "does not verify"]);

    // A true anchor whose chain_seq was changed, or whose signature was altered.
    let mut moved = real.clone();
    moved.chain_seq = 3;
    moved.hash = head.clone();
    let mut altered = real.clone();
    altered.signature.replace_range(
        0..2,
        if &altered.signature[0..2] == "00" {
            "01"
        } else {
            "00"
        },
    );
    for (what, a) in [("moved", moved), ("altered", altered)] {
        let report = verify_with(&pool, &v, Some(org), &[a]).await.unwrap();
        assert_problem(&report, &[&chain, "does not verify"]);
        assert!(!report.ok, "{what}");
    }
    // The true anchor still proves the truncation.
    let report = verify_with(&pool, &v, Some(org), &[real]).await.unwrap();
    assert_problem(&report, &[&chain, "4..6 were deleted"]);
}

// ---------------------------------------------------------------- export

#[tokio::test]
async fn an_exported_range_verifies_offline_and_tampering_with_it_is_detected() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (s, v) = keys("k1");
    let org = OrgId::new();
    let c = ctx(Some(org), Uuid::new_v4(), "alice");
    let noise = ctx(Some(OrgId::new()), Uuid::new_v4(), "bob");
    let platform = ctx(None, Uuid::new_v4(), "ops");
    let mut mine = Vec::new();
    for i in 0..10 {
        let resource = format!("/v1/instances/{i}");
        mine.push(
            append(&pool, &entry(&c, "instance.create", &resource))
                .await
                .unwrap(),
        );
        append(&pool, &entry(&noise, "instance.create", &resource))
            .await
            .unwrap();
        append(&pool, &entry(&platform, "node.cordon", &resource))
            .await
            .unwrap();
    }
    anchor(&pool, &s).await.unwrap();
    let (since, until) = (mine[3].at, mine[7].at);
    let bundle = export(&pool, Some(org), since, until).await.unwrap();
    let seqs = |events: &[AuditEvent]| events.iter().map(|e| e.chain_seq).collect::<Vec<_>>();
    assert_eq!(seqs(&bundle.events), [4, 5, 6, 7]);
    assert_eq!(bundle.events, mine[3..7]);
    assert_eq!(seqs(&bundle.context), [3, 8, 9, 10]);
    assert_eq!(bundle.heads.len(), 1);
    assert_eq!(bundle.heads[0].chain_seq, 10);
    let report = verify_bundle(&bundle, &v);
    assert_ok(&report);
    assert_eq!(report.events_checked, 8);

    // It survives JSON (what the API and the CLI exchange).
    let json = serde_json::to_string(&bundle).unwrap();
    let back: Bundle = serde_json::from_str(&json).unwrap();
    assert_ok(&verify_bundle(&back, &v));

    // Every chain of every scope, for an operator.
    let all = export(&pool, None, since, until).await.unwrap();
    assert_eq!(all.events.len(), 12);
    assert_ok(&verify_bundle(&all, &v));

    let chain = lane0(org);
    let tampered = |f: &dyn Fn(&mut Bundle)| {
        let mut b = bundle.clone();
        f(&mut b);
        verify_bundle(&b, &v)
    };
    let r = tampered(&|b| b.events[1].outcome = Outcome::Failure);
    assert_problem(&r, &[&chain, "chain_seq 5", "do not hash"]);
    let r = tampered(&|b| b.events[2].actor = "user:someone-else".into());
    assert_problem(&r, &[&chain, "chain_seq 6", "do not hash"]);
    let r = tampered(&|b| {
        b.events.remove(1);
    });
    assert_problem(&r, &[&chain, "chain_seq 5 is missing"]);
    // The range's first event left out, with the one before it.
    let r = tampered(&|b| {
        b.events.remove(0);
        b.context.remove(0);
    });
    assert_problem(&r, &[&chain, "chain_seq 5", "starts inside the range"]);
    // The range's last event and everything after it left out.
    let r = tampered(&|b| {
        b.events.pop();
        b.context.retain(|e| e.chain_seq < 4);
    });
    assert_problem(&r, &[&chain, "chain_seq 10", "ends at chain_seq 6"]);
    // An in-range event hidden among the context.
    let r = tampered(&|b| {
        let e = b.events.remove(3);
        b.context.push(e);
    });
    assert_problem(&r, &[&chain, "chain_seq 7", "inside the range"]);
    // A forged head.
    let r = tampered(&|b| b.heads[0].hash = b.events[0].hash.clone());
    assert_problem(&r, &[&chain, "does not verify"]);
    // Another org's event slipped in.
    let r = tampered(&|b| {
        b.events.push(
            all.events
                .iter()
                .find(|e| e.org_id != Some(org))
                .unwrap()
                .clone(),
        )
    });
    assert_problem(&r, &["not a chain of org"]);

    // Events after the newest anchor are exported but not covered.
    let late = append(&pool, &entry(&c, "instance.delete", "/late"))
        .await
        .unwrap();
    let b = export(
        &pool,
        Some(org),
        mine[9].at,
        late.at + chrono::Duration::seconds(1),
    )
    .await
    .unwrap();
    assert_eq!(seqs(&b.events), [10, 11]);
    let r = verify_bundle(&b, &v);
    assert_problem(
        &r,
        &[
            &chain,
            "chain_seq 11",
            "not covered by a valid signed anchor",
        ],
    );
    assert_eq!(r.unanchored_events, 1);
    anchor(&pool, &s).await.unwrap();
    let b = export(
        &pool,
        Some(org),
        mine[9].at,
        late.at + chrono::Duration::seconds(1),
    )
    .await
    .unwrap();
    assert_ok(&verify_bundle(&b, &v));
}

// ---------------------------------------------------------------- list

#[tokio::test]
async fn list_filters_return_exactly_the_matching_events() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (a, b) = (OrgId::new(), OrgId::new());
    let alice = ctx(Some(a), Uuid::new_v4(), "alice");
    let bob = ctx(Some(b), Uuid::new_v4(), "bob");
    let mut reconciler = OperationContext::system("reconciler");
    reconciler.request_id = "r".into();
    let script: [(&OperationContext, &str); 8] = [
        (&alice, "instance.create"),
        (&bob, "instance.create"),
        (&reconciler, "node.cordon"),
        (&alice, "instance.create"),
        (&alice, "instance.delete"),
        (&bob, "instance.create"),
        (&reconciler, "node.cordon"),
        (&alice, "instance.create"),
    ];
    let mut all = Vec::new();
    for (i, (c, action)) in script.iter().enumerate() {
        let resource = format!("/r/{i}");
        let mut e = entry(c, action, &resource);
        if i == 4 {
            e.outcome = Outcome::Failure;
            e.status = 409;
            e.error_code = Some("instance_busy");
        }
        all.push(append(&pool, &e).await.unwrap());
    }
    let pick = |f: &dyn Fn(&AuditEvent) -> bool| -> Vec<i64> {
        all.iter().filter(|e| f(e)).map(|e| e.seq).collect()
    };
    let run = |filter: Filter| {
        let pool = pool.clone();
        async move {
            list(&pool, &filter)
                .await
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(run(Filter::default()).await, pick(&|_| true));
    assert_eq!(
        run(Filter {
            org: Some(a),
            ..Filter::default()
        })
        .await,
        pick(&|e| e.org_id == Some(a))
    );
    assert_eq!(
        run(Filter {
            platform_only: true,
            ..Filter::default()
        })
        .await,
        pick(&|e| e.org_id.is_none())
    );
    assert_eq!(pick(&|e| e.org_id.is_none()).len(), 2);
    assert_eq!(
        run(Filter {
            action: Some("instance.create".into()),
            ..Filter::default()
        })
        .await,
        pick(&|e| e.action == "instance.create")
    );
    let alice_label = alice.principal.label();
    assert_eq!(
        run(Filter {
            org: Some(a),
            actor: Some(alice_label.clone()),
            action: Some("instance.create".into()),
            ..Filter::default()
        })
        .await,
        pick(&|e| e.actor == alice_label && e.action == "instance.create")
    );
    assert_eq!(
        pick(&|e| e.actor == alice_label && e.action == "instance.create").len(),
        3
    );
    assert_eq!(
        run(Filter {
            actor: Some("system:reconciler".into()),
            ..Filter::default()
        })
        .await,
        pick(&|e| e.actor == "system:reconciler")
    );
    let (since, until) = (all[2].at, all[6].at);
    assert_eq!(
        run(Filter {
            since: Some(since),
            until: Some(until),
            ..Filter::default()
        })
        .await,
        pick(&|e| e.at >= since && e.at < until)
    );
    assert_eq!(pick(&|e| e.at >= since && e.at < until).len(), 4);

    // The cursor walks every event once, in seq order.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = run(Filter {
            after_seq: after,
            limit: 3,
            ..Filter::default()
        })
        .await;
        assert!(page.len() <= 3);
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        paged.extend(page);
    }
    assert_eq!(paged, pick(&|_| true));

    let failed = list(
        &pool,
        &Filter {
            org: Some(a),
            action: Some("instance.delete".into()),
            ..Filter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].outcome, failed[0].status),
        (Outcome::Failure, 409)
    );
    assert_eq!(failed[0].error_code.as_deref(), Some("instance_busy"));

    let err = list(
        &pool,
        &Filter {
            org: Some(a),
            platform_only: true,
            ..Filter::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "audit_filter_invalid");
}
