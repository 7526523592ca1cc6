//! Platform routes: probes and metrics; identity (`/v1/auth`, `/v1/me`, orgs, projects, members,
//! project members, invitations, service accounts, API keys, node join tokens); quotas; audit. Billing joins here.

pub mod api_keys;
pub mod audit_events;
pub mod auth;
mod convert;
pub mod health;
pub mod join_tokens;
pub mod members;
pub mod metrics;
pub mod orgs;
pub mod project_members;
pub mod projects;
pub mod service_accounts;

use crate::AppState;
use crate::auth::{Access::*, Route, route};
use axum::Router;
use axum::routing::{get, post, put};
use platform_iam::Permission::*;

pub const ROUTES: &[Route] = &[
    route("GET", "/healthz", Public, "health.live"),
    route("GET", "/readyz", Public, "health.ready"),
    route("GET", "/metrics", Public, "metrics.read"),
    route("GET", "/.well-known/jwks.json", Public, "auth.jwks"),
    route("POST", "/v1/auth/signup", Public, "auth.signup"),
    route("POST", "/v1/auth/login", Public, "auth.login"),
    route("POST", "/v1/auth/refresh", Public, "auth.refresh"),
    route("POST", "/v1/auth/logout", Public, "auth.logout"),
    route(
        "POST",
        "/v1/auth/accept-invitation",
        Public,
        "invitation.accept",
    ),
    route("GET", "/v1/me", Authenticated, "me.read"),
    route("GET", "/v1/orgs", Authenticated, "org.list"),
    route("POST", "/v1/orgs", Platform(OrgsCreate), "org.create"),
    route("GET", "/v1/orgs/{org}", Org(OrgRead), "org.read"),
    route(
        "PUT",
        "/v1/orgs/{org}/plan",
        Platform(QuotaWrite),
        "org.set_plan",
    ),
    route(
        "GET",
        "/v1/orgs/{org}/projects",
        Org(ProjectsRead),
        "project.list",
    ),
    route(
        "POST",
        "/v1/orgs/{org}/projects",
        Org(ProjectsWrite),
        "project.create",
    ),
    route("GET", "/v1/orgs/{org}/members", Org(OrgRead), "member.list"),
    route(
        "PUT",
        "/v1/orgs/{org}/members/{user}",
        Org(MembersManage),
        "member.set_role",
    ),
    route(
        "DELETE",
        "/v1/orgs/{org}/members/{user}",
        Org(MembersManage),
        "member.remove",
    ),
    route(
        "GET",
        "/v1/orgs/{org}/invitations",
        Org(MembersManage),
        "invitation.list",
    ),
    route(
        "POST",
        "/v1/orgs/{org}/invitations",
        Org(MembersManage),
        "invitation.create",
    ),
    route(
        "GET",
        "/v1/project-members",
        Project(MembersManage),
        "project_member.list",
    ),
    route(
        "PUT",
        "/v1/project-members/{user}",
        Project(MembersManage),
        "project_member.set_role",
    ),
    route(
        "DELETE",
        "/v1/project-members/{user}",
        Project(MembersManage),
        "project_member.remove",
    ),
    route("GET", "/v1/quota", Project(QuotaRead), "quota.read"),
    route(
        "PUT",
        "/v1/projects/{project}/quota",
        Platform(QuotaWrite),
        "quota.set",
    ),
    route(
        "GET",
        "/v1/service-accounts",
        Project(ServiceAccountsManage),
        "service_account.list",
    ),
    route(
        "POST",
        "/v1/service-accounts",
        Project(ServiceAccountsManage),
        "service_account.create",
    ),
    route(
        "DELETE",
        "/v1/service-accounts/{id}",
        Project(ServiceAccountsManage),
        "service_account.delete",
    ),
    route(
        "GET",
        "/v1/api-keys",
        Project(ApiKeysManage),
        "api_key.list",
    ),
    route(
        "POST",
        "/v1/api-keys",
        Project(ApiKeysManage),
        "api_key.create",
    ),
    route(
        "DELETE",
        "/v1/api-keys/{id}",
        Project(ApiKeysManage),
        "api_key.revoke",
    ),
    route(
        "POST",
        "/v1/nodes/join-tokens",
        Platform(JoinTokensCreate),
        "join_token.create",
    ),
    route(
        "GET",
        "/v1/audit-events",
        OrgOrPlatform(AuditRead, PlatformAudit),
        "audit.list",
    ),
    route(
        "GET",
        "/v1/audit-events/verify",
        OrgOrPlatform(AuditRead, PlatformAudit),
        "audit.verify",
    ),
    route(
        "GET",
        "/v1/audit-events/export",
        OrgOrPlatform(AuditRead, PlatformAudit),
        "audit.export",
    ),
    route(
        "POST",
        "/v1/audit-events/anchor",
        Platform(PlatformAudit),
        "audit.anchor",
    ),
];

pub fn router() -> Router<AppState> {
    identity().merge(tenancy())
}

/// Probes, tokens and the caller.
fn identity() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::prometheus))
        .route("/.well-known/jwks.json", get(auth::jwks))
        .route("/v1/auth/signup", post(auth::signup))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/auth/accept-invitation", post(auth::accept_invitation))
        .route("/v1/me", get(auth::me))
}

/// Orgs, projects, members, invitations, project members.
fn tenancy() -> Router<AppState> {
    Router::new()
        .route("/v1/orgs", get(orgs::list).post(orgs::create))
        .route("/v1/orgs/{org}", get(orgs::get))
        .route("/v1/orgs/{org}/plan", put(orgs::set_plan))
        .route(
            "/v1/orgs/{org}/projects",
            get(projects::list).post(projects::create),
        )
        .route("/v1/orgs/{org}/members", get(members::list))
        .route(
            "/v1/orgs/{org}/members/{user}",
            put(members::set_role).delete(members::remove),
        )
        .route(
            "/v1/orgs/{org}/invitations",
            get(members::invitations).post(members::invite),
        )
        .route("/v1/project-members", get(project_members::list))
        .route(
            "/v1/project-members/{user}",
            put(project_members::set_role).delete(project_members::remove),
        )
        .merge(principals())
}

/// Quotas, service accounts, keys, join tokens, audit.
fn principals() -> Router<AppState> {
    Router::new()
        .route("/v1/quota", get(projects::quota))
        .route("/v1/projects/{project}/quota", put(projects::set_quota))
        .route(
            "/v1/service-accounts",
            get(service_accounts::list).post(service_accounts::create),
        )
        .route(
            "/v1/service-accounts/{id}",
            axum::routing::delete(service_accounts::delete),
        )
        .route("/v1/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/v1/api-keys/{id}", axum::routing::delete(api_keys::revoke))
        .route("/v1/nodes/join-tokens", post(join_tokens::create))
        .route("/v1/audit-events", get(audit_events::list))
        .route("/v1/audit-events/verify", get(audit_events::verify))
        .route("/v1/audit-events/export", get(audit_events::export))
        .route("/v1/audit-events/anchor", post(audit_events::anchor))
}
