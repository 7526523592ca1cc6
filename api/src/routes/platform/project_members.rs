//! `/v1/project-members`: users' roles in the request's project, besides their org roles.

use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::{ApiError, ApiResult};
use api_types::List;
use api_types::platform::{ProjectMember, SetRoleRequest};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform_iam::{Role, members};
use uuid::Uuid;

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<List<ProjectMember>>> {
    let items = members::list_project(&state.pool, caller.project()).await?;
    Ok(Json(List {
        items: items.into_iter().map(convert::project_member).collect(),
    }))
}

pub async fn set_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    ApiJson(req): ApiJson<SetRoleRequest>,
) -> ApiResult<Json<ProjectMember>> {
    let role = convert::role(&req.role)?;
    let actor = caller.role.unwrap_or(Role::Viewer);
    let user = user
        .parse::<Uuid>()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "user_not_found", "user not found"))?;
    let member =
        members::set_project_role(&state.pool, caller.project(), user, role, actor).await?;
    Ok(Json(convert::project_member(member)))
}

pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<StatusCode> {
    let actor = caller.role.unwrap_or(Role::Viewer);
    let user = user.parse::<Uuid>().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "member_not_found",
            "member not found",
        )
    })?;
    members::remove_project_member(&state.pool, caller.project(), user, actor).await?;
    Ok(StatusCode::NO_CONTENT)
}
