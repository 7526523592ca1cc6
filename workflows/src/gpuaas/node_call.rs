//! Every call to a node, in three parts: a control-plane step seals the command for the node's
//! key and signs it (`activities::gpuaas::node_call`), the node's agent runs it from the node's
//! own task queue, and the workflow checks the reply's signature before acting on it
//! (`contract_node::NodeCall::open`, a pure function: replay-safe). A reply the node did not
//! sign for this very command is [`NodeCallError::Forged`]: callers treat it as no answer, so it
//! never releases anything (doc/architecture/0010-hosts-that-lie.md).

use activities::gpuaas::node_call::{NodeCallActivities, NodeRequest, PrepareNodeCall};
use contract_node::envelope::{AwaitRunning, ForgedReport, ListWorkloads, StopWorkload};
use contract_node::{
    NodeActivities, NodeCall, NodeCommand, SealedCommand, SessionInput, SessionReport,
    SignedReport, WorkloadReport, WorkloadSpec, WorkloadStatus,
};
use shared_ids::{InstanceId, NodeId};
use temporalio_common::ActivityDefinition;
use temporalio_sdk::{ActivityExecutionError, ActivityOptions, WorkflowContext};

#[derive(Debug)]
pub enum NodeCallError {
    /// The command could not be sealed (the node holds no live credential or key): nothing
    /// was sent.
    Seal(ActivityExecutionError),
    /// The node's activity failed, timed out or was not picked up.
    Node(ActivityExecutionError),
    /// A reply came back that the node did not sign for this command.
    Forged(ForgedReport),
}

impl std::fmt::Display for NodeCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Seal(e) => write!(f, "could not seal the command: {e}"),
            Self::Node(e) => write!(f, "{e}"),
            Self::Forged(e) => write!(f, "{e}"),
        }
    }
}

async fn call<W, C, AD>(
    ctx: &WorkflowContext<W>,
    activity: AD,
    node_id: NodeId,
    request: NodeRequest,
    seal: ActivityOptions,
    options: ActivityOptions,
) -> Result<C::Reply, NodeCallError>
where
    C: NodeCommand,
    AD: ActivityDefinition<Input = SealedCommand, Output = SignedReport>,
{
    let input = PrepareNodeCall { node_id, request };
    // Always a regular activity: as a local one it would share an activation with the step
    // upsert before it (the sdk-core eviction bug, module docs of `gpuaas`).
    let sealed: NodeCall = ctx
        .execute_activity(NodeCallActivities::prepare, input, seal)
        .await
        .map_err(NodeCallError::Seal)?;
    let report = ctx
        .execute_activity(activity, sealed.command.clone(), options)
        .await
        .map_err(NodeCallError::Node)?;
    sealed.open::<C>(&report).map_err(NodeCallError::Forged)
}

pub(crate) async fn start_workload<W>(
    ctx: &WorkflowContext<W>,
    node_id: NodeId,
    instance_id: InstanceId,
    gpus: (Vec<i32>, Vec<String>),
    seal: ActivityOptions,
    options: ActivityOptions,
) -> Result<WorkloadStatus, NodeCallError> {
    let request = NodeRequest::StartWorkload {
        instance_id,
        gpu_indices: gpus.0,
        gpu_uuids: gpus.1,
    };
    call::<_, WorkloadSpec, _>(
        ctx,
        NodeActivities::start_workload,
        node_id,
        request,
        seal,
        options,
    )
    .await
}

pub(crate) async fn await_running<W>(
    ctx: &WorkflowContext<W>,
    node_id: NodeId,
    instance_id: InstanceId,
    seal: ActivityOptions,
    options: ActivityOptions,
) -> Result<WorkloadStatus, NodeCallError> {
    let request = NodeRequest::AwaitRunning(instance_id);
    call::<_, AwaitRunning, _>(
        ctx,
        NodeActivities::await_workload_running,
        node_id,
        request,
        seal,
        options,
    )
    .await
}

pub(crate) async fn stop_workload<W>(
    ctx: &WorkflowContext<W>,
    node_id: NodeId,
    instance_id: InstanceId,
    seal: ActivityOptions,
    options: ActivityOptions,
) -> Result<WorkloadStatus, NodeCallError> {
    let request = NodeRequest::StopWorkload(instance_id);
    call::<_, StopWorkload, _>(
        ctx,
        NodeActivities::stop_workload,
        node_id,
        request,
        seal,
        options,
    )
    .await
}

pub(crate) async fn session<W>(
    ctx: &WorkflowContext<W>,
    node_id: NodeId,
    input: SessionInput,
    seal: ActivityOptions,
    options: ActivityOptions,
) -> Result<SessionReport, NodeCallError> {
    let request = NodeRequest::Session(input);
    call::<_, SessionInput, _>(
        ctx,
        NodeActivities::session,
        node_id,
        request,
        seal,
        options,
    )
    .await
}

pub(crate) async fn list_workloads<W>(
    ctx: &WorkflowContext<W>,
    node_id: NodeId,
    seal: ActivityOptions,
    options: ActivityOptions,
) -> Result<Vec<WorkloadReport>, NodeCallError> {
    call::<_, ListWorkloads, _>(
        ctx,
        NodeActivities::list_workloads,
        node_id,
        NodeRequest::ListWorkloads,
        seal,
        options,
    )
    .await
}
