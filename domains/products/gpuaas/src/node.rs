//! GPU hosts and their GPUs. An agent registers with its name and discovered GPUs and gets a
//! stable node id back; registering again (after an agent restart) returns the same id.

use serde::{Deserialize, Serialize};
use shared_ids::{GpuId, NodeId};
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use std::collections::HashSet;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Registering,
    Ready,
    Cordoned,
    Draining,
    Down,
    Decommissioned,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registering => "registering",
            Self::Ready => "ready",
            Self::Cordoned => "cordoned",
            Self::Draining => "draining",
            Self::Down => "down",
            Self::Decommissioned => "decommissioned",
        }
    }
    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "registering" => Self::Registering,
            "ready" => Self::Ready,
            "cordoned" => Self::Cordoned,
            "draining" => Self::Draining,
            "decommissioned" => Self::Decommissioned,
            _ => Self::Down,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuHealth {
    Healthy,
    Unhealthy,
}

/// A GPU as an agent discovered it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GpuSpec {
    pub index: i32,
    pub uuid: String,
    pub model: String,
    pub memory_mib: i64,
    pub health: GpuHealth,
}

#[derive(Debug, Clone)]
pub struct NodeRegistration {
    pub name: String,
    pub agent_version: String,
    pub discovery: String,
    pub gpus: Vec<GpuSpec>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeGpu {
    pub id: GpuId,
    pub index: i32,
    pub uuid: String,
    pub model: String,
    pub memory_mib: i64,
    pub health: GpuHealth,
    /// Why an unhealthy GPU is out of service.
    pub health_reason: Option<String>,
    pub allocated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub state: NodeState,
    pub gpu_model: Option<String>,
    pub free_gpus: i32,
    pub agent_version: Option<String>,
    pub discovery: Option<String>,
    pub registered_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Why a cordoned node is cordoned: `operator`, `gpu_unhealthy` or `drained`.
    pub cordon_reason: Option<String>,
    /// When the agent last answered its lifecycle workflow.
    pub last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
    pub down_since: Option<chrono::DateTime<chrono::Utc>>,
    pub drain_deadline: Option<chrono::DateTime<chrono::Utc>>,
    pub gpus: Vec<NodeGpu>,
}

impl NodeRegistration {
    pub fn validate(&self) -> DomainResult<()> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !name_ok {
            return Err(DomainError::invalid(
                "invalid_node_name",
                "node name must be 1-63 characters of letters, digits, '-' or '.'",
            ));
        }
        let mut indices = HashSet::new();
        for gpu in &self.gpus {
            if !indices.insert(gpu.index) || gpu.index < 0 {
                return Err(DomainError::invalid(
                    "invalid_gpus",
                    format!("duplicate or negative GPU index {}", gpu.index),
                ));
            }
        }
        if let Some(first) = self.gpus.first()
            && self.gpus.iter().any(|g| g.model != first.model)
        {
            return Err(DomainError::invalid(
                "invalid_gpus",
                "a node's GPUs must all be the same model",
            ));
        }
        Ok(())
    }
}

/// Registers (or re-registers) a node and its GPUs; returns its id. Idempotent by node name.
/// The id of the node named `name`, if one registered under that name.
pub async fn id_by_name(pool: &PgPool, name: &str) -> DomainResult<Option<NodeId>> {
    let id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM gpuaas.nodes WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(id.map(NodeId::from))
}

/// Registers (or re-registers) node `id` under `reg.name`. The id comes from the node's
/// credential, so a name already held by another node is refused: a host cannot take over
/// another's identity by claiming its name.
pub async fn register(pool: &PgPool, id: NodeId, reg: &NodeRegistration) -> DomainResult<NodeId> {
    reg.validate()?;
    let mut tx = pool.begin().await?;
    let gpu_model = reg.gpus.first().map(|g| g.model.clone());
    let registered: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO gpuaas.nodes (id, name, state, gpu_model, agent_version, discovery)
         VALUES ($1, $2, 'registering', $3, $4, $5)
         ON CONFLICT (name) DO UPDATE
            -- A report without GPUs keeps the model: the GPUs it lost leave placement below.
            SET gpu_model = coalesce(EXCLUDED.gpu_model, gpuaas.nodes.gpu_model),
                agent_version = EXCLUDED.agent_version,
                discovery = EXCLUDED.discovery, updated_at = now()
            WHERE gpuaas.nodes.id = EXCLUDED.id
         RETURNING id",
    )
    .bind(id.uuid())
    .bind(&reg.name)
    .bind(&gpu_model)
    .bind(&reg.agent_version)
    .bind(&reg.discovery)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| match &e {
        // The node's id exists under another name: a node keeps the name it joined with.
        sqlx::Error::Database(db) if db.is_unique_violation() => DomainError::conflict(
            "node_name_taken",
            format!(
                "this node is registered under another name than {}",
                reg.name
            ),
        ),
        _ => e.into(),
    })?;
    let Some((id,)) = registered else {
        return Err(DomainError::conflict(
            "node_name_taken",
            format!("another node is registered as {}", reg.name),
        ));
    };
    let id = NodeId::from(id);
    // Serialise against placement on this node while its GPUs and counter are rewritten.
    let (state,): (String,) =
        sqlx::query_as("SELECT state FROM gpuaas.nodes WHERE id = $1 FOR UPDATE")
            .bind(id.uuid())
            .fetch_one(&mut *tx)
            .await?;
    if state == "decommissioned" {
        return Err(DomainError::conflict(
            "node_decommissioned",
            format!(
                "node {} was decommissioned; register the host under a new name",
                reg.name
            ),
        ));
    }
    for gpu in &reg.gpus {
        let moved: Option<(Uuid,)> = sqlx::query_as(
            "INSERT INTO gpuaas.gpus (id, node_id, idx, uuid, model, memory_mib, health)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (uuid) DO UPDATE
                SET idx = EXCLUDED.idx, model = EXCLUDED.model, memory_mib = EXCLUDED.memory_mib,
                    node_id = EXCLUDED.node_id
                -- A GPU moves only from a decommissioned node (whose allocations were released).
                WHERE gpuaas.gpus.node_id = EXCLUDED.node_id
                   OR gpuaas.gpus.node_id IN (SELECT id FROM gpuaas.nodes WHERE state = 'decommissioned')
             RETURNING node_id",
        )
        .bind(GpuId::new().uuid())
        .bind(id.uuid())
        .bind(gpu.index)
        .bind(&gpu.uuid)
        .bind(&gpu.model)
        .bind(gpu.memory_mib)
        .bind(health_str(gpu.health))
        .fetch_optional(&mut *tx)
        .await?;
        if moved.is_none() {
            return Err(DomainError::conflict(
                "gpu_registered_elsewhere",
                format!("GPU {} is already registered on another node", gpu.uuid),
            ));
        }
    }
    // GPUs this node no longer reports leave placement: unhealthy, until a session reports them
    // again and they pass the recovery period. Their allocations (if any) stay until the
    // instance ends: only the node's lifecycle releases GPUs.
    let reported: Vec<String> = reg.gpus.iter().map(|g| g.uuid.clone()).collect();
    sqlx::query(
        "UPDATE gpuaas.gpus SET health = 'unhealthy',
             health_reason = 'missing from the host''s registration', healthy_since = NULL
         WHERE node_id = $1 AND uuid <> ALL($2) AND health_reason IS DISTINCT FROM
             'missing from the host''s registration'",
    )
    .bind(id.uuid())
    .bind(&reported)
    .execute(&mut *tx)
    .await?;
    // GPUs taken over from a decommissioned node leave its counter.
    sqlx::query(
        "UPDATE gpuaas.nodes n SET free_gpus = (
             SELECT count(*) FROM gpuaas.gpus g WHERE g.node_id = n.id AND g.health = 'healthy'
               AND NOT EXISTS (SELECT 1 FROM gpuaas.allocations a
                               WHERE a.gpu_id = g.id AND a.released_at IS NULL))
         WHERE n.state = 'decommissioned'",
    )
    .execute(&mut *tx)
    .await?;
    // Registration completes in one transaction: `registering` is never observed half-done. A
    // re-registering agent changes neither the node's state nor its GPUs' health: a down node
    // comes back through its lifecycle workflow once fenced, and a bad GPU through recovery.
    sqlx::query(
        "UPDATE gpuaas.nodes n SET
            state = CASE WHEN n.state = 'registering' THEN 'ready' ELSE n.state END,
            free_gpus = (SELECT count(*) FROM gpuaas.gpus g WHERE g.node_id = n.id AND g.health = 'healthy'
                           AND NOT EXISTS (SELECT 1 FROM gpuaas.allocations a
                                           WHERE a.gpu_id = g.id AND a.released_at IS NULL)),
            updated_at = now()
         WHERE n.id = $1",
    )
    .bind(id.uuid())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

fn health_str(h: GpuHealth) -> &'static str {
    match h {
        GpuHealth::Healthy => "healthy",
        GpuHealth::Unhealthy => "unhealthy",
    }
}

type Timestamp = chrono::DateTime<chrono::Utc>;

#[derive(sqlx::FromRow)]
struct NodeRow {
    id: Uuid,
    name: String,
    state: String,
    gpu_model: Option<String>,
    free_gpus: i32,
    agent_version: Option<String>,
    discovery: Option<String>,
    registered_at: Timestamp,
    updated_at: Timestamp,
    cordon_reason: Option<String>,
    last_seen_at: Option<Timestamp>,
    down_since: Option<Timestamp>,
    drain_deadline: Option<Timestamp>,
}

const NODE_COLUMNS: &str = "id, name, state, gpu_model, free_gpus, agent_version, discovery, \
    registered_at, updated_at, cordon_reason, last_seen_at, down_since, drain_deadline";

pub async fn list(pool: &PgPool) -> DomainResult<Vec<Node>> {
    let rows: Vec<NodeRow> = sqlx::query_as(&format!(
        "SELECT {NODE_COLUMNS} FROM gpuaas.nodes ORDER BY name"
    ))
    .fetch_all(pool)
    .await?;
    // One query for every node's GPUs, not one per node.
    let mut gpus = gpus_where(pool, "TRUE", None).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let of_node = gpus.remove(&NodeId::from(row.id)).unwrap_or_default();
            node_from(row, of_node)
        })
        .collect())
}

/// A node as a list shows it: without its GPUs (`gpus` is empty), with their counts.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    pub node: Node,
    pub gpu_count: i64,
    pub unhealthy_gpus: i64,
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    node: NodeRow,
    gpu_count: i64,
    unhealthy_gpus: i64,
}

/// Up to `limit` nodes by name, after the node named `after`: one page of the fleet, each node's
/// GPUs counted, not listed.
pub async fn page(
    pool: &PgPool,
    limit: i64,
    after: Option<&str>,
) -> DomainResult<Vec<NodeSummary>> {
    let rows: Vec<SummaryRow> = sqlx::query_as(&format!(
        "SELECT {NODE_COLUMNS},
                (SELECT count(*) FROM gpuaas.gpus g WHERE g.node_id = n.id) AS gpu_count,
                (SELECT count(*) FROM gpuaas.gpus g
                  WHERE g.node_id = n.id AND g.health <> 'healthy') AS unhealthy_gpus
         FROM gpuaas.nodes n WHERE ($1::text IS NULL OR n.name > $1) ORDER BY n.name LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| NodeSummary {
            node: node_from(r.node, Vec::new()),
            gpu_count: r.gpu_count,
            unhealthy_gpus: r.unhealthy_gpus,
        })
        .collect())
}

/// Nodes that must have a running lifecycle workflow: every node but those registering or
/// decommissioned.
pub async fn watched(pool: &PgPool) -> DomainResult<Vec<(NodeId, String)>> {
    ids_and_names(
        pool,
        "SELECT id, name FROM gpuaas.nodes WHERE state NOT IN ('registering', 'decommissioned') ORDER BY name",
    )
    .await
}

/// Nodes whose agent should be answering (`ready`, `cordoned`, `draining`), by id and name:
/// what the reconciler reads.
pub async fn answering(pool: &PgPool) -> DomainResult<Vec<(NodeId, String)>> {
    ids_and_names(
        pool,
        "SELECT id, name FROM gpuaas.nodes WHERE state IN ('ready', 'cordoned', 'draining') ORDER BY name",
    )
    .await
}

async fn ids_and_names(pool: &PgPool, query: &'static str) -> DomainResult<Vec<(NodeId, String)>> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(query).fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(id, name)| (id.into(), name))
        .collect())
}

pub async fn get(pool: &PgPool, id: NodeId) -> DomainResult<Node> {
    let row: NodeRow = sqlx::query_as(&format!(
        "SELECT {NODE_COLUMNS} FROM gpuaas.nodes WHERE id = $1"
    ))
    .bind(id.uuid())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| DomainError::not_found("node_not_found", format!("node {id} not found")))?;
    let gpus = gpus_of(pool, id).await?;
    Ok(node_from(row, gpus))
}

async fn gpus_of(pool: &PgPool, node: NodeId) -> DomainResult<Vec<NodeGpu>> {
    Ok(gpus_where(pool, "g.node_id = $1", Some(node))
        .await?
        .remove(&node)
        .unwrap_or_default())
}

/// GPUs matching `filter` (`$1` is `node`), grouped by node, in index order.
async fn gpus_where(
    pool: &PgPool,
    filter: &str,
    node: Option<NodeId>,
) -> DomainResult<std::collections::HashMap<NodeId, Vec<NodeGpu>>> {
    type Row = (
        Uuid,
        Uuid,
        i32,
        String,
        String,
        i64,
        String,
        Option<String>,
        bool,
    );
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT g.node_id, g.id, g.idx, g.uuid, g.model, g.memory_mib, g.health, g.health_reason,
                EXISTS (SELECT 1 FROM gpuaas.allocations a WHERE a.gpu_id = g.id AND a.released_at IS NULL)
         FROM gpuaas.gpus g WHERE {filter} ORDER BY g.node_id, g.idx"
    ))
    .bind(node.map(NodeId::uuid))
    .fetch_all(pool)
    .await?;
    let mut by_node: std::collections::HashMap<NodeId, Vec<NodeGpu>> = Default::default();
    for (node_id, id, index, uuid, model, memory_mib, health, health_reason, allocated) in rows {
        by_node.entry(node_id.into()).or_default().push(NodeGpu {
            id: id.into(),
            index,
            uuid,
            model,
            memory_mib,
            health: if health == "healthy" {
                GpuHealth::Healthy
            } else {
                GpuHealth::Unhealthy
            },
            health_reason,
            allocated,
        });
    }
    Ok(by_node)
}

fn node_from(r: NodeRow, gpus: Vec<NodeGpu>) -> Node {
    Node {
        id: r.id.into(),
        name: r.name,
        state: NodeState::parse(&r.state),
        gpu_model: r.gpu_model,
        free_gpus: r.free_gpus,
        agent_version: r.agent_version,
        discovery: r.discovery,
        registered_at: r.registered_at,
        updated_at: r.updated_at,
        cordon_reason: r.cordon_reason,
        last_seen_at: r.last_seen_at,
        down_since: r.down_since,
        drain_deadline: r.drain_deadline,
        gpus,
    }
}
