//! What the worker runs for the gpuaas product: its workflows and activities on its control
//! task queue, and the reconciler's Schedule.

use crate::{GRACEFUL_SHUTDOWN, WorkerConfig};
use activities::FinishHook;
use activities::gpuaas::instance::InstanceActivities;
use activities::gpuaas::node_call::NodeCallActivities;
use activities::gpuaas::node_lifecycle::NodeLifecycleActivities;
use activities::gpuaas::reconcile::ReconcileActivities;
use shared_kernel::db::Pool as PgPool;
use std::time::Duration;
use temporalio_client::Client;
use temporalio_sdk::WorkerOptions;
use workflows::gpuaas::reconcile::{self, ScheduleChange};
use workflows::gpuaas::{
    NodeLifecycle, ProvisionInstance, ReconcileFleet, TerminateInstance, vocabulary,
};

#[derive(Debug, Clone, clap::Args)]
pub struct GpuaasWorkerConfig {
    /// Task queue for the gpuaas workflows and control-plane activities.
    #[arg(long, env = "GPUAAS_TASK_QUEUE", default_value = vocabulary::CONTROL_TASK_QUEUE)]
    pub task_queue: String,
    /// Seconds between reconciler passes (a Temporal Schedule the worker creates); 0: none.
    #[arg(long, env = "GPUAAS_RECONCILE_EVERY_SECONDS", default_value_t = 60)]
    pub reconcile_every_seconds: u64,
    /// The API's signing keys (`*.key`): every command to a node is signed with the newest, and
    /// nodes check it against the API's JWKS. The API and the worker share this directory.
    #[arg(long, env = "GPUAAS_SIGNING_KEYS_DIR")]
    pub signing_keys_dir: std::path::PathBuf,
}

/// Creates (or updates) the reconciler's Schedule unless it is turned off.
pub async fn ensure_schedules(client: &Client, config: &GpuaasWorkerConfig) -> anyhow::Result<()> {
    if config.reconcile_every_seconds == 0 {
        return Ok(());
    }
    let every = Duration::from_secs(config.reconcile_every_seconds);
    let change = reconcile::ensure_schedule(client, &config.task_queue, every).await?;
    let schedule = vocabulary::reconciler_schedule_id(&config.task_queue);
    match change {
        ScheduleChange::Created => {
            tracing::info!(%schedule, every_s = every.as_secs(), "reconciler schedule created")
        }
        ScheduleChange::Updated => {
            tracing::info!(%schedule, every_s = every.as_secs(), "reconciler schedule updated")
        }
    }
    Ok(())
}

/// The worker's options: every gpuaas workflow and activity, on the product's task queue.
pub fn worker_options(
    config: &WorkerConfig,
    pool: PgPool,
    hook: FinishHook,
) -> anyhow::Result<WorkerOptions> {
    let keys = std::sync::Arc::new(
        platform_iam::tokens::TokenKeys::load_signer(&config.gpuaas.signing_keys_dir)
            .map_err(|e| anyhow::anyhow!("signing keys: {}", e.0))?,
    );
    Ok(WorkerOptions::new(config.gpuaas.task_queue.clone())
        .register_workflow::<ProvisionInstance>()?
        .register_workflow::<TerminateInstance>()?
        .register_workflow::<NodeLifecycle>()?
        .register_workflow::<ReconcileFleet>()?
        .register_activities(
            InstanceActivities::new(pool.clone(), hook.clone()).with_keys(keys.clone()),
        )
        .register_activities(NodeLifecycleActivities::new(pool.clone(), hook.clone()))
        .register_activities(NodeCallActivities::new(pool.clone(), keys, hook.clone()))
        .register_activities(ReconcileActivities::new(pool, hook))
        .max_cached_workflows(config.max_cached_workflows)
        .graceful_shutdown_period(GRACEFUL_SHUTDOWN)
        .build())
}
