//! Invoices: `draft` → `open` (finalized, never edited again) → `paid` | `void` |
//! `uncollectible`. A draft bills every rated line of its org and period not yet on an invoice,
//! one invoice line per meter, SKU and price version, rounded once (half away from zero) from the
//! exact sum, cumulatively: a line bills round(the exact sum of every rated line of its group in
//! the period, billed or not) less what finalized invoices already billed for the group, so late
//! sub-minor adjustments are never lost to rounding. Late adjustments to a period whose invoice is finalized go on an `adjusting`
//! invoice (more owed) or a `credit_note` (less), linked to it. Finalizing posts to the ledger:
//! prepaid credit covers what it can (in every billing mode), the rest is receivable.
//!
//! Signs: a credit note's `total_minor` (and its lines' amounts) are negative; invoices and
//! adjusting invoices are positive (or zero). Payments and credit notes settle what is due without
//! editing the invoice: `amount_due = total - credit_applied - paid - credited` (schema: migration
//! `20261201000010_billing_invoices.sql`, which also makes the database refuse edits of a
//! finalized invoice and its lines).

use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use shared_ids::{InvoiceId, OrgId};
use shared_kernel::{DomainError, DomainResult};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::Period;
use crate::account;
use crate::ledger::{self, Account, Entry, NewTransaction};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceState {
    Draft,
    Open,
    Paid,
    Void,
    Uncollectible,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceKind {
    Invoice,
    Adjusting,
    CreditNote,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub line_no: i32,
    pub meter: String,
    pub sku: String,
    pub price_version: i32,
    pub description: String,
    pub quantity: Decimal,
    pub amount_exact: Decimal,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: InvoiceId,
    pub org: OrgId,
    pub period: Period,
    pub kind: InvoiceKind,
    pub corrects: Option<InvoiceId>,
    pub state: InvoiceState,
    pub currency: String,
    pub total_minor: i64,
    pub credit_applied_minor: i64,
    /// What a payment must still cover: total less credit applied, 0 once paid.
    pub amount_due_minor: i64,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    /// Empty in lists.
    pub lines: Vec<InvoiceLine>,
}

/// Builds (or rebuilds) the draft of `org`'s `period` from its unbilled rated lines. `None` when
/// nothing is left to bill. Idempotent.
///
/// In one transaction, under an advisory lock on (org, period). With no unbilled line: the
/// period's draft as it is (or `None`). Else, if the period has a finalized invoice of kind
/// `invoice` (open, paid or uncollectible), the new lines go on a draft correcting it: kind
/// `adjusting` when they add up to more owed, `credit_note` when to less (a credit note's
/// `total_minor` is negative). Otherwise they go on the period's draft of kind `invoice`. A draft's
/// lines are rebuilt from all its rated lines each time (drafts are editable; finalized invoices
/// never are).
pub async fn build_draft(
    pool: &PgPool,
    org: OrgId,
    period: Period,
) -> DomainResult<Option<Invoice>> {
    let mut tx = pool.begin().await?;
    lock_period(&mut tx, org, period).await?;
    let unbilled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM billing.rated_lines r
         WHERE r.org_id = $1 AND r.period_start = $2 AND r.period_end = $3
           AND NOT EXISTS (SELECT 1 FROM billing.invoice_line_sources s WHERE s.rated_line_id = r.id)",
    )
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .fetch_one(&mut *tx)
    .await?;
    let draft: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM billing.invoices
         WHERE org_id = $1 AND period_start = $2 AND period_end = $3 AND state = 'draft'
         FOR UPDATE"
    ))
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .fetch_optional(&mut *tx)
    .await?;
    if unbilled == 0 {
        let out = match draft {
            Some(row) => Some(with_lines(&mut tx, row).await?),
            None => None,
        };
        tx.commit().await?;
        return Ok(out);
    }
    // The draft's lines are rebuilt: free its rated lines, then bill every unbilled one.
    let (id, corrects) = match &draft {
        Some(d) => {
            sqlx::query("DELETE FROM billing.invoice_line_sources WHERE invoice_id = $1")
                .bind(d.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM billing.invoice_lines WHERE invoice_id = $1")
                .bind(d.id)
                .execute(&mut *tx)
                .await?;
            (d.id, d.corrects)
        }
        None => {
            let finalized: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM billing.invoices
                 WHERE org_id = $1 AND period_start = $2 AND period_end = $3 AND kind = 'invoice'
                   AND state IN ('open', 'paid', 'uncollectible')
                 ORDER BY finalized_at DESC, id DESC LIMIT 1",
            )
            .bind(org.uuid())
            .bind(period.start)
            .bind(period.end)
            .fetch_optional(&mut *tx)
            .await?;
            (InvoiceId::new().uuid(), finalized)
        }
    };
    // Per group of unbilled lines, what the group's line must bill so that rounding happens once
    // over the whole group, cumulatively: round(the exact sum of every rated line of the group,
    // billed or not) less what finalized invoices already billed for it. Lines written off on a
    // void invoice are in neither sum.
    let groups: Vec<Group> = sqlx::query_as(
        "WITH unbilled AS (
             SELECT meter, sku, price_version, currency, sum(quantity) AS quantity,
                    sum(amount_exact) AS amount_exact, array_agg(id ORDER BY id) AS ids
             FROM billing.rated_lines r
             WHERE r.org_id = $1 AND r.period_start = $2 AND r.period_end = $3
               AND NOT EXISTS (SELECT 1 FROM billing.invoice_line_sources s
                               WHERE s.rated_line_id = r.id)
             GROUP BY meter, sku, price_version, currency
         )
         SELECT u.meter, u.sku, u.price_version, u.currency, u.quantity, u.amount_exact, u.ids,
                (SELECT coalesce(sum(r.amount_exact), 0) FROM billing.rated_lines r
                  WHERE r.org_id = $1 AND r.period_start = $2 AND r.period_end = $3
                    AND r.meter = u.meter AND r.sku = u.sku
                    AND r.price_version = u.price_version AND r.currency = u.currency
                    AND NOT EXISTS (SELECT 1 FROM billing.invoice_line_sources s
                                    JOIN billing.invoices i ON i.id = s.invoice_id
                                    WHERE s.rated_line_id = r.id AND i.state = 'void'))
                    AS cumulative_exact,
                (SELECT coalesce(sum(l.amount_minor), 0)::bigint FROM billing.invoice_lines l
                   JOIN billing.invoices i ON i.id = l.invoice_id
                  WHERE i.org_id = $1 AND i.period_start = $2 AND i.period_end = $3
                    AND i.state IN ('open', 'paid', 'uncollectible') AND i.currency = u.currency
                    AND l.meter = u.meter AND l.sku = u.sku
                    AND l.price_version = u.price_version)
                    AS billed_minor
         FROM unbilled u
         ORDER BY u.meter, u.sku, u.price_version, u.currency",
    )
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .fetch_all(&mut *tx)
    .await?;
    let currency = match groups.first() {
        Some(g) => g.currency.clone(),
        None => {
            return Err(DomainError::conflict(
                "invoice_build_raced",
                "the unbilled lines disappeared under the lock",
            ));
        }
    };
    if let Some(other) = groups.iter().find(|g| g.currency != currency) {
        return Err(DomainError::conflict(
            "mixed_currencies",
            format!(
                "org {org} period {period}: rated lines in {currency} and {}; an invoice has one currency",
                other.currency
            ),
        ));
    }
    let mut lines = Vec::with_capacity(groups.len());
    let mut total: i64 = 0;
    for (i, g) in groups.iter().enumerate() {
        let amount_minor = line_minor(g.cumulative_exact, g.billed_minor)?;
        total = total.checked_add(amount_minor).ok_or_else(out_of_range)?;
        lines.push((i as i32 + 1, g, amount_minor));
    }
    let kind = match corrects {
        None => "invoice",
        Some(_) if total < 0 => "credit_note",
        Some(_) => "adjusting",
    };
    if draft.is_some() {
        sqlx::query(
            "UPDATE billing.invoices SET kind = $2, total_minor = $3, currency = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(kind)
        .bind(total)
        .bind(&currency)
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query(
            "INSERT INTO billing.invoices
                 (id, org_id, period_start, period_end, kind, corrects, state, currency, total_minor)
             VALUES ($1, $2, $3, $4, $5, $6, 'draft', $7, $8)",
        )
        .bind(id)
        .bind(org.uuid())
        .bind(period.start)
        .bind(period.end)
        .bind(kind)
        .bind(corrects)
        .bind(&currency)
        .bind(total)
        .execute(&mut *tx)
        .await?;
    }
    for (line_no, g, amount_minor) in &lines {
        sqlx::query(
            "INSERT INTO billing.invoice_lines (invoice_id, line_no, meter, sku, price_version,
                 description, quantity, amount_exact, amount_minor)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(line_no)
        .bind(&g.meter)
        .bind(&g.sku)
        .bind(g.price_version)
        .bind(describe(&g.meter, &g.sku, g.price_version))
        .bind(g.quantity)
        .bind(g.amount_exact)
        .bind(amount_minor)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO billing.invoice_line_sources (rated_line_id, invoice_id, line_no)
             SELECT unnest($1::uuid[]), $2, $3",
        )
        .bind(&g.ids)
        .bind(id)
        .bind(line_no)
        .execute(&mut *tx)
        .await?;
    }
    Ok(Some(committed(tx, id.into()).await?))
}

/// Finalizes a draft (draft → open) and posts it to the ledger (key `invoice/<id>/finalize`).
/// An invoice nothing is due on (credit covered it, or a credit note) goes straight to `paid`.
/// Idempotent: finalizing an open or paid invoice returns it unchanged.
///
/// An `invoice` or `adjusting` of total T: C = min(T, prepaid credit on the ledger) is applied,
/// in every billing mode (a postpaid org's credit from a credit note or an overpayment is used
/// by its next invoice); prepaid_credit +C, receivable +(T-C), revenue -T. A credit note of
/// total -A: revenue +A, receivable -R where R = min(A, what is still owed on the corrected
/// invoice, which R settles), prepaid_credit -(A-R) (given back as credit). Zero entries are left
/// out; a zero total posts nothing.
pub async fn finalize(pool: &PgPool, id: InvoiceId) -> DomainResult<Invoice> {
    let mut tx = pool.begin().await?;
    let row = fetch(&mut tx, id.uuid(), false)
        .await?
        .ok_or_else(|| not_found(id))?;
    let org = OrgId::from(row.org_id);
    lock_period(&mut tx, org, row.period()).await?;
    let row = fetch(&mut tx, id.uuid(), true)
        .await?
        .ok_or_else(|| not_found(id))?;
    match row.state.as_str() {
        "open" | "paid" | "uncollectible" => {
            let invoice = with_lines(&mut tx, row).await?;
            tx.commit().await?;
            return Ok(invoice);
        }
        "void" => {
            return Err(DomainError::conflict(
                "invoice_void",
                format!("invoice {id} is void; it is never finalized"),
            ));
        }
        _ => {}
    }
    let total = row.total_minor;
    let currency = row.currency.clone();
    let mut entries = Vec::new();
    let mut credit_applied = 0;
    let mut settled_corrected = false;
    if total > 0 {
        // Credit is applied in every mode: a postpaid org has credit too when a credit note gave
        // money back or a payment came in over what was due, and its next invoice uses it.
        // One org's credit is consumed by one finalization at a time.
        lock_key(&mut tx, format!("billing.credit:{}", org.uuid())).await?;
        let balance = ledger::balance(&mut tx, Account::PrepaidCredit(org), &currency).await?;
        // prepaid_credit is a liability: credit (what the org has) is its negated balance.
        credit_applied = total.min(balance.saturating_neg().max(0));
        entries.push(entry(Account::PrepaidCredit(org), credit_applied));
        entries.push(entry(Account::Receivable(org), total - credit_applied));
        entries.push(entry(Account::Revenue, -total));
    } else if total < 0 {
        let amount = total.checked_neg().ok_or_else(out_of_range)?;
        let mut on_receivable = 0;
        if let Some(corrected) = row.corrects {
            let c = fetch(&mut tx, corrected, true).await?;
            if let Some(c) = c.filter(|c| matches!(c.state.as_str(), "open" | "uncollectible")) {
                on_receivable = amount.min(c.due());
                if on_receivable > 0 {
                    let settles = on_receivable == c.due();
                    sqlx::query(
                        "UPDATE billing.invoices SET credited_minor = credited_minor + $2,
                             state = CASE WHEN $3 THEN 'paid' ELSE state END,
                             paid_at = CASE WHEN $3 THEN now() ELSE paid_at END
                         WHERE id = $1",
                    )
                    .bind(corrected)
                    .bind(on_receivable)
                    .bind(settles)
                    .execute(&mut *tx)
                    .await?;
                    settled_corrected = settles;
                }
            }
        }
        entries.push(entry(Account::Revenue, amount));
        entries.push(entry(Account::Receivable(org), -on_receivable));
        entries.push(entry(
            Account::PrepaidCredit(org),
            -(amount - on_receivable),
        ));
    }
    entries.retain(|e| e.amount_minor != 0);
    if !entries.is_empty() {
        ledger::post(
            &mut tx,
            &NewTransaction {
                key: finalize_key(id),
                org: Some(org),
                description: format!("{} {id} for {}", row.kind_label(), row.period()),
                corrects: None,
                currency: currency.clone(),
                entries,
            },
        )
        .await?;
    }
    let due = if total > 0 { total - credit_applied } else { 0 };
    sqlx::query(
        "UPDATE billing.invoices SET state = $2, finalized_at = now(), credit_applied_minor = $3,
             paid_at = CASE WHEN $2 = 'paid' THEN now() END
         WHERE id = $1",
    )
    .bind(id.uuid())
    .bind(if due > 0 { "open" } else { "paid" })
    .bind(credit_applied)
    .execute(&mut *tx)
    .await?;
    if settled_corrected && !has_unpaid(&mut tx, org, None).await? {
        account::clear_delinquent(&mut tx, org).await?;
    }
    // The period is invoiced: its cycle's work is done (later usage becomes a correction).
    record_close(&mut tx, org, row.period()).await?;
    committed(tx, id).await
}

/// Records a payment of `charged_minor`, the amount the provider actually charged (key
/// `payment/<key>`), in the caller's transaction, and clears the org's delinquency when nothing
/// else is unpaid. Idempotent by `key`: a key already recorded returns the invoice as it is.
///
/// A provider success is never dropped nor rolled back by what happened to the invoice meanwhile:
/// - **open or uncollectible:** cash +charged, receivable −min(charged, due); the invoice is paid
///   once nothing is due (a smaller charge leaves it open with less due).
/// - **excess:** what was charged beyond what is due (a credit note took something off while the
///   charge was in flight) credits the org's prepaid_credit: an overpayment the org's next
///   invoices use (finalizing applies credit in every mode), to be refunded by finance later if
///   the org asks.
/// - **already paid or void** (a manual payment raced the workflow, or a credit note or a void
///   came while the charge was in flight): the whole amount goes to prepaid_credit, the invoice
///   is left as it is.
///
/// Refused: a draft (`invoice_not_open`: nothing is ever charged for one), `charged_minor` of 0
/// or less (`invalid_amount`), and a key that recorded a payment of another org
/// (`payment_key_reused`).
pub async fn record_payment(
    conn: &mut PgConnection,
    id: InvoiceId,
    key: &str,
    charged_minor: i64,
) -> DomainResult<Invoice> {
    if charged_minor <= 0 {
        return Err(DomainError::invalid(
            "invalid_amount",
            format!("payment {key} of invoice {id}: a charge is more than 0, not {charged_minor}"),
        ));
    }
    let mut tx = conn.begin().await?;
    let row = fetch(&mut tx, id.uuid(), true)
        .await?
        .ok_or_else(|| not_found(id))?;
    if row.state == "draft" {
        return Err(DomainError::conflict(
            "invoice_not_open",
            format!("invoice {id} is a draft; only a finalized invoice is paid"),
        ));
    }
    let org = OrgId::from(row.org_id);
    let ledger_key = format!("payment/{key}");
    let recorded: Option<Option<Uuid>> =
        sqlx::query_scalar("SELECT org_id FROM billing.ledger_transactions WHERE key = $1")
            .bind(&ledger_key)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(recorded_org) = recorded {
        if recorded_org != Some(org.uuid()) {
            return Err(DomainError::conflict(
                "payment_key_reused",
                format!("payment key {key} already paid something else"),
            ));
        }
        // Recorded before (a retried activity): nothing more to do.
        let invoice = with_lines(&mut tx, row).await?;
        tx.commit().await?;
        return Ok(invoice);
    }
    let payable = matches!(row.state.as_str(), "open" | "uncollectible");
    let due = if payable { row.due() } else { 0 };
    let applied = charged_minor.min(due);
    let excess = charged_minor - applied;
    let description = if excess == 0 {
        format!("payment of {} {id}", row.kind_label())
    } else if applied > 0 {
        format!(
            "payment of {} {id}; {excess} {} over what was due kept as prepaid credit",
            row.kind_label(),
            row.currency
        )
    } else {
        format!(
            "payment of {} {id}, which was {} when it came: kept as prepaid credit",
            row.kind_label(),
            row.state
        )
    };
    let mut entries = vec![entry(Account::Cash, charged_minor)];
    if applied > 0 {
        entries.push(entry(Account::Receivable(org), -applied));
    }
    if excess > 0 {
        entries.push(entry(Account::PrepaidCredit(org), -excess));
    }
    ledger::post(
        &mut tx,
        &NewTransaction {
            key: ledger_key,
            org: Some(org),
            description,
            corrects: None,
            currency: row.currency.clone(),
            entries,
        },
    )
    .await?;
    if applied > 0 {
        let settles = applied == due;
        sqlx::query(
            "UPDATE billing.invoices SET paid_minor = paid_minor + $2,
                 state = CASE WHEN $3 THEN 'paid' ELSE state END,
                 paid_at = CASE WHEN $3 THEN now() ELSE paid_at END
             WHERE id = $1",
        )
        .bind(id.uuid())
        .bind(applied)
        .bind(settles)
        .execute(&mut *tx)
        .await?;
    } else if payable && due == 0 {
        // Nothing was due any more (credit notes settled it): it is paid.
        sqlx::query("UPDATE billing.invoices SET state = 'paid', paid_at = now() WHERE id = $1")
            .bind(id.uuid())
            .execute(&mut *tx)
            .await?;
    }
    if !has_unpaid(&mut tx, org, None).await? {
        account::clear_delinquent(&mut tx, org).await?;
    }
    committed(tx, id).await
}

/// Records that `org`'s billing cycle for `period` has ended, invoiced or with nothing to bill.
/// From then on a draft of kind `invoice` for the period (late usage rated after the cycle) is
/// finalized by whoever rated it ([`period_closed`]). Idempotent.
pub async fn close_period(pool: &PgPool, org: OrgId, period: Period) -> DomainResult<()> {
    record_close(&mut *pool.acquire().await?, org, period).await
}

async fn record_close(conn: &mut PgConnection, org: OrgId, period: Period) -> DomainResult<()> {
    sqlx::query(
        "INSERT INTO billing.closed_periods (org_id, period_start, period_end) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether [`close_period`] recorded the period's cycle as ended.
pub async fn period_closed(pool: &PgPool, org: OrgId, period: Period) -> DomainResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM billing.closed_periods
                        WHERE org_id = $1 AND period_start = $2 AND period_end = $3)",
    )
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .fetch_one(pool)
    .await?)
}

/// Commits `tx` and answers the invoice as it left it, with its lines.
async fn committed(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    id: InvoiceId,
) -> DomainResult<Invoice> {
    let row = fetch(&mut tx, id.uuid(), false)
        .await?
        .ok_or_else(|| not_found(id))?;
    let invoice = with_lines(&mut tx, row).await?;
    tx.commit().await?;
    Ok(invoice)
}

/// open → uncollectible (retries ran out). Idempotent.
///
/// An uncollectible or paid invoice (paid meanwhile) is returned as it is; a draft or void one is
/// refused (`invoice_not_open`). It stays receivable: a later payment still settles it.
pub async fn mark_uncollectible(pool: &PgPool, id: InvoiceId) -> DomainResult<Invoice> {
    let mut tx = pool.begin().await?;
    let row = fetch(&mut tx, id.uuid(), true)
        .await?
        .ok_or_else(|| not_found(id))?;
    match row.state.as_str() {
        "uncollectible" | "paid" => {}
        "open" => {
            sqlx::query(
                "UPDATE billing.invoices SET state = 'uncollectible', closed_at = now() WHERE id = $1",
            )
            .bind(id.uuid())
            .execute(&mut *tx)
            .await?;
        }
        state => {
            return Err(DomainError::conflict(
                "invoice_not_open",
                format!("invoice {id} is {state}; only an open one becomes uncollectible"),
            ));
        }
    }
    committed(tx, id).await
}

/// draft or open → void; an open one's ledger posting is reversed. Idempotent.
///
/// The reversal (key `invoice/<id>/void`) negates every entry of the finalize posting and names
/// it in `corrects`: credit it used goes back to the org. A voided draft keeps its lines (their
/// rated lines are written off, never billed again). Refused (`invoice_not_voidable`): paid or
/// uncollectible invoices, and open ones a credit note already took something off.
pub async fn void(pool: &PgPool, id: InvoiceId) -> DomainResult<Invoice> {
    let mut tx = pool.begin().await?;
    let row = fetch(&mut tx, id.uuid(), false)
        .await?
        .ok_or_else(|| not_found(id))?;
    let org = OrgId::from(row.org_id);
    lock_period(&mut tx, org, row.period()).await?;
    let row = fetch(&mut tx, id.uuid(), true)
        .await?
        .ok_or_else(|| not_found(id))?;
    match row.state.as_str() {
        "void" => {}
        "draft" => {
            sqlx::query(
                "UPDATE billing.invoices SET state = 'void', closed_at = now() WHERE id = $1",
            )
            .bind(id.uuid())
            .execute(&mut *tx)
            .await?;
        }
        "open" if row.credited_minor == 0 => {
            let finalized: Option<Uuid> =
                sqlx::query_scalar("SELECT id FROM billing.ledger_transactions WHERE key = $1")
                    .bind(finalize_key(id))
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(finalized) = finalized {
                let rows: Vec<(String, Option<Uuid>, i64)> = sqlx::query_as(
                    "SELECT account, org_id, amount_minor FROM billing.ledger_entries
                     WHERE transaction_id = $1 ORDER BY id",
                )
                .bind(finalized)
                .fetch_all(&mut *tx)
                .await?;
                let mut entries = Vec::with_capacity(rows.len());
                for (account, org_id, amount) in rows {
                    let account = Account::from_columns(&account, org_id).ok_or_else(|| {
                        DomainError::conflict(
                            "ledger_corrupt",
                            format!("finalize posting of invoice {id} names account {account}"),
                        )
                    })?;
                    entries.push(entry(account, -amount));
                }
                ledger::post(
                    &mut tx,
                    &NewTransaction {
                        key: format!("invoice/{id}/void"),
                        org: Some(org),
                        description: format!("void of {} {id}", row.kind_label()),
                        corrects: Some(finalized),
                        currency: row.currency.clone(),
                        entries,
                    },
                )
                .await?;
            }
            sqlx::query(
                "UPDATE billing.invoices SET state = 'void', closed_at = now() WHERE id = $1",
            )
            .bind(id.uuid())
            .execute(&mut *tx)
            .await?;
            if !has_unpaid(&mut tx, org, Some(id)).await? {
                account::clear_delinquent(&mut tx, org).await?;
            }
        }
        state => {
            let why = if state == "open" {
                "a credit note corrected it; issue another credit note instead".to_string()
            } else {
                format!("it is {state}; only a draft or open invoice is voided")
            };
            return Err(DomainError::conflict(
                "invoice_not_voidable",
                format!("invoice {id} cannot be voided: {why}"),
            ));
        }
    }
    committed(tx, id).await
}

/// With lines. `org` `Some`: only that org's (`invoice_not_found` otherwise, never a hint it
/// exists); `None`: finance and the workflows.
pub async fn get(pool: &PgPool, org: Option<OrgId>, id: InvoiceId) -> DomainResult<Invoice> {
    let mut conn = pool.acquire().await?;
    let row = fetch(&mut conn, id.uuid(), false)
        .await?
        .filter(|r| org.is_none_or(|o| o.uuid() == r.org_id))
        .ok_or_else(|| not_found(id))?;
    with_lines(&mut conn, row).await
}

/// An org's invoices, newest first, without lines; `before` pages.
///
/// `limit` is clamped to 1..=500; a `before` that is not one of the org's invoices yields
/// nothing.
pub async fn list(
    pool: &PgPool,
    org: OrgId,
    before: Option<InvoiceId>,
    limit: i64,
) -> DomainResult<Vec<Invoice>> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM billing.invoices i
         WHERE org_id = $1
           AND ($2::uuid IS NULL OR (created_at, id) < (
                SELECT created_at, id FROM billing.invoices WHERE id = $2 AND org_id = $1))
         ORDER BY created_at DESC, id DESC
         LIMIT $3"
    ))
    .bind(org.uuid())
    .bind(before.map(InvoiceId::uuid))
    .bind(limit.clamp(1, 500))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.invoice(Vec::new())).collect())
}

/// Finalized invoices of an org with something due (open or uncollectible), oldest first.
pub async fn unpaid(pool: &PgPool, org: OrgId) -> DomainResult<Vec<Invoice>> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM billing.invoices
         WHERE org_id = $1 AND state IN ('open', 'uncollectible')
           AND total_minor - credit_applied_minor - paid_minor - credited_minor > 0
         ORDER BY created_at, id"
    ))
    .bind(org.uuid())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.invoice(Vec::new())).collect())
}

// ── internals ───────────────────────────────────────────────────────────────────────────────────

const COLUMNS: &str = "id, org_id, period_start, period_end, kind, corrects, state, currency,
    total_minor, credit_applied_minor, paid_minor, credited_minor, created_at, finalized_at, paid_at";

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    org_id: Uuid,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    kind: String,
    corrects: Option<Uuid>,
    state: String,
    currency: String,
    total_minor: i64,
    credit_applied_minor: i64,
    paid_minor: i64,
    credited_minor: i64,
    created_at: DateTime<Utc>,
    finalized_at: Option<DateTime<Utc>>,
    paid_at: Option<DateTime<Utc>>,
}

impl Row {
    fn period(&self) -> Period {
        Period {
            start: self.period_start,
            end: self.period_end,
        }
    }

    /// What a payment must still cover (0 once paid or void, and for a credit note).
    fn due(&self) -> i64 {
        match self.state.as_str() {
            "draft" | "open" | "uncollectible" => (self.total_minor
                - self.credit_applied_minor
                - self.paid_minor
                - self.credited_minor)
                .max(0),
            _ => 0,
        }
    }

    fn kind_label(&self) -> &'static str {
        match self.kind.as_str() {
            "adjusting" => "adjusting invoice",
            "credit_note" => "credit note",
            _ => "invoice",
        }
    }

    fn invoice(self, lines: Vec<InvoiceLine>) -> Invoice {
        let amount_due_minor = self.due();
        Invoice {
            id: self.id.into(),
            org: self.org_id.into(),
            period: self.period(),
            kind: match self.kind.as_str() {
                "adjusting" => InvoiceKind::Adjusting,
                "credit_note" => InvoiceKind::CreditNote,
                _ => InvoiceKind::Invoice,
            },
            corrects: self.corrects.map(InvoiceId::from),
            state: match self.state.as_str() {
                "open" => InvoiceState::Open,
                "paid" => InvoiceState::Paid,
                "void" => InvoiceState::Void,
                "uncollectible" => InvoiceState::Uncollectible,
                _ => InvoiceState::Draft,
            },
            currency: self.currency,
            total_minor: self.total_minor,
            credit_applied_minor: self.credit_applied_minor,
            amount_due_minor,
            created_at: self.created_at,
            finalized_at: self.finalized_at,
            paid_at: self.paid_at,
            lines,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Group {
    meter: String,
    sku: String,
    price_version: i32,
    currency: String,
    quantity: Decimal,
    amount_exact: Decimal,
    ids: Vec<Uuid>,
    /// The exact sum of every rated line of the group not written off (billed or not).
    cumulative_exact: Decimal,
    /// What finalized (non-void) invoices of the period already billed for the group.
    billed_minor: i64,
}

#[derive(sqlx::FromRow)]
struct LineRow {
    line_no: i32,
    meter: String,
    sku: String,
    price_version: i32,
    description: String,
    quantity: Decimal,
    amount_exact: Decimal,
    amount_minor: i64,
}

async fn fetch(conn: &mut PgConnection, id: Uuid, for_update: bool) -> DomainResult<Option<Row>> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM billing.invoices WHERE id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

async fn with_lines(conn: &mut PgConnection, row: Row) -> DomainResult<Invoice> {
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT line_no, meter, sku, price_version, description, quantity, amount_exact, amount_minor
         FROM billing.invoice_lines WHERE invoice_id = $1 ORDER BY line_no",
    )
    .bind(row.id)
    .fetch_all(conn)
    .await?;
    let lines = lines
        .into_iter()
        .map(|l| InvoiceLine {
            line_no: l.line_no,
            meter: l.meter,
            sku: l.sku,
            price_version: l.price_version,
            description: l.description,
            quantity: l.quantity,
            amount_exact: l.amount_exact,
            amount_minor: l.amount_minor,
        })
        .collect();
    Ok(row.invoice(lines))
}

/// Whether `org` has a finalized invoice with something due, `except` aside.
pub(crate) async fn has_unpaid(
    conn: &mut PgConnection,
    org: OrgId,
    except: Option<InvoiceId>,
) -> DomainResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM billing.invoices
             WHERE org_id = $1 AND state IN ('open', 'uncollectible')
               AND total_minor - credit_applied_minor - paid_minor - credited_minor > 0
               AND ($2::uuid IS NULL OR id <> $2))",
    )
    .bind(org.uuid())
    .bind(except.map(InvoiceId::uuid))
    .fetch_one(conn)
    .await?)
}

async fn lock_key(conn: &mut PgConnection, key: String) -> DomainResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Serialises building, finalizing and voiding the invoices of one org and period.
async fn lock_period(conn: &mut PgConnection, org: OrgId, period: Period) -> DomainResult<()> {
    lock_key(
        conn,
        format!(
            "billing.invoice:{}:{}:{}",
            org.uuid(),
            period.start.to_rfc3339(),
            period.end.to_rfc3339()
        ),
    )
    .await
}

fn finalize_key(id: InvoiceId) -> String {
    format!("invoice/{id}/finalize")
}

fn entry(account: Account, amount_minor: i64) -> Entry {
    Entry {
        account,
        amount_minor,
    }
}

fn not_found(id: InvoiceId) -> DomainError {
    DomainError::not_found("invoice_not_found", format!("invoice {id} not found"))
}

fn out_of_range() -> DomainError {
    DomainError::invalid(
        "amount_out_of_range",
        "an invoice amount exceeds 64-bit minor units",
    )
}

/// Rounds an exact amount to whole minor units, half away from zero: once per invoice line (the
/// one rounding rule; what callers show rounds the same way).
pub fn round_minor(exact: Decimal) -> DomainResult<i64> {
    exact
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .ok_or_else(out_of_range)
}

/// What a line bills for a group: its cumulative exact amount rounded once (half away from zero)
/// less what finalized invoices already billed for it. So a +0.4 after an original of 100.4
/// (billed 100) bills 1 (round(100.8) = 101), and sub-minor adjustments are never lost.
fn line_minor(cumulative_exact: Decimal, billed_minor: i64) -> DomainResult<i64> {
    round_minor(cumulative_exact)?
        .checked_sub(billed_minor)
        .ok_or_else(out_of_range)
}

/// `H100 GPU-seconds (h100-80gb-sxm), price version 1`; `Input tokens, price version 1`.
fn describe(meter: &str, sku: &str, price_version: i32) -> String {
    let meter_label = match meter {
        crate::usage::GPU_SECONDS => "GPU-seconds".to_string(),
        "input_tokens" => "Input tokens".to_string(),
        "output_tokens" => "Output tokens".to_string(),
        other => {
            let spaced = other.replace('_', " ");
            let mut chars = spaced.chars();
            match chars.next() {
                Some(c) => c.to_uppercase().chain(chars).collect(),
                None => spaced,
            }
        }
    };
    if sku.is_empty() {
        format!("{meter_label}, price version {price_version}")
    } else {
        let family = sku.split('-').next().unwrap_or(sku).to_uppercase();
        let meter_label = if meter == crate::usage::GPU_SECONDS {
            meter_label
        } else {
            meter_label.to_lowercase()
        };
        format!("{family} {meter_label} ({sku}), price version {price_version}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_once_half_away_from_zero() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(round_minor(d("1.2")).unwrap(), 1);
        assert_eq!(round_minor(d("0.5")).unwrap(), 1);
        assert_eq!(round_minor(d("-0.5")).unwrap(), -1);
        assert_eq!(round_minor(d("2.4999999")).unwrap(), 2);
        assert_eq!(round_minor(d("-2.5")).unwrap(), -3);
        // Cumulative: 100.4 billed 100; +0.4 makes 100.8, which rounds to 101: the line bills 1.
        assert_eq!(line_minor(d("100.8"), 100).unwrap(), 1);
        assert_eq!(line_minor(d("100.4"), 0).unwrap(), 100);
        // Sub-minor token adjustments add up instead of each rounding to 0.
        assert_eq!(line_minor(d("0.6"), 0).unwrap(), 1);
        assert_eq!(line_minor(d("-0.5"), 0).unwrap(), -1);
        assert_eq!(
            describe("gpu_seconds", "h100-80gb-sxm", 1),
            "H100 GPU-seconds (h100-80gb-sxm), price version 1"
        );
        assert_eq!(
            describe("input_tokens", "", 2),
            "Input tokens, price version 2"
        );
    }
}
