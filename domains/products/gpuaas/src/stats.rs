//! Fleet counts for monitoring, computed at read time from the tables this crate owns.

use shared_kernel::DomainResult;
use sqlx::PgPool;

#[derive(Debug, Clone, Default)]
pub struct FleetStats {
    /// (state, count) for every instance state, zero counts included.
    pub instances_by_state: Vec<(&'static str, i64)>,
    /// (state, count) for every node state, zero counts included.
    pub nodes_by_state: Vec<(&'static str, i64)>,
    pub gpus_total: i64,
    pub gpus_allocated: i64,
    pub gpus_unhealthy: i64,
}

const INSTANCE_STATES: [&str; 6] = [
    "pending",
    "provisioning",
    "running",
    "terminating",
    "terminated",
    "failed",
];
const NODE_STATES: [&str; 6] = [
    "registering",
    "ready",
    "cordoned",
    "draining",
    "down",
    "decommissioned",
];

pub async fn fleet(pool: &PgPool) -> DomainResult<FleetStats> {
    let instances: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM gpuaas.instances GROUP BY state")
            .fetch_all(pool)
            .await?;
    let nodes: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM gpuaas.nodes GROUP BY state")
            .fetch_all(pool)
            .await?;
    let (gpus_total, gpus_unhealthy, gpus_allocated): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE health <> 'healthy'),
                (SELECT count(*) FROM gpuaas.allocations WHERE released_at IS NULL)
         FROM gpuaas.gpus",
    )
    .fetch_one(pool)
    .await?;
    let count = |rows: &[(String, i64)], state: &str| {
        rows.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n)
    };
    Ok(FleetStats {
        instances_by_state: INSTANCE_STATES
            .iter()
            .map(|s| (*s, count(&instances, s)))
            .collect(),
        nodes_by_state: NODE_STATES.iter().map(|s| (*s, count(&nodes, s))).collect(),
        gpus_total,
        gpus_allocated,
        gpus_unhealthy,
    })
}
