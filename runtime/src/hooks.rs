//! What a process does when one of its activities finishes, before the result goes back to
//! Temporal: count a failure by its type, and, for the fault-injection suite only
//! (doc/reliability.md), kill itself or fail the activity right after its side effect. The
//! fault flags are hidden from `--help` because nothing but the suite should set them.

use std::sync::Arc;
use temporalio_common::error::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

/// Failure type of an injected failure, so tests can tell it from a real one.
pub const INJECTED_FAULT: &str = "InjectedFault";

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ActivityHooks {
    /// SIGKILL this process right after the named activity's side effect, before its result
    /// reaches Temporal (e.g. `instance.allocate`, `node.start_workload`).
    #[arg(
        long = "fault-kill-after",
        env = "GPUAAS_FAULT_KILL_AFTER",
        hide = true
    )]
    pub kill_after: Option<String>,
    /// Fail the named activity (non-retryable) after its side effect.
    #[arg(long = "fault-fail-at", env = "GPUAAS_FAULT_FAIL_AT", hide = true)]
    pub fail_at: Option<String>,
}

impl ActivityHooks {
    /// Faults that kill the process after `activity`.
    pub fn kill_after(activity: &str) -> Self {
        Self {
            kill_after: Some(activity.to_string()),
            fail_at: None,
        }
    }

    /// Faults that fail `activity` after its side effect.
    pub fn fail_at(activity: &str) -> Self {
        Self {
            kill_after: None,
            fail_at: Some(activity.to_string()),
        }
    }

    /// Call when `activity` finished: with its failure type if it failed (counted), else after
    /// its side effect and before returning its result (where faults are injected).
    pub fn finish(&self, activity: &str, failure_type: Option<&str>) -> Result<(), ActivityError> {
        if let Some(failure) = failure_type {
            crate::metrics::count_activity_failure(activity, failure);
            return Ok(());
        }
        if self.kill_after.as_deref() == Some(activity) {
            tracing::warn!(activity, "fault injection: SIGKILL after the side effect");
            // SAFETY: kill(2) on our own pid; no memory is touched.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        if self.fail_at.as_deref() == Some(activity) {
            tracing::warn!(activity, "fault injection: failing after the side effect");
            return Err(ActivityError::application(
                ApplicationFailure::builder(format!("injected failure at {activity}"))
                    .type_name(INJECTED_FAULT.to_string())
                    .non_retryable(true)
                    .build(),
            ));
        }
        Ok(())
    }

    /// These hooks as the closure the activities crate takes (`activities::FinishHook`):
    /// `(activity, failure type if it failed)`; an `Err` is returned instead of the result.
    #[allow(clippy::type_complexity)]
    pub fn into_hook(
        self,
    ) -> Arc<dyn Fn(&str, Option<&str>) -> Result<(), ActivityError> + Send + Sync> {
        Arc::new(move |activity, failure| self.finish(activity, failure))
    }
}
