//! The orphan reconciler end to end: orphan processes stopped, vanished instances failed,
//! unreadable nodes skipped, unstarted provisionings started, lost provisionings failed, lost node
//! lifecycles restarted (lost terminations: `outages.rs`).

use crate::harness::{Options, Platform, process_alive};
use crate::nodes::event_kinds;
use runtime::ActivityHooks;
use serde_json::json;
use std::time::Duration;
use workflows::gpuaas::vocabulary::{self as vocabulary, InstanceStep};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_stops_orphans_fails_vanished_instances_and_skips_unreadable_nodes() {
    let mut p = Platform::start(Options {
        reconcile_every_s: 2,
        ..Options::default()
    })
    .await;
    p.start_agent("h100", "8xH100-80GB", 200).await;
    let orphan = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    let vanishing = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    for id in [orphan, vanishing] {
        assert_eq!(
            p.wait_state(id, &["running", "failed"], LONG).await.state,
            "running"
        );
    }
    let orphan_pid = p.workload_pid(orphan).unwrap();
    let vanishing_pid = p.workload_pid(vanishing).unwrap();

    // A ghost node nobody can read, holding GPUs for an ended instance: must be left alone.
    let ghost = p.register_ghost_node("ghost", 8, "A100-40GB").await;
    let leaked = Platform::insert_ended_instance_holding(&p.pool, ghost, 2).await;

    // An instance the database thinks ended, whose process still runs (a lost terminate)...
    p.end_behind_the_platforms_back(orphan).await;
    // ...and a running instance whose process died behind the platform's back.
    // SAFETY: signalling the test's own workload process group.
    unsafe {
        libc::kill(-vanishing_pid, libc::SIGKILL);
    }

    let vanished = p.wait_state(vanishing, &["failed"], LONG).await;
    assert_eq!(
        vanished.failure_reason.as_deref(),
        Some("workload_vanished")
    );
    p.eventually(
        LONG,
        "the orphan is stopped and its GPU released",
        || async { !process_alive(orphan_pid) && p.live_allocations(orphan).await == 0 },
    )
    .await;
    assert_eq!(p.live_allocations(vanishing).await, 0);
    let kinds = event_kinds(&p, "h100").await;
    assert!(
        kinds.contains(&"reconciler.orphan_stopped".to_string()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"reconciler.instance_vanished".to_string()),
        "{kinds:?}"
    );
    // Each fix once, although the reconciler ran several times.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = event_kinds(&p, "h100").await;
    assert_eq!(
        again
            .iter()
            .filter(|k| k.starts_with("reconciler."))
            .count(),
        2,
        "{again:?}"
    );
    assert_eq!(
        p.live_allocations(leaked).await,
        2,
        "an unreadable node is never acted on"
    );
    assert_eq!(p.inconsistent_free_counters().await, 0);
    let metrics = runtime::metrics::init(None).unwrap().render();
    assert!(
        metrics.contains("gpuaas_reconciler_fixes_total{kind=\"orphan_stopped\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_starts_a_provisioning_the_api_recorded_but_never_started() {
    let mut p = Platform::start(Options {
        reconcile_every_s: 2,
        ..Options::default()
    })
    .await;
    p.start_agent("h100", "8xH100-80GB", 200).await;
    // The API died between recording the instance and starting its workflow, 2 minutes ago.
    let id = shared_ids::InstanceId::new();
    sqlx::query(
        "INSERT INTO gpuaas.instances (id, project_id, name, sku_id, gpu_count, command, state,
             current_step, created_at)
         VALUES ($1, $2, 'orphaned-request', 'h100-80gb-sxm', 1, 'sleep infinity', 'pending',
                 'queued', now() - interval '2 minutes')",
    )
    .bind(id.uuid())
    .bind(platform_iam::DEFAULT_PROJECT.uuid())
    .execute(&p.pool)
    .await
    .unwrap();
    let running = p.wait_state(id, &["running", "failed"], LONG).await;
    assert_eq!(running.state, "running", "{running:?}");
    // Later passes find its workflow and start nothing more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM gpuaas.events WHERE kind = 'reconciler.provisioning_started' AND instance_id = $1",
    )
    .bind(id.uuid())
    .fetch_one(&p.pool)
    .await
    .unwrap();
    assert_eq!(started, 1);
    assert_eq!(p.live_workloads().len(), 1);
    assert_eq!(p.double_booked_gpus().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_restarts_a_lost_node_lifecycle_so_the_node_stays_watched() {
    let mut p = Platform::start(Options {
        reconcile_every_s: 2,
        ..Options::default()
    })
    .await;
    p.start_agent_process("h100", "8xH100-80GB", &ActivityHooks::default())
        .await;
    let node_id = p.node("h100").await["id"].as_str().unwrap().to_string();
    let client = crate::harness::temporal_args()
        .connect("test")
        .await
        .unwrap();
    let handle = client.get_workflow_handle::<workflows::gpuaas::NodeLifecycle>(
        vocabulary::node_lifecycle_id(node_id.parse().unwrap()),
    );
    handle.terminate(Default::default()).await.unwrap();

    p.eventually(LONG, "the reconciler starts a new lifecycle", || async {
        event_kinds(&p, "h100")
            .await
            .iter()
            .any(|k| k == "reconciler.lifecycle_started")
    })
    .await;
    // The node is watched again: its agent's death is noticed.
    p.kill_agent_process("h100");
    p.wait_node_state("h100", "down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_fails_an_instance_whose_provisioning_workflow_is_gone_and_cleans_up_after_it()
 {
    let mut p = Platform::start(Options {
        reconcile_every_s: 2,
        ..Options::default()
    })
    .await;
    // A long settle: the instance stays `provisioning`, its process up, while its workflow ends.
    p.start_agent("h100", "8xH100-80GB", 30_000).await;
    let starting = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    p.eventually(LONG, "the workload is started", || async {
        p.workload_pid(starting).is_some()
    })
    .await;
    let pid = p.workload_pid(starting).unwrap();
    // More GPUs than are free: it stays `pending`, waiting for capacity.
    let waiting = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 8, "capacity_timeout_seconds": 600}))
        .await;
    p.eventually(LONG, "the second instance waits for capacity", || async {
        p.instance(waiting).await.current_step == InstanceStep::WaitingForCapacity.as_str()
    })
    .await;
    assert_eq!(p.instance(starting).await.state, "provisioning");

    // An operator terminates both provisioning workflows: nothing would move them again.
    let client = crate::harness::temporal_args()
        .connect("test")
        .await
        .unwrap();
    for id in [starting, waiting] {
        client
            .get_workflow_handle::<workflows::gpuaas::ProvisionInstance>(
                workflows::gpuaas::instance_provision::workflow_id(id),
            )
            .terminate(Default::default())
            .await
            .unwrap();
    }

    for id in [starting, waiting] {
        let failed = p.wait_state(id, &["failed"], LONG).await;
        assert_eq!(failed.failure_reason.as_deref(), Some("timeout"));
        assert!(
            failed
                .status_message
                .as_deref()
                .is_some_and(|m| m.contains("provisioning workflow ended")),
            "{failed:?}"
        );
    }
    // The failed instance's process is an orphan for the node pass: stopped, then released.
    p.eventually(
        LONG,
        "the lost instance's process is stopped and its GPU released",
        || async { !process_alive(pid) && p.live_allocations(starting).await == 0 },
    )
    .await;
    assert_eq!(p.live_allocations(waiting).await, 0);
    for id in [starting, waiting] {
        let lost: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM gpuaas.events WHERE kind = 'reconciler.provisioning_lost' AND instance_id = $1",
        )
        .bind(id.uuid())
        .fetch_one(&p.pool)
        .await
        .unwrap();
        assert_eq!(lost, 1);
    }
    assert_eq!(p.leak_report().await, Default::default());
}
