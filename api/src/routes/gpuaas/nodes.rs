//! `/v1/nodes`: agents register; operators list, cordon, drain, decommission and audit hosts.

use super::convert;
use crate::AppState;
use crate::auth::{Caller, NodeCaller};
use crate::extract::{ApiJson, ApiQuery, page_limit};
use crate::problem::{ApiError, ApiResult};
use api_types::gpuaas::{
    DrainNodeRequest, Node, NodeEvent, NodeSummary, RegisterNodeRequest, RegisterNodeResponse,
};
use api_types::{List, Page};
use axum::Json;
use axum::extract::{Path, State};
use product_gpuaas::{NodeState, events, node, node_lifecycle};
use shared_ids::NodeId;
use std::time::Duration;
use workflows::gpuaas::node_lifecycle as lifecycle_workflow;
use workflows::gpuaas::{DrainRequested, NodeLifecycleInput};

#[derive(serde::Deserialize)]
pub struct ListParams {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/nodes`: a page of nodes by name (the cursor is the last name), GPUs counted.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<NodeSummary>>> {
    let limit = page_limit(params.limit)?;
    let items = node::page(&state.pool, limit, params.cursor.as_deref()).await?;
    Ok(Json(Page::of(
        items,
        limit,
        |n| n.node.name.clone(),
        convert::node_summary,
    )))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Node>> {
    Ok(Json(convert::node(
        node::get(&state.pool, node_id(&id)?).await?,
    )))
}

/// Agents register: the first time with a join token and their public key (joining), afterwards
/// with their node credential. Registering again returns the same node id.
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RegisterNodeRequest>,
) -> ApiResult<Json<RegisterNodeResponse>> {
    let name = req.name.clone();
    let node_id = node_identity(&state, &caller, &req).await?;
    let node_id = node::register(&state.pool, node_id, &convert::registration(req)).await?;
    let gpuaas = &state.config.gpuaas;
    lifecycle_workflow::start_or_configure(
        &state.temporal,
        &gpuaas.task_queue,
        lifecycle_input(&state, node_id, &name),
    )
    .await
    .map_err(|e| ApiError::internal(format!("signal-with-start node {node_id} lifecycle: {e}")))?;
    Ok(Json(RegisterNodeResponse {
        node_id,
        task_queue: contract_node::vocabulary::task_queue(node_id),
    }))
}

/// The node a registration is for. With the node's credential: that node (a new key in the
/// request rotates the credential). Joining: always a new node, under a name nobody holds, so a
/// join token can never take over an existing node's id, queue or GPUs.
async fn node_identity(
    state: &AppState,
    caller: &Caller,
    req: &RegisterNodeRequest,
) -> ApiResult<NodeId> {
    match &caller.node {
        Some(NodeCaller::Node(id)) => {
            if let Some(keys) = reported_keys(req)? {
                platform_iam::nodes::update_keys(&state.pool, *id, &keys).await?;
            }
            Ok(*id)
        }
        Some(NodeCaller::Joining { token }) => {
            let keys = reported_keys(req)?
                .filter(|k| k.encryption_key.is_some())
                .ok_or_else(platform_iam::nodes::keys_required)?;
            // Nothing is used up for a registration that cannot succeed.
            convert::registration(req.clone()).validate()?;
            name_is_free(state, &req.name).await?;
            let id = NodeId::new();
            platform_iam::nodes::join(&state.pool, token, id, &keys).await?;
            Ok(id)
        }
        None => Err(crate::auth::unauthorized()),
    }
}

/// A joining node's name must be nobody's, not even a decommissioned node's.
async fn name_is_free(state: &AppState, name: &str) -> ApiResult<()> {
    let Some(taken) = node::id_by_name(&state.pool, name).await? else {
        return Ok(());
    };
    let retired = node::get(&state.pool, taken).await?.state == NodeState::Decommissioned;
    let (code, detail) = if retired {
        (
            "node_decommissioned",
            "a decommissioned node had this name; join under a new name",
        )
    } else {
        (
            "node_name_taken",
            "another node is registered under this name; join under a new name",
        )
    };
    Err(ApiError::new(
        axum::http::StatusCode::CONFLICT,
        code,
        detail,
    ))
}

/// The keys a registration reports (base64url), decoded and checked.
fn reported_keys(req: &RegisterNodeRequest) -> ApiResult<Option<platform_iam::nodes::NodeKeys>> {
    Ok(platform_iam::nodes::NodeKeys::decode(
        req.public_key.as_deref(),
        req.encryption_key.as_deref(),
    )?)
}

/// `POST /v1/nodes/{id}/cordon`: no new instances are placed on the node.
pub async fn cordon(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Node>> {
    let node = node_lifecycle::cordon(&state.pool, node_id(&id)?, &caller.actor()).await?;
    Ok(Json(convert::node(node)))
}

/// `POST /v1/nodes/{id}/uncordon`: the node takes new instances again (this also cancels a
/// drain).
pub async fn uncordon(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Node>> {
    let node = node_lifecycle::uncordon(&state.pool, node_id(&id)?, &caller.actor()).await?;
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
    let node = node_lifecycle::begin_drain(&state.pool, node_id(&id)?, deadline, &actor).await?;
    let request = DrainRequested {
        requested_by: actor.label(),
    };
    let input = lifecycle_input(&state, node.id, &node.name);
    lifecycle_workflow::request_drain(&state.temporal, &state.config.gpuaas.task_queue, input, request)
        .await
        .map_err(|e| {
            ApiError::unavailable(format!(
                "the node is draining, but its lifecycle workflow could not be told ({e}); retry the request"
            ))
        })?;
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
    let node = node_lifecycle::decommission(&state.pool, node_id(&id)?, &actor).await?;
    // A retired host's key proves nothing any more.
    platform_iam::nodes::revoke_credential(&state.pool, node.id).await?;
    lifecycle_workflow::tell_decommissioned(&state.temporal, node.id, &actor.label())
        .await
        .map_err(|e| {
            ApiError::unavailable(format!(
                "the node is decommissioned, but its lifecycle workflow could not be told ({e}); retry the request"
            ))
        })?;
    Ok(Json(convert::node(node)))
}

/// `GET /v1/nodes/{id}/events`: newest first; the audit trail of the node.
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<List<NodeEvent>>> {
    let id = node_id(&id)?;
    node::get(&state.pool, id).await?;
    let items = events::of_node(&state.pool, id, 200).await?;
    Ok(Json(List {
        items: items.into_iter().map(convert::event).collect(),
    }))
}

/// The lifecycle workflow's input with the timings this API runs with.
fn lifecycle_input(state: &AppState, node: NodeId, name: &str) -> NodeLifecycleInput {
    let gpuaas = &state.config.gpuaas;
    NodeLifecycleInput {
        node_id: node,
        node_name: name.to_string(),
        config: gpuaas.lifecycle(),
        node_timeouts: gpuaas.node_timeouts(),
        carried: Default::default(),
    }
}

/// Ids that do not parse cannot exist: 404, like any other unknown id (the code is a literal, so
/// the OpenAPI contract test sees it).
fn node_id(id: &str) -> Result<NodeId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "node_not_found",
            "node not found",
        )
    })
}
