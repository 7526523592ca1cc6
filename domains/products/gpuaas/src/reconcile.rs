//! Orphan reconciliation for one node: compares what its agent reports running, what the
//! database says should run there, and the node's live allocations, and says what to fix.
//!
//! The caller (a workflow) reads the agent first, then [`plan`]s, then performs each fix: the
//! agent part (stopping a process) before the database part ([`apply`]), so a GPU is released
//! only once its process is known to be gone. A node whose agent cannot be read is never planned.

use crate::events::{self, Actor, NewEvent};
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId};
use shared_kernel::DomainResult;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// A workload as the node's agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedWorkload {
    pub instance_id: InstanceId,
    /// False when the agent still has a record of it but the process exited.
    pub running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FixKind {
    /// A process runs that nobody wants (instance unknown, ended, or placed elsewhere): stop it,
    /// then release what it still holds.
    StopOrphan,
    /// A `running` instance whose process is gone: mark it failed and release its GPUs.
    MarkVanished,
    /// An ended instance still holds GPUs and no process of it runs: release them.
    ReleaseAllocation,
}

impl FixKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StopOrphan => "orphan_stopped",
            Self::MarkVanished => "instance_vanished",
            Self::ReleaseAllocation => "allocation_released",
        }
    }

    /// Whether the agent must act (stop the process, forget it) before the database part.
    pub fn needs_agent(self) -> bool {
        matches!(self, Self::StopOrphan | Self::MarkVanished)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fix {
    pub kind: FixKind,
    pub instance_id: InstanceId,
    /// Why, in words; recorded with the event.
    pub reason: String,
}

/// Instances that became `running` less than this before the agent was read are left for the
/// next pass: the report may predate their start.
const REPORT_SLACK_S: f64 = 5.0;

/// What to fix on `node`, given the agent's report read at `read_at`.
pub async fn plan(
    pool: &PgPool,
    node: NodeId,
    reported: &[ReportedWorkload],
    read_at: chrono::DateTime<chrono::Utc>,
) -> DomainResult<Vec<Fix>> {
    let reported_ids: Vec<Uuid> = reported.iter().map(|w| w.instance_id.uuid()).collect();
    // Every instance the report names, runs on the node, or holds GPUs there.
    // (instance, state, its node, seconds running at the read, holds GPUs here, ended before it)
    type Stored = (Uuid, String, Option<Uuid>, Option<f64>, bool, bool);
    type Row = (InstanceId, String, Option<NodeId>, Option<f64>, bool, bool);
    let rows: Vec<Stored> = sqlx::query_as(
        "SELECT i.id, i.state, i.node_id,
                extract(epoch FROM $3 - i.running_at)::float8,
                EXISTS (SELECT 1 FROM gpuaas.allocations a
                        WHERE a.instance_id = i.id AND a.node_id = $1 AND a.released_at IS NULL),
                coalesce(i.ended_at < $3, false)
         FROM gpuaas.instances i
         WHERE i.id = ANY($2) OR (i.node_id = $1 AND i.state = 'running')
            OR EXISTS (SELECT 1 FROM gpuaas.allocations a
                       WHERE a.instance_id = i.id AND a.node_id = $1 AND a.released_at IS NULL)",
    )
    .bind(node.uuid())
    .bind(&reported_ids)
    .bind(read_at)
    .fetch_all(pool)
    .await?;
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|(id, state, on, running_for, holds, ended)| {
            (
                id.into(),
                state,
                on.map(NodeId::from),
                running_for,
                holds,
                ended,
            )
        })
        .collect();
    let known: HashMap<InstanceId, _> = rows.iter().map(|r| (r.0, r)).collect();
    let running_on_agent: HashSet<InstanceId> = reported
        .iter()
        .filter(|w| w.running)
        .map(|w| w.instance_id)
        .collect();
    let mut fixes = Vec::new();
    for w in reported.iter().filter(|w| w.running) {
        let reason = match known.get(&w.instance_id) {
            None => "no such instance".to_string(),
            Some((_, state, ..)) if state == "terminated" || state == "failed" => {
                format!("its instance is {state}")
            }
            Some((_, _, on, ..)) if *on != Some(node) => {
                "its instance is placed on another node".to_string()
            }
            Some(_) => continue,
        };
        fixes.push(Fix {
            kind: FixKind::StopOrphan,
            instance_id: w.instance_id,
            reason: format!("process runs but {reason}"),
        });
    }
    for (id, state, on, running_for, holds_gpus, ended_before_read) in &rows {
        if running_on_agent.contains(id) {
            continue;
        }
        let settled = running_for.is_some_and(|s| s >= REPORT_SLACK_S);
        if state == "running" && *on == Some(node) && settled {
            let why = if reported.iter().any(|w| w.instance_id == *id) {
                "its process exited"
            } else {
                "the node's agent has no record of it"
            };
            fixes.push(Fix {
                kind: FixKind::MarkVanished,
                instance_id: *id,
                reason: format!("instance is running but {why}"),
            });
        } else if *holds_gpus && *ended_before_read && (state == "terminated" || state == "failed")
        {
            // Only if it ended before the agent was read: a process started (and the instance
            // ended) after the read would be missing from the report yet may still run.
            fixes.push(Fix {
                kind: FixKind::ReleaseAllocation,
                instance_id: *id,
                reason: format!("instance is {state} and no process of it runs"),
            });
        }
    }
    Ok(fixes)
}

/// Performs the database part of `fix` (its agent part, if any, is done). Idempotent: returns
/// whether this call changed anything; `dedupe_key` makes a retried call record nothing.
pub async fn apply(
    pool: &PgPool,
    node: NodeId,
    fix: &Fix,
    actor: &Actor,
    dedupe_key: &str,
) -> DomainResult<bool> {
    let mut tx = pool.begin().await?;
    let mut changed = false;
    if fix.kind == FixKind::MarkVanished {
        let failed = sqlx::query(
            "UPDATE gpuaas.instances SET state = 'failed', failure_reason = 'workload_vanished',
                    status_message = $3, current_step = 'failed', ended_at = now(), updated_at = now()
             WHERE id = $1 AND node_id = $2 AND state = 'running'",
        )
        .bind(fix.instance_id.uuid())
        .bind(node.uuid())
        .bind(&fix.reason)
        .execute(&mut *tx)
        .await?;
        changed |= failed.rows_affected() > 0;
        if failed.rows_affected() > 0 {
            // The agent says no process of it runs: usage ends now, when that was confirmed.
            crate::instance::close_usage(&mut tx, fix.instance_id, chrono::Utc::now()).await?;
        }
    }
    // Release only for an ended instance: a wanted one keeps its GPUs whatever happens here.
    let ended: Option<(String,)> = sqlx::query_as(
        "SELECT state FROM gpuaas.instances WHERE id = $1 AND state IN ('terminated', 'failed')",
    )
    .bind(fix.instance_id.uuid())
    .fetch_optional(&mut *tx)
    .await?;
    if ended.is_some() {
        crate::placement::lock_nodes_holding(&mut tx, fix.instance_id).await?;
        let released =
            crate::placement::release_locked(&mut tx, fix.instance_id, Some(node)).await?;
        changed |= released > 0;
    }
    let recorded = events::record(
        &mut tx,
        NewEvent {
            kind: &format!("reconciler.{}", fix.kind.as_str()),
            actor,
            node: Some(node),
            instance: Some(fix.instance_id),
            gpu_index: None,
            message: fix.reason.clone(),
            dedupe_key: Some(dedupe_key.to_string()),
        },
    )
    .await?;
    tx.commit().await?;
    // Stopping an orphan is a change even when the database had nothing to release.
    Ok(recorded && (changed || fix.kind == FixKind::StopOrphan))
}

/// Records (once per `dedupe_key`) a fix the reconciler made outside the node plan: a
/// provisioning or a node lifecycle it had to start. Returns false for a repeat.
pub async fn record_fix(
    pool: &PgPool,
    kind: &str,
    node: Option<NodeId>,
    instance: Option<InstanceId>,
    message: &str,
    dedupe_key: &str,
) -> DomainResult<bool> {
    let mut conn = pool.acquire().await?;
    events::record(
        &mut conn,
        NewEvent {
            kind,
            actor: &Actor::Reconciler,
            node,
            instance,
            gpu_index: None,
            message: message.to_string(),
            dedupe_key: Some(dedupe_key.to_string()),
        },
    )
    .await
}

/// Fails a `pending`/`provisioning` instance whose provisioning workflow has ended without
/// finishing it (it failed, or an operator terminated it): nothing will move it again. The
/// compare-and-set makes it a no-op when the instance moved on meanwhile (the caller checked the
/// workflow after reading the instance). Its process and GPUs, if any, are then an ended
/// instance's, which the node pass stops and releases. Returns whether this call failed it.
pub async fn fail_lost_provisioning(
    pool: &PgPool,
    instance: InstanceId,
    message: &str,
) -> DomainResult<bool> {
    let mut tx = pool.begin().await?;
    let failed: Option<(Option<Uuid>,)> = sqlx::query_as(
        "UPDATE gpuaas.instances SET state = 'failed', failure_reason = 'timeout',
                status_message = $2, current_step = 'failed', ended_at = now(), updated_at = now()
         WHERE id = $1 AND state IN ('pending', 'provisioning')
         RETURNING node_id",
    )
    .bind(instance.uuid())
    .bind(message)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((node,)) = failed else {
        return Ok(false);
    };
    events::record(
        &mut tx,
        NewEvent {
            kind: "reconciler.provisioning_lost",
            actor: &Actor::Reconciler,
            node: node.map(NodeId::from),
            instance: Some(instance),
            gpu_index: None,
            message: message.to_string(),
            dedupe_key: Some(format!("provisioning_lost/{instance}")),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
