//! `/v1/api-keys`: keys for the caller or the project's service accounts; shown once.

use super::convert;
use crate::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::{ApiError, ApiResult};
use api_types::List;
use api_types::platform::{ApiKey, CreateApiKeyRequest, CreatedApiKey};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform_iam::api_keys::{self, KeyOwner, NewApiKey};
use platform_iam::service_accounts;
use shared_kernel::PrincipalKind;

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<List<ApiKey>>> {
    let keys = api_keys::list(
        &state.pool,
        caller.org(),
        caller.project(),
        caller.ctx.principal.id,
    )
    .await?;
    Ok(Json(List {
        items: keys.into_iter().map(convert::api_key).collect(),
    }))
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let owner = key_owner(&state, &caller, req.service_account_id).await?;
    let bound = matches!(owner, KeyOwner::ServiceAccount(_))
        || req.bind_to_project.unwrap_or(false)
        || caller.authority().bound_project.is_some();
    let (scopes, expires_at) = limits(&req, caller.authority())?;
    let new = NewApiKey {
        name: &req.name,
        owner,
        org: caller.org(),
        project: bound.then(|| caller.project()),
        scopes,
        expires_at,
    };
    let (key, secret) = api_keys::create(&state.pool, &new).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            api_key: convert::api_key(key),
            key: secret.text,
        }),
    ))
}

/// The key's scopes and expiry (one minute to 400 days).
type KeyLimits = (
    Option<Vec<platform_iam::Permission>>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// A key made with a key never has more than it: its scopes stay within the caller's (and its
/// project binding, above, too).
fn limits(req: &CreateApiKeyRequest, caller: &platform_iam::Authority) -> ApiResult<KeyLimits> {
    let asked = req
        .scopes
        .as_deref()
        .map(api_keys::parse_scopes)
        .transpose()?;
    let scopes = match (asked, &caller.scopes) {
        (None, held) => held.clone(),
        (Some(asked), Some(held)) if !asked.iter().all(|s| held.contains(s)) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a key cannot grant a scope its creator's key lacks",
            ));
        }
        (Some(asked), _) => Some(asked),
    };
    let expires_at = req
        .expires_in_seconds
        .map(|s| chrono::Utc::now() + chrono::Duration::seconds(s.clamp(60, 400 * 24 * 3600)));
    Ok((scopes, expires_at))
}

/// A key for a service account of the project, or for the calling principal itself.
async fn key_owner(
    state: &AppState,
    caller: &Caller,
    account: Option<uuid::Uuid>,
) -> ApiResult<KeyOwner> {
    let me = &caller.ctx.principal;
    match (account, me.kind) {
        (Some(id), _) => {
            service_accounts::get(&state.pool, caller.project(), id).await?;
            Ok(KeyOwner::ServiceAccount(id))
        }
        (None, PrincipalKind::User) => Ok(KeyOwner::User(me.id)),
        (None, PrincipalKind::ServiceAccount) => Ok(KeyOwner::ServiceAccount(me.id)),
        (None, _) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key_owner",
            "name the service account the key is for",
        )),
    }
}

pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKey>> {
    let id = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "api_key_not_found",
            "API key not found",
        )
    })?;
    let key = api_keys::revoke(
        &state.pool,
        caller.org(),
        caller.project(),
        caller.ctx.principal.id,
        id,
    )
    .await?;
    Ok(Json(convert::api_key(key)))
}
