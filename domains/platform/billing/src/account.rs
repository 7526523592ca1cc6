//! Billing accounts: one per org. Mode `prepaid` (usage burns credit; the default for sign-ups,
//! with a trial credit) or `postpaid` (invoiced monthly; finance sets it). An optional monthly
//! spend limit. Standing is what admission asks before a product allocates: good, credit
//! exhausted, spend limit reached, or delinquent. Money lives in the ledger; this table holds
//! settings and the instants standing changed.
//!
//! An org without an account when it first allocates gets one from [`admit`]: `postpaid`, no
//! credit, so everything that launches is billed.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use shared_ids::OrgId;
use shared_kernel::{DomainError, DomainResult};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

use crate::Period;
use crate::ledger::{self, Account, Entry, NewTransaction};

/// The credit thresholds (percent remaining) the enforcement sweep records events for.
pub const DEFAULT_THRESHOLDS_PERCENT: &[u8] = &[50, 20];

/// Admission refusals (stable API codes).
pub const CREDIT_EXHAUSTED: &str = "credit_exhausted";
pub const SPEND_LIMIT_REACHED: &str = "spend_limit_reached";
pub const ORG_DELINQUENT: &str = "org_delinquent";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingMode {
    Prepaid,
    Postpaid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    Good,
    CreditExhausted,
    SpendLimitReached,
    Delinquent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingAccount {
    pub org: OrgId,
    pub mode: BillingMode,
    pub currency: String,
    pub monthly_spend_limit_minor: Option<i64>,
    pub exhausted_since: Option<DateTime<Utc>>,
    pub delinquent_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Where an org stands now, in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub org: OrgId,
    pub mode: BillingMode,
    pub currency: String,
    /// Prepaid credit on the ledger (top-ups and grants, less what finalized invoices used).
    pub credit_minor: i64,
    /// Usage rated but not yet on a finalized invoice, of every period: the current month live up
    /// to now, and earlier periods' rated lines no finalized invoice holds yet (rounded once, up).
    pub unbilled_minor: i64,
    /// `credit - unbilled` for prepaid; what may still be spent. Postpaid: the same formula (its
    /// credit is usually 0, so this is minus the unbilled usage); a postpaid org is bounded by its
    /// spend limit, not by this.
    pub available_minor: i64,
    /// Spent in the current calendar month (finalized and unbilled), against the spend limit.
    pub spent_this_month_minor: i64,
    pub monthly_spend_limit_minor: Option<i64>,
    /// Owed on open invoices.
    pub receivable_minor: i64,
    pub standing: Standing,
}

/// The row as stored (with the reason `exhausted_since` is set, which [`BillingAccount`] omits).
#[derive(sqlx::FromRow)]
struct Row {
    org_id: Uuid,
    mode: String,
    currency: String,
    monthly_spend_limit_minor: Option<i64>,
    exhausted_since: Option<DateTime<Utc>>,
    exhausted_reason: Option<String>,
    delinquent_since: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

const COLUMNS: &str = "org_id, mode, currency, monthly_spend_limit_minor, exhausted_since, \
                       exhausted_reason, delinquent_since, created_at";

impl BillingMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Prepaid => "prepaid",
            Self::Postpaid => "postpaid",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "postpaid" {
            Self::Postpaid
        } else {
            Self::Prepaid
        }
    }
}

impl Row {
    fn mode(&self) -> BillingMode {
        BillingMode::parse(&self.mode)
    }

    fn account(&self) -> BillingAccount {
        BillingAccount {
            org: self.org_id.into(),
            mode: self.mode(),
            currency: self.currency.clone(),
            monthly_spend_limit_minor: self.monthly_spend_limit_minor,
            exhausted_since: self.exhausted_since,
            delinquent_since: self.delinquent_since,
            created_at: self.created_at,
        }
    }

    /// Standing as admission sees it: from the stored instants only.
    fn standing(&self) -> Standing {
        if self.delinquent_since.is_some() {
            return Standing::Delinquent;
        }
        match (self.exhausted_since, self.exhausted_reason.as_deref()) {
            (Some(_), Some(CREDIT_EXHAUSTED)) if self.mode() == BillingMode::Prepaid => {
                Standing::CreditExhausted
            }
            (Some(_), Some(SPEND_LIMIT_REACHED)) => Standing::SpendLimitReached,
            _ => Standing::Good,
        }
    }
}

fn not_found(org: OrgId) -> DomainError {
    DomainError::not_found(
        "billing_account_not_found",
        format!("org {org} has no billing account"),
    )
}

async fn row(conn: &mut PgConnection, org: OrgId, lock: bool) -> DomainResult<Option<Row>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM billing.accounts WHERE org_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(sqlx::query_as(&sql)
        .bind(org.uuid())
        .fetch_optional(conn)
        .await?)
}

async fn record_event(
    conn: &mut PgConnection,
    org: OrgId,
    kind: &str,
    cycle: &str,
    message: &str,
) -> DomainResult<bool> {
    let done = sqlx::query(
        "INSERT INTO billing.account_events (key, org_id, kind, message) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(format!("{org}/{kind}/{cycle}"))
    .bind(org.uuid())
    .bind(kind)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The account of `org`, created on first call in `mode` with `trial_credit_minor` granted once
/// (ledger: promotions → prepaid credit, key `trial/<org>`). Idempotent.
///
/// The trial is posted only by the call that creates the account, in the same transaction; a
/// later call returns the account as it is (its mode and credit unchanged). A prepaid account
/// created without credit starts exhausted.
pub async fn ensure(
    pool: &PgPool,
    org: OrgId,
    mode: BillingMode,
    trial_credit_minor: i64,
) -> DomainResult<BillingAccount> {
    if trial_credit_minor < 0 {
        return Err(DomainError::invalid(
            "invalid_amount",
            format!("a trial credit is at least 0, not {trial_credit_minor}"),
        ));
    }
    let mut tx = pool.begin().await?;
    let exhausted = mode == BillingMode::Prepaid && trial_credit_minor == 0;
    let created: Option<String> = sqlx::query_scalar(
        "INSERT INTO billing.accounts (org_id, mode, exhausted_since, exhausted_reason)
         VALUES ($1, $2, CASE WHEN $3 THEN now() END, CASE WHEN $3 THEN $4 END)
         ON CONFLICT (org_id) DO NOTHING RETURNING currency",
    )
    .bind(org.uuid())
    .bind(mode.as_str())
    .bind(exhausted)
    .bind(CREDIT_EXHAUSTED)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(currency) = created
        && trial_credit_minor > 0
    {
        ledger::post(
            &mut tx,
            &NewTransaction {
                key: format!("trial/{org}"),
                org: Some(org),
                description: "trial credit".into(),
                corrects: None,
                currency,
                entries: vec![
                    Entry {
                        account: Account::Promotions,
                        amount_minor: trial_credit_minor,
                    },
                    Entry {
                        account: Account::PrepaidCredit(org),
                        amount_minor: -trial_credit_minor,
                    },
                ],
            },
        )
        .await?;
    }
    let account = row(&mut tx, org, false)
        .await?
        .ok_or_else(|| not_found(org))?;
    tx.commit().await?;
    Ok(account.account())
}

/// `billing_account_not_found` when the org has none.
pub async fn get(pool: &PgPool, org: OrgId) -> DomainResult<BillingAccount> {
    let mut conn = pool.acquire().await?;
    Ok(row(&mut conn, org, false)
        .await?
        .ok_or_else(|| not_found(org))?
        .account())
}

/// Switches the mode and re-evaluates standing (a postpaid org is never credit-exhausted).
pub async fn set_mode(
    pool: &PgPool,
    org: OrgId,
    mode: BillingMode,
) -> DomainResult<BillingAccount> {
    let done =
        sqlx::query("UPDATE billing.accounts SET mode = $2, updated_at = now() WHERE org_id = $1")
            .bind(org.uuid())
            .bind(mode.as_str())
            .execute(pool)
            .await?;
    if done.rows_affected() == 0 {
        return Err(not_found(org));
    }
    refresh(pool, org, &[]).await?;
    get(pool, org).await
}

/// `None` removes the limit. Re-evaluates standing at once.
pub async fn set_spend_limit(
    pool: &PgPool,
    org: OrgId,
    limit_minor: Option<i64>,
) -> DomainResult<BillingAccount> {
    if let Some(limit) = limit_minor
        && limit < 0
    {
        return Err(DomainError::invalid(
            "invalid_spend_limit",
            format!("a monthly spend limit is at least 0, not {limit}"),
        ));
    }
    let done = sqlx::query(
        "UPDATE billing.accounts SET monthly_spend_limit_minor = $2, updated_at = now()
         WHERE org_id = $1",
    )
    .bind(org.uuid())
    .bind(limit_minor)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(not_found(org));
    }
    refresh(pool, org, &[]).await?;
    get(pool, org).await
}

/// Credit given by the platform (finance, a goodwill credit): promotions → prepaid credit.
/// Idempotent by `key` (ledger key `grant/<org>/<key>`). Re-evaluates standing: a grant that
/// restores credit clears the exhaustion.
pub async fn grant_credit(
    pool: &PgPool,
    org: OrgId,
    amount_minor: i64,
    key: &str,
    description: &str,
) -> DomainResult<Balance> {
    if amount_minor <= 0 {
        return Err(DomainError::invalid(
            "invalid_amount",
            format!("a credit grant is more than 0, not {amount_minor}"),
        ));
    }
    if key.is_empty() {
        return Err(DomainError::invalid("invalid_key", "a grant needs a key"));
    }
    let account = get(pool, org).await?;
    let mut tx = pool.begin().await?;
    ledger::post(
        &mut tx,
        &NewTransaction {
            key: format!("grant/{org}/{key}"),
            org: Some(org),
            description: description.to_string(),
            corrects: None,
            currency: account.currency,
            entries: vec![
                Entry {
                    account: Account::Promotions,
                    amount_minor,
                },
                Entry {
                    account: Account::PrepaidCredit(org),
                    amount_minor: -amount_minor,
                },
            ],
        },
    )
    .await?;
    tx.commit().await?;
    Ok(refresh(pool, org, &[]).await?.1)
}

/// What sits on finalized invoices (open, paid, uncollectible) of periods within `month`: invoices
/// and adjusting invoices add, credit notes subtract (whatever the sign they are stored with).
async fn invoiced_minor(
    conn: &mut PgConnection,
    org: OrgId,
    month: Period,
    currency: &str,
) -> DomainResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(CASE kind WHEN 'credit_note' THEN -abs(total_minor)
                                       ELSE total_minor END), 0)::bigint
         FROM billing.invoices
         WHERE org_id = $1 AND period_start >= $2 AND period_end <= $3 AND currency = $4
           AND state IN ('open', 'paid', 'uncollectible')
           AND kind IN ('invoice', 'adjusting', 'credit_note')",
    )
    .bind(org.uuid())
    .bind(month.start)
    .bind(month.end)
    .bind(currency)
    .fetch_one(conn)
    .await?)
}

fn to_minor(d: Decimal) -> i64 {
    d.to_i64().unwrap_or(if d.is_sign_negative() {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Rated lines of periods that ended by `before` not yet on a finalized invoice (unbilled, or on
/// a draft), exact, in `currency`: usage of past periods whose invoice is not finalized yet (last
/// month's, between the 1st and the finalization of its invoice), and late adjustments of
/// finalized periods not invoiced yet. Lines written off on a void invoice are not counted. Cheap:
/// rated lines and invoice line sources only, no rating.
async fn unbilled_earlier(
    conn: &mut PgConnection,
    org: OrgId,
    before: DateTime<Utc>,
    currency: &str,
) -> DomainResult<Decimal> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(r.amount_exact), 0) FROM billing.rated_lines r
         WHERE r.org_id = $1 AND r.period_end <= $2 AND r.currency = $3
           AND NOT EXISTS (SELECT 1 FROM billing.invoice_line_sources s
                           JOIN billing.invoices i ON i.id = s.invoice_id
                           WHERE s.rated_line_id = r.id AND i.state <> 'draft')",
    )
    .bind(org.uuid())
    .bind(before)
    .bind(currency)
    .fetch_one(conn)
    .await?)
}

/// The balance of an account row, now. `conn` reads the ledger and invoices (under the caller's
/// lock of the row, if any); `pool` rates the current month.
///
/// - `credit_minor`: −(balance of the org's prepaid credit), a liability growing by credits.
/// - `unbilled_minor`: usage not yet on a finalized invoice, of every period: the current
///   calendar month's usage rated live (`metering::rate`, up to now) less what finalized invoices
///   of periods within the month hold (at least 0), plus the rated lines of earlier periods not
///   on a finalized invoice yet (last month's usage until its invoice is finalized); rounded up
///   once, at least 0.
/// - `spent_this_month_minor`: invoiced this month plus this month's unbilled part (earlier
///   periods' usage is not this month's spend).
async fn compute(pool: &PgPool, conn: &mut PgConnection, account: &Row) -> DomainResult<Balance> {
    let org: OrgId = account.org_id.into();
    let mode = account.mode();
    let currency = account.currency.as_str();
    let month = Period::month_of(Utc::now());
    let rated: Decimal = crate::metering::rate(pool, org, month, None)
        .await?
        .iter()
        .filter(|r| r.currency == currency)
        .map(|r| r.amount_exact)
        .sum();
    let invoiced = invoiced_minor(conn, org, month, currency).await?;
    let this_month = (rated - Decimal::from(invoiced)).max(Decimal::ZERO);
    let earlier = unbilled_earlier(conn, org, month.start, currency).await?;
    let unbilled = to_minor((this_month + earlier).ceil()).max(0);
    let unbilled_this_month = to_minor(this_month.ceil()).max(0);
    let credit = -ledger::balance(conn, Account::PrepaidCredit(org), currency).await?;
    let receivable = ledger::balance(conn, Account::Receivable(org), currency).await?;
    let available = credit.saturating_sub(unbilled);
    let spent = invoiced.saturating_add(unbilled_this_month);
    let standing = if account.delinquent_since.is_some() {
        Standing::Delinquent
    } else {
        exhaustion(mode, available, spent, account.monthly_spend_limit_minor)
            .unwrap_or(Standing::Good)
    };
    Ok(Balance {
        org,
        mode,
        currency: account.currency.clone(),
        credit_minor: credit,
        unbilled_minor: unbilled,
        available_minor: available,
        spent_this_month_minor: spent,
        monthly_spend_limit_minor: account.monthly_spend_limit_minor,
        receivable_minor: receivable,
        standing,
    })
}

/// Why an org may not allocate, apart from delinquency: prepaid credit used up (never for
/// postpaid), or the monthly spend limit reached.
fn exhaustion(
    mode: BillingMode,
    available: i64,
    spent: i64,
    limit: Option<i64>,
) -> Option<Standing> {
    if mode == BillingMode::Prepaid && available <= 0 {
        Some(Standing::CreditExhausted)
    } else if limit.is_some_and(|l| spent >= l) {
        Some(Standing::SpendLimitReached)
    } else {
        None
    }
}

pub async fn balance(pool: &PgPool, org: OrgId) -> DomainResult<Balance> {
    let mut conn = pool.acquire().await?;
    let account = row(&mut conn, org, false)
        .await?
        .ok_or_else(|| not_found(org))?;
    compute(pool, &mut conn, &account).await
}

/// Admission, inside the product's allocation transaction: refuses with `credit_exhausted`,
/// `spend_limit_reached` or `org_delinquent` (a conflict naming what to do).
///
/// Reads only the account row (no rating): standing as [`refresh_standing`] last stored it. An
/// org billing has no account for (it predates billing, or was never signed up through it) gets
/// one here, in the caller's transaction: `postpaid`, with no credit and nothing posted
/// (`INSERT … ON CONFLICT DO NOTHING`), and is admitted; so every org that launches is invoiced
/// and swept like any other (finance may switch its mode later).
pub async fn admit(conn: &mut PgConnection, org: OrgId) -> DomainResult<()> {
    let account = match row(conn, org, false).await? {
        Some(account) => account,
        None => {
            sqlx::query(
                "INSERT INTO billing.accounts (org_id, mode) VALUES ($1, 'postpaid')
                 ON CONFLICT (org_id) DO NOTHING",
            )
            .bind(org.uuid())
            .execute(&mut *conn)
            .await?;
            // Created now, or by a concurrent admission: either way, as it stands.
            row(conn, org, false).await?.ok_or_else(|| not_found(org))?
        }
    };
    match account.standing() {
        Standing::Good => Ok(()),
        Standing::Delinquent => Err(DomainError::conflict(
            ORG_DELINQUENT,
            format!(
                "org {org} has invoices whose payment failed: pay the open invoices \
                 (gpuaas billing pay) to allocate again"
            ),
        )),
        Standing::CreditExhausted => Err(DomainError::conflict(
            CREDIT_EXHAUSTED,
            format!(
                "org {org} has used up its prepaid credit: top up credit (gpuaas billing topup)"
            ),
        )),
        Standing::SpendLimitReached => Err(DomainError::conflict(
            SPEND_LIMIT_REACHED,
            format!(
                "org {org} reached its monthly spend limit: raise the spend limit to allocate \
                 this month"
            ),
        )),
    }
}

/// What [`refresh_standing`] changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandingChange {
    pub org: OrgId,
    pub before: Standing,
    pub after: Standing,
    /// Threshold events recorded now (`credit_below_50_percent`, …).
    pub events: Vec<String>,
}

/// Where the org's current credit cycle starts: how many transactions credited its prepaid credit
/// so far (grants, top-ups, reversals; the cycle's number), and the credit right after the last
/// of them (the base thresholds are percent of).
async fn credit_cycle(
    conn: &mut PgConnection,
    org: OrgId,
    currency: &str,
) -> DomainResult<(i64, i64)> {
    Ok(sqlx::query_as(
        "WITH e AS (SELECT id, transaction_id, amount_minor FROM billing.ledger_entries
                    WHERE account = 'prepaid_credit' AND org_id = $1 AND currency = $2),
              last AS (SELECT max(id) AS id, count(DISTINCT transaction_id) AS n
                       FROM e WHERE amount_minor < 0)
         SELECT last.n, coalesce(-(SELECT sum(amount_minor) FROM e WHERE e.id <= last.id), 0)::bigint
         FROM last",
    )
    .bind(org.uuid())
    .bind(currency)
    .fetch_one(conn)
    .await?)
}

fn cycle_of(at: DateTime<Utc>) -> String {
    at.timestamp_micros().to_string()
}

/// Recomputes standing from the balance: sets or clears `exhausted_since`, records each
/// threshold crossing of `thresholds_percent` once (of the credit at its last top-up). Idempotent.
///
/// Events (`billing.account_events`, key `<org>/<kind>/<cycle>`, each recorded once):
/// - `credit_below_<n>_percent` (prepaid): available credit is below n % of the credit right
///   after the last grant or top-up; the cycle is the number of such credits so far, so each
///   top-up arms the thresholds again.
/// - `credit_exhausted`, `spend_limit_reached`: when exhaustion starts; `credit_restored` when a
///   credit exhaustion ends. Their cycle is the instant the exhaustion started.
pub async fn refresh_standing(
    pool: &PgPool,
    org: OrgId,
    thresholds_percent: &[u8],
) -> DomainResult<StandingChange> {
    Ok(refresh(pool, org, thresholds_percent).await?.0)
}

async fn refresh(
    pool: &PgPool,
    org: OrgId,
    thresholds_percent: &[u8],
) -> DomainResult<(StandingChange, Balance)> {
    // The row is locked first and the balance computed under the lock: a top-up (or any other
    // refresh) committing meanwhile is seen by whichever refresh takes the lock after it, so a
    // stale balance never overwrites a newer standing. The current month's rating reads through
    // the pool while the lock is held.
    let mut tx = pool.begin().await?;
    let account = row(&mut tx, org, true)
        .await?
        .ok_or_else(|| not_found(org))?;
    let bal = compute(pool, &mut tx, &account).await?;
    let before = account.standing();
    let mode = account.mode();
    let now_exhausted = exhaustion(
        mode,
        bal.available_minor,
        bal.spent_this_month_minor,
        account.monthly_spend_limit_minor,
    );
    let reason = match now_exhausted {
        Some(Standing::CreditExhausted) => Some(CREDIT_EXHAUSTED),
        Some(Standing::SpendLimitReached) => Some(SPEND_LIMIT_REACHED),
        _ => None,
    };
    let mut events = vec![];
    let since: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE billing.accounts
         SET exhausted_since = CASE WHEN $2::text IS NULL THEN NULL
                                    ELSE coalesce(exhausted_since, now()) END,
             exhausted_reason = $2,
             updated_at = CASE WHEN exhausted_reason IS DISTINCT FROM $2 THEN now()
                               ELSE updated_at END
         WHERE org_id = $1 RETURNING exhausted_since",
    )
    .bind(org.uuid())
    .bind(reason)
    .fetch_one(&mut *tx)
    .await?;
    let was_credit_exhausted = account.exhausted_since.is_some()
        && account.exhausted_reason.as_deref() == Some(CREDIT_EXHAUSTED);
    if let (Some(kind), Some(since)) = (reason, since) {
        let message = if kind == CREDIT_EXHAUSTED {
            format!(
                "prepaid credit is used up ({} {} available): top up credit",
                bal.available_minor, bal.currency
            )
        } else {
            format!(
                "the monthly spend limit is reached ({} of {} {} spent): raise the limit",
                bal.spent_this_month_minor,
                bal.monthly_spend_limit_minor.unwrap_or_default(),
                bal.currency
            )
        };
        if record_event(&mut tx, org, kind, &cycle_of(since), &message).await? {
            events.push(kind.to_string());
        }
    }
    if was_credit_exhausted
        && reason != Some(CREDIT_EXHAUSTED)
        && let Some(started) = account.exhausted_since
    {
        let message = format!(
            "prepaid credit restored ({} {} available)",
            bal.available_minor, bal.currency
        );
        if record_event(
            &mut tx,
            org,
            "credit_restored",
            &cycle_of(started),
            &message,
        )
        .await?
        {
            events.push("credit_restored".to_string());
        }
    }
    if mode == BillingMode::Prepaid && !thresholds_percent.is_empty() {
        let (cycle, base) = credit_cycle(&mut tx, org, &bal.currency).await?;
        let mut thresholds = thresholds_percent.to_vec();
        thresholds.sort_unstable_by(|a, b| b.cmp(a));
        thresholds.dedup();
        for n in thresholds {
            // available / base < n / 100, in integers.
            let below = base > 0
                && i128::from(bal.available_minor) * 100 < i128::from(n) * i128::from(base);
            if !below {
                continue;
            }
            let kind = format!("credit_below_{n}_percent");
            let message = format!(
                "available credit is below {n} % of {base} {}: {} left",
                bal.currency, bal.available_minor
            );
            if record_event(&mut tx, org, &kind, &cycle.to_string(), &message).await? {
                events.push(kind);
            }
        }
    }
    let after_row = row(&mut tx, org, false)
        .await?
        .ok_or_else(|| not_found(org))?;
    tx.commit().await?;
    let after = after_row.standing();
    let mut bal = bal;
    bal.standing = after;
    Ok((
        StandingChange {
            org,
            before,
            after,
            events,
        },
        bal,
    ))
}

/// Orgs whose credit or limit ran out, or that are delinquent, longer than `grace` ago: their
/// running instances are to be stopped.
pub async fn past_grace(pool: &PgPool, grace: Duration) -> DomainResult<Vec<OrgId>> {
    let orgs: Vec<Uuid> = sqlx::query_scalar(
        "SELECT org_id FROM billing.accounts
         WHERE delinquent_since <= now() - $1::interval
            OR (exhausted_since <= now() - $1::interval
                AND NOT (mode = 'postpaid' AND exhausted_reason = 'credit_exhausted'))
         ORDER BY org_id",
    )
    .bind(grace)
    .fetch_all(pool)
    .await?;
    Ok(orgs.into_iter().map(OrgId::from).collect())
}

/// Every org with an account, for sweeps (ordered, paged by `after`).
pub async fn orgs(pool: &PgPool, after: Option<OrgId>, limit: i64) -> DomainResult<Vec<OrgId>> {
    let orgs: Vec<Uuid> = sqlx::query_scalar(
        "SELECT org_id FROM billing.accounts WHERE ($1::uuid IS NULL OR org_id > $1)
         ORDER BY org_id LIMIT $2",
    )
    .bind(after.map(OrgId::uuid))
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await?;
    Ok(orgs.into_iter().map(OrgId::from).collect())
}

/// Sets `delinquent_since` (if not set yet) and records a `delinquent` event. Idempotent.
///
/// Under the account row's lock, and only while the org has an unpaid invoice (the same as
/// [`crate::invoice::unpaid`] being non-empty): an org that paid up meanwhile (a payment racing
/// the end of collection) is returned unchanged. A payment that commits after this marks clears
/// the delinquency again (it takes the same row lock).
pub async fn mark_delinquent(pool: &PgPool, org: OrgId) -> DomainResult<BillingAccount> {
    let mut tx = pool.begin().await?;
    let account = row(&mut tx, org, true)
        .await?
        .ok_or_else(|| not_found(org))?;
    if !crate::invoice::has_unpaid(&mut tx, org, None).await? {
        tx.commit().await?;
        return Ok(account.account());
    }
    let since: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE billing.accounts SET delinquent_since = now(), updated_at = now()
         WHERE org_id = $1 AND delinquent_since IS NULL RETURNING delinquent_since",
    )
    .bind(org.uuid())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(since) = since {
        record_event(
            &mut tx,
            org,
            "delinquent",
            &cycle_of(since),
            "payment of an invoice failed after its retries: pay the open invoices",
        )
        .await?;
    }
    let account = row(&mut tx, org, false)
        .await?
        .ok_or_else(|| not_found(org))?;
    tx.commit().await?;
    Ok(account.account())
}

/// Clears `delinquent_since` (a payment came in), in the caller's transaction, and records a
/// `delinquency_cleared` event. Nothing to do (no account, not delinquent) is fine.
pub async fn clear_delinquent(conn: &mut PgConnection, org: OrgId) -> DomainResult<()> {
    let Some(account) = row(conn, org, true).await? else {
        return Ok(());
    };
    let Some(since) = account.delinquent_since else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE billing.accounts SET delinquent_since = NULL, updated_at = now() WHERE org_id = $1",
    )
    .bind(org.uuid())
    .execute(&mut *conn)
    .await?;
    record_event(
        conn,
        org,
        "delinquency_cleared",
        &cycle_of(since),
        "the open invoices are paid",
    )
    .await?;
    Ok(())
}

/// A recorded account event (threshold crossing, exhausted, restored, delinquent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvent {
    pub seq: i64,
    pub org: OrgId,
    pub kind: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

/// An org's events after `after_seq`, oldest first (at most 1000).
pub async fn events(pool: &PgPool, org: OrgId, after_seq: i64) -> DomainResult<Vec<AccountEvent>> {
    let rows: Vec<(i64, Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT seq, org_id, kind, message, created_at FROM billing.account_events
         WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT 1000",
    )
    .bind(org.uuid())
    .bind(after_seq)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, org, kind, message, created_at)| AccountEvent {
            seq,
            org: org.into(),
            kind,
            message,
            created_at,
        })
        .collect())
}
