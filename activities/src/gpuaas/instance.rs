//! Instance activities: thin adapters over `product_gpuaas::{instance, placement}`, run by the
//! control-plane worker as local activities. Every one is idempotent (activities run at least
//! once).

use super::metrics;
use super::vocabulary::{InstanceStep, activity};
use crate::{FinishHook, finish};
use contract_node::envelope::{self, SealedText};
use platform_iam::tokens::TokenKeys;
use product_gpuaas::{FailureReason, Placement, Transition, instance, placement};
use serde::{Deserialize, Serialize};
use shared_ids::InstanceId;
use shared_kernel::OperationContext;
use sqlx::PgPool;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub struct InstanceActivities {
    pool: PgPool,
    hook: FinishHook,
    /// The signing keys, whose derived reply key opens a failed workload's sealed output.
    keys: Option<Arc<TokenKeys>>,
}

impl InstanceActivities {
    pub fn new(pool: PgPool, hook: FinishHook) -> Self {
        Self {
            pool,
            hook,
            keys: None,
        }
    }

    /// With the keys that open workload output sealed by nodes (without them, the output is
    /// withheld from the instance's status).
    pub fn with_keys(mut self, keys: Arc<TokenKeys>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The status message of a failed instance: the workflow's message, and the workload's last
    /// output opened here, so it goes to the instance's owner only and never into a history.
    fn failure_message(&self, fail: &FailInstance) -> String {
        let Some(sealed) = &fail.output else {
            return fail.message.clone();
        };
        let opened = self.keys.as_ref().and_then(|keys| {
            let (_, secret) =
                keys.derived_secret(Some(&sealed.key_id), envelope::REPLY_KEY_PURPOSE)?;
            envelope::open_output(sealed, secret, &fail.instance_id.to_string()).ok()
        });
        match opened {
            Some(tail) => format!("{}; last output: {tail:?}", fail.message),
            None => format!("{}; its last output could not be opened", fail.message),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailInstance {
    pub instance_id: InstanceId,
    pub reason: FailureReason,
    pub message: String,
    /// The workload's last output, sealed by its node for the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<SealedText>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TerminatedNote {
    pub instance_id: InstanceId,
    pub message: Option<String>,
}

#[activities]
impl InstanceActivities {
    /// Places the instance and allocates its GPUs, or reports why nothing fits (or that the
    /// instance no longer wants any, or that policy refused it: the workflow then fails it).
    /// Records the step the instance is at next.
    #[activity(name = activity::ALLOCATE)]
    pub async fn allocate(
        self: Arc<Self>,
        _ctx: ActivityContext,
        id: InstanceId,
    ) -> Result<Placement, ActivityError> {
        let result = async {
            let placement = placement::allocate(&self.pool, id).await?;
            let (step, why) = match &placement {
                Placement::Placed(_) => (InstanceStep::StartingWorkload, None),
                Placement::NoCapacity { explanation } => {
                    (InstanceStep::WaitingForCapacity, Some(explanation.as_str()))
                }
                Placement::NotWanted { .. } | Placement::Refused { .. } => return Ok(placement),
            };
            instance::set_step(&self.pool, id, step.as_str(), why).await?;
            Ok(placement)
        }
        .await;
        finish(&self.hook, activity::ALLOCATE, result)
    }

    /// Undo of `allocate`: frees the instance's GPUs. Returns how many were freed by this call.
    #[activity(name = activity::RELEASE)]
    pub async fn release(
        self: Arc<Self>,
        _ctx: ActivityContext,
        id: InstanceId,
    ) -> Result<i64, ActivityError> {
        let result = placement::release(&self.pool, id).await;
        finish(&self.hook, activity::RELEASE, result)
    }

    #[activity(name = activity::MARK_RUNNING)]
    pub async fn mark_running(
        self: Arc<Self>,
        _ctx: ActivityContext,
        id: InstanceId,
    ) -> Result<Transition, ActivityError> {
        let result = instance::mark_running(&self.pool, id).await;
        if let Ok(Transition::Applied) = result
            && let Ok(i) =
                instance::get(&self.pool, &OperationContext::system("provisioning"), id).await
        {
            let took = i.running_at.unwrap_or(i.updated_at) - i.created_at;
            ::metrics::histogram!(metrics::PROVISIONING_DURATION)
                .record(took.num_milliseconds() as f64 / 1000.0);
        }
        finish(&self.hook, activity::MARK_RUNNING, result)
    }

    #[activity(name = activity::MARK_FAILED)]
    pub async fn mark_failed(
        self: Arc<Self>,
        _ctx: ActivityContext,
        fail: FailInstance,
    ) -> Result<Transition, ActivityError> {
        let message = self.failure_message(&fail);
        let result =
            instance::mark_failed(&self.pool, fail.instance_id, fail.reason, &message).await;
        finish(&self.hook, activity::MARK_FAILED, result)
    }

    #[activity(name = activity::MARK_TERMINATED)]
    pub async fn mark_terminated(
        self: Arc<Self>,
        _ctx: ActivityContext,
        done: TerminatedNote,
    ) -> Result<Transition, ActivityError> {
        let result =
            instance::mark_terminated(&self.pool, done.instance_id, done.message.as_deref()).await;
        finish(&self.hook, activity::MARK_TERMINATED, result)
    }
}
