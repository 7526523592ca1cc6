//! The node agent's contract: what the control plane asks of a host over the host's own task
//! queue ([`vocabulary::task_queue`]), the payloads, and the failures it answers with. The
//! agent implements the activities with `#[activity(definition = ...)]`, so a mismatch fails to
//! compile on either side. The agent links this crate and nothing of the control plane.

pub mod envelope;
pub mod vocabulary;

pub use envelope::{NodeCall, NodeCommand, SealedCommand, SignedReport};

use serde::{Deserialize, Serialize};
use shared_ids::InstanceId;
use temporalio_common::ActivityError;
use temporalio_macros::activity_definitions;
use vocabulary::activity;

/// What to run for an instance, and on which GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub instance_id: InstanceId,
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
        /// The workload's last output, inside the agent only: a reply carries it sealed
        /// (`output`), and this is empty.
        log_tail: String,
        /// The last output, sealed for the control plane's reply key (`envelope::SealedText`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<envelope::SealedText>,
    },
    /// The agent has no record of this instance.
    Unknown,
}

/// Input of a liveness session: how long to run and what the control plane last heard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInput {
    /// Return after this many seconds even if nothing changed (a periodic report).
    pub report_every_s: u64,
    /// GPU indices the agent reported unhealthy last time; a different set ends the session at
    /// once, so health changes reach the control plane within one probe interval.
    pub known_unhealthy: Vec<i32>,
    /// Report at once (the node is new or was down: the control plane waits to hear from it).
    pub report_now: bool,
}

/// One GPU's health as the agent sampled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuHealthReport {
    pub index: i32,
    pub healthy: bool,
    pub reason: Option<String>,
}

/// A workload the agent knows, running or exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadReport {
    pub instance_id: InstanceId,
    pub running: bool,
}

/// What a session ends with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    pub gpus: Vec<GpuHealthReport>,
    pub workloads: Vec<WorkloadReport>,
}

pub struct NodeActivities;

/// Every node activity takes a [`SealedCommand`] (its plaintext type is the [`NodeCommand`] of
/// that activity) and answers a [`SignedReport`] that the workflow checks with [`NodeCall::open`].
#[activity_definitions]
impl NodeActivities {
    /// Starts the workload ([`WorkloadSpec`] → [`WorkloadStatus`]). Idempotent by instance id:
    /// a second call returns the status of the process the first one started.
    #[activity(name = activity::START_WORKLOAD)]
    pub fn start_workload(command: SealedCommand) -> Result<SignedReport, ActivityError> {
        unimplemented!()
    }

    /// Waits until the workload has stayed up for the agent's settle period
    /// ([`envelope::AwaitRunning`] → [`WorkloadStatus`]). Fails with
    /// [`vocabulary::NodeFailure::StartFailed`] (non-retryable) if it exited.
    #[activity(name = activity::AWAIT_WORKLOAD_RUNNING)]
    pub fn await_workload_running(command: SealedCommand) -> Result<SignedReport, ActivityError> {
        unimplemented!()
    }

    /// Stops everything of the workload ([`envelope::StopWorkload`] → [`WorkloadStatus`]).
    /// Idempotent: stopping an unknown or already stopped instance succeeds.
    #[activity(name = activity::STOP_WORKLOAD)]
    pub fn stop_workload(command: SealedCommand) -> Result<SignedReport, ActivityError> {
        unimplemented!()
    }

    /// The node's liveness session ([`SessionInput`] → [`SessionReport`]): runs on the node's
    /// queue, heartbeating every second, and returns a report when the GPUs' health changes or
    /// `report_every_s` passes. A missed heartbeat is how the control plane learns that the
    /// agent (or its host) is gone.
    #[activity(name = activity::SESSION)]
    pub fn session(command: SealedCommand) -> Result<SignedReport, ActivityError> {
        unimplemented!()
    }

    /// Every workload the agent knows, for the reconciler ([`envelope::ListWorkloads`] →
    /// `Vec<WorkloadReport>`).
    #[activity(name = activity::LIST_WORKLOADS)]
    pub fn list_workloads(command: SealedCommand) -> Result<SignedReport, ActivityError> {
        unimplemented!()
    }
}

/// Marker types of the node activities, for `#[activity(definition = ...)]` in the agent.
pub mod definitions {
    pub use super::node_activities::{
        AwaitWorkloadRunning, ListWorkloads, Session, StartWorkload, StopWorkload,
    };
}
