//! The billing workflows end to end, on the worker's billing task queue (each test its own):
//! dunning (`PaymentCollection` paid after two soft declines, stopped by a hard decline, and
//! exhausted into uncollectible + delinquent), a metering rerun that changes nothing, a whole
//! `BillingCycle` from a period's end to its invoice paid, and a worker SIGKILLed right after a
//! charge and restarted, which charges nobody twice.

use crate::harness::{Options, Platform, temporal_args};
use activities::billing::vocabulary::activity;
use platform_billing::Period;
use platform_billing::account::{self, BillingMode, Standing};
use platform_billing::invoice::{self, Invoice, InvoiceState};
use platform_billing::payment::{self, RetrySchedule, SandboxProvider};
use platform_billing::usage::{self, SpanStart};
use runtime::ActivityHooks;
use shared_ids::OrgId;
use std::time::Duration;
use temporalio_client::{Client, WorkflowGetResultOptions};
use workflows::billing::billing_cycle::{self, CycleInput};
use workflows::billing::metering_run::{self, MeteringRunInput};
use workflows::billing::payment_collection::{self, CollectionInput, CollectionOutcome};
use workflows::billing::{BillingCycle, PaymentCollection};

const LONG: Duration = Duration::from_secs(120);

/// The sandbox's test payment methods (`platform_billing::payment`).
mod sandbox {
    pub const SUCCESS: &str = "pm_sandbox_success";
    pub const INSUFFICIENT_FUNDS: &str = "pm_sandbox_insufficient_funds";
    pub const HARD_DECLINE: &str = "pm_sandbox_hard_decline";
    pub const DECLINES_TWICE: &str = "pm_sandbox_declines_twice";
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
    let mut tx = p.pool.begin().await.unwrap();
    usage::open_span(&mut tx, &span).await.unwrap();
    usage::close_span(
        &mut tx,
        &span.id,
        period.start + chrono::Duration::minutes(5),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    org.id
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
    let client = client().await;
    let input = CollectionInput {
        invoice: invoice.id,
        org: invoice.org,
        schedule,
        pending_recheck_s: 1,
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
async fn billing_dunning_stops_at_a_hard_decline() {
    let p = Platform::start(Options::default()).await;
    let open = finalized_invoice(&p, sandbox::HARD_DECLINE).await;
    let outcome = collect(&p, &open, seconds(&[1, 1])).await;
    assert!(
        matches!(outcome, CollectionOutcome::Stopped { attempts: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(sandbox_charges(&p, &open).await, 1);
    let still = invoice::get(&p.pool, None, open.id).await.unwrap();
    assert_eq!(still.state, InvoiceState::Open);
    assert!(
        account::get(&p.pool, open.org)
            .await
            .unwrap()
            .delinquent_since
            .is_none()
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
    // A prepaid account with no credit: the instance's usage runs it out at once.
    account::ensure(&p.pool, platform_iam::DEFAULT_ORG, BillingMode::Prepaid, 0)
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
