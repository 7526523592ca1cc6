//! Temporal activities. Two halves:
//! - [`node`]: the contract of the activities every node agent runs on its own task queue
//!   (`node-<node_id>`). Declared here, implemented in `node-agent/`.
//! - [`control_plane`] (feature `control-plane`): adapters over the domain crates, run by the
//!   control-plane worker. They map domain errors to retryable or non-retryable failures and hold
//!   no business rules.

pub mod faults;
pub mod node;
pub mod service;
pub mod temporal;

#[cfg(feature = "control-plane")]
pub mod control_plane;
#[cfg(feature = "control-plane")]
pub mod fleet;

/// Task queue of the control-plane worker (workflows and DB activities).
pub const CONTROL_TASK_QUEUE: &str = "gpuaas-control";

/// Failure type names the workflows match on, carried in `ApplicationFailure::type_name`.
pub mod failure_types {
    /// The workload could not be started or exited right after starting.
    pub const START_FAILED: &str = "StartFailed";
    /// The instance is no longer wanted (it was deleted while provisioning).
    pub const NOT_WANTED: &str = "InstanceNotWanted";
}
