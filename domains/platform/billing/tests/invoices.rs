//! Invoices and payments against a real Postgres: drafts from rated lines (rounded once per
//! line), finalization to the ledger, corrections of finalized invoices, prepaid credit, and the
//! sandbox provider's charges, attempts and top-ups. Every test ends with a sound ledger.

mod common;

use chrono::{DateTime, Duration as Span, Utc};
use platform_billing::account::{self, BillingMode, Standing};
use platform_billing::invoice::{self, Invoice, InvoiceKind, InvoiceState};
use platform_billing::payment::{self, AttemptResult, SandboxProvider};
use platform_billing::{Decimal, Period, metering, usage};
use shared_ids::{InvoiceId, OrgId};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

fn november() -> Period {
    Period::parse("2026-11").unwrap()
}

fn october() -> Period {
    Period::parse("2026-10").unwrap()
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn sandbox(pool: &PgPool) -> SandboxProvider {
    SandboxProvider {
        pool: pool.clone(),
        confirm_after: Duration::from_millis(400),
    }
}

/// Writes a rated line as metering would: the first of an (org, period, meter, sku) is the
/// `original`, later ones `adjustment`s of it.
async fn rated(pool: &PgPool, org: OrgId, period: Period, meter: &str, sku: &str, amount: &str) {
    let original: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM billing.rated_lines WHERE org_id = $1 AND period_start = $2
           AND period_end = $3 AND meter = $4 AND sku = $5 AND kind = 'original'",
    )
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .bind(meter)
    .bind(sku)
    .fetch_optional(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO billing.rated_lines (id, run_id, org_id, period_start, period_end, meter, sku,
             price_version, quantity, amount_exact, currency, kind, corrects, reason, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 1, $8, 'USD', $9, $10, 'test', 'test')",
    )
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .bind(org.uuid())
    .bind(period.start)
    .bind(period.end)
    .bind(meter)
    .bind(sku)
    .bind(dec(amount))
    .bind(if original.is_some() {
        "adjustment"
    } else {
        "original"
    })
    .bind(original)
    .execute(pool)
    .await
    .unwrap();
}

/// A closed span of `gpus` H100s for `seconds`, starting `offset_s` into `period`.
async fn h100_span(
    pool: &PgPool,
    org: OrgId,
    period: Period,
    gpus: i32,
    offset_s: i64,
    seconds: i64,
) {
    let start: DateTime<Utc> = period.start + Span::seconds(offset_s);
    let id = format!("instance/{}", Uuid::now_v7());
    let mut conn = pool.acquire().await.unwrap();
    let opened = usage::open_span(
        &mut conn,
        &usage::SpanStart {
            id: id.clone(),
            org,
            project: None,
            meter: usage::GPU_SECONDS.into(),
            sku: "h100-80gb-sxm".into(),
            units: gpus,
            started_at: start,
        },
    )
    .await
    .unwrap();
    assert!(opened);
    assert!(
        usage::close_span(&mut conn, &id, start + Span::seconds(seconds))
            .await
            .unwrap()
    );
}

/// A finalized invoice of `amount` (exact) for `org`'s `period`.
async fn open_invoice(pool: &PgPool, org: OrgId, period: Period, amount: &str) -> Invoice {
    rated(pool, org, period, "output_tokens", "", amount).await;
    let draft = invoice::build_draft(pool, org, period)
        .await
        .unwrap()
        .unwrap();
    invoice::finalize(pool, draft.id).await.unwrap()
}

/// The entries of the ledger transaction with `key`, as (account, org, amount), sorted.
async fn entries(pool: &PgPool, key: &str) -> Vec<(String, Option<Uuid>, i64)> {
    sqlx::query_as(
        "SELECT e.account, e.org_id, e.amount_minor FROM billing.ledger_entries e
         JOIN billing.ledger_transactions t ON t.id = e.transaction_id
         WHERE t.key = $1 ORDER BY e.account, e.amount_minor",
    )
    .bind(key)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn sandbox_charges_like(pool: &PgPool, prefix: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM billing.sandbox_charges WHERE starts_with(idempotency_key, $1)",
    )
    .bind(prefix)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn credit(pool: &PgPool, org: OrgId) -> i64 {
    account::balance(pool, org).await.unwrap().credit_minor
}

#[tokio::test]
async fn a_draft_rounds_once_per_line_and_is_rebuilt_until_finalized() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (org, period) = (OrgId::new(), november());
    assert_eq!(
        invoice::build_draft(&pool, org, period).await.unwrap(),
        None
    );

    // Three rated lines of 0.4 each: one invoice line of round(1.2) = 1, not 3 × round(0.4) = 0.
    for _ in 0..3 {
        rated(&pool, org, period, "gpu_seconds", "h100-80gb-sxm", "0.4").await;
    }
    rated(&pool, org, period, "input_tokens", "", "2.5").await;
    // Another org's and another period's lines are not this draft's.
    rated(&pool, OrgId::new(), period, "input_tokens", "", "7").await;
    rated(&pool, org, october(), "input_tokens", "", "7").await;

    let draft = invoice::build_draft(&pool, org, period)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(draft.state, InvoiceState::Draft);
    assert_eq!(draft.kind, InvoiceKind::Invoice);
    assert_eq!(draft.corrects, None);
    assert_eq!(draft.currency, "USD");
    let lines: Vec<_> = draft
        .lines
        .iter()
        .map(|l| {
            (
                l.line_no,
                l.meter.as_str(),
                l.description.as_str(),
                l.quantity,
                l.amount_exact,
                l.amount_minor,
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (
                1,
                "gpu_seconds",
                "H100 GPU-seconds (h100-80gb-sxm), price version 1",
                dec("3"),
                dec("1.2"),
                1
            ),
            (
                2,
                "input_tokens",
                "Input tokens, price version 1",
                dec("1"),
                dec("2.5"),
                3
            ),
        ]
    );
    assert_eq!(draft.total_minor, 4);
    assert_eq!(draft.amount_due_minor, 4);

    // Nothing new: the same draft, unchanged.
    let again = invoice::build_draft(&pool, org, period)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, draft);

    // A late line goes on the same draft, whose lines are rebuilt from all its rated lines.
    rated(&pool, org, period, "gpu_seconds", "h100-80gb-sxm", "0.4").await;
    let rebuilt = invoice::build_draft(&pool, org, period)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rebuilt.id, draft.id);
    assert_eq!(rebuilt.lines.len(), 2);
    assert_eq!(rebuilt.lines[0].amount_exact, dec("1.6"));
    assert_eq!(rebuilt.lines[0].amount_minor, 2);
    assert_eq!(rebuilt.total_minor, 5);
    assert_eq!(
        count(
            &pool,
            &format!(
                "SELECT count(*) FROM billing.invoice_line_sources WHERE invoice_id = '{}'",
                draft.id
            )
        )
        .await,
        5,
        "every rated line of the draft is billed once"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM billing.invoices").await,
        1,
        "one draft per org and period"
    );
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn finalizing_posts_one_balanced_transaction_and_is_idempotent() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (org, period) = (OrgId::new(), november());
    account::ensure(&pool, org, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    // Metered usage: 1 H100 for an hour (299) and 2 for half an hour (299): 598 exactly.
    h100_span(&pool, org, period, 1, 0, 3600).await;
    h100_span(&pool, org, period, 2, 7200, 1800).await;
    metering::run(&pool, org, period, None, "test")
        .await
        .unwrap();

    let draft = invoice::build_draft(&pool, org, period)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(draft.lines.len(), 1);
    assert_eq!(draft.lines[0].quantity, dec("7200"));
    assert_eq!(draft.total_minor, 598);
    // A draft posts nothing.
    assert_eq!(
        count(&pool, "SELECT count(*) FROM billing.ledger_transactions").await,
        0
    );

    let open = invoice::finalize(&pool, draft.id).await.unwrap();
    assert_eq!(open.state, InvoiceState::Open);
    assert!(open.finalized_at.is_some());
    assert_eq!(open.paid_at, None);
    assert_eq!((open.credit_applied_minor, open.amount_due_minor), (0, 598));
    assert_eq!(open.lines, draft.lines);
    let key = format!("invoice/{}/finalize", draft.id);
    assert_eq!(
        entries(&pool, &key).await,
        vec![
            ("receivable".to_string(), Some(org.uuid()), 598),
            ("revenue".to_string(), None, -598),
        ]
    );

    // Again: the same invoice, nothing posted twice.
    let again = invoice::finalize(&pool, draft.id).await.unwrap();
    assert_eq!(again, open);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM billing.ledger_transactions").await,
        1
    );
    // Nothing new to bill: no new draft.
    assert_eq!(
        invoice::build_draft(&pool, org, period).await.unwrap(),
        None
    );

    // Reads: another org's invoice reads exactly as a missing one.
    let foreign = invoice::get(&pool, Some(OrgId::new()), draft.id)
        .await
        .unwrap_err();
    let missing_id = InvoiceId::new();
    let missing = invoice::get(&pool, Some(org), missing_id)
        .await
        .unwrap_err();
    assert_eq!(
        (foreign.code(), missing.code()),
        ("invoice_not_found", "invoice_not_found")
    );
    assert_eq!(
        foreign.to_string().replace(&draft.id.to_string(), "ID"),
        missing.to_string().replace(&missing_id.to_string(), "ID")
    );
    assert_eq!(
        invoice::get(&pool, Some(org), draft.id).await.unwrap(),
        open
    );
    assert_eq!(invoice::get(&pool, None, draft.id).await.unwrap(), open);
    let listed = invoice::list(&pool, org, None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].lines.is_empty());
    assert_eq!(listed[0].total_minor, 598);
    assert!(
        invoice::list(&pool, org, Some(draft.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let unpaid = invoice::unpaid(&pool, org).await.unwrap();
    assert_eq!(
        unpaid.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![draft.id]
    );

    // The database refuses editing a finalized invoice.
    let edit_line =
        sqlx::query("UPDATE billing.invoice_lines SET amount_minor = 1 WHERE invoice_id = $1")
            .bind(draft.id.uuid())
            .execute(&pool)
            .await;
    assert!(edit_line.is_err(), "a finalized invoice's lines are fixed");
    let edit_total = sqlx::query("UPDATE billing.invoices SET total_minor = 1 WHERE id = $1")
        .bind(draft.id.uuid())
        .execute(&pool)
        .await;
    assert!(edit_total.is_err(), "a finalized invoice's total is fixed");
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn a_finalized_invoice_is_corrected_by_adjusting_invoices_and_credit_notes() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (org, period) = (OrgId::new(), november());
    account::ensure(&pool, org, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    h100_span(&pool, org, period, 1, 0, 3600).await;
    metering::run(&pool, org, period, None, "test")
        .await
        .unwrap();
    let first = invoice::build_draft(&pool, org, period)
        .await
        .unwrap()
        .unwrap();
    let first = invoice::finalize(&pool, first.id).await.unwrap();
    assert_eq!(first.total_minor, 299);

    // Late usage of the period: metering writes an adjustment; it goes on an adjusting invoice.
    h100_span(&pool, org, period, 1, 3600, 1800).await;
    let run = metering::run(&pool, org, period, None, "test")
        .await
        .unwrap();
    assert_eq!(run.changes.len(), 1);
    assert_eq!(run.changes[0].kind, "adjustment");
    let adjusting = invoice::build_draft(&pool, org, period)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(adjusting.id, first.id);
    assert_eq!(adjusting.kind, InvoiceKind::Adjusting);
    assert_eq!(adjusting.corrects, Some(first.id));
    assert_eq!(adjusting.state, InvoiceState::Draft);
    assert_eq!(
        adjusting.total_minor, 150,
        "round(149.5) half away from zero"
    );
    assert_eq!(adjusting.lines.len(), 1);
    assert_eq!(adjusting.lines[0].amount_exact, dec("149.5"));
    let adjusting = invoice::finalize(&pool, adjusting.id).await.unwrap();
    assert_eq!(adjusting.state, InvoiceState::Open);
    assert_eq!(adjusting.amount_due_minor, 150);
    // The original is untouched.
    assert_eq!(invoice::get(&pool, None, first.id).await.unwrap(), first);

    // A correction downwards: a credit note, with a negative total, taken off what is owed.
    // Rounded cumulatively: the group's exact 299 + 149.5 - 100.4 = 348.1 rounds to 348, of which
    // 449 was billed: -101 (not round(-100.4) = -100).
    rated(&pool, org, period, "gpu_seconds", "h100-80gb-sxm", "-100.4").await;
    let note = invoice::build_draft(&pool, org, period)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note.kind, InvoiceKind::CreditNote);
    assert_eq!(note.corrects, Some(first.id));
    assert_eq!(note.total_minor, -101);
    assert_eq!(note.amount_due_minor, 0);
    let note = invoice::finalize(&pool, note.id).await.unwrap();
    assert_eq!(
        note.state,
        InvoiceState::Paid,
        "nothing is due on a credit note"
    );
    assert_eq!(
        entries(&pool, &format!("invoice/{}/finalize", note.id)).await,
        vec![
            ("receivable".to_string(), Some(org.uuid()), -101),
            ("revenue".to_string(), None, 101),
        ]
    );
    let corrected = invoice::get(&pool, None, first.id).await.unwrap();
    assert_eq!(corrected.amount_due_minor, 198);
    assert_eq!(
        (corrected.total_minor, corrected.lines.clone()),
        (first.total_minor, first.lines.clone()),
        "a credit note never edits the invoice it corrects"
    );
    // What is owed on the org's receivable is what its invoices say is due.
    let receivable = account::balance(&pool, org).await.unwrap().receivable_minor;
    assert_eq!(receivable, 198 + 150);
    // A credit note that takes off more than is owed settles the invoice and returns the rest as
    // credit.
    rated(&pool, org, period, "gpu_seconds", "h100-80gb-sxm", "-250").await;
    let note2 = invoice::build_draft(&pool, org, period)
        .await
        .unwrap()
        .unwrap();
    let note2 = invoice::finalize(&pool, note2.id).await.unwrap();
    assert_eq!(note2.total_minor, -250);
    assert_eq!(
        entries(&pool, &format!("invoice/{}/finalize", note2.id)).await,
        vec![
            ("prepaid_credit".to_string(), Some(org.uuid()), -52),
            ("receivable".to_string(), Some(org.uuid()), -198),
            ("revenue".to_string(), None, 250),
        ]
    );
    let settled = invoice::get(&pool, None, first.id).await.unwrap();
    assert_eq!(settled.state, InvoiceState::Paid);
    assert_eq!(settled.amount_due_minor, 0);
    assert_eq!(credit(&pool, org).await, 52);
    assert_eq!(
        invoice::unpaid(&pool, org)
            .await
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        vec![adjusting.id]
    );
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn prepaid_credit_covers_what_it_can() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let period = november();

    // Credit 200 of a 299 invoice: 99 left receivable, open.
    let short = OrgId::new();
    account::ensure(&pool, short, BillingMode::Prepaid, 200)
        .await
        .unwrap();
    h100_span(&pool, short, period, 1, 0, 3600).await;
    metering::run(&pool, short, period, None, "test")
        .await
        .unwrap();
    let draft = invoice::build_draft(&pool, short, period)
        .await
        .unwrap()
        .unwrap();
    let inv = invoice::finalize(&pool, draft.id).await.unwrap();
    assert_eq!(inv.state, InvoiceState::Open);
    assert_eq!((inv.credit_applied_minor, inv.amount_due_minor), (200, 99));
    assert_eq!(
        entries(&pool, &format!("invoice/{}/finalize", inv.id)).await,
        vec![
            ("prepaid_credit".to_string(), Some(short.uuid()), 200),
            ("receivable".to_string(), Some(short.uuid()), 99),
            ("revenue".to_string(), None, -299),
        ]
    );
    assert_eq!(credit(&pool, short).await, 0);

    // Credit 1000: all of it covered, paid at once; the rest stays credit.
    let rich = OrgId::new();
    account::ensure(&pool, rich, BillingMode::Prepaid, 1000)
        .await
        .unwrap();
    let inv = open_invoice(&pool, rich, period, "299").await;
    assert_eq!(inv.state, InvoiceState::Paid);
    assert!(inv.paid_at.is_some());
    assert_eq!((inv.credit_applied_minor, inv.amount_due_minor), (299, 0));
    assert_eq!(
        entries(&pool, &format!("invoice/{}/finalize", inv.id)).await,
        vec![
            ("prepaid_credit".to_string(), Some(rich.uuid()), 299),
            ("revenue".to_string(), None, -299),
        ]
    );
    assert_eq!(credit(&pool, rich).await, 701);
    // A credit note on an invoice credit paid gives the money back as credit.
    rated(&pool, rich, period, "output_tokens", "", "-50").await;
    let note = invoice::build_draft(&pool, rich, period)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note.kind, InvoiceKind::CreditNote);
    invoice::finalize(&pool, note.id).await.unwrap();
    assert_eq!(credit(&pool, rich).await, 751);

    // Postpaid: credit is applied too (a credit note's or an overpayment's credit is used by the
    // next invoice); the rest is receivable.
    let post = OrgId::new();
    account::ensure(&pool, post, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    account::grant_credit(&pool, post, 200, "goodwill", "goodwill")
        .await
        .unwrap();
    let inv = open_invoice(&pool, post, period, "299").await;
    assert_eq!(inv.state, InvoiceState::Open);
    assert_eq!((inv.credit_applied_minor, inv.amount_due_minor), (200, 99));
    assert_eq!(credit(&pool, post).await, 0);

    // Voiding an open invoice reverses its posting: the credit it used comes back.
    let voided = invoice::void(&pool, draft.id).await.unwrap();
    assert_eq!(voided.state, InvoiceState::Void);
    assert_eq!(voided.amount_due_minor, 0);
    assert_eq!(credit(&pool, short).await, 200);
    let corrects: Option<Uuid> =
        sqlx::query_scalar("SELECT corrects FROM billing.ledger_transactions WHERE key = $1")
            .bind(format!("invoice/{}/void", draft.id))
            .fetch_one(&pool)
            .await
            .unwrap();
    let finalize_tx: Uuid =
        sqlx::query_scalar("SELECT id FROM billing.ledger_transactions WHERE key = $1")
            .bind(format!("invoice/{}/finalize", draft.id))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(corrects, Some(finalize_tx));
    assert_eq!(invoice::void(&pool, draft.id).await.unwrap(), voided);
    assert_eq!(
        invoice::void(&pool, inv.id).await.map(|i| i.state).unwrap(),
        InvoiceState::Void
    );
    assert_eq!(
        credit(&pool, post).await,
        200,
        "the postpaid org's credit comes back"
    );
    let paid = invoice::list(&pool, rich, None, 10).await.unwrap();
    let paid_invoice = paid
        .iter()
        .find(|i| i.kind == InvoiceKind::Invoice)
        .unwrap();
    assert_eq!(
        invoice::void(&pool, paid_invoice.id)
            .await
            .unwrap_err()
            .code(),
        "invoice_not_voidable"
    );
    assert_eq!(
        invoice::finalize(&pool, draft.id).await.unwrap_err().code(),
        "invoice_void"
    );
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn a_successful_payment_settles_the_invoice_and_the_same_attempt_charges_once() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let provider = sandbox(&pool);
    let org = OrgId::new();
    account::ensure(&pool, org, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    let inv = open_invoice(&pool, org, november(), "299").await;

    // No payment method yet: retry later, nothing charged.
    let none = payment::attempt_invoice(&pool, &provider, inv.id, 1)
        .await
        .unwrap();
    assert_eq!(
        none,
        AttemptResult::RetryLater {
            reason: "no payment method".into()
        }
    );
    assert_eq!(sandbox_charges_like(&pool, "").await, 0);

    let bad = payment::add_method(&pool, &provider, org, "pm_card_visa", "Visa", false)
        .await
        .unwrap_err();
    assert_eq!(bad.code(), "invalid_payment_method");
    let m = payment::add_method(&pool, &provider, org, "pm_sandbox_success", "ok", false)
        .await
        .unwrap();
    assert!(m.is_default, "the first method is the default");
    account::mark_delinquent(&pool, org).await.unwrap();
    assert_eq!(
        account::balance(&pool, org).await.unwrap().standing,
        Standing::Delinquent
    );

    // The same attempt again (after "no payment method") now charges, under the same key.
    for _ in 0..2 {
        assert_eq!(
            payment::attempt_invoice(&pool, &provider, inv.id, 1)
                .await
                .unwrap(),
            AttemptResult::Paid
        );
    }
    let paid = invoice::get(&pool, None, inv.id).await.unwrap();
    assert_eq!(paid.state, InvoiceState::Paid);
    assert_eq!(paid.amount_due_minor, 0);
    assert!(paid.paid_at.is_some());
    assert_eq!(sandbox_charges_like(&pool, "").await, 1, "charged once");
    let attempts = payment::attempts(&pool, inv.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "succeeded");
    assert_eq!(attempts[0].amount_minor, 299);
    assert_eq!(
        entries(&pool, &format!("payment/invoice/{}/attempt/1", inv.id)).await,
        vec![
            ("cash".to_string(), None, 299),
            ("receivable".to_string(), Some(org.uuid()), -299),
        ]
    );
    // A later attempt finds nothing due.
    assert_eq!(
        payment::attempt_invoice(&pool, &provider, inv.id, 2)
            .await
            .unwrap(),
        AttemptResult::Paid
    );
    assert_eq!(sandbox_charges_like(&pool, "").await, 1);
    let account = account::get(&pool, org).await.unwrap();
    assert_eq!(
        account.delinquent_since, None,
        "paying everything clears delinquency"
    );
    assert_eq!(
        account::balance(&pool, org).await.unwrap().receivable_minor,
        0
    );
    assert!(invoice::unpaid(&pool, org).await.unwrap().is_empty());
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn declines_twice_is_paid_on_the_third_attempt() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let provider = sandbox(&pool);
    let org = OrgId::new();
    account::ensure(&pool, org, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    payment::add_method(
        &pool,
        &provider,
        org,
        "pm_sandbox_declines_twice",
        "",
        false,
    )
    .await
    .unwrap();
    let inv = open_invoice(&pool, org, november(), "1234.5").await;
    assert_eq!(inv.amount_due_minor, 1235);

    for attempt in 1..=2 {
        let r = payment::attempt_invoice(&pool, &provider, inv.id, attempt)
            .await
            .unwrap();
        assert!(
            matches!(r, AttemptResult::RetryLater { .. }),
            "{attempt}: {r:?}"
        );
    }
    // Attempt 2 run again reuses its outcome: no new charge, still a decline.
    let r = payment::attempt_invoice(&pool, &provider, inv.id, 2)
        .await
        .unwrap();
    assert!(matches!(r, AttemptResult::RetryLater { .. }));
    assert_eq!(sandbox_charges_like(&pool, "").await, 2);
    assert_eq!(
        payment::attempt_invoice(&pool, &provider, inv.id, 3)
            .await
            .unwrap(),
        AttemptResult::Paid
    );
    let attempts = payment::attempts(&pool, inv.id).await.unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.attempt, a.outcome.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "soft_decline"), (2, "soft_decline"), (3, "succeeded")]
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM billing.ledger_transactions WHERE key LIKE 'payment/%'"
        )
        .await,
        1
    );
    assert_eq!(
        invoice::get(&pool, None, inv.id).await.unwrap().state,
        InvoiceState::Paid
    );
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn hard_declines_stop_network_errors_retry_and_slow_confirms_wait() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let provider = sandbox(&pool);
    let period = november();

    // Hard decline: stop, recorded, and the same attempt again charges nothing new.
    let hard = OrgId::new();
    payment::add_method(&pool, &provider, hard, "pm_sandbox_hard_decline", "", false)
        .await
        .unwrap();
    let inv = open_invoice(&pool, hard, period, "500").await;
    for _ in 0..2 {
        let r = payment::attempt_invoice(&pool, &provider, inv.id, 1)
            .await
            .unwrap();
        assert!(matches!(r, AttemptResult::Stop { .. }), "{r:?}");
    }
    assert_eq!(
        sandbox_charges_like(&pool, &format!("invoice/{}/", inv.id)).await,
        1
    );
    assert_eq!(
        invoice::get(&pool, None, inv.id).await.unwrap().state,
        InvoiceState::Open
    );
    // Retries ran out: uncollectible, still owed, and a later payment still settles it.
    let bad = invoice::mark_uncollectible(&pool, inv.id).await.unwrap();
    assert_eq!(bad.state, InvoiceState::Uncollectible);
    assert_eq!(bad.amount_due_minor, 500);
    assert_eq!(
        invoice::mark_uncollectible(&pool, inv.id).await.unwrap(),
        bad
    );
    assert_eq!(invoice::unpaid(&pool, hard).await.unwrap().len(), 1);

    // Insufficient funds: retry later.
    let poor = OrgId::new();
    payment::add_method(
        &pool,
        &provider,
        poor,
        "pm_sandbox_insufficient_funds",
        "",
        false,
    )
    .await
    .unwrap();
    let poor_inv = open_invoice(&pool, poor, period, "500").await;
    let r = payment::attempt_invoice(&pool, &provider, poor_inv.id, 1)
        .await
        .unwrap();
    assert!(matches!(r, AttemptResult::RetryLater { .. }), "{r:?}");

    // Network error: retry later, nothing recorded at the sandbox; the attempt's row says error.
    let flaky = OrgId::new();
    payment::add_method(
        &pool,
        &provider,
        flaky,
        "pm_sandbox_network_error",
        "",
        false,
    )
    .await
    .unwrap();
    let flaky_inv = open_invoice(&pool, flaky, period, "500").await;
    let r = payment::attempt_invoice(&pool, &provider, flaky_inv.id, 1)
        .await
        .unwrap();
    assert!(matches!(r, AttemptResult::RetryLater { .. }), "{r:?}");
    assert_eq!(
        sandbox_charges_like(&pool, &format!("invoice/{}/", flaky_inv.id)).await,
        0
    );
    let attempts = payment::attempts(&pool, flaky_inv.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "error");
    // The outcome was unknown: the same attempt with a working default charges under its key.
    payment::add_method(&pool, &provider, flaky, "pm_sandbox_success", "", true)
        .await
        .unwrap();
    assert_eq!(
        payment::methods(&pool, flaky)
            .await
            .unwrap()
            .iter()
            .map(|m| (m.token.as_str(), m.is_default))
            .collect::<Vec<_>>(),
        vec![
            ("pm_sandbox_network_error", false),
            ("pm_sandbox_success", true)
        ]
    );
    assert_eq!(
        payment::attempt_invoice(&pool, &provider, flaky_inv.id, 1)
            .await
            .unwrap(),
        AttemptResult::Paid
    );
    assert_eq!(
        payment::attempts(&pool, flaky_inv.id).await.unwrap().len(),
        1
    );

    // Slow confirm: pending until the provider confirms, one charge throughout.
    let slow = OrgId::new();
    payment::add_method(&pool, &provider, slow, "pm_sandbox_slow_confirm", "", false)
        .await
        .unwrap();
    let slow_inv = open_invoice(&pool, slow, period, "500").await;
    for _ in 0..2 {
        assert_eq!(
            payment::attempt_invoice(&pool, &provider, slow_inv.id, 1)
                .await
                .unwrap(),
            AttemptResult::Pending
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        payment::attempt_invoice(&pool, &provider, slow_inv.id, 1)
            .await
            .unwrap(),
        AttemptResult::Paid
    );
    assert_eq!(
        sandbox_charges_like(&pool, &format!("invoice/{}/", slow_inv.id)).await,
        1
    );
    let attempts = payment::attempts(&pool, slow_inv.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "succeeded");

    // Paying the hard-declined org's uncollectible invoice with a new method, by hand.
    let good = payment::add_method(&pool, &provider, hard, "pm_sandbox_success", "", false)
        .await
        .unwrap();
    assert!(!good.is_default);
    let results = payment::pay_unpaid(&pool, &provider, hard, Some(good.id), "k1")
        .await
        .unwrap();
    assert_eq!(results, vec![(inv.id, AttemptResult::Paid)]);
    assert_eq!(
        invoice::get(&pool, None, inv.id).await.unwrap().state,
        InvoiceState::Paid
    );
    assert_eq!(
        payment::attempts(&pool, inv.id).await.unwrap()[1].attempt,
        2
    );
    assert!(
        payment::pay_unpaid(&pool, &provider, hard, Some(good.id), "k1")
            .await
            .unwrap()
            .is_empty()
    );
    let foreign = payment::pay_unpaid(&pool, &provider, poor, Some(good.id), "k2")
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), "payment_method_not_found");
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn a_top_up_raises_credit_once_per_key() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let provider = sandbox(&pool);
    let org = OrgId::new();
    account::ensure(&pool, org, BillingMode::Prepaid, 0)
        .await
        .unwrap();
    account::refresh_standing(&pool, org, &[]).await.unwrap();
    assert_eq!(
        account::balance(&pool, org).await.unwrap().standing,
        Standing::CreditExhausted
    );
    let m = payment::add_method(&pool, &provider, org, "pm_sandbox_success", "card", false)
        .await
        .unwrap();
    for bad in [0, -5, 10_000_001] {
        let e = payment::top_up(&pool, &provider, org, bad, m.id, "t1")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_amount", "{bad}");
    }
    for _ in 0..2 {
        assert_eq!(
            payment::top_up(&pool, &provider, org, 5000, m.id, "t1")
                .await
                .unwrap(),
            AttemptResult::Paid
        );
    }
    let key = format!("topup/{}/t1", org.uuid());
    assert_eq!(
        entries(&pool, &key).await,
        vec![
            ("cash".to_string(), None, 5000),
            ("prepaid_credit".to_string(), Some(org.uuid()), -5000),
        ]
    );
    assert_eq!(sandbox_charges_like(&pool, &key).await, 1);
    let balance = account::balance(&pool, org).await.unwrap();
    assert_eq!(balance.credit_minor, 5000);
    assert_eq!(balance.standing, Standing::Good);
    assert_eq!(
        payment::top_up(&pool, &provider, org, 6000, m.id, "t1")
            .await
            .unwrap_err()
            .code(),
        "idempotency_key_reused"
    );
    // Another org's method is not this org's.
    let other = OrgId::new();
    account::ensure(&pool, other, BillingMode::Prepaid, 0)
        .await
        .unwrap();
    assert_eq!(
        payment::top_up(&pool, &provider, other, 100, m.id, "t1")
            .await
            .unwrap_err()
            .code(),
        "payment_method_not_found"
    );
    // A declined top-up adds nothing.
    let poor = payment::add_method(
        &pool,
        &provider,
        org,
        "pm_sandbox_insufficient_funds",
        "",
        false,
    )
    .await
    .unwrap();
    let r = payment::top_up(&pool, &provider, org, 100, poor.id, "t2")
        .await
        .unwrap();
    assert!(matches!(r, AttemptResult::RetryLater { .. }), "{r:?}");
    assert_eq!(credit(&pool, org).await, 5000);
    // The credit pays the next invoice.
    let inv = open_invoice(&pool, org, november(), "1200").await;
    assert_eq!(inv.state, InvoiceState::Paid);
    assert_eq!(credit(&pool, org).await, 3800);
    common::assert_ledger_sound(&pool).await;
}

/// The ledger entries of every payment of `invoice` (keys `payment/invoice/<id>/…`), as
/// (account, amount) summed per account, sorted.
async fn payment_entries(pool: &PgPool, invoice: InvoiceId) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT e.account, sum(e.amount_minor)::bigint FROM billing.ledger_entries e
         JOIN billing.ledger_transactions t ON t.id = e.transaction_id
         WHERE starts_with(t.key, $1) GROUP BY e.account ORDER BY e.account",
    )
    .bind(format!("payment/invoice/{invoice}/"))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A credit note of `amount` (exact, negative) on `org`'s `period`, finalized.
async fn credit_note(pool: &PgPool, org: OrgId, period: Period, amount: &str) -> Invoice {
    rated(pool, org, period, "output_tokens", "", amount).await;
    let note = invoice::build_draft(pool, org, period)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note.kind, InvoiceKind::CreditNote);
    invoice::finalize(pool, note.id).await.unwrap()
}

#[tokio::test]
async fn a_payment_records_what_was_charged_and_a_late_success_is_never_dropped() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let provider = sandbox(&pool);
    let period = november();
    let slow_org = || async {
        let org = OrgId::new();
        account::ensure(&pool, org, BillingMode::Postpaid, 0)
            .await
            .unwrap();
        payment::add_method(&pool, &provider, org, "pm_sandbox_slow_confirm", "", false)
            .await
            .unwrap();
        let inv = open_invoice(&pool, org, period, "500").await;
        // The charge of 500 is accepted, not confirmed yet.
        assert_eq!(
            payment::attempt_invoice(&pool, &provider, inv.id, 1)
                .await
                .unwrap(),
            AttemptResult::Pending
        );
        (org, inv)
    };
    let (reduced, reduced_inv) = slow_org().await;
    let (settled, settled_inv) = slow_org().await;
    let (voided, voided_inv) = slow_org().await;
    // While the charges are in flight: a credit note takes 200 off one invoice, another settles
    // the second entirely, and the third invoice is voided.
    credit_note(&pool, reduced, period, "-200").await;
    assert_eq!(
        invoice::get(&pool, None, reduced_inv.id)
            .await
            .unwrap()
            .amount_due_minor,
        300
    );
    credit_note(&pool, settled, period, "-500").await;
    assert_eq!(
        invoice::get(&pool, None, settled_inv.id)
            .await
            .unwrap()
            .state,
        InvoiceState::Paid
    );
    invoice::void(&pool, voided_inv.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The provider charged 500 each time: all of it is recorded, what was not due is credit.
    assert_eq!(
        payment::attempt_invoice(&pool, &provider, reduced_inv.id, 1)
            .await
            .unwrap(),
        AttemptResult::Paid
    );
    assert_eq!(
        payment_entries(&pool, reduced_inv.id).await,
        vec![
            ("cash".to_string(), 500),
            ("prepaid_credit".to_string(), -200),
            ("receivable".to_string(), -300),
        ]
    );
    let paid = invoice::get(&pool, None, reduced_inv.id).await.unwrap();
    assert_eq!((paid.state, paid.amount_due_minor), (InvoiceState::Paid, 0));
    assert_eq!(credit(&pool, reduced).await, 200);

    assert_eq!(
        payment::attempt_invoice(&pool, &provider, settled_inv.id, 1)
            .await
            .unwrap(),
        AttemptResult::Paid
    );
    assert_eq!(
        payment_entries(&pool, settled_inv.id).await,
        vec![
            ("cash".to_string(), 500),
            ("prepaid_credit".to_string(), -500),
        ]
    );
    assert_eq!(credit(&pool, settled).await, 500);

    let r = payment::attempt_invoice(&pool, &provider, voided_inv.id, 1)
        .await
        .unwrap();
    assert!(matches!(r, AttemptResult::Stop { .. }), "{r:?}");
    assert_eq!(
        payment_entries(&pool, voided_inv.id).await,
        vec![
            ("cash".to_string(), 500),
            ("prepaid_credit".to_string(), -500),
        ]
    );
    assert_eq!(credit(&pool, voided).await, 500);
    assert_eq!(
        invoice::get(&pool, None, voided_inv.id)
            .await
            .unwrap()
            .state,
        InvoiceState::Void
    );
    for inv in [&reduced_inv, &settled_inv, &voided_inv] {
        let attempts = payment::attempts(&pool, inv.id).await.unwrap();
        assert_eq!(
            attempts
                .iter()
                .map(|a| (a.outcome.as_str(), a.amount_minor))
                .collect::<Vec<_>>(),
            vec![("succeeded", 500)],
            "the provider's success stays recorded"
        );
        // Again: nothing posted twice.
        payment::attempt_invoice(&pool, &provider, inv.id, 1)
            .await
            .unwrap();
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM billing.ledger_transactions WHERE key LIKE 'payment/%'"
        )
        .await,
        3
    );

    // Recorded directly: a success for an invoice that is already paid is credit, once per key.
    let mut tx = pool.begin().await.unwrap();
    let same = invoice::record_payment(&mut tx, settled_inv.id, "late/1", 42)
        .await
        .unwrap();
    assert_eq!(same.state, InvoiceState::Paid);
    invoice::record_payment(&mut tx, settled_inv.id, "late/1", 42)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        entries(&pool, "payment/late/1").await,
        vec![
            ("cash".to_string(), None, 42),
            ("prepaid_credit".to_string(), Some(settled.uuid()), -42),
        ]
    );
    assert_eq!(credit(&pool, settled).await, 542);
    // The next invoice uses that credit (the org is postpaid).
    let next = open_invoice(&pool, settled, november().next(), "600").await;
    assert_eq!(
        (next.credit_applied_minor, next.amount_due_minor),
        (542, 58)
    );
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn collecting_an_invoice_is_serialised_and_a_pending_payment_is_not_charged_twice() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let provider = sandbox(&pool);
    let period = november();
    // A workflow attempt and a manual payment of the same invoice at once, for several orgs: each
    // invoice is charged once, for what is due.
    let mut invoices = Vec::new();
    for _ in 0..4 {
        let org = OrgId::new();
        account::ensure(&pool, org, BillingMode::Postpaid, 0)
            .await
            .unwrap();
        payment::add_method(&pool, &provider, org, "pm_sandbox_success", "", false)
            .await
            .unwrap();
        invoices.push((org, open_invoice(&pool, org, period, "500").await));
    }
    let races: Vec<_> = invoices
        .iter()
        .map(|(org, inv)| {
            let (pool, provider, org, id) = (pool.clone(), provider.clone(), *org, inv.id);
            tokio::spawn(async move {
                let (workflow, manual) = tokio::join!(
                    payment::attempt_invoice(&pool, &provider, id, 1),
                    payment::pay_unpaid(&pool, &provider, org, None, "now"),
                );
                (workflow.unwrap(), manual.unwrap())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for race in races {
        outcomes.push(race.await.unwrap());
    }
    for ((org, inv), (workflow, manual)) in invoices.iter().zip(outcomes) {
        assert_eq!(workflow, AttemptResult::Paid);
        assert!(
            manual.iter().all(|(_, r)| *r == AttemptResult::Paid),
            "{manual:?}"
        );
        assert_eq!(
            sandbox_charges_like(&pool, &format!("invoice/{}/", inv.id)).await,
            1,
            "invoice {} charged once",
            inv.id
        );
        assert_eq!(
            payment_entries(&pool, inv.id).await,
            vec![("cash".to_string(), 500), ("receivable".to_string(), -500)]
        );
        assert_eq!(credit(&pool, *org).await, 0);
    }

    // A payment pending at the provider is not charged again by hand.
    let slow_provider = SandboxProvider {
        pool: pool.clone(),
        confirm_after: Duration::from_secs(600),
    };
    let org = OrgId::new();
    account::ensure(&pool, org, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    payment::add_method(
        &pool,
        &slow_provider,
        org,
        "pm_sandbox_slow_confirm",
        "",
        false,
    )
    .await
    .unwrap();
    let inv = open_invoice(&pool, org, period, "500").await;
    assert_eq!(
        payment::attempt_invoice(&pool, &slow_provider, inv.id, 1)
            .await
            .unwrap(),
        AttemptResult::Pending
    );
    let err = payment::pay_unpaid(&pool, &slow_provider, org, None, "k1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "payment_pending");
    assert!(
        matches!(err, shared_kernel::DomainError::Conflict { .. }),
        "{err:?}"
    );
    assert_eq!(
        sandbox_charges_like(&pool, &format!("invoice/{}/", inv.id)).await,
        1,
        "nothing charged a second time"
    );
    assert_eq!(payment::attempts(&pool, inv.id).await.unwrap().len(), 1);
    // The workflow's own look at the same attempt still confirms it (no new charge).
    assert_eq!(
        payment::attempt_invoice(&pool, &slow_provider, inv.id, 1)
            .await
            .unwrap(),
        AttemptResult::Pending
    );
    assert_eq!(
        sandbox_charges_like(&pool, &format!("invoice/{}/", inv.id)).await,
        1
    );
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn late_adjustments_round_cumulatively_per_line() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (org, period) = (OrgId::new(), november());
    account::ensure(&pool, org, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    let first = open_invoice(&pool, org, period, "100.4").await;
    assert_eq!(first.total_minor, 100);

    // +0.4: the group's exact 100.8 rounds to 101, of which 100 is billed: +1, not round(0.4) = 0.
    rated(&pool, org, period, "output_tokens", "", "0.4").await;
    let adjusting = invoice::build_draft(&pool, org, period)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(adjusting.kind, InvoiceKind::Adjusting);
    assert_eq!(adjusting.lines.len(), 1);
    assert_eq!(adjusting.lines[0].amount_exact, dec("0.4"));
    assert_eq!(adjusting.lines[0].amount_minor, 1);
    assert_eq!(adjusting.total_minor, 1);
    invoice::finalize(&pool, adjusting.id).await.unwrap();

    // Sub-minor token adjustments are never lost: 101.1 and 101.4 bill nothing more, 101.7 bills 1.
    let mut totals = Vec::new();
    for _ in 0..3 {
        rated(&pool, org, period, "output_tokens", "", "0.3").await;
        let draft = invoice::build_draft(&pool, org, period)
            .await
            .unwrap()
            .unwrap();
        totals.push(draft.total_minor);
        invoice::finalize(&pool, draft.id).await.unwrap();
    }
    assert_eq!(totals, vec![0, 0, 1]);
    // Downwards: -0.4 makes 101.3, which rounds to 101, of which 102 was billed: -1.
    rated(&pool, org, period, "output_tokens", "", "-0.4").await;
    let note = invoice::build_draft(&pool, org, period)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((note.kind, note.total_minor), (InvoiceKind::CreditNote, -1));
    invoice::finalize(&pool, note.id).await.unwrap();
    let billed: i64 = sqlx::query_scalar(
        "SELECT sum(l.amount_minor)::bigint FROM billing.invoice_lines l
         JOIN billing.invoices i ON i.id = l.invoice_id WHERE i.org_id = $1",
    )
    .bind(org.uuid())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(billed, 101, "round(101.3), billed once overall");

    // A voided invoice's lines are written off: neither counted nor billed again.
    let other = OrgId::new();
    let voided = open_invoice(&pool, other, period, "10.4").await;
    invoice::void(&pool, voided.id).await.unwrap();
    rated(&pool, other, period, "output_tokens", "", "0.4").await;
    let after_void = invoice::build_draft(&pool, other, period)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after_void.total_minor, 0,
        "round(0.4) of what is not written off"
    );
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn a_postpaid_orgs_credit_from_a_credit_note_pays_its_next_invoice() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    account::ensure(&pool, org, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    let first = open_invoice(&pool, org, october(), "299").await;
    assert_eq!(first.amount_due_minor, 299);
    // Corrected by 400 after the fact: 299 off what is owed, 101 given back as credit.
    credit_note(&pool, org, october(), "-400").await;
    assert_eq!(credit(&pool, org).await, 101);
    let next = open_invoice(&pool, org, november(), "299").await;
    assert_eq!(
        (next.credit_applied_minor, next.amount_due_minor),
        (101, 198)
    );
    assert_eq!(
        entries(&pool, &format!("invoice/{}/finalize", next.id)).await,
        vec![
            ("prepaid_credit".to_string(), Some(org.uuid()), 101),
            ("receivable".to_string(), Some(org.uuid()), 198),
            ("revenue".to_string(), None, -299),
        ]
    );
    assert_eq!(credit(&pool, org).await, 0);
    common::assert_ledger_sound(&pool).await;
}
