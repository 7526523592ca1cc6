//! Names of the metrics the agent records, with their help texts (served on
//! `GPUAAS_METRICS_LISTEN` by `runtime::metrics`).

pub const AGENT_WORKLOADS: &str = "gpuaas_agent_workloads";
pub const AGENT_GPUS_UNHEALTHY: &str = "gpuaas_agent_gpus_unhealthy";
pub const AGENT_SESSIONS: &str = "gpuaas_agent_sessions_total";
pub const AGENT_COMMANDS_REFUSED: &str = "gpuaas_agent_commands_refused_total";

/// Describes the metrics; call once the process's recorder is installed.
pub fn describe() {
    metrics::describe_gauge!(AGENT_WORKLOADS, "Workloads the agent knows, by status");
    metrics::describe_gauge!(
        AGENT_GPUS_UNHEALTHY,
        "GPUs the agent's last probe found unhealthy"
    );
    metrics::describe_counter!(AGENT_SESSIONS, "Liveness sessions the agent completed");
    metrics::describe_counter!(
        AGENT_COMMANDS_REFUSED,
        "Commands refused: not for this node or activity, or not signed by the control plane"
    );
}
