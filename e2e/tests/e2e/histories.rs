//! Records workflow histories for the replay gate (`replay.rs`, files in `e2e/tests/histories/`),
//! covering the happy path and every failure and compensation path. Run on purpose, not in the
//! test suite:
//!
//!     scripts/test -p e2e --run-ignored only histories::
//!
//! Re-record when a workflow change is *meant* to be incompatible (and add a `patched` branch
//! instead if histories of the old code may still be running somewhere).

use crate::harness::{Options, Platform, temporal_args};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use temporalio_client::WorkflowFetchHistoryOptions;
use workflows::gpuaas::vocabulary::{self as vocabulary, InstanceStep};

const LONG: Duration = Duration::from_secs(60);

async fn save(workflow_id: &str, name: &str) {
    let client = temporal_args().connect("recorder").await.unwrap();
    let handle =
        client.get_workflow_handle::<workflows::gpuaas::ProvisionInstance>(workflow_id.to_string());
    let json = handle
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    std::fs::write(dir.join(format!("{name}.json")), json).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories for the replay gate; run with --ignored"]
async fn record_histories() {
    let mut p = Platform::start(Options {
        node_schedule_to_start_s: 3,
        ..Options::default()
    })
    .await;
    p.start_agent("rec", "4xH100-80GB", 200).await;

    // Provision → running → terminate.
    let ok = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 2}))
        .await;
    p.wait_state(ok, &["running"], LONG).await;
    p.delete(ok).await;
    p.wait_state(ok, &["terminated"], LONG).await;
    save(&vocabulary::instance_provision_id(ok), "provision_running").await;
    save(&vocabulary::instance_terminate_id(ok), "terminate_running").await;

    // Insufficient capacity, no wait.
    let full = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 8}))
        .await;
    p.wait_state(full, &["failed"], LONG).await;
    save(
        &vocabulary::instance_provision_id(full),
        "provision_insufficient_capacity",
    )
    .await;

    // The workload exits during settle: start_failed, unwound.
    let bad = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "command": "exit 3"}))
        .await;
    p.wait_state(bad, &["failed"], LONG).await;
    save(
        &vocabulary::instance_provision_id(bad),
        "provision_start_failed",
    )
    .await;

    // Waits for capacity, then is deleted while waiting.
    let holder = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 4}))
        .await;
    p.wait_state(holder, &["running"], LONG).await;
    let waiter = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 4, "capacity_timeout_seconds": 60}))
        .await;
    p.eventually(LONG, "it waits", || async {
        p.instance(waiter).await.current_step == InstanceStep::WaitingForCapacity.as_str()
    })
    .await;
    p.delete(waiter).await;
    p.wait_state(waiter, &["terminated"], LONG).await;
    save(
        &vocabulary::instance_provision_id(waiter),
        "provision_withdrawn_while_waiting",
    )
    .await;

    // Waits for capacity and gets it.
    let patient = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 4, "capacity_timeout_seconds": 60}))
        .await;
    p.eventually(LONG, "it waits", || async {
        p.instance(patient).await.current_step == InstanceStep::WaitingForCapacity.as_str()
    })
    .await;
    p.delete(holder).await;
    p.wait_state(patient, &["running"], LONG).await;
    save(
        &vocabulary::instance_provision_id(patient),
        "provision_after_capacity_wait",
    )
    .await;

    // A dead node: node_unreachable, unwound.
    p.stop_agent("rec");
    p.delete(patient).await;
    let ghost = p.register_ghost_node("ghost", 8, "A100-40GB").await;
    let lost = p
        .create_ok(json!({"sku": "a100-40gb", "gpu_count": 1}))
        .await;
    let failed = p.wait_state(lost, &["failed"], LONG).await;
    assert_eq!(failed.node_id, Some(ghost));
    save(
        &vocabulary::instance_provision_id(lost),
        "provision_node_unreachable",
    )
    .await;
    // Terminating on a node that is gone: GPUs stay fenced.
    p.wait_state(patient, &["terminated"], LONG).await;
    save(
        &vocabulary::instance_terminate_id(patient),
        "terminate_node_unreachable",
    )
    .await;
}

/// Histories of the fleet workflows: a node's lifecycle through GPU failure and recovery, agent
/// loss (down, grace, fencing, back up) and a drain; and a reconciler pass that fixes things.
///
///     scripts/test -p e2e --run-ignored only histories::record_fleet
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories for the replay gate; run with --ignored"]
async fn record_fleet_histories() {
    use runtime::ActivityHooks;
    use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};
    use workflows::gpuaas::{NodeTimeouts, ReconcileFleet, ReconcileInput};

    let mut p = Platform::start(Options {
        lifecycle: api::LifecycleArgs {
            heartbeat_timeout_seconds: 4,
            report_every_seconds: 2,
            unreachable_grace_seconds: 3,
            gpu_recovery_seconds: 2,
            drain_poll_seconds: 1,
        },
        ..Options::default()
    })
    .await;
    p.start_agent_process("rec", "4xH100-80GB", &ActivityHooks::default())
        .await;
    let node_id = p.node("rec").await["id"].as_str().unwrap().to_string();

    // GPU failure → auto-cordon → recovery.
    std::fs::write(p.gpu_fault_file("rec"), "2 XID 79\n").unwrap();
    p.wait_node_state("rec", "cordoned").await;
    std::fs::remove_file(p.gpu_fault_file("rec")).unwrap();
    p.wait_node_state("rec", "ready").await;

    // Agent loss with a running instance: down, instance failed after grace, fenced, back.
    let lost = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    p.wait_state(lost, &["running"], LONG).await;
    p.kill_agent_process("rec");
    p.wait_state(lost, &["failed"], LONG).await;
    p.start_agent_process("rec", "4xH100-80GB", &ActivityHooks::default())
        .await;
    p.wait_node_state("rec", "ready").await;

    // Drain with an instance that outlives the deadline.
    let drained = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    p.wait_state(drained, &["running"], LONG).await;
    let (status, _) = p
        .post(
            &format!("/v1/nodes/{node_id}/drain"),
            json!({"deadline_seconds": 2}),
        )
        .await;
    assert_eq!(status, 202);
    p.wait_state(drained, &["terminated"], LONG).await;
    p.wait_node_state("rec", "cordoned").await;
    save(
        &vocabulary::node_lifecycle_id(node_id.parse().unwrap()),
        "node_lifecycle",
    )
    .await;
    save(
        &vocabulary::instance_terminate_id(drained),
        "terminate_by_drain",
    )
    .await;

    // A reconciler pass that stops an orphan (an instance the database thinks ended).
    let (status, _) = p
        .post(&format!("/v1/nodes/{node_id}/uncordon"), json!({}))
        .await;
    assert_eq!(status, 200);
    let orphan = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    p.wait_state(orphan, &["running"], LONG).await;
    p.end_behind_the_platforms_back(orphan).await;
    let client = temporal_args().connect("recorder").await.unwrap();
    let id = format!("reconcile-recording-{orphan}");
    let handle = client
        .start_workflow(
            ReconcileFleet::run,
            ReconcileInput {
                node_timeouts: NodeTimeouts::default(),
            },
            WorkflowStartOptions::new(p.task_queue.clone(), id.clone()).build(),
        )
        .await
        .unwrap();
    let outcome = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome.fixes_applied, 1, "{outcome:?}");
    save(&id, "reconcile_fleet").await;
}

/// A postpaid org paying with `token`, with one H100 GPU used for five minutes of `period`.
async fn billed_org(
    p: &Platform,
    token: &str,
    period: platform_billing::Period,
) -> shared_ids::OrgId {
    use platform_billing::{account, payment, usage};
    let name = format!("rec-{}", uuid::Uuid::new_v4().simple());
    let (org, project) = platform_iam::orgs::create(&p.pool, &name).await.unwrap();
    account::ensure(&p.pool, org.id, account::BillingMode::Postpaid, 0)
        .await
        .unwrap();
    let provider = payment::SandboxProvider {
        pool: p.pool.clone(),
        confirm_after: Duration::from_secs(1),
    };
    payment::add_method(&p.pool, &provider, org.id, token, "card", true)
        .await
        .unwrap();
    let span = usage::SpanStart {
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

/// Waits until the workflow `W` with `workflow_id` has completed.
macro_rules! completed {
    ($client:expr, $w:ty, $id:expr) => {{
        let handle = $client.get_workflow_handle::<$w>($id.to_string());
        tokio::time::timeout(
            LONG,
            handle.get_result(temporalio_client::WorkflowGetResultOptions::default()),
        )
        .await
        .expect("the workflow ends")
        .expect("the workflow succeeds")
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories for the replay gate; run with --ignored"]
async fn record_billing_histories() {
    use platform_billing::{Period, invoice, payment::RetrySchedule};
    use workflows::billing::{
        BillingCycle, CreditEnforcement, PaymentCollection, billing_cycle, metering_run,
        payment_collection, vocabulary as billing,
    };
    let p = Platform::start(Options::default()).await;
    let client = temporal_args().connect("recorder").await.unwrap();
    let queue = p.billing.billing_task_queue.clone();
    let period = Period::aligned(
        chrono::Utc::now() - chrono::Duration::hours(1),
        chrono::Duration::minutes(10),
    );
    let seconds = |s: &[u64]| RetrySchedule {
        delays: s.iter().map(|s| Duration::from_secs(*s)).collect(),
    };

    // A metering run: rates the period, bills no correction (nothing finalized yet).
    let org = billed_org(&p, "pm_sandbox_success", period).await;
    let input = metering_run::MeteringRunInput {
        org,
        period,
        price_version: None,
        by: "recorder".into(),
    };
    metering_run::run(&client, &queue, input).await.unwrap();
    save(
        &metering_run::workflow_id(org, &period, None),
        "metering_run",
    )
    .await;

    // A cycle: the period ended, a draft, the grace, finalized, collection started and paid.
    let cycle = billing_cycle::CycleInput {
        org,
        period,
        grace_s: 1,
        collection: seconds(&[1]),
        pending_recheck_s: 1,
    };
    billing_cycle::start(&client, &queue, cycle).await.unwrap();
    completed!(
        client,
        BillingCycle,
        billing_cycle::workflow_id(org, &period)
    );
    save(&billing_cycle::workflow_id(org, &period), "billing_cycle").await;
    let paid = invoice::list(&p.pool, org, None, 1).await.unwrap()[0].id;
    completed!(
        client,
        PaymentCollection,
        billing::payment_collection_id(paid)
    );
    save(
        &billing::payment_collection_id(paid),
        "payment_collection_paid",
    )
    .await;

    // Dunning that runs out: soft declines, then uncollectible and delinquent.
    let broke = billed_org(&p, "pm_sandbox_insufficient_funds", period).await;
    platform_billing::metering::run(&p.pool, broke, period, None, "recorder")
        .await
        .unwrap();
    let draft = invoice::build_draft(&p.pool, broke, period)
        .await
        .unwrap()
        .unwrap();
    let open = invoice::finalize(&p.pool, draft.id).await.unwrap();
    let collection = payment_collection::CollectionInput {
        invoice: open.id,
        org: broke,
        schedule: seconds(&[1, 1]),
        pending_recheck_s: 1,
        max_pending_looks: payment_collection::MAX_PENDING_LOOKS,
    };
    payment_collection::start(&client, &queue, collection)
        .await
        .unwrap();
    completed!(
        client,
        PaymentCollection,
        billing::payment_collection_id(open.id)
    );
    save(
        &billing::payment_collection_id(open.id),
        "payment_collection_exhausted",
    )
    .await;

    // An enforcement pass: standing refreshed for every org, none past its grace.
    let input = workflows::billing::EnforcementInput {
        grace_s: 3600,
        thresholds_percent: vec![50, 25, 10],
        gpuaas_task_queue: p.task_queue.clone(),
    };
    let id = format!("billing-enforcement-recorded/{}", uuid::Uuid::new_v4());
    let options = temporalio_client::WorkflowStartOptions::new(queue.clone(), id.clone()).build();
    client
        .start_workflow(CreditEnforcement::run, input, options)
        .await
        .unwrap();
    completed!(client, CreditEnforcement, id);
    save(&id, "credit_enforcement").await;
}
