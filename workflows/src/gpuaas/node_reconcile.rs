//! One node's reconciliation, shared by `NodeLifecycle` (fencing a node whose agent is back)
//! and `ReconcileFleet` (the periodic pass): read the node's agent, plan the fixes against the
//! database, perform them, the agent part first. A node whose agent cannot be read is never
//! planned: nothing is decided from a missing answer. Its database steps are regular activities:
//! both callers run it beside other work (options.rs, `database_activity`).

use super::NodeTimeouts;
use super::node_call::{self, NodeCallError};
use super::options::reconcile_options;
use activities::gpuaas::reconcile::{ApplyFix, PlanInput, ReconcileActivities};
use contract_node::vocabulary as node;
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId};
use std::time::{Duration, UNIX_EPOCH};
use temporalio_sdk::{ActivityExecutionError, WorkflowContext};

/// What one node's reconciliation did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeReconciled {
    pub planned: usize,
    pub applied: usize,
}

/// Why a node's reconciliation stopped. Whatever was applied before stays applied (each fix
/// is idempotent).
#[derive(Debug)]
pub enum NodeReconcileError {
    /// The agent did not answer the read: the node is left alone.
    AgentUnreadable(NodeCallError),
    Plan(ActivityExecutionError),
    Stop {
        instance: InstanceId,
        error: NodeCallError,
    },
    Apply(ActivityExecutionError),
}

impl std::fmt::Display for NodeReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AgentUnreadable(e) => write!(f, "agent unreadable: {e}"),
            Self::Plan(e) => write!(f, "plan failed: {e}"),
            Self::Stop { instance, error } => {
                write!(f, "could not stop workload {instance}: {error}")
            }
            Self::Apply(e) => write!(f, "fix failed: {e}"),
        }
    }
}

/// How long the reconciler waits for an agent to pick up its read before calling the node
/// unreadable (it is then left alone; its lifecycle workflow deals with a dead agent).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn read_options(node_queue: &str, timeouts: &NodeTimeouts) -> temporalio_sdk::ActivityOptions {
    temporalio_sdk::ActivityOptions::with_start_to_close_timeout(Duration::from_secs(
        timeouts.start_to_close_s,
    ))
    .task_queue(node_queue.to_string())
    .schedule_to_start_timeout(READ_TIMEOUT.min(Duration::from_secs(timeouts.schedule_to_start_s)))
    .retry_policy(
        temporalio_common::RetryPolicy::builder()
            .maximum_attempts(1)
            .build(),
    )
    .build()
}

/// Reads `node_id`'s agent, plans and applies the fixes.
pub(crate) async fn reconcile_node<W>(
    ctx: &WorkflowContext<W>,
    node_id: NodeId,
    timeouts: &NodeTimeouts,
    by_reconciler: bool,
) -> Result<NodeReconciled, NodeReconcileError> {
    let node_queue = node::task_queue(node_id);
    let read_at_ms = ctx
        .workflow_time()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    // A reply that is not the node's own counts as no answer: nothing is planned from it.
    let workloads = node_call::list_workloads(
        ctx,
        node_id,
        reconcile_options(),
        read_options(&node_queue, timeouts),
    )
    .await
    .map_err(NodeReconcileError::AgentUnreadable)?;
    let plan = PlanInput {
        node_id,
        workloads,
        read_at_ms,
    };
    let fixes = ctx
        .execute_activity(ReconcileActivities::plan, plan, reconcile_options())
        .await
        .map_err(NodeReconcileError::Plan)?;
    let mut done = NodeReconciled {
        planned: fixes.len(),
        applied: 0,
    };
    for (seq, fix) in fixes.into_iter().enumerate() {
        if fix.kind.needs_agent() {
            node_call::stop_workload(
                ctx,
                node_id,
                fix.instance_id,
                reconcile_options(),
                timeouts.options(&node_queue),
            )
            .await
            .map_err(|error| NodeReconcileError::Stop {
                instance: fix.instance_id,
                error,
            })?;
        }
        let apply = ApplyFix {
            node_id,
            dedupe_key: format!("{}/{node_id}/{read_at_ms}/{seq}", ctx.workflow_id()),
            fix,
            by_reconciler,
        };
        let applied = ctx
            .execute_activity(ReconcileActivities::apply, apply, reconcile_options())
            .await
            .map_err(NodeReconcileError::Apply)?;
        done.applied += usize::from(applied);
    }
    Ok(done)
}
