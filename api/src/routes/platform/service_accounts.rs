//! `/v1/service-accounts`: non-human principals of the request's project.

use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::{ApiError, ApiResult};
use api_types::List;
use api_types::platform::{CreateServiceAccountRequest, ServiceAccount};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform_iam::service_accounts;
use uuid::Uuid;

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<List<ServiceAccount>>> {
    let items = service_accounts::list(&state.pool, caller.project()).await?;
    Ok(Json(List {
        items: items.into_iter().map(convert::service_account).collect(),
    }))
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateServiceAccountRequest>,
) -> ApiResult<(StatusCode, Json<ServiceAccount>)> {
    let role = convert::role(&req.role)?;
    let account = service_accounts::create(
        &state.pool,
        caller.project(),
        &req.name,
        role,
        caller.ctx.principal.id,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(convert::service_account(account))))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    service_accounts::delete(&state.pool, caller.project(), account_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn account_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "service_account_not_found",
            "service account not found",
        )
    })
}
