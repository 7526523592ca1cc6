//! The Temporal names are frozen (doc/architecture/0006): renaming a workflow or activity type,
//! a signal, a task queue, an id scheme, a search attribute or a step breaks running workflows
//! and recorded histories. These pins fail on any rename; change one only with a new name and
//! `ctx.patched(..)`, then update the pin in the same commit.

use activities::gpuaas::vocabulary::{
    self as gpuaas, InstanceStep, NodeStep, ReconcileStep, Step, activity, search, signal,
};
use contract_node::vocabulary as node;
use shared_ids::{InstanceId, NodeId};
use workflows::gpuaas::{NodeLifecycle, ProvisionInstance, ReconcileFleet, TerminateInstance};

#[test]
fn workflow_types_task_queues_and_ids_are_pinned() {
    assert_eq!(gpuaas::CONTROL_TASK_QUEUE, "gpuaas-control");
    assert_eq!(ProvisionInstance::name(), "ProvisionInstance");
    assert_eq!(TerminateInstance::name(), "TerminateInstance");
    assert_eq!(NodeLifecycle::name(), "NodeLifecycle");
    assert_eq!(ReconcileFleet::name(), "ReconcileFleet");
    let instance = InstanceId::from_u128(1);
    let node_id = NodeId::from_u128(2);
    assert_eq!(
        gpuaas::instance_provision_id(instance),
        "instance-provision-00000000-0000-0000-0000-000000000001"
    );
    assert_eq!(
        gpuaas::instance_terminate_id(instance),
        "instance-terminate-00000000-0000-0000-0000-000000000001"
    );
    assert_eq!(
        gpuaas::node_lifecycle_id(node_id),
        "node-lifecycle-00000000-0000-0000-0000-000000000002"
    );
    assert_eq!(
        node::task_queue(node_id),
        "node-00000000-0000-0000-0000-000000000002"
    );
    assert_eq!(
        gpuaas::reconciler_schedule_id("gpuaas-control"),
        "gpuaas-control-reconciler"
    );
    assert_eq!(
        [signal::DRAIN, signal::CONFIGURE, signal::DECOMMISSIONED],
        ["drain", "configure", "decommissioned"]
    );
}

#[test]
fn activity_types_are_pinned() {
    let control = [
        activity::ALLOCATE,
        activity::RELEASE,
        activity::MARK_RUNNING,
        activity::MARK_FAILED,
        activity::MARK_TERMINATED,
        activity::NODE_MARK_DOWN,
        activity::NODE_FAIL_UNREACHABLE,
        activity::NODE_MARK_UP,
        activity::NODE_APPLY_REPORT,
        activity::NODE_DRAIN_PROGRESS,
        activity::NODE_TERMINATE_FOR_DRAIN,
        activity::NODE_FINISH_DRAIN,
        activity::RECONCILE_TARGETS,
        activity::RECONCILE_PLAN,
        activity::RECONCILE_APPLY,
        activity::RECONCILE_UNSTARTED,
        activity::RECONCILE_UNWATCHED,
        activity::RECONCILE_RECORD_STARTED,
    ];
    assert_eq!(
        control,
        [
            "instance.allocate",
            "instance.release",
            "instance.mark_running",
            "instance.mark_failed",
            "instance.mark_terminated",
            "node_lifecycle.mark_down",
            "node_lifecycle.fail_unreachable",
            "node_lifecycle.mark_up",
            "node_lifecycle.apply_report",
            "node_lifecycle.drain_progress",
            "node_lifecycle.terminate_for_drain",
            "node_lifecycle.finish_drain",
            "reconcile.targets",
            "reconcile.plan",
            "reconcile.apply",
            "reconcile.unstarted",
            "reconcile.unwatched",
            "reconcile.record_started",
        ]
    );
    let agent = [
        node::activity::START_WORKLOAD,
        node::activity::AWAIT_WORKLOAD_RUNNING,
        node::activity::STOP_WORKLOAD,
        node::activity::SESSION,
        node::activity::LIST_WORKLOADS,
    ];
    assert_eq!(
        agent,
        [
            "node.v2.start_workload",
            "node.v2.await_workload_running",
            "node.v2.stop_workload",
            "node.v2.session",
            "node.v2.list_workloads",
        ]
    );
    assert_eq!(node::NodeFailure::StartFailed.as_str(), "StartFailed");
}

#[test]
fn search_attributes_and_steps_are_pinned() {
    assert_eq!(
        [
            search::INSTANCE_ID.name(),
            search::NODE_ID.name(),
            search::PROJECT_ID.name(),
            search::STEP.name(),
        ],
        [
            "GpuaasInstanceId",
            "GpuaasNodeId",
            "GpuaasProjectId",
            "GpuaasStep"
        ]
    );
    let steps = |all: &[&'static str]| all.join(" ");
    assert_eq!(
        steps(
            &InstanceStep::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
        ),
        "allocating waiting_for_capacity starting_workload awaiting_running running compensating failed stopping_workload terminated"
    );
    assert_eq!(
        steps(&NodeStep::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
        "registering fencing ready cordoned draining down decommissioned"
    );
    assert_eq!(
        steps(
            &ReconcileStep::ALL
                .iter()
                .map(|s| Step::as_str(*s))
                .collect::<Vec<_>>()
        ),
        "reading_agents done"
    );
}

/// A node's step while its agent answers is its state's own word (the UI shows one vocabulary).
#[test]
fn a_node_step_is_named_like_the_node_state() {
    use product_gpuaas::NodeState::*;
    for state in [Registering, Ready, Cordoned, Draining, Down, Decommissioned] {
        assert_eq!(NodeStep::from(state).as_str(), state.as_str());
    }
}
