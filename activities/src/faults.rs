//! Fault injection for the reliability suite (`doc/reliability.md`). Off unless configured; the
//! flags are hidden from `--help` because nothing but the suite should set them.

use temporalio_common::error::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

/// Failure type of an injected failure, so tests can tell it from a real one.
pub const INJECTED: &str = "InjectedFault";

#[derive(Debug, Clone, Default, clap::Args)]
pub struct Faults {
    /// SIGKILL this process right after the named activity's side effect, before its result
    /// reaches Temporal (e.g. `allocate`, `node.start_workload`).
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

impl Faults {
    /// Call after `activity`'s side effect and before returning its result.
    pub fn after_side_effect(&self, activity: &str) -> Result<(), ActivityError> {
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
                    .type_name(INJECTED.to_string())
                    .non_retryable(true)
                    .build(),
            ));
        }
        Ok(())
    }
}
