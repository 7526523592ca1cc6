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
