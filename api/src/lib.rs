//! The REST API: thin axum handlers, one route family per product (`routes/<family>/`, one file
//! per resource), over the domain crates and the workflows' own starters.

pub mod config;
pub mod extract;
pub mod problem;
pub mod routes;

pub use config::ApiConfig;
pub use routes::gpuaas::config::{GpuaasConfig, LifecycleArgs};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use problem::{ApiError, REQUEST_ID};
use shared_kernel::db::Pool as PgPool;
use std::sync::Arc;
use temporalio_client::Client;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub temporal: Client,
    pub config: Arc<ApiConfig>,
}

/// Every route, as `(METHOD, path)`; `doc/api/openapi.yaml` must list exactly these.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    routes::ROUTES
        .iter()
        .flat_map(|family| family.iter().copied())
        .collect()
}

pub fn router(state: AppState) -> Router {
    routes::router()
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
        let pool = shared_kernel::db::connect_and_migrate(
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
