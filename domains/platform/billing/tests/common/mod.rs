//! Helpers every billing test file shares: `mod common;` then
//! `common::assert_ledger_sound(&pool).await` at the end of each test.
#![allow(dead_code)]

use platform_billing::ledger::{self, Account};
use sqlx::PgPool;
use uuid::Uuid;

/// Fails the test unless the ledger is sound: [`ledger::check_invariants`] finds nothing, every
/// currency's entries sum to zero, and [`ledger::balance`] of every account equals the sum of its
/// entries.
pub async fn assert_ledger_sound(pool: &PgPool) {
    let problems = ledger::check_invariants(pool)
        .await
        .expect("check the ledger");
    assert!(
        problems.is_empty(),
        "the ledger is unsound:\n{}",
        problems.join("\n")
    );
    let unbalanced: Vec<(String, i64)> = sqlx::query_as(
        "SELECT currency, sum(amount_minor)::bigint FROM billing.ledger_entries
         GROUP BY currency HAVING sum(amount_minor) <> 0",
    )
    .fetch_all(pool)
    .await
    .expect("sum the ledger");
    assert!(
        unbalanced.is_empty(),
        "the ledger's entries do not sum to 0: {unbalanced:?}"
    );
    let sums: Vec<(String, Option<Uuid>, String, i64)> = sqlx::query_as(
        "SELECT account, org_id, currency, sum(amount_minor)::bigint FROM billing.ledger_entries
         GROUP BY account, org_id, currency",
    )
    .fetch_all(pool)
    .await
    .expect("sum the accounts");
    let mut conn = pool.acquire().await.expect("a connection");
    for (name, org, currency, sum) in sums {
        let account = Account::from_columns(&name, org)
            .unwrap_or_else(|| panic!("entry of unknown account {name} / {org:?}"));
        let balance = ledger::balance(&mut conn, account, &currency)
            .await
            .expect("balance");
        assert_eq!(balance, sum, "balance of {account:?} in {currency}");
    }
}
