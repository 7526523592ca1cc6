//! Fleet reliability end to end: dead agents (real processes, SIGKILLed), fencing, drain, GPU
//! health with auto-cordon and recovery, and the orphan reconciler.

use crate::harness::{OPERATOR_EMAIL, Options, Platform, process_alive};
use crate::instances::expect_problem;
use api::LifecycleArgs;
use runtime::ActivityHooks;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use workflows::gpuaas::vocabulary::{self as vocabulary};

const LONG: Duration = Duration::from_secs(60);

pub(crate) async fn event_kinds(p: &Platform, node_name: &str) -> Vec<String> {
    let node = p.node(node_name).await;
    let events = p
        .get_json(&format!(
            "/v1/nodes/{}/events",
            node["id"].as_str().unwrap()
        ))
        .await;
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts the node's events include every one of `kinds`.
pub(crate) async fn assert_events(p: &Platform, node_name: &str, kinds: &[&str]) {
    let recorded = event_kinds(p, node_name).await;
    for kind in kinds {
        assert!(
            recorded.iter().any(|k| k == kind),
            "missing event {kind}: {recorded:?}"
        );
    }
}

pub(crate) async fn events(p: &Platform, node_name: &str) -> Vec<Value> {
    let node = p.node(node_name).await;
    p.get_json(&format!(
        "/v1/nodes/{}/events",
        node["id"].as_str().unwrap()
    ))
    .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The production heartbeat timeout, so the detection time measured here is the real one.
fn production_liveness(grace_s: u64) -> LifecycleArgs {
    LifecycleArgs {
        heartbeat_timeout_seconds: 10,
        report_every_seconds: 30,
        unreachable_grace_seconds: grace_s,
        gpu_recovery_seconds: 600,
        drain_poll_seconds: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_detected_within_30s_fenced_and_its_orphans_stopped_on_return() {
    let mut p = Platform::start(Options {
        lifecycle: production_liveness(3),
        ..Options::default()
    })
    .await;
    p.start_agent_process("h100", "8xH100-80GB", &ActivityHooks::default())
        .await;
    let id = p
        .create_running(json!({"sku": "h100-80gb-sxm", "gpu_count": 8}))
        .await;
    let pid = p.workload_pid(id).unwrap();

    let killed = Instant::now();
    p.kill_agent_process("h100");
    p.eventually(
        Duration::from_secs(30),
        "the node is marked down",
        || async { p.node_state("h100").await == "down" },
    )
    .await;
    let detected = killed.elapsed();
    eprintln!("agent SIGKILL → node down in {detected:?}");
    assert!(detected < Duration::from_secs(30), "{detected:?}");

    // After the grace period the instance fails; its GPUs stay fenced while the process may run.
    let failed = p.wait_state(id, &["failed"], LONG).await;
    assert_eq!(failed.failure_reason.as_deref(), Some("node_unreachable"));
    assert!(
        process_alive(pid),
        "the orphan still runs: the host is unreachable, not dead"
    );
    assert_eq!(
        p.live_allocations(id).await,
        8,
        "GPUs fenced while the node is away"
    );
    let other = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    let refused = p.wait_state(other, &["failed", "running"], LONG).await;
    assert_eq!(
        refused.failure_reason.as_deref(),
        Some("insufficient_capacity")
    );
    assert_eq!(p.double_booked_gpus().await, 0);

    // The agent returns: the orphan is stopped first, then the GPUs are released, then the node
    // is ready again.
    p.start_agent_process("h100", "8xH100-80GB", &ActivityHooks::default())
        .await;
    p.wait_node_state("h100", "ready").await;
    assert!(!process_alive(pid), "the orphan was stopped on return");
    assert_eq!(
        p.live_allocations(id).await,
        0,
        "GPUs released after fencing"
    );
    assert_eq!(p.inconsistent_free_counters().await, 0);
    assert_events(
        &p,
        "h100",
        &[
            "node.down",
            "instance.failed_node_unreachable",
            "reconciler.orphan_stopped",
            "node.up",
        ],
    )
    .await;
    // The new instance fits now.
    let placed = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 8}))
        .await;
    assert_eq!(
        p.wait_state(placed, &["running", "failed"], LONG)
            .await
            .state,
        "running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_back_within_the_grace_period_keeps_its_instances() {
    let mut p = Platform::start(Options {
        lifecycle: LifecycleArgs {
            unreachable_grace_seconds: 600,
            ..Options::default().lifecycle
        },
        ..Options::default()
    })
    .await;
    p.start_agent_process("h100", "8xH100-80GB", &ActivityHooks::default())
        .await;
    let id = p
        .create_running(json!({"sku": "h100-80gb-sxm", "gpu_count": 2}))
        .await;
    p.kill_agent_process("h100");
    p.wait_node_state("h100", "down").await;
    p.start_agent_process("h100", "8xH100-80GB", &ActivityHooks::default())
        .await;
    p.wait_node_state("h100", "ready").await;
    let instance = p.instance(id).await;
    assert_eq!(instance.state, "running", "{instance:?}");
    assert!(process_alive(p.workload_pid(id).unwrap()));
    assert_eq!(p.live_allocations(id).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_terminates_at_the_deadline_leaves_the_node_cordoned_and_is_audited() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100", "8xH100-80GB", 200).await;
    let id = p
        .create_running(json!({"sku": "h100-80gb-sxm", "gpu_count": 2}))
        .await;
    let pid = p.workload_pid(id).unwrap();
    let node_id = p.node("h100").await["id"].as_str().unwrap().to_string();

    let (status, body) = p
        .post(
            &format!("/v1/nodes/{node_id}/drain"),
            json!({"deadline_seconds": 3}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "draining");
    assert!(body["drain_deadline"].is_string());
    // Draining again is harmless; a bad deadline is refused with a stable code.
    let (status, _) = p
        .post(
            &format!("/v1/nodes/{node_id}/drain"),
            json!({"deadline_seconds": 3}),
        )
        .await;
    assert_eq!(status, 202);
    let (status, problem) = p
        .post(
            &format!("/v1/nodes/{node_id}/drain"),
            json!({"deadline_seconds": 9_999_999}),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_drain_deadline"))
    );

    // Nothing new lands on a draining node.
    let refused = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    let refused = p.wait_state(refused, &["failed", "running"], LONG).await;
    assert_eq!(
        refused.failure_reason.as_deref(),
        Some("insufficient_capacity")
    );
    assert!(
        refused
            .status_message
            .as_deref()
            .unwrap()
            .contains("draining: 1 node(s) (h100)"),
        "{refused:?}"
    );

    let ended = p.wait_state(id, &["terminated"], LONG).await;
    assert_eq!(ended.state, "terminated");
    p.eventually(LONG, "the drained node is cordoned", || async {
        let node = p.node("h100").await;
        node["state"] == "cordoned" && node["cordon_reason"] == "drained"
    })
    .await;
    assert!(!process_alive(pid));
    assert_eq!(p.live_allocations(id).await, 0);
    let all = events(&p, "h100").await;
    let started = all
        .iter()
        .find(|e| e["kind"] == "node.drain_started")
        .expect("drain audited");
    assert_eq!(
        started["actor"],
        format!("operator:user:{} ({OPERATOR_EMAIL})", p.operator_id)
    );
    let kinds = event_kinds(&p, "h100").await;
    assert!(
        kinds.contains(&"instance.terminated_by_drain".to_string()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"node.drained".to_string()), "{kinds:?}");

    // An empty node drains at once; uncordon brings it back, and that is audited too.
    let (status, _) = p
        .post(&format!("/v1/nodes/{node_id}/uncordon"), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = p
        .post(&format!("/v1/nodes/{node_id}/drain"), json!({}))
        .await;
    assert_eq!(status, 202);
    p.wait_node_state("h100", "cordoned").await;
    let kinds = event_kinds(&p, "h100").await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "node.drained").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"node.uncordoned".to_string()));

    // Uncordon cancels a drain in progress: the instance keeps running, the node stays ready.
    p.post(&format!("/v1/nodes/{node_id}/uncordon"), json!({}))
        .await;
    let kept = p
        .create_running(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    let (status, _) = p
        .post(
            &format!("/v1/nodes/{node_id}/drain"),
            json!({"deadline_seconds": 2}),
        )
        .await;
    assert_eq!(status, 202);
    let (status, body) = p
        .post(&format!("/v1/nodes/{node_id}/uncordon"), json!({}))
        .await;
    assert_eq!((status, body["state"].as_str()), (200, Some("ready")));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(p.node_state("h100").await, "ready");
    assert_eq!(
        p.instance(kept).await.state,
        "running",
        "the cancelled drain terminated nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gpu_cordons_its_node_and_returns_after_the_recovery_period() {
    let recovery = Duration::from_secs(3);
    let mut p = Platform::start(Options {
        lifecycle: LifecycleArgs {
            gpu_recovery_seconds: recovery.as_secs(),
            ..Options::default().lifecycle
        },
        ..Options::default()
    })
    .await;
    p.start_agent("l40s", "4xL40S-48GB", 200).await;
    let faults = p.gpu_fault_file("l40s");

    std::fs::write(&faults, "1 XID 79: GPU has fallen off the bus\n").unwrap();
    p.eventually(LONG, "the node is auto-cordoned", || async {
        let node = p.node("l40s").await;
        node["state"] == "cordoned" && node["cordon_reason"] == "gpu_unhealthy"
    })
    .await;
    let node = p.node("l40s").await;
    assert_eq!(node["free_gpus"], 3, "the bad GPU left placement");
    assert_eq!(node["gpus"][1]["health"], "unhealthy");
    assert!(
        node["gpus"][1]["health_reason"]
            .as_str()
            .unwrap()
            .contains("XID 79")
    );
    assert_eq!(p.inconsistent_free_counters().await, 0);

    // Healthy again: back only after the recovery period of continuous health.
    std::fs::remove_file(&faults).unwrap();
    let healed = Instant::now();
    p.wait_node_state("l40s", "ready").await;
    assert!(
        healed.elapsed() >= recovery,
        "recovered after {:?}",
        healed.elapsed()
    );
    let node = p.node("l40s").await;
    assert_eq!(node["free_gpus"], 4);
    assert_eq!(node["gpus"][1]["health"], "healthy");
    assert_eq!(p.inconsistent_free_counters().await, 0);
    assert_events(
        &p,
        "l40s",
        &[
            "gpu.unhealthy",
            "node.auto_cordoned",
            "gpu.recovered",
            "node.auto_uncordoned",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioning_a_dead_node_releases_its_fenced_gpus_and_retires_it() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("a100", "4xA100-40GB", 200).await;
    let node_id = p.node("a100").await["id"].as_str().unwrap().to_string();
    let id = p
        .create_running(json!({"sku": "a100-40gb", "gpu_count": 2}))
        .await;
    let pid = p.workload_pid(id).unwrap();

    // An up node cannot be decommissioned: drain it or lose it first.
    let (status, problem) = p
        .post(&format!("/v1/nodes/{node_id}/decommission"), json!({}))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("node_state_conflict"))
    );

    // The host dies for good.
    p.stop_agent("a100");
    // SAFETY: the test's own workload process group, "powered off" with its host.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    p.wait_node_state("a100", "down").await;
    assert_eq!(
        p.live_allocations(id).await,
        2,
        "fenced while the node may come back"
    );

    let (status, body) = p
        .post(&format!("/v1/nodes/{node_id}/decommission"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "decommissioned");
    let failed = p.instance(id).await;
    assert_eq!(failed.state, "failed");
    assert_eq!(failed.failure_reason.as_deref(), Some("node_unreachable"));
    assert_eq!(
        p.live_allocations(id).await,
        0,
        "the operator's assertion lifts the fence"
    );
    // Idempotent, audited, and the name is retired.
    let (status, _) = p
        .post(&format!("/v1/nodes/{node_id}/decommission"), json!({}))
        .await;
    assert_eq!(status, 200);
    let all = events(&p, "a100").await;
    let retired: Vec<_> = all
        .iter()
        .filter(|e| e["kind"] == "node.decommissioned")
        .collect();
    assert_eq!(retired.len(), 1, "{all:?}");
    let actor = retired[0]["actor"].as_str().unwrap();
    assert!(
        actor.contains(OPERATOR_EMAIL) && actor.contains("user:"),
        "a real principal: {actor}"
    );
    let again = reqwest::Client::new()
        .post(format!("{}/v1/nodes/register", p.api_url))
        .bearer_auth(p.join_token().await)
        .json(
            &json!({"name": "a100", "agent_version": "x", "discovery": "simulated", "gpus": [],
                      "public_key": fresh_public_key(), "encryption_key": fresh_public_key()}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 409);
    assert_eq!(
        again.json::<Value>().await.unwrap()["code"],
        "node_decommissioned"
    );
    // The same hardware, rebuilt, joins under a new name and takes its GPUs along.
    let gpus: Vec<Value> = body["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            json!({"index": g["index"], "uuid": g["uuid"], "model": g["model"],
                   "memory_mib": g["memory_mib"], "healthy": true})
        })
        .collect();
    let rebuilt = reqwest::Client::new()
        .post(format!("{}/v1/nodes/register", p.api_url))
        .bearer_auth(p.join_token().await)
        .json(&json!({"name": "a100-rebuilt", "agent_version": "x", "discovery": "simulated", "gpus": gpus,
                      "public_key": fresh_public_key(), "encryption_key": fresh_public_key()}))
        .send()
        .await
        .unwrap();
    assert_eq!(rebuilt.status().as_u16(), 200);
    assert_eq!(
        p.node("a100-rebuilt").await["gpus"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Its lifecycle workflow ended.
    let client = crate::harness::temporal_args()
        .connect("test")
        .await
        .unwrap();
    let handle = client.get_workflow_handle::<workflows::gpuaas::NodeLifecycle>(
        vocabulary::node_lifecycle_id(node_id.parse().unwrap()),
    );
    p.eventually(LONG, "the lifecycle workflow completes", || async {
        let d = handle.describe(Default::default()).await.unwrap();
        d.raw_description
            .workflow_execution_info
            .as_ref()
            .is_some_and(|i| i.status == 2) // COMPLETED
    })
    .await;
    assert_eq!(p.inconsistent_free_counters().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_lifecycle_timings_reach_a_running_node_workflow() {
    use workflows::gpuaas::{LifecycleConfig, NodeLifecycle};
    let mut p = Platform::start(Options::default()).await; // grace: 600 s
    p.start_agent_process("h100", "8xH100-80GB", &ActivityHooks::default())
        .await;
    let node_id = p.node("h100").await["id"].as_str().unwrap().to_string();
    let id = p
        .create_running(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    // What the API sends on every registration, here with a 1 s grace period.
    let client = crate::harness::temporal_args()
        .connect("test")
        .await
        .unwrap();
    let lifecycle = Options::default().lifecycle;
    let shorter = LifecycleConfig {
        heartbeat_timeout_s: lifecycle.heartbeat_timeout_seconds,
        report_every_s: lifecycle.report_every_seconds,
        unreachable_grace_s: 1,
        gpu_recovery_s: lifecycle.gpu_recovery_seconds,
        drain_poll_s: lifecycle.drain_poll_seconds,
    };
    client
        .get_workflow_handle::<NodeLifecycle>(vocabulary::node_lifecycle_id(
            node_id.parse().unwrap(),
        ))
        .signal(NodeLifecycle::configure, shorter, Default::default())
        .await
        .unwrap();
    p.kill_agent_process("h100");
    let failed = p.wait_state(id, &["failed"], Duration::from_secs(30)).await;
    assert_eq!(failed.failure_reason.as_deref(), Some("node_unreachable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_node_whose_lifecycle_run_was_lost_is_fenced_and_brought_back() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent_process("h100", "8xH100-80GB", &ActivityHooks::default())
        .await;
    let node_id = p.node("h100").await["id"].as_str().unwrap().to_string();
    let id = p
        .create_running(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    p.kill_agent_process("h100");
    p.wait_node_state("h100", "down").await;
    // The lifecycle run is lost while the node is down (an operator terminated it).
    let client = crate::harness::temporal_args()
        .connect("test")
        .await
        .unwrap();
    client
        .get_workflow_handle::<workflows::gpuaas::NodeLifecycle>(vocabulary::node_lifecycle_id(
            node_id.parse().unwrap(),
        ))
        .terminate(Default::default())
        .await
        .unwrap();
    // The agent returns; its registration starts a fresh run, which fences at first contact.
    p.start_agent_process("h100", "8xH100-80GB", &ActivityHooks::default())
        .await;
    p.wait_node_state("h100", "ready").await;
    assert_eq!(
        p.instance(id).await.state,
        "running",
        "inside the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_node_takes_no_new_instances_until_uncordoned() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100", "4xH100-80GB", 100).await;
    let node = p.get_json("/v1/nodes").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let post = |verb: &'static str, id: String| {
        let req = p
            .http
            .post(format!("{}/v1/nodes/{id}/{verb}", p.api_url))
            .bearer_auth(&p.operator_token);
        async move { req.send().await.unwrap() }
    };
    for _ in 0..2 {
        let resp = post("cordon", node.clone()).await;
        assert_eq!(resp.status(), 200, "cordoning is idempotent");
        assert_eq!(resp.json::<Value>().await.unwrap()["state"], "cordoned");
    }
    let refused = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    let failed = p
        .wait_state(
            refused,
            &["failed", "running"],
            std::time::Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("insufficient_capacity")
    );
    assert!(
        failed
            .status_message
            .unwrap()
            .contains("cordoned: 1 node(s) (h100 by operator)")
    );

    assert_eq!(
        post("uncordon", node.clone())
            .await
            .json::<Value>()
            .await
            .unwrap()["state"],
        "ready"
    );
    let placed = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    assert_eq!(
        p.wait_state(
            placed,
            &["failed", "running"],
            std::time::Duration::from_secs(60)
        )
        .await
        .state,
        "running"
    );

    // Unknown nodes are 404; a node whose state forbids it is a 409.
    expect_problem(
        post("cordon", uuid::Uuid::now_v7().to_string()).await,
        404,
        "node_not_found",
    )
    .await;
    sqlx::query("UPDATE gpuaas.nodes SET state = 'down'")
        .execute(&p.pool)
        .await
        .unwrap();
    expect_problem(
        post("cordon", node.clone()).await,
        409,
        "node_state_conflict",
    )
    .await;
    // Cordoning never touched the running instance.
    assert_eq!(p.instance(placed).await.state, "running");
}

/// A node public key nobody holds the private half of (joining needs one).
fn fresh_public_key() -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        rand::random::<[u8; 32]>(),
    )
}
