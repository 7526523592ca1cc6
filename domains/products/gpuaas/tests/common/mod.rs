//! What the domain's Postgres tests share.

use product_gpuaas::{GpuHealth, GpuSpec, NodeRegistration, node};
use shared_ids::NodeId;
use sqlx::PgPool;

/// Registers a node with `gpus` healthy simulated GPUs of `model`.
pub async fn add_node(pool: &PgPool, name: &str, gpus: i32, model: &str) -> NodeId {
    let reg = NodeRegistration {
        name: name.into(),
        agent_version: "test".into(),
        discovery: "simulated".into(),
        gpus: (0..gpus)
            .map(|i| GpuSpec {
                index: i,
                uuid: format!("GPU-{name}-{i}"),
                model: model.into(),
                memory_mib: 81920,
                health: GpuHealth::Healthy,
            })
            .collect(),
    };
    node::register(pool, NodeId::new(), &reg).await.unwrap()
}
