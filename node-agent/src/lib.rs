//! `gpuaas-node-agent`: runs on every GPU host. It discovers the GPUs, registers the node with
//! the API (a join token the first time, its own key afterwards: `identity`), then serves the node contract's activities on the node's own Temporal
//! task queue. It links `contract-node`, never database code (scripts/ci/check-architecture,
//! rule 4, proves it on the resolved dependency tree).

pub mod activities;
pub mod gpu;
pub mod identity;
pub mod metrics;
pub mod workload;

use activities::NodeAgentActivities;
use api_types::gpuaas::{GpuReport, RegisterNodeRequest, RegisterNodeResponse};
use runtime::{ActivityHooks, MetricsArgs, TemporalArgs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct AgentConfig {
    /// Node name; unique in the fleet. Defaults to the host name.
    #[arg(long, env = "GPUAAS_NODE_NAME")]
    pub name: Option<String>,
    /// Control-plane API URL.
    #[arg(long, env = "GPUAAS_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,
    /// The join token an operator created (`gpuaas node join-token create`): needed only the
    /// first time; afterwards the agent authenticates with its own key (in the state directory).
    #[arg(long, env = "GPUAAS_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    #[command(flatten)]
    pub temporal: TemporalArgs,
    /// Simulated GPUs such as `8xH100-80GB`, used only when neither NVML nor nvidia-smi finds any.
    #[arg(long, env = "GPUAAS_SIMULATE_GPUS")]
    pub simulate_gpus: Option<String>,
    /// Where workloads get their working directories and logs.
    #[arg(
        long,
        env = "GPUAAS_AGENT_STATE_DIR",
        default_value = "/var/lib/gpuaas-agent"
    )]
    pub state_dir: PathBuf,
    /// How long a workload must stay up to count as running.
    #[arg(long, env = "GPUAAS_SETTLE_MS", default_value_t = 1000)]
    pub settle_ms: u64,
    /// Grace period between SIGTERM and SIGKILL when stopping a workload.
    #[arg(long, env = "GPUAAS_STOP_GRACE_MS", default_value_t = 5000)]
    pub stop_grace_ms: u64,
    /// How often GPU health is sampled (and the liveness session heartbeats).
    #[arg(long, env = "GPUAAS_PROBE_INTERVAL_MS", default_value_t = 1000)]
    pub probe_interval_ms: u64,
    /// Simulated GPU faults, one `<gpu index> <reason>` per line; read only where GPUs are
    /// simulated. Defaults to `<state dir>/<node id>/gpu-faults`.
    #[arg(long, env = "GPUAAS_GPU_FAULT_FILE")]
    pub gpu_fault_file: Option<PathBuf>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub hooks: ActivityHooks,
}

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

impl AgentConfig {
    pub fn node_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "node".into())
        })
    }
}

/// Registers the node (retrying while the API starts) and returns its id and task queue.
pub async fn register(
    config: &AgentConfig,
    discovery: &str,
    gpus: Vec<gpu::DiscoveredGpu>,
) -> anyhow::Result<RegisterNodeResponse> {
    let name = config.node_name();
    let identity = identity::Identity::load_or_create(&config.state_dir)?;
    let known = identity.node_id();
    let join_token = config.join_token.as_deref().filter(|t| !t.is_empty());
    if known.is_none() && join_token.is_none() {
        anyhow::bail!(
            "this host has not joined yet: set GPUAAS_JOIN_TOKEN to a join token from an operator"
        );
    }
    let request = RegisterNodeRequest {
        public_key: known.is_none().then(|| identity.public_key()),
        name,
        agent_version: AGENT_VERSION.to_string(),
        discovery: discovery.to_string(),
        gpus: gpus
            .into_iter()
            .map(|g| GpuReport {
                index: g.index,
                uuid: g.uuid,
                model: g.model,
                memory_mib: g.memory_mib,
                healthy: g.healthy,
            })
            .collect(),
    };
    let http = reqwest::Client::new();
    let url = format!("{}/v1/nodes/register", config.api_url.trim_end_matches('/'));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let authorization = match (known, join_token) {
            (Some(node), _) => format!("Node {}", identity.assertion(node)),
            (None, Some(token)) => format!("Bearer {token}"),
            (None, None) => unreachable!("checked above"),
        };
        let attempt = http
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .json(&request)
            .send()
            .await;
        match attempt {
            Ok(resp) if resp.status().is_success() => {
                let registered: RegisterNodeResponse = resp.json().await?;
                identity.remember(registered.node_id)?;
                return Ok(registered);
            }
            Ok(resp) if resp.status().is_client_error() => {
                anyhow::bail!(
                    "registration refused ({}): {}",
                    resp.status(),
                    resp.text().await.unwrap_or_default()
                )
            }
            other if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = ?other.err(), "API not reachable yet; retrying registration");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => anyhow::bail!(
                "could not register with {url}: {:?}",
                other.map(|r| r.status())
            ),
        }
    }
}

/// Registers, re-adopts workloads left by a previous run, and serves node activities until
/// `shutdown` resolves. Not `Send` (SDK property): run it on the main task or its own thread.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    runtime::metrics::init(config.metrics.listen)?;
    metrics::describe();
    let name = config.node_name();
    let (discovery, gpus) =
        gpu::discover(&gpu::default_sources(config.simulate_gpus.clone(), &name))?;
    tracing::info!(%name, discovery, gpus = gpus.len(), model = ?gpus.first().map(|g| &g.model), "GPUs discovered");
    let gpu_indices: Vec<i32> = gpus.iter().map(|g| g.index).collect();
    let registration = register(&config, discovery, gpus).await?;
    // The agent's own log lines carry its node (activities run in the SDK's `RunActivity` span,
    // which names the workflow, whose id names the instance or node).
    let span = tracing::info_span!("node_agent", node_id = %registration.node_id, node = %name);
    let runtime_dir = config.state_dir.join(registration.node_id.to_string());
    let fault_file = config
        .gpu_fault_file
        .clone()
        .unwrap_or_else(|| runtime_dir.join("gpu-faults"));
    let health: Arc<dyn gpu::GpuHealthProbe> = Arc::from(gpu::health_probe(discovery, fault_file));
    let processes = Arc::new(workload::ProcessRuntime::new(
        runtime_dir,
        Duration::from_millis(config.settle_ms),
        Duration::from_millis(config.stop_grace_ms),
    )?);
    processes.adopt();
    let client = config
        .temporal
        .connect(&format!("gpuaas-node-agent@{}", registration.node_id))
        .await?;
    let sdk_runtime = Runtime::from_current_tokio(Default::default())?;
    let options = WorkerOptions::new(registration.task_queue.clone())
        .register_activities(NodeAgentActivities::new(
            processes,
            health,
            gpu_indices,
            Duration::from_millis(config.probe_interval_ms),
            config.hooks.clone(),
        ))
        .graceful_shutdown_period(Duration::from_secs(2))
        .build();
    let mut worker = Worker::new(&sdk_runtime, client, options)?;
    let stop = worker.shutdown_handle();
    tracing::info!(node_id = %registration.node_id, task_queue = %registration.task_queue, "node agent polling");
    let run = tracing::Instrument::instrument(worker.run(), span);
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => result?,
        () = shutdown => {
            stop();
            run.await?;
        }
    }
    Ok(())
}
