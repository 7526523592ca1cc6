use crate::problem::ApiResult;
use crate::{AppState, prometheus};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

/// Prometheus metrics of the fleet, computed from the database at scrape time.
pub async fn prometheus(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let stats = gpuaas_domain::stats::fleet(&state.pool).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus::render(&stats),
    ))
}
