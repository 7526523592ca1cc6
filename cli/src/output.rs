//! Tables for people, JSON for scripts.

use api_types::gpuaas::{Instance, Node, NodeEvent, Sku};
use serde::Serialize;

#[derive(Clone, Copy)]
pub enum Format {
    Table,
    Json,
}

fn json<T: Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("API types serialise")
    );
}

/// Prints rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

pub fn print_skus(format: Format, skus: &[Sku]) {
    if let Format::Json = format {
        return json(skus);
    }
    table(
        &[
            "SKU",
            "GPU",
            "MEMORY",
            "FORM",
            "GPUS/INSTANCE",
            "PRICE/GPU-HOUR",
        ],
        skus.iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.display_name.clone(),
                    format!("{} GiB", s.memory_gib),
                    s.form_factor.clone(),
                    s.allowed_gpu_counts
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    format!(
                        "{}.{:02} {}",
                        s.price_per_gpu_hour_minor / 100,
                        s.price_per_gpu_hour_minor % 100,
                        s.currency
                    ),
                ]
            })
            .collect(),
    );
}

pub fn print_nodes(format: Format, nodes: &[Node]) {
    if let Format::Json = format {
        return json(nodes);
    }
    table(
        &["ID", "NAME", "STATE", "GPU", "FREE/TOTAL", "DISCOVERY"],
        nodes
            .iter()
            .map(|n| {
                let unhealthy = n.gpus.iter().filter(|g| g.health != "healthy").count();
                let mut state = match &n.cordon_reason {
                    Some(why) if n.state == "cordoned" => format!("cordoned ({why})"),
                    _ => n.state.clone(),
                };
                if unhealthy > 0 {
                    state.push_str(&format!(", {unhealthy} GPU(s) unhealthy"));
                }
                vec![
                    n.id.to_string(),
                    n.name.clone(),
                    state,
                    n.gpu_model.clone().unwrap_or_default(),
                    format!("{}/{}", n.free_gpus, n.gpu_count),
                    n.discovery.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
}

pub fn print_node_events(format: Format, events: &[NodeEvent]) {
    if let Format::Json = format {
        return json(events);
    }
    table(
        &["AT", "KIND", "ACTOR", "MESSAGE"],
        events
            .iter()
            .map(|e| {
                vec![
                    e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    e.kind.clone(),
                    e.actor.clone(),
                    e.message.clone(),
                ]
            })
            .collect(),
    );
}

pub fn print_instances(format: Format, instances: &[Instance]) {
    if let Format::Json = format {
        return json(instances);
    }
    table(
        &[
            "ID", "NAME", "SKU", "GPUS", "STATE", "STEP", "NODE", "CREATED",
        ],
        instances
            .iter()
            .map(|i| {
                vec![
                    i.id.to_string(),
                    i.name.clone(),
                    i.sku.clone(),
                    i.gpu_count.to_string(),
                    match &i.failure_reason {
                        Some(r) => format!("{} ({r})", i.state),
                        None => i.state.clone(),
                    },
                    i.current_step.clone(),
                    i.node_id
                        .map(|n| n.to_string()[..8].to_string())
                        .unwrap_or_else(|| "-".into()),
                    i.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]
            })
            .collect(),
    );
}

pub fn print_instance(format: Format, i: &Instance) {
    if let Format::Json = format {
        return json(i);
    }
    let fields = [
        ("id", i.id.to_string()),
        ("name", i.name.clone()),
        ("state", i.state.clone()),
        (
            "failure_reason",
            i.failure_reason.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "status",
            i.status_message.clone().unwrap_or_else(|| "-".into()),
        ),
        ("step", i.current_step.clone()),
        ("sku", format!("{} x{}", i.sku, i.gpu_count)),
        (
            "node",
            i.node_id
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("gpus", format!("{:?}", i.gpu_indices)),
        ("command", i.command.clone()),
        ("workflow", i.workflow_id.clone()),
        ("created", i.created_at.to_rfc3339()),
    ];
    for (k, v) in fields {
        println!("{k:<15} {v}");
    }
}
