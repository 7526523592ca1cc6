//! Process plumbing shared by every binary (API, worker, node agent): configuration shared by
//! several of them, signals and logging.

/// Where the Temporal frontend is.
#[derive(Debug, Clone, clap::Args)]
pub struct TemporalArgs {
    /// Temporal frontend address (`host:port`).
    #[arg(
        long = "temporal-address",
        env = "GPUAAS_TEMPORAL_ADDRESS",
        default_value = "127.0.0.1:7233"
    )]
    pub address: String,
    #[arg(
        long = "temporal-namespace",
        env = "GPUAAS_TEMPORAL_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
}

impl TemporalArgs {
    /// Connects, waiting up to a minute for the server to come up.
    pub async fn connect(&self, identity: &str) -> anyhow::Result<temporalio_client::Client> {
        crate::temporal::connect(
            &self.address,
            &self.namespace,
            identity,
            std::time::Duration::from_secs(60),
        )
        .await
    }
}

/// Where Postgres is, for the processes that own database access (API, worker).
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Postgres URL; the database is created if missing and migrated at startup.
    #[arg(
        long = "database-url",
        env = "GPUAAS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/gpuaas"
    )]
    pub url: String,
    /// Size of the connection pool.
    #[arg(
        long = "db-max-connections",
        env = "GPUAAS_DB_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub max_connections: u32,
}

/// Resolves on Ctrl-C or SIGTERM, so every service shuts down gracefully under a supervisor.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}

/// Logs through `tracing`: human-readable by default, JSON lines with `GPUAAS_LOG_FORMAT=json`;
/// the level comes from `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("GPUAAS_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Where a process serves Prometheus `/metrics` (worker, agent). Unset: not served.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MetricsArgs {
    /// Address for the Prometheus `/metrics` endpoint, e.g. `127.0.0.1:9464`.
    #[arg(long = "metrics-listen", env = "GPUAAS_METRICS_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
}

static METRICS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Installs the process-wide metrics recorder once (later calls reuse it: tests run several
/// services in one process) and, when `listen` is set, serves it over HTTP.
pub fn init_metrics(
    listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<&'static metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = METRICS.get() {
        serve_if_asked(listen, handle)?;
        return Ok(handle);
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ],
        )?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        anyhow::bail!("another metrics recorder is installed");
    }
    let handle = METRICS.get_or_init(|| handle);
    describe_metrics();
    serve_if_asked(listen, handle)?;
    Ok(handle)
}

fn serve_if_asked(
    listen: Option<std::net::SocketAddr>,
    handle: &metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    if let Some(addr) = listen {
        let served = handle.clone();
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve_metrics(listener, served))?;
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    }
    Ok(())
}

/// A minimal HTTP/1.1 responder on its own thread, so a busy worker runtime never delays a
/// scrape; every request gets the metrics page.
fn serve_metrics(
    listener: std::net::TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
) {
    use std::io::{Read, Write};
    listener.set_nonblocking(false).ok();
    for stream in listener.incoming().flatten() {
        let mut stream = stream;
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        let body = handle.render();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// Names of the metrics the activities record, with their help texts.
pub mod metric_names {
    pub const RECONCILER_FIXES: &str = "gpuaas_reconciler_fixes_total";
    pub const PROVISIONING_DURATION: &str = "gpuaas_provisioning_duration_seconds";
    pub const ACTIVITY_FAILURES: &str = "gpuaas_activity_failures_total";
    pub const NODE_TRANSITIONS: &str = "gpuaas_node_transitions_total";
    pub const AGENT_WORKLOADS: &str = "gpuaas_agent_workloads";
    pub const AGENT_GPUS_UNHEALTHY: &str = "gpuaas_agent_gpus_unhealthy";
    pub const AGENT_SESSIONS: &str = "gpuaas_agent_sessions_total";
}

fn describe_metrics() {
    use metric_names::*;
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
        ACTIVITY_FAILURES,
        "Activity attempts that failed, by activity and failure type"
    );
    metrics::describe_counter!(
        NODE_TRANSITIONS,
        "Automatic node transitions (down, up, auto-cordon, recovery), by kind"
    );
    metrics::describe_gauge!(AGENT_WORKLOADS, "Workloads the agent knows, by status");
    metrics::describe_gauge!(
        AGENT_GPUS_UNHEALTHY,
        "GPUs the agent's last probe found unhealthy"
    );
    metrics::describe_counter!(AGENT_SESSIONS, "Liveness sessions the agent completed");
}

/// Counts a failed activity attempt (call where an activity maps its error).
pub fn count_activity_failure(activity: &str, failure_type: &str) {
    metrics::counter!(
        metric_names::ACTIVITY_FAILURES,
        "activity" => activity.to_string(),
        "type" => failure_type.to_string()
    )
    .increment(1);
}
