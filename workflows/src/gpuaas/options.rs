//! Activity and child-workflow options the gpuaas workflows share. Always explicit: timeouts,
//! retries, and for node activities a schedule-to-start timeout, so a dead host fails fast.

use std::time::Duration;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{Client, WorkflowIdConflictPolicy, WorkflowStartOptions};
use temporalio_common::search_attributes::{SearchAttributeUpdate, SearchAttributes};
use temporalio_sdk::{ChildWorkflowOptions, ParentClosePolicy, WorkflowIdReusePolicy};
use temporalio_workflow::common::HasWorkflowDefinition;

/// Timeouts of the node activities, given in the workflow input so tests can shorten them.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct NodeTimeouts {
    /// How long a task may wait for the node's agent before the node counts as unreachable.
    pub schedule_to_start_s: u64,
    /// How long the agent may take to start and settle a workload.
    pub start_to_close_s: u64,
}

impl Default for NodeTimeouts {
    fn default() -> Self {
        Self {
            schedule_to_start_s: 30,
            start_to_close_s: 120,
        }
    }
}

impl NodeTimeouts {
    /// Options of an activity on `node_queue`.
    pub(crate) fn options(&self, node_queue: &str) -> temporalio_sdk::ActivityOptions {
        temporalio_sdk::ActivityOptions::with_start_to_close_timeout(Duration::from_secs(
            self.start_to_close_s,
        ))
        .task_queue(node_queue.to_string())
        .schedule_to_start_timeout(Duration::from_secs(self.schedule_to_start_s))
        .retry_policy(
            temporalio_common::RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .maximum_interval(Duration::from_secs(5))
                .maximum_attempts(5)
                .build(),
        )
        .build()
    }
}

/// Options of control-plane (database) activities. They run as *local* activities: short,
/// idempotent calls executed by the worker that runs the workflow, recorded as markers, with no
/// round trip through a task queue (see doc/architecture/0003). Retried until the database
/// answers, for up to an hour.
pub(crate) fn control_options() -> temporalio_sdk::LocalActivityOptions {
    temporalio_sdk::LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(30))
        .schedule_to_close_timeout(Duration::from_secs(3600))
        .retry_policy(
            temporalio_common::RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .maximum_interval(Duration::from_secs(10))
                .build(),
        )
        .build()
}

/// Options of database steps run as regular activities, on the workflow's own task queue, by
/// the workflows that do several things at once (`NodeLifecycle`'s two loops, `ReconcileFleet`'s
/// fan-out): sdk-core crashes a run evicted while a local activity runs beside a command
/// (doc/sdk-issues.md), and concurrent branches cannot keep the two apart. Retried until the
/// database answers, for up to `patience`.
pub(crate) fn database_activity(patience: Duration) -> temporalio_sdk::ActivityOptions {
    temporalio_sdk::ActivityOptions::with_close_timeouts(
        temporalio_common::ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: patience,
            start_to_close: Duration::from_secs(30),
        },
    )
    .retry_policy(
        temporalio_common::RetryPolicy::builder()
            .initial_interval(Duration::from_millis(200))
            .maximum_interval(Duration::from_secs(30))
            .build(),
    )
    .build()
}

/// The node lifecycle's database steps: retried for a week. A lifecycle run that gave up during
/// a long database outage would leave its node unwatched until the agent next registers.
pub(crate) fn lifecycle_options() -> temporalio_sdk::ActivityOptions {
    database_activity(Duration::from_secs(7 * 24 * 3600))
}

/// Sealing a node call (`node_call.prepare`), as a regular activity even in the workflows that
/// use local ones: it comes right after a step's upsert, and a local activity in the same
/// activation as a command trips the sdk-core eviction bug (module docs of `gpuaas`).
pub(crate) fn seal_options() -> temporalio_sdk::ActivityOptions {
    database_activity(Duration::from_secs(3600))
}

/// The reconciler's database steps: retried for an hour (the next pass starts anyway).
pub(crate) fn reconcile_options() -> temporalio_sdk::ActivityOptions {
    database_activity(Duration::from_secs(3600))
}

/// Options of a child workflow that outlives its parent (a termination started by a drain, a
/// provisioning or a lifecycle started by the reconciler), under its own deterministic id.
pub(crate) fn abandoned_child(
    workflow_id: String,
    reuse: WorkflowIdReusePolicy,
    attributes: Vec<SearchAttributeUpdate>,
) -> ChildWorkflowOptions {
    ChildWorkflowOptions::builder()
        .workflow_id(workflow_id)
        .parent_close_policy(ParentClosePolicy::Abandon)
        .id_reuse_policy(reuse)
        .search_attributes(SearchAttributes::new(attributes))
        .build()
}

/// Starts `workflow` under its resource's own id, or finds it started (a retried request): reuse
/// of the id is rejected, so a resource's workflow runs once.
pub(crate) async fn start_once<W>(
    client: &Client,
    task_queue: &str,
    workflow_id: String,
    attributes: Vec<SearchAttributeUpdate>,
    workflow: W,
    input: W::Input,
) -> Result<(), WorkflowStartError>
where
    W: HasWorkflowDefinition,
    W::Input: Send,
{
    let options = WorkflowStartOptions::new(task_queue.to_string(), workflow_id)
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(temporalio_client::WorkflowIdReusePolicy::RejectDuplicate)
        .search_attributes(SearchAttributes::new(attributes))
        .build();
    match client.start_workflow(workflow, input, options).await {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
