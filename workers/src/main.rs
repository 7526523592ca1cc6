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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    gpuaas_workers::run(cli.config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
