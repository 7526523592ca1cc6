//! The control-plane worker: polls the control task queue and runs the workflows and the DB
//! activities. Node activities run on each node's agent, never here.

use gpuaas_activities::control_plane::ControlPlaneActivities;
use gpuaas_activities::service::{DatabaseArgs, TemporalArgs};
use gpuaas_workflows::{ProvisionInstance, TerminateInstance};
use std::time::Duration;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub temporal: TemporalArgs,
    /// Task queue for workflows and control-plane activities.
    #[arg(long, env = "GPUAAS_TASK_QUEUE", default_value = gpuaas_activities::CONTROL_TASK_QUEUE)]
    pub task_queue: String,
    /// Cached workflows; 0 forces a full replay on every workflow task.
    #[arg(long, env = "GPUAAS_MAX_CACHED_WORKFLOWS", default_value_t = 1000)]
    pub max_cached_workflows: usize,
}

/// Runs the worker until `shutdown` resolves. The returned future is not `Send` (an SDK
/// property): run it on the main task or a dedicated thread.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let pool = gpuaas_shared::db::connect_and_migrate(
        &config.database.url,
        config.database.max_connections,
    )
    .await?;
    let client = config
        .temporal
        .connect(&format!("gpuaas-worker@{}", std::process::id()))
        .await?;
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let options = WorkerOptions::new(config.task_queue.clone())
        .register_workflow::<ProvisionInstance>()?
        .register_workflow::<TerminateInstance>()?
        .register_activities(ControlPlaneActivities::new(pool))
        .max_cached_workflows(config.max_cached_workflows)
        .graceful_shutdown_period(Duration::from_secs(5))
        .build();
    let mut worker = Worker::new(&runtime, client, options)?;
    let stop = worker.shutdown_handle();
    tracing::info!(task_queue = %config.task_queue, "control-plane worker polling");
    let run = worker.run();
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => result?,
        () = shutdown => {
            tracing::info!("shutting down: finishing in-flight tasks");
            stop();
            run.await?;
        }
    }
    Ok(())
}
