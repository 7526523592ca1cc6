//! `/v1/nodes/join-tokens` (operators): single-use, expiring tokens a new host joins with.

use crate::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::ApiResult;
use api_types::platform::{CreateJoinTokenRequest, JoinToken};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use platform_iam::nodes;

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateJoinTokenRequest>,
) -> ApiResult<(StatusCode, Json<JoinToken>)> {
    let ttl = req.ttl_seconds.unwrap_or(3600);
    let (token, secret) =
        nodes::create_join_token(&state.pool, caller.ctx.principal.id, ttl).await?;
    Ok((
        StatusCode::CREATED,
        Json(JoinToken {
            id: token.id,
            token: secret.text,
            expires_at: token.expires_at,
        }),
    ))
}
