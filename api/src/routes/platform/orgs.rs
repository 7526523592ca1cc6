//! `/v1/orgs`: the orgs a caller belongs to; operators create orgs and set their plan.

use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::ApiResult;
use api_types::List;
use api_types::platform::{
    CreateOrgRequest, CreateOrgResponse, CreatedInvitation, Org, SetPlanRequest,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform_iam::orgs;
use shared_ids::OrgId;

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<List<Org>>> {
    let orgs = orgs::list(&state.pool, &caller.authority().orgs()).await?;
    Ok(Json(List {
        items: orgs.into_iter().map(convert::org).collect(),
    }))
}

/// `POST /v1/orgs` (operators): an org, its default project, and an invitation for its owner.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateOrgRequest>,
) -> ApiResult<(StatusCode, Json<CreateOrgResponse>)> {
    let ttl = chrono::Duration::days(7);
    let (org, project, invitation, secret) = orgs::create_with_owner(
        &state.pool,
        &req.name,
        &req.owner_email,
        caller.ctx.principal.id,
        ttl,
    )
    .await?;
    platform_audit::ensure_chains(&state.pool, Some(org.id)).await?;
    super::billing::open_account(&state, org.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateOrgResponse {
            org: convert::org(org),
            project: convert::project(project),
            invitation: CreatedInvitation {
                invitation: convert::invitation(invitation),
                token: secret.text,
            },
        }),
    ))
}

pub async fn get(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Org>> {
    Ok(Json(convert::org(
        orgs::get(&state.pool, caller.org()).await?,
    )))
}

/// `PUT /v1/orgs/{org}/plan` (operators).
pub async fn set_plan(
    State(state): State<AppState>,
    Path(org): Path<String>,
    ApiJson(req): ApiJson<SetPlanRequest>,
) -> ApiResult<StatusCode> {
    let org: OrgId = org
        .parse()
        .map_err(|_| platform_iam::orgs::org_not_found(&org))?;
    orgs::get(&state.pool, org).await?;
    platform_policy::set_org_plan(&state.pool, org, &req.plan).await?;
    Ok(StatusCode::NO_CONTENT)
}
