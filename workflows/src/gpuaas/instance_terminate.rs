//! `TerminateInstance`: stop the process on the node → release the GPUs → mark terminated.

use super::node_call::{self, NodeCallError};
use super::options::{abandoned_child, control_options, seal_options};
use super::vocabulary::{self, InstanceStep, activity, search, workflow};
use super::{ActivityStep, NodeTimeouts, show_step};
use crate::failure::ActivityFailure;
use activities::gpuaas::instance::{InstanceActivities, TerminatedNote};
use contract_node::vocabulary as node;
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId, ProjectId};
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{Client, WorkflowIdConflictPolicy, WorkflowStartOptions};
use temporalio_common::search_attributes::{SearchAttributeUpdate, SearchAttributes};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ChildWorkflowOptions, WorkflowContext, WorkflowResult};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TerminateInput {
    pub instance_id: InstanceId,
    pub project_id: ProjectId,
    /// The node the instance runs on, if it got that far.
    pub node_id: Option<NodeId>,
    pub node_timeouts: NodeTimeouts,
    /// Who asked: the steps this workflow takes on their behalf are theirs. `None` in histories
    /// recorded before IAM, and for the platform's own starts.
    #[serde(default)]
    pub requested_by: Option<shared_kernel::Principal>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum TerminateOutcome {
    Terminated,
    /// The stop was not confirmed (the node did not answer, or the agent failed): the instance
    /// is terminated for the user, but its GPUs stay allocated (fenced) so no second tenant gets
    /// them while the old process may still run. The reconciler finishes the job.
    TerminatedNodeUnreachable,
}

/// The activities of a successful termination, in order.
pub const ACTIVITIES: &[ActivityStep] = &[
    ActivityStep::worker(activity::PREPARE_NODE_CALL),
    ActivityStep::agent(node::activity::STOP_WORKLOAD),
    ActivityStep::worker(activity::RELEASE),
    ActivityStep::worker(activity::MARK_TERMINATED),
];

pub fn workflow_id(instance: InstanceId) -> String {
    vocabulary::instance_terminate_id(instance)
}

fn search_attributes(input: &TerminateInput) -> Vec<SearchAttributeUpdate> {
    let mut attributes = vec![
        search::INSTANCE_ID.value_set(input.instance_id.to_string()),
        search::PROJECT_ID.value_set(input.project_id.to_string()),
        search::STEP.value_set(InstanceStep::StoppingWorkload.as_str().to_string()),
    ];
    if let Some(node) = input.node_id {
        attributes.push(search::NODE_ID.value_set(node.to_string()));
    }
    attributes
}

/// Starts the instance's termination, or finds it running or completed (a retried request). A
/// run that failed (or was terminated) is started again: every step is idempotent, and the
/// instance would otherwise stay `terminating` forever.
pub async fn start(
    client: &Client,
    task_queue: &str,
    input: TerminateInput,
) -> Result<(), WorkflowStartError> {
    let options = WorkflowStartOptions::new(task_queue.to_string(), workflow_id(input.instance_id))
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(temporalio_client::WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
        .search_attributes(SearchAttributes::new(search_attributes(&input)))
        .build();
    match client
        .start_workflow(TerminateInstance::run, input, options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Options to start it from another workflow (a drain): it outlives its starter.
pub(crate) fn child_options(input: &TerminateInput) -> ChildWorkflowOptions {
    abandoned_child(
        workflow_id(input.instance_id),
        temporalio_sdk::WorkflowIdReusePolicy::RejectDuplicate,
        search_attributes(input),
    )
}

/// Options for the reconciler to (re)start a termination nobody runs: like [`start`], a failed
/// run may be followed by a new one.
pub(crate) fn restart_options(input: &TerminateInput) -> ChildWorkflowOptions {
    abandoned_child(
        workflow_id(input.instance_id),
        temporalio_sdk::WorkflowIdReusePolicy::AllowDuplicateFailedOnly,
        search_attributes(input),
    )
}

#[workflow]
#[derive(Default)]
pub struct TerminateInstance;

#[workflow_methods]
impl TerminateInstance {
    #[run(name = workflow::TERMINATE_INSTANCE)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: TerminateInput,
    ) -> WorkflowResult<TerminateOutcome> {
        let id = input.instance_id;
        let mut outcome = TerminateOutcome::Terminated;
        if let Some(node_id) = input.node_id {
            let node_queue = node::task_queue(node_id);
            step(
                ctx,
                id,
                InstanceStep::StoppingWorkload,
                format!("stopping the workload on {node_queue}"),
            );
            let stopped = node_call::stop_workload(
                ctx,
                node_id,
                id,
                seal_options(),
                input.node_timeouts.options(&node_queue),
            )
            .await;
            // Whatever kept the stop from being confirmed (a dead node, an agent that refused),
            // the user's instance ends now and its GPUs stay fenced: the reconciler stops the
            // process and releases them once the agent can be read. Never a failed workflow
            // that leaves the instance `terminating` forever.
            if let Err(e) = stopped {
                let why = match &e {
                    NodeCallError::Node(e)
                        if matches!(ActivityFailure::of(e), ActivityFailure::NotPickedUp) =>
                    {
                        "node unreachable".to_string()
                    }
                    _ => format!("stop failed: {e}"),
                };
                details(
                    ctx,
                    id,
                    format!("could not confirm the stop ({why}); GPUs stay fenced"),
                );
                outcome = TerminateOutcome::TerminatedNodeUnreachable;
            }
        }
        let message = if outcome == TerminateOutcome::Terminated {
            // Details only: the release is a local activity (no upsert beside it).
            details(ctx, id, "releasing the GPUs");
            ctx.execute_local_activity(InstanceActivities::release, id, control_options())
                .await?;
            None
        } else {
            Some("the stop was not confirmed: its GPUs stay fenced until the reconciler has stopped the process".to_string())
        };
        let note = TerminatedNote {
            instance_id: id,
            message,
        };
        ctx.execute_local_activity(InstanceActivities::mark_terminated, note, control_options())
            .await?;
        step(ctx, id, InstanceStep::Terminated, format!("{outcome:?}"));
        Ok(outcome)
    }
}

/// The step in the search attribute and the details; only before a command (module docs).
fn step(
    ctx: &WorkflowContext<TerminateInstance>,
    id: InstanceId,
    step: InstanceStep,
    words: impl Into<String>,
) {
    show_step(ctx, step);
    details(ctx, id, words);
}

fn details(ctx: &WorkflowContext<TerminateInstance>, id: InstanceId, words: impl Into<String>) {
    ctx.set_current_details(format!("instance {id}: {}", words.into()));
}
