//! Reconciliation activities: thin adapters over `product_gpuaas::reconcile`, plus the reads the
//! reconciler needs to find what nobody runs (provisionings never started, nodes unwatched).
//! Run by the control-plane worker as local activities; each is idempotent.

use super::metrics;
use super::vocabulary::{self, activity, workflow};
use crate::{FinishHook, finish};
use contract_node::WorkloadReport;
use product_gpuaas::events::Actor;
use product_gpuaas::reconcile::{self, Fix, ReportedWorkload};
use product_gpuaas::{InstanceState, instance, node};
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId, ProjectId};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::{Client, UntypedWorkflow, WorkflowExecutionStatus};
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

    /// What instance `i` (read before its workflows were described) needs, if anything.
    async fn decide(
        &self,
        client: &Client,
        i: instance::Instance,
    ) -> Result<Option<Unstarted>, ActivityError> {
        use InstanceState::*;
        let provisioning = self
            .status(client, vocabulary::instance_provision_id(i.id))
            .await?;
        let restart = match (i.state, provisioning) {
            (_, Some(WorkflowExecutionStatus::Running)) => return Ok(None),
            // Never took a step: its provisioning was never started.
            (Pending, None) if i.current_step == "queued" => (
                Restart::Provisioning,
                "accepted but never started (the API died or could not reach Temporal before starting its workflow): provisioning started".to_string(),
            ),
            (Pending | Provisioning, ended) => {
                let message = format!(
                    "its provisioning workflow ended ({}) without finishing it",
                    ended.map_or("not found".to_string(), |s| format!("{s:?}").to_lowercase())
                );
                self.fail_lost(&i, &message).await?;
                return Ok(None);
            }
            // Deleted: whoever unwinds it is gone. A running one was TerminateInstance's; a
            // pending/provisioning one was its provisioning's, which has ended (or never ran).
            (Terminating, _) => {
                let termination = self
                    .status(client, vocabulary::instance_terminate_id(i.id))
                    .await?;
                match termination {
                    // Running, or completed (it marked the instance terminated after our read).
                    Some(WorkflowExecutionStatus::Running | WorkflowExecutionStatus::Completed) => {
                        return Ok(None);
                    }
                    other => (
                        Restart::Termination,
                        format!(
                            "terminating, but no workflow unwinds it (termination {}): termination started",
                            other.map_or("never started".to_string(), |s| format!("{s:?}").to_lowercase())
                        ),
                    ),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(Unstarted {
            instance_id: i.id,
            project_id: i.project_id,
            command: i.command,
            capacity_timeout_s: i.capacity_timeout_s.max(0) as u64,
            start: restart.0,
            node_id: i.node_id,
            why: restart.1,
        }))
    }

    /// The status of the latest run of `workflow_id`; `None` if there is none.
    async fn status(
        &self,
        client: &Client,
        workflow_id: String,
    ) -> Result<Option<WorkflowExecutionStatus>, ActivityError> {
        let handle = client.get_workflow_handle::<UntypedWorkflow>(workflow_id.clone());
        match handle.describe(Default::default()).await {
            Ok(described) => Ok(Some(described.status())),
            Err(WorkflowInteractionError::NotFound(_)) => Ok(None),
            Err(e) => {
                let _ = (self.hook)(activity::RECONCILE_UNSTARTED, Some("describe"));
                Err(ActivityError::application(ApplicationFailure::new(
                    format!("describing {workflow_id}: {e}"),
                )))
            }
        }
    }

    /// Fails an instance whose provisioning ended without finishing it; counted once.
    async fn fail_lost(&self, i: &instance::Instance, message: &str) -> Result<(), ActivityError> {
        let failed = reconcile::fail_lost_provisioning(&self.pool, i.id, message).await;
        if let Ok(true) = failed {
            tracing::warn!(instance_id = %i.id, %message, "reconciler failed a lost provisioning");
            ::metrics::counter!(metrics::RECONCILER_FIXES, "kind" => "provisioning_lost")
                .increment(1);
        }
        finish(&self.hook, activity::RECONCILE_UNSTARTED, failed).map(|_| ())
    }
}

/// How long an instance in flight must have stayed unchanged before the reconciler checks that a
/// workflow carries it: well over the API's patience for a workflow start (5 s), so a start still
/// in flight is not raced (a race would be harmless: workflow ids are derived from the instance).
pub const UNFINISHED_GRACE: Duration = Duration::from_secs(10);
/// Instances checked per pass (each costs one or two describes).
pub const UNFINISHED_AT_ONCE: i64 = 100;

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

/// An instance nobody carries, and the workflow the reconciler must start for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Unstarted {
    pub instance_id: InstanceId,
    pub project_id: ProjectId,
    pub command: String,
    pub capacity_timeout_s: u64,
    /// Which workflow: absent in histories recorded before terminations were restarted.
    #[serde(default)]
    pub start: Restart,
    /// The node the instance holds GPUs on, for a termination.
    #[serde(default)]
    pub node_id: Option<NodeId>,
    /// Why, in words, for the event log.
    #[serde(default)]
    pub why: String,
}

/// The workflow an instance nobody carries needs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Restart {
    /// `pending` and never started (the API died, or Temporal refused, between recording the
    /// instance and starting its provisioning).
    #[default]
    Provisioning,
    /// `terminating` with neither its provisioning nor its termination running (the termination
    /// failed to start after the state change committed, or its run failed).
    Termination,
}

/// Which workflow the reconciler had to start.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Started {
    /// An instance's provisioning the API recorded but never started.
    Provisioning,
    /// A node's lifecycle, which was not running.
    Lifecycle,
    /// A `terminating` instance's termination, which nobody ran.
    Termination,
}

impl Started {
    /// The fix's kind in the event log (`reconciler.<kind>`) and in the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning_started",
            Self::Lifecycle => "lifecycle_started",
            Self::Termination => "termination_started",
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

    /// Instances in flight that no workflow carries, and what to start for each: a `pending`
    /// instance never started gets its provisioning; a `terminating` one whose provisioning and
    /// termination are both gone gets its termination. A `pending`/`provisioning` instance whose
    /// provisioning ended without finishing it is failed here (the node pass then stops its
    /// process and releases its GPUs). Reads at most [`UNFINISHED_AT_ONCE`] instances unchanged
    /// for [`UNFINISHED_GRACE`], oldest first, and describes their workflows by their derived
    /// ids (strongly consistent, unlike visibility).
    #[activity(name = activity::RECONCILE_UNSTARTED)]
    pub async fn unstarted(
        self: Arc<Self>,
        ctx: ActivityContext,
    ) -> Result<Vec<Unstarted>, ActivityError> {
        use futures::StreamExt;
        let found = instance::unfinished(&self.pool, UNFINISHED_GRACE, UNFINISHED_AT_ONCE).await;
        let found = finish(&self.hook, activity::RECONCILE_UNSTARTED, found)?;
        let client = ctx.client();
        let decided: Vec<Result<Option<Unstarted>, ActivityError>> = futures::stream::iter(found)
            .map(|i| self.decide(&client, i))
            .buffered(8)
            .collect()
            .await;
        decided.into_iter().filter_map(Result::transpose).collect()
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
