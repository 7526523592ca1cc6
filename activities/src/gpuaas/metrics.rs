//! Names of the metrics the gpuaas activities record, with their help texts. The worker serves
//! them (`runtime::metrics`).

pub const RECONCILER_FIXES: &str = "gpuaas_reconciler_fixes_total";
pub const PROVISIONING_DURATION: &str = "gpuaas_provisioning_duration_seconds";
pub const NODE_TRANSITIONS: &str = "gpuaas_node_transitions_total";

/// Describes the metrics; call once the process's recorder is installed.
pub fn describe() {
    metrics::describe_counter!(
        RECONCILER_FIXES,
        "Fixes applied by the reconciler and the node lifecycle, by kind"
    );
    metrics::describe_histogram!(
        PROVISIONING_DURATION,
        metrics::Unit::Seconds,
        "Time from instance creation to running"
    );
    metrics::describe_counter!(
        NODE_TRANSITIONS,
        "Automatic node transitions (down, up, auto-cordon, recovery), by kind"
    );
}
