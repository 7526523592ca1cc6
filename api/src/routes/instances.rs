use crate::extract::{ApiJson, ApiQuery, Caller, IdempotencyKey};
use crate::problem::{ApiError, ApiResult};
use crate::{AppState, convert, workflows};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use gpuaas_api_types::{CreateInstanceRequest, Instance, Page};
use gpuaas_domain::{InstanceState, NewInstance, instance};
use gpuaas_shared::ids::InstanceId;

/// `POST /v1/instances`: records the instance and starts its provisioning; answers 202.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(req): ApiJson<CreateInstanceRequest>,
) -> ApiResult<impl IntoResponse> {
    let new = NewInstance {
        project_id: caller.project,
        name: req.name,
        sku: req.sku,
        gpu_count: req.gpu_count,
        command: req.command,
        capacity_timeout_s: req.capacity_timeout_seconds,
    };
    let created = instance::create(&state.pool, &new, key.as_deref()).await?;
    // Also on a retry: the first attempt may have died between the insert and the start.
    workflows::start_provisioning(&state, &created.instance).await?;
    let location = format!("/v1/instances/{}", created.instance.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(convert::instance(created.instance)),
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
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 200",
        ));
    }
    let after = match params.cursor {
        Some(c) => Some(c.parse::<InstanceId>().map_err(|_| {
            ApiError::bad_request("invalid_cursor", "cursor is not one this API issued")
        })?),
        None => None,
    };
    let items = instance::list(&state.pool, caller.project, limit, after).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| i.id.to_string()))
        .flatten();
    Ok(Json(Page {
        items: items.into_iter().map(convert::instance).collect(),
        next_cursor,
    }))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Instance>> {
    let id = parse_id(&id)?;
    Ok(Json(convert::instance(
        instance::get_explained(&state.pool, caller.project, id).await?,
    )))
}

/// `DELETE /v1/instances/{id}`: starts termination; answers 202. Deleting a terminated or failed
/// instance changes nothing and answers 202 too (idempotent).
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id)?;
    let (previous, current) = instance::begin_termination(&state.pool, caller.project, id).await?;
    // A pending/provisioning instance is unwound by its own provisioning workflow, which sees the
    // `terminating` state at its next step; only a running one needs TerminateInstance.
    if previous == InstanceState::Running {
        workflows::start_termination(&state, &current).await?;
    }
    Ok((StatusCode::ACCEPTED, Json(convert::instance(current))))
}

/// Ids that do not parse cannot exist: 404, like any other unknown id.
fn parse_id(id: &str) -> Result<InstanceId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "instance_not_found",
            format!("instance {id} not found"),
        )
    })
}
