//! The double-entry ledger. Every transaction's entries sum to zero (debits positive, credits
//! negative) in one currency; the database checks it at commit and refuses UPDATE, DELETE and
//! TRUNCATE. A correction is a new transaction naming the one it corrects. A transaction's key
//! makes posting idempotent: the same key twice posts once.
//!
//! Accounts: `receivable` and `prepaid_credit` per org; `revenue`, `cash` and `promotions`
//! platform-wide. Signs: an asset or expense (receivable, cash, promotions) grows by debits;
//! a liability or income (prepaid_credit, revenue) by credits.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_ids::OrgId;
use shared_kernel::DomainResult;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "account", content = "org", rename_all = "snake_case")]
pub enum Account {
    Receivable(OrgId),
    PrepaidCredit(OrgId),
    Revenue,
    Cash,
    Promotions,
}

/// One entry: positive debits, negative credits, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub account: Account,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTransaction {
    /// Idempotency key: `invoice/<id>/finalize`, `topup/<key>`, `trial/<org>`.
    pub key: String,
    pub org: Option<OrgId>,
    pub description: String,
    pub corrects: Option<Uuid>,
    pub currency: String,
    pub entries: Vec<Entry>,
}

/// A posting's outcome: the transaction's id, and whether it was posted now (false: the key was
/// posted before, and nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posted {
    pub id: Uuid,
    pub new: bool,
}

/// Posts a balanced transaction in the caller's transaction. Refuses (`unbalanced_transaction`)
/// entries that do not sum to zero, before the database would.
pub async fn post(conn: &mut PgConnection, tx: &NewTransaction) -> DomainResult<Posted> {
    unimplemented!("ledger::post")
}

/// The sum of an account's entries (debits positive) in `currency`.
pub async fn balance(
    conn: &mut PgConnection,
    account: Account,
    currency: &str,
) -> DomainResult<i64> {
    unimplemented!("ledger::balance")
}

/// A posted transaction with its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: Uuid,
    pub key: String,
    pub org: Option<OrgId>,
    pub description: String,
    pub corrects: Option<Uuid>,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub entries: Vec<Entry>,
}

/// An org's transactions, newest first.
pub async fn transactions(pool: &PgPool, org: OrgId, limit: i64) -> DomainResult<Vec<Transaction>> {
    unimplemented!("ledger::transactions")
}

/// Checks the whole ledger: every transaction balances in one currency and has entries. Returns
/// one line per violation (empty: sound). Tests call it after every billing test.
pub async fn check_invariants(pool: &PgPool) -> DomainResult<Vec<String>> {
    unimplemented!("ledger::check_invariants")
}
