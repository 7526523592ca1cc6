//! A whole platform per test: a fresh Postgres database, the real API (in-process, real HTTP),
//! the control-plane worker (in-process thread or a real `gpuaas-worker` process), and node
//! agents (in-process threads running real workload processes), against the shared Temporal
//! test server. Each test gets its own task queue, so tests run in parallel.

use api::LifecycleArgs;
use api_types::gpuaas::{GpuReport, Instance, RegisterNodeRequest, RegisterNodeResponse};
use runtime::ActivityHooks;
use runtime::{DatabaseArgs, TemporalArgs};
use serde_json::Value;
use shared_ids::{InstanceId, NodeId};
use sqlx::PgPool;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The accounts every test platform starts with: a platform operator, and a tenant who owns the
/// seeded default org (so its default project is `platform_iam::DEFAULT_PROJECT`).
pub const OPERATOR_EMAIL: &str = "operator@gpuaas.test";
pub const TENANT_EMAIL: &str = "tenant@gpuaas.test";
pub const PASSWORD: &str = "correct horse battery staple";

pub fn temporal_args() -> TemporalArgs {
    TemporalArgs {
        address: temporal_address(),
        namespace: "default".into(),
    }
}

pub fn temporal_address() -> String {
    std::env::var("GPUAAS_TEST_TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7243".into())
}

/// Runs a non-`Send` future (a Temporal worker) on its own thread and runtime until stopped.
pub struct ThreadTask {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadTask {
    pub fn spawn<F, Fut>(name: &str, body: F) -> Self
    where
        F: FnOnce(tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let label = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                if let Err(e) = rt.block_on(body(stopped)) {
                    eprintln!("{label} exited with error: {e:#}");
                }
            })
            .unwrap();
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ThreadTask {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

pub struct Platform {
    pub pool: PgPool,
    pub db_url: String,
    pub api_url: String,
    pub task_queue: String,
    pub http: reqwest::Client,
    pub state_dir: PathBuf,
    /// The API's signing keys, shared with the worker (it signs node commands).
    pub signing_keys_dir: PathBuf,
    pub agents: HashMap<String, ThreadTask>,
    pub worker: Option<ThreadTask>,
    pub worker_process: Option<std::process::Child>,
    /// Node agents running as real processes, by node name.
    pub agent_processes: HashMap<String, std::process::Child>,
    node_schedule_to_start_s: u64,
    max_cached_workflows: usize,
    reconcile_every_s: u64,
    worker_faults: ActivityHooks,
    /// The worker's billing settings; its task queue is the test's own.
    pub billing: workers::billing::BillingWorkerConfig,
    api_stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Access tokens of the operator and the tenant. The harness reads (`get_json`,
    /// `instance`) as the operator, who sees node names; it creates and deletes instances as
    /// the tenant.
    pub operator_token: String,
    pub tenant_token: String,
    pub operator_id: Uuid,
    pub tenant_id: Uuid,
    /// The API's token keys, to mint tokens for other users in tests.
    pub keys: std::sync::Arc<platform_iam::tokens::TokenKeys>,
    /// The API's state (benchmarks serve other routers over it).
    pub api: api::AppState,
}

pub struct Options {
    pub node_schedule_to_start_s: u64,
    /// Start the control-plane worker in-process (false: the test starts it, e.g. as a process).
    pub in_process_worker: bool,
    /// Workflows the worker caches; 0 forces a full replay of history on every workflow task.
    pub max_cached_workflows: usize,
    pub node_start_to_close_s: u64,
    /// Node lifecycle timings (short ones by default, so tests see transitions quickly).
    pub lifecycle: LifecycleArgs,
    /// Seconds between reconciler passes; 0: no reconciler schedule.
    pub reconcile_every_s: u64,
    /// Faults the in-process worker injects.
    pub worker_faults: ActivityHooks,
    /// Identity and limits (tests' defaults: in-memory key, open sign-up, generous limits).
    pub auth: api::AuthConfig,
    /// The worker's billing settings (tests' defaults: no Schedules, dunning a second apart).
    /// Its task queue is replaced by the test's own.
    pub billing: workers::billing::BillingWorkerConfig,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            node_schedule_to_start_s: 5,
            in_process_worker: true,
            max_cached_workflows: 1000,
            node_start_to_close_s: 60,
            lifecycle: LifecycleArgs {
                heartbeat_timeout_seconds: 4,
                report_every_seconds: 5,
                unreachable_grace_seconds: 600,
                gpu_recovery_seconds: 600,
                drain_poll_seconds: 1,
            },
            reconcile_every_s: 0,
            worker_faults: ActivityHooks::default(),
            auth: api::AuthConfig::for_tests(),
            billing: workers::billing::BillingWorkerConfig::for_tests(String::new()),
        }
    }
}

impl Platform {
    pub async fn start(options: Options) -> Self {
        let (pool, db_url) = shared_kernel::db::testing::fresh_database().await;
        let task_queue = format!("gpuaas-control-test-{}", Uuid::new_v4().simple());
        let mut billing = options.billing.clone();
        billing.billing_task_queue = format!("{task_queue}-billing");
        let state_dir =
            std::env::temp_dir().join(format!("gpuaas-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&state_dir).unwrap();

        // The API publishes these keys; the worker signs node commands with them.
        let mut auth = options.auth.clone();
        auth.signing_keys_dir
            .get_or_insert_with(|| state_dir.join("signing-keys"));
        let config = api::ApiConfig {
            listen: "127.0.0.1:0".into(),
            database: DatabaseArgs {
                url: db_url.clone(),
                max_connections: 5,
            },
            temporal: temporal_args(),
            auth: auth.clone(),
            audit_anchor_file: None,
            audit_anchor_every_seconds: 0,
            billing_task_queue: billing.billing_task_queue.clone(),
            gpuaas: api::GpuaasConfig {
                task_queue: task_queue.clone(),
                node_schedule_to_start_seconds: options.node_schedule_to_start_s,
                node_start_to_close_seconds: options.node_start_to_close_s,
                lifecycle: options.lifecycle.clone(),
            },
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        let state = api::AppState::connect(config).await.expect("API connects");
        let (operator_id, tenant_id) = bootstrap_accounts(&pool).await;
        let keys = state.keys.clone();
        let api_state = state.clone();
        let operator_token = keys.issue_access(operator_id, Uuid::now_v7());
        let tenant_token = keys.issue_access(tenant_id, Uuid::now_v7());
        let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(api::serve(listener, state, async move {
            let _ = api_stopped.await;
        }));
        let mut platform = Self {
            pool,
            db_url,
            api_url,
            task_queue,
            http: reqwest::Client::new(),
            signing_keys_dir: auth.signing_keys_dir.clone().expect("set above"),
            state_dir,
            agents: HashMap::new(),
            worker: None,
            worker_process: None,
            agent_processes: HashMap::new(),
            node_schedule_to_start_s: options.node_schedule_to_start_s,
            max_cached_workflows: options.max_cached_workflows,
            reconcile_every_s: options.reconcile_every_s,
            worker_faults: options.worker_faults.clone(),
            billing,
            api_stop: Some(api_stop),
            operator_token,
            tenant_token,
            operator_id,
            tenant_id,
            keys,
            api: api_state,
        };
        if options.in_process_worker {
            platform.start_worker_thread();
        }
        platform
    }

    pub fn worker_config(&self) -> workers::WorkerConfig {
        workers::WorkerConfig {
            database: DatabaseArgs {
                url: self.db_url.clone(),
                max_connections: 5,
            },
            temporal: temporal_args(),
            gpuaas: workers::gpuaas::GpuaasWorkerConfig {
                task_queue: self.task_queue.clone(),
                reconcile_every_seconds: self.reconcile_every_s,
                signing_keys_dir: self.signing_keys_dir.clone(),
            },
            billing: self.billing.clone(),
            max_cached_workflows: self.max_cached_workflows,
            metrics: Default::default(),
            hooks: self.worker_faults.clone(),
        }
    }

    pub fn start_worker_thread(&mut self) {
        let config = self.worker_config();
        self.worker = Some(ThreadTask::spawn("worker", move |stop| async move {
            workers::run(config, async move {
                let _ = stop.await;
            })
            .await
        }));
    }

    /// Starts the real `gpuaas-worker` binary, so a test can SIGKILL it.
    pub fn start_worker_process(&mut self) {
        self.start_worker_process_with(&ActivityHooks::default());
    }

    /// Starts the worker binary with faults to inject (e.g. SIGKILL itself after a step).
    pub fn start_worker_process_with(&mut self, faults: &ActivityHooks) {
        let command = std::process::Command::new(binary("gpuaas-worker"));
        self.spawn_worker_process(command, faults);
    }

    /// Starts the worker binary serving Prometheus metrics on `listen`.
    pub fn start_worker_process_serving_metrics(&mut self, listen: std::net::SocketAddr) {
        let mut command = std::process::Command::new(binary("gpuaas-worker"));
        command.env("GPUAAS_METRICS_LISTEN", listen.to_string());
        self.spawn_worker_process(command, &ActivityHooks::default());
    }

    fn spawn_worker_process(&mut self, mut command: std::process::Command, faults: &ActivityHooks) {
        let c = self.worker_config();
        fault_env(&mut command, faults);
        let child = command
            .env("GPUAAS_DATABASE_URL", &c.database.url)
            .env("GPUAAS_TEMPORAL_ADDRESS", &c.temporal.address)
            .env("GPUAAS_TASK_QUEUE", &c.gpuaas.task_queue)
            .env(
                "GPUAAS_DB_MAX_CONNECTIONS",
                c.database.max_connections.to_string(),
            )
            .env(
                "GPUAAS_RECONCILE_EVERY_SECONDS",
                c.gpuaas.reconcile_every_seconds.to_string(),
            )
            .env(
                "GPUAAS_MAX_CACHED_WORKFLOWS",
                c.max_cached_workflows.to_string(),
            )
            .env("GPUAAS_SIGNING_KEYS_DIR", &c.gpuaas.signing_keys_dir)
            .envs(billing_env(&c.billing))
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start gpuaas-worker");
        self.worker_process = Some(child);
    }

    /// Waits until the worker process exits by itself (an injected SIGKILL); true if it did.
    pub async fn worker_process_died(&mut self, within: Duration) -> bool {
        let died = match self.worker_process.as_mut() {
            Some(child) => exits_within(child, within).await,
            None => false,
        };
        if died {
            self.worker_process = None;
        }
        died
    }

    /// Starts the real `gpuaas-node-agent` binary (simulated GPUs), so a test can SIGKILL it,
    /// and waits until its node is registered.
    pub async fn start_agent_process(&mut self, name: &str, gpus: &str, faults: &ActivityHooks) {
        let command = std::process::Command::new(binary("gpuaas-node-agent"));
        self.spawn_agent_process(command, name, gpus, faults).await;
    }

    /// Starts the agent binary serving Prometheus metrics on `listen`.
    pub async fn start_agent_process_serving_metrics(
        &mut self,
        name: &str,
        gpus: &str,
        listen: std::net::SocketAddr,
    ) {
        let mut command = std::process::Command::new(binary("gpuaas-node-agent"));
        command.env("GPUAAS_METRICS_LISTEN", listen.to_string());
        self.spawn_agent_process(command, name, gpus, &ActivityHooks::default())
            .await;
    }

    async fn spawn_agent_process(
        &mut self,
        mut command: std::process::Command,
        name: &str,
        gpus: &str,
        faults: &ActivityHooks,
    ) {
        fault_env(&mut command, faults);
        let join_token = self.join_token().await;
        let child = command
            .env("GPUAAS_NODE_NAME", name)
            .env("GPUAAS_API_URL", &self.api_url)
            .env("GPUAAS_JOIN_TOKEN", join_token)
            .env("GPUAAS_TEMPORAL_ADDRESS", temporal_address())
            .env("GPUAAS_SIMULATE_GPUS", gpus)
            .env(
                "GPUAAS_AGENT_STATE_DIR",
                self.state_dir.join("agents").join(name),
            )
            .env("GPUAAS_GPU_FAULT_FILE", self.gpu_fault_file(name))
            .env("GPUAAS_SETTLE_MS", "300")
            .env("GPUAAS_STOP_GRACE_MS", "2000")
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start gpuaas-node-agent");
        self.agent_processes.insert(name.to_string(), child);
        self.wait_node_until(name, |s| s != "registering").await;
    }

    /// SIGKILLs an agent process: its workloads (own process groups) keep running.
    pub fn kill_agent_process(&mut self, name: &str) {
        if let Some(mut child) = self.agent_processes.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the agent process exits by itself (an injected SIGKILL); true if it did.
    pub async fn agent_process_died(&mut self, name: &str, within: Duration) -> bool {
        let died = match self.agent_processes.get_mut(name) {
            Some(child) => exits_within(child, within).await,
            None => false,
        };
        if died {
            self.agent_processes.remove(name);
        }
        died
    }

    /// The file through which a test injects simulated GPU faults into an agent.
    pub fn gpu_fault_file(&self, agent: &str) -> PathBuf {
        self.state_dir
            .join("agents")
            .join(format!("{agent}.gpu-faults"))
    }

    /// Waits until the node named `name` is in a state `accept` takes.
    pub async fn wait_node_until(&self, name: &str, accept: impl Fn(&str) -> bool) {
        self.eventually(Duration::from_secs(30), "node registers", || async {
            let nodes = self.get_json("/v1/nodes").await;
            nodes["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["name"] == name && n["state"].as_str().is_some_and(&accept))
        })
        .await;
    }

    /// Waits until the node named `name` is in `state`.
    pub async fn wait_node_state(&self, name: &str, state: &str) {
        self.eventually(
            Duration::from_secs(60),
            &format!("node {name} is {state}"),
            || async { self.node_state(name).await == state },
        )
        .await;
    }

    /// The node's state as the API reports it.
    pub async fn node_state(&self, name: &str) -> String {
        self.node(name).await["state"].as_str().unwrap().to_string()
    }

    /// The node named `name` with its GPUs (the list counts them; `GET /v1/nodes/{id}` has them).
    pub async fn node(&self, name: &str) -> Value {
        let nodes = self.get_json("/v1/nodes").await;
        let id = nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["id"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no node {name}"));
        self.get_json(&format!("/v1/nodes/{id}")).await
    }

    /// A fresh join token (single use, one hour).
    pub async fn join_token(&self) -> String {
        platform_iam::nodes::create_join_token(&self.pool, self.operator_id, 3600)
            .await
            .expect("create a join token")
            .1
            .text
    }

    /// POSTs to an operator endpoint; returns the status and the body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.api_url))
            .bearer_auth(&self.operator_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// SIGKILLs the worker process: no graceful shutdown, in-flight tasks are lost.
    pub fn kill_worker_process(&mut self) {
        if let Some(mut child) = self.worker_process.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts an in-process agent with simulated GPUs (e.g. `8xH100-80GB`) and waits until its
    /// node is registered and ready.
    pub async fn start_agent(&mut self, name: &str, gpus: &str, settle_ms: u64) {
        self.start_agent_with(name, gpus, settle_ms, ActivityHooks::default())
            .await;
    }

    /// An in-process agent that injects `faults`.
    pub async fn start_agent_with(
        &mut self,
        name: &str,
        gpus: &str,
        settle_ms: u64,
        faults: ActivityHooks,
    ) {
        let config = node_agent::AgentConfig {
            name: Some(name.to_string()),
            api_url: self.api_url.clone(),
            join_token: Some(self.join_token().await),
            temporal: temporal_args(),
            simulate_gpus: Some(gpus.to_string()),
            state_dir: self.state_dir.join("agents").join(name),
            settle_ms,
            stop_grace_ms: 2000,
            key_rotation_days: 30,
            probe_interval_ms: 250,
            gpu_fault_file: Some(self.gpu_fault_file(name)),
            workloads: Default::default(),
            metrics: Default::default(),
            hooks: faults,
        };
        let task = ThreadTask::spawn(&format!("agent-{name}"), move |stop| async move {
            node_agent::run(config, async move {
                let _ = stop.await;
            })
            .await
        });
        self.agents.insert(name.to_string(), task);
        self.wait_node_until(name, |s| s == "ready").await;
    }

    pub fn stop_agent(&mut self, name: &str) {
        if let Some(agent) = self.agents.remove(name) {
            agent.stop();
        }
    }

    /// Registers a node through the API with no agent behind it: a host that died right after
    /// joining. Its task queue is never polled.
    pub async fn register_ghost_node(&self, name: &str, gpus: i32, model: &str) -> NodeId {
        let req = RegisterNodeRequest {
            // A key whose private half nobody holds: the ghost never comes back.
            public_key: Some(base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                rand::random::<[u8; 32]>(),
            )),
            encryption_key: Some(base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                contract_node::envelope::encryption_public_key(
                    &contract_node::envelope::new_encryption_secret(),
                ),
            )),
            name: name.into(),
            agent_version: "ghost".into(),
            discovery: "simulated".into(),
            gpus: (0..gpus)
                .map(|i| GpuReport {
                    index: i,
                    uuid: format!("GPU-ghost-{name}-{i}"),
                    model: model.into(),
                    memory_mib: 81920,
                    healthy: true,
                })
                .collect(),
        };
        let resp = self
            .http
            .post(format!("{}/v1/nodes/register", self.api_url))
            .bearer_auth(self.join_token().await)
            .json(&req)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "register ghost: {}",
            resp.status()
        );
        resp.json::<RegisterNodeResponse>().await.unwrap().node_id
    }

    /// GETs as the operator; instance paths read the seeded default project.
    pub async fn get_json(&self, path: &str) -> Value {
        let path = if path.starts_with("/v1/instances") {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}project={}", platform_iam::DEFAULT_PROJECT)
        } else {
            path.to_string()
        };
        let resp = self
            .http
            .get(format!("{}{path}", self.api_url))
            .bearer_auth(&self.operator_token)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// POST /v1/instances; returns the status and the body.
    pub async fn create(&self, body: Value, idempotency_key: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/instances", self.api_url))
            .bearer_auth(&self.tenant_token)
            .json(&body);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// Creates an instance and returns its id (asserting 202).
    pub async fn create_ok(&self, body: Value) -> InstanceId {
        let (status, body) = self.create(body, None).await;
        assert_eq!(status, 202, "create: {body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Creates an instance and waits until it runs (asserting it does).
    pub async fn create_running(&self, body: Value) -> InstanceId {
        let id = self.create_ok(body).await;
        let instance = self
            .wait_state(id, &["running", "failed"], Duration::from_secs(60))
            .await;
        assert_eq!(instance.state, "running", "{instance:?}");
        id
    }

    /// Marks an instance ended in the database only, as if its termination had been lost: its
    /// process and GPUs are now orphans for the reconciler.
    pub async fn end_behind_the_platforms_back(&self, id: InstanceId) {
        sqlx::query(
            "UPDATE gpuaas.instances SET state = 'failed', failure_reason = 'timeout' WHERE id = $1",
        )
        .bind(id.uuid())
        .execute(&self.pool)
        .await
        .unwrap();
    }

    pub async fn delete(&self, id: InstanceId) -> u16 {
        let resp = self
            .http
            .delete(format!("{}/v1/instances/{id}", self.api_url))
            .bearer_auth(&self.tenant_token)
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    }

    pub async fn instance(&self, id: InstanceId) -> Instance {
        serde_json::from_value(self.get_json(&format!("/v1/instances/{id}")).await).unwrap()
    }

    /// Waits until the instance is in one of `states`; panics with its last state otherwise.
    pub async fn wait_state(&self, id: InstanceId, states: &[&str], timeout: Duration) -> Instance {
        let deadline = Instant::now() + timeout;
        loop {
            let instance = self.instance(id).await;
            if states.contains(&instance.state.as_str()) {
                return instance;
            }
            assert!(
                Instant::now() < deadline,
                "instance {id} still {} (step {}, {:?}) after {timeout:?}; wanted {states:?}",
                instance.state,
                instance.current_step,
                instance.status_message
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// As `wait_state`, reading through `token` (a tenant's view).
    pub async fn wait_state_as(
        &self,
        token: &str,
        id: &str,
        states: &[&str],
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let instance: Value = self
                .http
                .get(format!("{}/v1/instances/{id}", self.api_url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if states.iter().any(|s| instance["state"] == *s) {
                return instance;
            }
            assert!(
                Instant::now() < deadline,
                "instance {id}: {instance} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn eventually<F, Fut>(&self, timeout: Duration, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GPUs held by two live allocations at once: must always be 0.
    pub async fn double_booked_gpus(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT gpu_id FROM gpuaas.allocations WHERE released_at IS NULL
                                   GROUP BY gpu_id HAVING count(*) > 1) d",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    pub async fn live_allocations(&self, instance: InstanceId) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM gpuaas.allocations WHERE instance_id = $1 AND released_at IS NULL")
            .bind(instance.uuid())
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn total_live_allocations(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM gpuaas.allocations WHERE released_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Nodes whose placement counter disagrees with their actual free healthy GPUs.
    pub async fn inconsistent_free_counters(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM gpuaas.nodes n WHERE n.free_gpus <> (
                 SELECT count(*) FROM gpuaas.gpus g WHERE g.node_id = n.id AND g.health = 'healthy'
                   AND NOT EXISTS (SELECT 1 FROM gpuaas.allocations a WHERE a.gpu_id = g.id AND a.released_at IS NULL))",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// The pid the agent recorded for an instance's workload, if it started one.
    pub fn workload_pid(&self, instance: InstanceId) -> Option<i32> {
        let agents = std::fs::read_dir(self.state_dir.join("agents")).ok()?;
        for agent in agents.flatten() {
            for node in std::fs::read_dir(agent.path()).ok()?.flatten() {
                let pid_file = node
                    .path()
                    .join("instances")
                    .join(instance.to_string())
                    .join("pid");
                if let Ok(pid) = std::fs::read_to_string(pid_file) {
                    return pid.trim().parse().ok();
                }
            }
        }
        None
    }

    /// Workload processes still alive under this test's agents (zombies count as dead).
    pub fn live_workloads(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        let Ok(agents) = std::fs::read_dir(self.state_dir.join("agents")) else {
            return pids;
        };
        for agent in agents.flatten() {
            let Ok(nodes) = std::fs::read_dir(agent.path()) else {
                continue;
            };
            for node in nodes.flatten() {
                let Ok(instances) = std::fs::read_dir(node.path().join("instances")) else {
                    continue;
                };
                for instance in instances.flatten() {
                    let pid = std::fs::read_to_string(instance.path().join("pid"))
                        .ok()
                        .and_then(|p| p.trim().parse().ok());
                    if let Some(pid) = pid.filter(|p| process_alive(*p)) {
                        pids.push(pid);
                    }
                }
            }
        }
        pids
    }

    /// What a fault may have leaked. All zero after every fault-suite run.
    pub async fn leak_report(&self) -> LeakReport {
        let terminal_holding: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM gpuaas.allocations a JOIN gpuaas.instances i ON i.id = a.instance_id
             WHERE a.released_at IS NULL AND i.state IN ('terminated', 'failed')",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM gpuaas.instances WHERE state NOT IN ('terminated', 'failed')",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        LeakReport {
            double_booked_gpus: self.double_booked_gpus().await,
            leaked_allocations: terminal_holding,
            orphan_processes: self.live_workloads().len(),
            unfinished_instances: unfinished,
            inconsistent_free_counters: self.inconsistent_free_counters().await,
        }
    }

    /// Waits until the workflow `workflow_id` has closed (completed, failed, ...): its status
    /// is no longer RUNNING.
    pub async fn wait_workflow_closed(&self, workflow_id: &str) {
        let client = temporal_args().connect("test").await.unwrap();
        // Any workflow type: describe() reads only the execution status.
        let handle = client
            .get_workflow_handle::<workflows::gpuaas::ProvisionInstance>(workflow_id.to_string());
        self.eventually(Duration::from_secs(60), workflow_id, || async {
            let described = handle.describe(Default::default()).await.unwrap();
            described
                .raw_description
                .workflow_execution_info
                .as_ref()
                .is_some_and(|i| i.status != 1) // 1 = RUNNING
        })
        .await;
    }

    /// Writes, behind the platform's back, a failed instance that still holds `gpus` GPUs of
    /// `node` (a leak for the reconciler to find). Returns its id.
    pub async fn insert_ended_instance_holding(
        pool: &PgPool,
        node: NodeId,
        gpus: i64,
    ) -> InstanceId {
        let id = InstanceId::new();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO gpuaas.instances (id, project_id, name, sku_id, gpu_count, command, state,
                 failure_reason, node_id, current_step)
             SELECT $1, $2, 'leaked', s.id, $4, 'sleep 1', 'failed', 'timeout', n.id, 'failed'
             FROM gpuaas.nodes n JOIN gpuaas.skus s ON s.gpu_model = n.gpu_model WHERE n.id = $3",
        )
        .bind(id.uuid())
        .bind(shared_ids::ProjectId::new().uuid())
        .bind(node.uuid())
        .bind(gpus as i32)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO gpuaas.allocations (instance_id, gpu_id, node_id, gpu_index)
             SELECT $1, g.id, g.node_id, g.idx FROM gpuaas.gpus g WHERE g.node_id = $2
             ORDER BY g.idx LIMIT $3",
        )
        .bind(id.uuid())
        .bind(node.uuid())
        .bind(gpus)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("UPDATE gpuaas.nodes SET free_gpus = free_gpus - $2 WHERE id = $1")
            .bind(node.uuid())
            .bind(gpus as i32)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    }

    pub fn node_schedule_to_start(&self) -> Duration {
        Duration::from_secs(self.node_schedule_to_start_s)
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeakReport {
    pub double_booked_gpus: i64,
    /// Live allocations of instances that ended.
    pub leaked_allocations: i64,
    /// Workload processes alive (checked when no instance should run).
    pub orphan_processes: usize,
    /// Instances not in a terminal state.
    pub unfinished_instances: i64,
    pub inconsistent_free_counters: i64,
}

/// Whether `child` exits within `within`.
async fn exits_within(child: &mut std::process::Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A binary of the workspace (`gpuaas-worker`, `gpuaas-node-agent`, `gpuaas`), next to the
/// test executable's profile directory; `scripts/test` builds them before the tests.
/// A tenant's context in the seeded default project, for tests that call the domain directly.
pub fn tenant_context() -> shared_kernel::OperationContext {
    let mut ctx = shared_kernel::OperationContext::system("test");
    ctx.principal = shared_kernel::Principal {
        kind: shared_kernel::PrincipalKind::User,
        id: Uuid::nil(),
        name: TENANT_EMAIL.into(),
    };
    ctx.auth_method = shared_kernel::AuthMethod::AccessToken;
    ctx.operator = false;
    ctx.org = Some(platform_iam::DEFAULT_ORG);
    ctx.project = Some(platform_iam::DEFAULT_PROJECT);
    ctx
}

/// Creates the operator and the tenant (owner of the seeded default org); returns their ids.
pub async fn bootstrap_accounts(pool: &PgPool) -> (Uuid, Uuid) {
    use platform_iam::{PlatformRole, Role, users};
    let operator =
        users::ensure_platform_user(pool, OPERATOR_EMAIL, PASSWORD, PlatformRole::Operator)
            .await
            .expect("create the operator");
    let tenant = users::create(pool, TENANT_EMAIL, PASSWORD)
        .await
        .expect("create the tenant")
        .id;
    users::add_to_org(pool, platform_iam::DEFAULT_ORG, tenant, Role::Owner)
        .await
        .expect("tenant owns the default org");
    (operator, tenant)
}

pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as scripts/test does)",
        path.display()
    );
    path
}

/// Passes faults to a child process through the environment the binaries read.
/// The worker process's billing settings, as its environment.
fn billing_env(b: &workers::billing::BillingWorkerConfig) -> Vec<(&'static str, String)> {
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let mut env = vec![
        ("GPUAAS_BILLING_TASK_QUEUE", b.billing_task_queue.clone()),
        ("GPUAAS_BILLING_PERIOD_S", b.period_seconds.to_string()),
        ("GPUAAS_BILLING_GRACE_S", b.cycle_grace_seconds.to_string()),
        (
            "GPUAAS_BILLING_SWEEP_EVERY_S",
            b.sweep_every_seconds.to_string(),
        ),
        (
            "GPUAAS_BILLING_ENFORCE_EVERY_S",
            b.enforce_every_seconds.to_string(),
        ),
        (
            "GPUAAS_BILLING_ENFORCEMENT_GRACE_S",
            b.enforcement_grace_seconds.to_string(),
        ),
        (
            "GPUAAS_BILLING_PENDING_RECHECK_S",
            b.pending_recheck_seconds.to_string(),
        ),
        (
            "GPUAAS_BILLING_SANDBOX_CONFIRM_S",
            b.sandbox_confirm_seconds.to_string(),
        ),
    ];
    if !b.retry_delays_seconds.is_empty() {
        env.push((
            "GPUAAS_BILLING_RETRY_DELAYS_S",
            list(&b.retry_delays_seconds),
        ));
    }
    if !b.credit_thresholds_percent.is_empty() {
        let t: Vec<u64> = b
            .credit_thresholds_percent
            .iter()
            .map(|p| *p as u64)
            .collect();
        env.push(("GPUAAS_BILLING_CREDIT_THRESHOLDS", list(&t)));
    }
    env
}

fn fault_env(command: &mut std::process::Command, faults: &ActivityHooks) {
    if let Some(step) = &faults.kill_after {
        command.env("GPUAAS_FAULT_KILL_AFTER", step);
    }
    if let Some(step) = &faults.fail_at {
        command.env("GPUAAS_FAULT_FAIL_AT", step);
    }
}

pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // Leave nothing behind: workloads, threads, the worker process, the database.
        for pid in self.live_workloads() {
            // SAFETY: signalling a process group this test's agent created.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        self.agents.clear();
        let names: Vec<String> = self.agent_processes.keys().cloned().collect();
        for name in names {
            self.kill_agent_process(&name);
        }
        self.worker.take();
        self.kill_worker_process();
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
        let db_url = self.db_url.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                let name = db_url.rsplit('/').next().unwrap().to_string();
                if let Ok(mut admin) =
                    sqlx::PgConnection::connect(&shared_kernel::db::testing::server_url()).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}
