//! Reconciliation activities: thin adapters over `product_gpuaas::reconcile`, plus the reads the
//! reconciler needs to find what nobody runs (provisionings never started, nodes unwatched).
//! Run by the control-plane worker as local activities; each is idempotent.

use super::metrics;
use super::vocabulary::{self, activity, workflow};
use crate::{FinishHook, finish};
use contract_node::WorkloadReport;
use product_gpuaas::events::Actor;
use product_gpuaas::reconcile::{self, Fix, ReportedWorkload};
use product_gpuaas::{instance, node};
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId, ProjectId};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub struct ReconcileActivities {
    pool: PgPool,
    hook: FinishHook,
}

impl ReconcileActivities {
    pub fn new(pool: PgPool, hook: FinishHook) -> Self {
        Self { pool, hook }
    }
}

/// A node the reconciler should read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReconcileTarget {
    pub node_id: NodeId,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanInput {
    pub node_id: NodeId,
    pub workloads: Vec<WorkloadReport>,
    /// When the agent was asked (workflow time), in ms since the epoch.
    pub read_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyFix {
    pub node_id: NodeId,
    pub fix: Fix,
    /// Unique per planned fix, so a retried activity records and counts it once.
    pub dedupe_key: String,
    pub by_reconciler: bool,
}

/// An instance whose provisioning workflow must be started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Unstarted {
    pub instance_id: InstanceId,
    pub project_id: ProjectId,
    pub command: String,
    pub capacity_timeout_s: u64,
}

/// Which workflow the reconciler had to start.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Started {
    /// An instance's provisioning the API recorded but never started.
    Provisioning,
    /// A node's lifecycle, which was not running.
    Lifecycle,
}

impl Started {
    /// The fix's kind in the event log (`reconciler.<kind>`) and in the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning_started",
            Self::Lifecycle => "lifecycle_started",
        }
    }
}

/// A workflow the reconciler had to start, for the event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowStarted {
    pub kind: Started,
    pub node_id: Option<NodeId>,
    pub instance_id: Option<InstanceId>,
    pub message: String,
    pub dedupe_key: String,
}

#[activities]
impl ReconcileActivities {
    /// Nodes the reconciler reads: those whose agent should be answering.
    #[activity(name = activity::RECONCILE_TARGETS)]
    pub async fn targets(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<Vec<ReconcileTarget>, ActivityError> {
        let result = node::answering(&self.pool).await.map(|nodes| {
            nodes
                .into_iter()
                .map(|(node_id, name)| ReconcileTarget { node_id, name })
                .collect()
        });
        finish(&self.hook, activity::RECONCILE_TARGETS, result)
    }

    #[activity(name = activity::RECONCILE_PLAN)]
    pub async fn plan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: PlanInput,
    ) -> Result<Vec<Fix>, ActivityError> {
        let reported: Vec<ReportedWorkload> = input
            .workloads
            .iter()
            .map(|w| ReportedWorkload {
                instance_id: w.instance_id,
                running: w.running,
            })
            .collect();
        let read_at = chrono::DateTime::from_timestamp_millis(input.read_at_ms).unwrap_or_default();
        let result = reconcile::plan(&self.pool, input.node_id, &reported, read_at).await;
        finish(&self.hook, activity::RECONCILE_PLAN, result)
    }

    /// The database part of a fix; counted in `gpuaas_reconciler_fixes_total` once.
    #[activity(name = activity::RECONCILE_APPLY)]
    pub async fn apply(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ApplyFix,
    ) -> Result<bool, ActivityError> {
        let actor = if input.by_reconciler {
            Actor::Reconciler
        } else {
            Actor::NodeLifecycle
        };
        let node = input.node_id;
        let result =
            reconcile::apply(&self.pool, node, &input.fix, &actor, &input.dedupe_key).await;
        if let Ok(true) = result {
            tracing::info!(node_id = %node, instance_id = %input.fix.instance_id, kind = input.fix.kind.as_str(), reason = %input.fix.reason, "reconciler fix");
            ::metrics::counter!(metrics::RECONCILER_FIXES, "kind" => input.fix.kind.as_str())
                .increment(1);
        }
        finish(&self.hook, activity::RECONCILE_APPLY, result)
    }

    /// Instances accepted over a minute ago whose provisioning never took a step.
    #[activity(name = activity::RECONCILE_UNSTARTED)]
    pub async fn unstarted(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<Vec<Unstarted>, ActivityError> {
        let result = instance::stale_pending(&self.pool, Duration::from_secs(60))
            .await
            .map(|found| {
                found
                    .into_iter()
                    .map(|i| Unstarted {
                        instance_id: i.id,
                        project_id: i.project_id,
                        command: i.command,
                        capacity_timeout_s: i.capacity_timeout_s.max(0) as u64,
                    })
                    .collect()
            });
        finish(&self.hook, activity::RECONCILE_UNSTARTED, result)
    }

    /// Nodes with no running lifecycle workflow on `task_queue` (an operator terminated it, or
    /// it failed): nobody would notice their agent die.
    #[activity(name = activity::RECONCILE_UNWATCHED)]
    pub async fn unwatched(
        self: Arc<Self>,
        ctx: ActivityContext,
        task_queue: String,
    ) -> Result<Vec<ReconcileTarget>, ActivityError> {
        use futures::StreamExt;
        let nodes = finish(
            &self.hook,
            activity::RECONCILE_UNWATCHED,
            node::watched(&self.pool).await,
        )?;
        let query = format!(
            "WorkflowType = '{}' AND ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'",
            workflow::NODE_LIFECYCLE
        );
        let mut running = std::collections::HashSet::new();
        let mut listed = ctx.client().list_workflows(query, Default::default());
        while let Some(found) = listed.next().await {
            let found = found.map_err(|e| {
                let _ = (self.hook)(activity::RECONCILE_UNWATCHED, Some("visibility"));
                ActivityError::application(ApplicationFailure::new(format!(
                    "listing lifecycle workflows: {e}"
                )))
            })?;
            running.insert(found.id().to_string());
        }
        Ok(nodes
            .into_iter()
            .filter(|(id, _)| !running.contains(&vocabulary::node_lifecycle_id(*id)))
            .map(|(node_id, name)| ReconcileTarget { node_id, name })
            .collect())
    }

    /// Records (once) a workflow the reconciler had to start.
    #[activity(name = activity::RECONCILE_RECORD_STARTED)]
    pub async fn record_started(
        self: Arc<Self>,
        _ctx: ActivityContext,
        started: WorkflowStarted,
    ) -> Result<bool, ActivityError> {
        let kind = started.kind.as_str();
        let result = reconcile::record_fix(
            &self.pool,
            &format!("reconciler.{kind}"),
            started.node_id,
            started.instance_id,
            &started.message,
            &started.dedupe_key,
        )
        .await;
        if let Ok(true) = result {
            ::metrics::counter!(metrics::RECONCILER_FIXES, "kind" => kind).increment(1);
        }
        finish(&self.hook, activity::RECONCILE_RECORD_STARTED, result)
    }
}
