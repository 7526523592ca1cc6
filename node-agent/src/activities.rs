//! The node activities (contract: `gpuaas_activities::node`), served on `node-<node_id>`.

use crate::runtime::{ProcessRuntime, RuntimeError};
use gpuaas_activities::failure_types;
use gpuaas_activities::node::{WorkloadSpec, WorkloadStatus, definitions};
use std::sync::Arc;
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use uuid::Uuid;

pub struct NodeAgentActivities {
    processes: Arc<ProcessRuntime>,
}

impl NodeAgentActivities {
    pub fn new(processes: Arc<ProcessRuntime>) -> Self {
        Self { processes }
    }
}

fn to_activity_error(e: RuntimeError) -> ActivityError {
    match e {
        RuntimeError::StartFailed(..) => ActivityError::application(
            ApplicationFailure::builder(e)
                .type_name(failure_types::START_FAILED.to_string())
                .non_retryable(true)
                .build(),
        ),
        RuntimeError::Io(_) => ActivityError::application(ApplicationFailure::new(e)),
    }
}

#[activities]
impl NodeAgentActivities {
    #[activity(definition = definitions::StartWorkload)]
    pub async fn start_workload(
        self: Arc<Self>,
        _ctx: ActivityContext,
        spec: WorkloadSpec,
    ) -> Result<WorkloadStatus, ActivityError> {
        self.processes.start(&spec).await.map_err(to_activity_error)
    }

    #[activity(definition = definitions::AwaitWorkloadRunning)]
    pub async fn await_workload_running(
        self: Arc<Self>,
        _ctx: ActivityContext,
        instance_id: Uuid,
    ) -> Result<WorkloadStatus, ActivityError> {
        self.processes
            .await_running(instance_id)
            .await
            .map_err(to_activity_error)
    }

    #[activity(definition = definitions::StopWorkload)]
    pub async fn stop_workload(
        self: Arc<Self>,
        _ctx: ActivityContext,
        instance_id: Uuid,
    ) -> Result<WorkloadStatus, ActivityError> {
        self.processes
            .stop(instance_id)
            .await
            .map_err(to_activity_error)
    }
}
