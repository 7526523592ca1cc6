//! `TerminateInstance`: stop the process on the node → release the GPUs → mark terminated.

use crate::{NodeTimeouts, StepFailure, control_options, search};
use gpuaas_activities::control_plane::{ControlPlaneActivities, TerminatedNote};
use gpuaas_activities::node::NodeActivities;
use serde::{Deserialize, Serialize};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TerminateInput {
    pub instance_id: Uuid,
    /// The node the instance runs on, if it got that far.
    pub node_id: Option<Uuid>,
    pub node_timeouts: NodeTimeouts,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum TerminateOutcome {
    Terminated,
    /// The stop was not confirmed (the node did not answer, or the agent failed): the instance
    /// is terminated for the user, but its GPUs stay allocated (fenced) so no second tenant gets
    /// them while the old process may still run. The reconciler finishes the job.
    TerminatedNodeUnreachable,
}

#[workflow]
#[derive(Default)]
pub struct TerminateInstance;

#[workflow_methods]
impl TerminateInstance {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: TerminateInput,
    ) -> WorkflowResult<TerminateOutcome> {
        let id = input.instance_id;
        let mut outcome = TerminateOutcome::Terminated;
        if let Some(node_id) = input.node_id {
            let node_queue = format!("node-{node_id}");
            step(
                ctx,
                id,
                "stopping_workload",
                format!("stopping the workload on {node_queue}"),
            );
            let stopped = ctx
                .execute_activity(
                    NodeActivities::stop_workload,
                    id,
                    input.node_timeouts.options(&node_queue),
                )
                .await;
            // Whatever kept the stop from being confirmed (a dead node, an agent that refused),
            // the user's instance ends now and its GPUs stay fenced: the reconciler stops the
            // process and releases them once the agent can be read. Never a failed workflow
            // that leaves the instance `terminating` forever.
            if let Err(e) = stopped {
                let why = match StepFailure::of(&e) {
                    StepFailure::NodeUnreachable => "node unreachable".to_string(),
                    _ => format!("stop failed: {e}"),
                };
                step(
                    ctx,
                    id,
                    "stopping_workload",
                    format!("could not confirm the stop ({why}); GPUs stay fenced"),
                );
                outcome = TerminateOutcome::TerminatedNodeUnreachable;
            }
        }
        let message = if outcome == TerminateOutcome::Terminated {
            step(ctx, id, "releasing", "releasing the GPUs");
            ctx.execute_local_activity(ControlPlaneActivities::release, id, control_options())
                .await?;
            None
        } else {
            Some("the stop was not confirmed: its GPUs stay fenced until the reconciler has stopped the process".to_string())
        };
        let note = TerminatedNote {
            instance_id: id,
            message,
        };
        ctx.execute_local_activity(
            ControlPlaneActivities::mark_terminated,
            note,
            control_options(),
        )
        .await?;
        step(ctx, id, "terminated", format!("{outcome:?}"));
        Ok(outcome)
    }
}

fn step(
    ctx: &WorkflowContext<TerminateInstance>,
    id: Uuid,
    name: &str,
    details: impl Into<String>,
) {
    if ctx.search_attributes().get(&search::STEP).as_deref() != Some(name) {
        ctx.upsert_search_attributes([search::STEP.value_set(name.to_string())]);
    }
    ctx.set_current_details(format!("instance {id}: {}", details.into()));
}
