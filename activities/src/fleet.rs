//! Control-plane activities of the fleet: node lifecycle (liveness, GPU health, drain) and orphan
//! reconciliation. Thin adapters over `gpuaas_domain::{lifecycle, reconcile}`; each is idempotent.

use crate::faults::Faults;
use crate::node::{GpuHealthReport, WorkloadReport};
use crate::service::{count_activity_failure, metric_names};
use gpuaas_domain::events::Actor;
use gpuaas_domain::lifecycle::{self, GpuSample};
use gpuaas_domain::reconcile::{self, ReportedWorkload};
use gpuaas_domain::{instance, node};
use gpuaas_shared::DomainError;
use gpuaas_shared::ids::{InstanceId, NodeId};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use uuid::Uuid;

// Domain types that cross the workflow boundary, so workflows need not name the domain crate.
pub use gpuaas_domain::NodeState;
pub use gpuaas_domain::lifecycle::{DrainProgress, DrainTermination, HealthOutcome};
pub use gpuaas_domain::reconcile::{Fix, FixKind};

pub struct FleetActivities {
    pool: PgPool,
    faults: Faults,
}

impl FleetActivities {
    pub fn new(pool: PgPool, faults: Faults) -> Self {
        Self { pool, faults }
    }

    fn finish<T>(
        &self,
        activity: &str,
        result: Result<T, DomainError>,
    ) -> Result<T, ActivityError> {
        crate::control_plane::finish(&self.faults, activity, result)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeDown {
    pub node_id: Uuid,
    pub why: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeGrace {
    pub node_id: Uuid,
    pub down_for_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthReport {
    pub node_id: Uuid,
    pub gpus: Vec<GpuHealthReport>,
    pub recovery_s: u64,
}

/// What the lifecycle workflow learns from a report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportOutcome {
    pub health: HealthOutcome,
    pub state: NodeState,
}

/// A node the reconciler should read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReconcileTarget {
    pub node_id: Uuid,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanInput {
    pub node_id: Uuid,
    pub workloads: Vec<WorkloadReport>,
    /// When the agent was asked (workflow time), in ms since the epoch.
    pub read_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyFix {
    pub node_id: Uuid,
    pub fix: Fix,
    /// Unique per planned fix, so a retried activity records and counts it once.
    pub dedupe_key: String,
    pub by_reconciler: bool,
}

/// An instance whose provisioning workflow must be started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Unstarted {
    pub instance_id: Uuid,
    pub project_id: Uuid,
    pub command: String,
    pub capacity_timeout_s: u64,
    pub workflow_id: String,
}

/// A workflow the reconciler had to start, for the event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowStarted {
    /// `provisioning_started` or `lifecycle_started`.
    pub kind: String,
    pub node_id: Option<Uuid>,
    pub instance_id: Option<Uuid>,
    pub message: String,
    pub dedupe_key: String,
}

#[activities]
impl FleetActivities {
    /// Instances accepted over a minute ago whose provisioning never took a step.
    #[activity]
    pub async fn reconcile_unstarted(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<Vec<Unstarted>, ActivityError> {
        let result = instance::stale_pending(&self.pool, Duration::from_secs(60))
            .await
            .map(|found| {
                found
                    .into_iter()
                    .map(|i| Unstarted {
                        instance_id: i.id.0,
                        project_id: i.project_id.0,
                        command: i.command,
                        capacity_timeout_s: i.capacity_timeout_s.max(0) as u64,
                        workflow_id: i.workflow_id,
                    })
                    .collect()
            });
        self.finish("reconcile_unstarted", result)
    }

    /// Records (once) a workflow the reconciler had to start.
    #[activity]
    pub async fn reconcile_record_started(
        self: Arc<Self>,
        _ctx: ActivityContext,
        started: WorkflowStarted,
    ) -> Result<bool, ActivityError> {
        let result = reconcile::record_fix(
            &self.pool,
            &format!("reconciler.{}", started.kind),
            started.node_id.map(NodeId),
            started.instance_id.map(InstanceId),
            &started.message,
            &started.dedupe_key,
        )
        .await;
        if let Ok(true) = result {
            metrics::counter!(metric_names::RECONCILER_FIXES, "kind" => started.kind.clone())
                .increment(1);
        }
        self.finish("reconcile_record_started", result)
    }

    /// Nodes with no running lifecycle workflow on `task_queue` (an operator terminated it, or
    /// it failed): nobody would notice their agent die.
    #[activity]
    pub async fn reconcile_unwatched(
        self: Arc<Self>,
        ctx: ActivityContext,
        task_queue: String,
    ) -> Result<Vec<ReconcileTarget>, ActivityError> {
        use futures::StreamExt;
        let nodes = self.finish("reconcile_unwatched", node::watched(&self.pool).await)?;
        let query = format!(
            "WorkflowType = 'NodeLifecycle' AND ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'"
        );
        let mut running = std::collections::HashSet::new();
        let mut listed = ctx.client().list_workflows(query, Default::default());
        while let Some(workflow) = listed.next().await {
            let workflow = workflow.map_err(|e| {
                count_activity_failure("reconcile_unwatched", "visibility");
                ActivityError::application(ApplicationFailure::new(format!(
                    "listing lifecycle workflows: {e}"
                )))
            })?;
            running.insert(workflow.id().to_string());
        }
        Ok(nodes
            .into_iter()
            .filter(|(id, _)| !running.contains(&node::lifecycle_workflow_id(*id)))
            .map(|(id, name)| ReconcileTarget {
                node_id: id.0,
                name,
            })
            .collect())
    }

    /// Marks the node down (no heartbeat). True if this call did.
    #[activity]
    pub async fn node_mark_down(
        self: Arc<Self>,
        _ctx: ActivityContext,
        down: NodeDown,
    ) -> Result<bool, ActivityError> {
        let result = lifecycle::mark_down(&self.pool, NodeId(down.node_id), &down.why).await;
        if let Ok(true) = result {
            count_transition("down");
        }
        self.finish("node_mark_down", result)
    }

    /// After the grace period: the down node's running instances fail (GPUs stay fenced).
    #[activity]
    pub async fn node_fail_unreachable(
        self: Arc<Self>,
        _ctx: ActivityContext,
        grace: NodeGrace,
    ) -> Result<Vec<Uuid>, ActivityError> {
        let result = lifecycle::fail_unreachable_instances(
            &self.pool,
            NodeId(grace.node_id),
            Duration::from_secs(grace.down_for_s),
        )
        .await
        .map(|ids| ids.into_iter().map(|i| i.0).collect());
        self.finish("node_fail_unreachable", result)
    }

    /// The agent is back and fenced: the node returns to its previous state.
    #[activity]
    pub async fn node_mark_up(
        self: Arc<Self>,
        _ctx: ActivityContext,
        node_id: Uuid,
    ) -> Result<Option<NodeState>, ActivityError> {
        let result = lifecycle::mark_up(&self.pool, NodeId(node_id)).await;
        if let Ok(Some(_)) = result {
            count_transition("up");
        }
        self.finish("node_mark_up", result)
    }

    /// Records a session report: the agent was seen, and its GPUs' health applies.
    #[activity]
    pub async fn node_apply_report(
        self: Arc<Self>,
        _ctx: ActivityContext,
        report: HealthReport,
    ) -> Result<ReportOutcome, ActivityError> {
        let id = NodeId(report.node_id);
        let samples: Vec<GpuSample> = report
            .gpus
            .into_iter()
            .map(|g| GpuSample {
                index: g.index,
                healthy: g.healthy,
                reason: g.reason,
            })
            .collect();
        let result = async {
            lifecycle::record_seen(&self.pool, id).await?;
            let health = lifecycle::apply_gpu_health(
                &self.pool,
                id,
                &samples,
                Duration::from_secs(report.recovery_s),
            )
            .await?;
            let state = node::get(&self.pool, id).await?.state;
            Ok(ReportOutcome { health, state })
        }
        .await;
        if let Ok(outcome) = &result {
            for change in &outcome.health.changes {
                tracing::info!(node_id = %id, change, "GPU health");
            }
        }
        self.finish("node_apply_report", result)
    }

    #[activity]
    pub async fn node_drain_progress(
        self: Arc<Self>,
        _ctx: ActivityContext,
        node_id: Uuid,
    ) -> Result<DrainProgress, ActivityError> {
        let result = lifecycle::drain_progress(&self.pool, NodeId(node_id)).await;
        self.finish("node_drain_progress", result)
    }

    /// The drain deadline passed: terminates what is left. Returns the instances that were
    /// running, which need a TerminateInstance workflow.
    #[activity]
    pub async fn node_terminate_for_drain(
        self: Arc<Self>,
        _ctx: ActivityContext,
        node_id: Uuid,
    ) -> Result<Vec<DrainTermination>, ActivityError> {
        let result = lifecycle::terminate_for_drain(&self.pool, NodeId(node_id)).await;
        self.finish("node_terminate_for_drain", result)
    }

    #[activity]
    pub async fn node_finish_drain(
        self: Arc<Self>,
        _ctx: ActivityContext,
        node_id: Uuid,
    ) -> Result<bool, ActivityError> {
        let result = lifecycle::finish_drain(&self.pool, NodeId(node_id)).await;
        self.finish("node_finish_drain", result)
    }

    /// Nodes the reconciler reads: those whose agent should be answering.
    #[activity]
    pub async fn reconcile_targets(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<Vec<ReconcileTarget>, ActivityError> {
        let result = node::answering(&self.pool).await.map(|nodes| {
            nodes
                .into_iter()
                .map(|(id, name)| ReconcileTarget {
                    node_id: id.0,
                    name,
                })
                .collect()
        });
        self.finish("reconcile_targets", result)
    }

    #[activity]
    pub async fn reconcile_plan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: PlanInput,
    ) -> Result<Vec<Fix>, ActivityError> {
        let reported: Vec<ReportedWorkload> = input
            .workloads
            .iter()
            .map(|w| ReportedWorkload {
                instance_id: InstanceId(w.instance_id),
                running: w.running,
            })
            .collect();
        let read_at = chrono::DateTime::from_timestamp_millis(input.read_at_ms).unwrap_or_default();
        let result = reconcile::plan(&self.pool, NodeId(input.node_id), &reported, read_at).await;
        self.finish("reconcile_plan", result)
    }

    /// The database part of a fix; counted in `gpuaas_reconciler_fixes_total` once.
    #[activity]
    pub async fn reconcile_apply(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ApplyFix,
    ) -> Result<bool, ActivityError> {
        let actor = if input.by_reconciler {
            Actor::Reconciler
        } else {
            Actor::NodeLifecycle
        };
        let node = NodeId(input.node_id);
        let result =
            reconcile::apply(&self.pool, node, &input.fix, &actor, &input.dedupe_key).await;
        if let Ok(true) = result {
            tracing::info!(node_id = %node, instance_id = %input.fix.instance_id, kind = input.fix.kind.as_str(), reason = %input.fix.reason, "reconciler fix");
            metrics::counter!(metric_names::RECONCILER_FIXES, "kind" => input.fix.kind.as_str())
                .increment(1);
        }
        self.finish("reconcile_apply", result)
    }
}

fn count_transition(kind: &'static str) {
    metrics::counter!(metric_names::NODE_TRANSITIONS, "kind" => kind).increment(1);
}
