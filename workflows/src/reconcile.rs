//! Orphan reconciliation. [`reconcile_node`] reads one node's agent, plans the fixes against the
//! database and performs them, agent part first; [`ReconcileFleet`] runs it over every node whose
//! agent should answer, on a Temporal Schedule. A node whose agent cannot be read is skipped:
//! nothing is ever decided from a missing answer. The pass also starts the provisioning of
//! instances the API recorded but never started.

use crate::node_lifecycle::{LifecycleConfig, NodeLifecycle, NodeLifecycleInput};
use crate::provision::{ProvisionInput, ProvisionInstance};
use crate::{NodeTimeouts, abandoned_child, control_options, search};
use gpuaas_activities::fleet::{
    ApplyFix, FleetActivities, PlanInput, ReconcileTarget, WorkflowStarted,
};
use gpuaas_activities::node::NodeActivities;
use serde::{Deserialize, Serialize};
use std::time::{Duration, UNIX_EPOCH};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowIdReusePolicy, WorkflowResult};
use uuid::Uuid;

/// What one node's reconciliation did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeReconciled {
    pub planned: usize,
    pub applied: usize,
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

/// Reads `node_id`'s agent, plans and applies the fixes. `Err` says why the node could not be
/// read or acted on; whatever was applied before stays applied (each fix is idempotent).
pub(crate) async fn reconcile_node<W>(
    ctx: &WorkflowContext<W>,
    node_id: Uuid,
    timeouts: &NodeTimeouts,
    by_reconciler: bool,
) -> Result<NodeReconciled, String> {
    let node_queue = format!("node-{node_id}");
    let read_at_ms = ctx
        .workflow_time()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let workloads = ctx
        .execute_activity(
            NodeActivities::list_workloads,
            (),
            read_options(&node_queue, timeouts),
        )
        .await
        .map_err(|e| format!("agent unreadable: {e}"))?;
    let plan = PlanInput {
        node_id,
        workloads,
        read_at_ms,
    };
    let fixes = ctx
        .execute_local_activity(FleetActivities::reconcile_plan, plan, control_options())
        .await
        .map_err(|e| format!("plan failed: {e}"))?;
    let mut done = NodeReconciled {
        planned: fixes.len(),
        applied: 0,
    };
    for (seq, fix) in fixes.into_iter().enumerate() {
        if fix.kind.needs_agent() {
            ctx.execute_activity(
                NodeActivities::stop_workload,
                fix.instance_id.0,
                timeouts.options(&node_queue),
            )
            .await
            .map_err(|e| format!("could not stop workload {}: {e}", fix.instance_id))?;
        }
        let apply = ApplyFix {
            node_id,
            dedupe_key: format!("{}/{node_id}/{read_at_ms}/{seq}", ctx.workflow_id()),
            fix,
            by_reconciler,
        };
        let applied = ctx
            .execute_local_activity(FleetActivities::reconcile_apply, apply, control_options())
            .await
            .map_err(|e| format!("fix failed: {e}"))?;
        done.applied += usize::from(applied);
    }
    Ok(done)
}

/// Nodes read at once by one reconciler pass.
const NODES_AT_ONCE: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReconcileInput {
    pub node_timeouts: NodeTimeouts,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReconcileOutcome {
    pub nodes: usize,
    pub unreadable: Vec<String>,
    pub fixes_applied: usize,
    /// Instances the API recorded but never started, whose provisioning this run started.
    #[serde(default)]
    pub provisionings_started: usize,
    /// Nodes without a running lifecycle workflow, whose lifecycle this run started.
    #[serde(default)]
    pub lifecycles_started: usize,
}

/// Starts a lifecycle workflow for every node that has none running (an operator terminated
/// it, or it failed), so no node goes unwatched until its agent happens to register again. The
/// run starts with the default timings; the agent's next registration sends the API's.
async fn watch_unwatched(
    ctx: &WorkflowContext<ReconcileFleet>,
    input: &ReconcileInput,
) -> WorkflowResult<usize> {
    let unwatched = ctx
        .execute_local_activity(
            FleetActivities::reconcile_unwatched,
            ctx.task_queue().to_string(),
            control_options(),
        )
        .await?;
    let mut started = 0;
    for node in unwatched {
        let workflow_id = format!("node-lifecycle-{}", node.node_id);
        let lifecycle = NodeLifecycleInput {
            node_id: node.node_id,
            node_name: node.name.clone(),
            config: LifecycleConfig::default(),
            node_timeouts: input.node_timeouts,
            carried: Default::default(),
        };
        let options = abandoned_child(
            workflow_id.clone(),
            WorkflowIdReusePolicy::AllowDuplicate,
            vec![
                search::NODE_ID.value_set(node.node_id.to_string()),
                search::STEP.value_set("registering".to_string()),
            ],
        );
        if ctx
            .start_child_workflow(NodeLifecycle::run, lifecycle, options)
            .await
            .is_err()
        {
            continue; // it runs after all: visibility lagged behind
        }
        let record = WorkflowStarted {
            kind: "lifecycle_started".into(),
            node_id: Some(node.node_id),
            instance_id: None,
            message: format!(
                "node {} had no lifecycle workflow running: started one",
                node.name
            ),
            dedupe_key: format!("{}/{workflow_id}", ctx.workflow_id()),
        };
        record_started(ctx, record).await?;
        started += 1;
    }
    Ok(started)
}

/// Records (once) a workflow this pass had to start.
async fn record_started(
    ctx: &WorkflowContext<ReconcileFleet>,
    record: WorkflowStarted,
) -> WorkflowResult<()> {
    ctx.execute_local_activity(
        FleetActivities::reconcile_record_started,
        record,
        control_options(),
    )
    .await?;
    Ok(())
}

/// Starts the provisioning of instances the API recorded but never started (it died in
/// between). The workflow id is the instance's own, and reuse is rejected, so an instance whose
/// workflow exists is never provisioned twice.
async fn start_unstarted(
    ctx: &WorkflowContext<ReconcileFleet>,
    input: &ReconcileInput,
) -> WorkflowResult<usize> {
    let unstarted = ctx
        .execute_local_activity(FleetActivities::reconcile_unstarted, (), control_options())
        .await?;
    let mut started = 0;
    for u in unstarted {
        let provision = ProvisionInput {
            instance_id: u.instance_id,
            project_id: u.project_id,
            command: u.command,
            capacity_timeout_s: u.capacity_timeout_s,
            node_timeouts: input.node_timeouts,
        };
        let options = abandoned_child(
            u.workflow_id.clone(),
            WorkflowIdReusePolicy::RejectDuplicate,
            vec![
                search::INSTANCE_ID.value_set(u.instance_id.to_string()),
                search::PROJECT_ID.value_set(u.project_id.to_string()),
                search::STEP.value_set("allocating".to_string()),
            ],
        );
        if ctx
            .start_child_workflow(ProvisionInstance::run, provision, options)
            .await
            .is_err()
        {
            continue; // it exists: the instance is merely slow, not lost
        }
        let record = WorkflowStarted {
            kind: "provisioning_started".into(),
            node_id: None,
            instance_id: Some(u.instance_id),
            message: "accepted but never started (the API died before starting its workflow): provisioning started".into(),
            dedupe_key: format!("{}/{}", ctx.workflow_id(), u.workflow_id),
        };
        record_started(ctx, record).await?;
        started += 1;
    }
    Ok(started)
}

/// One reconciliation pass over the fleet, started by the `gpuaas-reconciler` Schedule.
#[workflow]
#[derive(Default)]
pub struct ReconcileFleet;

#[workflow_methods]
impl ReconcileFleet {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ReconcileInput,
    ) -> WorkflowResult<ReconcileOutcome> {
        let ctx = &*ctx;
        ctx.upsert_search_attributes([search::STEP.value_set("reading_agents".to_string())]);
        let targets: Vec<ReconcileTarget> = ctx
            .execute_local_activity(FleetActivities::reconcile_targets, (), control_options())
            .await?;
        ctx.set_current_details(format!("reading {} node agent(s)", targets.len()));
        // Bounded fan-out: Temporal caps pending activities per workflow (2,000 by default).
        let mut results = Vec::with_capacity(targets.len());
        for chunk in targets.chunks(NODES_AT_ONCE) {
            let passes = chunk
                .iter()
                .map(|t| reconcile_node(ctx, t.node_id, &input.node_timeouts, true));
            results.extend(temporalio_sdk::workflows::join_all(passes).await);
        }
        let mut outcome = ReconcileOutcome {
            nodes: targets.len(),
            ..Default::default()
        };
        for (target, result) in targets.iter().zip(results) {
            match result {
                Ok(done) => outcome.fixes_applied += done.applied,
                Err(why) => outcome.unreadable.push(format!("{}: {why}", target.name)),
            }
        }
        // Patched: runs recorded before these steps existed replay without them.
        if ctx.patched("start-unstarted-provisioning") {
            outcome.provisionings_started = start_unstarted(ctx, &input).await?;
        }
        if ctx.patched("watch-unwatched-nodes") {
            outcome.lifecycles_started = watch_unwatched(ctx, &input).await?;
        }
        ctx.upsert_search_attributes([search::STEP.value_set("done".to_string())]);
        ctx.set_current_details(format!(
            "{} node(s) read, {} fix(es) applied, {} provisioning(s) and {} lifecycle(s) started, {} node(s) skipped{}",
            outcome.nodes - outcome.unreadable.len(),
            outcome.fixes_applied,
            outcome.provisionings_started,
            outcome.lifecycles_started,
            outcome.unreadable.len(),
            if outcome.unreadable.is_empty() {
                String::new()
            } else {
                format!(" ({})", outcome.unreadable.join("; "))
            }
        ));
        Ok(outcome)
    }
}
