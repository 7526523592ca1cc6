//! Configuration several binaries share, as flags and environment variables.

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

/// Where a process serves Prometheus `/metrics` (worker, agent). Unset: not served.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MetricsArgs {
    /// Address for the Prometheus `/metrics` endpoint, e.g. `127.0.0.1:9464`.
    #[arg(long = "metrics-listen", env = "GPUAAS_METRICS_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
}
