use crate::problem::ApiResult;
use crate::{AppState, prometheus};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

/// Prometheus metrics of the fleet, computed from the database at scrape time, followed by this
/// process's own counters.
pub async fn prometheus(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let stats = gpuaas_domain::stats::fleet(&state.pool).await?;
    let mut body = prometheus::render(&stats);
    if let Ok(process) = gpuaas_activities::service::init_metrics(None) {
        body.push_str(&process.render());
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}
