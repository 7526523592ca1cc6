//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the fleet, computed from the
//! database at scrape time, followed by this process's own counters.

use crate::AppState;
use crate::problem::ApiResult;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use product_gpuaas::stats::FleetStats;
use std::fmt::Write;

pub async fn prometheus(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let stats = product_gpuaas::stats::fleet(&state.pool).await?;
    let mut body = render(&stats);
    if let Ok(process) = runtime::metrics::init(None) {
        body.push_str(&process.render());
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
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
