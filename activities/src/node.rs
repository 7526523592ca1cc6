//! The node-agent activity contract: names, inputs and outputs. The agent implements these with
//! `#[activity(definition = ...)]`, so a mismatch fails to compile on either side.

use serde::{Deserialize, Serialize};
use temporalio_common::ActivityError;
use temporalio_macros::activity_definitions;
use uuid::Uuid;

/// What to run for an instance, and on which GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub instance_id: Uuid,
    /// A shell command line, run with `sh -c`.
    pub command: String,
    pub gpu_indices: Vec<i32>,
    pub gpu_uuids: Vec<String>,
}

/// What the agent knows of an instance's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadStatus {
    Running {
        pid: i32,
    },
    Exited {
        exit_code: Option<i32>,
        log_tail: String,
    },
    /// The agent has no record of this instance.
    Unknown,
}

pub struct NodeActivities;

#[activity_definitions]
impl NodeActivities {
    /// Starts the workload as a process group. Idempotent by instance id: a second call returns
    /// the status of the process the first one started.
    #[activity(name = "node.start_workload")]
    pub fn start_workload(spec: WorkloadSpec) -> Result<WorkloadStatus, ActivityError> {
        unimplemented!()
    }

    /// Waits until the workload has stayed up for the agent's settle period. Fails with
    /// `StartFailed` (non-retryable) if it exited.
    #[activity(name = "node.await_workload_running")]
    pub fn await_workload_running(instance_id: Uuid) -> Result<WorkloadStatus, ActivityError> {
        unimplemented!()
    }

    /// Stops the workload's process group (SIGTERM, then SIGKILL) and forgets it. Idempotent:
    /// stopping an unknown or already stopped instance succeeds.
    #[activity(name = "node.stop_workload")]
    pub fn stop_workload(instance_id: Uuid) -> Result<WorkloadStatus, ActivityError> {
        unimplemented!()
    }
}

/// Marker types of the node activities, for `#[activity(definition = ...)]` in the agent.
pub mod definitions {
    pub use super::node_activities::{AwaitWorkloadRunning, StartWorkload, StopWorkload};
}
