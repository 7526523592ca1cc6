//! `gpuaas-node-agent`: runs on every GPU host. It discovers the GPUs, registers the node with
//! the API (a join token the first time, its own key afterwards: `identity`), then serves the node contract's activities on the node's own Temporal
//! task queue. It links `contract-node`, never database code (scripts/ci/check-architecture,
//! rule 4, proves it on the resolved dependency tree).

pub mod activities;
pub mod gpu;
pub mod identity;
pub mod metrics;
pub mod trust;
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
    /// Rotate the node's keys at start when they are older than this many days (0: never).
    #[arg(long, env = "GPUAAS_NODE_KEY_ROTATION_DAYS", default_value_t = 30)]
    pub key_rotation_days: u64,
    /// Workload isolation, limits and log cap.
    #[command(flatten)]
    pub workloads: workload::WorkloadArgs,
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

/// The agent's HTTP client: bounded connects and requests, so a stalled API cannot hang it.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Why registration ended without a node: an expected refusal (one clear line for the
/// operator) or anything else.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("registration refused ({status}): {detail}")]
    Refused { status: u16, detail: String },
    #[error("this host has not joined yet: set GPUAAS_JOIN_TOKEN to a join token from an operator")]
    NotJoined,
    #[error("could not register with {0}: no answer within the registration deadline")]
    Unreachable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Registers the node (retrying while the API starts), rotating its keys when they are due.
/// Returns the registration and the identity it registered with.
pub async fn register(
    config: &AgentConfig,
    discovery: &str,
    gpus: Vec<gpu::DiscoveredGpu>,
) -> Result<(RegisterNodeResponse, identity::Identity), RegistrationError> {
    let dir = &config.state_dir;
    let current = identity::Identity::load_or_create(dir)?;
    let Some(node) = current.node_id() else {
        let token = config
            .join_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or(RegistrationError::NotJoined)?;
        let registered = register_as(
            config,
            discovery,
            &gpus,
            &current,
            &current,
            &format!("Bearer {token}"),
        )
        .await?;
        current.remember(registered.node_id)?;
        return Ok((registered, current));
    };
    // A rotation the API may already have taken (the agent died before renaming): try it first.
    if let Some(next) = identity::Identity::next(dir, false)? {
        let authorization = format!("Node {}", next.assertion(node));
        match register_as(config, discovery, &gpus, &next, &next, &authorization).await {
            Ok(registered) => return Ok((registered, next.commit()?)),
            Err(RegistrationError::Refused { status: 401, .. }) => next.discard(),
            Err(e) => return Err(e),
        }
    }
    let max_age = Duration::from_secs(config.key_rotation_days * 24 * 3600);
    if current.rotation_due(max_age) {
        let next = identity::Identity::next(dir, true)?.expect("created");
        let authorization = format!("Node {}", current.assertion(node));
        let registered =
            register_as(config, discovery, &gpus, &current, &next, &authorization).await?;
        return Ok((registered, next.commit()?));
    }
    let authorization = format!("Node {}", current.assertion(node));
    let registered =
        register_as(config, discovery, &gpus, &current, &current, &authorization).await?;
    Ok((registered, current))
}

/// One registration: authenticated by `signer` (its assertion in `authorization`), reporting
/// `keys`' public keys (a rotation when they differ from the signer's).
async fn register_as(
    config: &AgentConfig,
    discovery: &str,
    gpus: &[gpu::DiscoveredGpu],
    signer: &identity::Identity,
    keys: &identity::Identity,
    authorization: &str,
) -> Result<RegisterNodeResponse, RegistrationError> {
    let request = RegisterNodeRequest {
        public_key: Some(keys.public_key()),
        encryption_key: Some(keys.encryption_key()),
        name: config.node_name(),
        agent_version: AGENT_VERSION.to_string(),
        discovery: discovery.to_string(),
        gpus: gpus
            .iter()
            .map(|g| GpuReport {
                index: g.index,
                uuid: g.uuid.clone(),
                model: g.model.clone(),
                memory_mib: g.memory_mib,
                healthy: g.healthy,
            })
            .collect(),
    };
    let http = http_client()?;
    let url = format!("{}/v1/nodes/register", config.api_url.trim_end_matches('/'));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut authorization = authorization.to_string();
    loop {
        let attempt = http
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, &authorization)
            .json(&request)
            .send()
            .await;
        match attempt {
            Ok(resp) if resp.status().is_success() => {
                return Ok(resp.json().await.map_err(anyhow::Error::from)?);
            }
            Ok(resp) if resp.status().is_client_error() => {
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                let detail = body["detail"]
                    .as_str()
                    .or(body["title"].as_str())
                    .unwrap_or("");
                let code = body["code"].as_str().unwrap_or("unknown");
                return Err(RegistrationError::Refused {
                    status,
                    detail: format!("{code}: {detail}"),
                });
            }
            other if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = ?other.err(), "API not reachable yet; retrying registration");
                tokio::time::sleep(Duration::from_millis(500)).await;
                // Each assertion is good once: sign a fresh one for the retry.
                if let (Some(rest), Some(node)) =
                    (authorization.strip_prefix("Node "), signer.node_id())
                    && !rest.is_empty()
                {
                    authorization = format!("Node {}", signer.assertion(node));
                }
            }
            Ok(resp) => {
                tracing::warn!(status = %resp.status(), "registration failed; no retry left");
                return Err(RegistrationError::Unreachable(url));
            }
            Err(e) => {
                tracing::warn!(error = %e, "registration failed; no retry left");
                return Err(RegistrationError::Unreachable(url));
            }
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
    // A host that cannot isolate workloads must not join the fleet: check before registering.
    workload::isolation::Isolation::prepare(&config.workloads, gpu_indices.len())?;
    let (registration, identity) = register(&config, discovery, gpus).await?;
    let control_plane = Arc::new(trust::ControlPlaneKeys::new(
        &config.api_url,
        http_client()?,
    ));
    if let Err(e) = control_plane.refresh().await {
        tracing::warn!(error = %e, "could not read the control plane's keys yet; retrying on the first command");
    }
    // The agent's own log lines carry its node (activities run in the SDK's `RunActivity` span,
    // which names the workflow, whose id names the instance or node).
    let span = tracing::info_span!("node_agent", node_id = %registration.node_id, node = %name);
    let runtime_dir = config.state_dir.join(registration.node_id.to_string());
    let fault_file = config
        .gpu_fault_file
        .clone()
        .unwrap_or_else(|| runtime_dir.join("gpu-faults"));
    let health: Arc<dyn gpu::GpuHealthProbe> = Arc::from(gpu::health_probe(discovery, fault_file));
    let processes = Arc::new(workload::ProcessRuntime::with_args(
        runtime_dir,
        Duration::from_millis(config.settle_ms),
        Duration::from_millis(config.stop_grace_ms),
        &config.workloads,
        gpu_indices.len(),
    )?);
    processes.adopt();
    let client = config
        .temporal
        .connect(&format!("gpuaas-node-agent@{}", registration.node_id))
        .await?;
    let sdk_runtime = Runtime::from_current_tokio(Default::default())?;
    let options = WorkerOptions::new(registration.task_queue.clone())
        .register_activities(NodeAgentActivities::new(
            activities::Keys {
                node_id: registration.node_id,
                identity: Arc::new(identity),
                control_plane,
            },
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
