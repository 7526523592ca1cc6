use crate::AppState;
use crate::problem::{ApiError, ApiResult};
use axum::extract::State;
use axum::http::StatusCode;

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
pub async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    shared_kernel::db::ping(&state.pool).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("database: {e}"),
        )
    })?;
    Ok("ready")
}
