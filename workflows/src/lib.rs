//! Deterministic orchestration only: no I/O, no clock, no randomness outside the workflow context.
//! Every side effect is an activity; every step that has one pushes its undo first.

pub mod node_lifecycle;
pub mod provision;
pub mod reconcile;
pub mod search;
pub mod terminate;

pub use node_lifecycle::{
    Carried, DrainRequested, LifecycleConfig, NodeLifecycle, NodeLifecycleInput,
};
pub use provision::{ProvisionInput, ProvisionInstance, ProvisionOutcome};
pub use reconcile::{ReconcileFleet, ReconcileInput, ReconcileOutcome};
pub use terminate::{TerminateInput, TerminateInstance, TerminateOutcome};

use gpuaas_activities::node::WorkloadStatus;
use std::time::Duration;
use temporalio_common::protos::temporal::api::enums::v1::TimeoutType as ProtoTimeoutType;
use temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo;
use temporalio_sdk::ActivityExecutionError;

/// How a failed activity is classified by the workflows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StepFailure {
    /// No agent picked the task up within its schedule-to-start timeout: the host is gone.
    NodeUnreachable,
    /// The activity ran out of time after it started.
    TimedOut,
    /// An application failure with this type name (see `gpuaas_activities::failure_types`).
    Application(String),
    Other,
}

impl StepFailure {
    /// Walks the failure chain (an activity failure wraps its cause; a local activity's may not)
    /// to the first timeout or application failure.
    pub(crate) fn of(e: &ActivityExecutionError) -> Self {
        let mut next = e.failure();
        while let Some(failure) = next {
            match &failure.failure_info {
                Some(FailureInfo::TimeoutFailureInfo(t)) => {
                    return if t.timeout_type == ProtoTimeoutType::ScheduleToStart as i32 {
                        Self::NodeUnreachable
                    } else {
                        Self::TimedOut
                    };
                }
                Some(FailureInfo::ApplicationFailureInfo(app)) => {
                    return Self::Application(app.r#type.clone());
                }
                _ => next = failure.cause.as_deref(),
            }
        }
        Self::Other
    }
}

/// Timeouts of the node activities, given in the workflow input so tests can shorten them.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct NodeTimeouts {
    /// How long a task may wait for the node's agent before the node counts as unreachable.
    pub schedule_to_start_s: u64,
    /// How long the agent may take to start and settle a workload.
    pub start_to_close_s: u64,
}

impl Default for NodeTimeouts {
    fn default() -> Self {
        Self {
            schedule_to_start_s: 30,
            start_to_close_s: 120,
        }
    }
}

impl NodeTimeouts {
    pub(crate) fn options(&self, node_queue: &str) -> temporalio_sdk::ActivityOptions {
        temporalio_sdk::ActivityOptions::with_start_to_close_timeout(Duration::from_secs(
            self.start_to_close_s,
        ))
        .task_queue(node_queue.to_string())
        .schedule_to_start_timeout(Duration::from_secs(self.schedule_to_start_s))
        .retry_policy(
            temporalio_common::RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .maximum_interval(Duration::from_secs(5))
                .maximum_attempts(5)
                .build(),
        )
        .build()
    }
}

/// Options of control-plane (database) activities. They run as *local* activities: short,
/// idempotent calls executed by the worker that runs the workflow, recorded as markers, with no
/// round trip through a task queue (see doc/architecture/0003). Retried until the database
/// answers, for up to an hour.
pub(crate) fn control_options() -> temporalio_sdk::LocalActivityOptions {
    temporalio_sdk::LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(30))
        .schedule_to_close_timeout(Duration::from_secs(3600))
        .retry_policy(
            temporalio_common::RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .maximum_interval(Duration::from_secs(10))
                .build(),
        )
        .build()
}

/// Options of the node lifecycle's database steps: like [`control_options`], but retried for a
/// week instead of an hour. A lifecycle run that gave up during a long database outage would
/// leave its node unwatched until the agent next registers.
pub(crate) fn lifecycle_options() -> temporalio_sdk::LocalActivityOptions {
    temporalio_sdk::LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(30))
        .schedule_to_close_timeout(Duration::from_secs(7 * 24 * 3600))
        .retry_policy(
            temporalio_common::RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .maximum_interval(Duration::from_secs(30))
                .build(),
        )
        .build()
}

/// Options of a child workflow that outlives its parent (a termination started by a drain, a
/// provisioning or a lifecycle started by the reconciler), under its own deterministic id.
pub(crate) fn abandoned_child(
    workflow_id: String,
    reuse: temporalio_sdk::WorkflowIdReusePolicy,
    attributes: Vec<temporalio_common::search_attributes::SearchAttributeUpdate>,
) -> temporalio_sdk::ChildWorkflowOptions {
    temporalio_sdk::ChildWorkflowOptions::builder()
        .workflow_id(workflow_id)
        .parent_close_policy(temporalio_sdk::ParentClosePolicy::Abandon)
        .id_reuse_policy(reuse)
        .search_attributes(temporalio_common::search_attributes::SearchAttributes::new(
            attributes,
        ))
        .build()
}

pub(crate) fn describe_exit(status: &WorkloadStatus) -> String {
    match status {
        WorkloadStatus::Running { pid } => format!("running as pid {pid}"),
        WorkloadStatus::Exited {
            exit_code,
            log_tail,
        } => {
            let code = exit_code.map_or("none (killed by a signal)".to_string(), |c| c.to_string());
            format!("the workload exited (exit code {code}); last output: {log_tail:?}")
        }
        WorkloadStatus::Unknown => "unknown to the agent".to_string(),
    }
}
