//! Prometheus text exposition (format 0.0.4) of the fleet gauges.

use gpuaas_domain::stats::FleetStats;
use std::fmt::Write;

pub fn render(s: &FleetStats) -> String {
    let mut out = String::new();
    let by_state = |rows: &[(&str, i64)]| -> Vec<(String, i64)> {
        rows.iter()
            .map(|(state, n)| (format!("{{state=\"{state}\"}}"), *n))
            .collect()
    };
    gauge(
        &mut out,
        "gpuaas_instances",
        "Instances by state.",
        by_state(&s.instances_by_state),
    );
    gauge(
        &mut out,
        "gpuaas_nodes",
        "Nodes by state.",
        by_state(&s.nodes_by_state),
    );
    gauge(
        &mut out,
        "gpuaas_gpus",
        "GPUs registered.",
        [(String::new(), s.gpus_total)],
    );
    gauge(
        &mut out,
        "gpuaas_gpus_allocated",
        "GPUs in a live allocation.",
        [(String::new(), s.gpus_allocated)],
    );
    gauge(
        &mut out,
        "gpuaas_gpus_unhealthy",
        "GPUs reported unhealthy.",
        [(String::new(), s.gpus_unhealthy)],
    );
    out
}

fn gauge(
    out: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, i64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}
