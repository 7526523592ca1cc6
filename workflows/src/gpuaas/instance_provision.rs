//! `ProvisionInstance`: allocate → start on the node → wait until running → mark running.
//! On failure the undo steps run in reverse; each is idempotent.

use super::node_call::{self, NodeCallError};
use super::options::{abandoned_child, control_options, seal_options, start_once};
use super::vocabulary::{self, InstanceStep, activity, search, workflow};
use super::{ActivityStep, NodeTimeouts, show_step};
use crate::failure::{ActivityFailure, root_message};
use activities::gpuaas::instance::{FailInstance, InstanceActivities, TerminatedNote};
use activities::gpuaas::{Allocation, FailureReason, InstanceState, Placement, Transition};
use contract_node::envelope::SealedText;
use contract_node::{WorkloadStatus, vocabulary as node};
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId, ProjectId};
use std::time::{Duration, SystemTime};
use temporalio_client::Client;
use temporalio_client::errors::WorkflowStartError;
use temporalio_common::search_attributes::SearchAttributeUpdate;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ChildWorkflowOptions, WorkflowContext, WorkflowResult};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProvisionInput {
    pub instance_id: InstanceId,
    pub project_id: ProjectId,
    /// How long to wait for capacity when nothing fits; 0 fails at once.
    pub capacity_timeout_s: u64,
    pub node_timeouts: NodeTimeouts,
    /// Who asked: the steps this workflow takes on their behalf are theirs. `None` in histories
    /// recorded before IAM, and for the platform's own starts.
    #[serde(default)]
    pub requested_by: Option<shared_kernel::Principal>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ProvisionOutcome {
    Running {
        node_id: NodeId,
        gpu_indices: Vec<i32>,
    },
    Failed {
        reason: FailureReason,
        message: String,
    },
    /// The instance was deleted while provisioning; everything was undone.
    Withdrawn,
}

/// The activities of a successful provisioning, in order.
pub const ACTIVITIES: &[ActivityStep] = &[
    ActivityStep::worker(activity::ALLOCATE),
    ActivityStep::worker(activity::PREPARE_NODE_CALL),
    ActivityStep::agent(node::activity::START_WORKLOAD),
    ActivityStep::worker(activity::PREPARE_NODE_CALL),
    ActivityStep::agent(node::activity::AWAIT_WORKLOAD_RUNNING),
    ActivityStep::worker(activity::MARK_RUNNING),
];

/// The workflow's id, start options and search attributes: every caller (the API, the
/// reconciler) starts it through these.
pub fn workflow_id(instance: InstanceId) -> String {
    vocabulary::instance_provision_id(instance)
}

fn search_attributes(input: &ProvisionInput) -> Vec<SearchAttributeUpdate> {
    vec![
        search::INSTANCE_ID.value_set(input.instance_id.to_string()),
        search::PROJECT_ID.value_set(input.project_id.to_string()),
        search::STEP.value_set(InstanceStep::Allocating.as_str().to_string()),
    ]
}

/// Starts the instance's provisioning, or finds it started (a retried request).
pub async fn start(
    client: &Client,
    task_queue: &str,
    input: ProvisionInput,
) -> Result<(), WorkflowStartError> {
    let id = workflow_id(input.instance_id);
    let attributes = search_attributes(&input);
    start_once(
        client,
        task_queue,
        id,
        attributes,
        ProvisionInstance::run,
        input,
    )
    .await
}

/// Options to start it from another workflow (it outlives its starter; reuse is rejected, so
/// an instance whose workflow exists is never provisioned twice).
pub(crate) fn child_options(input: &ProvisionInput) -> ChildWorkflowOptions {
    abandoned_child(
        workflow_id(input.instance_id),
        temporalio_sdk::WorkflowIdReusePolicy::RejectDuplicate,
        search_attributes(input),
    )
}

/// Undo steps, pushed before the step they undo runs (its side effect may happen even if the
/// activity's completion is lost).
#[derive(Debug, Clone)]
enum Undo {
    Release,
    StopWorkload { node_id: NodeId },
}

enum Abort {
    Failed(FailureReason, String),
    /// The workload exited during its start: a `StartFailed` with the workload's last output,
    /// sealed by the node, which only the instance's status shows (opened by `mark_failed`).
    Exited(String, Option<SealedText>),
    NotWanted,
}

/// Longest pause between two placement attempts while waiting for capacity.
const MAX_CAPACITY_POLL: Duration = Duration::from_secs(15);

#[workflow]
#[derive(Default)]
pub struct ProvisionInstance;

#[workflow_methods]
impl ProvisionInstance {
    #[run(name = workflow::PROVISION_INSTANCE)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ProvisionInput,
    ) -> WorkflowResult<ProvisionOutcome> {
        let mut undo = Vec::new();
        let result = provision(ctx, &input, &mut undo).await;
        let mut output = None;
        let outcome = match result {
            Ok(allocation) => {
                step(
                    ctx,
                    &input,
                    InstanceStep::Running,
                    format!(
                        "running on node {} (GPUs {:?})",
                        allocation.node_name, allocation.gpu_indices
                    ),
                );
                return Ok(ProvisionOutcome::Running {
                    node_id: allocation.node_id,
                    gpu_indices: allocation.gpu_indices,
                });
            }
            Err(Abort::Failed(reason, message)) => ProvisionOutcome::Failed { reason, message },
            Err(Abort::Exited(message, sealed)) => {
                output = sealed;
                ProvisionOutcome::Failed {
                    reason: FailureReason::StartFailed,
                    message,
                }
            }
            Err(Abort::NotWanted) => ProvisionOutcome::Withdrawn,
        };
        details(
            ctx,
            &input,
            format!("compensating: undoing {} step(s) in reverse", undo.len()),
        );
        compensate(ctx, &input, undo).await;
        Ok(record_outcome(ctx, &input, outcome, output).await?)
    }
}

/// Records a failed or withdrawn provisioning on the instance. A failure that races a delete
/// (the instance is `terminating` by now) ends as withdrawn: the user asked for it to go away.
async fn record_outcome(
    ctx: &WorkflowContext<ProvisionInstance>,
    input: &ProvisionInput,
    outcome: ProvisionOutcome,
    output: Option<SealedText>,
) -> Result<ProvisionOutcome, temporalio_sdk::ActivityExecutionError> {
    let id = input.instance_id;
    if let ProvisionOutcome::Failed { reason, message } = &outcome {
        let fail = FailInstance {
            instance_id: id,
            reason: *reason,
            message: message.clone(),
            output,
        };
        let marked = ctx
            .execute_local_activity(InstanceActivities::mark_failed, fail, control_options())
            .await?;
        if !matches!(marked, Transition::Refused(InstanceState::Terminating)) {
            step(
                ctx,
                input,
                InstanceStep::Failed,
                format!("failed: {}: {message}", reason.as_str()),
            );
            return Ok(outcome);
        }
    }
    let note = TerminatedNote {
        instance_id: id,
        message: Some("deleted while provisioning".into()),
    };
    ctx.execute_local_activity(InstanceActivities::mark_terminated, note, control_options())
        .await?;
    step(
        ctx,
        input,
        InstanceStep::Terminated,
        "deleted while provisioning; everything undone",
    );
    Ok(ProvisionOutcome::Withdrawn)
}

/// Sets the step everywhere an operator looks: the search attribute and the UI's current
/// details. Only before a command (an activity on a node, a timer, the end): see the module docs.
fn step(
    ctx: &WorkflowContext<ProvisionInstance>,
    input: &ProvisionInput,
    step: InstanceStep,
    words: impl Into<String>,
) {
    show_step(ctx, step);
    details(ctx, input, words);
}

/// The UI's current details only (no command: safe right before a local activity).
fn details(
    ctx: &WorkflowContext<ProvisionInstance>,
    input: &ProvisionInput,
    words: impl Into<String>,
) {
    ctx.set_current_details(format!("instance {}: {}", input.instance_id, words.into()));
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
    let node_queue = node::task_queue(allocation.node_id);
    // One upsert for node and step (the step() below then finds nothing to change).
    ctx.upsert_search_attributes([
        search::NODE_ID.value_set(allocation.node_id.to_string()),
        search::STEP.value_set(InstanceStep::StartingWorkload.as_str().to_string()),
    ]);

    // 2. Start the workload on the node, over the node's own task queue.
    step(
        ctx,
        input,
        InstanceStep::StartingWorkload,
        format!(
            "waiting for the agent of node {} to start the workload on GPUs {:?} (task queue {node_queue}; node_unreachable if no agent picks it up within {}s)",
            allocation.node_name, allocation.gpu_indices, input.node_timeouts.schedule_to_start_s
        ),
    );
    undo.push(Undo::StopWorkload {
        node_id: allocation.node_id,
    });
    let options = input.node_timeouts.options(&node_queue);
    let gpus = (allocation.gpu_indices.clone(), allocation.gpu_uuids.clone());
    let started = node_call::start_workload(
        ctx,
        allocation.node_id,
        id,
        gpus,
        seal_options(),
        options.clone(),
    )
    .await;
    node_step_result(started, &allocation.node_name)?;

    // 3. Wait until the agent reports the process up and settled.
    step(
        ctx,
        input,
        InstanceStep::AwaitingRunning,
        format!(
            "waiting for the agent of node {} to report the workload running",
            allocation.node_name
        ),
    );
    let running =
        node_call::await_running(ctx, allocation.node_id, id, seal_options(), options).await;
    node_step_result(running, &allocation.node_name)?;

    // 4. Mark the instance running, unless it was deleted meanwhile.
    let marked = ctx
        .execute_local_activity(InstanceActivities::mark_running, id, control_options())
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
        // Details only: the step stays `allocating` (set at start) or `waiting_for_capacity`
        // while placement is retried, and no command goes out beside the local activity.
        details(ctx, input, "choosing a node and allocating GPUs");
        let placement = ctx
            .execute_local_activity(
                InstanceActivities::allocate,
                input.instance_id,
                control_options(),
            )
            .await;
        let explanation = match placement {
            Ok(Placement::Placed(allocation)) => return Ok(allocation),
            Ok(Placement::NotWanted { .. }) => return Err(Abort::NotWanted),
            // Policy said no (quota, plan): waiting for capacity cannot change that. Nothing was
            // allocated; the instance fails at once with the refusal as its message.
            Ok(Placement::Refused { code, reason }) => {
                return Err(Abort::Failed(
                    FailureReason::InsufficientCapacity,
                    format!("{code}: {reason}"),
                ));
            }
            Ok(Placement::NoCapacity { explanation }) => explanation,
            Err(e) => return Err(Abort::Failed(FailureReason::Timeout, e.to_string())),
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
            InstanceStep::WaitingForCapacity,
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
    result: Result<WorkloadStatus, NodeCallError>,
    node_name: &str,
) -> Result<WorkloadStatus, Abort> {
    let e = match result {
        Ok(status @ WorkloadStatus::Running { .. }) => return Ok(status),
        Ok(other) => {
            let output = match &other {
                WorkloadStatus::Exited { output, .. } => output.clone(),
                _ => None,
            };
            return Err(Abort::Exited(describe_exit(&other), output));
        }
        Err(NodeCallError::Node(e)) => e,
        // Nothing was sent, or the answer is not the node's: either way the start is not
        // confirmed, and the compensation's stop (also checked) decides what is released.
        Err(e @ (NodeCallError::Seal(_) | NodeCallError::Forged(_))) => {
            return Err(Abort::Failed(FailureReason::StartFailed, e.to_string()));
        }
    };
    Err(match ActivityFailure::of(&e) {
        ActivityFailure::NotPickedUp => Abort::Failed(
            FailureReason::NodeUnreachable,
            format!("the agent of node {node_name} did not pick up the task in time"),
        ),
        ActivityFailure::TimedOut => Abort::Failed(FailureReason::Timeout, e.to_string()),
        ActivityFailure::Failed { .. } | ActivityFailure::Other => {
            Abort::Failed(FailureReason::StartFailed, root_message(&e))
        }
    })
}

fn describe_exit(status: &WorkloadStatus) -> String {
    match status {
        WorkloadStatus::Running { pid } => format!("running as pid {pid}"),
        WorkloadStatus::Exited { exit_code, .. } => {
            let code = exit_code.map_or("none (killed by a signal)".to_string(), |c| c.to_string());
            format!("the workload exited (exit code {code})")
        }
        WorkloadStatus::Unknown => "unknown to the agent".to_string(),
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
    for undo_step in undo.into_iter().rev() {
        match undo_step {
            Undo::StopWorkload { node_id } => {
                let node_queue = node::task_queue(node_id);
                // The step shows while the stop may wait on a dead host; a release alone is too
                // short to show (and is a local activity: no upsert beside it).
                step(
                    ctx,
                    input,
                    InstanceStep::Compensating,
                    format!("compensating: stopping the workload on {node_queue}"),
                );
                let options = input.node_timeouts.options(&node_queue);
                // On a dead host this fails after schedule-to-start; the process (if any) is
                // then an orphan for the reconciler, and the step is logged, not retried forever.
                let stopped = node_call::stop_workload(
                    ctx,
                    node_id,
                    input.instance_id,
                    seal_options(),
                    options,
                )
                .await;
                if let Err(e) = stopped {
                    details(
                        ctx,
                        input,
                        format!("could not stop workload on {node_queue}: {e}"),
                    );
                    fenced = true;
                }
            }
            Undo::Release if fenced => {
                details(
                    ctx,
                    input,
                    "GPUs stay fenced until the node's agent confirms the workload is gone",
                );
            }
            Undo::Release => {
                // Retried until the database answers: a leaked allocation is worse than a wait.
                let _ = ctx
                    .execute_local_activity(
                        InstanceActivities::release,
                        input.instance_id,
                        control_options(),
                    )
                    .await;
            }
        }
    }
}
