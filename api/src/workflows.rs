//! Starting workflows from the API. Ids are deterministic per instance and reuse is rejected, so
//! a retried request finds the existing workflow instead of starting a second one.

use crate::AppState;
use crate::problem::ApiError;
use gpuaas_domain::Instance;
use gpuaas_workflows::{
    ProvisionInput, ProvisionInstance, TerminateInput, TerminateInstance, search,
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
