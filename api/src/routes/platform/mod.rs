//! Platform routes: probes and metrics; identity (`/v1/auth`, `/v1/me`, orgs, projects, members,
//! project members, invitations, service accounts, API keys, node join tokens); quotas; audit;
//! billing (accounts, usage, payments, invoices, metering runs, the price book, usage events).

pub mod api_keys;
pub mod audit_events;
pub mod auth;
pub mod billing;
mod convert;
pub mod health;
pub mod invoices;
pub mod join_tokens;
pub mod members;
pub mod metrics;
pub mod orgs;
pub mod price_book;
pub mod project_members;
pub mod projects;
pub mod service_accounts;
pub mod usage_events;

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
    // Billing: an org's admins read and pay; finance reads every org's.
    route(
        "GET",
        "/v1/orgs/{org}/billing",
        OrgOrPlatform(BillingRead, BillingManage),
        "billing.read",
    ),
    route(
        "GET",
        "/v1/orgs/{org}/billing/usage",
        OrgOrPlatform(BillingRead, BillingManage),
        "billing.usage",
    ),
    route(
        "GET",
        "/v1/orgs/{org}/billing/usage/live",
        OrgOrPlatform(BillingRead, BillingManage),
        "billing.live",
    ),
    route(
        "PUT",
        "/v1/orgs/{org}/billing/spend-limit",
        Org(BillingWrite),
        "billing.set_spend_limit",
    ),
    route(
        "POST",
        "/v1/orgs/{org}/billing/top-ups",
        Org(BillingWrite),
        "billing.top_up",
    ),
    route(
        "POST",
        "/v1/orgs/{org}/billing/payments",
        Org(BillingWrite),
        "billing.pay",
    ),
    route(
        "PUT",
        "/v1/orgs/{org}/billing/mode",
        Platform(BillingManage),
        "billing.set_mode",
    ),
    route(
        "GET",
        "/v1/orgs/{org}/payment-methods",
        OrgOrPlatform(BillingRead, BillingManage),
        "payment_method.list",
    ),
    route(
        "POST",
        "/v1/orgs/{org}/payment-methods",
        Org(BillingWrite),
        "payment_method.add",
    ),
    route(
        "POST",
        "/v1/orgs/{org}/metering-runs",
        Platform(BillingManage),
        "metering_run.create",
    ),
    route(
        "GET",
        "/v1/orgs/{org}/invoices",
        OrgOrPlatform(BillingRead, BillingManage),
        "invoice.list",
    ),
    route(
        "GET",
        "/v1/orgs/{org}/invoices/{invoice}",
        OrgOrPlatform(BillingRead, BillingManage),
        "invoice.read",
    ),
    route("GET", "/v1/price-book", Authenticated, "price_book.read"),
    route(
        "POST",
        "/v1/price-book/versions",
        Platform(PriceBookWrite),
        "price_book.publish",
    ),
    route(
        "POST",
        "/v1/usage-events",
        Project(UsageWrite),
        "usage_event.create",
    ),
];

pub fn router() -> Router<AppState> {
    identity().merge(tenancy()).merge(billing_routes())
}

/// Billing accounts, usage, payments, invoices, metering runs, the price book, usage events.
fn billing_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/orgs/{org}/billing", get(billing::get))
        .route("/v1/orgs/{org}/billing/usage", get(billing::usage))
        .route("/v1/orgs/{org}/billing/usage/live", get(billing::live))
        .route(
            "/v1/orgs/{org}/billing/spend-limit",
            put(billing::set_spend_limit),
        )
        .route("/v1/orgs/{org}/billing/top-ups", post(billing::top_up))
        .route("/v1/orgs/{org}/billing/payments", post(billing::pay))
        .route("/v1/orgs/{org}/billing/mode", put(billing::set_mode))
        .route(
            "/v1/orgs/{org}/payment-methods",
            get(billing::methods).post(billing::add_method),
        )
        .route("/v1/orgs/{org}/metering-runs", post(billing::rerun))
        .route("/v1/orgs/{org}/invoices", get(invoices::list))
        .route("/v1/orgs/{org}/invoices/{invoice}", get(invoices::get))
        .route("/v1/price-book", get(price_book::list))
        .route("/v1/price-book/versions", post(price_book::publish))
        .route("/v1/usage-events", post(usage_events::create))
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
