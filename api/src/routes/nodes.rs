use crate::extract::{ApiJson, Caller, JoiningNode};
use crate::problem::{ApiError, ApiResult};
use crate::{AppState, convert};
use axum::Json;
use axum::extract::{Path, State};
use gpuaas_api_types::{List, Node, RegisterNodeRequest, RegisterNodeResponse};
use gpuaas_domain::node;
use gpuaas_shared::ids::NodeId;

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
    let node_id = node::register(&state.pool, &convert::registration(req)).await?;
    Ok(Json(RegisterNodeResponse {
        node_id: node_id.0,
        task_queue: node::task_queue(node_id),
    }))
}

/// `POST /v1/nodes/{id}/cordon`: no new instances are placed on the node.
pub async fn cordon(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Node>> {
    Ok(Json(convert::node(
        node::set_cordoned(&state.pool, parse_id(&id)?, true).await?,
    )))
}

/// `POST /v1/nodes/{id}/uncordon`: the node takes new instances again.
pub async fn uncordon(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Node>> {
    Ok(Json(convert::node(
        node::set_cordoned(&state.pool, parse_id(&id)?, false).await?,
    )))
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
