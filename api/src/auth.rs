//! Authentication and authorization for every route, in one middleware. Each route declares its
//! [`Access`] in its family's route table; the middleware authenticates the credential, resolves
//! the project or org the request acts in, checks the permission, applies the rate limit, builds
//! the [`Caller`] (the operation context) for the handler, and records an audit entry for every
//! mutating request, success or failure. Handlers never see a token.
//!
//! Visibility: an object, project or org the caller cannot see answers 404, like one that does
//! not exist; platform routes answer tenants 404 `route_not_found`, like a route that does not
//! exist. A caller who sees the project but lacks the permission gets 403 `forbidden`.

use crate::AppState;
use crate::problem::{ApiError, REQUEST_ID};
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::{HeaderMap, Method, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use platform_iam::{Authority, Decision, Permission, Role, authority, nodes, orgs};
use shared_ids::{NodeId, OrgId, ProjectId};
use shared_kernel::{AuthMethod, OperationContext, Principal, PrincipalKind};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential: probes, the JWKS, sign-up and login.
    Public,
    /// Any valid user or service-account credential, acting in no particular project.
    Authenticated,
    /// A permission in the project the request names (`?project=<id or name>`), or else the
    /// credential's project (a key bound to one) or the user's default project.
    Project(Permission),
    /// A permission in the org of the `{org}` path parameter (or `?org=`, or the org of the
    /// credential's implicit project).
    Org(Permission),
    /// As `Org`, except that a caller holding the platform permission and naming no org acts
    /// platform-wide (operators reading the platform's audit trail).
    OrgOrPlatform(Permission, Permission),
    /// A platform role's permission; tenants get 404, as if the route did not exist.
    Platform(Permission),
    /// A node agent: a join token (first registration) or its node credential.
    Node,
}

impl Access {
    /// How the OpenAPI document names it (`x-gpuaas-access`): `public`, `authenticated`,
    /// `node`, `project:<permission>`, `org:<permission>`, `platform:<permission>`, or
    /// `org:<permission>|platform:<permission>`.
    pub fn describe(self) -> String {
        match self {
            Self::Public => "public".into(),
            Self::Authenticated => "authenticated".into(),
            Self::Node => "node".into(),
            Self::Project(p) => format!("project:{p}"),
            Self::Org(p) => format!("org:{p}"),
            Self::Platform(p) => format!("platform:{p}"),
            Self::OrgOrPlatform(p, pp) => format!("org:{p}|platform:{pp}"),
        }
    }
}

/// One route: method, path (axum syntax), what it requires, and its audit action name.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub action: &'static str,
}

pub const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    action: &'static str,
) -> Route {
    Route {
        method,
        path,
        access,
        action,
    }
}

/// How a node agent proved itself.
#[derive(Debug, Clone)]
pub enum NodeCaller {
    /// A usable join token, to be used up by the registration.
    Joining { token: String },
    /// A node's signed assertion, checked against its registered public key.
    Node(NodeId),
}

/// The authenticated caller of one request: its operation context, what it may do, and where it
/// acts. Built by [`authorize`]; handlers take it as an extractor.
#[derive(Debug, Clone)]
pub struct Caller {
    pub ctx: OperationContext,
    pub authority: Option<Arc<Authority>>,
    /// The caller's role in the project or org the route acts in.
    pub role: Option<Role>,
    pub node: Option<NodeCaller>,
}

impl Caller {
    /// The project a project-scoped route acts in (resolved before the handler runs).
    pub fn project(&self) -> ProjectId {
        self.ctx
            .project
            .expect("Access::Project routes resolve the project")
    }

    /// The org an org-scoped or project-scoped route acts in.
    pub fn org(&self) -> OrgId {
        self.ctx
            .org
            .expect("Access::Org and Access::Project routes resolve the org")
    }

    pub fn authority(&self) -> &Authority {
        self.authority
            .as_deref()
            .expect("authenticated routes carry an authority")
    }

    /// Who acts, for the gpuaas event log.
    pub fn actor(&self) -> product_gpuaas::events::Actor {
        product_gpuaas::events::Actor::Operator(self.ctx.principal.to_string())
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("route has no Caller: is it in the route table?"))
    }
}

fn table() -> &'static HashMap<(&'static str, &'static str), Route> {
    static TABLE: OnceLock<HashMap<(&'static str, &'static str), Route>> = OnceLock::new();
    TABLE.get_or_init(|| {
        crate::routes::ROUTES
            .iter()
            .flat_map(|family| family.iter())
            .map(|r| ((r.method, r.path), *r))
            .collect()
    })
}

pub fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing, invalid or expired credential",
    )
}

/// What platform routes answer tenants: the same as a route that does not exist.
pub fn no_such_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

fn forbidden(permission: Permission) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("your role does not grant {permission}"),
    )
}

fn project_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "project_not_found",
        "project not found",
    )
}

fn org_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "org_not_found", "org not found")
}

/// The middleware (a `route_layer`, so the matched route is known).
pub async fn authorize(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let route = matched
        .as_deref()
        .and_then(|path| table().get(&(req.method().as_str(), path)))
        .copied();
    let Some(route) = route else {
        return ApiError::internal(format!(
            "{} {matched:?} is not in the route table",
            req.method()
        ))
        .into_response();
    };
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let resource = req.uri().path().to_string();
    let (mut parts, body) = req.into_parts();
    let outcome = match resolve(&state, &route, &mut parts, source_ip).await {
        Ok(caller) => match state.limits.check(&caller, source_ip) {
            Ok(()) => Ok(caller),
            Err(e) => Err((Some(caller), e)),
        },
        // Refusals count against the rate too (per IP when nobody authenticated): guessing
        // keys or tokens is as limited as using them.
        Err((caller, e)) => {
            let probe = caller.clone().unwrap_or_else(|| Caller {
                ctx: anonymous(source_ip),
                authority: None,
                role: None,
                node: None,
            });
            match state.limits.check(&probe, source_ip) {
                Ok(()) => Err((caller, e)),
                Err(limited) => Err((caller, limited)),
            }
        }
    };
    // The handler and its audit entry run to the end even if the client hangs up: a change
    // must never be left without its entry (or the authority cache uncleared).
    let finish = async move {
        let (caller, response) = match outcome {
            Ok(caller) => {
                let mut req = Request::from_parts(parts, body);
                req.extensions_mut().insert(caller.clone());
                (Some(caller), next.run(req).await)
            }
            Err((caller, e)) => (caller, e.into_response()),
        };
        if mutating && response.status().is_success() && changes_authority(route.action) {
            state.authorities.clear();
        }
        if mutating {
            let ctx = caller
                .map(|c| c.ctx)
                .unwrap_or_else(|| anonymous(source_ip));
            let code = response
                .extensions()
                .get::<crate::problem::ErrorCode>()
                .map(|c| c.0.clone());
            crate::audit::record(
                &state,
                &ctx,
                route.action,
                &resource,
                response.status(),
                code.as_deref(),
            )
            .await;
        }
        response
    };
    let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
    let task = tracing::Instrument::instrument(finish, tracing::Span::current());
    match tokio::spawn(REQUEST_ID.scope(request_id, task)).await {
        Ok(response) => response,
        Err(e) => ApiError::internal(format!("handler failed: {e}")).into_response(),
    }
}

/// Whether a successful request of this action can change what some credential may do.
fn changes_authority(action: &str) -> bool {
    [
        "member.",
        "project_member.",
        "api_key.",
        "service_account.",
        "invitation.",
        "org.",
        "project.",
    ]
    .iter()
    .any(|p| action.starts_with(p))
}

fn base_context(
    principal: Principal,
    method: AuthMethod,
    source_ip: Option<IpAddr>,
) -> OperationContext {
    OperationContext {
        principal,
        auth_method: method,
        credential_id: None,
        org: None,
        project: None,
        operator: false,
        request_id: REQUEST_ID.try_with(Clone::clone).unwrap_or_default(),
        source_ip,
    }
}

pub fn anonymous(source_ip: Option<IpAddr>) -> OperationContext {
    base_context(Principal::anonymous(), AuthMethod::None, source_ip)
}

/// Who the caller is and where it acts. On a refusal after authentication, the caller comes back
/// with the error, so the audit entry names who was refused.
async fn resolve(
    state: &AppState,
    route: &Route,
    parts: &mut Parts,
    source_ip: Option<IpAddr>,
) -> Result<Caller, (Option<Caller>, ApiError)> {
    match route.access {
        Access::Public => Ok(Caller {
            ctx: anonymous(source_ip),
            authority: None,
            role: None,
            node: None,
        }),
        Access::Node => authenticate_node(state, &parts.headers, source_ip)
            .await
            .map_err(|e| (None, e)),
        access => {
            let authority = authenticate(state, &parts.headers)
                .await
                .map_err(|e| (None, e))?;
            let mut ctx = base_context(
                authority.principal.clone(),
                authority.auth_method,
                source_ip,
            );
            ctx.credential_id = authority.credential_id.clone();
            ctx.operator = authority.is_operator();
            let mut caller = Caller {
                ctx,
                authority: Some(authority.clone()),
                role: None,
                node: None,
            };
            match scope(state, access, &authority, &mut caller, parts).await {
                Ok(()) => Ok(caller),
                Err(e) => Err((Some(caller), e)),
            }
        }
    }
}

/// Checks the route's permission where the request acts, and records that place in `caller`.
async fn scope(
    state: &AppState,
    access: Access,
    authority: &Authority,
    caller: &mut Caller,
    parts: &mut Parts,
) -> Result<(), ApiError> {
    match access {
        Access::Platform(p) => {
            if authority.platform(p) != Decision::Allowed {
                return Err(no_such_route());
            }
        }
        Access::Project(p) => {
            let (project, org) = resolve_project(state, authority, parts).await?;
            decide(authority.in_project(project, org, p), p, project_not_found)?;
            caller.ctx.project = Some(project);
            caller.ctx.org = Some(org);
            caller.role = authority.role_in_project(project, org);
        }
        Access::OrgOrPlatform(_, platform)
            if authority.platform(platform) == Decision::Allowed
                && query_param(parts, "org").is_none() => {}
        Access::Org(p) | Access::OrgOrPlatform(p, _) => {
            let org = match org_param(parts).await {
                Some(named) => named.parse().map_err(|_| org_not_found())?,
                None => authority
                    .implicit_project()
                    .map(|(_, org)| org)
                    .ok_or_else(org_not_found)?,
            };
            let platform_reader = matches!(access, Access::OrgOrPlatform(_, pp) if authority.platform(pp) == Decision::Allowed);
            if !platform_reader {
                decide(authority.in_org(org, p), p, org_not_found)?;
            }
            caller.ctx.org = Some(org);
            caller.role = authority.role_in_org(org);
        }
        Access::Authenticated | Access::Public | Access::Node => {}
    }
    Ok(())
}

fn decide(decision: Decision, p: Permission, invisible: fn() -> ApiError) -> Result<(), ApiError> {
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Forbidden => Err(forbidden(p)),
        Decision::Invisible => Err(invisible()),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// A user's access token or an API key (`gpk_…`). What a credential may do is read from the
/// database, then kept for a few seconds ([`AuthorityCache`]).
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Arc<Authority>, ApiError> {
    let token = bearer(headers).ok_or_else(unauthorized)?;
    if token.starts_with(platform_iam::secrets::SecretKind::ApiKey.prefix()) {
        let key = CacheKey::ApiKey(platform_iam::secrets::hash(token));
        if let Some(hit) = state.authorities.get(&key) {
            return Ok(hit);
        }
        let authority = authority::of_api_key(&state.pool, token)
            .await?
            .ok_or_else(unauthorized)?;
        return Ok(state.authorities.put(key, authority));
    }
    let (user, iat) = match state.authorities.verified_token(token) {
        Some(known) => known,
        None => {
            let claims = state.keys.validate(token).map_err(|e| {
                tracing::debug!(error = %e, "access token refused");
                unauthorized()
            })?;
            let user: uuid::Uuid = claims.sub.parse().map_err(|_| unauthorized())?;
            state
                .authorities
                .remember_token(token, user, claims.iat, claims.exp);
            (user, claims.iat)
        }
    };
    let key = CacheKey::User(user);
    let authority = match state.authorities.get(&key) {
        Some(hit) => hit,
        None => {
            let found = authority::of_user(&state.pool, user)
                .await?
                .ok_or_else(unauthorized)?;
            state.authorities.put(key, found)
        }
    };
    if iat <= authority.tokens_not_before {
        return Err(unauthorized());
    }
    Ok(authority)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    User(uuid::Uuid),
    ApiKey(Vec<u8>),
}

/// Authorities read in the last few seconds, so a busy credential costs one token check, not a
/// database read, per request. Every successful IAM change through this API clears it at once;
/// a change made through another replica (or straight in the database) is seen within `ttl`.
pub struct AuthorityCache {
    ttl: std::time::Duration,
    entries: std::sync::Mutex<HashMap<CacheKey, (std::time::Instant, Arc<Authority>)>>,
    /// Access tokens whose signature and claims were checked: `(user, iat, exp)`, kept for the
    /// same TTL and never past `exp`, so a busy token is verified once, not per request.
    tokens: std::sync::Mutex<HashMap<String, (std::time::Instant, uuid::Uuid, i64, i64)>>,
}

impl AuthorityCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl,
            entries: Default::default(),
            tokens: Default::default(),
        }
    }

    fn verified_token(&self, token: &str) -> Option<(uuid::Uuid, i64)> {
        if self.ttl.is_zero() {
            return None;
        }
        let now = chrono::Utc::now().timestamp();
        let tokens = self.tokens.lock().expect("cache lock");
        tokens
            .get(token)
            .filter(|(at, _, _, exp)| at.elapsed() < self.ttl && *exp > now)
            .map(|(_, user, iat, _)| (*user, *iat))
    }

    fn remember_token(&self, token: &str, user: uuid::Uuid, iat: i64, exp: i64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut tokens = self.tokens.lock().expect("cache lock");
        if tokens.len() > 100_000 {
            tokens.retain(|_, (at, ..)| at.elapsed() < self.ttl);
        }
        tokens.insert(
            token.to_string(),
            (std::time::Instant::now(), user, iat, exp),
        );
    }

    fn get(&self, key: &CacheKey) -> Option<Arc<Authority>> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().expect("cache lock");
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, a)| a.clone())
    }

    fn put(&self, key: CacheKey, authority: Authority) -> Arc<Authority> {
        let authority = Arc::new(authority);
        if self.ttl.is_zero() {
            return authority;
        }
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() > 100_000 {
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        }
        entries.insert(key, (std::time::Instant::now(), authority.clone()));
        authority
    }

    pub fn clear(&self) {
        self.entries.lock().expect("cache lock").clear();
    }

    /// Forgets expired entries (the housekeeping task calls it).
    pub fn retain_recent(&self) {
        self.entries
            .lock()
            .expect("cache lock")
            .retain(|_, (at, _)| at.elapsed() < self.ttl);
        self.tokens
            .lock()
            .expect("cache lock")
            .retain(|_, (at, ..)| at.elapsed() < self.ttl);
    }
}

async fn authenticate_node(
    state: &AppState,
    headers: &HeaderMap,
    source_ip: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    if let Some(assertion) = value.strip_prefix("Node ") {
        let node = nodes::verify_assertion(&state.pool, assertion.trim())
            .await?
            .ok_or_else(unauthorized)?;
        let principal = Principal {
            kind: PrincipalKind::Node,
            id: node.uuid(),
            name: format!("node {node}"),
        };
        return Ok(Caller {
            ctx: base_context(principal, AuthMethod::NodeCredential, source_ip),
            authority: None,
            role: None,
            node: Some(NodeCaller::Node(node)),
        });
    }
    let token = bearer(headers).ok_or_else(unauthorized)?;
    let id = nodes::check_join_token(&state.pool, token)
        .await
        .map_err(|_| unauthorized())?;
    let mut ctx = base_context(Principal::anonymous(), AuthMethod::JoinToken, source_ip);
    ctx.credential_id = Some(id.to_string());
    Ok(Caller {
        ctx,
        authority: None,
        role: None,
        node: Some(NodeCaller::Joining {
            token: token.to_string(),
        }),
    })
}

/// The project a request acts in: `?project=<id or name>`, else the credential's implicit one.
async fn resolve_project(
    state: &AppState,
    authority: &Authority,
    parts: &Parts,
) -> Result<(ProjectId, OrgId), ApiError> {
    let Some(named) = query_param(parts, "project") else {
        return authority.implicit_project().ok_or_else(project_not_found);
    };
    // A name no project can have is not looked up (NUL and the like never reach the database).
    if api_types::limits::PROJECT_QUERY
        .check("project", &named)
        .is_err()
    {
        return Err(project_not_found());
    }
    let found = match named.parse::<ProjectId>() {
        Ok(id) => orgs::get_project(&state.pool, id).await,
        Err(_) => orgs::find_project(&state.pool, &authority.orgs(), &named).await,
    };
    match found {
        Ok(p) => Ok((p.id, p.org_id)),
        Err(shared_kernel::DomainError::NotFound { .. }) => Err(project_not_found()),
        Err(e) => Err(e.into()),
    }
}

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    parts.uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}

/// The `{org}` path parameter, else `?org=`.
async fn org_param(parts: &mut Parts) -> Option<String> {
    if let Ok(params) = RawPathParams::from_request_parts(parts, &()).await
        && let Some((_, v)) = params.iter().find(|(k, _)| *k == "org")
    {
        return Some(v.to_string());
    }
    query_param(parts, "org")
}
