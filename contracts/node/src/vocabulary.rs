//! Every name the node contract shows Temporal. Frozen: renaming one breaks running workflows
//! and recorded histories (a change needs a new name and `patched` on the workflow side).

use shared_ids::NodeId;

/// Task queue of a node's agent: the only way the control plane reaches a host.
pub fn task_queue(node: NodeId) -> String {
    format!("node-{node}")
}

/// Activity type names of the node agent. `v2`: every payload is an envelope (`envelope.rs`).
pub mod activity {
    pub const START_WORKLOAD: &str = "node.v2.start_workload";
    pub const AWAIT_WORKLOAD_RUNNING: &str = "node.v2.await_workload_running";
    pub const STOP_WORKLOAD: &str = "node.v2.stop_workload";
    pub const SESSION: &str = "node.v2.session";
    pub const LIST_WORKLOADS: &str = "node.v2.list_workloads";
}

/// Failure types the agent raises (`ApplicationFailure::type_name`) and the workflows act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFailure {
    /// The workload could not be started or exited during its settle period (non-retryable).
    StartFailed,
    /// The command was not for this node or activity, or not signed by the control plane
    /// (non-retryable): someone other than the control plane wrote to this node's queue.
    RefusedCommand,
}

impl NodeFailure {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StartFailed => "StartFailed",
            Self::RefusedCommand => "RefusedCommand",
        }
    }
}
