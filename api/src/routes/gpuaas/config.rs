//! The gpuaas route family's configuration: where its workflows run and the timings they are
//! started with (flags and environment variables of `gpuaas-api`).

use workflows::gpuaas::{LifecycleConfig, NodeTimeouts, vocabulary};

/// What the gpuaas product's workflows are started with: where they run and their timings.
#[derive(Debug, Clone, clap::Args)]
pub struct GpuaasConfig {
    /// Task queue of the control-plane worker that runs the gpuaas workflows.
    #[arg(long, env = "GPUAAS_TASK_QUEUE", default_value = vocabulary::CONTROL_TASK_QUEUE)]
    pub task_queue: String,
    /// Seconds a node task may wait for its agent before the node counts as unreachable.
    #[arg(
        long,
        env = "GPUAAS_NODE_SCHEDULE_TO_START_SECONDS",
        default_value_t = 30
    )]
    pub node_schedule_to_start_seconds: u64,
    /// Seconds a node may take to start and settle a workload.
    #[arg(
        long,
        env = "GPUAAS_NODE_START_TO_CLOSE_SECONDS",
        default_value_t = 120
    )]
    pub node_start_to_close_seconds: u64,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// Timings of every node's lifecycle workflow, sent to it whenever the node registers.
#[derive(Debug, Clone, clap::Args)]
pub struct LifecycleArgs {
    /// A node whose agent misses heartbeats this long is marked down.
    #[arg(
        long,
        env = "GPUAAS_NODE_HEARTBEAT_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub heartbeat_timeout_seconds: u64,
    /// How often a healthy agent reports anyway (GPU health changes report at once).
    #[arg(long, env = "GPUAAS_NODE_REPORT_EVERY_SECONDS", default_value_t = 30)]
    pub report_every_seconds: u64,
    /// How long a node may be down before its running instances fail with `node_unreachable`.
    #[arg(
        long,
        env = "GPUAAS_NODE_UNREACHABLE_GRACE_SECONDS",
        default_value_t = 120
    )]
    pub unreachable_grace_seconds: u64,
    /// How long a failed GPU must stay healthy before it returns to service.
    #[arg(long, env = "GPUAAS_GPU_RECOVERY_SECONDS", default_value_t = 300)]
    pub gpu_recovery_seconds: u64,
    /// How often a drain checks whether the node's instances have ended.
    #[arg(long, env = "GPUAAS_DRAIN_POLL_SECONDS", default_value_t = 5)]
    pub drain_poll_seconds: u64,
}

impl Default for LifecycleArgs {
    fn default() -> Self {
        let c = LifecycleConfig::default();
        Self {
            heartbeat_timeout_seconds: c.heartbeat_timeout_s,
            report_every_seconds: c.report_every_s,
            unreachable_grace_seconds: c.unreachable_grace_s,
            gpu_recovery_seconds: c.gpu_recovery_s,
            drain_poll_seconds: c.drain_poll_s,
        }
    }
}

impl GpuaasConfig {
    pub fn node_timeouts(&self) -> NodeTimeouts {
        NodeTimeouts {
            schedule_to_start_s: self.node_schedule_to_start_seconds,
            start_to_close_s: self.node_start_to_close_seconds,
        }
    }

    pub fn lifecycle(&self) -> LifecycleConfig {
        let l = &self.lifecycle;
        LifecycleConfig {
            heartbeat_timeout_s: l.heartbeat_timeout_seconds,
            report_every_s: l.report_every_seconds,
            unreachable_grace_s: l.unreachable_grace_seconds,
            gpu_recovery_s: l.gpu_recovery_seconds,
            drain_poll_s: l.drain_poll_seconds,
        }
    }
}
