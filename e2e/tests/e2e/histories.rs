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
