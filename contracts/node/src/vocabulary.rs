//! Every name the node contract shows Temporal. Frozen: renaming one breaks running workflows
//! and recorded histories (a change needs a new name and `patched` on the workflow side).

use shared_ids::NodeId;

/// Task queue of a node's agent: the only way the control plane reaches a host.
pub fn task_queue(node: NodeId) -> String {
    format!("node-{node}")
}

/// Activity type names of the node agent.
pub mod activity {
    pub const START_WORKLOAD: &str = "node.start_workload";
    pub const AWAIT_WORKLOAD_RUNNING: &str = "node.await_workload_running";
    pub const STOP_WORKLOAD: &str = "node.stop_workload";
    pub const SESSION: &str = "node.session";
    pub const LIST_WORKLOADS: &str = "node.list_workloads";
}

/// Failure types the agent raises (`ApplicationFailure::type_name`) and the workflows act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFailure {
    /// The workload could not be started or exited during its settle period (non-retryable).
    StartFailed,
}

impl NodeFailure {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StartFailed => "StartFailed",
        }
    }
}
