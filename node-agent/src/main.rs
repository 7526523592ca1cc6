//! `gpuaas-node-agent`: one per GPU host.
//!
//! Exit codes: `0` stopped by SIGTERM/SIGINT, `1` unexpected error (a bug, or a host fault the
//! agent cannot name; printed with its backtrace when `RUST_BACKTRACE` asks for one), `2` usage,
//! `3` the API refused the registration (a 4xx: the node was decommissioned, its name is taken,
//! the join token or the node's key is not accepted), `4` the host has not joined yet (no node
//! identity and no `GPUAAS_JOIN_TOKEN`), `5` the API did not answer the registration in time.
//! Expected refusals (3 to 5) are one line on stderr, the API's code included, never a trace.

use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "GPUaaS node agent: GPU discovery, workload processes, per-host Temporal worker",
    after_help = "Exit codes: 0 stopped by a signal, 1 unexpected error, 2 usage, \
                  3 registration refused by the API, 4 not joined yet (no GPUAAS_JOIN_TOKEN), \
                  5 API unreachable at registration."
)]
struct Cli {
    #[command(flatten)]
    config: node_agent::AgentConfig,
}

fn main() -> ExitCode {
    runtime::init_logging();
    let cli = Cli::parse();
    match run(cli.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error),
    }
}

fn run(config: node_agent::AgentConfig) -> anyhow::Result<()> {
    // Two threads are plenty for an agent and keep its resident memory small.
    let tokio_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    tokio_runtime.block_on(node_agent::run(config, runtime::shutdown_signal()))
}

/// Why the agent stopped, as people and scripts (scripts/dev) read it.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// The API answered the registration with a 4xx.
    Refused,
    /// No identity and no join token.
    NotJoined,
    /// The API did not answer within the registration deadline.
    Unreachable,
}

impl Refusal {
    /// The refusal `node_agent::register` raised, if it was one.
    fn of(error: &anyhow::Error) -> Option<Self> {
        use node_agent::RegistrationError as E;
        match error.downcast_ref::<E>()? {
            E::Refused { .. } => Some(Self::Refused),
            E::NotJoined => Some(Self::NotJoined),
            E::Unreachable(_) => Some(Self::Unreachable),
            E::Other(_) => None,
        }
    }

    fn exit_code(&self) -> u8 {
        match self {
            Self::Refused => 3,
            Self::NotJoined => 4,
            Self::Unreachable => 5,
        }
    }
}

fn report(error: &anyhow::Error) -> ExitCode {
    match Refusal::of(error) {
        Some(refusal) => {
            eprintln!("gpuaas-node-agent: {}", one_line(error));
            ExitCode::from(refusal.exit_code())
        }
        None => {
            eprintln!("gpuaas-node-agent: error: {}", one_line(error));
            // A real bug: keep the backtrace when one was captured (RUST_BACKTRACE=1).
            let backtrace = error.backtrace();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                eprintln!("{backtrace}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The error chain on one line; a problem+json body (`{"code": …, "detail": …}`) in it is
/// shortened to `code: detail`.
fn one_line(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    let text = match text.find('{') {
        Some(start) => match serde_json::from_str::<serde_json::Value>(text[start..].trim()) {
            Ok(body) if body.get("code").is_some() => {
                let field = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or_default();
                format!("{}{}: {}", &text[..start], field("code"), field("detail"))
            }
            _ => text,
        },
        None => text,
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
