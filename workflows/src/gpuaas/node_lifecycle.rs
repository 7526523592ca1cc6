//! `NodeLifecycle`: one long-running workflow per node (id `node-lifecycle-<node id>`), started
//! when the node registers. Two loops run side by side:
//!
//! - **Liveness.** A heartbeating `node.session` activity on the node's own task queue. A missed
//!   heartbeat (or a session nobody picks up) marks the node `down` at once; after the grace
//!   period its running instances fail with `node_unreachable`, their GPUs still fenced. When the
//!   agent answers again, the workloads nobody wants are stopped and only then are their GPUs
//!   released and the node brought back. Each report also carries GPU health (auto-cordon and
//!   recovery happen in the domain).
//! - **Drain.** On the `drain` signal: wait for the node's instances to end, terminate what is
//!   left at the deadline, leave the node `cordoned`.
//!
//! The run continues-as-new before its history grows large; what must survive is carried over.
//! The database steps are regular activities on the control queue, not local ones: the two loops
//! run side by side, and a local activity beside the other loop's command is what sdk-core 0.10
//! cannot evict (module docs of `workflows::gpuaas`).

use super::instance_terminate::{self, TerminateInput, TerminateInstance};
use super::node_call::{self, NodeCallError};
use super::node_reconcile::reconcile_node;
use super::options::{abandoned_child, lifecycle_options};
use super::vocabulary::{self, NodeStep, search, signal, workflow};
use super::{NodeTimeouts, show_step};
use crate::failure::ActivityFailure;
use activities::gpuaas::node_lifecycle::{
    HealthReport, NodeDown, NodeGrace, NodeLifecycleActivities,
};
use contract_node::{SessionInput, SessionReport, vocabulary as node};
use serde::{Deserialize, Serialize};
use shared_ids::{NodeId, ProjectId};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use temporalio_client::errors::{WorkflowInteractionError, WorkflowStartError};
use temporalio_client::{
    Client, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
};
use temporalio_common::search_attributes::{SearchAttributeUpdate, SearchAttributes};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowOptions, ContinueAsNewOptions, SyncWorkflowContext, WorkflowContext,
    WorkflowResult,
};

/// Timings of the lifecycle, given at start so tests (and operators) can tune them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// A session that misses heartbeats this long marks the node down.
    pub heartbeat_timeout_s: u64,
    /// How often a healthy session reports anyway.
    pub report_every_s: u64,
    /// How long a node may be down before its running instances fail with `node_unreachable`.
    pub unreachable_grace_s: u64,
    /// How long a GPU must stay healthy before it returns to service.
    pub gpu_recovery_s: u64,
    /// How often a drain checks whether the node's instances have ended.
    pub drain_poll_s: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout_s: 10,
            report_every_s: 30,
            unreachable_grace_s: 120,
            gpu_recovery_s: 300,
            drain_poll_s: 5,
        }
    }
}

/// State that survives continue-as-new.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Carried {
    /// Set while the node is down: when it went down (ms since the epoch, workflow time).
    pub down_since_ms: Option<u64>,
    /// Whether the grace period ran out and the node's instances were failed.
    pub instances_failed: bool,
    /// GPUs the agent last reported unhealthy.
    pub known_unhealthy: Vec<i32>,
    /// Whether the agent has reported at least once.
    pub heard_from: bool,
    /// A drain was requested and not finished when the last run continued as new.
    #[serde(default)]
    pub drain_pending: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeLifecycleInput {
    pub node_id: NodeId,
    pub node_name: String,
    pub config: LifecycleConfig,
    pub node_timeouts: NodeTimeouts,
    #[serde(default)]
    pub carried: Carried,
}

/// Sent by the API after it moved the node to `draining`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DrainRequested {
    pub requested_by: String,
}

/// Sessions per run before continuing as new (each adds about ten history events).
const SESSIONS_PER_RUN: u32 = 500;

#[workflow]
#[derive(Default)]
pub struct NodeLifecycle {
    drain_requests: u32,
    drains_handled: u32,
    decommissioned: bool,
    /// Timings sent by the API when the agent (re-)registers; they replace the input's from the
    /// next session on, so a changed flag reaches nodes whose workflow is already running.
    config: Option<LifecycleConfig>,
}

#[workflow_methods]
impl NodeLifecycle {
    #[run(name = workflow::NODE_LIFECYCLE)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: NodeLifecycleInput,
    ) -> WorkflowResult<()> {
        let shared = &*ctx;
        use futures::FutureExt;
        let mut carried = temporalio_sdk::workflows::select! {
            carried = liveness(shared, &input).fuse() => carried?,
            drained = drains(shared, &input).fuse() => { drained?; input.carried.clone() }
        };
        if ctx.state(|s| s.decommissioned) {
            step(
                shared,
                &input,
                NodeStep::Decommissioned,
                "decommissioned; this workflow has ended",
            );
            return Ok(());
        }
        carried.drain_pending = ctx.state(|s| s.drain_requests > s.drains_handled);
        let next = NodeLifecycleInput {
            carried,
            config: config(shared, &input),
            ..input.clone()
        };
        ctx.continue_as_new(next, ContinueAsNewOptions::default())?;
        Ok(())
    }

    #[signal(name = signal::DRAIN)]
    pub fn drain(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _request: DrainRequested) {
        self.drain_requests += 1;
    }

    /// Sent by the API with every registration: the timings it is configured with now.
    #[signal(name = signal::CONFIGURE)]
    pub fn configure(&mut self, _ctx: &mut SyncWorkflowContext<Self>, config: LifecycleConfig) {
        self.config = Some(config);
    }

    /// Sent by the API after it decommissioned the node: the workflow ends.
    #[signal(name = signal::DECOMMISSIONED)]
    pub fn decommissioned(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _by: String) {
        self.decommissioned = true;
    }
}

type Ctx = WorkflowContext<NodeLifecycle>;

/// The timings in force: the latest the API sent, else the ones this run started with.
fn config(ctx: &Ctx, input: &NodeLifecycleInput) -> LifecycleConfig {
    ctx.state(|s| s.config).unwrap_or(input.config)
}

fn now_ms(ctx: &Ctx) -> u64 {
    ctx.workflow_time()
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sets the step search attribute and the UI's current details; only before a command (see
/// the module docs of `workflows::gpuaas`).
fn step(ctx: &Ctx, input: &NodeLifecycleInput, step: NodeStep, details: impl Into<String>) {
    show_step(ctx, step);
    ctx.set_current_details(format!(
        "node {} ({}): {}",
        input.node_name,
        input.node_id,
        details.into()
    ));
}

fn session_options(c: &LifecycleConfig, node_id: NodeId) -> temporalio_sdk::ActivityOptions {
    // A session that nobody picks up within a heartbeat timeout means the same as a missed
    // heartbeat: the agent is not there.
    temporalio_sdk::ActivityOptions::with_start_to_close_timeout(Duration::from_secs(
        c.report_every_s + 4 * c.heartbeat_timeout_s,
    ))
    .task_queue(node::task_queue(node_id))
    .schedule_to_start_timeout(Duration::from_secs(c.heartbeat_timeout_s))
    .heartbeat_timeout(Duration::from_secs(c.heartbeat_timeout_s))
    .retry_policy(
        temporalio_common::RetryPolicy::builder()
            .maximum_attempts(1)
            .build(),
    )
    .build()
}

/// Why a session failed, for the event and the UI.
fn why_silent(e: &NodeCallError, c: &LifecycleConfig) -> String {
    let e = match e {
        NodeCallError::Node(e) => e,
        other => return format!("no verified session report: {other}"),
    };
    match ActivityFailure::of(e) {
        ActivityFailure::NotPickedUp => format!(
            "its agent did not pick up a liveness session within {}s",
            c.heartbeat_timeout_s
        ),
        ActivityFailure::TimedOut => {
            format!("no heartbeat from its agent for {}s", c.heartbeat_timeout_s)
        }
        _ => format!("liveness session failed: {e}"),
    }
}

/// The liveness loop. Returns the state to carry when it is time to continue as new.
async fn liveness(ctx: &Ctx, input: &NodeLifecycleInput) -> WorkflowResult<Carried> {
    let mut carried = input.carried.clone();
    for _ in 0..SESSIONS_PER_RUN {
        if ctx.continue_as_new_suggested() || ctx.state(|s| s.decommissioned) {
            break;
        }
        let c = config(ctx, input);
        let session = SessionInput {
            report_every_s: c.report_every_s,
            known_unhealthy: carried.known_unhealthy.clone(),
            report_now: carried.down_since_ms.is_some() || !carried.heard_from,
        };
        // A reply that is not the node's own counts as silence: nothing is released from it.
        let result = node_call::session(
            ctx,
            input.node_id,
            session,
            lifecycle_options(),
            session_options(&c, input.node_id),
        )
        .await;
        match result {
            Ok(report) => on_report(ctx, input, &mut carried, report).await?,
            Err(e) => on_silence(ctx, input, &mut carried, why_silent(&e, &c)).await?,
        }
    }
    Ok(carried)
}

async fn on_report(
    ctx: &Ctx,
    input: &NodeLifecycleInput,
    carried: &mut Carried,
    report: SessionReport,
) -> WorkflowResult<()> {
    let first_contact = !carried.heard_from;
    carried.heard_from = true;
    // Fence when the node was down, and at the first contact of a fresh run, which cannot know
    // whether the database says `down` (a run that failed and was restarted lost that state).
    let fence = carried.down_since_ms.is_some() || first_contact;
    if fence {
        // Fence first: stop what nobody wants any more and release its GPUs; only then may the
        // node take new instances.
        step(
            ctx,
            input,
            NodeStep::Fencing,
            "agent is back; stopping workloads the control plane no longer wants",
        );
        if let Err(why) = reconcile_node(ctx, input.node_id, &input.node_timeouts, false).await {
            step(
                ctx,
                input,
                NodeStep::Down,
                format!("agent answered but fencing failed ({why}); staying down, retrying in 5s"),
            );
            // A stop that fails every time must not spin.
            let _ = ctx.timer(Duration::from_secs(5)).await;
            return Ok(());
        }
        ctx.execute_activity(
            NodeLifecycleActivities::mark_up,
            input.node_id,
            lifecycle_options(),
        )
        .await?;
        carried.down_since_ms = None;
        carried.instances_failed = false;
    }
    let health = HealthReport {
        node_id: input.node_id,
        gpus: report.gpus.clone(),
        recovery_s: config(ctx, input).gpu_recovery_s,
    };
    let outcome = ctx
        .execute_activity(
            NodeLifecycleActivities::apply_report,
            health,
            lifecycle_options(),
        )
        .await?;
    carried.known_unhealthy = report
        .gpus
        .iter()
        .filter(|g| !g.healthy)
        .map(|g| g.index)
        .collect();
    let running = report.workloads.iter().filter(|w| w.running).count();
    let gpus = if outcome.health.unhealthy.is_empty() {
        "all GPUs healthy".to_string()
    } else {
        format!("GPU(s) {:?} out of service", outcome.health.unhealthy)
    };
    step(
        ctx,
        input,
        NodeStep::from(outcome.state),
        format!(
            "{}; agent answering (heartbeat every ≤{}s); {running} workload(s) running; {gpus}",
            outcome.state.as_str(),
            config(ctx, input).heartbeat_timeout_s
        ),
    );
    Ok(())
}

async fn on_silence(
    ctx: &Ctx,
    input: &NodeLifecycleInput,
    carried: &mut Carried,
    why: String,
) -> WorkflowResult<()> {
    let now = now_ms(ctx);
    if carried.down_since_ms.is_none() {
        let down = NodeDown {
            node_id: input.node_id,
            why: why.clone(),
        };
        ctx.execute_activity(
            NodeLifecycleActivities::mark_down,
            down,
            lifecycle_options(),
        )
        .await?;
        carried.down_since_ms = Some(now);
    }
    let down_for_s = (now - carried.down_since_ms.unwrap_or(now)) / 1000;
    let grace = config(ctx, input).unreachable_grace_s;
    if !carried.instances_failed && down_for_s >= grace {
        let expired = NodeGrace {
            node_id: input.node_id,
            down_for_s,
        };
        let failed = ctx
            .execute_activity(
                NodeLifecycleActivities::fail_unreachable,
                expired,
                lifecycle_options(),
            )
            .await?;
        carried.instances_failed = true;
        step(
            ctx,
            input,
            NodeStep::Down,
            format!(
                "down for {down_for_s}s ({why}); {} running instance(s) failed with node_unreachable; their GPUs stay fenced until the agent is back",
                failed.len()
            ),
        );
    } else {
        let next = if carried.instances_failed {
            "its instances have failed; GPUs fenced until the agent is back".to_string()
        } else {
            format!(
                "its running instances fail in {}s unless it comes back",
                grace.saturating_sub(down_for_s)
            )
        };
        step(
            ctx,
            input,
            NodeStep::Down,
            format!("down for {down_for_s}s ({why}); {next}"),
        );
    }
    // A session that failed at once (not by a timeout) must not spin.
    let _ = ctx.timer(Duration::from_secs(1)).await;
    Ok(())
}

/// The drain loop: runs a drain whenever one is requested (or was pending at continue-as-new).
/// It touches the database only on request, so an idle node's history stays short.
async fn drains(ctx: &Ctx, input: &NodeLifecycleInput) -> WorkflowResult<()> {
    if input.carried.drain_pending {
        ctx.state_mut(|s| s.drain_requests += 1);
    }
    loop {
        ctx.wait_condition(|s: &NodeLifecycle| s.drain_requests > s.drains_handled)
            .await?;
        let requested = ctx.state(|s| s.drain_requests);
        drain(ctx, input).await?;
        ctx.state_mut(|s| s.drains_handled = requested);
    }
}

async fn drain(ctx: &Ctx, input: &NodeLifecycleInput) -> WorkflowResult<()> {
    let mut terminated = false;
    loop {
        let progress = ctx
            .execute_activity(
                NodeLifecycleActivities::drain_progress,
                input.node_id,
                lifecycle_options(),
            )
            .await?;
        if !progress.draining {
            return Ok(());
        }
        if progress.live_instances.is_empty() {
            ctx.execute_activity(
                NodeLifecycleActivities::finish_drain,
                input.node_id,
                lifecycle_options(),
            )
            .await?;
            ctx.set_current_details(format!(
                "node {}: drained; it stays cordoned until uncordoned",
                input.node_name
            ));
            return Ok(());
        }
        if progress.seconds_left == 0 && !terminated {
            let to_terminate = ctx
                .execute_activity(
                    NodeLifecycleActivities::terminate_for_drain,
                    input.node_id,
                    lifecycle_options(),
                )
                .await?;
            for t in to_terminate {
                start_termination(ctx, input, t.instance_id, t.project_id).await;
            }
            terminated = true;
        }
        ctx.set_current_details(format!(
            "node {}: draining; {} instance(s) still on it; {}",
            input.node_name,
            progress.live_instances.len(),
            if progress.seconds_left > 0 {
                format!("the rest are terminated in {}s", progress.seconds_left)
            } else {
                "deadline passed: terminating them".to_string()
            }
        ));
        let wait = config(ctx, input)
            .drain_poll_s
            .min(progress.seconds_left.max(1));
        let _ = ctx.timer(Duration::from_secs(wait)).await;
    }
}

/// Starts (or finds already started) the instance's TerminateInstance workflow, which outlives
/// this run.
async fn start_termination(
    ctx: &Ctx,
    input: &NodeLifecycleInput,
    instance_id: shared_ids::InstanceId,
    project_id: ProjectId,
) {
    let terminate = TerminateInput {
        requested_by: Some(shared_kernel::Principal::system("node-lifecycle")),
        instance_id,
        project_id,
        node_id: Some(input.node_id),
        node_timeouts: input.node_timeouts,
    };
    let options = instance_terminate::child_options(&terminate);
    // "Already started" means a termination is under way: what we wanted.
    let _ = ctx
        .start_child_workflow(TerminateInstance::run, terminate, options)
        .await;
}

// ---------------------------------------------------------------------------------------------
// Starting and signalling. Every signal goes with signal-with-start, so a node whose workflow
// is missing (its run failed, or an operator terminated it) gets one instead of an error.

pub fn workflow_id(node: NodeId) -> String {
    vocabulary::node_lifecycle_id(node)
}

fn search_attributes(input: &NodeLifecycleInput) -> Vec<SearchAttributeUpdate> {
    vec![
        search::NODE_ID.value_set(input.node_id.to_string()),
        search::STEP.value_set(NodeStep::Registering.as_str().to_string()),
    ]
}

/// A run that ended (failed, terminated by an operator) is replaced; a running one is found.
fn start_options(task_queue: &str, input: &NodeLifecycleInput) -> WorkflowStartOptions {
    WorkflowStartOptions::new(task_queue.to_string(), workflow_id(input.node_id))
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .search_attributes(SearchAttributes::new(search_attributes(input)))
        .build()
}

/// Starts the node's lifecycle, or finds it running (an agent re-registering), and sends it the
/// timings in `input`, so a changed flag reaches a running workflow too.
pub async fn start_or_configure(
    client: &Client,
    task_queue: &str,
    input: NodeLifecycleInput,
) -> Result<(), WorkflowStartError> {
    let options = start_options(task_queue, &input);
    let config = input.config;
    client
        .signal_with_start_workflow(
            NodeLifecycle::run,
            input,
            NodeLifecycle::configure,
            config,
            options,
        )
        .await
        .map(|_| ())
}

/// Tells the node's lifecycle that a drain was requested (the node is `draining`).
pub async fn request_drain(
    client: &Client,
    task_queue: &str,
    input: NodeLifecycleInput,
    request: DrainRequested,
) -> Result<(), WorkflowStartError> {
    let options = start_options(task_queue, &input);
    client
        .signal_with_start_workflow(
            NodeLifecycle::run,
            input,
            NodeLifecycle::drain,
            request,
            options,
        )
        .await
        .map(|_| ())
}

/// Tells the node's lifecycle that the node was decommissioned, so it ends. A workflow that
/// already ended (a retried request) needs nothing.
pub async fn tell_decommissioned(
    client: &Client,
    node: NodeId,
    by: &str,
) -> Result<(), WorkflowInteractionError> {
    let handle = client.get_workflow_handle::<NodeLifecycle>(workflow_id(node));
    match handle
        .signal(
            NodeLifecycle::decommissioned,
            by.to_string(),
            Default::default(),
        )
        .await
    {
        Ok(()) | Err(WorkflowInteractionError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Options to start it from another workflow (the reconciler, for a node nobody watches).
pub(crate) fn child_options(input: &NodeLifecycleInput) -> ChildWorkflowOptions {
    abandoned_child(
        workflow_id(input.node_id),
        temporalio_sdk::WorkflowIdReusePolicy::AllowDuplicate,
        search_attributes(input),
    )
}
