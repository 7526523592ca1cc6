//! The API's configuration: flags and environment variables. Each product whose workflows the
//! API starts has its own section, in its route family (`routes::gpuaas::config`).

use crate::routes::gpuaas::config::GpuaasConfig;
use runtime::{DatabaseArgs, TemporalArgs};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ApiConfig {
    #[arg(long, env = "GPUAAS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub temporal: TemporalArgs,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub gpuaas: GpuaasConfig,
    /// Task queue of the worker that runs the billing workflows (metering reruns start there).
    #[arg(long, env = "GPUAAS_BILLING_TASK_QUEUE", default_value = workflows::billing::vocabulary::TASK_QUEUE)]
    pub billing_task_queue: String,
    /// Where signed audit anchors are also appended (a file the database cannot rewrite).
    #[arg(long, env = "GPUAAS_AUDIT_ANCHOR_FILE")]
    pub audit_anchor_file: Option<PathBuf>,
    /// Seconds between audit anchors (0: none, except on demand).
    #[arg(long, env = "GPUAAS_AUDIT_ANCHOR_EVERY_SECONDS", default_value_t = 60)]
    pub audit_anchor_every_seconds: u64,
}

/// Identity and request limits.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthConfig {
    /// Directory of Ed25519 signing keys (`*.key`, base64 PKCS#8; the last by name signs, all
    /// verify). Created with one key when empty. Unset: one key in memory (tokens die with the
    /// process).
    #[arg(long, env = "GPUAAS_SIGNING_KEYS_DIR")]
    pub signing_keys_dir: Option<PathBuf>,
    /// The `iss` of access tokens.
    #[arg(long, env = "GPUAAS_TOKEN_ISSUER", default_value = "gpuaas")]
    pub token_issuer: String,
    /// The `aud` of access tokens.
    #[arg(long, env = "GPUAAS_TOKEN_AUDIENCE", default_value = "gpuaas-api")]
    pub token_audience: String,
    #[arg(long, env = "GPUAAS_ACCESS_TOKEN_TTL_SECONDS", default_value_t = 900)]
    pub access_token_ttl_seconds: u64,
    /// Anyone may sign up (creating a user, an org and a project). Off: operators create orgs.
    #[arg(long, env = "GPUAAS_OPEN_SIGNUP", default_value_t = false)]
    pub open_signup: bool,
    /// Credit (minor units) a new org's prepaid billing account starts with, so it can launch at
    /// once: sign-ups and orgs operators create. Default 10000 ($100).
    #[arg(long, env = "GPUAAS_TRIAL_CREDIT_MINOR", default_value_t = 10_000)]
    pub trial_credit_minor: i64,
    /// An operator account created at start when missing (the dev stack and first installs).
    #[arg(long, env = "GPUAAS_BOOTSTRAP_OPERATOR_EMAIL")]
    pub bootstrap_operator_email: Option<String>,
    #[arg(
        long,
        env = "GPUAAS_BOOTSTRAP_OPERATOR_PASSWORD",
        hide_env_values = true
    )]
    pub bootstrap_operator_password: Option<String>,
    /// Requests per second per credential (per IP for anonymous requests), and the burst.
    #[arg(long, env = "GPUAAS_RATE_LIMIT_PER_SECOND", default_value_t = 100)]
    pub rate_limit_per_second: u32,
    #[arg(long, env = "GPUAAS_RATE_LIMIT_BURST", default_value_t = 400)]
    pub rate_limit_burst: u32,
    /// How long what a credential may do is cached (ms). IAM changes through this API clear the
    /// cache at once; changes through another replica show within this time. 0: no cache.
    #[arg(long, env = "GPUAAS_AUTHORITY_CACHE_MS", default_value_t = 2000)]
    pub authority_cache_ms: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = "GPUAAS_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers (ms); also how long an idle
    /// keep-alive connection stays open. Past it the connection is closed.
    #[arg(long, env = "GPUAAS_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// How long a client may take to send a whole request body, from the end of its headers
    /// (ms). Past it: 408 `request_timeout`, and the connection is closed.
    #[arg(long, env = "GPUAAS_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Requests handled at once; more are shed at once with 503 `overloaded` and `Retry-After`.
    #[arg(long, env = "GPUAAS_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Open client connections; further ones wait in the listen backlog.
    // Its own id: `max_connections` is the database pool's (`DatabaseArgs`), in the same parser.
    #[arg(
        id = "max_client_connections",
        long = "max-connections",
        env = "GPUAAS_MAX_CONNECTIONS",
        default_value_t = 4096
    )]
    pub max_connections: usize,
    /// The bearer token a Prometheus scraper sends to `GET /metrics`
    /// (`Authorization: Bearer <token>`). Unset: `/metrics` is off (404 `metrics_disabled`).
    #[arg(long, env = "GPUAAS_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// The fleet gauges of `/metrics` are recomputed at most this often (s); scrapes in between
    /// get the last values.
    #[arg(long, env = "GPUAAS_METRICS_REFRESH_SECONDS", default_value_t = 15)]
    pub metrics_refresh_seconds: u64,
}

impl AuthConfig {
    /// For tests and benches: an in-memory key, open sign-up, no operator bootstrap.
    pub fn for_tests() -> Self {
        Self {
            signing_keys_dir: None,
            token_issuer: "gpuaas".into(),
            token_audience: "gpuaas-api".into(),
            access_token_ttl_seconds: 3600,
            open_signup: true,
            trial_credit_minor: 10_000,
            bootstrap_operator_email: None,
            bootstrap_operator_password: None,
            rate_limit_per_second: 10_000,
            rate_limit_burst: 10_000,
            authority_cache_ms: 2000,
            max_body_bytes: 1 << 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_concurrent_requests: 512,
            max_connections: 4096,
            metrics_token: None,
            metrics_refresh_seconds: 15,
        }
    }
}
