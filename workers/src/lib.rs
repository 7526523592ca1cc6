//! The control-plane worker: polls each product's control task queue and runs its workflows
//! and database activities (gpuaas, and billing on its own queue, in the same process). Node
//! activities run on each node's agent, never here.

pub mod billing;
pub mod gpuaas;

use runtime::{ActivityHooks, DatabaseArgs, MetricsArgs, TemporalArgs};
use std::time::Duration;
use temporalio_sdk::{Runtime, Worker};

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub temporal: TemporalArgs,
    #[command(flatten)]
    pub gpuaas: gpuaas::GpuaasWorkerConfig,
    #[command(flatten)]
    pub billing: billing::BillingWorkerConfig,
    /// Cached workflows; 0 forces a full replay on every workflow task.
    #[arg(long, env = "GPUAAS_MAX_CACHED_WORKFLOWS", default_value_t = 1000)]
    pub max_cached_workflows: usize,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub hooks: ActivityHooks,
}

/// Runs the worker until `shutdown` resolves. The returned future is not `Send` (an SDK
/// property): run it on the main task or a dedicated thread.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let pool = shared_kernel::db::connect_and_migrate(
        &config.database.url,
        config.database.max_connections,
    )
    .await?;
    runtime::metrics::init(config.metrics.listen)?;
    activities::gpuaas::metrics::describe();
    let client = config
        .temporal
        .connect(&format!("gpuaas-worker@{}", std::process::id()))
        .await?;
    gpuaas::ensure_schedules(&client, &config.gpuaas).await?;
    billing::ensure_schedules(&client, &config).await?;
    let sdk = Runtime::from_current_tokio(Default::default())?;
    let hook = config.hooks.clone().into_hook();
    let options = gpuaas::worker_options(&config, pool.clone(), hook.clone())?;
    let mut worker = Worker::new(&sdk, client.clone(), options)?;
    let billing_options = billing::worker_options(&config, pool, hook)?;
    let mut billing_worker = Worker::new(&sdk, client, billing_options)?;
    let stop = worker.shutdown_handle();
    let stop_billing = billing_worker.shutdown_handle();
    tracing::info!(
        task_queue = %config.gpuaas.task_queue,
        billing_task_queue = %config.billing.billing_task_queue,
        "control-plane worker polling"
    );
    // Both on this task (a worker's run future is not Send); either one failing ends the run.
    let run = async {
        tokio::try_join!(worker.run(), billing_worker.run())?;
        anyhow::Ok(())
    };
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => result?,
        () = shutdown => {
            tracing::info!("shutting down: finishing in-flight tasks");
            stop();
            stop_billing();
            run.await?;
        }
    }
    Ok(())
}

/// How long in-flight tasks get to finish on shutdown.
const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(5);
