//! The REST API: thin axum handlers over the gpuaas domain and the Temporal client.

pub mod convert;
pub mod extract;
pub mod problem;
pub mod prometheus;
pub mod routes;
pub mod workflows;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use gpuaas_activities::service::{DatabaseArgs, TemporalArgs};
use gpuaas_shared::db::Pool as PgPool;
use gpuaas_workflows::{LifecycleConfig, NodeTimeouts};
use problem::{ApiError, REQUEST_ID};
use std::sync::Arc;
use temporalio_client::Client;

#[derive(Debug, Clone, clap::Args)]
pub struct ApiConfig {
    #[arg(long, env = "GPUAAS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub temporal: TemporalArgs,
    /// Task queue of the control-plane worker.
    #[arg(long, env = "GPUAAS_TASK_QUEUE", default_value = gpuaas_activities::CONTROL_TASK_QUEUE)]
    pub task_queue: String,
    /// Bearer token for API callers (one dev token until IAM lands).
    #[arg(long, env = "GPUAAS_API_TOKEN")]
    pub api_token: String,
    /// Bearer token node agents register with.
    #[arg(long, env = "GPUAAS_JOIN_TOKEN")]
    pub join_token: String,
    /// Seconds a node task may wait for its agent before the node counts as unreachable.
    #[arg(
        long,
        env = "GPUAAS_NODE_SCHEDULE_TO_START_SECONDS",
        default_value_t = 30
    )]
    pub node_schedule_to_start_seconds: u64,
    /// Seconds a node may take to start and settle a workload.
    #[arg(
        long,
        env = "GPUAAS_NODE_START_TO_CLOSE_SECONDS",
        default_value_t = 120
    )]
    pub node_start_to_close_seconds: u64,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// Timings of every node's lifecycle workflow, passed to it when the node registers.
#[derive(Debug, Clone, clap::Args)]
pub struct LifecycleArgs {
    /// A node whose agent misses heartbeats this long is marked down.
    #[arg(
        long,
        env = "GPUAAS_NODE_HEARTBEAT_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub heartbeat_timeout_seconds: u64,
    /// How often a healthy agent reports anyway (GPU health changes report at once).
    #[arg(long, env = "GPUAAS_NODE_REPORT_EVERY_SECONDS", default_value_t = 30)]
    pub report_every_seconds: u64,
    /// How long a node may be down before its running instances fail with `node_unreachable`.
    #[arg(
        long,
        env = "GPUAAS_NODE_UNREACHABLE_GRACE_SECONDS",
        default_value_t = 120
    )]
    pub unreachable_grace_seconds: u64,
    /// How long a failed GPU must stay healthy before it returns to service.
    #[arg(long, env = "GPUAAS_GPU_RECOVERY_SECONDS", default_value_t = 300)]
    pub gpu_recovery_seconds: u64,
    /// How often a drain checks whether the node's instances have ended.
    #[arg(long, env = "GPUAAS_DRAIN_POLL_SECONDS", default_value_t = 5)]
    pub drain_poll_seconds: u64,
}

impl Default for LifecycleArgs {
    fn default() -> Self {
        let c = LifecycleConfig::default();
        Self {
            heartbeat_timeout_seconds: c.heartbeat_timeout_s,
            report_every_seconds: c.report_every_s,
            unreachable_grace_seconds: c.unreachable_grace_s,
            gpu_recovery_seconds: c.gpu_recovery_s,
            drain_poll_seconds: c.drain_poll_s,
        }
    }
}

impl ApiConfig {
    pub fn node_timeouts(&self) -> NodeTimeouts {
        NodeTimeouts {
            schedule_to_start_s: self.node_schedule_to_start_seconds,
            start_to_close_s: self.node_start_to_close_seconds,
        }
    }

    pub fn lifecycle(&self) -> LifecycleConfig {
        let l = &self.lifecycle;
        LifecycleConfig {
            heartbeat_timeout_s: l.heartbeat_timeout_seconds,
            report_every_s: l.report_every_seconds,
            unreachable_grace_s: l.unreachable_grace_seconds,
            gpu_recovery_s: l.gpu_recovery_seconds,
            drain_poll_s: l.drain_poll_seconds,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub temporal: Client,
    pub config: Arc<ApiConfig>,
}

/// Every route, as `(METHOD, path)`; `doc/api/openapi.yaml` must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/skus"),
    ("GET", "/v1/nodes"),
    ("POST", "/v1/nodes/register"),
    ("GET", "/v1/nodes/{id}"),
    ("POST", "/v1/nodes/{id}/cordon"),
    ("POST", "/v1/nodes/{id}/uncordon"),
    ("POST", "/v1/nodes/{id}/drain"),
    ("POST", "/v1/nodes/{id}/decommission"),
    ("GET", "/v1/nodes/{id}/events"),
    ("GET", "/v1/instances"),
    ("POST", "/v1/instances"),
    ("GET", "/v1/instances/{id}"),
    ("DELETE", "/v1/instances/{id}"),
];

pub fn router(state: AppState) -> Router {
    use routes::*;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::prometheus))
        .route("/v1/skus", get(skus::list))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/nodes/register", post(nodes::register))
        .route("/v1/nodes/{id}", get(nodes::get))
        .route("/v1/nodes/{id}/cordon", post(nodes::cordon))
        .route("/v1/nodes/{id}/uncordon", post(nodes::uncordon))
        .route("/v1/nodes/{id}/drain", post(nodes::drain))
        .route("/v1/nodes/{id}/decommission", post(nodes::decommission))
        .route("/v1/nodes/{id}/events", get(nodes::events))
        .route(
            "/v1/instances",
            get(instances::list).post(instances::create),
        )
        .route(
            "/v1/instances/{id}",
            get(instances::get).delete(instances::delete),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Gives every request an id (or keeps the caller's `x-request-id`), visible to error bodies,
/// logs and the response header.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::now_v7().simple()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut response = REQUEST_ID
        .scope(
            id.clone(),
            tracing::Instrument::instrument(next.run(req), span),
        )
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

impl AppState {
    /// Connects to Postgres (running migrations) and Temporal.
    pub async fn connect(config: ApiConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(!config.api_token.is_empty(), "GPUAAS_API_TOKEN must be set");
        anyhow::ensure!(
            !config.join_token.is_empty(),
            "GPUAAS_JOIN_TOKEN must be set"
        );
        let pool = gpuaas_shared::db::connect_and_migrate(
            &config.database.url,
            config.database.max_connections,
        )
        .await?;
        let temporal = config.temporal.connect("gpuaas-api").await?;
        Ok(Self {
            pool,
            temporal,
            config: Arc::new(config),
        })
    }
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(listen = %listener.local_addr()?, "API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
