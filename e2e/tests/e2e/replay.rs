//! The replay gate: every recorded history (happy, failure and compensation paths of every
//! workflow type, recorded by `workers/tests/platform/histories.rs`) must replay against the current
//! workflow code. A change that breaks one needs `ctx.patched(..)`, or, when nothing of the old
//! code can still be running, a re-recording.

use workflows::gpuaas::{NodeLifecycle, ProvisionInstance, ReconcileFleet, TerminateInstance};
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

#[tokio::test]
async fn every_recorded_history_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    let expected = [
        "provision_after_capacity_wait",
        "provision_insufficient_capacity",
        "provision_node_unreachable",
        "provision_running",
        "provision_start_failed",
        "provision_withdrawn_while_waiting",
        "terminate_node_unreachable",
        "terminate_running",
        "terminate_by_drain",
        "node_lifecycle",
        "reconcile_fleet",
    ];
    let stems: Vec<String> = names
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in expected {
        assert!(
            stems.iter().any(|s| s == want),
            "missing recorded history {want}.json"
        );
    }
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<ProvisionInstance>()
            .unwrap()
            .register_workflow::<TerminateInstance>()
            .unwrap()
            .register_workflow::<NodeLifecycle>()
            .unwrap()
            .register_workflow::<ReconcileFleet>()
            .unwrap()
            .build(),
    )
    .unwrap();
    for path in names {
        let history = WorkflowHistory::from_json(&std::fs::read(&path).unwrap()).unwrap();
        replayer
            .replay_workflow(history)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
