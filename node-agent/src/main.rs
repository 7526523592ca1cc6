//! `gpuaas-node-agent`: one per GPU host.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "GPUaaS node agent: GPU discovery, workload processes, per-host Temporal worker"
)]
struct Cli {
    #[command(flatten)]
    config: gpuaas_node_agent::AgentConfig,
}

fn main() -> anyhow::Result<()> {
    gpuaas_activities::service::init_logging();
    let cli = Cli::parse();
    // Two threads are plenty for an agent and keep its resident memory small.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(gpuaas_node_agent::run(
        cli.config,
        gpuaas_activities::service::shutdown_signal(),
    ))
}
