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
    let by_state = |rows: &[(&str, i64)]| -> Vec<(String, i64)> {
        rows.iter()
            .map(|(state, n)| (format!("{{state=\"{state}\"}}"), *n))
            .collect()
    };
    let unlabelled = |n: i64| vec![(String::new(), n)];
    let gauges = [
        (
            "gpuaas_instances",
            "Instances by state.",
            by_state(&s.instances_by_state),
        ),
        (
            "gpuaas_nodes",
            "Nodes by state.",
            by_state(&s.nodes_by_state),
        ),
        ("gpuaas_gpus", "GPUs registered.", unlabelled(s.gpus_total)),
        (
            "gpuaas_gpus_allocated",
            "GPUs in a live allocation.",
            unlabelled(s.gpus_allocated),
        ),
        (
            "gpuaas_gpus_unhealthy",
            "GPUs reported unhealthy.",
            unlabelled(s.gpus_unhealthy),
        ),
    ];
    let mut out = String::new();
    for (name, help, samples) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    }
    out
}
