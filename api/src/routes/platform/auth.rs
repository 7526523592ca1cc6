//! `/v1/auth`: sign-up, login, token refresh and logout, accepting invitations; the JWKS; `/v1/me`.

use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::{ApiError, ApiResult};
use api_types::platform::{
    AcceptInvitationRequest, LoginRequest, Me, Membership, RefreshRequest, SignupRequest,
    SignupResponse, TokenResponse,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use platform_iam::{members, sessions, users};
use uuid::Uuid;

/// Access and refresh tokens for a session that just started or rotated.
fn tokens(state: &AppState, refreshed: sessions::Refreshed) -> TokenResponse {
    TokenResponse {
        access_token: state.keys.issue_access(refreshed.user, refreshed.session),
        refresh_token: refreshed.refresh_token.text,
        token_type: "Bearer".into(),
        expires_in: state.keys.access_ttl().as_secs(),
    }
}

async fn start_session(state: &AppState, user: Uuid) -> ApiResult<TokenResponse> {
    Ok(tokens(state, sessions::start(&state.pool, user).await?))
}

/// `POST /v1/auth/signup`: a user, an org they own, its default project; logged in.
pub async fn signup(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SignupRequest>,
) -> ApiResult<(StatusCode, Json<SignupResponse>)> {
    if !state.config.auth.open_signup {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "signup_closed",
            "sign-up is closed: ask an operator for an org, or an org admin for an invitation",
        ));
    }
    state.limits.check_login(&req.email, caller.ctx.source_ip)?;
    let (user, org, project) =
        users::signup(&state.pool, &req.email, &req.password, &req.org_name).await?;
    platform_audit::ensure_chains(&state.pool, Some(org.id)).await?;
    super::billing::open_account(&state, org.id).await?;
    let tokens = start_session(&state, user.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(SignupResponse {
            user: convert::user(user),
            org: convert::org(org),
            project: convert::project(project),
            tokens,
        }),
    ))
}

/// `POST /v1/auth/login`: throttled per account and per source address.
pub async fn login(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    state.limits.check_login(&req.email, caller.ctx.source_ip)?;
    let user = users::authenticate(&state.pool, &req.email, &req.password)
        .await
        .map_err(|_| invalid_credentials())?;
    Ok(Json(start_session(&state, user).await?))
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "email or password is wrong",
    )
}

/// `POST /v1/auth/refresh`: rotates the refresh token; a reused one ends the session.
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let refreshed = sessions::rotate(&state.pool, &req.refresh_token)
        .await
        .map_err(|_| invalid_refresh_token())?;
    Ok(Json(tokens(&state, refreshed)))
}

fn invalid_refresh_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
        "the refresh token is unknown, expired or revoked",
    )
}

/// `POST /v1/auth/logout`: ends the session of the refresh token.
pub async fn logout(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<StatusCode> {
    sessions::logout(&state.pool, &req.refresh_token)
        .await
        .map_err(|_| invalid_refresh_token())?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/accept-invitation`: joins the org (creating the account if needed); logged in.
pub async fn accept_invitation(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<AcceptInvitationRequest>,
) -> ApiResult<Json<TokenResponse>> {
    // It checks an existing account's password: throttled like a login (per invitation, per IP).
    state.limits.check_login(&req.token, caller.ctx.source_ip)?;
    let user = members::accept(&state.pool, &req.token, &req.password)
        .await
        .map_err(|e| match e.code() {
            "invalid_credentials" => invalid_credentials(),
            _ => e.into(),
        })?;
    Ok(Json(start_session(&state, user).await?))
}

/// `GET /.well-known/jwks.json`: the public keys that verify access tokens.
pub async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.keys.jwks())
}

/// `GET /v1/me`: who the credential is and where it may act.
pub async fn me(caller: Caller) -> Json<Me> {
    let a = caller.authority();
    let mut memberships: Vec<Membership> = a
        .org_roles
        .iter()
        .map(|(org, role)| Membership {
            org_id: *org,
            project_id: None,
            role: role.as_str().into(),
        })
        .collect();
    memberships.extend(a.project_roles.iter().map(|(p, org, role)| Membership {
        org_id: *org,
        project_id: Some(*p),
        role: role.as_str().into(),
    }));
    Json(Me {
        kind: serde_json::to_value(a.principal.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        id: a.principal.id,
        name: a.principal.name.clone(),
        platform_role: a.platform_role.map(|r| r.as_str().to_string()),
        auth_method: a.auth_method.as_str().into(),
        default_project_id: a.implicit_project().map(|(p, _)| p),
        memberships,
    })
}
