//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the fleet, followed by this
//! process's own counters. Scrapers authenticate with the scrape token
//! (`GPUAAS_METRICS_TOKEN`, `Authorization: Bearer <token>`); without one configured the route
//! is off. The fleet gauges count from the database at most every
//! `GPUAAS_METRICS_REFRESH_SECONDS`, however often anyone scrapes.

use crate::AppState;
use crate::problem::{ApiError, ApiResult};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use product_gpuaas::stats::FleetStats;
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::time::{Duration, Instant};

pub async fn prometheus(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    check_scrape_token(state.config.auth.metrics_token.as_deref(), &headers)?;
    let every = Duration::from_secs(state.config.auth.metrics_refresh_seconds);
    let mut body = state.fleet_metrics.rendered(&state.pool, every).await?;
    if let Ok(process) = runtime::metrics::init(None) {
        body.push_str(&process.render());
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

/// The scraper's bearer token against the configured one (compared as digests, so the time
/// taken says nothing about the token).
fn check_scrape_token(configured: Option<&str>, headers: &HeaderMap) -> ApiResult<()> {
    let Some(configured) = configured else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "/metrics is off: set GPUAAS_METRICS_TOKEN to serve it to scrapers",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if Sha256::digest(presented.trim()) == Sha256::digest(configured) {
        Ok(())
    } else {
        Err(crate::auth::unauthorized())
    }
}

/// The fleet gauges as last rendered, and when: a scrape within the refresh period costs no
/// query, and concurrent scrapes share one refresh.
#[derive(Default)]
pub struct FleetCache {
    last: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl FleetCache {
    async fn rendered(&self, pool: &shared_kernel::db::Pool, every: Duration) -> ApiResult<String> {
        let mut last = self.last.lock().await;
        if let Some((at, body)) = last.as_ref()
            && at.elapsed() < every
        {
            return Ok(body.clone());
        }
        let body = render(&product_gpuaas::stats::fleet(pool).await?);
        *last = Some((Instant::now(), body.clone()));
        Ok(body)
    }
}

fn render(s: &FleetStats) -> String {
    let mut out = String::new();
    let by_state = [
        (
            "gpuaas_instances",
            "Instances by state.",
            &s.instances_by_state,
        ),
        ("gpuaas_nodes", "Nodes by state.", &s.nodes_by_state),
    ];
    for (name, help, rows) in by_state {
        gauge(&mut out, name, help);
        for (state, n) in rows.iter() {
            let _ = writeln!(out, "{name}{{state=\"{state}\"}} {n}");
        }
    }
    render_totals(s, &mut out);
    out
}

fn render_totals(s: &FleetStats, out: &mut String) {
    let totals = [
        ("gpuaas_gpus", "GPUs registered.", s.gpus_total),
        (
            "gpuaas_gpus_allocated",
            "GPUs in a live allocation.",
            s.gpus_allocated,
        ),
        (
            "gpuaas_gpus_unhealthy",
            "GPUs reported unhealthy.",
            s.gpus_unhealthy,
        ),
    ];
    for (name, help, n) in totals {
        gauge(out, name, help);
        let _ = writeln!(out, "{name} {n}");
    }
}

fn gauge(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}
