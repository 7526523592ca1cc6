//! Outages between the API and what it depends on: Temporal unreachable while an instance is
//! created or deleted, the database unreachable before anything is written. A second API, over
//! the test's database and task queue, reaches Temporal or Postgres through a TCP proxy the test
//! cuts and restores; the platform's own worker keeps its direct connection.

use crate::harness::{Options, Platform, process_alive, temporal_address, temporal_args};
use serde_json::{Value, json};
use shared_ids::InstanceId;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use workflows::gpuaas::{instance_provision, instance_terminate};

const LONG: Duration = Duration::from_secs(60);

/// A TCP proxy that can be cut: while cut its port refuses connections and every connection it
/// carried is closed, as if the server behind it had gone away.
struct Proxy {
    addr: SocketAddr,
    upstream: String,
    serving: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = upstream.to_string();
        let serving = Some(tokio::spawn(forward(listener, upstream.clone())));
        Self {
            addr,
            upstream,
            serving,
        }
    }

    /// Closes the port and every connection through it (dropping the accept loop drops its
    /// connections' tasks).
    async fn cut(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
            let _ = serving.await;
        }
    }

    async fn restore(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        self.serving = Some(tokio::spawn(forward(listener, self.upstream.clone())));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }
}

async fn forward(listener: TcpListener, upstream: String) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut inbound, _)) = accepted else { continue };
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A second API over the platform's database and task queue, reaching Temporal (and, if given,
/// Postgres) through proxies; it acts as the platform's tenant.
struct ProxiedApi {
    url: String,
    token: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ProxiedApi {
    async fn start(p: &Platform, temporal: Option<&Proxy>, database: Option<&Proxy>) -> Self {
        let temporal_args = runtime::TemporalArgs {
            address: temporal.map_or_else(temporal_address, |t| t.addr.to_string()),
            namespace: "default".into(),
        };
        let client = temporal_args.connect("gpuaas-api-proxied").await.unwrap();
        let pool = match database {
            Some(proxy) => {
                let options = sqlx::postgres::PgConnectOptions::from_str(&p.db_url)
                    .unwrap()
                    .host(&proxy.addr.ip().to_string())
                    .port(proxy.addr.port());
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(1))
                    .connect_with(options)
                    .await
                    .unwrap()
            }
            None => p.pool.clone(),
        };
        let config = api::ApiConfig {
            listen: "127.0.0.1:0".into(),
            database: runtime::DatabaseArgs {
                url: p.db_url.clone(),
                max_connections: 2,
            },
            temporal: temporal_args,
            // The tenant's authority is read once, before any outage, then cached.
            auth: api::AuthConfig {
                authority_cache_ms: 600_000,
                ..api::AuthConfig::for_tests()
            },
            audit_anchor_file: None,
            audit_anchor_every_seconds: 0,
            gpuaas: p.api.config.gpuaas.clone(),
            billing_task_queue: p.api.config.billing_task_queue.clone(),
        };
        let state = api::AppState::with(pool, client, config).await.unwrap();
        let token = state.keys.issue_access(p.tenant_id, uuid::Uuid::now_v7());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(api::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        let api = Self {
            url,
            token,
            http: reqwest::Client::new(),
            _stop: stop,
        };
        let (status, body) = api.get_instances().await;
        assert_eq!(status, 200, "{body}");
        api
    }

    async fn get_instances(&self) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/v1/instances", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// POST /v1/instances: status, `Retry-After`, `Content-Type`, body.
    async fn create(&self, body: Value, key: &str) -> (u16, Option<u64>, String, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/instances", self.url))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header("retry-after").and_then(|v| v.parse().ok());
        let content_type = header("content-type").unwrap_or_default();
        let status = resp.status().as_u16();
        (
            status,
            retry_after,
            content_type,
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn delete(&self, id: InstanceId) -> (u16, Value) {
        let resp = self
            .http
            .delete(format!("{}/v1/instances/{id}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }
}

fn id_of(body: &Value) -> InstanceId {
    body["id"].as_str().unwrap().parse().unwrap()
}

async fn count(p: &Platform, sql: &str, id: Option<InstanceId>) -> i64 {
    let query = sqlx::query_scalar::<_, i64>(sql);
    let query = match id {
        Some(id) => query.bind(id.uuid()),
        None => query,
    };
    query.fetch_one(&p.pool).await.unwrap()
}

/// Every run (open or closed) Temporal has of `workflow_id`.
async fn runs(client: &temporalio_client::Client, workflow_id: &str) -> usize {
    use futures::StreamExt;
    let query = format!("WorkflowId = '{workflow_id}'");
    client
        .list_workflows(query, Default::default())
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .count()
}

/// Whether Temporal has any run of `workflow_id` (described, strongly consistent).
async fn exists(client: &temporalio_client::Client, workflow_id: &str) -> bool {
    let handle =
        client.get_workflow_handle::<temporalio_client::UntypedWorkflow>(workflow_id.to_string());
    match handle.describe(Default::default()).await {
        Ok(_) => true,
        Err(temporalio_client::errors::WorkflowInteractionError::NotFound(_)) => false,
        Err(e) => panic!("describe {workflow_id}: {e}"),
    }
}

/// The reconciler, started only once the outage is over (as in a real one, where its Schedule
/// cannot run while Temporal is away).
async fn start_reconciler(p: &Platform, client: &temporalio_client::Client) {
    workflows::gpuaas::reconcile::ensure_schedule(client, &p.task_queue, Duration::from_secs(2))
        .await
        .unwrap();
}

async fn reconciler_events(p: &Platform, kind: &str, id: InstanceId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM gpuaas.events WHERE kind = $1 AND instance_id = $2")
        .bind(kind)
        .bind(id.uuid())
        .fetch_one(&p.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_during_a_temporal_outage_answers_202_pending_and_provisions_once_temporal_returns()
 {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100", "8xH100-80GB", 200).await;
    let client = temporal_args().connect("test").await.unwrap();
    let mut temporal = Proxy::start(&temporal_address()).await;
    let api = ProxiedApi::start(&p, Some(&temporal), None).await;
    let request = json!({"sku": "h100-80gb-sxm", "gpu_count": 1});

    temporal.cut().await;
    let asked = Instant::now();
    let (status, _, _, body) = api.create(request.clone(), "outage-1").await;
    assert_eq!(status, 202, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the API waited {:?} for Temporal",
        asked.elapsed()
    );
    assert_eq!(body["state"], "pending", "{body}");
    let id = id_of(&body);
    // A retry during the outage finds the same instance.
    let (status, _, _, again) = api.create(request.clone(), "outage-1").await;
    assert_eq!((status, id_of(&again)), (202, id), "{again}");
    let provision = instance_provision::workflow_id(id);
    assert!(!exists(&client, &provision).await, "no workflow yet");
    let sql = "SELECT count(*) FROM gpuaas.instances";
    assert_eq!(count(&p, sql, None).await, 1);

    temporal.restore().await;
    start_reconciler(&p, &client).await;
    let running = p.wait_state(id, &["running", "failed"], LONG).await;
    assert_eq!(running.state, "running", "{running:?}");
    // Later passes (and a retried create) start nothing more: one run, one allocation, one
    // process.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, _, _, retried) = api.create(request, "outage-1").await;
    assert_eq!((status, id_of(&retried)), (202, id), "{retried}");
    assert_eq!(retried["state"], "running");
    assert_eq!(runs(&client, &provision).await, 1);
    let sql = "SELECT count(*) FROM gpuaas.allocations WHERE instance_id = $1";
    assert_eq!(count(&p, sql, Some(id)).await, 1, "one allocation ever");
    assert_eq!(p.live_workloads().len(), 1);
    let started = reconciler_events(&p, "reconciler.provisioning_started", id).await;
    assert_eq!(started, 1);
    assert_eq!(p.double_booked_gpus().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_while_the_database_is_unreachable_answers_503_with_retry_after_and_writes_nothing()
 {
    let p = Platform::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await;
    let server = sqlx::postgres::PgConnectOptions::from_str(&p.db_url).unwrap();
    let upstream = format!("{}:{}", server.get_host(), server.get_port());
    let mut database = Proxy::start(&upstream).await;
    let api = ProxiedApi::start(&p, None, Some(&database)).await;
    let request = json!({"sku": "h100-80gb-sxm", "gpu_count": 1});

    database.cut().await;
    let (status, retry_after, content_type, body) = api.create(request.clone(), "db-1").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "database_unavailable", "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "Retry-After: {retry_after:?}"
    );
    let (status, listed) = api.get_instances().await;
    assert_eq!(
        (status, &listed["code"]),
        (503, &json!("database_unavailable"))
    );
    let sql = "SELECT count(*) FROM gpuaas.instances";
    assert_eq!(count(&p, sql, None).await, 0, "nothing written");

    // Back: the same request (same key) creates the instance, once.
    database.restore().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let created = loop {
        let (status, _, _, body) = api.create(request.clone(), "db-1").await;
        if status != 503 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(created.0, 202, "{}", created.1);
    assert_eq!(count(&p, sql, None).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_whose_termination_cannot_start_stays_terminating_until_a_retry_or_the_reconciler_finishes_it()
 {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100", "8xH100-80GB", 200).await;
    let client = temporal_args().connect("test").await.unwrap();
    let request = json!({"sku": "h100-80gb-sxm", "gpu_count": 1});
    // Both run; `retried` is finished by a retried DELETE, `left` by the reconciler.
    let retried = p.create_running(request.clone()).await;
    let left = p.create_running(request.clone()).await;
    let pids = [retried, left].map(|id| p.workload_pid(id).unwrap());
    let mut temporal = Proxy::start(&temporal_address()).await;
    let api = ProxiedApi::start(&p, Some(&temporal), None).await;

    temporal.cut().await;
    for id in [retried, left] {
        let (status, body) = api.delete(id).await;
        assert_eq!((status, body["state"].as_str()), (202, Some("terminating")));
    }
    // Accepted while Temporal was away, then deleted before any workflow ran: its provisioning
    // never starts and nothing unwinds it but the reconciler.
    let (status, _, _, body) = api.create(request, "never-started").await;
    assert_eq!((status, body["state"].as_str()), (202, Some("pending")));
    let never_started = id_of(&body);
    let (status, body) = api.delete(never_started).await;
    assert_eq!((status, body["state"].as_str()), (202, Some("terminating")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in [retried, left, never_started] {
        assert_eq!(p.instance(id).await.state, "terminating");
        assert!(!exists(&client, &instance_terminate::workflow_id(id)).await);
    }
    assert!(pids.iter().all(|pid| process_alive(*pid)));

    temporal.restore().await;
    // A retried DELETE starts the termination the first one could not.
    let (status, _) = api.delete(retried).await;
    assert_eq!(status, 202);
    p.wait_state(retried, &["terminated"], LONG).await;
    assert!(!process_alive(pids[0]));
    assert_eq!(p.live_allocations(retried).await, 0);
    // The reconciler finishes the others.
    start_reconciler(&p, &client).await;
    for id in [left, never_started] {
        p.wait_state(id, &["terminated"], LONG).await;
        let started = reconciler_events(&p, "reconciler.termination_started", id).await;
        assert_eq!(started, 1, "{id}");
    }
    assert!(!process_alive(pids[1]));
    assert!(
        !exists(&client, &instance_provision::workflow_id(never_started)).await,
        "a deleted instance is never provisioned"
    );
    let sql = "SELECT count(*) FROM gpuaas.allocations WHERE instance_id = $1";
    assert_eq!(count(&p, sql, Some(never_started)).await, 0);
    assert_eq!(p.leak_report().await, Default::default());
}
