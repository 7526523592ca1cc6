//! `gpuaas`: the command-line client. `gpuaas <noun> <verb>`, tables by default, `-o json` for
//! scripts, and exit codes scripts can trust (see `ExitCode`).

mod billing;
mod client;
mod config;
mod output;
mod platform;
mod session;

use api_types::gpuaas::{CreateInstanceRequest, Instance, Node};
use clap::{Parser, Subcommand, ValueEnum};
use client::{ApiClient, CliError, Credential, Session};
use config::{Config, Profile};
use output::{Format, print_instance, print_instances, print_node_events, print_nodes, print_skus};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Exit codes: 0 success; 1 unexpected error; 2 usage (clap, or a missing `--org`, an unknown
/// profile); 3 the API refused the request (4xx, 401 included); 4 not found (tenants also get it
/// for operator routes); 5 the instance ended `failed`; 6 `--wait` timed out; 7 API unreachable;
/// 8 `audit verify` found the audit trail tampered with.
#[derive(Debug, Clone, Copy)]
pub enum ExitCode {
    Unexpected = 1,
    Usage = 2,
    Refused = 3,
    NotFound = 4,
    InstanceFailed = 5,
    WaitTimedOut = 6,
    Unreachable = 7,
    AuditTampered = 8,
}

const GLOBAL: &str = "Global options";

#[derive(Parser)]
#[command(name = "gpuaas", version, about = "GPUaaS command-line client")]
struct Cli {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table", help_heading = GLOBAL)]
    output: OutputArg,
    /// The profile of the config file to use (`$GPUAAS_CONFIG`, else
    /// `~/.config/gpuaas/config.json`); default: its current one. For `login`: the profile to
    /// save (default `default`).
    #[arg(long, global = true, env = "GPUAAS_PROFILE", help_heading = GLOBAL)]
    profile: Option<String>,
    /// API base URL (default: the profile's, else http://127.0.0.1:8080).
    #[arg(long, global = true, env = "GPUAAS_API_URL", help_heading = GLOBAL)]
    api_url: Option<String>,
    /// Bearer token or API key (`gpk_…`), instead of the profile's credential.
    #[arg(long, global = true, env = "GPUAAS_TOKEN", hide_env_values = true, help_heading = GLOBAL)]
    token: Option<String>,
    /// The project to act in, by id or name (default: the profile's, else the credential's).
    #[arg(long, global = true, env = "GPUAAS_PROJECT", help_heading = GLOBAL)]
    project: Option<String>,
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
    /// Log in and save the credential as a profile (made the current one).
    Login(session::LoginArgs),
    /// End the profile's session and forget its credential.
    Logout,
    /// Profiles of the config file; who the credential is.
    Profile {
        #[command(subcommand)]
        verb: session::ProfileVerb,
    },
    /// Orgs.
    Org {
        #[command(subcommand)]
        verb: platform::OrgVerb,
    },
    /// Projects of an org.
    Project {
        #[command(subcommand)]
        verb: platform::ProjectVerb,
    },
    /// Members and invitations of an org.
    Member {
        #[command(subcommand)]
        verb: platform::MemberVerb,
    },
    /// Service accounts of the project.
    #[command(alias = "service-account")]
    Serviceaccount {
        #[command(subcommand)]
        verb: platform::ServiceAccountVerb,
    },
    /// API keys (`gpk_…`).
    #[command(alias = "api-key")]
    Apikey {
        #[command(subcommand)]
        verb: platform::ApiKeyVerb,
    },
    /// The project's plan, entitlements and GPU quota.
    Quota {
        #[command(subcommand)]
        verb: platform::QuotaVerb,
    },
    /// The audit trail: list, verify, export.
    Audit {
        #[command(subcommand)]
        verb: platform::AuditVerb,
    },
    /// Billing: balance, usage, invoices, top-ups, spend limit, payment methods; reruns (finance).
    Billing {
        #[command(subcommand)]
        verb: billing::BillingVerb,
    },
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
    /// Single-use tokens a new host joins with.
    JoinToken {
        #[command(subcommand)]
        verb: platform::JoinTokenVerb,
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

/// What every command may need: the output format, the config file and its selected profile,
/// and the global flags.
pub struct Ctx {
    pub format: Format,
    pub config_path: PathBuf,
    pub config: Config,
    /// `--profile` (or `GPUAAS_PROFILE`) as given.
    pub profile_flag: Option<String>,
    /// The profile in use: the flag's, else the file's current one.
    pub profile_name: Option<String>,
    pub api_url_flag: Option<String>,
    pub token_flag: Option<String>,
    pub project_flag: Option<String>,
}

impl Ctx {
    /// The selected profile; an unknown name given with `--profile` is a usage error.
    pub fn profile(&self) -> Result<Option<&Profile>, CliError> {
        let Some(name) = &self.profile_name else {
            return Ok(None);
        };
        match self.config.profile(name) {
            Some(p) => Ok(Some(p)),
            None if self.profile_flag.is_some() => Err(CliError::Usage(format!(
                "no profile named {name} in {} (see `gpuaas profile list`, or `gpuaas login --profile {name}`)",
                self.config_path.display()
            ))),
            None => Ok(None),
        }
    }

    /// A client for the selected profile, overridden by the flags.
    pub fn client(&self) -> Result<ApiClient, CliError> {
        let profile = self.profile()?;
        let base = self
            .api_url_flag
            .clone()
            .or_else(|| profile.and_then(|p| p.api_url.clone()))
            .unwrap_or_else(|| config::DEFAULT_API_URL.into());
        let credential = match (&self.token_flag, profile) {
            (Some(token), _) => Credential::Static(token.clone()),
            (None, Some(p)) if p.api_key.is_some() => {
                Credential::Static(p.api_key.clone().unwrap_or_default())
            }
            (None, Some(p)) if p.access_token.is_some() || p.refresh_token.is_some() => {
                Credential::Session(Session {
                    config_path: self.config_path.clone(),
                    profile: self.profile_name.clone().unwrap_or_default(),
                    access_token: p.access_token.clone(),
                    refresh_token: p.refresh_token.clone(),
                    expires_at: p.access_expires_at,
                })
            }
            _ => Credential::None,
        };
        let project = self
            .project_flag
            .clone()
            .or_else(|| profile.and_then(|p| p.project.clone()));
        Ok(ApiClient::new(&base, credential, project))
    }

    /// The org of the selected profile, if it names one.
    pub fn profile_org(&self) -> Option<String> {
        self.profile().ok().flatten().and_then(|p| p.org.clone())
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let format = match cli.output {
        OutputArg::Table => Format::Table,
        OutputArg::Json => Format::Json,
    };
    let result = async {
        let config_path = config::path();
        let config = Config::load(&config_path)?;
        let profile_flag = non_empty(cli.profile);
        let ctx = Ctx {
            format,
            profile_name: profile_flag.clone().or_else(|| config.current.clone()),
            config_path,
            config,
            profile_flag,
            api_url_flag: non_empty(cli.api_url),
            token_flag: non_empty(cli.token),
            project_flag: non_empty(cli.project),
        };
        run(ctx, cli.command).await
    }
    .await;
    if let Err(e) = result {
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

async fn run(mut ctx: Ctx, command: Noun) -> Result<(), CliError> {
    let format = ctx.format;
    match command {
        Noun::Login(args) => session::login(&mut ctx, args).await,
        Noun::Logout => session::logout(&mut ctx).await,
        Noun::Profile { verb } => session::profile(&mut ctx, verb).await,
        Noun::Org { verb } => platform::org(&ctx, verb).await,
        Noun::Project { verb } => platform::project(&ctx, verb).await,
        Noun::Member { verb } => platform::member(&ctx, verb).await,
        Noun::Serviceaccount { verb } => platform::service_account(&ctx, verb).await,
        Noun::Apikey { verb } => platform::api_key(&ctx, verb).await,
        Noun::Quota { verb } => platform::quota(&ctx, verb).await,
        Noun::Audit { verb } => platform::audit(&ctx, verb).await,
        Noun::Billing { verb } => billing::billing(&ctx, verb).await,
        Noun::Sku {
            verb: SkuVerb::List,
        } => {
            print_skus(format, &ctx.client()?.list_skus().await?);
            Ok(())
        }
        Noun::Node { verb } => node(&ctx, verb).await,
        Noun::Instance { verb } => instance(&ctx.client()?, verb, format).await,
    }
}

async fn node(ctx: &Ctx, verb: NodeVerb) -> Result<(), CliError> {
    let format = ctx.format;
    if let NodeVerb::JoinToken { verb } = verb {
        return platform::join_token(ctx, verb).await;
    }
    let api = &ctx.client()?;
    match verb {
        NodeVerb::List => output::print_node_list(format, &api.list_nodes().await?),
        NodeVerb::Get { id } => print_nodes(format, &[api.get_node(&id).await?]),
        NodeVerb::Cordon { id } => print_nodes(format, &[api.set_cordoned(&id, true).await?]),
        NodeVerb::Uncordon { id } => print_nodes(format, &[api.set_cordoned(&id, false).await?]),
        NodeVerb::Drain {
            id,
            deadline,
            wait,
            timeout,
        } => {
            let draining = api.drain_node(&id, deadline).await?;
            let node = if wait {
                wait_for_drain(api, &id, timeout).await?
            } else {
                draining
            };
            print_nodes(format, &[node]);
        }
        NodeVerb::Events { id } => print_node_events(format, &api.node_events(&id).await?),
        NodeVerb::Decommission { id } => {
            print_nodes(format, &[api.node_action(&id, "decommission").await?])
        }
        NodeVerb::JoinToken { .. } => {}
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
            if let Format::Table = format {
                show_price(api, &sku, gpus).await;
            }
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

/// What the instance will cost per hour, from `/v1/skus` (billing's price book), on stderr before
/// launching; says nothing if the SKU is not listed (the API then refuses it).
async fn show_price(api: &ApiClient, sku: &str, gpus: i32) {
    let Ok(skus) = api.list_skus().await else {
        return;
    };
    if let Some(s) = skus.iter().find(|s| s.id == sku) {
        let hourly = s
            .price_per_gpu_hour_minor
            .saturating_mul(i64::from(gpus.max(0)));
        eprintln!(
            "price: {} per hour ({} GPU(s) at {} per GPU-hour{})",
            billing::money(hourly, &s.currency),
            gpus,
            billing::money(s.price_per_gpu_hour_minor, &s.currency),
            s.price_version
                .map(|v| format!(", price book v{v}"))
                .unwrap_or_default()
        );
    }
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
