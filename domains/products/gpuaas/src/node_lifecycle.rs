//! Node state transitions: operator actions (cordon, uncordon, drain) and the automatic ones the
//! node's lifecycle workflow drives (down, back up, GPU health, auto-cordon and recovery).
//!
//! ```text
//! registering → ready ⇄ cordoned → draining → cordoned
//!                 └────────┴──────────┴──→ down → (back to where it was, once fenced)
//! ```
//!
//! Every transition is a compare-and-set in one transaction with its event, so a retried
//! activity changes nothing and records nothing the second time.

use crate::events::{self, Actor, NewEvent};
use crate::node::{self, Node, NodeState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId, ProjectId};
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// Takes a ready node out of placement. Idempotent; running instances are left alone.
pub async fn cordon(pool: &PgPool, id: NodeId, actor: &Actor) -> DomainResult<Node> {
    operator_transition(
        pool,
        id,
        actor,
        &["ready"],
        "cordoned",
        Some("operator"),
        "node.cordoned",
    )
    .await
}

/// Puts a cordoned node back into placement (whatever cordoned it: the operator decides), or
/// cancels a drain: instances still on a draining node keep running.
pub async fn uncordon(pool: &PgPool, id: NodeId, actor: &Actor) -> DomainResult<Node> {
    operator_transition(
        pool,
        id,
        actor,
        &["cordoned", "draining"],
        "ready",
        None,
        "node.uncordoned",
    )
    .await
}

async fn operator_transition(
    pool: &PgPool,
    id: NodeId,
    actor: &Actor,
    from: &[&str],
    to: &str,
    cordon_reason: Option<&str>,
    kind: &str,
) -> DomainResult<Node> {
    let mut tx = pool.begin().await?;
    let changed: Option<(String,)> = sqlx::query_as(
        "UPDATE gpuaas.nodes SET state = $3, cordon_reason = $4, drain_deadline = NULL, updated_at = now()
         WHERE id = $1 AND state = ANY($2) RETURNING name",
    )
    .bind(id.uuid())
    .bind(from)
    .bind(to)
    .bind(cordon_reason)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((name,)) = changed {
        let message = format!("node {name}: {} → {to}", from.join("|"));
        events::record(&mut tx, NewEvent::node(kind, actor, id, message)).await?;
    }
    tx.commit().await?;
    let node = node::get(pool, id).await?;
    if node.state.as_str() != to {
        return Err(DomainError::conflict(
            "node_state_conflict",
            format!(
                "node {} is {}; only a {} node can become {to}",
                node.name,
                node.state.as_str(),
                from.join(" or ")
            ),
        ));
    }
    Ok(node)
}

/// Starts draining: no new placements; the lifecycle workflow waits for the node's instances to
/// end, terminates the rest at the deadline, then leaves the node `cordoned`. Idempotent.
pub async fn begin_drain(
    pool: &PgPool,
    id: NodeId,
    deadline: Duration,
    actor: &Actor,
) -> DomainResult<Node> {
    let mut tx = pool.begin().await?;
    let changed: Option<(String,)> = sqlx::query_as(
        "UPDATE gpuaas.nodes SET state = 'draining', cordon_reason = NULL, updated_at = now(),
                drain_deadline = now() + make_interval(secs => $2)
         WHERE id = $1 AND state IN ('ready', 'cordoned') RETURNING name",
    )
    .bind(id.uuid())
    .bind(deadline.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((name,)) = changed {
        let message = format!(
            "node {name}: draining; instances still running after {}s are terminated",
            deadline.as_secs()
        );
        events::record(
            &mut tx,
            NewEvent::node("node.drain_started", actor, id, message),
        )
        .await?;
    }
    tx.commit().await?;
    let node = node::get(pool, id).await?;
    if node.state != NodeState::Draining {
        return Err(DomainError::conflict(
            "node_state_conflict",
            format!(
                "node {} is {}; only a ready or cordoned node can be drained",
                node.name,
                node.state.as_str()
            ),
        ));
    }
    Ok(node)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainProgress {
    /// Whether the node is (still) draining; false once the drain finished or was overtaken.
    pub draining: bool,
    /// Instances on the node that have not ended yet.
    pub live_instances: Vec<InstanceId>,
    /// Seconds until the deadline (0 when it passed).
    pub seconds_left: u64,
}

pub async fn drain_progress(pool: &PgPool, id: NodeId) -> DomainResult<DrainProgress> {
    let (state, down_from, seconds_left): (String, Option<String>, f64) = sqlx::query_as(
        "SELECT state, down_from,
                greatest(0, extract(epoch FROM coalesce(drain_deadline, now()) - now()))::float8
         FROM gpuaas.nodes WHERE id = $1",
    )
    .bind(id.uuid())
    .fetch_one(pool)
    .await?;
    let live_instances: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM gpuaas.instances
         WHERE node_id = $1 AND state IN ('pending', 'provisioning', 'running', 'terminating') ORDER BY id",
    )
    .bind(id.uuid())
    .fetch_all(pool)
    .await?;
    Ok(DrainProgress {
        draining: state == "draining" || down_from.as_deref() == Some("draining"),
        live_instances: live_instances.into_iter().map(InstanceId::from).collect(),
        seconds_left: seconds_left.ceil() as u64,
    })
}

/// An instance a drain terminated whose termination must be started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainTermination {
    pub instance_id: InstanceId,
    pub project_id: ProjectId,
}

/// The drain deadline passed: starts terminating what is still on the node. Returns every
/// instance there that is terminating after having run: each needs its termination started
/// (starting one that exists is harmless); provisioning ones unwind themselves once they see
/// `terminating`. Idempotent: a retry returns the same list.
pub async fn terminate_for_drain(pool: &PgPool, id: NodeId) -> DomainResult<Vec<DrainTermination>> {
    let mut tx = pool.begin().await?;
    let moved: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE gpuaas.instances SET state = 'terminating', current_step = 'terminating',
                status_message = 'terminated by the drain of its node', updated_at = now()
         WHERE node_id = $1 AND state IN ('pending', 'provisioning', 'running') RETURNING id",
    )
    .bind(id.uuid())
    .fetch_all(&mut *tx)
    .await?;
    for instance in &moved {
        let mut event = NewEvent::node(
            "instance.terminated_by_drain",
            &Actor::NodeLifecycle,
            id,
            "drain deadline passed; instance terminated",
        );
        event.instance = Some(InstanceId::from(*instance));
        events::record(&mut tx, event).await?;
    }
    let to_terminate: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT id, project_id FROM gpuaas.instances
         WHERE node_id = $1 AND state = 'terminating' AND running_at IS NOT NULL ORDER BY id",
    )
    .bind(id.uuid())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(to_terminate
        .into_iter()
        .map(|(instance, project)| DrainTermination {
            instance_id: instance.into(),
            project_id: project.into(),
        })
        .collect())
}

/// Ends a drain: the node becomes `cordoned` (reason `drained`), also when it is down meanwhile
/// (it then returns to `cordoned`). Returns whether this call finished it.
pub async fn finish_drain(pool: &PgPool, id: NodeId) -> DomainResult<bool> {
    let mut tx = pool.begin().await?;
    let changed: Option<(String,)> = sqlx::query_as(
        "UPDATE gpuaas.nodes SET
             state = CASE WHEN state = 'draining' THEN 'cordoned' ELSE state END,
             down_from = CASE WHEN down_from = 'draining' THEN 'cordoned' ELSE down_from END,
             cordon_reason = 'drained', drain_deadline = NULL, updated_at = now()
         WHERE id = $1 AND (state = 'draining' OR down_from = 'draining') RETURNING name",
    )
    .bind(id.uuid())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((name,)) = &changed {
        let message = format!("node {name}: drained; it stays cordoned until uncordoned");
        events::record(
            &mut tx,
            NewEvent::node("node.drained", &Actor::NodeLifecycle, id, message),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(changed.is_some())
}

/// The agent stopped answering: the node leaves placement at once. Returns whether this call
/// marked it down (false: it already was, or it is registering/decommissioned).
pub async fn mark_down(pool: &PgPool, id: NodeId, why: &str) -> DomainResult<bool> {
    let mut tx = pool.begin().await?;
    let changed: Option<(String,)> = sqlx::query_as(
        "UPDATE gpuaas.nodes SET down_from = state, state = 'down', down_since = now(), updated_at = now()
         WHERE id = $1 AND state IN ('ready', 'cordoned', 'draining') RETURNING name",
    )
    .bind(id.uuid())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((name,)) = &changed {
        let message = format!("node {name} is down: {why}");
        events::record(
            &mut tx,
            NewEvent::node("node.down", &Actor::NodeLifecycle, id, message),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(changed.is_some())
}

/// After the grace period on a down node: its running instances fail with `node_unreachable`.
/// Their allocations stay: the GPUs are released only once the agent confirms the processes are
/// gone (the node is fenced), so no second tenant gets a GPU the old workload may still use.
pub async fn fail_unreachable_instances(
    pool: &PgPool,
    id: NodeId,
    down_for: Duration,
) -> DomainResult<Vec<InstanceId>> {
    let mut tx = pool.begin().await?;
    let message = format!(
        "node unreachable for {}s; the GPUs stay fenced until the node's agent confirms the workload stopped",
        down_for.as_secs()
    );
    // Usage ends at the last moment the agent answered, not when the grace ran out.
    let failed: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE gpuaas.instances i SET state = 'failed', failure_reason = 'node_unreachable',
                status_message = $2, current_step = 'failed', ended_at = now(), updated_at = now()
         FROM gpuaas.nodes n
         WHERE n.id = $1 AND n.state = 'down' AND i.node_id = n.id AND i.state = 'running'
         RETURNING i.id, coalesce(least(n.last_seen_at, now()), now())",
    )
    .bind(id.uuid())
    .bind(&message)
    .fetch_all(&mut *tx)
    .await?;
    for (instance, last_seen) in &failed {
        crate::instance::close_usage(&mut tx, InstanceId::from(*instance), *last_seen).await?;
    }
    close_usage_of_terminating(&mut tx, id).await?;
    let failed: Vec<InstanceId> = failed
        .into_iter()
        .map(|(i, _)| InstanceId::from(i))
        .collect();
    for instance in &failed {
        let mut event = NewEvent::node(
            "instance.failed_node_unreachable",
            &Actor::NodeLifecycle,
            id,
            message.clone(),
        );
        event.instance = Some(*instance);
        events::record(&mut tx, event).await?;
    }
    tx.commit().await?;
    Ok(failed)
}

/// Instances being terminated on a node that stopped answering: their stop cannot be confirmed
/// any more, so their usage ends at the agent's last answer too (not when the termination gives
/// up, minutes later).
async fn close_usage_of_terminating(tx: &mut sqlx::PgConnection, node: NodeId) -> DomainResult<()> {
    let terminating: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT i.id, coalesce(least(n.last_seen_at, now()), now())
         FROM gpuaas.instances i JOIN gpuaas.nodes n ON n.id = i.node_id
         WHERE n.id = $1 AND i.state = 'terminating'",
    )
    .bind(node.uuid())
    .fetch_all(&mut *tx)
    .await?;
    for (instance, last_seen) in terminating {
        crate::instance::close_usage(tx, InstanceId::from(instance), last_seen).await?;
    }
    Ok(())
}

/// The agent answers again and its unwanted workloads are stopped: the node returns to the state
/// it was in before it went down. Returns that state if this call brought it back.
pub async fn mark_up(pool: &PgPool, id: NodeId) -> DomainResult<Option<NodeState>> {
    let mut tx = pool.begin().await?;
    let changed: Option<(String, String)> = sqlx::query_as(
        "UPDATE gpuaas.nodes SET state = coalesce(down_from, 'ready'), down_from = NULL,
                down_since = NULL, last_seen_at = now(), updated_at = now()
         WHERE id = $1 AND state = 'down' RETURNING name, state",
    )
    .bind(id.uuid())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((name, state)) = &changed {
        let message = format!("node {name} is back ({state}); its orphaned workloads were stopped");
        events::record(
            &mut tx,
            NewEvent::node("node.up", &Actor::NodeLifecycle, id, message),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(changed.map(|(_, s)| NodeState::parse(&s)))
}

/// Retires a node for good. The operator asserts that nothing of it runs any more (the host is
/// powered off or wiped): that is the fence a dead host otherwise never gets, so its running
/// instances fail and every GPU it still holds is released. Allowed for a `down` node, or a
/// `cordoned` one with no instances left (drain it first). Idempotent.
pub async fn decommission(pool: &PgPool, id: NodeId, actor: &Actor) -> DomainResult<Node> {
    let mut tx = pool.begin().await?;
    let (name, state): (String, String) =
        sqlx::query_as("SELECT name, state FROM gpuaas.nodes WHERE id = $1 FOR UPDATE")
            .bind(id.uuid())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                DomainError::not_found("node_not_found", format!("node {id} not found"))
            })?;
    if state != "decommissioned" {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM gpuaas.instances
             WHERE node_id = $1 AND state IN ('pending', 'provisioning', 'running', 'terminating')",
        )
        .bind(id.uuid())
        .fetch_one(&mut *tx)
        .await?;
        match state.as_str() {
            "down" => {}
            "cordoned" if live == 0 => {}
            "cordoned" => {
                return Err(DomainError::conflict(
                    "node_not_empty",
                    format!("node {name} still has {live} instance(s); drain it first"),
                ));
            }
            other => {
                return Err(DomainError::conflict(
                    "node_state_conflict",
                    format!(
                        "node {name} is {other}; only a down node, or a cordoned one without instances, can be decommissioned"
                    ),
                ));
            }
        }
        let failed: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE gpuaas.instances i SET state = 'failed', failure_reason = 'node_unreachable',
                    status_message = 'its node was decommissioned', current_step = 'failed',
                    ended_at = now(), updated_at = now()
             FROM gpuaas.nodes n
             WHERE i.node_id = $1 AND n.id = i.node_id AND i.state = 'running'
             RETURNING i.id, coalesce(least(n.last_seen_at, now()), now())",
        )
        .bind(id.uuid())
        .fetch_all(&mut *tx)
        .await?;
        for (instance, last_seen) in &failed {
            crate::instance::close_usage(&mut tx, InstanceId::from(*instance), *last_seen).await?;
        }
        close_usage_of_terminating(&mut tx, id).await?;
        let released: i64 = sqlx::query_scalar(
            "WITH released AS (
                 UPDATE gpuaas.allocations SET released_at = now()
                 WHERE node_id = $1 AND released_at IS NULL RETURNING gpu_id
             ) SELECT count(*) FROM released",
        )
        .bind(id.uuid())
        .fetch_one(&mut *tx)
        .await?;
        // The counter stays exact (placement ignores the node by its state).
        sqlx::query(
            "UPDATE gpuaas.nodes n SET state = 'decommissioned', down_from = NULL,
                    cordon_reason = NULL, drain_deadline = NULL, updated_at = now(),
                    free_gpus = (SELECT count(*) FROM gpuaas.gpus g
                                 WHERE g.node_id = n.id AND g.health = 'healthy'
                                   AND NOT EXISTS (SELECT 1 FROM gpuaas.allocations a
                                                   WHERE a.gpu_id = g.id AND a.released_at IS NULL))
             WHERE n.id = $1",
        )
        .bind(id.uuid())
        .execute(&mut *tx)
        .await?;
        let message = format!(
            "node {name} decommissioned (was {state}): {} running instance(s) failed, {released} GPU(s) released",
            failed.len()
        );
        events::record(
            &mut tx,
            NewEvent::node("node.decommissioned", actor, id, message),
        )
        .await?;
    }
    tx.commit().await?;
    node::get(pool, id).await
}

/// Records that the agent answered just now.
pub async fn record_seen(pool: &PgPool, id: NodeId) -> DomainResult<()> {
    sqlx::query("UPDATE gpuaas.nodes SET last_seen_at = now() WHERE id = $1")
        .bind(id.uuid())
        .execute(pool)
        .await?;
    Ok(())
}

/// One GPU's health as its agent sampled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSample {
    pub index: i32,
    pub healthy: bool,
    pub reason: Option<String>,
}

/// What one sample does to a GPU, given what the database says of it.
enum GpuChange {
    StaysHealthy,
    /// Leaves service now.
    Fails,
    StaysBad,
    /// First healthy sample of a bad GPU: its recovery period starts.
    StartsHealing,
    StillHealing,
    /// Healthy for the whole recovery period: back in service.
    Recovers,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthOutcome {
    /// GPUs out of service after this report.
    pub unhealthy: Vec<i32>,
    /// What changed, in words (empty when nothing did).
    pub changes: Vec<String>,
}

/// Applies a health report. A failing GPU leaves placement at once and cordons its node; a GPU
/// comes back only after `recovery` of continuous health, and the node is uncordoned when its
/// last bad GPU recovers and it was cordoned for that reason. Idempotent: the same report twice
/// changes nothing the second time.
pub async fn apply_gpu_health(
    pool: &PgPool,
    id: NodeId,
    samples: &[GpuSample],
    recovery: Duration,
) -> DomainResult<HealthOutcome> {
    let mut tx = pool.begin().await?;
    // Serialise against placement and other reports on this node.
    let (name, state, cordon_reason): (String, String, Option<String>) = sqlx::query_as(
        "SELECT name, state, cordon_reason FROM gpuaas.nodes WHERE id = $1 FOR UPDATE",
    )
    .bind(id.uuid())
    .fetch_one(&mut *tx)
    .await?;
    let gpus: Vec<(i32, String, bool, Option<f64>)> = sqlx::query_as(
        "SELECT g.idx, g.health,
                EXISTS (SELECT 1 FROM gpuaas.allocations a WHERE a.gpu_id = g.id AND a.released_at IS NULL),
                extract(epoch FROM now() - g.healthy_since)::float8
         FROM gpuaas.gpus g WHERE g.node_id = $1 ORDER BY g.idx",
    )
    .bind(id.uuid())
    .fetch_all(&mut *tx)
    .await?;
    let mut outcome = HealthOutcome::default();
    let mut free_delta = 0i32;
    for (index, health, allocated, healthy_for) in gpus {
        let Some(sample) = samples.iter().find(|s| s.index == index) else {
            outcome
                .unhealthy
                .extend((health != "healthy").then_some(index));
            continue;
        };
        let reason = sample.reason.clone().unwrap_or_default();
        let change = match (health == "healthy", sample.healthy, healthy_for) {
            (true, true, _) => GpuChange::StaysHealthy,
            (true, false, _) => GpuChange::Fails,
            (false, false, _) => GpuChange::StaysBad,
            (false, true, None) => GpuChange::StartsHealing,
            (false, true, Some(t)) if t >= recovery.as_secs_f64() => GpuChange::Recovers,
            (false, true, Some(_)) => GpuChange::StillHealing,
        };
        let set = match change {
            GpuChange::Fails => "health = 'unhealthy', health_reason = $3, healthy_since = NULL",
            GpuChange::StaysBad => "health_reason = $3, healthy_since = NULL",
            GpuChange::StartsHealing => "healthy_since = now()",
            GpuChange::Recovers => "health = 'healthy', health_reason = NULL, healthy_since = NULL",
            GpuChange::StaysHealthy | GpuChange::StillHealing => "",
        };
        if !set.is_empty() {
            sqlx::query(&format!(
                "UPDATE gpuaas.gpus SET {set} WHERE node_id = $1 AND idx = $2"
            ))
            .bind(id.uuid())
            .bind(index)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
        }
        if !matches!(change, GpuChange::StaysHealthy | GpuChange::Recovers) {
            outcome.unhealthy.push(index);
        }
        // Only a free GPU moves the placement counter; an allocated one is not in it anyway.
        let free_step = i32::from(!allocated);
        let event = match change {
            GpuChange::Fails => {
                free_delta -= free_step;
                Some(("gpu.unhealthy", format!("GPU {index} unhealthy: {reason}")))
            }
            GpuChange::Recovers => {
                free_delta += free_step;
                let message = format!(
                    "GPU {index} healthy for {}s: back in service",
                    recovery.as_secs()
                );
                Some(("gpu.recovered", message))
            }
            _ => None,
        };
        if let Some((kind, message)) = event {
            let mut e = NewEvent::node(kind, &Actor::NodeLifecycle, id, message.clone());
            e.gpu_index = Some(index);
            events::record(&mut tx, e).await?;
            outcome.changes.push(message);
        }
    }
    if free_delta != 0 {
        sqlx::query(
            "UPDATE gpuaas.nodes SET free_gpus = free_gpus + $2, updated_at = now() WHERE id = $1",
        )
        .bind(id.uuid())
        .bind(free_delta)
        .execute(&mut *tx)
        .await?;
    }
    let auto = match (
        outcome.unhealthy.is_empty(),
        state.as_str(),
        cordon_reason.as_deref(),
    ) {
        (false, "ready", _) => Some((
            "cordoned",
            Some("gpu_unhealthy"),
            "node.auto_cordoned",
            format!(
                "node {name} cordoned: GPU(s) {:?} unhealthy",
                outcome.unhealthy
            ),
        )),
        (true, "cordoned", Some("gpu_unhealthy")) => Some((
            "ready",
            None,
            "node.auto_uncordoned",
            format!("node {name} uncordoned: all GPUs healthy again"),
        )),
        _ => None,
    };
    if let Some((to, reason, kind, message)) = auto {
        sqlx::query(
            "UPDATE gpuaas.nodes SET state = $2, cordon_reason = $3, updated_at = now() WHERE id = $1",
        )
        .bind(id.uuid())
        .bind(to)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        events::record(
            &mut tx,
            NewEvent::node(kind, &Actor::NodeLifecycle, id, message.clone()),
        )
        .await?;
        outcome.changes.push(message);
    }
    tx.commit().await?;
    Ok(outcome)
}
