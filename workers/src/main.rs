//! `gpuaas-worker`: the control-plane Temporal worker.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "GPUaaS control-plane worker (workflows and database activities)"
)]
struct Cli {
    #[command(flatten)]
    config: workers::WorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_logging();
    let cli = Cli::parse();
    workers::run(cli.config, runtime::shutdown_signal()).await
}
