//! `ProvisionInstance`: allocate → start on the node → wait until running → mark running.
//! On failure the undo steps run in reverse; each is idempotent.

use crate::{NodeTimeouts, StepFailure, control_options, describe_exit, search};
use gpuaas_activities::control_plane::{
    Allocation, FailureReason, InstanceState, Placement, Transition,
};
use gpuaas_activities::control_plane::{ControlPlaneActivities, FailInstance, TerminatedNote};
use gpuaas_activities::failure_types;
use gpuaas_activities::node::{NodeActivities, WorkloadSpec, WorkloadStatus};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProvisionInput {
    pub instance_id: Uuid,
    pub project_id: Uuid,
    pub command: String,
    /// How long to wait for capacity when nothing fits; 0 fails at once.
    pub capacity_timeout_s: u64,
    pub node_timeouts: NodeTimeouts,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ProvisionOutcome {
    Running {
        node_id: Uuid,
        gpu_indices: Vec<i32>,
    },
    Failed {
        reason: FailureReason,
        message: String,
    },
    /// The instance was deleted while provisioning; everything was undone.
    Withdrawn,
}

/// Undo steps, pushed before the step they undo runs (its side effect may happen even if the
/// activity's completion is lost).
#[derive(Debug, Clone)]
enum Undo {
    Release,
    StopWorkload { node_queue: String },
}

enum Abort {
    Failed(FailureReason, String),
    NotWanted,
}

/// Longest pause between two placement attempts while waiting for capacity.
const MAX_CAPACITY_POLL: Duration = Duration::from_secs(15);

#[workflow]
#[derive(Default)]
pub struct ProvisionInstance;

#[workflow_methods]
impl ProvisionInstance {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ProvisionInput,
    ) -> WorkflowResult<ProvisionOutcome> {
        let mut undo = Vec::new();
        let result = provision(ctx, &input, &mut undo).await;
        let outcome = match result {
            Ok(allocation) => {
                step(
                    ctx,
                    &input,
                    "running",
                    format!(
                        "running on node {} (GPUs {:?})",
                        allocation.node_name, allocation.gpu_indices
                    ),
                );
                return Ok(ProvisionOutcome::Running {
                    node_id: allocation.node_id.0,
                    gpu_indices: allocation.gpu_indices,
                });
            }
            Err(Abort::Failed(reason, message)) => ProvisionOutcome::Failed { reason, message },
            Err(Abort::NotWanted) => ProvisionOutcome::Withdrawn,
        };
        step(
            ctx,
            &input,
            "compensating",
            format!("undoing {} step(s) in reverse", undo.len()),
        );
        compensate(ctx, &input, undo).await;
        Ok(record_outcome(ctx, &input, outcome).await?)
    }
}

/// Records a failed or withdrawn provisioning on the instance. A failure that races a delete
/// (the instance is `terminating` by now) ends as withdrawn: the user asked for it to go away.
async fn record_outcome(
    ctx: &WorkflowContext<ProvisionInstance>,
    input: &ProvisionInput,
    outcome: ProvisionOutcome,
) -> Result<ProvisionOutcome, temporalio_sdk::ActivityExecutionError> {
    let id = input.instance_id;
    if let ProvisionOutcome::Failed { reason, message } = &outcome {
        let fail = FailInstance {
            instance_id: id,
            reason: *reason,
            message: message.clone(),
        };
        let marked = ctx
            .execute_local_activity(ControlPlaneActivities::mark_failed, fail, control_options())
            .await?;
        if !matches!(marked, Transition::Refused(InstanceState::Terminating)) {
            step(
                ctx,
                input,
                "failed",
                format!("failed: {}: {message}", reason.as_str()),
            );
            return Ok(outcome);
        }
    }
    let note = TerminatedNote {
        instance_id: id,
        message: Some("deleted while provisioning".into()),
    };
    ctx.execute_local_activity(
        ControlPlaneActivities::mark_terminated,
        note,
        control_options(),
    )
    .await?;
    step(
        ctx,
        input,
        "terminated",
        "deleted while provisioning; everything undone",
    );
    Ok(ProvisionOutcome::Withdrawn)
}

/// Sets the step everywhere an operator looks: the search attribute and the UI's current details.
fn step(
    ctx: &WorkflowContext<ProvisionInstance>,
    input: &ProvisionInput,
    name: &str,
    details: impl Into<String>,
) {
    // Each upsert is a visibility write on the server: skip ones that change nothing.
    if ctx.search_attributes().get(&search::STEP).as_deref() != Some(name) {
        ctx.upsert_search_attributes([search::STEP.value_set(name.to_string())]);
    }
    ctx.set_current_details(format!(
        "instance {}: {}",
        input.instance_id,
        details.into()
    ));
}

async fn provision(
    ctx: &WorkflowContext<ProvisionInstance>,
    input: &ProvisionInput,
    undo: &mut Vec<Undo>,
) -> Result<Allocation, Abort> {
    let id = input.instance_id;

    // 1. Allocate, waiting for capacity up to the request's capacity timeout.
    undo.push(Undo::Release);
    let allocation = allocate_with_capacity_wait(ctx, input).await?;
    let node_queue = format!("node-{}", allocation.node_id);
    // One upsert for node and step (the step() below then finds nothing to change).
    ctx.upsert_search_attributes([
        search::NODE_ID.value_set(allocation.node_id.to_string()),
        search::STEP.value_set("starting_workload".to_string()),
    ]);

    // 2. Start the workload on the node, over the node's own task queue.
    step(
        ctx,
        input,
        "starting_workload",
        format!(
            "waiting for the agent of node {} to start the workload on GPUs {:?} (task queue {node_queue}; node_unreachable if no agent picks it up within {}s)",
            allocation.node_name, allocation.gpu_indices, input.node_timeouts.schedule_to_start_s
        ),
    );
    undo.push(Undo::StopWorkload {
        node_queue: node_queue.clone(),
    });
    let spec = WorkloadSpec {
        instance_id: id,
        command: input.command.clone(),
        gpu_indices: allocation.gpu_indices.clone(),
        gpu_uuids: allocation.gpu_uuids.clone(),
    };
    let options = input.node_timeouts.options(&node_queue);
    let started = ctx
        .execute_activity(NodeActivities::start_workload, spec, options.clone())
        .await;
    node_step_result(started, &allocation.node_name)?;

    // 3. Wait until the agent reports the process up and settled.
    step(
        ctx,
        input,
        "awaiting_running",
        format!(
            "waiting for the agent of node {} to report the workload running",
            allocation.node_name
        ),
    );
    let running = ctx
        .execute_activity(NodeActivities::await_workload_running, id, options)
        .await;
    node_step_result(running, &allocation.node_name)?;

    // 4. Mark the instance running, unless it was deleted meanwhile.
    let marked = ctx
        .execute_local_activity(ControlPlaneActivities::mark_running, id, control_options())
        .await
        .map_err(|e| Abort::Failed(FailureReason::Timeout, e.to_string()))?;
    match marked {
        Transition::Applied | Transition::AlreadyThere => Ok(allocation),
        Transition::Refused(_) => Err(Abort::NotWanted),
    }
}

async fn allocate_with_capacity_wait(
    ctx: &WorkflowContext<ProvisionInstance>,
    input: &ProvisionInput,
) -> Result<Allocation, Abort> {
    let started = ctx.workflow_time().unwrap_or(SystemTime::UNIX_EPOCH);
    let deadline = started + Duration::from_secs(input.capacity_timeout_s);
    let mut pause = Duration::from_secs(1);
    loop {
        step(
            ctx,
            input,
            "allocating",
            "choosing a node and allocating GPUs",
        );
        let placement = ctx
            .execute_local_activity(
                ControlPlaneActivities::allocate,
                input.instance_id,
                control_options(),
            )
            .await;
        let explanation = match placement {
            Ok(Placement::Placed(allocation)) => return Ok(allocation),
            Ok(Placement::NoCapacity { explanation }) => explanation,
            Err(e) => {
                return Err(match StepFailure::of(&e) {
                    StepFailure::Application(t) if t == failure_types::NOT_WANTED => {
                        Abort::NotWanted
                    }
                    _ => Abort::Failed(FailureReason::Timeout, e.to_string()),
                });
            }
        };
        let now = ctx.workflow_time().unwrap_or(started);
        let left = deadline.duration_since(now).unwrap_or_default();
        if left.is_zero() {
            return Err(Abort::Failed(
                FailureReason::InsufficientCapacity,
                explanation,
            ));
        }
        let wait = pause.min(left);
        step(
            ctx,
            input,
            "waiting_for_capacity",
            format!(
                "waiting for capacity ({}s left of capacity_timeout): {explanation}; next try in {}s",
                left.as_secs(),
                wait.as_secs_f32()
            ),
        );
        let _ = ctx.timer(wait).await;
        pause = (pause * 2).min(MAX_CAPACITY_POLL);
    }
}

fn node_step_result(
    result: Result<WorkloadStatus, temporalio_sdk::ActivityExecutionError>,
    node_name: &str,
) -> Result<WorkloadStatus, Abort> {
    match result {
        Ok(status @ WorkloadStatus::Running { .. }) => Ok(status),
        Ok(other) => Err(Abort::Failed(
            FailureReason::StartFailed,
            describe_exit(&other),
        )),
        Err(e) => Err(match StepFailure::of(&e) {
            StepFailure::NodeUnreachable => Abort::Failed(
                FailureReason::NodeUnreachable,
                format!("the agent of node {node_name} did not pick up the task in time"),
            ),
            StepFailure::TimedOut => Abort::Failed(FailureReason::Timeout, e.to_string()),
            _ => Abort::Failed(FailureReason::StartFailed, root_message(&e)),
        }),
    }
}

/// The innermost failure message (the agent's own words rather than the wrapper's).
fn root_message(e: &temporalio_sdk::ActivityExecutionError) -> String {
    match e.failure() {
        Some(f) => {
            let mut f = f;
            while let Some(cause) = f.cause.as_deref() {
                f = cause;
            }
            f.message.clone()
        }
        None => e.to_string(),
    }
}

async fn compensate(
    ctx: &WorkflowContext<ProvisionInstance>,
    input: &ProvisionInput,
    undo: Vec<Undo>,
) {
    // Set when the workload could not be confirmed stopped: its GPUs must then stay allocated
    // (fenced) until the node's agent answers and the reconciler stops it.
    let mut fenced = false;
    for step in undo.into_iter().rev() {
        match step {
            Undo::StopWorkload { node_queue } => {
                let options = input.node_timeouts.options(&node_queue);
                // On a dead host this fails after schedule-to-start; the process (if any) is
                // then an orphan for the reconciler, and the step is logged, not retried forever.
                if let Err(e) = ctx
                    .execute_activity(NodeActivities::stop_workload, input.instance_id, options)
                    .await
                {
                    ctx.set_current_details(format!(
                        "instance {}: could not stop workload on {node_queue}: {e}",
                        input.instance_id
                    ));
                    fenced = ctx.patched(FENCE_UNCONFIRMED_STOP);
                }
            }
            Undo::Release if fenced => {
                ctx.set_current_details(format!(
                    "instance {}: GPUs stay fenced until the node's agent confirms the workload is gone",
                    input.instance_id
                ));
            }
            Undo::Release => {
                // Retried until the database answers: a leaked allocation is worse than a wait.
                let _ = ctx
                    .execute_local_activity(
                        ControlPlaneActivities::release,
                        input.instance_id,
                        control_options(),
                    )
                    .await;
            }
        }
    }
}

/// Patch id: histories recorded before it released GPUs even when the stop was unconfirmed.
const FENCE_UNCONFIRMED_STOP: &str = "fence-unconfirmed-stop";
