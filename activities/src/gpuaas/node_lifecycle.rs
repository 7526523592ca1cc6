//! Node lifecycle activities: thin adapters over `product_gpuaas::node_lifecycle` (liveness,
//! GPU health, drain), run by the control-plane worker as local activities. Each is idempotent.

use super::metrics;
use super::vocabulary::activity;
use crate::{FinishHook, finish};
use contract_node::GpuHealthReport;
use product_gpuaas::node_lifecycle::{
    self, DrainProgress, DrainTermination, GpuSample, HealthOutcome,
};
use product_gpuaas::{NodeState, node};
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub struct NodeLifecycleActivities {
    pool: PgPool,
    hook: FinishHook,
}

impl NodeLifecycleActivities {
    pub fn new(pool: PgPool, hook: FinishHook) -> Self {
        Self { pool, hook }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeDown {
    pub node_id: NodeId,
    pub why: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeGrace {
    pub node_id: NodeId,
    pub down_for_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthReport {
    pub node_id: NodeId,
    pub gpus: Vec<GpuHealthReport>,
    pub recovery_s: u64,
}

/// What the lifecycle workflow learns from a report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportOutcome {
    pub health: HealthOutcome,
    pub state: NodeState,
}

#[activities]
impl NodeLifecycleActivities {
    /// Marks the node down (no heartbeat). True if this call did.
    #[activity(name = activity::NODE_MARK_DOWN)]
    pub async fn mark_down(
        self: Arc<Self>,
        _ctx: ActivityContext,
        down: NodeDown,
    ) -> Result<bool, ActivityError> {
        let result = node_lifecycle::mark_down(&self.pool, down.node_id, &down.why).await;
        if let Ok(true) = result {
            count_transition("down");
        }
        finish(&self.hook, activity::NODE_MARK_DOWN, result)
    }

    /// After the grace period: the down node's running instances fail (GPUs stay fenced).
    #[activity(name = activity::NODE_FAIL_UNREACHABLE)]
    pub async fn fail_unreachable(
        self: Arc<Self>,
        _ctx: ActivityContext,
        grace: NodeGrace,
    ) -> Result<Vec<InstanceId>, ActivityError> {
        let result = node_lifecycle::fail_unreachable_instances(
            &self.pool,
            grace.node_id,
            Duration::from_secs(grace.down_for_s),
        )
        .await;
        finish(&self.hook, activity::NODE_FAIL_UNREACHABLE, result)
    }

    /// The agent is back and fenced: the node returns to its previous state.
    #[activity(name = activity::NODE_MARK_UP)]
    pub async fn mark_up(
        self: Arc<Self>,
        _ctx: ActivityContext,
        node_id: NodeId,
    ) -> Result<Option<NodeState>, ActivityError> {
        let result = node_lifecycle::mark_up(&self.pool, node_id).await;
        if let Ok(Some(_)) = result {
            count_transition("up");
        }
        finish(&self.hook, activity::NODE_MARK_UP, result)
    }

    /// Records a session report: the agent was seen, and its GPUs' health applies.
    #[activity(name = activity::NODE_APPLY_REPORT)]
    pub async fn apply_report(
        self: Arc<Self>,
        _ctx: ActivityContext,
        report: HealthReport,
    ) -> Result<ReportOutcome, ActivityError> {
        let id = report.node_id;
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
            node_lifecycle::record_seen(&self.pool, id).await?;
            let health = node_lifecycle::apply_gpu_health(
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
        finish(&self.hook, activity::NODE_APPLY_REPORT, result)
    }

    #[activity(name = activity::NODE_DRAIN_PROGRESS)]
    pub async fn drain_progress(
        self: Arc<Self>,
        _ctx: ActivityContext,
        node_id: NodeId,
    ) -> Result<DrainProgress, ActivityError> {
        let result = node_lifecycle::drain_progress(&self.pool, node_id).await;
        finish(&self.hook, activity::NODE_DRAIN_PROGRESS, result)
    }

    /// The drain deadline passed: terminates what is left. Returns the instances that were
    /// running, which need their termination started.
    #[activity(name = activity::NODE_TERMINATE_FOR_DRAIN)]
    pub async fn terminate_for_drain(
        self: Arc<Self>,
        _ctx: ActivityContext,
        node_id: NodeId,
    ) -> Result<Vec<DrainTermination>, ActivityError> {
        let result = node_lifecycle::terminate_for_drain(&self.pool, node_id).await;
        finish(&self.hook, activity::NODE_TERMINATE_FOR_DRAIN, result)
    }

    #[activity(name = activity::NODE_FINISH_DRAIN)]
    pub async fn finish_drain(
        self: Arc<Self>,
        _ctx: ActivityContext,
        node_id: NodeId,
    ) -> Result<bool, ActivityError> {
        let result = node_lifecycle::finish_drain(&self.pool, node_id).await;
        finish(&self.hook, activity::NODE_FINISH_DRAIN, result)
    }
}

fn count_transition(kind: &'static str) {
    ::metrics::counter!(metrics::NODE_TRANSITIONS, "kind" => kind).increment(1);
}
