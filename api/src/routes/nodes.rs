use crate::extract::{ApiJson, Caller, JoiningNode};
use crate::problem::{ApiError, ApiResult};
use crate::{AppState, convert};
use axum::Json;
use axum::extract::{Path, State};
use gpuaas_api_types::{
    DrainNodeRequest, List, Node, NodeEvent, RegisterNodeRequest, RegisterNodeResponse,
};
use gpuaas_domain::{events, lifecycle, node};
use gpuaas_shared::ids::NodeId;
use std::time::Duration;

pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<List<Node>>> {
    let nodes = node::list(&state.pool).await?;
    Ok(Json(List {
        items: nodes.into_iter().map(convert::node).collect(),
    }))
}

pub async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Node>> {
    Ok(Json(convert::node(
        node::get(&state.pool, parse_id(&id)?).await?,
    )))
}

/// Agents register with the join token; registering again returns the same node id.
pub async fn register(
    State(state): State<AppState>,
    _node: JoiningNode,
    ApiJson(req): ApiJson<RegisterNodeRequest>,
) -> ApiResult<Json<RegisterNodeResponse>> {
    let name = req.name.clone();
    let node_id = node::register(&state.pool, &convert::registration(req)).await?;
    crate::workflows::start_node_lifecycle(&state, node_id, &name).await?;
    Ok(Json(RegisterNodeResponse {
        node_id: node_id.0,
        task_queue: node::task_queue(node_id),
    }))
}

/// `POST /v1/nodes/{id}/cordon`: no new instances are placed on the node.
pub async fn cordon(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Node>> {
    let node = lifecycle::cordon(&state.pool, parse_id(&id)?, &caller.actor()).await?;
    Ok(Json(convert::node(node)))
}

/// `POST /v1/nodes/{id}/uncordon`: the node takes new instances again (this also cancels a
/// drain).
pub async fn uncordon(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Node>> {
    let node = lifecycle::uncordon(&state.pool, parse_id(&id)?, &caller.actor()).await?;
    Ok(Json(convert::node(node)))
}

/// `POST /v1/nodes/{id}/drain`: no new instances; the node's lifecycle workflow waits for its
/// instances to end, terminates the rest at the deadline, and leaves the node cordoned.
pub async fn drain(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DrainNodeRequest>,
) -> ApiResult<(axum::http::StatusCode, Json<Node>)> {
    let deadline = Duration::from_secs(req.deadline_seconds.unwrap_or(3600));
    if deadline > Duration::from_secs(7 * 24 * 3600) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_drain_deadline",
            "deadline_seconds must be at most 604800 (7 days)",
        ));
    }
    let actor = caller.actor();
    let node = lifecycle::begin_drain(&state.pool, parse_id(&id)?, deadline, &actor).await?;
    crate::workflows::signal_drain(&state, node.id, &node.name, &actor.label()).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(convert::node(node))))
}

/// `POST /v1/nodes/{id}/decommission`: retires a down (or drained) node; the operator asserts the
/// host runs nothing any more, so its GPUs are released.
pub async fn decommission(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Node>> {
    let actor = caller.actor();
    let node = lifecycle::decommission(&state.pool, parse_id(&id)?, &actor).await?;
    crate::workflows::signal_decommissioned(&state, node.id, &actor.label()).await?;
    Ok(Json(convert::node(node)))
}

/// `GET /v1/nodes/{id}/events`: newest first; the audit trail of the node.
pub async fn events(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<List<NodeEvent>>> {
    let id = parse_id(&id)?;
    node::get(&state.pool, id).await?;
    let items = events::of_node(&state.pool, id, 200).await?;
    Ok(Json(List {
        items: items.into_iter().map(convert::event).collect(),
    }))
}

/// Ids that do not parse cannot exist: 404, like any other unknown id.
fn parse_id(id: &str) -> Result<NodeId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "node_not_found",
            format!("node {id} not found"),
        )
    })
}
