//! Process plumbing shared by every binary (API, worker, node agent): configuration that several
//! of them read, logging, the Prometheus endpoint, signals, the Temporal connection, and the
//! hooks a process gives its activities (failure counts, fault injection). No business rules,
//! no domain types: the layers below never depend on this crate.

pub mod args;
pub mod hooks;
pub mod metrics;
pub mod temporal;

pub use args::{DatabaseArgs, MetricsArgs, TemporalArgs};
pub use hooks::ActivityHooks;

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
