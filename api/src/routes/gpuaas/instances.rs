//! `/v1/instances`: launch, list, read and terminate GPU instances.

use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, IdempotencyKey, invalid_cursor, page_limit};
use crate::problem::{ApiError, ApiResult};
use api_types::Page;
use api_types::gpuaas::{CreateInstanceRequest, Instance};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use product_gpuaas::{InstanceState, NewInstance, instance};
use shared_ids::InstanceId;
use std::time::Duration;
use temporalio_client::WorkflowExecutionStatus;
use temporalio_client::errors::WorkflowInteractionError;
use workflows::gpuaas::{
    ProvisionInput, ProvisionInstance, TerminateInput, instance_provision, instance_terminate,
};

/// How long a request waits for Temporal to accept a workflow start. The change is committed by
/// then, so a start that fails or times out is logged, not answered: the reconciler starts the
/// workflow (its id is derived from the instance, so a late start finds it).
const START_PATIENCE: Duration = Duration::from_secs(5);

/// `POST /v1/instances`: records the instance and starts its provisioning; answers 202. Once the
/// instance is recorded the answer is 202 even if Temporal cannot be reached: a 503 would make
/// the client retry and, without an Idempotency-Key, create a second instance. Errors before the
/// insert (the database unreachable: 503 `database_unavailable`) leave nothing behind.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(req): ApiJson<CreateInstanceRequest>,
) -> ApiResult<impl IntoResponse> {
    let new = new_instance(&caller, req);
    product_gpuaas::sku::get(&state.pool, &new.sku).await?;
    platform_policy::check_sku(&state.pool, caller.org(), &new.sku).await?;
    let created = instance::create(&state.pool, &caller.ctx, &new, key.as_deref()).await?;
    // Also on a retry: the first attempt may have died between the insert and the start.
    if let Err(e) = start_provisioning(&state, &caller, &created.instance).await {
        tracing::warn!(instance_id = %created.instance.id, error = %e, "provisioning not started; the reconciler will start it");
    }
    let location = format!("/v1/instances/{}", created.instance.id);
    let view = instance::for_caller(&caller.ctx, created.instance);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(convert::instance(view)),
    ))
}

fn new_instance(caller: &Caller, req: CreateInstanceRequest) -> NewInstance {
    NewInstance {
        project_id: caller.project(),
        name: req.name,
        sku: req.sku,
        gpu_count: req.gpu_count,
        command: req.command,
        capacity_timeout_s: req.capacity_timeout_seconds,
    }
}

#[derive(serde::Deserialize)]
pub struct ListParams {
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<Instance>>> {
    let limit = page_limit(params.limit)?;
    let after = params
        .cursor
        .map(|c| c.parse::<InstanceId>().map_err(|_| invalid_cursor()))
        .transpose()?;
    let items = instance::list(&state.pool, &caller.ctx, limit, after).await?;
    Ok(Json(Page::of(
        items,
        limit,
        |i| i.id.to_string(),
        |i| convert::instance(instance::for_caller(&caller.ctx, i)),
    )))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Instance>> {
    let id = instance_id(&id)?;
    let found = instance::get_explained(&state.pool, &caller.ctx, id).await?;
    let span = instance::usage_span_id(id);
    let cost = platform_billing::metering::cost_of_span(&state.pool, &span).await?;
    Ok(Json(convert::instance_with_cost(found, cost)))
}

/// `DELETE /v1/instances/{id}`: starts termination; answers 202. Deleting a terminated or failed
/// instance changes nothing and answers 202 too (idempotent). A retried delete makes sure a
/// workflow unwinds the instance (its first attempt may have committed `terminating` and then
/// failed to start it); if Temporal cannot be reached the answer is still 202 `terminating`, and
/// the reconciler (or the next retry) starts the termination.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = instance_id(&id)?;
    let (_, current) = instance::begin_termination(&state.pool, &caller.ctx, id).await?;
    if let Err(e) = ensure_unwinding(&state, &caller, &current).await {
        tracing::warn!(instance_id = %current.id, error = %e, "termination not started; the reconciler will start it");
    }
    let view = instance::for_caller(&caller.ctx, current);
    Ok((StatusCode::ACCEPTED, Json(convert::instance(view))))
}

/// Makes sure a `terminating` instance has a workflow unwinding it. One that ran is
/// TerminateInstance's; one deleted while `pending`/`provisioning` is unwound by its own
/// provisioning workflow, which sees the state at its next step (ADR 0003), unless that workflow
/// is gone (never started, or ended): then TerminateInstance finishes it.
async fn ensure_unwinding(
    state: &AppState,
    caller: &Caller,
    i: &product_gpuaas::Instance,
) -> Result<(), String> {
    if i.state != InstanceState::Terminating {
        return Ok(());
    }
    if i.running_at.is_none() && provisioning_runs(state, i.id).await? {
        return Ok(());
    }
    start_termination(state, caller, i).await
}

/// Whether the instance's provisioning workflow is running now.
async fn provisioning_runs(state: &AppState, id: InstanceId) -> Result<bool, String> {
    let handle = state
        .temporal
        .get_workflow_handle::<ProvisionInstance>(instance_provision::workflow_id(id));
    match within_patience(handle.describe(Default::default())).await? {
        Ok(described) => Ok(described.status() == WorkflowExecutionStatus::Running),
        Err(WorkflowInteractionError::NotFound(_)) => Ok(false),
        Err(e) => Err(format!("describe the provisioning of {id}: {e}")),
    }
}

async fn start_provisioning(
    state: &AppState,
    caller: &Caller,
    i: &product_gpuaas::Instance,
) -> Result<(), String> {
    let gpuaas = &state.config.gpuaas;
    let input = ProvisionInput {
        requested_by: Some(caller.ctx.principal.clone()),
        instance_id: i.id,
        project_id: i.project_id,
        capacity_timeout_s: i.capacity_timeout_s.max(0) as u64,
        node_timeouts: gpuaas.node_timeouts(),
    };
    within_patience(instance_provision::start(
        &state.temporal,
        &gpuaas.task_queue,
        input,
    ))
    .await?
    .map_err(|e| format!("start the provisioning of {}: {e}", i.id))
}

async fn start_termination(
    state: &AppState,
    caller: &Caller,
    i: &product_gpuaas::Instance,
) -> Result<(), String> {
    let gpuaas = &state.config.gpuaas;
    let input = TerminateInput {
        requested_by: Some(caller.ctx.principal.clone()),
        instance_id: i.id,
        project_id: i.project_id,
        node_id: i.node_id,
        node_timeouts: gpuaas.node_timeouts(),
    };
    within_patience(instance_terminate::start(
        &state.temporal,
        &gpuaas.task_queue,
        input,
    ))
    .await?
    .map_err(|e| format!("start the termination of {}: {e}", i.id))
}

/// A call to Temporal, given up after [`START_PATIENCE`] (the client itself retries an
/// unreachable server for longer).
async fn within_patience<T>(call: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(START_PATIENCE, call)
        .await
        .map_err(|_| format!("Temporal did not answer within {START_PATIENCE:?}"))
}

/// Ids that do not parse cannot exist: 404, like any other unknown id (the code is a literal, so
/// the OpenAPI contract test sees it).
fn instance_id(id: &str) -> Result<InstanceId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "instance_not_found",
            "instance not found",
        )
    })
}
