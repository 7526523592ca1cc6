//! Control-plane activities: thin adapters over `gpuaas-domain`, run by the control-plane worker.
//! Every one is idempotent (activities run at least once).

use crate::failure_types;
use crate::faults::Faults;
use crate::service::{count_activity_failure, metric_names};
use gpuaas_domain::{instance, placement};
use gpuaas_shared::DomainError;
use gpuaas_shared::ids::InstanceId;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::sync::Arc;
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use uuid::Uuid;

pub struct ControlPlaneActivities {
    pool: PgPool,
    faults: Faults,
}

impl ControlPlaneActivities {
    pub fn new(pool: PgPool, faults: Faults) -> Self {
        Self { pool, faults }
    }

    /// The fault-injection hook, then the result; failures are counted by type.
    fn finish<T>(
        &self,
        activity: &str,
        result: Result<T, DomainError>,
    ) -> Result<T, ActivityError> {
        finish(&self.faults, activity, result)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepUpdate {
    pub instance_id: Uuid,
    pub step: String,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailInstance {
    pub instance_id: Uuid,
    pub reason: FailureReason,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TerminatedNote {
    pub instance_id: Uuid,
    pub message: Option<String>,
}

/// How every control-plane activity ends: a failure is counted by its code and mapped; a success
/// passes the fault-injection hook (which may kill the process or fail it, for the fault suite).
pub(crate) fn finish<T>(
    faults: &Faults,
    activity: &str,
    result: Result<T, DomainError>,
) -> Result<T, ActivityError> {
    let result = result.map_err(|e| {
        count_activity_failure(activity, e.code());
        to_activity_error(e)
    })?;
    faults.after_side_effect(activity)?;
    Ok(result)
}

/// Domain errors become failures: bad input and wrong state are not worth a retry, database
/// trouble is.
pub(crate) fn to_activity_error(e: DomainError) -> ActivityError {
    let retryable = e.is_retryable();
    let type_name = match e.code() {
        "instance_not_provisionable" => failure_types::NOT_WANTED.to_string(),
        code => code.to_string(),
    };
    ActivityError::application(
        ApplicationFailure::builder(e)
            .type_name(type_name)
            .non_retryable(!retryable)
            .build(),
    )
}

#[activities]
impl ControlPlaneActivities {
    /// Places the instance and allocates its GPUs, or reports why nothing fits.
    #[activity]
    pub async fn allocate(
        self: Arc<Self>,
        _ctx: ActivityContext,
        instance_id: Uuid,
    ) -> Result<Placement, ActivityError> {
        let id = InstanceId(instance_id);
        let result = async {
            let placement = placement::allocate(&self.pool, id).await?;
            if let Placement::NoCapacity { explanation } = &placement {
                instance::set_step(&self.pool, id, "waiting_for_capacity", Some(explanation))
                    .await?;
            }
            Ok(placement)
        }
        .await;
        self.finish("allocate", result)
    }

    /// Undo of `allocate`: frees the instance's GPUs. Returns how many were freed by this call.
    #[activity]
    pub async fn release(
        self: Arc<Self>,
        _ctx: ActivityContext,
        instance_id: Uuid,
    ) -> Result<i64, ActivityError> {
        let result = placement::release(&self.pool, InstanceId(instance_id)).await;
        self.finish("release", result)
    }

    #[activity]
    pub async fn set_step(
        self: Arc<Self>,
        _ctx: ActivityContext,
        update: StepUpdate,
    ) -> Result<(), ActivityError> {
        instance::set_step(
            &self.pool,
            InstanceId(update.instance_id),
            &update.step,
            update.message.as_deref(),
        )
        .await
        .map_err(to_activity_error)
    }

    #[activity]
    pub async fn mark_running(
        self: Arc<Self>,
        _ctx: ActivityContext,
        instance_id: Uuid,
    ) -> Result<Transition, ActivityError> {
        let id = InstanceId(instance_id);
        let result = instance::mark_running(&self.pool, id).await;
        if let Ok(Transition::Applied) = result {
            if let Ok(i) = instance::get_any(&self.pool, id).await {
                let took = i.running_at.unwrap_or(i.updated_at) - i.created_at;
                metrics::histogram!(metric_names::PROVISIONING_DURATION)
                    .record(took.num_milliseconds() as f64 / 1000.0);
            }
        }
        self.finish("mark_running", result)
    }

    #[activity]
    pub async fn mark_failed(
        self: Arc<Self>,
        _ctx: ActivityContext,
        fail: FailInstance,
    ) -> Result<Transition, ActivityError> {
        let result = instance::mark_failed(
            &self.pool,
            InstanceId(fail.instance_id),
            fail.reason,
            &fail.message,
        )
        .await;
        self.finish("mark_failed", result)
    }

    #[activity]
    pub async fn mark_terminated(
        self: Arc<Self>,
        _ctx: ActivityContext,
        done: TerminatedNote,
    ) -> Result<Transition, ActivityError> {
        let result = instance::mark_terminated(
            &self.pool,
            InstanceId(done.instance_id),
            done.message.as_deref(),
        )
        .await;
        self.finish("mark_terminated", result)
    }
}

// The domain types that cross the workflow boundary, so workflows need not name the domain crate.
pub use gpuaas_domain::{Allocation, FailureReason, InstanceState, Placement, Transition};
