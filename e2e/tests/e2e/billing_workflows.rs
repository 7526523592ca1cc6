//! The billing workflows end to end, on the worker's billing task queue (each test its own):
//! dunning (`PaymentCollection` paid after two soft declines, stopped by a hard decline into
//! uncollectible + delinquent, exhausted into uncollectible + delinquent, a pending charge looked
//! at a bounded number of times), a metering rerun that changes nothing, corrections of a
//! finalized period billed by the rerun (late usage: an adjusting invoice, finalized and
//! collected; a cheaper price version: a credit note), a whole `BillingCycle` from a period's end
//! to its invoice paid, a worker SIGKILLed right after a charge and restarted, which charges
//! nobody twice, and credit enforcement that one org it cannot refresh does not stop.

use crate::harness::{Options, Platform, temporal_args};
use activities::billing::vocabulary::activity;
use platform_billing::Period;
use platform_billing::account::{self, BillingMode, Standing};
use platform_billing::invoice::{self, Invoice, InvoiceKind, InvoiceState};
use platform_billing::payment::{self, RetrySchedule, SandboxProvider};
use platform_billing::usage::{self, SpanStart};
use runtime::ActivityHooks;
use shared_ids::OrgId;
use std::time::Duration;
use temporalio_client::{Client, WorkflowGetResultOptions};
use workflows::billing::billing_cycle::{self, CycleInput};
use workflows::billing::credit_enforcement::{EnforcementInput, EnforcementOutcome};
use workflows::billing::metering_run::{self, MeteringRunInput};
use workflows::billing::payment_collection::{self, CollectionInput, CollectionOutcome};
use workflows::billing::{BillingCycle, CreditEnforcement, PaymentCollection};

const LONG: Duration = Duration::from_secs(120);

/// The sandbox's test payment methods (`platform_billing::payment`).
mod sandbox {
    pub const SUCCESS: &str = "pm_sandbox_success";
    pub const INSUFFICIENT_FUNDS: &str = "pm_sandbox_insufficient_funds";
    pub const HARD_DECLINE: &str = "pm_sandbox_hard_decline";
    pub const DECLINES_TWICE: &str = "pm_sandbox_declines_twice";
    pub const SLOW_CONFIRM: &str = "pm_sandbox_slow_confirm";
}

/// A period an hour ago, ten minutes long (after price book version 1 took effect).
fn past_period() -> Period {
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    Period::aligned(an_hour_ago, chrono::Duration::minutes(10))
}

fn seconds(delays: &[u64]) -> RetrySchedule {
    RetrySchedule {
        delays: delays.iter().map(|s| Duration::from_secs(*s)).collect(),
    }
}

async fn client() -> Client {
    temporal_args().connect("billing-test").await.unwrap()
}

/// A fresh postpaid org (its own id, so workflow ids never meet another test's) paying with
/// `token`, with one H100 GPU used for the first five minutes of `period`.
async fn postpaid_org_with_usage(p: &Platform, token: &str, period: Period) -> OrgId {
    let name = format!("billing-{}", uuid::Uuid::new_v4().simple());
    let (org, project) = platform_iam::orgs::create(&p.pool, &name).await.unwrap();
    account::ensure(&p.pool, org.id, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    let provider = SandboxProvider {
        pool: p.pool.clone(),
        confirm_after: Duration::from_secs(1),
    };
    payment::add_method(&p.pool, &provider, org.id, token, "test card", true)
        .await
        .unwrap();
    let span = SpanStart {
        id: format!("instance/{}", uuid::Uuid::new_v4()),
        org: org.id,
        project: Some(project.id),
        meter: usage::GPU_SECONDS.into(),
        sku: "h100-80gb-sxm".into(),
        units: 1,
        started_at: period.start,
    };
    used(p, span, chrono::Duration::minutes(5)).await;
    org.id
}

/// Records `span`, closed `length` after it started.
async fn used(p: &Platform, span: SpanStart, length: chrono::Duration) {
    let mut tx = p.pool.begin().await.unwrap();
    usage::open_span(&mut tx, &span).await.unwrap();
    usage::close_span(&mut tx, &span.id, span.started_at + length)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// A postpaid org with one finalized invoice that has something due.
async fn finalized_invoice(p: &Platform, token: &str) -> Invoice {
    let period = past_period();
    let org = postpaid_org_with_usage(p, token, period).await;
    billing_platform_rates(p, org, period).await;
    let draft = invoice::build_draft(&p.pool, org, period)
        .await
        .unwrap()
        .expect("a draft: the period has usage");
    let open = invoice::finalize(&p.pool, draft.id).await.unwrap();
    assert_eq!(open.state, InvoiceState::Open);
    assert!(open.amount_due_minor > 0, "{open:?}");
    open
}

async fn billing_platform_rates(p: &Platform, org: OrgId, period: Period) {
    platform_billing::metering::run(&p.pool, org, period, None, "test")
        .await
        .unwrap();
}

/// Collects `invoice` on `schedule` through the worker and waits for the outcome.
async fn collect(p: &Platform, invoice: &Invoice, schedule: RetrySchedule) -> CollectionOutcome {
    collect_looking(p, invoice, schedule, payment_collection::MAX_PENDING_LOOKS).await
}

/// [`collect`], looking at a pending attempt at most `max_pending_looks` times.
async fn collect_looking(
    p: &Platform,
    invoice: &Invoice,
    schedule: RetrySchedule,
    max_pending_looks: u32,
) -> CollectionOutcome {
    let client = client().await;
    let input = CollectionInput {
        invoice: invoice.id,
        org: invoice.org,
        schedule,
        pending_recheck_s: 1,
        max_pending_looks,
    };
    payment_collection::start(&client, &p.billing.billing_task_queue, input)
        .await
        .unwrap();
    collection_outcome(&client, invoice).await
}

async fn collection_outcome(client: &Client, invoice: &Invoice) -> CollectionOutcome {
    let handle = client
        .get_workflow_handle::<PaymentCollection>(payment_collection::workflow_id(invoice.id));
    tokio::time::timeout(LONG, handle.get_result(WorkflowGetResultOptions::default()))
        .await
        .expect("the collection ends")
        .expect("the collection succeeds")
}

/// Charges the sandbox recorded for the invoice (one per idempotency key).
async fn sandbox_charges(p: &Platform, invoice: &Invoice) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM billing.sandbox_charges WHERE starts_with(idempotency_key, $1)",
    )
    .bind(format!("invoice/{}/", invoice.id))
    .fetch_one(&p.pool)
    .await
    .unwrap()
}

/// Payments posted to the ledger for the org.
async fn payment_postings(p: &Platform, org: OrgId) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM billing.ledger_transactions WHERE org_id = $1 AND starts_with(key, 'payment/')",
    )
    .bind(org.uuid())
    .fetch_one(&p.pool)
    .await
    .unwrap()
}

async fn assert_ledger_sound(p: &Platform) {
    let violations = platform_billing::ledger::check_invariants(&p.pool)
        .await
        .unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_dunning_pays_on_the_third_attempt_after_two_soft_declines() {
    let p = Platform::start(Options::default()).await;
    let open = finalized_invoice(&p, sandbox::DECLINES_TWICE).await;
    let outcome = collect(&p, &open, seconds(&[1, 1])).await;
    assert_eq!(outcome, CollectionOutcome::Paid { attempts: 3 });
    let paid = invoice::get(&p.pool, None, open.id).await.unwrap();
    assert_eq!(paid.state, InvoiceState::Paid);
    assert_eq!(paid.amount_due_minor, 0);
    assert_eq!(sandbox_charges(&p, &open).await, 3);
    assert_eq!(payment::attempts(&p.pool, open.id).await.unwrap().len(), 3);
    assert_eq!(payment_postings(&p, open.org).await, 1);
    assert_ledger_sound(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_dunning_stops_at_a_hard_decline_leaving_the_invoice_uncollectible_and_the_org_delinquent()
 {
    let p = Platform::start(Options::default()).await;
    let open = finalized_invoice(&p, sandbox::HARD_DECLINE).await;
    let outcome = collect(&p, &open, seconds(&[1, 1])).await;
    // Stopped (not exhausted): one attempt, no retries.
    assert!(
        matches!(outcome, CollectionOutcome::Stopped { attempts: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(sandbox_charges(&p, &open).await, 1);
    // A dead card: the invoice is uncollectible and a postpaid org cannot keep launching.
    let gone = invoice::get(&p.pool, None, open.id).await.unwrap();
    assert_eq!(gone.state, InvoiceState::Uncollectible);
    let acct = account::get(&p.pool, open.org).await.unwrap();
    assert!(acct.delinquent_since.is_some(), "{acct:?}");
    let balance = account::balance(&p.pool, open.org).await.unwrap();
    assert_eq!(balance.standing, Standing::Delinquent);
    assert_eq!(payment_postings(&p, open.org).await, 0);
    assert_ledger_sound(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_dunning_gives_a_pending_attempt_a_bounded_number_of_looks() {
    let mut billing = workers::billing::BillingWorkerConfig::for_tests(String::new());
    // The sandbox keeps slow charges pending for an hour: never confirmed within the test.
    billing.sandbox_confirm_seconds = 3600;
    let p = Platform::start(Options {
        billing,
        ..Options::default()
    })
    .await;
    let open = finalized_invoice(&p, sandbox::SLOW_CONFIRM).await;
    // Two looks at each of two attempts, then the schedule ends: uncollectible.
    let outcome = collect_looking(&p, &open, seconds(&[1]), 2).await;
    assert!(
        matches!(
            outcome,
            CollectionOutcome::Uncollectible { attempts: 2, ref reason } if reason.contains("pending")
        ),
        "{outcome:?}"
    );
    assert_eq!(sandbox_charges(&p, &open).await, 2);
    assert_eq!(payment::attempts(&p.pool, open.id).await.unwrap().len(), 2);
    let gone = invoice::get(&p.pool, None, open.id).await.unwrap();
    assert_eq!(gone.state, InvoiceState::Uncollectible);
    assert!(
        account::get(&p.pool, open.org)
            .await
            .unwrap()
            .delinquent_since
            .is_some()
    );
    assert_ledger_sound(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_dunning_exhausted_leaves_the_invoice_uncollectible_and_the_org_delinquent() {
    let p = Platform::start(Options::default()).await;
    let open = finalized_invoice(&p, sandbox::INSUFFICIENT_FUNDS).await;
    let outcome = collect(&p, &open, seconds(&[1, 1])).await;
    assert!(
        matches!(
            outcome,
            CollectionOutcome::Uncollectible { attempts: 3, .. }
        ),
        "{outcome:?}"
    );
    assert_eq!(sandbox_charges(&p, &open).await, 3);
    let gone = invoice::get(&p.pool, None, open.id).await.unwrap();
    assert_eq!(gone.state, InvoiceState::Uncollectible);
    let acct = account::get(&p.pool, open.org).await.unwrap();
    assert!(acct.delinquent_since.is_some(), "{acct:?}");
    let balance = account::balance(&p.pool, open.org).await.unwrap();
    assert_eq!(balance.standing, Standing::Delinquent);
    assert_eq!(payment_postings(&p, open.org).await, 0);
    assert_ledger_sound(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_metering_rerun_with_the_same_inputs_changes_nothing() {
    let p = Platform::start(Options::default()).await;
    let period = past_period();
    let org = postpaid_org_with_usage(&p, sandbox::SUCCESS, period).await;
    let client = client().await;
    let input = MeteringRunInput {
        org,
        period,
        price_version: None,
        by: "system:test".into(),
    };
    let queue = &p.billing.billing_task_queue;
    let first = metering_run::run(&client, queue, input.clone())
        .await
        .unwrap();
    assert!(!first.changes.is_empty(), "{first:?}");
    assert!(first.run_id.is_some());
    // The same id again (the first run completed): a new run, which finds nothing to change.
    let second = metering_run::run(&client, queue, input).await.unwrap();
    assert!(second.changes.is_empty(), "{second:?}");
    assert_eq!(second.run_id, None);
    assert_eq!(second.total_after, first.total_after);
    assert_eq!(
        platform_billing::metering::lines(&p.pool, org, period)
            .await
            .unwrap()
            .len(),
        first.changes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_cycle_invoices_an_ended_period_and_collects_it() {
    let p = Platform::start(Options::default()).await;
    let period = past_period();
    let org = postpaid_org_with_usage(&p, sandbox::SUCCESS, period).await;
    let client = client().await;
    let input = CycleInput {
        org,
        period,
        grace_s: 1,
        collection: seconds(&[1]),
        pending_recheck_s: 1,
    };
    billing_cycle::start(&client, &p.billing.billing_task_queue, input)
        .await
        .unwrap();
    let cycle =
        client.get_workflow_handle::<BillingCycle>(billing_cycle::workflow_id(org, &period));
    let outcome = tokio::time::timeout(LONG, cycle.get_result(WorkflowGetResultOptions::default()))
        .await
        .expect("the cycle ends")
        .expect("the cycle succeeds");
    let id = outcome.invoice.expect("an invoice: the period has usage");
    assert_eq!(outcome.state, Some(InvoiceState::Open));
    assert!(outcome.amount_due_minor > 0, "{outcome:?}");
    assert!(outcome.collection_started);
    let open = invoice::get(&p.pool, None, id).await.unwrap();
    assert_eq!(open.period, period);
    assert_eq!(
        collection_outcome(&client, &open).await,
        CollectionOutcome::Paid { attempts: 1 }
    );
    assert_eq!(
        invoice::get(&p.pool, None, id).await.unwrap().state,
        InvoiceState::Paid
    );
    assert_eq!(payment_postings(&p, org).await, 1);
    assert_ledger_sound(&p).await;
}

/// Runs the org's `BillingCycle` for `period` through the worker and waits for its invoice, and
/// for that invoice's collection.
async fn cycle_invoiced(p: &Platform, client: &Client, org: OrgId, period: Period) -> Invoice {
    let input = CycleInput {
        org,
        period,
        grace_s: 1,
        collection: seconds(&[1]),
        pending_recheck_s: 1,
    };
    billing_cycle::start(client, &p.billing.billing_task_queue, input)
        .await
        .unwrap();
    let cycle =
        client.get_workflow_handle::<BillingCycle>(billing_cycle::workflow_id(org, &period));
    let outcome = tokio::time::timeout(LONG, cycle.get_result(WorkflowGetResultOptions::default()))
        .await
        .expect("the cycle ends")
        .expect("the cycle succeeds");
    let id = outcome.invoice.expect("an invoice: the period has usage");
    let invoice = invoice::get(&p.pool, None, id).await.unwrap();
    if outcome.collection_started {
        collection_outcome(client, &invoice).await;
    }
    invoice::get(&p.pool, None, id).await.unwrap()
}

/// The org's invoices of kind `kind` correcting `corrected`.
async fn corrections_of(p: &Platform, corrected: &Invoice, kind: InvoiceKind) -> Vec<Invoice> {
    invoice::list(&p.pool, corrected.org, None, 50)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.kind == kind && i.corrects == Some(corrected.id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_late_usage_after_the_invoice_goes_on_an_adjusting_invoice_that_is_collected() {
    let p = Platform::start(Options::default()).await;
    let period = past_period();
    let org = postpaid_org_with_usage(&p, sandbox::SUCCESS, period).await;
    let client = client().await;
    let first = cycle_invoiced(&p, &client, org, period).await;
    assert_eq!(first.kind, InvoiceKind::Invoice);
    assert_eq!(first.state, InvoiceState::Paid, "{first:?}");

    // Usage that arrives after the cycle finalized the period, then a rerun.
    let span = SpanStart {
        id: format!("instance/{}", uuid::Uuid::new_v4()),
        org,
        project: None,
        meter: usage::GPU_SECONDS.into(),
        sku: "h100-80gb-sxm".into(),
        units: 1,
        started_at: period.start + chrono::Duration::minutes(5),
    };
    used(&p, span, chrono::Duration::minutes(3)).await;
    let input = MeteringRunInput {
        org,
        period,
        price_version: None,
        by: "system:test".into(),
    };
    let rerun = metering_run::run(&client, &p.billing.billing_task_queue, input)
        .await
        .unwrap();
    assert!(!rerun.changes.is_empty(), "{rerun:?}");

    let adjusting = corrections_of(&p, &first, InvoiceKind::Adjusting).await;
    assert_eq!(adjusting.len(), 1, "{adjusting:?}");
    let adjusting = &adjusting[0];
    assert!(adjusting.total_minor > 0, "{adjusting:?}");
    assert_ne!(
        adjusting.state,
        InvoiceState::Draft,
        "finalized: {adjusting:?}"
    );
    // Its collection, under the invoice's own id, pays it.
    assert_eq!(
        collection_outcome(&client, adjusting).await,
        CollectionOutcome::Paid { attempts: 1 }
    );
    assert_eq!(
        invoice::get(&p.pool, None, adjusting.id)
            .await
            .unwrap()
            .state,
        InvoiceState::Paid
    );
    assert_eq!(payment_postings(&p, org).await, 2);
    // Nothing is left to bill for the period.
    assert_eq!(
        invoice::build_draft(&p.pool, org, period).await.unwrap(),
        None
    );
    assert_ledger_sound(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_late_usage_of_a_period_that_had_nothing_to_bill_is_invoiced_by_the_rerun() {
    let p = Platform::start(Options::default()).await;
    let busy = past_period();
    let quiet = Period::aligned(
        busy.start - chrono::Duration::minutes(30),
        chrono::Duration::minutes(10),
    );
    // The org used GPUs in another period only: the quiet period's cycle bills nothing.
    let org = postpaid_org_with_usage(&p, sandbox::SUCCESS, busy).await;
    let client = client().await;
    let input = CycleInput {
        org,
        period: quiet,
        grace_s: 1,
        collection: seconds(&[1]),
        pending_recheck_s: 1,
    };
    billing_cycle::start(&client, &p.billing.billing_task_queue, input)
        .await
        .unwrap();
    let cycle = client.get_workflow_handle::<BillingCycle>(billing_cycle::workflow_id(org, &quiet));
    let outcome = tokio::time::timeout(LONG, cycle.get_result(WorkflowGetResultOptions::default()))
        .await
        .expect("the cycle ends")
        .expect("the cycle succeeds");
    assert_eq!(outcome.invoice, None, "nothing to bill: {outcome:?}");

    // Usage of the quiet period arrives late (a node fenced late, a producer's backlog).
    let span = SpanStart {
        id: format!("instance/{}", uuid::Uuid::new_v4()),
        org,
        project: None,
        meter: usage::GPU_SECONDS.into(),
        sku: "h100-80gb-sxm".into(),
        units: 1,
        started_at: quiet.start + chrono::Duration::minutes(1),
    };
    used(&p, span, chrono::Duration::minutes(2)).await;
    let input = MeteringRunInput {
        org,
        period: quiet,
        price_version: None,
        by: "system:test".into(),
    };
    let rerun = metering_run::run(&client, &p.billing.billing_task_queue, input)
        .await
        .unwrap();
    assert!(!rerun.changes.is_empty(), "{rerun:?}");
    // The run invoiced it (no draft left for a cycle that has ended) and collected it.
    let invoices: Vec<Invoice> = invoice::list(&p.pool, org, None, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.period == quiet)
        .collect();
    assert_eq!(invoices.len(), 1, "{invoices:?}");
    let late = &invoices[0];
    assert_eq!(late.kind, InvoiceKind::Invoice);
    assert_ne!(late.state, InvoiceState::Draft, "finalized: {late:?}");
    assert_eq!(
        collection_outcome(&client, late).await,
        CollectionOutcome::Paid { attempts: 1 }
    );
    assert_eq!(
        invoice::build_draft(&p.pool, org, quiet).await.unwrap(),
        None
    );
    assert_ledger_sound(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_a_rerun_with_a_cheaper_price_version_finalizes_a_credit_note() {
    let p = Platform::start(Options::default()).await;
    let open = finalized_invoice(&p, sandbox::INSUFFICIENT_FUNDS).await;
    let (org, period) = (open.org, open.period);
    // Version 2: every price halved, taking effect later (so nothing else uses it).
    let v1 = platform_billing::price_book::get(&p.pool, 1).await.unwrap();
    let prices = v1
        .prices
        .iter()
        .cloned()
        .map(|mut price| {
            price.per_units *= 2;
            price
        })
        .collect();
    let book = platform_billing::price_book::NewPriceBook {
        effective_from: v1.effective_from.max(chrono::Utc::now()) + chrono::Duration::days(365),
        note: "half price".into(),
        prices,
    };
    let v2 = platform_billing::price_book::publish(&p.pool, &book, "test")
        .await
        .unwrap();
    let client = client().await;
    let queue = &p.billing.billing_task_queue;
    let run = |price_version| MeteringRunInput {
        org,
        period,
        price_version,
        by: "system:test".into(),
    };
    // The version in effect again: nothing changes, nothing is billed.
    let same = metering_run::run(&client, queue, run(None)).await.unwrap();
    assert!(same.changes.is_empty(), "{same:?}");
    assert!(
        corrections_of(&p, &open, InvoiceKind::CreditNote)
            .await
            .is_empty()
    );
    // Version 2: its own run (its own id), which credits the difference.
    let cheaper = metering_run::run(&client, queue, run(Some(v2.version)))
        .await
        .unwrap();
    assert_eq!(cheaper.price_version, v2.version);
    assert!(!cheaper.changes.is_empty(), "{cheaper:?}");
    assert!(cheaper.total_after < cheaper.total_before, "{cheaper:?}");

    let notes = corrections_of(&p, &open, InvoiceKind::CreditNote).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note = &notes[0];
    assert!(note.total_minor < 0, "{note:?}");
    // Finalized: nothing is due on a credit note; it took its amount off the open invoice.
    assert_eq!(note.state, InvoiceState::Paid, "{note:?}");
    let corrected = invoice::get(&p.pool, None, open.id).await.unwrap();
    assert_eq!(corrected.state, InvoiceState::Open);
    assert_eq!(
        corrected.amount_due_minor,
        open.amount_due_minor + note.total_minor,
        "{corrected:?}"
    );
    assert_eq!(sandbox_charges(&p, &open).await, 0, "nothing is collected");
    assert_ledger_sound(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_collection_survives_a_worker_killed_right_after_a_charge() {
    let mut p = Platform::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await;
    // SIGKILLed after the first attempt charged, before Temporal heard of it.
    p.start_worker_process_with(&ActivityHooks::kill_after(activity::PAYMENT_ATTEMPT));
    let open = finalized_invoice(&p, sandbox::DECLINES_TWICE).await;
    let client = client().await;
    let input = CollectionInput {
        invoice: open.id,
        org: open.org,
        schedule: seconds(&[1, 1]),
        pending_recheck_s: 1,
        max_pending_looks: payment_collection::MAX_PENDING_LOOKS,
    };
    payment_collection::start(&client, &p.billing.billing_task_queue, input)
        .await
        .unwrap();
    assert!(
        p.worker_process_died(LONG).await,
        "the worker kills itself after the charge"
    );
    assert_eq!(sandbox_charges(&p, &open).await, 1);
    p.start_worker_process();
    // The attempt runs again under the same key (the sandbox answers what it answered), then
    // attempts 2 and 3: three charges in all, one payment.
    assert_eq!(
        collection_outcome(&client, &open).await,
        CollectionOutcome::Paid { attempts: 3 }
    );
    assert_eq!(sandbox_charges(&p, &open).await, 3);
    assert_eq!(payment::attempts(&p.pool, open.id).await.unwrap().len(), 3);
    assert_eq!(payment_postings(&p, open.org).await, 1);
    assert_ledger_sound(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_cycle_survives_a_worker_killed_right_after_finalizing() {
    let mut p = Platform::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await;
    // SIGKILLed after the invoice was finalized and posted, before Temporal heard of it.
    p.start_worker_process_with(&ActivityHooks::kill_after(activity::INVOICE_FINALIZE));
    let period = past_period();
    let org = postpaid_org_with_usage(&p, sandbox::SUCCESS, period).await;
    let client = client().await;
    let input = CycleInput {
        org,
        period,
        grace_s: 1,
        collection: seconds(&[1]),
        pending_recheck_s: 1,
    };
    billing_cycle::start(&client, &p.billing.billing_task_queue, input)
        .await
        .unwrap();
    assert!(
        p.worker_process_died(LONG).await,
        "the worker kills itself after finalizing"
    );
    p.start_worker_process();
    let cycle =
        client.get_workflow_handle::<BillingCycle>(billing_cycle::workflow_id(org, &period));
    let outcome = tokio::time::timeout(LONG, cycle.get_result(WorkflowGetResultOptions::default()))
        .await
        .expect("the cycle ends")
        .expect("the cycle succeeds");
    let id = outcome.invoice.expect("an invoice: the period has usage");
    let open = invoice::get(&p.pool, None, id).await.unwrap();
    assert_eq!(
        collection_outcome(&client, &open).await,
        CollectionOutcome::Paid { attempts: 1 }
    );
    // One invoice, finalized once, posted once, paid once.
    let invoices = invoice::list(&p.pool, org, None, 10).await.unwrap();
    assert_eq!(invoices.len(), 1, "{invoices:?}");
    let finalize_postings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM billing.ledger_transactions WHERE key = $1")
            .bind(format!("invoice/{id}/finalize"))
            .fetch_one(&p.pool)
            .await
            .unwrap();
    assert_eq!(finalize_postings, 1);
    assert_eq!(sandbox_charges(&p, &open).await, 1);
    assert_eq!(payment_postings(&p, org).await, 1);
    assert_ledger_sound(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_enforcement_stops_the_running_instances_of_an_org_out_of_credit() {
    let mut billing = workers::billing::BillingWorkerConfig::for_tests(String::new());
    billing.enforce_every_seconds = 2;
    billing.enforcement_grace_seconds = 0;
    let mut p = Platform::start(Options {
        billing,
        ..Options::default()
    })
    .await;
    p.start_agent("h100", "8xH100-80GB", 200).await;
    let running = p
        .create_running(serde_json::json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    // A prepaid account with no credit: the instance's usage runs it out at once. (Admission
    // gave the org a postpaid account when the instance was allocated.)
    account::ensure(&p.pool, platform_iam::DEFAULT_ORG, BillingMode::Prepaid, 0)
        .await
        .unwrap();
    account::set_mode(&p.pool, platform_iam::DEFAULT_ORG, BillingMode::Prepaid)
        .await
        .unwrap();
    let ended = p.wait_state(running, &["terminated"], LONG).await;
    assert_eq!(ended.state, "terminated");
    let balance = account::balance(&p.pool, platform_iam::DEFAULT_ORG)
        .await
        .unwrap();
    assert_ne!(balance.standing, Standing::Good, "{balance:?}");
    assert_eq!(p.live_allocations(running).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_enforcement_goes_on_past_an_org_it_cannot_refresh() {
    let mut p = Platform::start(Options::default()).await;
    // An org whose standing cannot be computed: this month's usage of a SKU no price covers
    // (written straight into the table, as an older writer might have left it).
    let name = format!("billing-bad-{}", uuid::Uuid::new_v4().simple());
    let (bad, _) = platform_iam::orgs::create(&p.pool, &name).await.unwrap();
    account::ensure(&p.pool, bad.id, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO billing.usage_spans (id, org_id, meter, sku, units, started_at)
         VALUES ($1, $2, 'gpu_seconds', 'no-such-gpu', 1, now() - interval '1 minute')",
    )
    .bind(format!("instance/{}", uuid::Uuid::new_v4()))
    .bind(bad.id.uuid())
    .execute(&p.pool)
    .await
    .unwrap();
    assert!(
        account::refresh_standing(&p.pool, bad.id, &[])
            .await
            .is_err()
    );

    p.start_agent("h100", "8xH100-80GB", 200).await;
    let running = p
        .create_running(serde_json::json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    // A prepaid account with no credit: the instance's usage runs it out at once. (Admission
    // gave the org a postpaid account when the instance was allocated.)
    account::ensure(&p.pool, platform_iam::DEFAULT_ORG, BillingMode::Prepaid, 0)
        .await
        .unwrap();
    account::set_mode(&p.pool, platform_iam::DEFAULT_ORG, BillingMode::Prepaid)
        .await
        .unwrap();
    p.eventually(LONG, "the default org runs out of credit", || async {
        account::balance(&p.pool, platform_iam::DEFAULT_ORG)
            .await
            .unwrap()
            .standing
            != Standing::Good
    })
    .await;

    let client = client().await;
    let queue = &p.billing.billing_task_queue;
    let input = EnforcementInput {
        grace_s: 0,
        thresholds_percent: vec![50, 25, 10],
        gpuaas_task_queue: p.task_queue.clone(),
    };
    let id = format!("billing-enforcement-test/{}", uuid::Uuid::new_v4());
    let options = temporalio_client::WorkflowStartOptions::new(queue.clone(), id).build();
    let handle = client
        .start_workflow(CreditEnforcement::run, input, options)
        .await
        .unwrap();
    let outcome: EnforcementOutcome =
        tokio::time::timeout(LONG, handle.get_result(WorkflowGetResultOptions::default()))
            .await
            .expect("the pass ends")
            .expect("the pass succeeds despite the bad org");
    assert_eq!(outcome.refresh_failures, 1, "{outcome:?}");
    assert!(outcome.orgs_refreshed >= 1, "{outcome:?}");
    assert!(outcome.orgs_past_grace >= 1, "{outcome:?}");
    assert_eq!(outcome.terminations_started, 1, "{outcome:?}");
    let ended = p.wait_state(running, &["terminated"], LONG).await;
    assert_eq!(ended.state, "terminated");
    assert_eq!(p.live_allocations(running).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_sweep_starts_the_cycles_of_short_periods_which_invoice_and_collect() {
    let mut billing = workers::billing::BillingWorkerConfig::for_tests(String::new());
    billing.period_seconds = 4;
    billing.cycle_grace_seconds = 1;
    billing.sweep_every_seconds = 2;
    let p = Platform::start(Options {
        billing,
        ..Options::default()
    })
    .await;
    let name = format!("billing-{}", uuid::Uuid::new_v4().simple());
    let (org, project) = platform_iam::orgs::create(&p.pool, &name).await.unwrap();
    account::ensure(&p.pool, org.id, BillingMode::Postpaid, 0)
        .await
        .unwrap();
    let provider = SandboxProvider {
        pool: p.pool.clone(),
        confirm_after: Duration::from_secs(1),
    };
    payment::add_method(&p.pool, &provider, org.id, sandbox::SUCCESS, "card", true)
        .await
        .unwrap();
    // 100 GPUs for the last minute, still running: every 4-second period bills some of it.
    let span = SpanStart {
        id: format!("instance/{}", uuid::Uuid::new_v4()),
        org: org.id,
        project: Some(project.id),
        meter: usage::GPU_SECONDS.into(),
        sku: "h100-80gb-sxm".into(),
        units: 100,
        started_at: chrono::Utc::now() - chrono::Duration::minutes(1),
    };
    let mut tx = p.pool.begin().await.unwrap();
    usage::open_span(&mut tx, &span).await.unwrap();
    tx.commit().await.unwrap();
    p.eventually(LONG, "a swept period is invoiced and paid", || async {
        invoice::list(&p.pool, org.id, None, 50)
            .await
            .unwrap()
            .iter()
            .any(|i| i.state == InvoiceState::Paid && i.total_minor > 0)
    })
    .await;
    assert!(payment_postings(&p, org.id).await >= 1);
    assert_ledger_sound(&p).await;
}
