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
    gpuaas_activities::service::init_logging();
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(&cli.config.listen).await?;
    let state = gpuaas_api::AppState::connect(cli.config).await?;
    gpuaas_api::serve(
        listener,
        state,
        gpuaas_activities::service::shutdown_signal(),
    )
    .await
}
