//! Deterministic orchestration only: no I/O, no clock, no randomness outside the workflow context.
//! Every side effect is an activity; every step that has one pushes its undo first.

pub mod provision;
pub mod search;
pub mod terminate;

pub use provision::{ProvisionInput, ProvisionInstance, ProvisionOutcome};
pub use terminate::{TerminateInput, TerminateInstance, TerminateOutcome};

use gpuaas_activities::node::WorkloadStatus;
use std::time::Duration;
use temporalio_common::error::{IncomingError, TimeoutType};
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
    pub(crate) fn of(e: &ActivityExecutionError) -> Self {
        if let Some(t) = e.as_timeout() {
            return match t.timeout_type() {
                TimeoutType::ScheduleToStart => Self::NodeUnreachable,
                _ => Self::TimedOut,
            };
        }
        match e.reason() {
            Some(IncomingError::Application(app)) => {
                Self::Application(app.type_name().unwrap_or_default().to_string())
            }
            Some(IncomingError::Timeout(t)) if t.timeout_type() == TimeoutType::ScheduleToStart => {
                Self::NodeUnreachable
            }
            Some(IncomingError::Timeout(_)) => Self::TimedOut,
            _ => Self::Other,
        }
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

/// Options of control-plane (database) activities: retried until the database answers.
pub(crate) fn control_options() -> temporalio_sdk::ActivityOptions {
    temporalio_sdk::ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            temporalio_common::RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .maximum_interval(Duration::from_secs(10))
                .build(),
        )
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
