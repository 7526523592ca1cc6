//! Platform routes: probes and metrics today; IAM (`/v1/auth`, `/v1/orgs`, `/v1/projects`),
//! billing and audit join this family.

pub mod health;
pub mod metrics;

use crate::AppState;
use axum::Router;
use axum::routing::get;

pub const ROUTES: &[(&str, &str)] = &[("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::prometheus))
}
