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

#[test]
fn billing_names_are_pinned() {
    use activities::billing::vocabulary::{self as billing, BillingStep, activity as act};
    use shared_ids::{InvoiceId, OrgId};
    use workflows::billing::{
        BillingCycle, BillingSweep, CreditEnforcement, MeteringRun, PaymentCollection,
    };
    assert_eq!(billing::TASK_QUEUE, "billing-control");
    assert_eq!(
        [
            MeteringRun::name(),
            BillingCycle::name(),
            PaymentCollection::name(),
            CreditEnforcement::name(),
            BillingSweep::name(),
        ],
        [
            "MeteringRun",
            "BillingCycle",
            "PaymentCollection",
            "CreditEnforcement",
            "BillingSweep"
        ]
    );
    let org = OrgId::from_u128(1);
    assert_eq!(
        billing::metering_run_id(org, "2026-12", None),
        "billing-metering/00000000-0000-0000-0000-000000000001/2026-12/in-effect"
    );
    assert_eq!(
        billing::metering_run_id(org, "2026-12", Some(3)),
        "billing-metering/00000000-0000-0000-0000-000000000001/2026-12/v3"
    );
    assert_eq!(
        billing::billing_cycle_id(org, "2026-12"),
        "billing-cycle/00000000-0000-0000-0000-000000000001/2026-12"
    );
    assert_eq!(
        billing::payment_collection_id(InvoiceId::from_u128(2)),
        "billing-payment/00000000-0000-0000-0000-000000000002"
    );
    assert_eq!(
        billing::sweep_schedule_id("billing-control"),
        "billing-sweep/billing-control"
    );
    assert_eq!(
        billing::enforcement_schedule_id("billing-control"),
        "billing-enforcement/billing-control"
    );
    assert_eq!(
        [
            act::METERING_RUN,
            act::INVOICE_BUILD_DRAFT,
            act::INVOICE_FINALIZE,
            act::INVOICE_MARK_UNCOLLECTIBLE,
            act::INVOICE_BILL_CORRECTIONS,
            act::INVOICE_CLOSE_PERIOD,
            act::PAYMENT_ATTEMPT,
            act::ACCOUNT_MARK_DELINQUENT,
            act::ACCOUNT_REFRESH_STANDING,
            act::ACCOUNT_ORGS,
            act::ENFORCEMENT_PAST_GRACE,
            act::ENFORCEMENT_RUNNING_INSTANCES,
            act::ENFORCEMENT_BEGIN_TERMINATION,
        ]
        .join(" "),
        "billing.metering.run billing.invoice.build_draft billing.invoice.finalize \
         billing.invoice.mark_uncollectible billing.invoice.bill_corrections \
         billing.invoice.close_period billing.payment.attempt \
         billing.account.mark_delinquent \
         billing.account.refresh_standing billing.account.orgs billing.enforcement.past_grace \
         billing.enforcement.running_instances billing.enforcement.begin_termination"
    );
    assert_eq!(
        billing::search::REGISTRATION,
        ["BillingOrgId=Keyword", "BillingPeriod=Keyword"]
    );
    assert_eq!(
        BillingStep::ALL
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        "billing_metering billing_waiting_for_period_end billing_building_draft \
         billing_waiting_for_late_usage billing_finalizing billing_collecting \
         billing_waiting_to_retry billing_paid billing_stopped billing_uncollectible \
         billing_refreshing_standing billing_stopping_instances billing_done"
    );
}
