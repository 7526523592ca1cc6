//! ProvisionInstance / TerminateInstance end to end, including their failure paths.

use crate::harness::{Options, Platform, process_alive};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use workflows::gpuaas::vocabulary::{InstanceStep, search};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_run_terminate_releases_gpus_and_stops_the_process() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100-a", "8xH100-80GB", 300).await;

    let id = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 2, "command": "echo gpus=$CUDA_VISIBLE_DEVICES; sleep 600"}))
        .await;
    let running = p.wait_state(id, &["running", "failed"], LONG).await;
    assert_eq!(running.state, "running", "{running:?}");
    assert_eq!(running.gpu_indices.len(), 2);
    assert_eq!(running.current_step, "running");
    assert_eq!(p.live_allocations(id).await, 2);
    let pid = p.workload_pid(id).expect("agent recorded a pid");
    assert!(process_alive(pid), "workload process runs");
    // The workload saw exactly its GPUs.
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let visible = format!(
        "CUDA_VISIBLE_DEVICES={}",
        running
            .gpu_indices
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(
        env.split(|b| *b == 0).any(|kv| kv == visible.as_bytes()),
        "workload env has {visible}"
    );

    assert_eq!(p.delete(id).await, 202);
    let done = p.wait_state(id, &["terminated"], LONG).await;
    assert!(done.ended_at.is_some());
    assert_eq!(p.live_allocations(id).await, 0, "allocation released");
    assert!(!process_alive(pid), "workload process gone");
    assert_eq!(p.inconsistent_free_counters().await, 0);
    // Deleting again is harmless.
    assert_eq!(p.delete(id).await, 202);
    assert_eq!(p.instance(id).await.state, "terminated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_beyond_capacity_never_double_book() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100-big", "8xH100-80GB", 200).await;
    p.start_agent("h100-small", "4xH100-80GB", 200).await;

    let creates = (0..30).map(|i| {
        let p = &p;
        async move {
            p.create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "name": format!("c-{i}")}))
                .await
        }
    });
    let ids = futures::future::join_all(creates).await;
    let mut running = Vec::new();
    let mut failed = 0;
    for id in &ids {
        let instance = p
            .wait_state(*id, &["running", "failed"], Duration::from_secs(120))
            .await;
        match instance.state.as_str() {
            "running" => running.push(instance),
            _ => {
                assert_eq!(
                    instance.failure_reason.as_deref(),
                    Some("insufficient_capacity"),
                    "{instance:?}"
                );
                assert_eq!(
                    p.live_allocations(*id).await,
                    0,
                    "a failed instance holds nothing"
                );
                failed += 1;
            }
        }
    }
    assert_eq!(running.len(), 12, "exactly the fleet's 12 GPUs are used");
    assert_eq!(failed, 18);
    assert_eq!(
        p.double_booked_gpus().await,
        0,
        "no GPU is in two live allocations"
    );
    assert_eq!(p.total_live_allocations().await, 12);
    let mut held: Vec<(shared_ids::NodeId, i32)> = running
        .iter()
        .map(|i| (i.node_id.unwrap(), i.gpu_indices[0]))
        .collect();
    held.sort();
    held.dedup();
    assert_eq!(held.len(), 12, "the API shows 12 distinct GPUs");
    assert_eq!(p.inconsistent_free_counters().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_capacity_and_runs_once_it_frees() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100", "4xH100-80GB", 200).await;
    let first = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 4}))
        .await;
    assert_eq!(
        p.wait_state(first, &["running", "failed"], LONG)
            .await
            .state,
        "running"
    );

    let waiting = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 4, "capacity_timeout_seconds": 120}))
        .await;
    p.eventually(
        LONG,
        "the second request explains that it waits",
        || async {
            let i = p.instance(waiting).await;
            i.current_step == InstanceStep::WaitingForCapacity.as_str()
                && i.status_message
                    .as_deref()
                    .is_some_and(|m| m.contains("no node has 4 free H100-80GB"))
        },
    )
    .await;
    // `pending` until placed; `provisioning` once it holds GPUs on a node.
    assert_eq!(p.instance(waiting).await.state, "pending");
    assert_eq!(p.live_allocations(waiting).await, 0);

    // A third waiter is deleted while it waits: it ends terminated, holding nothing.
    let withdrawn = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 4, "capacity_timeout_seconds": 120}))
        .await;
    p.eventually(LONG, "the third waits too", || async {
        p.instance(withdrawn).await.current_step == InstanceStep::WaitingForCapacity.as_str()
    })
    .await;
    assert_eq!(p.delete(withdrawn).await, 202);
    p.wait_state(withdrawn, &["terminated"], LONG).await;

    assert_eq!(p.delete(first).await, 202);
    let freed_at = Instant::now();
    let second = p.wait_state(waiting, &["running", "failed"], LONG).await;
    assert_eq!(second.state, "running", "{second:?}");
    assert!(
        freed_at.elapsed() < Duration::from_secs(30),
        "picked up freed capacity within the poll interval"
    );
    assert_eq!(p.live_allocations(withdrawn).await, 0);
    assert_eq!(p.double_booked_gpus().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_capacity_timeout_a_request_fails_at_once() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("a100", "4xA100-40GB", 200).await;
    let id = p
        .create_ok(json!({"sku": "a100-40gb", "gpu_count": 8}))
        .await;
    let failed = p.wait_state(id, &["failed", "running"], LONG).await;
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("insufficient_capacity")
    );
    let why = failed.status_message.unwrap();
    assert!(
        why.contains("no node has 8 free A100-40GB")
            && why.contains("full: 1 node(s) (a100: 4 free)"),
        "{why}"
    );
    assert_eq!(p.total_live_allocations().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_fails_within_schedule_to_start_and_keeps_its_gpus_fenced() {
    let p = Platform::start(Options {
        node_schedule_to_start_s: 3,
        ..Options::default()
    })
    .await;
    let ghost = p.register_ghost_node("ghost", 8, "H100-80GB").await;
    let started = Instant::now();
    let id = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    // While it waits, the API says on what, where, and for how long.
    p.eventually(LONG, "the wait is explained", || async {
        let i = p.instance(id).await;
        i.state == "provisioning"
            && i.status_message
                .as_deref()
                .is_some_and(|m| m.contains("for the agent of node ghost to start the workload"))
    })
    .await;
    let failed = p.wait_state(id, &["failed", "running"], LONG).await;
    let took = started.elapsed();
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("node_unreachable"),
        "{failed:?}"
    );
    assert_eq!(failed.node_id, Some(ghost));
    assert!(failed.status_message.unwrap().contains("ghost"));
    // Schedule-to-start (3 s) plus the undo's own schedule-to-start (3 s) plus overhead.
    assert!(
        took < p.node_schedule_to_start() * 2 + Duration::from_secs(8),
        "failed fast: {took:?}"
    );
    // The start may have reached the host before it died: its GPUs stay fenced, and the node is
    // out of placement (down) until its agent confirms what runs there.
    assert_eq!(p.live_allocations(id).await, 1, "allocation stays fenced");
    p.wait_node_state("ghost", "down").await;
    assert_eq!(p.inconsistent_free_counters().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_that_exits_at_start_fails_start_failed_and_is_unwound() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("l40s", "4xL40S-48GB", 500).await;
    let id = p.create_ok(json!({"sku": "l40s-48gb", "gpu_count": 2, "command": "echo boom-from-workload; exit 7"})).await;
    let failed = p.wait_state(id, &["failed", "running"], LONG).await;
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("start_failed"),
        "{failed:?}"
    );
    let why = failed.status_message.unwrap();
    assert!(
        why.contains("exit code 7") && why.contains("boom-from-workload"),
        "{why}"
    );
    assert_eq!(p.live_allocations(id).await, 0);
    assert!(p.live_workloads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_provisioning_completes_after_restart() {
    let mut p = Platform::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await;
    // A long settle keeps the workflow inside "awaiting_running" while the worker dies.
    p.start_agent("h100", "8xH100-80GB", 4000).await;
    p.start_worker_process();
    let id = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    p.eventually(LONG, "provisioning reaches the node", || async {
        p.instance(id).await.current_step == InstanceStep::StartingWorkload.as_str()
    })
    .await;
    p.kill_worker_process();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        p.instance(id).await.state,
        "provisioning",
        "nothing completes without a worker"
    );
    p.start_worker_process();
    let done = p.wait_state(id, &["running", "failed"], LONG).await;
    assert_eq!(done.state, "running", "{done:?}");
    assert_eq!(p.live_allocations(id).await, 1);
    assert_eq!(p.double_booked_gpus().await, 0);
    assert_eq!(
        p.live_workloads().len(),
        1,
        "exactly one process for the instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_re_adopts_its_workloads_and_can_stop_them() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100", "8xH100-80GB", 200).await;
    let id = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 4}))
        .await;
    assert_eq!(
        p.wait_state(id, &["running", "failed"], LONG).await.state,
        "running"
    );
    let pid = p.workload_pid(id).unwrap();

    p.stop_agent("h100");
    assert!(process_alive(pid), "workloads outlive their agent");
    p.start_agent("h100", "8xH100-80GB", 200).await;
    let nodes = p.get_json("/v1/nodes").await;
    assert_eq!(
        nodes["items"].as_array().unwrap().len(),
        1,
        "the restarted agent kept its node identity"
    );

    assert_eq!(p.delete(id).await, 202);
    p.wait_state(id, &["terminated"], LONG).await;
    assert!(
        !process_alive(pid),
        "the new agent stopped the old agent's workload"
    );
    assert_eq!(p.live_allocations(id).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_provisioning_shows_its_step_and_node_in_temporal() {
    let p = Platform::start(Options {
        node_schedule_to_start_s: 30,
        ..Options::default()
    })
    .await;
    let ghost = p.register_ghost_node("ghost", 8, "H100-80GB").await;
    let id = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    p.eventually(LONG, "the workflow waits on the ghost node", || async {
        p.instance(id).await.current_step == InstanceStep::StartingWorkload.as_str()
    })
    .await;

    let client = crate::harness::temporal_args()
        .connect("test")
        .await
        .unwrap();
    let workflow_id = p.instance(id).await.workflow_id;
    let handle = client.get_workflow_handle::<workflows::gpuaas::ProvisionInstance>(workflow_id);
    let deadline = Instant::now() + Duration::from_secs(20);
    let attributes = loop {
        let described = handle.describe(Default::default()).await.unwrap();
        let info = described.raw_description.workflow_execution_info.unwrap();
        let attributes: std::collections::HashMap<String, String> = info
            .search_attributes
            .map(|s| s.indexed_fields)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    String::from_utf8_lossy(&v.data)
                        .trim_matches('"')
                        .to_string(),
                )
            })
            .collect();
        if attributes.get(search::STEP.name()).map(String::as_str)
            == Some(InstanceStep::StartingWorkload.as_str())
        {
            break attributes;
        }
        assert!(
            Instant::now() < deadline,
            "search attributes never showed the step: {attributes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(attributes[search::INSTANCE_ID.name()], id.to_string());
    assert_eq!(attributes[search::NODE_ID.name()], ghost.to_string());
    assert_eq!(
        attributes[search::PROJECT_ID.name()],
        platform_iam_default_project()
    );
}

fn platform_iam_default_project() -> String {
    "00000000-0000-7000-8000-000000000002".to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_workflow_cache_disabled_every_task_replays_and_still_completes() {
    // max_cached_workflows = 0: the worker rebuilds each workflow from its history on every
    // task, so any nondeterminism in the workflow code fails here, not in production.
    let mut p = Platform::start(Options {
        max_cached_workflows: 0,
        ..Options::default()
    })
    .await;
    p.start_agent("h100", "4xH100-80GB", 200).await;
    let ok = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 4}))
        .await;
    assert_eq!(
        p.wait_state(ok, &["running", "failed"], LONG).await.state,
        "running"
    );
    let waiting = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 2, "capacity_timeout_seconds": 60}))
        .await;
    p.eventually(LONG, "it waits", || async {
        p.instance(waiting).await.current_step == InstanceStep::WaitingForCapacity.as_str()
    })
    .await;
    p.delete(ok).await;
    p.wait_state(ok, &["terminated"], LONG).await;
    assert_eq!(
        p.wait_state(waiting, &["running", "failed"], LONG)
            .await
            .state,
        "running"
    );
    let bad = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "command": "exit 9"}))
        .await;
    assert_eq!(
        p.wait_state(bad, &["failed", "running"], LONG)
            .await
            .failure_reason
            .as_deref(),
        Some("start_failed")
    );
    assert_eq!(p.double_booked_gpus().await, 0);
    assert_eq!(p.live_allocations(bad).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_same_instance_and_rejects_another_body() {
    let p = Platform::start(Options::default()).await;
    let body = json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "name": "idem"});
    let (s1, first) = p.create(body.clone(), Some("key-1")).await;
    let (s2, again) = p.create(body.clone(), Some("key-1")).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["id"], again["id"], "same key and body: same instance");

    let (s3, conflict) = p
        .create(
            json!({"sku": "h100-80gb-sxm", "gpu_count": 2, "name": "idem"}),
            Some("key-1"),
        )
        .await;
    assert_problem(s3, &conflict, 409, "idempotency_key_reused");
    assert_eq!(instance_count(&p).await, 1, "nothing else was written");

    // Without a key, the same body creates a second instance.
    let (s4, other) = p.create(body, None).await;
    assert_eq!(s4, 202);
    assert_ne!(other["id"], first["id"]);
    assert_eq!(instance_count(&p).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problem_json_and_writes_nothing() {
    let p = Platform::start(Options::default()).await;
    let cases = [
        (json!({"sku": "tpu-v5", "gpu_count": 1}), 422, "unknown_sku"),
        (
            json!({"sku": "h100-80gb-sxm", "gpu_count": 3}),
            422,
            "invalid_gpu_count",
        ),
        (
            json!({"sku": "l40s-48gb", "gpu_count": 8}),
            422,
            "invalid_gpu_count",
        ),
        (
            json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "name": "Not OK"}),
            422,
            "invalid_name",
        ),
        (
            json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "capacity_timeout_seconds": -5}),
            422,
            "invalid_capacity_timeout",
        ),
        (json!({"sku": "h100-80gb-sxm"}), 422, "invalid_body"),
        (
            json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "gpus": 2}),
            422,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let (s, problem) = p.create(body.clone(), None).await;
        assert_problem(s, &problem, status, code);
    }
    // Malformed JSON, with the problem content type.
    let resp = p
        .http
        .post(format!("{}/v1/instances", p.api_url))
        .bearer_auth(&p.tenant_token)
        .header("content-type", "application/json")
        .body("{\"sku\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    expect_problem(resp, 400, "malformed_json").await;
    // A key that is not printable ASCII, and a query string that does not parse.
    let resp = p
        .http
        .post(format!("{}/v1/instances", p.api_url))
        .bearer_auth(&p.tenant_token)
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        )
        .json(&json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .send()
        .await
        .unwrap();
    expect_problem(resp, 422, "invalid_idempotency_key").await;
    let resp = p
        .http
        .get(format!("{}/v1/instances?limit=abc", p.api_url))
        .bearer_auth(&p.tenant_token)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 400, "invalid_query").await;
    assert_eq!(instance_count(&p).await, 0, "no bad request wrote anything");

    // Unknown ids: 404, whether well-formed or not.
    for path in [
        format!("/v1/instances/{}", uuid::Uuid::now_v7()),
        "/v1/instances/not-a-uuid".into(),
    ] {
        let resp = p
            .http
            .get(format!("{}{path}", p.api_url))
            .bearer_auth(&p.tenant_token)
            .send()
            .await
            .unwrap();
        expect_problem(resp, 404, "instance_not_found").await;
    }
    let resp = p
        .http
        .get(format!("{}/v1/nodes/{}", p.api_url, uuid::Uuid::now_v7()))
        .bearer_auth(&p.operator_token)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 404, "node_not_found").await;

    // No token, wrong token, and a join token are all refused for the user API.
    let join_token = p.join_token().await;
    for token in [None, Some("wrong"), Some(join_token.as_str())] {
        let mut req = p.http.get(format!("{}/v1/instances", p.api_url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        expect_problem(resp, 401, "unauthorized").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_page_by_cursor_newest_first() {
    let p = Platform::start(Options::default()).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            p.create_ok(json!({"sku": "a100-40gb", "gpu_count": 1, "name": format!("page-{i}")}))
                .await,
        );
    }
    let first = p.get_json("/v1/instances?limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second = p
        .get_json(&format!("/v1/instances?limit=2&cursor={cursor}"))
        .await;
    let third = p
        .get_json(&format!(
            "/v1/instances?limit=2&cursor={}",
            second["next_cursor"].as_str().unwrap()
        ))
        .await;
    let ids: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|page| {
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
        })
        .collect();
    let mut expected: Vec<String> = created.iter().map(|id| id.to_string()).collect();
    expected.reverse();
    assert_eq!(ids, expected, "every instance once, newest first");
    assert!(third["next_cursor"].is_null());
    let resp = p
        .http
        .get(format!("{}/v1/instances?limit=0", p.api_url))
        .bearer_auth(&p.tenant_token)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 400, "invalid_limit").await;
}

async fn instance_count(p: &Platform) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM gpuaas.instances")
        .fetch_one(&p.pool)
        .await
        .unwrap()
}

/// Asserts a response is the problem+json error `code` with `status`.
pub(crate) async fn expect_problem(resp: reqwest::Response, status: u16, code: &str) {
    let got = resp.status().as_u16();
    assert_problem(got, &resp.json().await.unwrap(), status, code);
}

fn assert_problem(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert_eq!(body["status"], want_status);
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "request_id present: {body}"
    );
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}
