//! `ReconcileFleet`: one reconciliation pass over the fleet, started by a Temporal Schedule
//! ([`ensure_schedule`]). It runs [`reconcile_node`] over every node whose agent should answer,
//! finishes every instance in flight that no workflow carries (starts the provisioning of one
//! the API recorded but never started, the termination of a `terminating` one nobody unwinds;
//! fails one whose provisioning ended without finishing it), and starts a lifecycle for every
//! node nobody watches.

use super::instance_provision::{self, ProvisionInput, ProvisionInstance};
use super::instance_terminate::{self, TerminateInput, TerminateInstance};
use super::node_lifecycle::{self, LifecycleConfig, NodeLifecycle, NodeLifecycleInput};
use super::node_reconcile::reconcile_node;
use super::options::reconcile_options;
use super::vocabulary::{self, ReconcileStep, workflow};
use super::{NodeTimeouts, show_step};
use activities::gpuaas::reconcile::{
    ReconcileActivities, ReconcileTarget, Restart, Started, Unstarted, WorkflowStarted,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use temporalio_client::Client;
use temporalio_client::schedules::{ScheduleAction, ScheduleError};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// Nodes read at once by one reconciler pass (Temporal caps pending activities per workflow at
/// 2,000 by default).
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
    pub provisionings_started: usize,
    /// `terminating` instances nobody unwound, whose termination this run started.
    #[serde(default)]
    pub terminations_started: usize,
    /// Nodes without a running lifecycle workflow, whose lifecycle this run started.
    pub lifecycles_started: usize,
}

pub use crate::schedule::ScheduleChange;

/// Creates the reconciler's Schedule on `task_queue`, or updates its interval and input if it
/// exists.
pub async fn ensure_schedule(
    client: &Client,
    task_queue: &str,
    every: Duration,
) -> Result<ScheduleChange, ScheduleError> {
    let id = vocabulary::reconciler_schedule_id(task_queue);
    let action = ScheduleAction::start_workflow(
        ReconcileFleet::run,
        ReconcileInput {
            node_timeouts: NodeTimeouts::default(),
        },
        task_queue.to_string(),
        id.clone(),
    );
    let note = "gpuaas orphan reconciler (created by gpuaas-worker)";
    crate::schedule::ensure(client, id, action, every, note).await
}

#[workflow]
#[derive(Default)]
pub struct ReconcileFleet;

#[workflow_methods]
impl ReconcileFleet {
    #[run(name = workflow::RECONCILE_FLEET)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ReconcileInput,
    ) -> WorkflowResult<ReconcileOutcome> {
        let ctx = &*ctx;
        let targets: Vec<ReconcileTarget> = ctx
            .execute_activity(ReconcileActivities::targets, (), reconcile_options())
            .await?;
        show_step(ctx, ReconcileStep::ReadingAgents);
        ctx.set_current_details(format!("reading {} node agent(s)", targets.len()));
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
        (outcome.provisionings_started, outcome.terminations_started) =
            start_unstarted(ctx, &input).await?;
        outcome.lifecycles_started = watch_unwatched(ctx, &input).await?;
        show_step(ctx, ReconcileStep::Done);
        ctx.set_current_details(format!(
            "{} node(s) read, {} fix(es) applied, {} provisioning(s), {} termination(s) and {} lifecycle(s) started, {} node(s) skipped{}",
            outcome.nodes - outcome.unreadable.len(),
            outcome.fixes_applied,
            outcome.provisionings_started,
            outcome.terminations_started,
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

/// Starts the workflow of every instance in flight that none carries (the activity describes
/// their workflows): the provisioning of one the API recorded but never started, the termination
/// of a `terminating` one nobody unwinds. Workflow ids are the instance's own: a provisioning
/// rejects reuse, so an instance is never provisioned twice; a termination may rerun only after
/// a failed run (every step of it is idempotent). Returns (provisionings, terminations) started.
async fn start_unstarted(
    ctx: &WorkflowContext<ReconcileFleet>,
    input: &ReconcileInput,
) -> WorkflowResult<(usize, usize)> {
    let unstarted = ctx
        .execute_activity(ReconcileActivities::unstarted, (), reconcile_options())
        .await?;
    let (mut provisionings, mut terminations) = (0, 0);
    for u in unstarted {
        let (kind, workflow_id) = match u.start {
            Restart::Provisioning => (
                Started::Provisioning,
                start_provisioning(ctx, input, &u).await,
            ),
            Restart::Termination => (
                Started::Termination,
                start_termination(ctx, input, &u).await,
            ),
        };
        let Some(workflow_id) = workflow_id else {
            continue; // it exists: the instance is merely slow, not lost
        };
        let message = if u.why.is_empty() {
            "accepted but never started (the API died before starting its workflow): provisioning started".into()
        } else {
            u.why
        };
        let record = WorkflowStarted {
            kind,
            node_id: u.node_id,
            instance_id: Some(u.instance_id),
            message,
            dedupe_key: format!("{}/{workflow_id}", ctx.workflow_id()),
        };
        record_started(ctx, record).await?;
        match kind {
            Started::Termination => terminations += 1,
            _ => provisionings += 1,
        }
    }
    Ok((provisionings, terminations))
}

/// Starts `u`'s provisioning; its workflow id, or `None` if it exists.
async fn start_provisioning(
    ctx: &WorkflowContext<ReconcileFleet>,
    input: &ReconcileInput,
    u: &Unstarted,
) -> Option<String> {
    let provision = ProvisionInput {
        requested_by: Some(shared_kernel::Principal::system("reconciler")),
        instance_id: u.instance_id,
        project_id: u.project_id,
        capacity_timeout_s: u.capacity_timeout_s,
        node_timeouts: input.node_timeouts,
    };
    let options = instance_provision::child_options(&provision);
    ctx.start_child_workflow(ProvisionInstance::run, provision, options)
        .await
        .ok()
        .map(|_| instance_provision::workflow_id(u.instance_id))
}

/// Starts `u`'s termination; its workflow id, or `None` if it runs (or completed) after all.
async fn start_termination(
    ctx: &WorkflowContext<ReconcileFleet>,
    input: &ReconcileInput,
    u: &Unstarted,
) -> Option<String> {
    let terminate = TerminateInput {
        requested_by: Some(shared_kernel::Principal::system("reconciler")),
        instance_id: u.instance_id,
        project_id: u.project_id,
        node_id: u.node_id,
        node_timeouts: input.node_timeouts,
    };
    let options = instance_terminate::restart_options(&terminate);
    ctx.start_child_workflow(TerminateInstance::run, terminate, options)
        .await
        .ok()
        .map(|_| instance_terminate::workflow_id(u.instance_id))
}

/// Starts a lifecycle workflow for every node that has none running (an operator terminated
/// it, or it failed), so no node goes unwatched until its agent happens to register again. The
/// run starts with the default timings; the agent's next registration sends the API's.
async fn watch_unwatched(
    ctx: &WorkflowContext<ReconcileFleet>,
    input: &ReconcileInput,
) -> WorkflowResult<usize> {
    let unwatched = ctx
        .execute_activity(
            ReconcileActivities::unwatched,
            ctx.task_queue().to_string(),
            reconcile_options(),
        )
        .await?;
    let mut started = 0;
    for node in unwatched {
        let lifecycle = NodeLifecycleInput {
            node_id: node.node_id,
            node_name: node.name.clone(),
            config: LifecycleConfig::default(),
            node_timeouts: input.node_timeouts,
            carried: Default::default(),
        };
        let options = node_lifecycle::child_options(&lifecycle);
        if ctx
            .start_child_workflow(NodeLifecycle::run, lifecycle, options)
            .await
            .is_err()
        {
            continue; // it runs after all: visibility lagged behind
        }
        let record = WorkflowStarted {
            kind: Started::Lifecycle,
            node_id: Some(node.node_id),
            instance_id: None,
            message: format!(
                "node {} had no lifecycle workflow running: started one",
                node.name
            ),
            dedupe_key: format!(
                "{}/{}",
                ctx.workflow_id(),
                node_lifecycle::workflow_id(node.node_id)
            ),
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
    ctx.execute_activity(
        ReconcileActivities::record_started,
        record,
        reconcile_options(),
    )
    .await?;
    Ok(())
}
