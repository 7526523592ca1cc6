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
use workflows::gpuaas::{ProvisionInput, TerminateInput, instance_provision, instance_terminate};

/// `POST /v1/instances`: records the instance and starts its provisioning; answers 202.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(req): ApiJson<CreateInstanceRequest>,
) -> ApiResult<impl IntoResponse> {
    let new = NewInstance {
        project_id: caller.project(),
        name: req.name,
        sku: req.sku,
        gpu_count: req.gpu_count,
        command: req.command,
        capacity_timeout_s: req.capacity_timeout_seconds,
    };
    product_gpuaas::sku::get(&state.pool, &new.sku).await?;
    platform_policy::check_sku(&state.pool, caller.org(), &new.sku).await?;
    let created = instance::create(&state.pool, &caller.ctx, &new, key.as_deref()).await?;
    // Also on a retry: the first attempt may have died between the insert and the start.
    start_provisioning(&state, &caller, &created.instance).await?;
    let location = format!("/v1/instances/{}", created.instance.id);
    let view = instance::for_caller(&caller.ctx, created.instance);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(convert::instance(view)),
    ))
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
    Ok(Json(convert::instance(
        instance::get_explained(&state.pool, &caller.ctx, id).await?,
    )))
}

/// `DELETE /v1/instances/{id}`: starts termination; answers 202. Deleting a terminated or failed
/// instance changes nothing and answers 202 too (idempotent).
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = instance_id(&id)?;
    let (previous, current) = instance::begin_termination(&state.pool, &caller.ctx, id).await?;
    // A pending/provisioning instance is unwound by its own provisioning workflow, which sees the
    // `terminating` state at its next step; only a running one needs TerminateInstance.
    if previous == InstanceState::Running {
        start_termination(&state, &caller, &current).await?;
    }
    let view = instance::for_caller(&caller.ctx, current);
    Ok((StatusCode::ACCEPTED, Json(convert::instance(view))))
}

async fn start_provisioning(
    state: &AppState,
    caller: &Caller,
    i: &product_gpuaas::Instance,
) -> ApiResult<()> {
    let gpuaas = &state.config.gpuaas;
    let input = ProvisionInput {
        requested_by: Some(caller.ctx.principal.clone()),
        instance_id: i.id,
        project_id: i.project_id,
        command: i.command.clone(),
        capacity_timeout_s: i.capacity_timeout_s.max(0) as u64,
        node_timeouts: gpuaas.node_timeouts(),
    };
    instance_provision::start(&state.temporal, &gpuaas.task_queue, input)
        .await
        .map_err(|e| ApiError::internal(format!("start the provisioning of {}: {e}", i.id)))
}

async fn start_termination(
    state: &AppState,
    caller: &Caller,
    i: &product_gpuaas::Instance,
) -> ApiResult<()> {
    let gpuaas = &state.config.gpuaas;
    let input = TerminateInput {
        requested_by: Some(caller.ctx.principal.clone()),
        instance_id: i.id,
        project_id: i.project_id,
        node_id: i.node_id,
        node_timeouts: gpuaas.node_timeouts(),
    };
    instance_terminate::start(&state.temporal, &gpuaas.task_queue, input)
        .await
        .map_err(|e| ApiError::internal(format!("start the termination of {}: {e}", i.id)))
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
