//! `gpuaas-node-agent`: one per GPU host.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "GPUaaS node agent: GPU discovery, workload processes, per-host Temporal worker"
)]
struct Cli {
    #[command(flatten)]
    config: node_agent::AgentConfig,
}

fn main() -> anyhow::Result<()> {
    runtime::init_logging();
    let cli = Cli::parse();
    // Two threads are plenty for an agent and keep its resident memory small.
    let tokio_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    tokio_runtime.block_on(node_agent::run(cli.config, runtime::shutdown_signal()))
}
