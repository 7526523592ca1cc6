//! The REST API: thin axum handlers, one route family per product (`routes/<family>/`, one file
//! per resource), over the domain crates and the workflows' own starters.

pub mod audit;
pub mod auth;
pub mod config;
pub mod extract;
pub mod limits;
pub mod problem;
pub mod routes;
pub mod serve;

pub use config::{ApiConfig, AuthConfig};
pub use routes::gpuaas::config::{GpuaasConfig, LifecycleArgs};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use platform_iam::tokens::TokenKeys;
use problem::{ApiError, REQUEST_ID};
use shared_kernel::db::Pool as PgPool;
use std::sync::Arc;
use std::time::Duration;
use temporalio_client::Client;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub temporal: Client,
    pub config: Arc<ApiConfig>,
    /// The access-token keys (also sign audit anchors).
    pub keys: Arc<TokenKeys>,
    pub limits: Arc<limits::Limits>,
    /// The audit writer's queue (group commit).
    pub audit: audit::AuditQueue,
    pub authorities: Arc<auth::AuthorityCache>,
    /// The last fleet gauges `/metrics` rendered, and when.
    pub fleet_metrics: Arc<routes::platform::metrics::FleetCache>,
}

pub use serve::BodyTimedOut;

/// Every route, as `(METHOD, path)`; `doc/api/openapi.yaml` must list exactly these.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    route_table()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

/// Every route with what it requires and its audit action.
pub fn route_table() -> Vec<auth::Route> {
    routes::ROUTES
        .iter()
        .flat_map(|family| family.iter().copied())
        .collect()
}

pub fn router(state: AppState) -> Router {
    routes::router()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(DefaultBodyLimit::max(state.config.auth.max_body_bytes))
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
        .layer(middleware::from_fn_with_state(
            serve::Guards::new(&state.config.auth),
            serve::guard,
        ))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// The same routes and handlers with authentication bypassed: every request acts as `caller`,
/// and is audited only when `audit` is set. For benchmarks that measure what authentication and
/// the audit chain cost against the same handlers; no configuration of the binary reaches it.
pub fn router_with_fixed_caller(state: AppState, caller: auth::Caller, audit: bool) -> Router {
    let fixed = move |axum::extract::State(state): axum::extract::State<AppState>,
                      mut req: Request,
                      next: Next| {
        let caller = caller.clone();
        async move {
            let action = req.uri().path().to_string();
            let mutating = req.method() != axum::http::Method::GET;
            req.extensions_mut().insert(caller.clone());
            let response = next.run(req).await;
            if audit && mutating {
                audit::record(
                    &state,
                    &caller.ctx,
                    "bench",
                    &action,
                    response.status(),
                    None,
                )
                .await;
            }
            response
        }
    };
    routes::router()
        .route_layer(middleware::from_fn_with_state(state.clone(), fixed))
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
    /// Connects to Postgres (running migrations) and Temporal, loads the signing keys, and
    /// creates the bootstrap operator when one is configured.
    pub async fn connect(config: ApiConfig) -> anyhow::Result<Self> {
        let pool = shared_kernel::db::connect_and_migrate(
            &config.database.url,
            config.database.max_connections,
        )
        .await?;
        let temporal = config.temporal.connect("gpuaas-api").await?;
        Self::with(pool, temporal, config).await
    }

    /// The state over an existing pool and client (tests and benches).
    pub async fn with(pool: PgPool, temporal: Client, config: ApiConfig) -> anyhow::Result<Self> {
        let auth = &config.auth;
        let ttl = Duration::from_secs(auth.access_token_ttl_seconds);
        let keys = match &auth.signing_keys_dir {
            Some(dir) => TokenKeys::load_dir(dir, &auth.token_issuer, &auth.token_audience, ttl)?,
            None => {
                tracing::warn!(
                    "GPUAAS_SIGNING_KEYS_DIR is not set: access tokens die with this process"
                );
                TokenKeys::ephemeral(&auth.token_issuer, &auth.token_audience, ttl)
            }
        };
        if let (Some(email), Some(password)) = (
            &auth.bootstrap_operator_email,
            &auth.bootstrap_operator_password,
        ) {
            platform_iam::users::ensure_platform_user(
                &pool,
                email,
                password,
                platform_iam::PlatformRole::Operator,
            )
            .await?;
        }
        let limits = Arc::new(limits::Limits::new(
            auth.rate_limit_per_second,
            auth.rate_limit_burst,
        ));
        let audit = audit::spawn_writer(pool.clone());
        let authorities = Arc::new(auth::AuthorityCache::new(Duration::from_millis(
            auth.authority_cache_ms,
        )));
        Ok(Self {
            pool,
            temporal,
            config: Arc::new(config),
            keys: Arc::new(keys),
            limits,
            audit,
            authorities,
            fleet_metrics: Default::default(),
        })
    }
}

/// Serves the API on `listener` until `shutdown` resolves, with the connection and request
/// limits of `AuthConfig` (`serve`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(listen = %listener.local_addr()?, "API listening");
    if state.config.auth.metrics_token.is_none() {
        tracing::info!("GPUAAS_METRICS_TOKEN is not set: /metrics is off");
    }
    spawn_housekeeping(&state);
    let limits = state.config.auth.clone();
    serve::run(listener, router(state), &limits, shutdown).await
}

/// Background chores of the API process: audit anchors, forgetting idle rate-limit keys.
fn spawn_housekeeping(state: &AppState) {
    let every = state.config.audit_anchor_every_seconds;
    if every > 0 {
        audit::spawn_anchoring(state.clone(), Duration::from_secs(every));
    }
    let (limits, authorities) = (state.limits.clone(), state.authorities.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limits.retain_recent();
            authorities.retain_recent();
        }
    });
}
