//! Extractors: JSON bodies whose rejections are problem+json, and bearer-token authentication.

use crate::AppState;
use crate::problem::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection};
use axum::http::{StatusCode, header, request::Parts};
use sha2::{Digest, Sha256};
use shared_ids::ProjectId;

/// `Json<T>`, but a malformed or mistyped body is a problem+json 400/422, never a plain-text error.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::JsonSyntaxError(e)) => {
                Err(ApiError::bad_request("malformed_json", e.body_text()))
            }
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                e.body_text(),
            )),
            Err(JsonRejection::MissingJsonContentType(e)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.body_text(),
            )),
            Err(e) => Err(ApiError::bad_request("malformed_body", e.body_text())),
        }
    }
}

/// The authenticated caller. Until IAM lands there is one dev token, acting in the default project.
pub struct Caller {
    pub project: ProjectId,
    /// Who acts, for the audit trail: the dev token, plus the name the client gives in
    /// `x-gpuaas-operator` (the CLI sends `$USER`) until IAM issues real identities.
    pub operator: String,
}

impl Caller {
    pub fn actor(&self) -> product_gpuaas::events::Actor {
        product_gpuaas::events::Actor::Operator(self.operator.clone())
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if token_matches(parts, &state.config.api_token) {
            let named = parts
                .headers
                .get("x-gpuaas-operator")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim())
                .filter(|v| !v.is_empty() && v.len() <= 64);
            Ok(Self {
                project: platform_iam::DEFAULT_PROJECT,
                operator: match named {
                    Some(name) => format!("{name} (dev token)"),
                    None => "dev token".to_string(),
                },
            })
        } else {
            Err(unauthorized())
        }
    }
}

/// A node agent presenting the fleet's join token.
pub struct JoiningNode;

impl FromRequestParts<AppState> for JoiningNode {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if token_matches(parts, &state.config.join_token) {
            Ok(Self)
        } else {
            Err(unauthorized())
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid bearer token",
    )
}

/// Compares hashes, so the comparison time does not depend on how much of the token matched.
fn token_matches(parts: &Parts, expected: &str) -> bool {
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    !expected.is_empty()
        && Sha256::digest(presented.as_bytes()) == Sha256::digest(expected.as_bytes())
}

/// `Query<T>`, but a malformed query string is a problem+json 400.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// The optional `Idempotency-Key` header. Keys are 1-255 printable ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        match value.to_str() {
            Ok(key)
                if !key.is_empty()
                    && key.len() <= 255
                    && key.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok(Self(Some(key.to_string())))
            }
            _ => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-255 printable ASCII characters",
            )),
        }
    }
}
