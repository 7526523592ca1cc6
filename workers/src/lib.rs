//! The control-plane worker: polls the control task queue and runs the workflows and the DB
//! activities. Node activities run on each node's agent, never here.

use gpuaas_activities::control_plane::ControlPlaneActivities;
use gpuaas_activities::faults::Faults;
use gpuaas_activities::fleet::FleetActivities;
use gpuaas_activities::service::{DatabaseArgs, MetricsArgs, TemporalArgs};
use gpuaas_workflows::{
    NodeLifecycle, NodeTimeouts, ProvisionInstance, ReconcileFleet, ReconcileInput,
    TerminateInstance,
};
use std::time::Duration;
use temporalio_client::schedules::{
    CreateScheduleOptions, ScheduleAction, ScheduleError, ScheduleOverlapPolicy, ScheduleSpec,
};
use temporalio_client::{Client, tonic};
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
    /// Seconds between reconciler passes (a Temporal Schedule the worker creates); 0: none.
    #[arg(long, env = "GPUAAS_RECONCILE_EVERY_SECONDS", default_value_t = 60)]
    pub reconcile_every_seconds: u64,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub faults: Faults,
}

/// Id of the reconciler's Schedule for a control task queue.
pub fn reconciler_schedule_id(task_queue: &str) -> String {
    format!("{task_queue}-reconciler")
}

/// Creates the reconciler Schedule, or updates its interval if it exists.
pub async fn ensure_reconciler_schedule(
    client: &Client,
    task_queue: &str,
    every: Duration,
) -> anyhow::Result<()> {
    let id = reconciler_schedule_id(task_queue);
    let action = || {
        ScheduleAction::start_workflow(
            ReconcileFleet::run,
            ReconcileInput {
                node_timeouts: NodeTimeouts::default(),
            },
            task_queue.to_string(),
            id.clone(),
        )
    };
    let options = CreateScheduleOptions::builder()
        .action(action())
        .spec(ScheduleSpec::from_interval(every))
        .overlap_policy(ScheduleOverlapPolicy::Skip)
        .note("gpuaas orphan reconciler (created by gpuaas-worker)")
        .build();
    match client.create_schedule(id.clone(), options).await {
        Ok(_) => {
            tracing::info!(schedule = %id, every_s = every.as_secs(), "reconciler schedule created")
        }
        Err(ScheduleError::Rpc(status)) if status.code() == tonic::Code::AlreadyExists => {
            let spec = ScheduleSpec::from_interval(every);
            client
                .get_schedule_handle(id.clone())
                .update(
                    move |u| {
                        u.set_spec(spec);
                    },
                    Default::default(),
                )
                .await?;
            tracing::info!(schedule = %id, every_s = every.as_secs(), "reconciler schedule updated");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
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
    gpuaas_activities::service::init_metrics(config.metrics.listen)?;
    let client = config
        .temporal
        .connect(&format!("gpuaas-worker@{}", std::process::id()))
        .await?;
    if config.reconcile_every_seconds > 0 {
        ensure_reconciler_schedule(
            &client,
            &config.task_queue,
            Duration::from_secs(config.reconcile_every_seconds),
        )
        .await?;
    }
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let options = WorkerOptions::new(config.task_queue.clone())
        .register_workflow::<ProvisionInstance>()?
        .register_workflow::<TerminateInstance>()?
        .register_workflow::<NodeLifecycle>()?
        .register_workflow::<ReconcileFleet>()?
        .register_activities(ControlPlaneActivities::new(
            pool.clone(),
            config.faults.clone(),
        ))
        .register_activities(FleetActivities::new(pool, config.faults.clone()))
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
