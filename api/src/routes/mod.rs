//! The route families of the layer model, one folder each, one file per resource. Handlers stay
//! thin (scripts/ci/check-architecture, rule 8): extract, authenticate, call a domain crate or a
//! workflow's starter, map the error.

pub mod appplatform;
pub mod gpuaas;
pub mod platform;
pub mod tokenfactory;

use crate::AppState;
use axum::Router;

/// Every family's routes, as `(METHOD, path)`.
pub const ROUTES: &[&[crate::auth::Route]] = &[platform::ROUTES, gpuaas::ROUTES];

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(platform::router())
        .merge(gpuaas::router())
}
