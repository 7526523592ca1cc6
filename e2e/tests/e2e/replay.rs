//! The replay gate: every recorded history (happy, failure and compensation paths of every
//! workflow type, recorded by `histories.rs`) must replay against the current workflow code. A
//! change that breaks one needs `ctx.patched(..)`, or, when nothing of the old code can still be
//! running, a re-recording. And each workflow's own list of activities (`ACTIVITIES`, which the
//! fault suite walks) must be what its recorded successful run executed.

use serde_json::Value;
use temporalio_client::WorkflowHistory;
use temporalio_common::protos::temporal::api::history::v1::History;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};
use workflows::gpuaas::{
    ActivityStep, NodeLifecycle, ProvisionInstance, ReconcileFleet, TerminateInstance,
    instance_provision, instance_terminate,
};

fn history_file(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/histories")
        .join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The activity types a recorded run executed, in order: regular activities as scheduled, local
/// ones as their markers record them.
fn executed_activities(json: &[u8]) -> Vec<String> {
    let history: History = serde_json::from_slice(json).unwrap();
    history
        .events
        .iter()
        .filter_map(|event| match event.attributes.as_ref()? {
            Attributes::ActivityTaskScheduledEventAttributes(a) => {
                a.activity_type.as_ref().map(|t| t.name.clone())
            }
            Attributes::MarkerRecordedEventAttributes(m)
                if m.marker_name == "core_local_activity" =>
            {
                let data = &m.details.get("data")?.payloads.first()?.data;
                let marker: Value = serde_json::from_slice(data).ok()?;
                marker["activity_type"].as_str().map(str::to_string)
            }
            _ => None,
        })
        .collect()
}

fn names(steps: &[ActivityStep]) -> Vec<String> {
    steps.iter().map(|s| s.activity.to_string()).collect()
}

#[test]
fn each_workflows_activity_list_is_what_its_successful_run_executed() {
    assert_eq!(
        executed_activities(&history_file("provision_running")),
        names(instance_provision::ACTIVITIES)
    );
    assert_eq!(
        executed_activities(&history_file("terminate_running")),
        names(instance_terminate::ACTIVITIES)
    );
}

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
        "metering_run",
        "billing_cycle",
        "payment_collection_paid",
        "payment_collection_exhausted",
        "credit_enforcement",
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
            .register_workflow::<workflows::billing::MeteringRun>()
            .unwrap()
            .register_workflow::<workflows::billing::BillingCycle>()
            .unwrap()
            .register_workflow::<workflows::billing::PaymentCollection>()
            .unwrap()
            .register_workflow::<workflows::billing::CreditEnforcement>()
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
