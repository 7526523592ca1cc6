//! A small HTTP client for the API. The URL, the credential and the project come from the flags,
//! their env vars, or the selected profile of the config file (see `config`). A login session's
//! access token is refreshed once when it has expired or the API answers 401, and the rotated
//! tokens are saved back to the profile.

use crate::ExitCode;
use crate::config::{self, Config};
use api_types::gpuaas::{
    CreateInstanceRequest, DrainNodeRequest, Instance, Node, NodeEvent, NodeSummary, Sku,
};
use api_types::platform::{RefreshRequest, TokenResponse};
use api_types::{List, Page, Problem};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::Mutex;

/// Refresh an access token this many seconds before it expires.
const EXPIRY_SKEW_S: i64 = 30;

#[derive(Debug)]
pub enum CliError {
    Api(Box<Problem>),
    Unreachable(String),
    InstanceFailed(String),
    WaitTimedOut(String),
    /// A usage error the parser cannot see (a missing `--org`, an unknown profile).
    Usage(String),
    /// `audit verify` found the trail altered.
    AuditTampered(String),
    Other(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Api(p) => write!(
                f,
                "{} ({}, {}; request {})",
                p.detail, p.code, p.status, p.request_id
            ),
            Self::Unreachable(e) => write!(f, "cannot reach the API: {e}"),
            Self::InstanceFailed(reason) => write!(f, "instance failed: {reason}"),
            Self::WaitTimedOut(state) => {
                write!(f, "gave up waiting; the instance is still {state}")
            }
            Self::Usage(e) => write!(f, "{e}"),
            Self::AuditTampered(e) => write!(f, "the audit trail does not verify: {e}"),
            Self::Other(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CliError {}

impl CliError {
    pub fn code(&self) -> String {
        match self {
            Self::Api(p) => p.code.clone(),
            Self::Unreachable(_) => "unreachable".into(),
            Self::InstanceFailed(reason) => reason.clone(),
            Self::WaitTimedOut(_) => "wait_timed_out".into(),
            Self::Usage(_) => "usage".into(),
            Self::AuditTampered(_) => "audit_tampered".into(),
            Self::Other(_) => "error".into(),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Api(p) if p.status == 404 => ExitCode::NotFound,
            Self::Api(p) if p.status < 500 => ExitCode::Refused,
            Self::Api(_) | Self::Other(_) => ExitCode::Unexpected,
            Self::Unreachable(_) => ExitCode::Unreachable,
            Self::InstanceFailed(_) => ExitCode::InstanceFailed,
            Self::WaitTimedOut(_) => ExitCode::WaitTimedOut,
            Self::Usage(_) => ExitCode::Usage,
            Self::AuditTampered(_) => ExitCode::AuditTampered,
        }
    }

    /// The same API error, with advice appended to its detail.
    fn with_hint(self, hint: &str) -> Self {
        match self {
            Self::Api(mut p) => {
                p.detail = format!("{}: {hint}", p.detail);
                Self::Api(p)
            }
            other => other,
        }
    }
}

/// How requests authenticate.
#[derive(Debug, Clone)]
pub enum Credential {
    None,
    /// A token or API key sent as is (`--token`, or a profile's `api_key`): never refreshed.
    Static(String),
    /// A profile's login session.
    Session(Session),
}

#[derive(Debug, Clone)]
pub struct Session {
    pub config_path: PathBuf,
    pub profile: String,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_at: Option<i64>,
}

impl Session {
    fn expired(&self) -> bool {
        self.access_token.is_none()
            || self
                .expires_at
                .is_some_and(|at| at <= config::now_unix() + EXPIRY_SKEW_S)
    }
}

/// One request, kept as data so it can be sent again after a refresh.
pub struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Option<serde_json::Value>,
    headers: Vec<(&'static str, String)>,
}

impl Req {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            headers: Vec::new(),
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }

    pub fn put(path: impl Into<String>) -> Self {
        Self::new(Method::PUT, path)
    }

    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }

    pub fn query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.push((key.to_string(), value.to_string()));
        self
    }

    pub fn query_opt(self, key: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.query(key, v),
            None => self,
        }
    }

    pub fn json(mut self, body: &impl Serialize) -> Self {
        self.body = Some(serde_json::to_value(body).expect("request bodies serialise"));
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A path segment, percent-encoded.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How long one request to the API may take: `GPUAAS_HTTP_TIMEOUT_SECONDS`, default 60.
fn request_timeout() -> std::time::Duration {
    let seconds = std::env::var("GPUAAS_HTTP_TIMEOUT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(60);
    std::time::Duration::from_secs(seconds)
}

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    project: Option<String>,
    credential: Mutex<Credential>,
}

impl ApiClient {
    pub fn new(base: &str, credential: Credential, project: Option<String>) -> Self {
        Self {
            // A dead or stalled API fails the command (exit 7) instead of hanging it.
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(request_timeout())
                .build()
                .expect("the HTTP client builds"),
            base: base.trim_end_matches('/').to_string(),
            project,
            credential: Mutex::new(credential),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn credential(&self) -> Credential {
        self.credential.lock().expect("credential lock").clone()
    }

    fn set_credential(&self, credential: Credential) {
        *self.credential.lock().expect("credential lock") = credential;
    }

    async fn execute(
        &self,
        req: &Req,
        token: Option<&str>,
        with_project: bool,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), CliError> {
        let mut builder = self
            .http
            .request(req.method.clone(), format!("{}{}", self.base, req.path));
        let mut query = req.query.clone();
        if with_project
            && let Some(project) = &self.project
            && !query.iter().any(|(k, _)| k == "project")
        {
            query.push(("project".into(), project.clone()));
        }
        if !query.is_empty() {
            builder = builder.query(&query);
        }
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        let resp = builder
            .send()
            .await
            .map_err(|e| CliError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| CliError::Unreachable(e.to_string()))?;
        Ok((status, body.to_vec()))
    }

    /// Sends a request with the credential (refreshing a session once if needed) and returns
    /// the body of a successful answer; an error answer becomes `CliError::Api`.
    pub async fn send_raw(&self, req: &Req) -> Result<Vec<u8>, CliError> {
        let mut refreshed = false;
        if let Credential::Session(s) = self.credential()
            && s.expired()
        {
            self.refresh(None).await?;
            refreshed = true;
        }
        loop {
            let credential = self.credential();
            let token = match &credential {
                Credential::None => None,
                Credential::Static(t) => Some(t.clone()),
                Credential::Session(s) => s.access_token.clone(),
            };
            let (status, body) = self.execute(req, token.as_deref(), true).await?;
            if status.is_success() {
                return Ok(body);
            }
            let err = error_of(status, &body);
            if status != reqwest::StatusCode::UNAUTHORIZED {
                return Err(err);
            }
            match credential {
                Credential::Session(_) if !refreshed => {
                    refreshed = true;
                    self.refresh(token.as_deref()).await?;
                }
                Credential::Session(s) => {
                    return Err(err.with_hint(&format!(
                        "log in again (gpuaas login --profile {})",
                        s.profile
                    )));
                }
                Credential::Static(_) => {
                    return Err(
                        err.with_hint("the token or API key is invalid, expired or revoked")
                    );
                }
                Credential::None => {
                    return Err(err.with_hint("not logged in: run `gpuaas login` first"));
                }
            }
        }
    }

    /// Sends a request with the credential; the answer as `T` (`()` for 204).
    pub async fn send<T: DeserializeOwned>(&self, req: Req) -> Result<T, CliError> {
        decode(&self.send_raw(&req).await?)
    }

    /// Sends a request without credential or project (`/v1/auth/...`).
    pub async fn public<T: DeserializeOwned>(&self, req: Req) -> Result<T, CliError> {
        let (status, body) = self.execute(&req, None, false).await?;
        if status.is_success() {
            decode(&body)
        } else {
            Err(error_of(status, &body))
        }
    }

    /// Rotates the session's tokens and saves them to its profile, under the config file's
    /// lock. When another `gpuaas` rotated them since this one read the file, its tokens are
    /// taken over instead (refreshing the old refresh token again would be a replay, which
    /// ends the session).
    async fn refresh(&self, failed_access: Option<&str>) -> Result<(), CliError> {
        let Credential::Session(mut session) = self.credential() else {
            return Ok(());
        };
        let relogin = format!("log in again (gpuaas login --profile {})", session.profile);
        let _lock = config::lock(&session.config_path)?;
        let mut cfg = Config::load(&session.config_path)?;
        let Some(profile) = cfg.profiles.get_mut(&session.profile) else {
            return Err(CliError::Usage(format!(
                "profile {} is gone from {}: {relogin}",
                session.profile,
                session.config_path.display()
            )));
        };
        let mut refresh_token = session.refresh_token.clone();
        if profile.refresh_token != session.refresh_token {
            let fresh = profile
                .access_expires_at
                .is_none_or(|at| at > config::now_unix() + EXPIRY_SKEW_S);
            if let Some(access) = &profile.access_token
                && Some(access.as_str()) != failed_access
                && fresh
            {
                session.access_token = Some(access.clone());
                session.refresh_token = profile.refresh_token.clone();
                session.expires_at = profile.access_expires_at;
                self.set_credential(Credential::Session(session));
                return Ok(());
            }
            refresh_token = profile.refresh_token.clone();
        }
        let Some(refresh_token) = refresh_token else {
            return Err(CliError::Api(Box::new(Problem {
                type_uri: "about:blank".into(),
                title: "Unauthorized".into(),
                status: 401,
                detail: format!("the session of profile {} has expired", session.profile),
                code: "unauthorized".into(),
                request_id: String::new(),
            }))
            .with_hint(&relogin));
        };
        let tokens: TokenResponse = self
            .public(Req::post("/v1/auth/refresh").json(&RefreshRequest { refresh_token }))
            .await
            .map_err(|e| e.with_hint(&relogin))?;
        let expires_at = config::now_unix() + tokens.expires_in as i64;
        profile.access_token = Some(tokens.access_token.clone());
        profile.refresh_token = Some(tokens.refresh_token.clone());
        profile.access_expires_at = Some(expires_at);
        cfg.save(&session.config_path)?;
        session.access_token = Some(tokens.access_token);
        session.refresh_token = Some(tokens.refresh_token);
        session.expires_at = Some(expires_at);
        self.set_credential(Credential::Session(session));
        Ok(())
    }

    // ----- gpuaas

    pub async fn list_skus(&self) -> Result<Vec<Sku>, CliError> {
        Ok(self.send::<List<Sku>>(Req::get("/v1/skus")).await?.items)
    }

    /// Every node, page by page.
    pub async fn list_nodes(&self) -> Result<Vec<NodeSummary>, CliError> {
        let mut nodes = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page: Page<NodeSummary> = self
                .send(
                    Req::get("/v1/nodes")
                        .query("limit", 200)
                        .query_opt("cursor", cursor.as_deref()),
                )
                .await?;
            nodes.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(nodes),
            }
        }
    }

    pub async fn get_node(&self, id: &str) -> Result<Node, CliError> {
        self.send(Req::get(format!("/v1/nodes/{}", seg(id)))).await
    }

    pub async fn set_cordoned(&self, id: &str, cordoned: bool) -> Result<Node, CliError> {
        let verb = if cordoned { "cordon" } else { "uncordon" };
        self.node_action(id, verb).await
    }

    /// `POST /v1/nodes/{id}/<action>` without a body.
    pub async fn node_action(&self, id: &str, action: &str) -> Result<Node, CliError> {
        self.send(Req::post(format!("/v1/nodes/{}/{action}", seg(id))))
            .await
    }

    pub async fn drain_node(&self, id: &str, deadline_seconds: u64) -> Result<Node, CliError> {
        let body = DrainNodeRequest {
            deadline_seconds: Some(deadline_seconds),
        };
        self.send(Req::post(format!("/v1/nodes/{}/drain", seg(id))).json(&body))
            .await
    }

    pub async fn node_events(&self, id: &str) -> Result<Vec<NodeEvent>, CliError> {
        Ok(self
            .send::<List<NodeEvent>>(Req::get(format!("/v1/nodes/{}/events", seg(id))))
            .await?
            .items)
    }

    pub async fn create_instance(
        &self,
        req: &CreateInstanceRequest,
        key: Option<&str>,
    ) -> Result<Instance, CliError> {
        let mut r = Req::post("/v1/instances").json(req);
        if let Some(key) = key {
            r = r.header("Idempotency-Key", key);
        }
        self.send(r).await
    }

    pub async fn list_instances(
        &self,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<Page<Instance>, CliError> {
        self.send(
            Req::get("/v1/instances")
                .query("limit", limit)
                .query_opt("cursor", cursor),
        )
        .await
    }

    pub async fn get_instance(&self, id: &str) -> Result<Instance, CliError> {
        self.send(Req::get(format!("/v1/instances/{}", seg(id))))
            .await
    }

    pub async fn delete_instance(&self, id: &str) -> Result<Instance, CliError> {
        self.send(Req::delete(format!("/v1/instances/{}", seg(id))))
            .await
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CliError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"null".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| CliError::Other(format!("unexpected response: {e}")))
}

fn error_of(status: reqwest::StatusCode, body: &[u8]) -> CliError {
    match serde_json::from_slice::<Problem>(body) {
        Ok(problem) => CliError::Api(Box::new(problem)),
        Err(_) => CliError::Other(format!("HTTP {status}: {}", String::from_utf8_lossy(body))),
    }
}
