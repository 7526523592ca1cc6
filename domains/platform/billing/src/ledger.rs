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
use shared_kernel::{DomainError, DomainResult};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
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

impl Account {
    /// The `(account, org_id)` columns of `billing.ledger_entries`.
    pub fn columns(self) -> (&'static str, Option<Uuid>) {
        match self {
            Self::Receivable(org) => ("receivable", Some(org.uuid())),
            Self::PrepaidCredit(org) => ("prepaid_credit", Some(org.uuid())),
            Self::Revenue => ("revenue", None),
            Self::Cash => ("cash", None),
            Self::Promotions => ("promotions", None),
        }
    }

    /// The account of `(account, org_id)` columns; `None` for a combination the schema refuses.
    pub fn from_columns(account: &str, org: Option<Uuid>) -> Option<Self> {
        Some(match (account, org) {
            ("receivable", Some(o)) => Self::Receivable(o.into()),
            ("prepaid_credit", Some(o)) => Self::PrepaidCredit(o.into()),
            ("revenue", None) => Self::Revenue,
            ("cash", None) => Self::Cash,
            ("promotions", None) => Self::Promotions,
            _ => return None,
        })
    }
}

fn validate(tx: &NewTransaction) -> DomainResult<()> {
    if tx.key.is_empty() || tx.key.len() > 200 {
        return Err(DomainError::invalid(
            "invalid_key",
            "a ledger transaction's key is 1 to 200 bytes",
        ));
    }
    let currency_ok = tx.currency.len() == 3 && tx.currency.chars().all(|c| c.is_ascii_uppercase());
    if !currency_ok {
        return Err(DomainError::invalid(
            "invalid_currency",
            format!(
                "currency '{}' is not three upper-case letters",
                tx.currency.chars().take(16).collect::<String>()
            ),
        ));
    }
    if tx.entries.is_empty() {
        return Err(DomainError::invalid(
            "empty_transaction",
            format!("transaction {}: a posting has entries", tx.key),
        ));
    }
    if let Some(e) = tx.entries.iter().find(|e| e.amount_minor == 0) {
        return Err(DomainError::invalid(
            "invalid_amount",
            format!("transaction {}: entry of {:?} is zero", tx.key, e.account),
        ));
    }
    // i128: no sum of i64 entries overflows it, so a huge pair cannot wrap into "balanced".
    let total: i128 = tx.entries.iter().map(|e| i128::from(e.amount_minor)).sum();
    if total != 0 {
        return Err(DomainError::invalid(
            "unbalanced_transaction",
            format!(
                "transaction {}: entries sum to {total} {}, not 0",
                tx.key, tx.currency
            ),
        ));
    }
    Ok(())
}

/// Entries as a comparable multiset (order of posting does not matter).
fn canonical(entries: &[Entry]) -> Vec<(&'static str, Option<Uuid>, i64)> {
    let mut v: Vec<_> = entries
        .iter()
        .map(|e| {
            let (a, o) = e.account.columns();
            (a, o, e.amount_minor)
        })
        .collect();
    v.sort();
    v
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    transaction_id: Uuid,
    account: String,
    org_id: Option<Uuid>,
    amount_minor: i64,
    currency: String,
}

impl EntryRow {
    fn entry(&self) -> DomainResult<Entry> {
        let account = Account::from_columns(&self.account, self.org_id).ok_or_else(|| {
            DomainError::conflict(
                "ledger_corrupt",
                format!(
                    "ledger entry of transaction {} names account {} with org {:?}",
                    self.transaction_id, self.account, self.org_id
                ),
            )
        })?;
        Ok(Entry {
            account,
            amount_minor: self.amount_minor,
        })
    }
}

async fn entries_of(conn: &mut PgConnection, ids: &[Uuid]) -> DomainResult<Vec<EntryRow>> {
    Ok(sqlx::query_as(
        "SELECT transaction_id, account, org_id, amount_minor, currency
         FROM billing.ledger_entries WHERE transaction_id = ANY($1) ORDER BY id",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// Posts a balanced transaction in the caller's transaction. Refuses (`unbalanced_transaction`)
/// entries that do not sum to zero, before the database would.
///
/// Idempotent by `key`: a key posted before answers `Posted { new: false }` with the first
/// posting's id, provided the entries (and currency) are the same; different entries under a used
/// key are refused (`ledger_key_reused`). `corrects` must name a posted transaction
/// (`ledger_transaction_not_found`).
pub async fn post(conn: &mut PgConnection, tx: &NewTransaction) -> DomainResult<Posted> {
    validate(tx)?;
    if let Some(corrected) = tx.corrects {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM billing.ledger_transactions WHERE id = $1)",
        )
        .bind(corrected)
        .fetch_one(&mut *conn)
        .await?;
        if !exists {
            return Err(DomainError::not_found(
                "ledger_transaction_not_found",
                format!(
                    "transaction {} corrects {corrected}, which was never posted",
                    tx.key
                ),
            ));
        }
    }
    let id = Uuid::now_v7();
    // A concurrent posting of the same key waits here for the other to commit, then does nothing.
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO billing.ledger_transactions (id, key, org_id, description, corrects)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING RETURNING id",
    )
    .bind(id)
    .bind(&tx.key)
    .bind(tx.org.map(OrgId::uuid))
    .bind(&tx.description)
    .bind(tx.corrects)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_none() {
        let first: Uuid =
            sqlx::query_scalar("SELECT id FROM billing.ledger_transactions WHERE key = $1")
                .bind(&tx.key)
                .fetch_one(&mut *conn)
                .await?;
        let rows = entries_of(conn, &[first]).await?;
        let same_currency = rows.iter().all(|r| r.currency == tx.currency);
        let posted = rows
            .iter()
            .map(EntryRow::entry)
            .collect::<DomainResult<Vec<_>>>()?;
        if !same_currency || canonical(&posted) != canonical(&tx.entries) {
            return Err(DomainError::conflict(
                "ledger_key_reused",
                format!(
                    "ledger key {} was posted before with different entries",
                    tx.key
                ),
            ));
        }
        return Ok(Posted {
            id: first,
            new: false,
        });
    }
    let (mut accounts, mut orgs, mut amounts) = (vec![], vec![], vec![]);
    for e in &tx.entries {
        let (a, o) = e.account.columns();
        accounts.push(a);
        orgs.push(o);
        amounts.push(e.amount_minor);
    }
    sqlx::query(
        "INSERT INTO billing.ledger_entries (transaction_id, account, org_id, amount_minor, currency)
         SELECT $1, a, o, m, $5 FROM UNNEST($2::text[], $3::uuid[], $4::bigint[]) AS u(a, o, m)",
    )
    .bind(id)
    .bind(accounts)
    .bind(orgs)
    .bind(amounts)
    .bind(&tx.currency)
    .execute(&mut *conn)
    .await?;
    Ok(Posted { id, new: true })
}

/// The sum of an account's entries (debits positive) in `currency`.
pub async fn balance(
    conn: &mut PgConnection,
    account: Account,
    currency: &str,
) -> DomainResult<i64> {
    let (name, org) = account.columns();
    let sum: i64 = match org {
        Some(org) => {
            sqlx::query_scalar(
                "SELECT coalesce(sum(amount_minor), 0)::bigint FROM billing.ledger_entries
                 WHERE account = $1 AND org_id = $2 AND currency = $3",
            )
            .bind(name)
            .bind(org)
            .bind(currency)
            .fetch_one(conn)
            .await?
        }
        None => {
            sqlx::query_scalar(
                "SELECT coalesce(sum(amount_minor), 0)::bigint FROM billing.ledger_entries
                 WHERE account = $1 AND org_id IS NULL AND currency = $2",
            )
            .bind(name)
            .bind(currency)
            .fetch_one(conn)
            .await?
        }
    };
    Ok(sum)
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

/// An org's transactions, newest first: those posted for it and any with an entry on one of its
/// accounts. `limit` is clamped to 1..=1000.
pub async fn transactions(pool: &PgPool, org: OrgId, limit: i64) -> DomainResult<Vec<Transaction>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        key: String,
        org_id: Option<Uuid>,
        description: String,
        corrects: Option<Uuid>,
        created_at: DateTime<Utc>,
    }
    let mut conn = pool.acquire().await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, key, org_id, description, corrects, created_at
         FROM billing.ledger_transactions t
         WHERE t.org_id = $1
            OR EXISTS (SELECT 1 FROM billing.ledger_entries e
                       WHERE e.transaction_id = t.id AND e.org_id = $1)
         ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(org.uuid())
    .bind(limit.clamp(1, 1000))
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut by_tx: HashMap<Uuid, (String, Vec<Entry>)> = HashMap::new();
    for e in entries_of(&mut conn, &ids).await? {
        let entry = e.entry()?;
        by_tx
            .entry(e.transaction_id)
            .or_insert_with(|| (e.currency.clone(), vec![]))
            .1
            .push(entry);
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let (currency, entries) = by_tx.remove(&r.id).unwrap_or_default();
            Transaction {
                id: r.id,
                key: r.key,
                org: r.org_id.map(OrgId::from),
                description: r.description,
                corrects: r.corrects,
                currency,
                created_at: r.created_at,
                entries,
            }
        })
        .collect())
}

/// Checks the whole ledger: every transaction balances in one currency and has entries. Returns
/// one line per violation (empty: sound). Tests call it after every billing test.
///
/// Checked: every transaction has at least two entries, they sum to zero, in one currency; a
/// correction names a posted transaction; every entry belongs to a posted transaction. (The
/// database enforces most of it, but not a transaction with no entries at all, and none of it
/// while its triggers are off, e.g. under `session_replication_role = replica`.)
pub async fn check_invariants(pool: &PgPool) -> DomainResult<Vec<String>> {
    let mut problems: Vec<String> = sqlx::query_scalar(
        "SELECT format('transaction %s (%s): %s entries, sum %s, %s currencies',
                       t.id, t.key, count(e.id), coalesce(sum(e.amount_minor), 0),
                       count(DISTINCT e.currency))
         FROM billing.ledger_transactions t
         LEFT JOIN billing.ledger_entries e ON e.transaction_id = t.id
         GROUP BY t.id, t.key
         HAVING count(e.id) < 2 OR coalesce(sum(e.amount_minor), 0) <> 0
             OR count(DISTINCT e.currency) > 1
         ORDER BY t.id",
    )
    .fetch_all(pool)
    .await?;
    problems.extend(
        sqlx::query_scalar::<_, String>(
            "SELECT format('transaction %s (%s) corrects %s, which does not exist',
                           t.id, t.key, t.corrects)
             FROM billing.ledger_transactions t
             WHERE t.corrects IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM billing.ledger_transactions c WHERE c.id = t.corrects)
             ORDER BY t.id",
        )
        .fetch_all(pool)
        .await?,
    );
    problems.extend(
        sqlx::query_scalar::<_, String>(
            "SELECT format('entry %s names transaction %s, which does not exist',
                           e.id, e.transaction_id)
             FROM billing.ledger_entries e
             WHERE NOT EXISTS (SELECT 1 FROM billing.ledger_transactions t
                               WHERE t.id = e.transaction_id)
             ORDER BY e.id",
        )
        .fetch_all(pool)
        .await?,
    );
    Ok(problems)
}
