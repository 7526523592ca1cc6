//! The gpuaas product's Temporal vocabulary: every name it shows Temporal (task queue, workflow
//! and activity types, signals, workflow ids, search attributes, steps). Nothing outside this
//! module and `contract_node::vocabulary` spells one (scripts/ci/check-architecture, rule 10).
//!
//! Frozen since the reshape (doc/architecture/0006): a renamed workflow or activity type, signal
//! or id breaks running workflows and recorded histories. Change one only with a new name and
//! `ctx.patched(..)` in the workflow.

use shared_ids::{InstanceId, NodeId};
use temporalio_common::search_attributes::SearchAttributeKey;

/// Task queue of the control-plane worker: the product's workflows and database activities.
pub const CONTROL_TASK_QUEUE: &str = "gpuaas-control";

/// Workflow type names.
pub mod workflow {
    pub const PROVISION_INSTANCE: &str = "ProvisionInstance";
    pub const TERMINATE_INSTANCE: &str = "TerminateInstance";
    pub const NODE_LIFECYCLE: &str = "NodeLifecycle";
    pub const RECONCILE_FLEET: &str = "ReconcileFleet";
}

/// Signal names of `NodeLifecycle`.
pub mod signal {
    pub const DRAIN: &str = "drain";
    pub const CONFIGURE: &str = "configure";
    pub const DECOMMISSIONED: &str = "decommissioned";
}

/// Activity type names of the control plane's activities (the node agent's are in
/// `contract_node::vocabulary::activity`). `<resource>.<action>`, like the agent's `node.*`.
pub mod activity {
    pub const ALLOCATE: &str = "instance.allocate";
    pub const RELEASE: &str = "instance.release";
    pub const MARK_RUNNING: &str = "instance.mark_running";
    pub const MARK_FAILED: &str = "instance.mark_failed";
    pub const MARK_TERMINATED: &str = "instance.mark_terminated";

    pub const NODE_MARK_DOWN: &str = "node_lifecycle.mark_down";
    pub const NODE_FAIL_UNREACHABLE: &str = "node_lifecycle.fail_unreachable";
    pub const NODE_MARK_UP: &str = "node_lifecycle.mark_up";
    pub const NODE_APPLY_REPORT: &str = "node_lifecycle.apply_report";
    pub const NODE_DRAIN_PROGRESS: &str = "node_lifecycle.drain_progress";
    pub const NODE_TERMINATE_FOR_DRAIN: &str = "node_lifecycle.terminate_for_drain";
    pub const NODE_FINISH_DRAIN: &str = "node_lifecycle.finish_drain";

    pub const RECONCILE_TARGETS: &str = "reconcile.targets";
    pub const RECONCILE_PLAN: &str = "reconcile.plan";
    pub const RECONCILE_APPLY: &str = "reconcile.apply";
    pub const RECONCILE_UNSTARTED: &str = "reconcile.unstarted";
    pub const RECONCILE_UNWATCHED: &str = "reconcile.unwatched";
    pub const RECONCILE_RECORD_STARTED: &str = "reconcile.record_started";

    pub const PREPARE_NODE_CALL: &str = "node_call.prepare";
}

/// Workflow id of an instance's provisioning: deterministic, so a duplicate start finds it.
pub fn instance_provision_id(instance: InstanceId) -> String {
    format!("instance-provision-{instance}")
}

/// Workflow id of an instance's termination.
pub fn instance_terminate_id(instance: InstanceId) -> String {
    format!("instance-terminate-{instance}")
}

/// Workflow id of a node's lifecycle workflow: one per node.
pub fn node_lifecycle_id(node: NodeId) -> String {
    format!("node-lifecycle-{node}")
}

/// Id of the reconciler's Schedule (and the prefix of its runs' workflow ids) on a task queue.
pub fn reconciler_schedule_id(task_queue: &str) -> String {
    format!("{task_queue}-reconciler")
}

/// Custom search attributes, so operators find every workflow of an instance, node or project in
/// the UI. The dev and test servers register them at start (`SEARCH_ATTRIBUTES` in
/// `scripts/lib.sh`, which the architecture check keeps equal to [`search::REGISTRATION`]).
pub mod search {
    use super::SearchAttributeKey;

    pub const INSTANCE_ID: SearchAttributeKey<String> =
        SearchAttributeKey::keyword("GpuaasInstanceId");
    pub const NODE_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("GpuaasNodeId");
    pub const PROJECT_ID: SearchAttributeKey<String> =
        SearchAttributeKey::keyword("GpuaasProjectId");
    pub const STEP: SearchAttributeKey<String> = SearchAttributeKey::keyword("GpuaasStep");

    /// `NAME=TYPE` pairs for `temporal server start-dev --search-attribute`.
    pub const REGISTRATION: [&str; 4] = [
        "GpuaasInstanceId=Keyword",
        "GpuaasNodeId=Keyword",
        "GpuaasProjectId=Keyword",
        "GpuaasStep=Keyword",
    ];
}

/// A workflow's current step, as the `GpuaasStep` search attribute and (for instances) the API's
/// `current_step` show it.
pub trait Step: Copy {
    fn as_str(self) -> &'static str;
}

macro_rules! steps {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl Step for $name {
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }
    };
}

steps!(
    /// Steps of `ProvisionInstance` and `TerminateInstance`.
    InstanceStep {
        Allocating => "allocating",
        WaitingForCapacity => "waiting_for_capacity",
        StartingWorkload => "starting_workload",
        AwaitingRunning => "awaiting_running",
        Running => "running",
        /// Undoing what a failed or withdrawn provisioning did.
        Compensating => "compensating",
        Failed => "failed",
        StoppingWorkload => "stopping_workload",
        Terminated => "terminated",
    }
);

steps!(
    /// Steps of `NodeLifecycle`: the node's state while its agent answers, and what the
    /// workflow does around it.
    NodeStep {
        Registering => "registering",
        /// The agent is back: stopping what nobody wants before the node takes instances again.
        Fencing => "fencing",
        Ready => "ready",
        Cordoned => "cordoned",
        Draining => "draining",
        Down => "down",
        Decommissioned => "decommissioned",
    }
);

steps!(
    /// Steps of `ReconcileFleet`.
    ReconcileStep {
        ReadingAgents => "reading_agents",
        Done => "done",
    }
);

impl From<product_gpuaas::NodeState> for NodeStep {
    fn from(state: product_gpuaas::NodeState) -> Self {
        use product_gpuaas::NodeState as S;
        match state {
            S::Registering => Self::Registering,
            S::Ready => Self::Ready,
            S::Cordoned => Self::Cordoned,
            S::Draining => Self::Draining,
            S::Down => Self::Down,
            S::Decommissioned => Self::Decommissioned,
        }
    }
}
