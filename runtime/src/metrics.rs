//! The process-wide Prometheus recorder and, when asked, its `/metrics` endpoint, served by
//! `metrics-exporter-prometheus`'s own HTTP listener on a thread of its own, so a busy worker
//! runtime never delays a scrape.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

/// Activity attempts that failed, by activity and failure type: counted for every activity a
/// process runs (see [`crate::ActivityHooks`]).
pub const ACTIVITY_FAILURES: &str = "gpuaas_activity_failures_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder once per process (later calls return it: tests run several services in
/// one process) and, on the first call with `listen`, serves it on `listen`. Describe a crate's
/// own metrics after this call: descriptions sent before it are lost.
pub fn init(listen: Option<SocketAddr>) -> anyhow::Result<&'static PrometheusHandle> {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = HANDLE.get() {
        if let Some(addr) = listen {
            anyhow::bail!(
                "metrics are already installed in this process; cannot also serve them on {addr}"
            );
        }
        return Ok(handle);
    }
    let builder = PrometheusBuilder::new().set_buckets_for_metric(
        Matcher::Suffix("_seconds".into()),
        &[
            0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ],
    )?;
    let recorder = match listen {
        None => builder.build_recorder(),
        Some(addr) => serve(builder.with_http_listener(addr))?,
    };
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("another metrics recorder is installed"))?;
    metrics::describe_counter!(
        ACTIVITY_FAILURES,
        "Activity attempts that failed, by activity and failure type"
    );
    if let Some(addr) = listen {
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    }
    Ok(HANDLE.get_or_init(|| handle))
}

/// Builds the recorder and its listener on a thread with its own runtime, which then serves
/// scrapes for the life of the process.
fn serve(
    builder: PrometheusBuilder,
) -> anyhow::Result<metrics_exporter_prometheus::PrometheusRecorder> {
    let (built, receive) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return drop(built.send(Err(anyhow::Error::from(e)))),
            };
            runtime.block_on(async move {
                match builder.build() {
                    Ok((recorder, exporter)) => {
                        let _ = built.send(Ok(recorder));
                        if let Err(e) = exporter.await {
                            tracing::error!(error = ?e, "the metrics endpoint stopped");
                        }
                    }
                    Err(e) => drop(built.send(Err(e.into()))),
                }
            });
        })?;
    receive.recv()?
}

/// Counts a failed activity attempt.
pub fn count_activity_failure(activity: &str, failure_type: &str) {
    metrics::counter!(
        ACTIVITY_FAILURES,
        "activity" => activity.to_string(),
        "type" => failure_type.to_string()
    )
    .increment(1);
}
