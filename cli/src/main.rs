//! `gpuaas`: the command-line client. `gpuaas <noun> <verb>`, tables by default, `-o json` for
//! scripts, and exit codes scripts can trust (see `ExitCode`).

mod client;
mod output;

use api_types::gpuaas::{CreateInstanceRequest, Instance, Node};
use clap::{Parser, Subcommand, ValueEnum};
use client::{ApiClient, CliError};
use output::{Format, print_instance, print_instances, print_node_events, print_nodes, print_skus};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Exit codes: 0 success; 1 unexpected error; 2 usage (clap); 3 the API refused the request
/// (4xx); 4 not found; 5 the instance ended `failed`; 6 `--wait` timed out; 7 API unreachable.
#[derive(Debug, Clone, Copy)]
pub enum ExitCode {
    Unexpected = 1,
    Refused = 3,
    NotFound = 4,
    InstanceFailed = 5,
    WaitTimedOut = 6,
    Unreachable = 7,
}

#[derive(Parser)]
#[command(name = "gpuaas", version, about = "GPUaaS command-line client")]
struct Cli {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: OutputArg,
    /// API base URL (default: the dev profile's, else http://127.0.0.1:8080).
    #[arg(long, global = true, env = "GPUAAS_API_URL")]
    api_url: Option<String>,
    /// Bearer token (default: the dev profile's).
    #[arg(long, global = true, env = "GPUAAS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Noun,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Noun {
    /// GPU SKUs on offer.
    Sku {
        #[command(subcommand)]
        verb: SkuVerb,
    },
    /// GPU hosts.
    Node {
        #[command(subcommand)]
        verb: NodeVerb,
    },
    /// GPU instances.
    Instance {
        #[command(subcommand)]
        verb: InstanceVerb,
    },
}

#[derive(Subcommand)]
enum SkuVerb {
    List,
}

#[derive(Subcommand)]
enum NodeVerb {
    List,
    Get {
        id: String,
    },
    /// Take a node out of placement (running instances stay).
    Cordon {
        id: String,
    },
    /// Put a cordoned node back into placement.
    Uncordon {
        id: String,
    },
    /// Stop placing on a node, let its instances end (terminating the rest at the deadline),
    /// then leave it cordoned.
    Drain {
        id: String,
        /// Seconds the instances get to end before they are terminated.
        #[arg(long, default_value_t = 3600)]
        deadline: u64,
        /// Wait until the drain finished, showing progress.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 7200)]
        timeout: u64,
    },
    /// What happened to a node: operator actions, down/up, GPU health, reconciler fixes.
    Events {
        id: String,
    },
    /// Retire a down node (or a drained, empty one) for good. You assert the host runs nothing
    /// any more (powered off or wiped): its GPUs are released.
    Decommission {
        id: String,
    },
}

#[derive(Subcommand)]
enum InstanceVerb {
    /// Launch an instance.
    Create {
        #[arg(long)]
        sku: String,
        /// Number of GPUs.
        #[arg(long)]
        gpus: i32,
        #[arg(long)]
        name: Option<String>,
        /// Shell command to run (default: `sleep infinity`).
        #[arg(long)]
        command: Option<String>,
        /// Seconds to wait for capacity when nothing fits (default 0: fail at once).
        #[arg(long)]
        capacity_timeout: Option<i32>,
        /// Makes retries safe: the same key and body return the same instance.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait until the instance is running (or failed), showing progress.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Follow pagination to the end.
        #[arg(long)]
        all: bool,
    },
    Get {
        id: String,
    },
    /// Terminate an instance.
    Delete {
        id: String,
        /// Wait until it is terminated.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let format = match cli.output {
        OutputArg::Table => Format::Table,
        OutputArg::Json => Format::Json,
    };
    let api = ApiClient::from_env(cli.api_url, cli.token);
    match run(&api, cli.command, format).await {
        Ok(()) => {}
        Err(e) => {
            match format {
                Format::Json => eprintln!(
                    "{}",
                    serde_json::json!({"error": e.to_string(), "code": e.code()})
                ),
                Format::Table => eprintln!("error: {e}"),
            }
            std::process::exit(e.exit_code() as i32);
        }
    }
}

async fn run(api: &ApiClient, command: Noun, format: Format) -> Result<(), CliError> {
    match command {
        Noun::Sku {
            verb: SkuVerb::List,
        } => print_skus(format, &api.list_skus().await?),
        Noun::Node {
            verb: NodeVerb::List,
        } => print_nodes(format, &api.list_nodes().await?),
        Noun::Node {
            verb: NodeVerb::Get { id },
        } => print_nodes(format, &[api.get_node(&id).await?]),
        Noun::Node {
            verb: NodeVerb::Cordon { id },
        } => print_nodes(format, &[api.set_cordoned(&id, true).await?]),
        Noun::Node {
            verb: NodeVerb::Uncordon { id },
        } => print_nodes(format, &[api.set_cordoned(&id, false).await?]),
        Noun::Node {
            verb:
                NodeVerb::Drain {
                    id,
                    deadline,
                    wait,
                    timeout,
                },
        } => {
            let draining = api.drain_node(&id, deadline).await?;
            let node = if wait {
                wait_for_drain(api, &id, timeout).await?
            } else {
                draining
            };
            print_nodes(format, &[node]);
        }
        Noun::Node {
            verb: NodeVerb::Events { id },
        } => print_node_events(format, &api.node_events(&id).await?),
        Noun::Node {
            verb: NodeVerb::Decommission { id },
        } => print_nodes(format, &[api.node_action(&id, "decommission").await?]),
        Noun::Instance { verb } => return instance(api, verb, format).await,
    }
    Ok(())
}

async fn instance(api: &ApiClient, verb: InstanceVerb, format: Format) -> Result<(), CliError> {
    match verb {
        InstanceVerb::Create {
            sku,
            gpus,
            name,
            command,
            capacity_timeout,
            idempotency_key,
            wait,
            timeout,
        } => {
            let req = CreateInstanceRequest {
                name,
                sku,
                gpu_count: gpus,
                command,
                capacity_timeout_seconds: capacity_timeout,
            };
            let created = api
                .create_instance(&req, idempotency_key.as_deref())
                .await?;
            if !wait {
                print_instance(format, &created);
                return Ok(());
            }
            let done = wait_for(
                api,
                &created.id.to_string(),
                &["running", "failed", "terminated"],
                timeout,
            )
            .await?;
            print_instance(format, &done);
            if done.state == "failed" {
                return Err(CliError::InstanceFailed(
                    done.failure_reason.unwrap_or_default(),
                ));
            }
        }
        InstanceVerb::List { limit, all } => {
            let mut items = Vec::new();
            let mut cursor = None;
            loop {
                let page = api.list_instances(limit, cursor.as_deref()).await?;
                items.extend(page.items);
                cursor = page.next_cursor;
                if !all || cursor.is_none() {
                    break;
                }
            }
            print_instances(format, &items);
        }
        InstanceVerb::Get { id } => print_instance(format, &api.get_instance(&id).await?),
        InstanceVerb::Delete { id, wait, timeout } => {
            let deleting = api.delete_instance(&id).await?;
            if !wait {
                print_instance(format, &deleting);
                return Ok(());
            }
            let done = wait_for(api, &id, &["terminated", "failed"], timeout).await?;
            print_instance(format, &done);
        }
    }
    Ok(())
}

/// Polls until the instance reaches one of `states`, showing a live progress line on stderr.
/// Polls a draining node until its drain ends, showing how many instances are left.
async fn wait_for_drain(api: &ApiClient, id: &str, timeout_s: u64) -> Result<Node, CliError> {
    let started = Instant::now();
    loop {
        let node = api.get_node(id).await?;
        if node.state != "draining" {
            eprintln!("[{:>4}s] {}", started.elapsed().as_secs(), node.state);
            return Ok(node);
        }
        let held = node.gpus.iter().filter(|g| g.allocated).count();
        eprintln!(
            "[{:>4}s] draining · {held} GPU(s) still held{}",
            started.elapsed().as_secs(),
            node.drain_deadline
                .map(|d| format!(" · deadline {}", d.format("%H:%M:%S")))
                .unwrap_or_default()
        );
        if started.elapsed() > Duration::from_secs(timeout_s) {
            return Err(CliError::WaitTimedOut(node.state));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn wait_for(
    api: &ApiClient,
    id: &str,
    states: &[&str],
    timeout_s: u64,
) -> Result<Instance, CliError> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    loop {
        let instance = api.get_instance(id).await?;
        let line = format!(
            "{} · {}{}",
            instance.state,
            instance.current_step,
            instance
                .status_message
                .as_deref()
                .map(|m| format!(" · {m}"))
                .unwrap_or_default()
        );
        if line != last_line || tty {
            if tty {
                eprint!("\r\x1b[2K[{:>4}s] {line}", started.elapsed().as_secs());
            } else {
                eprintln!("[{:>4}s] {line}", started.elapsed().as_secs());
            }
            last_line = line;
        }
        if states.contains(&instance.state.as_str()) {
            if tty {
                eprintln!();
            }
            return Ok(instance);
        }
        if started.elapsed() > Duration::from_secs(timeout_s) {
            if tty {
                eprintln!();
            }
            return Err(CliError::WaitTimedOut(instance.state));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
