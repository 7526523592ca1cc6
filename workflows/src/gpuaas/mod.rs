//! The gpuaas product's workflows, one module per workflow (resource first: `instance_provision`
//! is `ProvisionInstance`), each with its starter; [`vocabulary`] names everything Temporal sees.
//!
//! One rule every workflow here keeps: no command (a step's search-attribute upsert, a timer, an
//! activity, a child) is issued in the same activation as a local activity. sdk-core 0.10 keeps
//! such a command pending while the local activity runs, and when the run is evicted meanwhile
//! (a full cache, or `max_cached_workflows = 0` with a second workflow active) its debug builds
//! panic ("There should not be any outgoing commands ... eviction"). See doc/sdk-issues.md.
//! So local activities (the database steps of the hot path) are used only by the workflows that
//! do one thing at a time (`ProvisionInstance`, `TerminateInstance`), which change their step
//! only before a command; the workflows with concurrent branches (`NodeLifecycle`'s liveness and
//! drain loops, `ReconcileFleet`'s fan-out) run their database steps as regular activities.

pub mod instance_provision;
pub mod instance_terminate;
pub mod node_call;
pub mod node_lifecycle;
pub mod node_reconcile;
mod options;
pub mod reconcile;

pub use activities::gpuaas::vocabulary;
pub use options::NodeTimeouts;

pub use instance_provision::{ProvisionInput, ProvisionInstance, ProvisionOutcome};
pub use instance_terminate::{TerminateInput, TerminateInstance, TerminateOutcome};
pub use node_lifecycle::{
    Carried, DrainRequested, LifecycleConfig, NodeLifecycle, NodeLifecycleInput,
};
pub use reconcile::{ReconcileFleet, ReconcileInput, ReconcileOutcome};

use temporalio_sdk::WorkflowContext;
use vocabulary::{Step, search};

/// Where an activity of a workflow runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsOn {
    /// The control-plane worker (a database step).
    Worker,
    /// The node agent, on the node's task queue.
    Agent,
}

/// One activity of a workflow's successful run. Each workflow lists its own, in order
/// (`ACTIVITIES`); the fault suite kills and fails the process at each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityStep {
    pub activity: &'static str,
    pub runs_on: RunsOn,
}

impl ActivityStep {
    pub(crate) const fn worker(activity: &'static str) -> Self {
        Self {
            activity,
            runs_on: RunsOn::Worker,
        }
    }
    pub(crate) const fn agent(activity: &'static str) -> Self {
        Self {
            activity,
            runs_on: RunsOn::Agent,
        }
    }
}

/// Shows `step` in the `GpuaasStep` search attribute, skipping an upsert that changes nothing
/// (each is a visibility write on the server). Never call it right before a local activity
/// (see the module docs).
pub(crate) fn show_step<W>(ctx: &WorkflowContext<W>, step: impl Step) {
    let name = step.as_str();
    if ctx.search_attributes().get(&search::STEP).as_deref() != Some(name) {
        ctx.upsert_search_attributes([search::STEP.value_set(name.to_string())]);
    }
}
