//! Starting workflows from the API. Ids are deterministic per instance and reuse is rejected, so
//! a retried request finds the existing workflow instead of starting a second one.

use crate::AppState;
use crate::problem::ApiError;
use gpuaas_domain::Instance;
use gpuaas_shared::ids::NodeId;
use gpuaas_workflows::{
    DrainRequested, NodeLifecycle, NodeLifecycleInput, ProvisionInput, ProvisionInstance,
    TerminateInput, TerminateInstance, search,
};
use temporalio_client::{WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions};
use temporalio_common::search_attributes::SearchAttributes;

/// Start options; `first_step` is the workflow's first `GpuaasStep`, set here so the workflow
/// need not upsert it (each upsert is a visibility write).
fn options(
    state: &AppState,
    workflow_id: String,
    instance: &Instance,
    first_step: &str,
) -> WorkflowStartOptions {
    let mut attrs = vec![
        search::INSTANCE_ID.value_set(instance.id.to_string()),
        search::PROJECT_ID.value_set(instance.project_id.to_string()),
        search::STEP.value_set(first_step.to_string()),
    ];
    if let Some(node) = instance.node_id {
        attrs.push(search::NODE_ID.value_set(node.to_string()));
    }
    WorkflowStartOptions::new(state.config.task_queue.clone(), workflow_id)
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .search_attributes(SearchAttributes::new(attrs))
        .build()
}

/// Whether a start error only says "this workflow already exists" (a retry).
fn already_started(e: &temporalio_client::errors::WorkflowStartError) -> bool {
    matches!(
        e,
        temporalio_client::errors::WorkflowStartError::AlreadyStarted { .. }
    )
}

pub async fn start_provisioning(state: &AppState, instance: &Instance) -> Result<(), ApiError> {
    let input = ProvisionInput {
        instance_id: instance.id.0,
        project_id: instance.project_id.0,
        command: instance.command.clone(),
        capacity_timeout_s: instance.capacity_timeout_s as u64,
        node_timeouts: state.config.node_timeouts(),
    };
    let opts = options(state, instance.workflow_id.clone(), instance, "allocating");
    match state
        .temporal
        .start_workflow(ProvisionInstance::run, input, opts)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if already_started(&e) => Ok(()),
        Err(e) => Err(ApiError::internal(format!(
            "start {}: {e}",
            instance.workflow_id
        ))),
    }
}

pub async fn start_termination(state: &AppState, instance: &Instance) -> Result<(), ApiError> {
    let input = TerminateInput {
        instance_id: instance.id.0,
        node_id: instance.node_id.map(|n| n.0),
        node_timeouts: state.config.node_timeouts(),
    };
    let workflow_id = gpuaas_domain::instance::terminate_workflow_id(instance.id);
    let opts = options(state, workflow_id.clone(), instance, "stopping_workload");
    match state
        .temporal
        .start_workflow(TerminateInstance::run, input, opts)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if already_started(&e) => Ok(()),
        Err(e) => Err(ApiError::internal(format!("start {workflow_id}: {e}"))),
    }
}

/// Input and start options of a node's lifecycle workflow. Every signal to it is sent with
/// signal-with-start, so a node whose workflow is missing (registered before the workflow
/// existed, or its run failed) gets one instead of an error.
fn lifecycle_start(
    state: &AppState,
    node: NodeId,
    name: &str,
) -> (NodeLifecycleInput, WorkflowStartOptions) {
    let input = NodeLifecycleInput {
        node_id: node.0,
        node_name: name.to_string(),
        config: state.config.lifecycle(),
        node_timeouts: state.config.node_timeouts(),
        carried: Default::default(),
    };
    let attrs = vec![
        search::NODE_ID.value_set(node.to_string()),
        search::STEP.value_set("registering".to_string()),
    ];
    let workflow_id = gpuaas_domain::node::lifecycle_workflow_id(node);
    let opts = WorkflowStartOptions::new(state.config.task_queue.clone(), workflow_id)
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .search_attributes(SearchAttributes::new(attrs))
        .build();
    (input, opts)
}

/// Starts the node's lifecycle workflow, or finds it running (an agent re-registering), and
/// sends it the lifecycle timings this API runs with, so a changed flag reaches running
/// workflows too. A run that ended (failed, terminated by an operator) is replaced.
pub async fn start_node_lifecycle(
    state: &AppState,
    node: NodeId,
    name: &str,
) -> Result<(), ApiError> {
    let (input, opts) = lifecycle_start(state, node, name);
    state
        .temporal
        .signal_with_start_workflow(
            NodeLifecycle::run,
            input,
            NodeLifecycle::configure,
            state.config.lifecycle(),
            opts,
        )
        .await
        .map(|_| ())
        .map_err(|e| ApiError::internal(format!("signal-with-start node {node} lifecycle: {e}")))
}

/// Tells the node's lifecycle workflow that a drain was requested (the node is `draining`).
pub async fn signal_drain(
    state: &AppState,
    node: NodeId,
    name: &str,
    by: &str,
) -> Result<(), ApiError> {
    let (input, opts) = lifecycle_start(state, node, name);
    let request = DrainRequested {
        requested_by: by.to_string(),
    };
    state
        .temporal
        .signal_with_start_workflow(NodeLifecycle::run, input, NodeLifecycle::drain, request, opts)
        .await
        .map(|_| ())
        .map_err(|e| {
            ApiError::unavailable(format!(
                "the node is draining, but its lifecycle workflow could not be told ({e}); retry the request"
            ))
        })
}

/// Tells the node's lifecycle workflow that the node was decommissioned, so it ends.
pub async fn signal_decommissioned(
    state: &AppState,
    node: NodeId,
    by: &str,
) -> Result<(), ApiError> {
    let workflow_id = gpuaas_domain::node::lifecycle_workflow_id(node);
    let handle = state
        .temporal
        .get_workflow_handle::<NodeLifecycle>(workflow_id.clone());
    match handle
        .signal(
            NodeLifecycle::decommissioned,
            by.to_string(),
            Default::default(),
        )
        .await
    {
        Ok(()) => Ok(()),
        // Already ended (a retried request): nothing left to tell.
        Err(temporalio_client::errors::WorkflowInteractionError::NotFound(_)) => Ok(()),
        Err(e) => Err(ApiError::unavailable(format!(
            "the node is decommissioned, but its lifecycle workflow {workflow_id} could not be told ({e}); retry the request"
        ))),
    }
}
