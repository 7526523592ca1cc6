//! Platform nouns: orgs, projects, members, service accounts, API keys, node join tokens,
//! quotas and the audit trail.

use crate::Ctx;
use crate::client::{ApiClient, CliError, Req, seg};
use crate::output::{self, Format};
use api_types::platform::{
    ApiKey, AuditEvent, AuditVerifyReport, CreateApiKeyRequest, CreateInvitationRequest,
    CreateJoinTokenRequest, CreateOrgRequest, CreateOrgResponse, CreateProjectRequest,
    CreateServiceAccountRequest, CreatedApiKey, CreatedInvitation, Invitation, JoinToken, Me,
    Member, Org, Project, Quota, ServiceAccount, SetPlanRequest, SetQuotaRequest, SetRoleRequest,
};
use api_types::{List, Page};
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Subcommand};
use std::collections::BTreeSet;

#[derive(Subcommand)]
pub enum OrgVerb {
    /// The orgs you belong to.
    List,
    /// One org (default: the profile's, else your default project's).
    Get { id: Option<String> },
    /// Create an org, its default project, and an invitation for its owner (operators).
    Create {
        #[arg(long)]
        name: String,
        /// Invited as the org's first owner.
        #[arg(long)]
        owner_email: String,
    },
    /// Put an org on a plan (operators).
    SetPlan {
        org: String,
        #[arg(long)]
        plan: String,
    },
}

#[derive(Subcommand)]
pub enum ProjectVerb {
    /// The projects of an org.
    List {
        /// The org (id or name; default: the profile's, else your default project's).
        #[arg(long)]
        org: Option<String>,
    },
    Create {
        #[arg(long)]
        name: String,
        /// The org (id or name; default: the profile's, else your default project's).
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum MemberVerb {
    /// The members of an org.
    List {
        /// The org (id or name; default: the profile's, else your default project's).
        #[arg(long)]
        org: Option<String>,
    },
    /// Invite someone; the invitation's token is shown once.
    Invite {
        #[arg(long)]
        email: String,
        /// `owner`, `admin`, `member` or `viewer`.
        #[arg(long)]
        role: String,
        /// How long the invitation is valid (`7d`, `48h`, seconds; default 7 days).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<i64>,
        /// The org (id or name; default: the profile's, else your default project's).
        #[arg(long)]
        org: Option<String>,
    },
    /// Change a member's role.
    SetRole {
        /// The member's user id or email.
        user: String,
        #[arg(long)]
        role: String,
        /// The org (id or name; default: the profile's, else your default project's).
        #[arg(long)]
        org: Option<String>,
    },
    /// Remove a member from the org.
    Remove {
        /// The member's user id or email.
        user: String,
        /// The org (id or name; default: the profile's, else your default project's).
        #[arg(long)]
        org: Option<String>,
    },
    /// The org's invitations.
    Invitations {
        /// The org (id or name; default: the profile's, else your default project's).
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ServiceAccountVerb {
    /// The project's service accounts.
    List,
    Create {
        #[arg(long)]
        name: String,
        /// `admin`, `member` or `viewer` in the project.
        #[arg(long)]
        role: String,
    },
    /// Delete a service account (by id or name).
    Delete { id: String },
}

#[derive(Subcommand)]
pub enum ApiKeyVerb {
    /// Your keys and the project's service accounts' keys (never their secrets).
    List,
    /// Create a key: its secret is shown once, now.
    Create {
        #[arg(long)]
        name: String,
        /// A key for this service account of the project (id or name); default: for you.
        #[arg(long)]
        service_account: Option<String>,
        /// Limit the key to this permission (`instances:read`, …); repeat for more.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Bind the key to the project (service accounts' keys always are).
        #[arg(long)]
        bind_to_project: bool,
        /// The key expires after this long (`90d`, `12h`, seconds).
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<i64>,
    },
    /// Revoke a key (by id, prefix or name): it stops working at once.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum JoinTokenVerb {
    /// A single-use token one new host joins with (operators); shown once.
    Create {
        /// How long it is valid: `30m`, `1h`, `3600` (seconds).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: i64,
    },
}

#[derive(Subcommand)]
pub enum QuotaVerb {
    /// The project's plan, entitled SKUs and GPU quota.
    Get,
    /// Set a project's GPU quota (operators): `--project ID --gpus N` or `--unlimited`.
    #[command(group(ArgGroup::new("limit").required(true).args(["gpus", "unlimited"])))]
    Set {
        /// GPUs the project may hold at once.
        #[arg(long)]
        gpus: Option<i32>,
        /// No GPU limit for the project.
        #[arg(long)]
        unlimited: bool,
    },
}

#[derive(Subcommand)]
pub enum AuditVerb {
    /// Audit entries, oldest first: the org's, or the platform's for operators naming no org.
    List {
        /// The org (id or name; default: the profile's, else your default project's, or the
        /// whole platform for operators).
        #[arg(long)]
        org: Option<String>,
        /// Only this action (`api_key.create`, …).
        #[arg(long)]
        action: Option<String>,
        /// Only this actor.
        #[arg(long)]
        actor: Option<String>,
        /// From this time on (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Entries per page (1-200).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Follow pagination to the end.
        #[arg(long)]
        all: bool,
    },
    /// Check the hash chains against their signed anchors; exit 8 when they do not verify.
    Verify {
        /// The org (id or name; default: the profile's, else your default project's, or the
        /// whole platform for operators).
        #[arg(long)]
        org: Option<String>,
    },
    /// Export a range as a self-verifying JSON bundle.
    Export {
        #[arg(long, value_parser = parse_time)]
        since: DateTime<Utc>,
        #[arg(long, value_parser = parse_time)]
        until: DateTime<Utc>,
        /// The org (id or name; default: the profile's, else your default project's, or the
        /// whole platform for operators).
        #[arg(long)]
        org: Option<String>,
        /// Write the bundle here (default: standard output).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

/// `30s`, `30m`, `1h`, `7d`, `1h30m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return if seconds > 0 {
            Ok(seconds)
        } else {
            Err("must be more than 0".into())
        };
    }
    let bad = || format!("`{text}` is not a duration: use e.g. 30m, 1h, 7d or seconds");
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: i64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || total <= 0 {
        return Err(bad());
    }
    Ok(total)
}

/// An RFC 3339 time (`2026-01-31T12:00:00Z`), or a date (`2026-01-31`, midnight UTC).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "`{text}` is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)"
    ))
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// An org named by id or name (among yours).
pub(crate) async fn org_id(api: &ApiClient, named: &str) -> Result<String, CliError> {
    if is_uuid(named) {
        return Ok(named.to_string());
    }
    let orgs: List<Org> = api.send(Req::get("/v1/orgs")).await?;
    orgs.items
        .iter()
        .find(|o| o.name == named)
        .map(|o| o.id.to_string())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no org named {named} among yours (see `gpuaas org list`); name it by id"
            ))
        })
}

/// The org a command acts in: `--org`, else the profile's, else the org of your default project.
pub(crate) async fn resolve_org(
    ctx: &Ctx,
    api: &ApiClient,
    flag: Option<String>,
) -> Result<String, CliError> {
    if let Some(named) = flag.or_else(|| ctx.profile_org()) {
        return org_id(api, &named).await;
    }
    let me: Me = api.send(Req::get("/v1/me")).await?;
    if let Some(default) = me.default_project_id
        && let Some(m) = me
            .memberships
            .iter()
            .find(|m| m.project_id == Some(default))
    {
        return Ok(m.org_id.to_string());
    }
    let orgs: BTreeSet<String> = me
        .memberships
        .iter()
        .map(|m| m.org_id.to_string())
        .collect();
    if orgs.len() == 1 {
        return Ok(orgs.into_iter().next().expect("one org"));
    }
    if let Some(default) = me.default_project_id {
        for org in &orgs {
            let projects: List<Project> = api
                .send(Req::get(format!("/v1/orgs/{}/projects", seg(org))))
                .await?;
            if projects.items.iter().any(|p| p.id == default) {
                return Ok(org.clone());
            }
        }
    }
    Err(CliError::Usage(format!(
        "cannot tell which org you mean ({}): pass --org <id> (see `gpuaas org list`), or set \
         one with `gpuaas profile set --org <id>`",
        if orgs.is_empty() {
            "you belong to none".to_string()
        } else {
            format!("you belong to {}", orgs.len())
        }
    )))
}

/// The org an audit request names: `--org`, else the profile's, else none (the API decides).
async fn audit_org(
    ctx: &Ctx,
    api: &ApiClient,
    flag: Option<String>,
) -> Result<Option<String>, CliError> {
    match flag.or_else(|| ctx.profile_org()) {
        Some(named) => Ok(Some(org_id(api, &named).await?)),
        None => Ok(None),
    }
}

pub async fn org(ctx: &Ctx, verb: OrgVerb) -> Result<(), CliError> {
    let api = &ctx.client()?;
    let format = ctx.format;
    match verb {
        OrgVerb::List => {
            let orgs: List<Org> = api.send(Req::get("/v1/orgs")).await?;
            output::print_orgs(format, &orgs.items);
        }
        OrgVerb::Get { id } => {
            let org = resolve_org(ctx, api, id).await?;
            let org: Org = api
                .send(Req::get(format!("/v1/orgs/{}", seg(&org))))
                .await?;
            output::print_orgs(format, &[org]);
        }
        OrgVerb::Create { name, owner_email } => {
            let created: CreateOrgResponse = api
                .send(Req::post("/v1/orgs").json(&CreateOrgRequest { name, owner_email }))
                .await?;
            eprintln!("note: the owner's invitation token is shown only now; pass it on safely");
            output::print_created_org(format, &created);
        }
        OrgVerb::SetPlan { org, plan } => {
            let org = if is_uuid(&org) {
                org
            } else {
                org_id(api, &org).await?
            };
            api.send::<()>(
                Req::put(format!("/v1/orgs/{}/plan", seg(&org)))
                    .json(&SetPlanRequest { plan: plan.clone() }),
            )
            .await?;
            match format {
                Format::Json => output::json(&serde_json::json!({"org": org, "plan": plan})),
                Format::Table => println!("Org {org} is on plan {plan}."),
            }
        }
    }
    Ok(())
}

pub async fn project(ctx: &Ctx, verb: ProjectVerb) -> Result<(), CliError> {
    let api = &ctx.client()?;
    let format = ctx.format;
    match verb {
        ProjectVerb::List { org } => {
            let org = resolve_org(ctx, api, org).await?;
            let projects: List<Project> = api
                .send(Req::get(format!("/v1/orgs/{}/projects", seg(&org))))
                .await?;
            output::print_projects(format, &projects.items);
        }
        ProjectVerb::Create { name, org } => {
            let org = resolve_org(ctx, api, org).await?;
            let project: Project = api
                .send(
                    Req::post(format!("/v1/orgs/{}/projects", seg(&org)))
                        .json(&CreateProjectRequest { name }),
                )
                .await?;
            output::print_projects(format, &[project]);
        }
    }
    Ok(())
}

/// A member named by user id or email.
async fn member_id(api: &ApiClient, org: &str, user: &str) -> Result<String, CliError> {
    if is_uuid(user) {
        return Ok(user.to_string());
    }
    let members: List<Member> = api
        .send(Req::get(format!("/v1/orgs/{}/members", seg(org))))
        .await?;
    members
        .items
        .iter()
        .find(|m| m.email.eq_ignore_ascii_case(user))
        .map(|m| m.user_id.to_string())
        .ok_or_else(|| CliError::Usage(format!("no member {user} in org {org}")))
}

pub async fn member(ctx: &Ctx, verb: MemberVerb) -> Result<(), CliError> {
    let api = &ctx.client()?;
    let format = ctx.format;
    match verb {
        MemberVerb::List { org } => {
            let org = resolve_org(ctx, api, org).await?;
            let members: List<Member> = api
                .send(Req::get(format!("/v1/orgs/{}/members", seg(&org))))
                .await?;
            output::print_members(format, &members.items);
        }
        MemberVerb::Invite {
            email,
            role,
            ttl,
            org,
        } => {
            let org = resolve_org(ctx, api, org).await?;
            let created: CreatedInvitation = api
                .send(
                    Req::post(format!("/v1/orgs/{}/invitations", seg(&org))).json(
                        &CreateInvitationRequest {
                            email,
                            role,
                            ttl_seconds: ttl,
                        },
                    ),
                )
                .await?;
            eprintln!("note: the invitation token is shown only now; pass it on safely");
            output::print_created_invitation(format, &created);
        }
        MemberVerb::SetRole { user, role, org } => {
            let org = resolve_org(ctx, api, org).await?;
            let user = member_id(api, &org, &user).await?;
            let member: Member = api
                .send(
                    Req::put(format!("/v1/orgs/{}/members/{}", seg(&org), seg(&user)))
                        .json(&SetRoleRequest { role }),
                )
                .await?;
            output::print_members(format, &[member]);
        }
        MemberVerb::Remove { user, org } => {
            let org = resolve_org(ctx, api, org).await?;
            let user = member_id(api, &org, &user).await?;
            api.send::<()>(Req::delete(format!(
                "/v1/orgs/{}/members/{}",
                seg(&org),
                seg(&user)
            )))
            .await?;
            match format {
                Format::Json => {
                    output::json(&serde_json::json!({"org": org, "user": user, "removed": true}))
                }
                Format::Table => println!("Removed {user} from org {org}."),
            }
        }
        MemberVerb::Invitations { org } => {
            let org = resolve_org(ctx, api, org).await?;
            let invitations: List<Invitation> = api
                .send(Req::get(format!("/v1/orgs/{}/invitations", seg(&org))))
                .await?;
            output::print_invitations(format, &invitations.items);
        }
    }
    Ok(())
}

/// A service account of the project named by id or name.
async fn service_account_id(api: &ApiClient, named: &str) -> Result<uuid::Uuid, CliError> {
    if let Ok(id) = uuid::Uuid::parse_str(named) {
        return Ok(id);
    }
    let accounts: List<ServiceAccount> = api.send(Req::get("/v1/service-accounts")).await?;
    accounts
        .items
        .iter()
        .find(|a| a.name == named)
        .map(|a| a.id)
        .ok_or_else(|| CliError::Usage(format!("no service account named {named} in the project")))
}

pub async fn service_account(ctx: &Ctx, verb: ServiceAccountVerb) -> Result<(), CliError> {
    let api = &ctx.client()?;
    let format = ctx.format;
    match verb {
        ServiceAccountVerb::List => {
            let accounts: List<ServiceAccount> = api.send(Req::get("/v1/service-accounts")).await?;
            output::print_service_accounts(format, &accounts.items);
        }
        ServiceAccountVerb::Create { name, role } => {
            let account: ServiceAccount = api
                .send(
                    Req::post("/v1/service-accounts")
                        .json(&CreateServiceAccountRequest { name, role }),
                )
                .await?;
            output::print_service_accounts(format, &[account]);
        }
        ServiceAccountVerb::Delete { id } => {
            let id = service_account_id(api, &id).await?;
            api.send::<()>(Req::delete(format!("/v1/service-accounts/{id}")))
                .await?;
            match format {
                Format::Json => output::json(&serde_json::json!({"id": id, "deleted": true})),
                Format::Table => println!("Deleted service account {id}."),
            }
        }
    }
    Ok(())
}

/// A key named by id, prefix (`gpk_…`) or name; exactly one live key must match.
async fn api_key_id(api: &ApiClient, named: &str) -> Result<String, CliError> {
    if is_uuid(named) {
        return Ok(named.to_string());
    }
    let keys: List<ApiKey> = api.send(Req::get("/v1/api-keys")).await?;
    let matching: Vec<&ApiKey> = keys
        .items
        .iter()
        .filter(|k| k.revoked_at.is_none() && (k.name == named || k.prefix == named))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.id.to_string()),
        [] => Err(CliError::Usage(format!("no live API key named {named}"))),
        _ => Err(CliError::Usage(format!(
            "{} keys are named {named}: revoke one by id (see `gpuaas apikey list`)",
            matching.len()
        ))),
    }
}

pub async fn api_key(ctx: &Ctx, verb: ApiKeyVerb) -> Result<(), CliError> {
    let api = &ctx.client()?;
    let format = ctx.format;
    match verb {
        ApiKeyVerb::List => {
            let keys: List<ApiKey> = api.send(Req::get("/v1/api-keys")).await?;
            output::print_api_keys(format, &keys.items);
        }
        ApiKeyVerb::Create {
            name,
            service_account,
            scopes,
            bind_to_project,
            expires_in,
        } => {
            let service_account_id = match service_account {
                Some(named) => Some(service_account_id(api, &named).await?),
                None => None,
            };
            let body = CreateApiKeyRequest {
                name,
                service_account_id,
                bind_to_project: bind_to_project.then_some(true),
                scopes: (!scopes.is_empty()).then_some(scopes),
                expires_in_seconds: expires_in,
            };
            let created: CreatedApiKey = api.send(Req::post("/v1/api-keys").json(&body)).await?;
            eprintln!(
                "warning: the key's secret is shown only now and never again: store it safely"
            );
            output::print_created_api_key(format, &created);
        }
        ApiKeyVerb::Revoke { id } => {
            let id = api_key_id(api, &id).await?;
            let key: ApiKey = api
                .send(Req::delete(format!("/v1/api-keys/{}", seg(&id))))
                .await?;
            output::print_api_keys(format, &[key]);
        }
    }
    Ok(())
}

pub async fn join_token(ctx: &Ctx, verb: JoinTokenVerb) -> Result<(), CliError> {
    let api = &ctx.client()?;
    match verb {
        JoinTokenVerb::Create { ttl } => {
            let token: JoinToken = api
                .send(
                    Req::post("/v1/nodes/join-tokens").json(&CreateJoinTokenRequest {
                        ttl_seconds: Some(ttl),
                    }),
                )
                .await?;
            eprintln!("note: the join token is shown only now; one host can join with it, once");
            output::print_join_token(ctx.format, &token);
        }
    }
    Ok(())
}

pub async fn quota(ctx: &Ctx, verb: QuotaVerb) -> Result<(), CliError> {
    let api = &ctx.client()?;
    let format = ctx.format;
    match verb {
        QuotaVerb::Get => {
            let quota: Quota = api.send(Req::get("/v1/quota")).await?;
            output::print_quota(format, &quota);
        }
        QuotaVerb::Set { gpus, unlimited } => {
            let Some(project) = ctx.project_flag.clone() else {
                return Err(CliError::Usage(
                    "name the project whose quota to set: quota set --project <id> --gpus N".into(),
                ));
            };
            let project = if is_uuid(&project) {
                project
            } else {
                // A name: the project's id, as the API resolves it for you.
                let quota: Quota = api.send(Req::get("/v1/quota")).await.map_err(|e| {
                    if matches!(e.exit_code(), crate::ExitCode::NotFound) {
                        CliError::Usage(format!("no project {project} you can see: name it by id"))
                    } else {
                        e
                    }
                })?;
                quota.project_id.to_string()
            };
            let max_concurrent_gpus = if unlimited { None } else { gpus };
            api.send::<()>(
                Req::put(format!("/v1/projects/{}/quota", seg(&project))).json(&SetQuotaRequest {
                    max_concurrent_gpus,
                }),
            )
            .await?;
            match format {
                Format::Json => output::json(&serde_json::json!({
                    "project_id": project,
                    "max_concurrent_gpus": max_concurrent_gpus,
                })),
                Format::Table => match max_concurrent_gpus {
                    Some(n) => println!("Project {project} may hold {n} GPU(s) at once."),
                    None => println!("Project {project} has no GPU limit."),
                },
            }
        }
    }
    Ok(())
}

pub async fn audit(ctx: &Ctx, verb: AuditVerb) -> Result<(), CliError> {
    let api = &ctx.client()?;
    let format = ctx.format;
    match verb {
        AuditVerb::List {
            org,
            action,
            actor,
            since,
            until,
            limit,
            all,
        } => {
            let org = audit_org(ctx, api, org).await?;
            let mut items: Vec<AuditEvent> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page: Page<AuditEvent> = api
                    .send(
                        Req::get("/v1/audit-events")
                            .query_opt("org", org.as_deref())
                            .query_opt("action", action.as_deref())
                            .query_opt("actor", actor.as_deref())
                            .query_opt("since", since.as_ref().map(rfc3339))
                            .query_opt("until", until.as_ref().map(rfc3339))
                            .query("limit", limit)
                            .query_opt("cursor", cursor.as_deref()),
                    )
                    .await?;
                items.extend(page.items);
                cursor = page.next_cursor;
                if !all || cursor.is_none() {
                    break;
                }
                if matches!(format, Format::Table) {
                    eprintln!("… {} entries so far", items.len());
                }
            }
            output::print_audit_events(format, &items);
        }
        AuditVerb::Verify { org } => {
            let org = audit_org(ctx, api, org).await?;
            let report: AuditVerifyReport = api
                .send(Req::get("/v1/audit-events/verify").query_opt("org", org.as_deref()))
                .await?;
            output::print_verify_report(format, &report);
            if !report.ok {
                return Err(CliError::AuditTampered(format!(
                    "{} problem(s) in {} chain(s)",
                    report.problems.len(),
                    report.chains_checked
                )));
            }
        }
        AuditVerb::Export {
            since,
            until,
            org,
            out,
        } => {
            let org = audit_org(ctx, api, org).await?;
            eprintln!(
                "exporting the audit trail {} .. {} …",
                rfc3339(&since),
                rfc3339(&until)
            );
            // The bundle exactly as the API sent it: its hashes and signatures cover these bytes'
            // contents, so nothing is re-encoded on the way.
            let body = api
                .send_raw(
                    &Req::get("/v1/audit-events/export")
                        .query_opt("org", org.as_deref())
                        .query("since", rfc3339(&since))
                        .query("until", rfc3339(&until)),
                )
                .await?;
            let summary: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| CliError::Other(format!("unexpected response: {e}")))?;
            let events = summary["events"].as_array().map_or(0, Vec::len);
            let heads = summary["heads"].as_array().map_or(0, Vec::len);
            match out {
                Some(path) => {
                    std::fs::write(&path, &body).map_err(|e| {
                        CliError::Other(format!("cannot write {}: {e}", path.display()))
                    })?;
                    eprintln!(
                        "wrote {events} event(s) and {heads} signed head(s) to {}",
                        path.display()
                    );
                }
                None => {
                    use std::io::Write;
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(&body)
                        .and_then(|()| stdout.write_all(b"\n"))
                        .map_err(|e| CliError::Other(format!("cannot write the bundle: {e}")))?;
                    eprintln!("{events} event(s), {heads} signed head(s)");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600"), Ok(3600));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("7d"), Ok(604800));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("10m5").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_time("2026-01-31T12:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-01-31T11:00:00+00:00"
        );
        assert_eq!(
            rfc3339(&parse_time("2026-01-31").unwrap()),
            "2026-01-31T00:00:00Z"
        );
        assert!(parse_time("yesterday").is_err());
    }
}
