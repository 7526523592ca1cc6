//! The fleet's event log: operator actions (the audit trail), automatic transitions (node down,
//! GPU unhealthy, auto-cordon, recovery) and reconciler fixes. Written in the same transaction as
//! the change it describes, so there is never a change without its event or the other way round.

use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId};
use shared_kernel::DomainResult;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// A person or script through the API; the text names the caller.
    Operator(String),
    /// The node's `NodeLifecycle` workflow (liveness, GPU health, drain).
    NodeLifecycle,
    /// The periodic reconciler.
    Reconciler,
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Self::Operator(who) => format!("operator:{who}"),
            Self::NodeLifecycle => "node-lifecycle".into(),
            Self::Reconciler => "reconciler".into(),
        }
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub actor: &'a Actor,
    pub node: Option<NodeId>,
    pub instance: Option<InstanceId>,
    pub gpu_index: Option<i32>,
    pub message: String,
    /// A caller that may run twice passes a key, and the second run records nothing.
    pub dedupe_key: Option<String>,
}

impl<'a> NewEvent<'a> {
    pub fn node(kind: &'a str, actor: &'a Actor, node: NodeId, message: impl Into<String>) -> Self {
        Self {
            kind,
            actor,
            node: Some(node),
            instance: None,
            gpu_index: None,
            message: message.into(),
            dedupe_key: None,
        }
    }
}

/// Records an event on `conn` (pass the transaction of the change). Returns false when the
/// dedupe key was seen before.
pub async fn record(conn: &mut PgConnection, event: NewEvent<'_>) -> DomainResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO gpuaas.events (kind, actor, node_id, instance_id, gpu_index, message, dedupe_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(event.kind)
    .bind(event.actor.label())
    .bind(event.node.map(NodeId::uuid))
    .bind(event.instance.map(InstanceId::uuid))
    .bind(event.gpu_index)
    .bind(&event.message)
    .bind(&event.dedupe_key)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub kind: String,
    pub actor: String,
    pub node_id: Option<NodeId>,
    pub instance_id: Option<InstanceId>,
    pub gpu_index: Option<i32>,
    pub message: String,
}

type EventRow = (
    i64,
    chrono::DateTime<chrono::Utc>,
    String,
    String,
    Option<Uuid>,
    Option<Uuid>,
    Option<i32>,
    String,
);

/// A node's events, newest first.
pub async fn of_node(pool: &PgPool, node: NodeId, limit: i64) -> DomainResult<Vec<Event>> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT id, at, kind, actor, node_id, instance_id, gpu_index, message
         FROM gpuaas.events WHERE node_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(node.uuid())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, at, kind, actor, node_id, instance_id, gpu_index, message)| Event {
                id,
                at,
                kind,
                actor,
                node_id: node_id.map(NodeId::from),
                instance_id: instance_id.map(InstanceId::from),
                gpu_index,
                message,
            },
        )
        .collect())
}
