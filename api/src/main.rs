//! `gpuaas-api`: the REST API server.

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "GPUaaS REST API")]
struct Cli {
    #[command(flatten)]
    config: gpuaas_api::ApiConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    gpuaas_api::serve(cli.config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
