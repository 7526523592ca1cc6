//! `/v1/nodes`: agents register; operators list, cordon, drain, decommission and audit hosts.

use super::convert;
use crate::AppState;
use crate::auth::{Caller, NodeCaller};
use crate::extract::ApiJson;
use crate::problem::{ApiError, ApiResult};
use api_types::List;
use api_types::gpuaas::{
    DrainNodeRequest, Node, NodeEvent, RegisterNodeRequest, RegisterNodeResponse,
};
use axum::Json;
use axum::extract::{Path, State};
use product_gpuaas::{events, node, node_lifecycle};
use shared_ids::NodeId;
use std::time::Duration;
use workflows::gpuaas::node_lifecycle as lifecycle_workflow;
use workflows::gpuaas::{DrainRequested, NodeLifecycleInput};

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<List<Node>>> {
    let nodes = node::list(&state.pool).await?;
    Ok(Json(List {
        items: nodes.into_iter().map(convert::node).collect(),
    }))
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

/// The node a registration is for: the credential's node, or (joining) the node of that name,
/// or a new one, whose public key the join records while it uses up the token.
async fn node_identity(
    state: &AppState,
    caller: &Caller,
    req: &RegisterNodeRequest,
) -> ApiResult<NodeId> {
    match &caller.node {
        Some(NodeCaller::Node(id)) => Ok(*id),
        Some(NodeCaller::Joining { token }) => {
            let key = public_key(req)?;
            // Nothing is used up for a registration that cannot succeed.
            convert::registration(req.clone()).validate()?;
            let id = node::id_by_name(&state.pool, &req.name)
                .await?
                .unwrap_or_default();
            platform_iam::nodes::join(&state.pool, token, id, &key).await?;
            Ok(id)
        }
        None => Err(crate::auth::unauthorized()),
    }
}

/// The joining node's public key (base64url).
fn public_key(req: &RegisterNodeRequest) -> ApiResult<Vec<u8>> {
    req.public_key
        .as_deref()
        .and_then(|k| {
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, k).ok()
        })
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "public_key_required",
                "joining needs the node's Ed25519 public key (base64url) in public_key",
            )
        })
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
