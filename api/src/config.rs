//! The API's configuration: flags and environment variables. Each product whose workflows the
//! API starts has its own section, in its route family (`routes::gpuaas::config`).

use crate::routes::gpuaas::config::GpuaasConfig;
use runtime::{DatabaseArgs, TemporalArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct ApiConfig {
    #[arg(long, env = "GPUAAS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub temporal: TemporalArgs,
    /// Bearer token for API callers (one dev token until IAM lands).
    #[arg(long, env = "GPUAAS_API_TOKEN")]
    pub api_token: String,
    /// Bearer token node agents register with.
    #[arg(long, env = "GPUAAS_JOIN_TOKEN")]
    pub join_token: String,
    #[command(flatten)]
    pub gpuaas: GpuaasConfig,
}
