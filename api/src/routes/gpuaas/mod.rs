//! The gpuaas route family: SKUs, nodes (operators and agents), instances.

pub mod config;
mod convert;
pub mod instances;
pub mod nodes;
pub mod skus;

use crate::AppState;
use axum::Router;
use axum::routing::{get, post};

pub const ROUTES: &[(&str, &str)] = &[
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

pub fn router() -> Router<AppState> {
    Router::new()
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
}
