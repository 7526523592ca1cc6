//! `gpuaas-worker`: the control-plane Temporal worker.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "GPUaaS control-plane worker (workflows and database activities)"
)]
struct Cli {
    #[command(flatten)]
    config: gpuaas_workers::WorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gpuaas_activities::service::init_logging();
    let cli = Cli::parse();
    gpuaas_workers::run(cli.config, gpuaas_activities::service::shutdown_signal()).await
}
