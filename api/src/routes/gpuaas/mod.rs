//! The gpuaas route family: SKUs, nodes (operators and agents), instances.

pub mod config;
mod convert;
pub mod instances;
pub mod nodes;
pub mod skus;

use crate::AppState;
use crate::auth::{Access::*, Route, route};
use axum::Router;
use axum::routing::{get, post};
use platform_iam::Permission::*;

pub const ROUTES: &[Route] = &[
    route("GET", "/v1/skus", Authenticated, "sku.list"),
    route("GET", "/v1/nodes", Platform(NodesRead), "node.list"),
    route("POST", "/v1/nodes/register", Node, "node.register"),
    route("GET", "/v1/nodes/{id}", Platform(NodesRead), "node.read"),
    route(
        "POST",
        "/v1/nodes/{id}/cordon",
        Platform(NodesWrite),
        "node.cordon",
    ),
    route(
        "POST",
        "/v1/nodes/{id}/uncordon",
        Platform(NodesWrite),
        "node.uncordon",
    ),
    route(
        "POST",
        "/v1/nodes/{id}/drain",
        Platform(NodesWrite),
        "node.drain",
    ),
    route(
        "POST",
        "/v1/nodes/{id}/decommission",
        Platform(NodesWrite),
        "node.decommission",
    ),
    route(
        "GET",
        "/v1/nodes/{id}/events",
        Platform(NodesRead),
        "node.events",
    ),
    route(
        "GET",
        "/v1/instances",
        Project(InstancesRead),
        "instance.list",
    ),
    route(
        "POST",
        "/v1/instances",
        Project(InstancesWrite),
        "instance.create",
    ),
    route(
        "GET",
        "/v1/instances/{id}",
        Project(InstancesRead),
        "instance.read",
    ),
    route(
        "DELETE",
        "/v1/instances/{id}",
        Project(InstancesWrite),
        "instance.delete",
    ),
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
