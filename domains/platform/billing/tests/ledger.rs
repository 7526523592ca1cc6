//! The double-entry ledger and billing accounts against a real Postgres: postings, what the
//! database refuses on its own, the invariant checker, trial credit, balance, standing, admission
//! and threshold events.

mod common;

use chrono::{Duration as Span, Utc};
use platform_billing::account::{
    self, BillingMode, CREDIT_EXHAUSTED, ORG_DELINQUENT, SPEND_LIMIT_REACHED, Standing,
};
use platform_billing::ledger::{self, Account, Entry, NewTransaction, Posted};
use platform_billing::usage::{self, UsageEvent};
use platform_billing::{Decimal, Period};
use shared_ids::OrgId;
use shared_kernel::DomainError;
use sqlx::{Connection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// `account::balance` and `refresh_standing` rate live usage with `metering::rate`, which another
/// change implements; until it has, the parts of these tests that need it are skipped (loudly).
fn metering_ready() -> bool {
    !include_str!("../src/metering.rs").contains("unimplemented!(\"metering::rate\")")
}

fn skip(what: &str) {
    eprintln!("SKIPPED ({what}): metering::rate is not implemented yet");
}

fn grant(key: &str, org: OrgId, amount: i64) -> NewTransaction {
    NewTransaction {
        key: key.into(),
        org: Some(org),
        description: "test grant".into(),
        corrects: None,
        currency: "USD".into(),
        entries: vec![
            Entry {
                account: Account::Promotions,
                amount_minor: amount,
            },
            Entry {
                account: Account::PrepaidCredit(org),
                amount_minor: -amount,
            },
        ],
    }
}

async fn post(pool: &PgPool, tx: &NewTransaction) -> Result<Posted, DomainError> {
    let mut t = pool.begin().await.unwrap();
    let posted = ledger::post(&mut t, tx).await?;
    t.commit().await.unwrap();
    Ok(posted)
}

async fn bal(pool: &PgPool, account: Account) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    ledger::balance(&mut conn, account, "USD").await.unwrap()
}

fn db_code(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.to_string()).unwrap_or_default(),
        other => panic!("not a database error: {other}"),
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// A raw open invoice of 100 for a past period (October 2026), nothing posted: something unpaid.
async fn unpaid_invoice(pool: &PgPool, org: OrgId) -> Uuid {
    let period = Period::parse("2026-10").unwrap();
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO billing.invoices (id, org_id, period_start, period_end, kind, state,
                                       currency, total_minor, finalized_at)
         VALUES ($1, $2, $3, $4, 'invoice', 'open', 'USD', 100, now())",
    )
    .bind(id)
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .execute(pool)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn a_balanced_posting_posts_once_by_key() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let first = post(&pool, &grant("grant/a", org, 500)).await.unwrap();
    assert!(first.new);
    let again = post(&pool, &grant("grant/a", org, 500)).await.unwrap();
    assert_eq!(
        again,
        Posted {
            id: first.id,
            new: false
        },
        "the same key posts once"
    );
    // Entries in another order are the same posting.
    let mut reordered = grant("grant/a", org, 500);
    reordered.entries.reverse();
    assert_eq!(post(&pool, &reordered).await.unwrap().id, first.id);
    // The same key with other entries, or another currency, is refused.
    let err = post(&pool, &grant("grant/a", org, 501)).await.unwrap_err();
    assert_eq!(err.code(), "ledger_key_reused");
    assert!(matches!(err, DomainError::Conflict { .. }));
    let mut euro = grant("grant/a", org, 500);
    euro.currency = "EUR".into();
    assert_eq!(
        post(&pool, &euro).await.unwrap_err().code(),
        "ledger_key_reused"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM billing.ledger_transactions").await,
        1
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM billing.ledger_entries").await,
        2
    );
    assert_eq!(bal(&pool, Account::PrepaidCredit(org)).await, -500);
    assert_eq!(bal(&pool, Account::Promotions).await, 500);
    assert_eq!(bal(&pool, Account::Receivable(org)).await, 0);

    // Refused before the database sees them: unbalanced, empty, a zero entry, a bad currency.
    let mut unbalanced = grant("grant/b", org, 500);
    unbalanced.entries[0].amount_minor = 499;
    let err = post(&pool, &unbalanced).await.unwrap_err();
    assert_eq!(err.code(), "unbalanced_transaction");
    assert!(matches!(err, DomainError::Invalid { .. }));
    let mut single = grant("grant/b", org, 500);
    single.entries.truncate(1);
    assert_eq!(
        post(&pool, &single).await.unwrap_err().code(),
        "unbalanced_transaction"
    );
    let mut overflow = grant("grant/b", org, 500);
    overflow.entries = vec![
        Entry {
            account: Account::Cash,
            amount_minor: i64::MAX,
        },
        Entry {
            account: Account::Cash,
            amount_minor: i64::MAX,
        },
        Entry {
            account: Account::Cash,
            amount_minor: 2,
        },
    ];
    assert_eq!(
        post(&pool, &overflow).await.unwrap_err().code(),
        "unbalanced_transaction",
        "sums that wrap around i64 are not balanced"
    );
    let mut empty = grant("grant/b", org, 500);
    empty.entries.clear();
    assert_eq!(
        post(&pool, &empty).await.unwrap_err().code(),
        "empty_transaction"
    );
    let mut zero = grant("grant/b", org, 0);
    zero.entries[0].amount_minor = 0;
    assert_eq!(
        post(&pool, &zero).await.unwrap_err().code(),
        "invalid_amount"
    );
    let mut lower = grant("grant/b", org, 5);
    lower.currency = "usd".into();
    assert_eq!(
        post(&pool, &lower).await.unwrap_err().code(),
        "invalid_currency"
    );
    // None of them used the key.
    assert!(post(&pool, &grant("grant/b", org, 7)).await.unwrap().new);

    // A correction names a posted transaction.
    let mut reversal = grant("grant/a/reversal", org, -500);
    reversal.corrects = Some(Uuid::now_v7());
    assert_eq!(
        post(&pool, &reversal).await.unwrap_err().code(),
        "ledger_transaction_not_found"
    );
    reversal.corrects = Some(first.id);
    let reversed = post(&pool, &reversal).await.unwrap();
    assert_eq!(bal(&pool, Account::PrepaidCredit(org)).await, -7);

    // The org's transactions, newest first, with their entries.
    let txs = ledger::transactions(&pool, org, 10).await.unwrap();
    let keys: Vec<_> = txs.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(keys, ["grant/a/reversal", "grant/b", "grant/a"]);
    assert_eq!(txs[0].id, reversed.id);
    assert_eq!(txs[0].corrects, Some(first.id));
    assert_eq!(txs[2].currency, "USD");
    assert_eq!(txs[2].org, Some(org));
    assert_eq!(txs[2].entries, grant("grant/a", org, 500).entries);
    assert_eq!(ledger::transactions(&pool, org, 1).await.unwrap().len(), 1);
    assert!(
        ledger::transactions(&pool, OrgId::new(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn concurrent_postings_of_one_key_post_once() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let tx = grant("topup/race", org, 300);
    let runs = (0..6).map(|_| {
        let (pool, tx) = (pool.clone(), tx.clone());
        tokio::spawn(async move { post(&pool, &tx).await.unwrap() })
    });
    let mut posted = vec![];
    for r in runs {
        posted.push(r.await.unwrap());
    }
    assert_eq!(posted.iter().filter(|p| p.new).count(), 1);
    assert!(posted.iter().all(|p| p.id == posted[0].id));
    assert_eq!(bal(&pool, Account::PrepaidCredit(org)).await, -300);
    common::assert_ledger_sound(&pool).await;
}

/// Inserts a transaction and its entries by raw SQL in one transaction, bypassing `post`.
async fn raw_post(pool: &PgPool, entries: &[(&str, i64, &str)]) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO billing.ledger_transactions (id, key, description) VALUES ($1, $2, 'raw')",
    )
    .bind(id)
    .bind(format!("raw/{id}"))
    .execute(&mut *tx)
    .await?;
    for (account, amount, currency) in entries {
        sqlx::query(
            "INSERT INTO billing.ledger_entries (transaction_id, account, amount_minor, currency)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(account)
        .bind(amount)
        .bind(currency)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(id)
}

#[tokio::test]
async fn the_database_refuses_an_unbalanced_transaction_at_commit() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    // The trigger is deferred: a transaction may be unbalanced until it commits.
    raw_post(&pool, &[("cash", 100, "USD"), ("revenue", -100, "USD")])
        .await
        .unwrap();
    let err = raw_post(&pool, &[("cash", 100, "USD"), ("revenue", -99, "USD")])
        .await
        .unwrap_err();
    assert_eq!(db_code(&err), "23514", "{err}");
    let err = raw_post(&pool, &[("cash", 100, "USD")]).await.unwrap_err();
    assert_eq!(db_code(&err), "23514", "{err}");
    let err = raw_post(&pool, &[("cash", 100, "USD"), ("revenue", -100, "EUR")])
        .await
        .unwrap_err();
    assert_eq!(
        db_code(&err),
        "23514",
        "one currency per transaction: {err}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM billing.ledger_transactions").await,
        1,
        "refused transactions left nothing"
    );
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn the_database_refuses_update_delete_and_truncate_of_the_ledger() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    post(&pool, &grant("grant/x", org, 250)).await.unwrap();
    for sql in [
        "UPDATE billing.ledger_entries SET amount_minor = amount_minor * 2",
        "DELETE FROM billing.ledger_entries",
        "TRUNCATE billing.ledger_entries",
        "UPDATE billing.ledger_transactions SET description = 'edited'",
        "DELETE FROM billing.ledger_transactions",
        "TRUNCATE billing.ledger_transactions CASCADE",
        "TRUNCATE billing.ledger_entries, billing.ledger_transactions",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert_eq!(db_code(&err), "23001", "{sql}: {err}");
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM billing.ledger_entries").await,
        2
    );
    assert_eq!(bal(&pool, Account::PrepaidCredit(org)).await, -250);
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn the_invariant_checker_finds_what_the_database_let_through() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let good = post(&pool, &grant("grant/ok", org, 10)).await.unwrap();
    assert_eq!(
        ledger::check_invariants(&pool).await.unwrap(),
        Vec::<String>::new()
    );

    // A transaction without entries fires no entry trigger: the database accepts it.
    let empty = raw_post(&pool, &[]).await.unwrap();
    let problems = ledger::check_invariants(&pool).await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(&empty.to_string()) && problems[0].contains("0 entries"),
        "{problems:?}"
    );

    // With triggers (and foreign keys) off, an unbalanced, two-currency transaction and a
    // correction of nothing get in; the checker names each.
    let (unbalanced, mixed, dangling) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO billing.ledger_transactions (id, key, description, corrects) VALUES
            ($1, 'bad/unbalanced', 'raw', NULL),
            ($2, 'bad/mixed', 'raw', NULL),
            ($3, 'bad/dangling', 'raw', $4)",
    )
    .bind(unbalanced)
    .bind(mixed)
    .bind(dangling)
    .bind(Uuid::now_v7())
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO billing.ledger_entries (transaction_id, account, amount_minor, currency) VALUES
            ($1, 'cash', 100, 'USD'), ($1, 'revenue', -90, 'USD'),
            ($2, 'cash', 100, 'USD'), ($2, 'revenue', -100, 'EUR'),
            ($3, 'cash', 5, 'USD'), ($3, 'revenue', -5, 'USD'),
            ($4, 'cash', 5, 'USD')",
    )
    .bind(unbalanced)
    .bind(mixed)
    .bind(dangling)
    .bind(Uuid::now_v7())
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    drop(conn);
    let problems = ledger::check_invariants(&pool).await.unwrap();
    let joined = problems.join("\n");
    assert_eq!(problems.len(), 5, "{joined}");
    for (id, what) in [
        (empty, "0 entries"),
        (unbalanced, "sum 10"),
        (mixed, "2 currencies"),
        (dangling, "which does not exist"),
    ] {
        assert!(
            problems
                .iter()
                .any(|p| p.contains(&id.to_string()) && p.contains(what)),
            "{id} {what}: {joined}"
        );
    }
    assert!(
        problems.iter().any(|p| p.starts_with("entry ")),
        "an orphan entry: {joined}"
    );
    assert!(!joined.contains(&good.id.to_string()), "{joined}");
}

#[tokio::test]
async fn ensure_grants_the_trial_once_and_admission_reads_standing() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let a = account::ensure(&pool, org, BillingMode::Prepaid, 1000)
        .await
        .unwrap();
    assert_eq!(
        (a.org, a.mode, a.currency.as_str()),
        (org, BillingMode::Prepaid, "USD")
    );
    assert_eq!(
        (
            a.exhausted_since,
            a.delinquent_since,
            a.monthly_spend_limit_minor
        ),
        (None, None, None)
    );
    // A second call (even asking for more, or another mode) changes nothing.
    let b = account::ensure(&pool, org, BillingMode::Postpaid, 5000)
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(account::get(&pool, org).await.unwrap(), a);
    let txs = ledger::transactions(&pool, org, 10).await.unwrap();
    assert_eq!(txs.len(), 1, "one trial: {txs:?}");
    assert_eq!(txs[0].key, format!("trial/{org}"));
    assert_eq!(bal(&pool, Account::PrepaidCredit(org)).await, -1000);
    assert_eq!(bal(&pool, Account::Promotions).await, 1000);
    assert_eq!(
        account::ensure(&pool, OrgId::new(), BillingMode::Prepaid, -1)
            .await
            .unwrap_err()
            .code(),
        "invalid_amount"
    );

    let mut conn = pool.acquire().await.unwrap();
    account::admit(&mut conn, org).await.unwrap();
    let unknown = OrgId::new();
    account::admit(&mut conn, unknown)
        .await
        .expect("an org without an account is admitted");
    // ... and gets a postpaid account without credit, nothing posted, so it is billed and swept.
    let created = account::get(&pool, unknown).await.unwrap();
    assert_eq!(
        (
            created.mode,
            created.exhausted_since,
            created.delinquent_since
        ),
        (BillingMode::Postpaid, None, None)
    );
    assert_eq!(
        ledger::transactions(&pool, unknown, 10).await.unwrap(),
        vec![]
    );
    account::admit(&mut conn, unknown).await.unwrap();

    // Prepaid without credit starts exhausted; postpaid without credit is fine.
    let broke = OrgId::new();
    let acct = account::ensure(&pool, broke, BillingMode::Prepaid, 0)
        .await
        .unwrap();
    assert!(acct.exhausted_since.is_some());
    let err = account::admit(&mut conn, broke).await.unwrap_err();
    assert_eq!(err.code(), CREDIT_EXHAUSTED);
    assert!(matches!(err, DomainError::Conflict { .. }));
    assert!(err.to_string().contains("gpuaas billing topup"), "{err}");
    let invoiced = OrgId::new();
    account::ensure(&pool, invoiced, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    account::admit(&mut conn, invoiced).await.unwrap();
    assert_eq!(
        ledger::transactions(&pool, invoiced, 10).await.unwrap(),
        vec![]
    );

    // Delinquency: only with an unpaid invoice (a raw open one here, of a past period);
    // marked once, refused with what to do, cleared in the caller's transaction.
    let paid_up = account::mark_delinquent(&pool, org).await.unwrap();
    assert_eq!(
        paid_up.delinquent_since, None,
        "nothing unpaid: not delinquent"
    );
    assert!(account::events(&pool, org, 0).await.unwrap().is_empty());
    unpaid_invoice(&pool, org).await;
    let m = account::mark_delinquent(&pool, org).await.unwrap();
    let since = m.delinquent_since.expect("delinquent");
    let m2 = account::mark_delinquent(&pool, org).await.unwrap();
    assert_eq!(m2.delinquent_since, Some(since), "the first instant stays");
    let err = account::admit(&mut conn, org).await.unwrap_err();
    assert_eq!(err.code(), ORG_DELINQUENT);
    assert!(err.to_string().contains("gpuaas billing pay"), "{err}");
    let kinds =
        |evs: Vec<account::AccountEvent>| evs.into_iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(
        kinds(account::events(&pool, org, 0).await.unwrap()),
        ["delinquent"]
    );
    assert_eq!(account::past_grace(&pool, Duration::ZERO).await.unwrap(), {
        let mut v = vec![org, broke];
        v.sort();
        v
    });
    assert!(
        account::past_grace(&pool, Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
    let mut tx = pool.begin().await.unwrap();
    account::clear_delinquent(&mut tx, org).await.unwrap();
    account::clear_delinquent(&mut tx, org).await.unwrap();
    account::clear_delinquent(&mut tx, OrgId::new())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    account::admit(&mut conn, org).await.unwrap();
    assert_eq!(
        account::get(&pool, org).await.unwrap().delinquent_since,
        None
    );
    let events = account::events(&pool, org, 0).await.unwrap();
    assert_eq!(kinds(events.clone()), ["delinquent", "delinquency_cleared"]);
    assert_eq!(
        kinds(account::events(&pool, org, events[0].seq).await.unwrap()),
        ["delinquency_cleared"]
    );

    // Validation, and what an org without an account gets.
    for bad in [Some(-1), Some(i64::MIN)] {
        let err = account::set_spend_limit(&pool, org, bad).await.unwrap_err();
        assert_eq!(err.code(), "invalid_spend_limit");
        assert!(matches!(err, DomainError::Invalid { .. }));
    }
    for amount in [0, -5] {
        assert_eq!(
            account::grant_credit(&pool, org, amount, "g", "goodwill")
                .await
                .unwrap_err()
                .code(),
            "invalid_amount"
        );
    }
    let nobody = OrgId::new();
    let err = account::get(&pool, nobody).await.unwrap_err();
    assert_eq!(err.code(), "billing_account_not_found");
    assert!(matches!(err, DomainError::NotFound { .. }));
    assert_eq!(
        account::mark_delinquent(&pool, nobody)
            .await
            .unwrap_err()
            .code(),
        "billing_account_not_found"
    );
    assert_eq!(
        account::set_mode(&pool, nobody, BillingMode::Postpaid)
            .await
            .unwrap_err()
            .code(),
        "billing_account_not_found"
    );

    // Sweeps page through every org with an account (admission created one).
    let mut all = vec![org, broke, invoiced, unknown];
    all.sort();
    assert_eq!(account::orgs(&pool, None, 100).await.unwrap(), all);
    assert_eq!(account::orgs(&pool, None, 2).await.unwrap(), all[..2]);
    assert_eq!(
        account::orgs(&pool, Some(all[1]), 2).await.unwrap(),
        all[2..]
    );
    assert_eq!(
        account::orgs(&pool, Some(all[2]), 2).await.unwrap(),
        all[3..]
    );

    if metering_ready() {
        let b = account::balance(&pool, org).await.unwrap();
        assert_eq!(
            (b.credit_minor, b.unbilled_minor, b.available_minor),
            (1000, 0, 1000)
        );
        assert_eq!((b.receivable_minor, b.spent_this_month_minor), (0, 0));
        assert_eq!(b.standing, Standing::Good);
        let b = account::balance(&pool, broke).await.unwrap();
        assert_eq!(
            (b.available_minor, b.standing),
            (0, Standing::CreditExhausted)
        );
        let b = account::balance(&pool, invoiced).await.unwrap();
        assert_eq!((b.available_minor, b.standing), (0, Standing::Good));
        // A goodwill grant restores the broke org at once, and is idempotent by key.
        let b = account::grant_credit(&pool, broke, 300, "sorry-1", "goodwill")
            .await
            .unwrap();
        assert_eq!((b.credit_minor, b.standing), (300, Standing::Good));
        account::grant_credit(&pool, broke, 300, "sorry-1", "goodwill")
            .await
            .unwrap();
        assert_eq!(bal(&pool, Account::PrepaidCredit(broke)).await, -300);
        account::admit(&mut conn, broke).await.unwrap();
        assert_eq!(
            kinds(account::events(&pool, broke, 0).await.unwrap()),
            ["credit_restored"]
        );
        // A limit of 0 stops even a prepaid org with credit; removing it lifts that.
        let a = account::set_spend_limit(&pool, broke, Some(0))
            .await
            .unwrap();
        assert_eq!(a.monthly_spend_limit_minor, Some(0));
        assert_eq!(
            account::admit(&mut conn, broke).await.unwrap_err().code(),
            SPEND_LIMIT_REACHED
        );
        account::set_spend_limit(&pool, broke, None).await.unwrap();
        account::admit(&mut conn, broke).await.unwrap();
    } else {
        skip("balance of a fresh account");
    }
    drop(conn);
    common::assert_ledger_sound(&pool).await;
}

/// Records `tokens` output tokens (60 minor units per million) now, in the current month.
async fn use_tokens(pool: &PgPool, org: OrgId, tokens: i64) {
    let month = Period::month_of(Utc::now());
    let at = (Utc::now() - Span::seconds(1)).max(month.start);
    let mut conn = pool.acquire().await.unwrap();
    let new = usage::record(
        &mut conn,
        &UsageEvent {
            id: format!("test/{}", Uuid::now_v7()),
            org,
            project: None,
            meter: "output_tokens".into(),
            sku: String::new(),
            quantity: Decimal::from(tokens),
            started_at: at,
            ended_at: at,
            source: "test".into(),
        },
    )
    .await
    .unwrap();
    assert!(new);
}

#[tokio::test]
async fn usage_burns_credit_and_each_threshold_is_recorded_once() {
    if !metering_ready() {
        return skip("usage burns credit");
    }
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    account::ensure(&pool, org, BillingMode::Prepaid, 1000)
        .await
        .unwrap();
    let thresholds = [50, 20];
    let change = account::refresh_standing(&pool, org, &thresholds)
        .await
        .unwrap();
    assert_eq!(
        (change.before, change.after, change.events.len()),
        (Standing::Good, Standing::Good, 0)
    );

    // 600.00006 exact: unbilled rounds up once, to 601.
    use_tokens(&pool, org, 10_000_001).await;
    let b = account::balance(&pool, org).await.unwrap();
    assert_eq!(
        (b.credit_minor, b.unbilled_minor, b.available_minor),
        (1000, 601, 399)
    );
    assert_eq!(b.spent_this_month_minor, 601);
    let change = account::refresh_standing(&pool, org, &thresholds)
        .await
        .unwrap();
    assert_eq!(change.events, ["credit_below_50_percent"]);
    assert_eq!(change.after, Standing::Good);
    let change = account::refresh_standing(&pool, org, &thresholds)
        .await
        .unwrap();
    assert!(change.events.is_empty(), "once: {change:?}");

    use_tokens(&pool, org, 5_000_000).await; // 300 more: 99 left, below 20 %
    let change = account::refresh_standing(&pool, org, &thresholds)
        .await
        .unwrap();
    assert_eq!(change.events, ["credit_below_20_percent"]);
    let mut conn = pool.acquire().await.unwrap();
    account::admit(&mut conn, org)
        .await
        .expect("admission reads stored standing: still good");

    use_tokens(&pool, org, 2_000_000).await; // 120 more: 21 over
    // Admission reads only the row: exhaustion shows once standing is refreshed.
    account::admit(&mut conn, org).await.unwrap();
    let change = account::refresh_standing(&pool, org, &thresholds)
        .await
        .unwrap();
    assert_eq!(
        (change.before, change.after),
        (Standing::Good, Standing::CreditExhausted)
    );
    assert_eq!(change.events, ["credit_exhausted"]);
    let since = account::get(&pool, org)
        .await
        .unwrap()
        .exhausted_since
        .expect("exhausted");
    assert_eq!(
        account::admit(&mut conn, org).await.unwrap_err().code(),
        CREDIT_EXHAUSTED
    );
    let b = account::balance(&pool, org).await.unwrap();
    assert_eq!(
        (b.available_minor, b.standing),
        (-21, Standing::CreditExhausted)
    );
    let change = account::refresh_standing(&pool, org, &thresholds)
        .await
        .unwrap();
    assert!(change.events.is_empty(), "{change:?}");
    assert_eq!(
        account::get(&pool, org).await.unwrap().exhausted_since,
        Some(since),
        "the first instant stays"
    );
    assert_eq!(
        account::past_grace(&pool, Duration::ZERO).await.unwrap(),
        [org]
    );

    // A grant restores credit and starts a new cycle: thresholds are of the credit after it.
    let b = account::grant_credit(&pool, org, 1000, "goodwill-1", "goodwill")
        .await
        .unwrap();
    assert_eq!(
        (b.credit_minor, b.available_minor, b.standing),
        (2000, 979, Standing::Good)
    );
    assert_eq!(
        account::get(&pool, org).await.unwrap().exhausted_since,
        None
    );
    account::admit(&mut conn, org).await.unwrap();
    let change = account::refresh_standing(&pool, org, &thresholds)
        .await
        .unwrap();
    assert_eq!(change.events, ["credit_below_50_percent"], "979 of 2000");

    let events = account::events(&pool, org, 0).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "credit_below_50_percent",
            "credit_below_20_percent",
            "credit_exhausted",
            "credit_restored",
            "credit_below_50_percent",
        ]
    );
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM billing.account_events WHERE org_id = $1 ORDER BY seq")
            .bind(org.uuid())
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(keys[0], format!("{org}/credit_below_50_percent/1"));
    assert_eq!(keys[4], format!("{org}/credit_below_50_percent/2"));

    // The spend limit: 1021 spent this month.
    account::set_spend_limit(&pool, org, Some(1021))
        .await
        .unwrap();
    assert_eq!(
        account::admit(&mut conn, org).await.unwrap_err().code(),
        SPEND_LIMIT_REACHED
    );
    assert_eq!(
        account::balance(&pool, org).await.unwrap().standing,
        Standing::SpendLimitReached
    );
    account::set_spend_limit(&pool, org, Some(1022))
        .await
        .unwrap();
    account::admit(&mut conn, org).await.unwrap();
    let kinds: Vec<_> = account::events(&pool, org, events[4].seq)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["spend_limit_reached"]);

    // Finalized invoices of the month move usage from unbilled to spent (raw rows here: the
    // invoice module writes them for real).
    let month = Period::month_of(Utc::now());
    for (kind, state, total) in [
        ("invoice", "open", 500_i64),
        ("credit_note", "paid", 100),
        ("invoice", "draft", 400),
        ("invoice", "void", 400),
    ] {
        sqlx::query(
            "INSERT INTO billing.invoices (id, org_id, period_start, period_end, kind, state,
                                           currency, total_minor)
             VALUES ($1, $2, $3, $4, $5, $6, 'USD', $7)",
        )
        .bind(Uuid::now_v7())
        .bind(org.uuid())
        .bind(month.start)
        .bind(month.end)
        .bind(kind)
        .bind(state)
        .bind(total)
        .execute(&pool)
        .await
        .unwrap();
    }
    let b = account::balance(&pool, org).await.unwrap();
    assert_eq!(b.unbilled_minor, 1021 - 400);
    assert_eq!(b.spent_this_month_minor, 1021);

    // Postpaid is never credit-exhausted.
    use_tokens(&pool, org, 100_000_000).await; // 6000 more
    account::set_spend_limit(&pool, org, None).await.unwrap();
    let change = account::refresh_standing(&pool, org, &thresholds)
        .await
        .unwrap();
    assert_eq!(change.after, Standing::CreditExhausted);
    let a = account::set_mode(&pool, org, BillingMode::Postpaid)
        .await
        .unwrap();
    assert_eq!((a.mode, a.exhausted_since), (BillingMode::Postpaid, None));
    assert_eq!(
        account::balance(&pool, org).await.unwrap().standing,
        Standing::Good
    );
    account::admit(&mut conn, org).await.unwrap();
    drop(conn);
    common::assert_ledger_sound(&pool).await;
}

/// A rated line of `amount` (exact) output tokens for `org`'s `period`, as metering writes it.
async fn rated_line(pool: &PgPool, org: OrgId, period: Period, amount: &str) {
    sqlx::query(
        "INSERT INTO billing.rated_lines (id, run_id, org_id, period_start, period_end, meter, sku,
             price_version, quantity, amount_exact, currency, kind, corrects, reason, created_by)
         VALUES ($1, $2, $3, $4, $5, 'output_tokens', '', 1, 1, $6, 'USD', 'original', NULL,
                 'test', 'test')",
    )
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .bind(amount.parse::<Decimal>().unwrap())
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn unbilled_usage_of_a_past_period_counts_until_its_invoice_is_finalized() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    account::ensure(&pool, org, BillingMode::Prepaid, 1000)
        .await
        .unwrap();
    let month = Period::month_of(Utc::now());
    let last_month = Period::month_of(month.start - Span::seconds(1));
    // Last month's usage, rated at its close, its invoice not finalized yet (the 1st of the
    // month until the cycle finalizes it): still unbilled, and it burns credit.
    rated_line(&pool, org, last_month, "250.4").await;
    // This month's usage, rated live: 600.00006.
    use_tokens(&pool, org, 10_000_001).await;
    let b = account::balance(&pool, org).await.unwrap();
    assert_eq!(
        (b.credit_minor, b.unbilled_minor, b.available_minor),
        (1000, 851, 149),
        "ceil(600.00006 + 250.4)"
    );
    assert_eq!(
        b.spent_this_month_minor, 601,
        "last month's usage is not this month's spend"
    );
    // A draft is not finalized: still unbilled.
    let draft = platform_billing::invoice::build_draft(&pool, org, last_month)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        account::balance(&pool, org).await.unwrap().unbilled_minor,
        851
    );
    // Finalized: on the invoice (here paid by credit), no longer unbilled.
    let inv = platform_billing::invoice::finalize(&pool, draft.id)
        .await
        .unwrap();
    assert_eq!(inv.credit_applied_minor, 250);
    let b = account::balance(&pool, org).await.unwrap();
    assert_eq!(
        (b.credit_minor, b.unbilled_minor, b.available_minor),
        (750, 601, 149)
    );
    // A late adjustment of the finalized period is unbilled until its own invoice.
    rated_line_adjustment(&pool, org, last_month, "10").await;
    assert_eq!(
        account::balance(&pool, org).await.unwrap().unbilled_minor,
        611
    );
    // Lines written off on a void invoice are never billed: not unbilled either.
    let draft = platform_billing::invoice::build_draft(&pool, org, last_month)
        .await
        .unwrap()
        .unwrap();
    platform_billing::invoice::void(&pool, draft.id)
        .await
        .unwrap();
    assert_eq!(
        account::balance(&pool, org).await.unwrap().unbilled_minor,
        601
    );
    common::assert_ledger_sound(&pool).await;
}

/// An adjustment of `amount` to the original output-token line of `org`'s `period`.
async fn rated_line_adjustment(pool: &PgPool, org: OrgId, period: Period, amount: &str) {
    sqlx::query(
        "INSERT INTO billing.rated_lines (id, run_id, org_id, period_start, period_end, meter, sku,
             price_version, quantity, amount_exact, currency, kind, corrects, reason, created_by)
         SELECT $1, $2, $3, $4, $5, 'output_tokens', '', 1, 0, $6, 'USD', 'adjustment', id,
                'test', 'test'
         FROM billing.rated_lines WHERE org_id = $3 AND period_start = $4 AND period_end = $5
           AND kind = 'original'",
    )
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .bind(amount.parse::<Decimal>().unwrap())
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn refresh_standing_computes_the_balance_under_the_row_lock() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    // Prepaid without credit: exhausted.
    account::ensure(&pool, org, BillingMode::Prepaid, 0)
        .await
        .unwrap();
    account::refresh_standing(&pool, org, &[]).await.unwrap();
    assert_eq!(
        account::balance(&pool, org).await.unwrap().standing,
        Standing::CreditExhausted
    );
    // Someone holds the account row (another refresh, a mode change) ...
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM billing.accounts WHERE org_id = $1 FOR UPDATE")
        .bind(org.uuid())
        .execute(&mut *holder)
        .await
        .unwrap();
    // ... while a refresh starts and waits for it.
    let refresh = {
        let pool = pool.clone();
        tokio::spawn(async move { account::refresh_standing(&pool, org, &[]).await })
    };
    let mut waiting = false;
    for _ in 0..200 {
        waiting = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND query LIKE '%billing.accounts%FOR UPDATE%')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(waiting, "the refresh waits for the account row");
    // A top-up commits meanwhile.
    post(&pool, &grant("topup/while-waiting", org, 5000))
        .await
        .unwrap();
    holder.commit().await.unwrap();
    // The refresh computed after it had the row: it saw the top-up and stored good standing.
    let change = refresh.await.unwrap().unwrap();
    assert_eq!(
        (change.before, change.after),
        (Standing::CreditExhausted, Standing::Good)
    );
    let a = account::get(&pool, org).await.unwrap();
    assert_eq!(a.exhausted_since, None);
    common::assert_ledger_sound(&pool).await;
}
