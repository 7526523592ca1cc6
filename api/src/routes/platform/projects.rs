//! `/v1/orgs/{org}/projects`, and a project's quota (`/v1/quota`; operators set it).

use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::ApiResult;
use api_types::List;
use api_types::platform::{CreateProjectRequest, Project, Quota, SetQuotaRequest};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform_iam::orgs;
use shared_ids::ProjectId;

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<List<Project>>> {
    let projects = orgs::list_projects(&state.pool, caller.org()).await?;
    Ok(Json(List {
        items: projects.into_iter().map(convert::project).collect(),
    }))
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateProjectRequest>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    let project = orgs::create_project(&state.pool, caller.org(), &req.name).await?;
    Ok((StatusCode::CREATED, Json(convert::project(project))))
}

/// `GET /v1/quota`: the plan, entitlements and GPU quota of the request's project.
pub async fn quota(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Quota>> {
    let project = caller.project();
    let e = platform_policy::entitlement(&state.pool, caller.org(), project).await?;
    Ok(Json(Quota {
        project_id: project,
        plan: e.plan,
        entitled_skus: e.skus,
        max_concurrent_gpus: e.project_gpu_quota,
    }))
}

/// `PUT /v1/projects/{project}/quota` (operators).
pub async fn set_quota(
    State(state): State<AppState>,
    Path(project): Path<String>,
    ApiJson(req): ApiJson<SetQuotaRequest>,
) -> ApiResult<StatusCode> {
    let id: ProjectId = project
        .parse()
        .map_err(|_| orgs::project_not_found(&project))?;
    let project = orgs::get_project(&state.pool, id).await?;
    platform_policy::set_project_quota(&state.pool, project.org_id, id, req.max_concurrent_gpus)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
