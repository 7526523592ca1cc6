//! Workload isolation through the platform: a workload sees none of its agent's environment, and
//! a deleted instance's GPUs are released only once nothing of its workload is left (a child in a
//! session of its own, and processes that ignore SIGTERM and keep forking, included), also after
//! its agent restarted. The node-agent crate's own tests cover the rest with real processes (own
//! uid, network namespace, limits, device nodes, planted identities, capped logs).

use crate::harness::{Options, Platform, process_alive};
use node_agent::workload::isolation::procs;
use runtime::ActivityHooks;
use serde_json::json;
use shared_ids::InstanceId;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

/// The uid the instance's workload runs as.
fn workload_uid(p: &Platform, id: InstanceId) -> u32 {
    let pid = p.workload_pid(id).expect("the agent recorded a pid");
    procs::uids(pid).expect("the workload runs")[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_sees_none_of_its_agents_environment() {
    let mut p = Platform::start(Options::default()).await;
    // The real binary: its environment holds its join token and all the test's variables.
    p.start_agent_process("h100", "8xH100-80GB", &ActivityHooks::default())
        .await;
    let id = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1,
                          "command": "env; echo uid=$(id -u); exit 3"}))
        .await;
    let failed = p.wait_state(id, &["failed", "running"], LONG).await;
    assert_eq!(failed.failure_reason.as_deref(), Some("start_failed"));
    // Its last output, as the platform reports it.
    let output = failed.status_message.unwrap();
    assert!(
        output.contains(&format!("GPUAAS_INSTANCE_ID={id}")),
        "{output}"
    );
    assert!(!output.contains("uid=0"), "{output}");
    for leaked in [
        "GPUAAS_JOIN_TOKEN",
        "GPUAAS_API_URL",
        "GPUAAS_TEMPORAL_ADDRESS",
        "DATABASE_URL",
        "GPUAAS_AGENT_STATE_DIR",
        "RUST_LOG",
    ] {
        assert!(!output.contains(leaked), "{leaked} leaked: {output}");
    }
    // The owner reads the output in the status; no history holds it (it travels sealed).
    let client = crate::harness::temporal_args()
        .connect("reader")
        .await
        .unwrap();
    let history = client
        .get_workflow_handle::<workflows::gpuaas::ProvisionInstance>(
            workflows::gpuaas::vocabulary::instance_provision_id(id),
        )
        .fetch_history(temporalio_client::WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .unwrap();
    let history = String::from_utf8_lossy(&history);
    assert!(
        !history.contains("GPUAAS_INSTANCE_ID="),
        "workload output in the history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_are_released_only_once_nothing_of_the_workload_is_left() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100", "8xH100-80GB", 200).await;
    // An escaped child in a session of its own, and a shell that ignores SIGTERM and keeps
    // forking: a stop must wait out the grace period, then kill what the signal did not.
    let id = p
        .create_running(json!({"sku": "h100-80gb-sxm", "gpu_count": 2,
            "command": "setsid sh -c 'trap \"\" TERM; sleep 1000' & trap '' TERM; \
                        while :; do sleep 1000 & sleep 0.1; done"}))
        .await;
    let uid = workload_uid(&p, id);
    assert_ne!(uid, 0, "not root");
    p.eventually(LONG, "the workload has forked", || async {
        procs::of_uid(uid).len() > 4
    })
    .await;
    assert_eq!(p.delete(id).await, 202);
    let deadline = Instant::now() + LONG;
    let mut fenced_while_alive = false;
    loop {
        // Allocations first: once they are released, nothing of the workload may be left.
        let held = p.live_allocations(id).await;
        let alive = procs::of_uid(uid);
        if held == 0 {
            assert_eq!(
                alive,
                Vec::<i32>::new(),
                "GPUs released while these still run"
            );
            break;
        }
        fenced_while_alive |= !alive.is_empty();
        assert!(Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        fenced_while_alive,
        "the GPUs stayed fenced while the workload was stopping"
    );
    assert_eq!(
        p.wait_state(id, &["terminated"], LONG).await.state,
        "terminated"
    );
    assert_eq!(p.inconsistent_free_counters().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_stops_all_of_a_workload_it_re_adopted() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100", "8xH100-80GB", 200).await;
    let id = p
        .create_running(json!({"sku": "h100-80gb-sxm", "gpu_count": 1,
            "command": "setsid sh -c 'trap \"\" TERM; sleep 1000' & sleep 1000"}))
        .await;
    let pid = p.workload_pid(id).unwrap();
    let uid = workload_uid(&p, id);
    p.stop_agent("h100");
    p.start_agent("h100", "8xH100-80GB", 200).await;
    assert!(process_alive(pid), "the workload outlived its agent");
    assert_eq!(p.instance(id).await.state, "running");
    assert_eq!(p.delete(id).await, 202);
    p.wait_state(id, &["terminated"], LONG).await;
    assert_eq!(procs::of_uid(uid), Vec::<i32>::new());
    assert_eq!(p.live_allocations(id).await, 0);
}
