//! The node activities (contract: `contract_node`), served on the node's own task queue.

use crate::gpu::GpuHealthProbe;
use crate::identity::Identity;
use crate::metrics;
use crate::trust::ControlPlaneKeys;
use crate::workload::{ProcessRuntime, RuntimeError};
use contract_node::envelope::{AwaitRunning, ListWorkloads, SealedText, StopWorkload};
use contract_node::vocabulary::{NodeFailure, activity};
use contract_node::{
    GpuHealthReport, NodeCommand, SealedCommand, SessionInput, SessionReport, SignedReport,
    WorkloadReport, WorkloadSpec, WorkloadStatus, definitions,
};
use runtime::ActivityHooks;
use shared_ids::{InstanceId, NodeId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub struct NodeAgentActivities {
    node_id: NodeId,
    identity: Arc<Identity>,
    control_plane: Arc<ControlPlaneKeys>,
    processes: Arc<ProcessRuntime>,
    health: Arc<dyn GpuHealthProbe>,
    gpu_indices: Vec<i32>,
    /// How often a session samples GPU health (and heartbeats).
    probe_interval: Duration,
    hooks: ActivityHooks,
}

/// The node's keys and the control plane's: what commands are opened and replies signed with.
pub struct Keys {
    pub node_id: NodeId,
    pub identity: Arc<Identity>,
    pub control_plane: Arc<ControlPlaneKeys>,
}

impl NodeAgentActivities {
    pub fn new(
        keys: Keys,
        processes: Arc<ProcessRuntime>,
        health: Arc<dyn GpuHealthProbe>,
        gpu_indices: Vec<i32>,
        probe_interval: Duration,
        hooks: ActivityHooks,
    ) -> Self {
        Self {
            node_id: keys.node_id,
            identity: keys.identity,
            control_plane: keys.control_plane,
            processes,
            health,
            gpu_indices,
            probe_interval,
            hooks,
        }
    }

    /// The command inside `sealed`, if it is for this node and this activity and signed by the
    /// control plane. Anything else is refused for good (non-retryable) and counted.
    async fn open<C: NodeCommand>(&self, sealed: &SealedCommand) -> Result<C, ActivityError> {
        let signer = self.control_plane.get(&sealed.signer).await;
        sealed
            .open::<C>(self.node_id, self.identity.encryption_secret(), |_| signer)
            .map_err(|e| {
                ::metrics::counter!(metrics::AGENT_COMMANDS_REFUSED).increment(1);
                tracing::warn!(activity = C::ACTIVITY, error = %e, "refused a command");
                ActivityError::application(
                    ApplicationFailure::builder(e)
                        .type_name(NodeFailure::RefusedCommand.as_str().to_string())
                        .non_retryable(true)
                        .build(),
                )
            })
    }

    /// A workload's status as a reply: its last output sealed for the control plane's reply
    /// key (never in plaintext), bound to the instance.
    fn status_reply(
        &self,
        sealed: &SealedCommand,
        instance_id: InstanceId,
        status: WorkloadStatus,
    ) -> SignedReport {
        let status = match status {
            WorkloadStatus::Exited {
                exit_code,
                log_tail,
                ..
            } => {
                let reply_key = base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    &sealed.reply_key,
                )
                .unwrap_or_default();
                let output = (!log_tail.is_empty())
                    .then(|| {
                        SealedText::seal(
                            &reply_key,
                            &sealed.signer,
                            &instance_id.to_string(),
                            &log_tail,
                        )
                        .ok()
                    })
                    .flatten();
                WorkloadStatus::Exited {
                    exit_code,
                    log_tail: String::new(),
                    output,
                }
            }
            other => other,
        };
        self.reply(sealed, &status)
    }

    /// The reply to `sealed`, signed with the node's key.
    fn reply<T: serde::Serialize>(&self, sealed: &SealedCommand, value: &T) -> SignedReport {
        SignedReport::sign(sealed, value, |m| self.identity.sign(m))
    }

    /// The process's hooks around an activity's result: failures counted, faults injected.
    fn finish<T>(
        &self,
        activity: &str,
        result: Result<T, RuntimeError>,
    ) -> Result<T, ActivityError> {
        match result {
            Ok(value) => {
                self.hooks.finish(activity, None)?;
                Ok(value)
            }
            Err(e) => {
                let kind = match e {
                    RuntimeError::StartFailed(..) => NodeFailure::StartFailed.as_str(),
                    RuntimeError::Io(_) => "io",
                };
                self.hooks.finish(activity, Some(kind))?;
                Err(to_activity_error(e))
            }
        }
    }

    async fn sample_health(&self) -> Vec<GpuHealthReport> {
        let probe = self.health.clone();
        let indices = self.gpu_indices.clone();
        // Probes may run a command (nvidia-smi): keep them off the async workers.
        let samples = tokio::task::spawn_blocking(move || probe.sample(&indices))
            .await
            .unwrap_or_default();
        let reports: Vec<GpuHealthReport> = samples
            .into_iter()
            .map(|s| GpuHealthReport {
                index: s.index,
                healthy: s.healthy,
                reason: s.reason,
            })
            .collect();
        let unhealthy = reports.iter().filter(|g| !g.healthy).count();
        ::metrics::gauge!(metrics::AGENT_GPUS_UNHEALTHY).set(unhealthy as f64);
        reports
    }

    fn workloads(&self) -> Vec<WorkloadReport> {
        let known = self.processes.known();
        let running = known
            .iter()
            .filter(|(_, s)| matches!(s, WorkloadStatus::Running { .. }))
            .count();
        ::metrics::gauge!(metrics::AGENT_WORKLOADS, "status" => "running").set(running as f64);
        ::metrics::gauge!(metrics::AGENT_WORKLOADS, "status" => "exited")
            .set((known.len() - running) as f64);
        known
            .into_iter()
            .map(|(instance_id, status)| WorkloadReport {
                instance_id,
                running: matches!(status, WorkloadStatus::Running { .. }),
            })
            .collect()
    }
}

fn unhealthy_set(gpus: &[GpuHealthReport]) -> Vec<i32> {
    let mut set: Vec<i32> = gpus
        .iter()
        .filter(|g| !g.healthy)
        .map(|g| g.index)
        .collect();
    set.sort_unstable();
    set
}

fn to_activity_error(e: RuntimeError) -> ActivityError {
    match e {
        RuntimeError::StartFailed(..) => ActivityError::application(
            ApplicationFailure::builder(e)
                .type_name(NodeFailure::StartFailed.as_str().to_string())
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
        sealed: SealedCommand,
    ) -> Result<SignedReport, ActivityError> {
        let spec: WorkloadSpec = self.open(&sealed).await?;
        let result = self.processes.start(&spec).await;
        let status = self.finish(activity::START_WORKLOAD, result)?;
        Ok(self.status_reply(&sealed, spec.instance_id, status))
    }

    #[activity(definition = definitions::AwaitWorkloadRunning)]
    pub async fn await_workload_running(
        self: Arc<Self>,
        _ctx: ActivityContext,
        sealed: SealedCommand,
    ) -> Result<SignedReport, ActivityError> {
        let AwaitRunning(instance_id) = self.open(&sealed).await?;
        let status = match self.processes.await_running(instance_id).await {
            // The workload exited: its exit code and last output are the signed reply (which
            // only the instance's status shows), never a failure message.
            Err(RuntimeError::StartFailed(..))
                if matches!(
                    self.processes.status_of(instance_id),
                    WorkloadStatus::Exited { .. }
                ) =>
            {
                let kind = NodeFailure::StartFailed.as_str();
                self.hooks
                    .finish(activity::AWAIT_WORKLOAD_RUNNING, Some(kind))?;
                self.processes.status_of(instance_id)
            }
            other => self.finish(activity::AWAIT_WORKLOAD_RUNNING, other)?,
        };
        Ok(self.status_reply(&sealed, instance_id, status))
    }

    #[activity(definition = definitions::StopWorkload)]
    pub async fn stop_workload(
        self: Arc<Self>,
        _ctx: ActivityContext,
        sealed: SealedCommand,
    ) -> Result<SignedReport, ActivityError> {
        let StopWorkload(instance_id) = self.open(&sealed).await?;
        let result = self.processes.stop(instance_id).await;
        let status = self.finish(activity::STOP_WORKLOAD, result)?;
        Ok(self.status_reply(&sealed, instance_id, status))
    }

    /// Heartbeats every probe interval while sampling GPU health; returns a report when the set
    /// of unhealthy GPUs differs from what the control plane knows, or when the report is due.
    /// A cancelled session (worker shutdown) simply ends: the next one starts on reconnect.
    #[activity(definition = definitions::Session)]
    pub async fn session(
        self: Arc<Self>,
        ctx: ActivityContext,
        sealed: SealedCommand,
    ) -> Result<SignedReport, ActivityError> {
        let input: SessionInput = self.open(&sealed).await?;
        let due = Instant::now() + Duration::from_secs(input.report_every_s);
        let mut known = input.known_unhealthy.clone();
        known.sort_unstable();
        loop {
            let gpus = self.sample_health().await;
            if input.report_now || unhealthy_set(&gpus) != known || Instant::now() >= due {
                ::metrics::counter!(metrics::AGENT_SESSIONS).increment(1);
                let report = SessionReport {
                    gpus,
                    workloads: self.workloads(),
                };
                return Ok(self.reply(&sealed, &report));
            }
            let _ = ctx.record_heartbeat(()).await;
            tokio::select! {
                () = tokio::time::sleep(self.probe_interval) => {}
                () = ctx.cancelled() => return Err(ActivityError::cancelled()),
            }
        }
    }

    #[activity(definition = definitions::ListWorkloads)]
    pub async fn list_workloads(
        self: Arc<Self>,
        _ctx: ActivityContext,
        sealed: SealedCommand,
    ) -> Result<SignedReport, ActivityError> {
        let ListWorkloads = self.open(&sealed).await?;
        Ok(self.reply(&sealed, &self.workloads()))
    }
}
