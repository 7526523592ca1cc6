//! What a failed activity means to a workflow, read from its failure chain: typed, so no
//! workflow matches an error by its text.

use temporalio_common::protos::temporal::api::enums::v1::TimeoutType as ProtoTimeoutType;
use temporalio_common::protos::temporal::api::failure::v1::Failure;
use temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo;
use temporalio_sdk::ActivityExecutionError;

/// How a failed activity is classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivityFailure {
    /// No worker picked the task up within its schedule-to-start timeout: on a node's queue,
    /// the host is gone.
    NotPickedUp,
    /// The activity ran out of time (or missed heartbeats) after it started.
    TimedOut,
    /// The activity failed with this failure type (`ApplicationFailure::type_name`).
    Failed { type_name: String },
    /// Cancelled, or a failure without a recognisable cause.
    Other,
}

impl ActivityFailure {
    /// Walks the failure chain (an activity failure wraps its cause; a local activity's may not)
    /// to the first timeout or application failure.
    pub fn of(e: &ActivityExecutionError) -> Self {
        let mut next = e.failure();
        while let Some(failure) = next {
            match &failure.failure_info {
                Some(FailureInfo::TimeoutFailureInfo(t)) => {
                    return if t.timeout_type == ProtoTimeoutType::ScheduleToStart as i32 {
                        Self::NotPickedUp
                    } else {
                        Self::TimedOut
                    };
                }
                Some(FailureInfo::ApplicationFailureInfo(app)) => {
                    return Self::Failed {
                        type_name: app.r#type.clone(),
                    };
                }
                _ => next = failure.cause.as_deref(),
            }
        }
        Self::Other
    }
}

/// The innermost failure message: the activity's own words rather than the wrappers'.
pub fn root_message(e: &ActivityExecutionError) -> String {
    match e.failure() {
        Some(f) => innermost(f).message.clone(),
        None => e.to_string(),
    }
}

fn innermost(mut f: &Failure) -> &Failure {
    while let Some(cause) = f.cause.as_deref() {
        f = cause;
    }
    f
}
