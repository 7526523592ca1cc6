//! `/v1/orgs/{org}/members` and `/v1/orgs/{org}/invitations`.

use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::{ApiError, ApiResult};
use api_types::List;
use api_types::platform::{
    CreateInvitationRequest, CreatedInvitation, Invitation, Member, SetRoleRequest,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform_iam::{Role, members};
use uuid::Uuid;

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<List<Member>>> {
    let items = members::list(&state.pool, caller.org()).await?;
    Ok(Json(List {
        items: items.into_iter().map(convert::member).collect(),
    }))
}

pub async fn set_role(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, user)): Path<(String, String)>,
    ApiJson(req): ApiJson<SetRoleRequest>,
) -> ApiResult<Json<Member>> {
    let role = convert::role(&req.role)?;
    let actor = caller.role.unwrap_or(Role::Viewer);
    let member = members::set_role(&state.pool, caller.org(), user_id(&user)?, role, actor).await?;
    Ok(Json(convert::member(member)))
}

pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let actor = caller.role.unwrap_or(Role::Viewer);
    members::remove(&state.pool, caller.org(), user_id(&user)?, actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn invitations(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<List<Invitation>>> {
    let items = members::invitations(&state.pool, caller.org()).await?;
    Ok(Json(List {
        items: items.into_iter().map(convert::invitation).collect(),
    }))
}

/// `POST /v1/orgs/{org}/invitations`: the token is shown once; the invitee accepts with it.
pub async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateInvitationRequest>,
) -> ApiResult<(StatusCode, Json<CreatedInvitation>)> {
    let role = invitable_role(&caller, &req.role)?;
    let ttl = chrono::Duration::seconds(
        req.ttl_seconds
            .unwrap_or(7 * 24 * 3600)
            .clamp(60, 30 * 24 * 3600),
    );
    let (invitation, secret) = members::invite(
        &state.pool,
        caller.org(),
        &req.email,
        role,
        caller.ctx.principal.id,
        ttl,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvitation {
            invitation: convert::invitation(invitation),
            token: secret.text,
        }),
    ))
}

/// The role an invitation grants; only an owner may invite an owner.
fn invitable_role(caller: &Caller, name: &str) -> ApiResult<Role> {
    let role = convert::role(name)?;
    if role == Role::Owner && caller.role != Some(Role::Owner) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an owner can invite an owner",
        ));
    }
    Ok(role)
}

fn user_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "member_not_found",
            "member not found",
        )
    })
}
