//! Temporal activities of the control plane, one module per product (and per platform domain
//! that has workflows). Thin adapters over the domain crates: they map domain errors to
//! retryable or non-retryable failures and hold no business rules. Each product's Temporal
//! vocabulary (`<product>/vocabulary.rs`) sits here, in the lowest layer that speaks Temporal.
//!
//! The node agent's activities are not here: their contract is `contract-node`, implemented by
//! `node-agent`.

pub mod appplatform;
pub mod billing;
pub mod gpuaas;
pub mod tokenfactory;

use shared_kernel::DomainError;
use std::sync::Arc;
use temporalio_common::error::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

/// Told how each activity ended, before its result goes back to Temporal: `(activity, failure
/// type if it failed)`. The process counts failures and, in the fault suite, may kill itself or
/// fail the activity after its side effect (`runtime::ActivityHooks::into_hook`).
pub type FinishHook = Arc<dyn Fn(&str, Option<&str>) -> Result<(), ActivityError> + Send + Sync>;

/// A hook that does nothing (tests that call activities directly).
pub fn no_hook() -> FinishHook {
    Arc::new(|_, _| Ok(()))
}

/// How every activity ends: a failure is reported to the hook by its code and mapped; a success
/// passes the hook, which may still turn it into a failure (fault injection).
pub(crate) fn finish<T>(
    hook: &FinishHook,
    activity: &str,
    result: Result<T, DomainError>,
) -> Result<T, ActivityError> {
    match result {
        Ok(value) => {
            hook(activity, None)?;
            Ok(value)
        }
        Err(e) => {
            hook(activity, Some(e.code()))?;
            Err(to_activity_error(e))
        }
    }
}

/// Domain errors become failures typed by their stable code: bad input and wrong state are not
/// worth a retry, database trouble and contention are.
fn to_activity_error(e: DomainError) -> ActivityError {
    let retryable = e.is_retryable();
    let type_name = e.code().to_string();
    ActivityError::application(
        ApplicationFailure::builder(e)
            .type_name(type_name)
            .non_retryable(!retryable)
            .build(),
    )
}
