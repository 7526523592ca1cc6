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
    let listener = tokio::net::TcpListener::bind(&cli.config.listen).await?;
    let state = gpuaas_api::AppState::connect(cli.config).await?;
    gpuaas_api::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
