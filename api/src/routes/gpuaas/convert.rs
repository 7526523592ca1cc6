//! gpuaas domain objects → wire types.

use api_types::gpuaas as wire;
use product_gpuaas as domain;
use workflows::gpuaas::instance_provision;

/// A SKU with what it could get now, and its price from billing's price book in effect (the SKU's
/// list price where the book has none): `(price per GPU-hour in minor units, version)`.
pub fn sku(
    s: domain::Sku,
    capacity: product_gpuaas::sku::Capacity,
    price: Option<(i64, i32)>,
) -> wire::Sku {
    wire::Sku {
        price_per_gpu_hour_minor: price.map_or(s.price_per_gpu_hour_minor, |(p, _)| p),
        price_version: price.map(|(_, v)| v),
        available_gpus: capacity.available_gpus,
        max_gpus_now: capacity.largest_free_block,
        id: s.id,
        gpu_model: s.gpu_model,
        display_name: s.display_name,
        memory_gib: s.memory_gib,
        form_factor: s.form_factor,
        allowed_gpu_counts: s.allowed_gpu_counts,
        currency: s.currency,
    }
}

pub fn node(n: domain::Node) -> wire::Node {
    wire::Node {
        id: n.id,
        name: n.name,
        state: n.state.as_str().to_string(),
        cordon_reason: n.cordon_reason,
        gpu_model: n.gpu_model,
        gpu_count: n.gpus.len(),
        free_gpus: n.free_gpus,
        discovery: n.discovery,
        agent_version: n.agent_version,
        registered_at: n.registered_at,
        last_seen_at: n.last_seen_at,
        down_since: n.down_since,
        drain_deadline: n.drain_deadline,
        gpus: n.gpus.into_iter().map(gpu).collect(),
    }
}

pub fn node_summary(s: domain::node::NodeSummary) -> wire::NodeSummary {
    let n = s.node;
    wire::NodeSummary {
        id: n.id,
        name: n.name,
        state: n.state.as_str().to_string(),
        cordon_reason: n.cordon_reason,
        gpu_model: n.gpu_model,
        gpu_count: s.gpu_count.max(0) as usize,
        free_gpus: n.free_gpus,
        unhealthy_gpus: s.unhealthy_gpus.max(0) as usize,
        discovery: n.discovery,
        agent_version: n.agent_version,
        registered_at: n.registered_at,
        last_seen_at: n.last_seen_at,
        down_since: n.down_since,
        drain_deadline: n.drain_deadline,
    }
}

fn gpu(g: domain::NodeGpu) -> wire::Gpu {
    wire::Gpu {
        index: g.index,
        uuid: g.uuid,
        model: g.model,
        memory_mib: g.memory_mib,
        health: match g.health {
            domain::GpuHealth::Healthy => "healthy".into(),
            domain::GpuHealth::Unhealthy => "unhealthy".into(),
        },
        health_reason: g.health_reason,
        allocated: g.allocated,
    }
}

pub fn instance(i: domain::Instance) -> wire::Instance {
    wire::Instance {
        workflow_id: instance_provision::workflow_id(i.id),
        id: i.id,
        project_id: i.project_id,
        name: i.name,
        sku: i.sku_id,
        gpu_count: i.gpu_count,
        command: i.command,
        capacity_timeout_seconds: i.capacity_timeout_s,
        state: i.state.as_str().to_string(),
        failure_reason: i.failure_reason.map(|r| r.as_str().to_string()),
        status_message: i.status_message,
        node_id: i.node_id,
        gpu_indices: i.gpu_indices,
        current_step: i.current_step,
        created_at: i.created_at,
        updated_at: i.updated_at,
        running_at: i.running_at,
        ended_at: i.ended_at,
        cost_so_far_minor: None,
        cost_exact_minor: None,
    }
}

/// An instance with what it has cost so far (exact minor units), when it ran.
pub fn instance_with_cost(
    i: domain::Instance,
    cost: Option<platform_billing::Decimal>,
) -> wire::Instance {
    wire::Instance {
        cost_so_far_minor: cost.map(crate::routes::platform::billing::round_minor),
        cost_exact_minor: cost.map(|c| c.normalize().to_string()),
        ..instance(i)
    }
}

pub fn registration(r: wire::RegisterNodeRequest) -> domain::NodeRegistration {
    domain::NodeRegistration {
        name: r.name,
        agent_version: r.agent_version,
        discovery: r.discovery,
        gpus: r
            .gpus
            .into_iter()
            .map(|g| domain::GpuSpec {
                index: g.index,
                uuid: g.uuid,
                model: g.model,
                memory_mib: g.memory_mib,
                health: if g.healthy {
                    domain::GpuHealth::Healthy
                } else {
                    domain::GpuHealth::Unhealthy
                },
            })
            .collect(),
    }
}

pub fn event(e: domain::events::Event) -> wire::NodeEvent {
    wire::NodeEvent {
        id: e.id,
        at: e.at,
        kind: e.kind,
        actor: e.actor,
        instance_id: e.instance_id,
        gpu_index: e.gpu_index,
        message: e.message,
    }
}
