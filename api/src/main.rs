//! `gpuaas-api`: the REST API server.

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "GPUaaS REST API")]
struct Cli {
    #[command(flatten)]
    config: api::ApiConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_logging();
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(&cli.config.listen).await?;
    let state = api::AppState::connect(cli.config).await?;
    api::serve(listener, state, runtime::shutdown_signal()).await
}
