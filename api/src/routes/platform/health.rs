use crate::AppState;
use crate::problem::{ApiError, ApiResult};
use axum::extract::State;
use axum::http::StatusCode;

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers. Anyone may ask, so the answer names no detail of the
/// failure (the log has it).
pub async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    shared_kernel::db::ping(&state.pool).await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: the database does not answer");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "not ready: the database does not answer",
        )
    })?;
    Ok("ready")
}
