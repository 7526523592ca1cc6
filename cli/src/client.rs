//! A small HTTP client for the API. Finds the URL and token from flags, env vars, or the profile
//! the dev stack writes (`$GPUAAS_PROFILE`, else `~/.config/gpuaas/profile.json`).

use crate::ExitCode;
use api_types::gpuaas::{CreateInstanceRequest, DrainNodeRequest, Instance, Node, NodeEvent, Sku};
use api_types::{List, Page, Problem};
use serde::de::DeserializeOwned;
use std::path::PathBuf;

#[derive(Debug)]
pub enum CliError {
    Api(Problem),
    Unreachable(String),
    InstanceFailed(String),
    WaitTimedOut(String),
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
        }
    }
}

#[derive(serde::Deserialize, Default)]
struct Profile {
    api_url: Option<String>,
    token: Option<String>,
}

fn profile_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("GPUAAS_PROFILE") {
        return Some(PathBuf::from(p));
    }
    std::env::var("HOME")
        .ok()
        .map(|h| PathBuf::from(h).join(".config/gpuaas/profile.json"))
}

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    pub fn from_env(api_url: Option<String>, token: Option<String>) -> Self {
        let profile: Profile = profile_path()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        Self {
            http: reqwest::Client::new(),
            base: api_url
                .or(profile.api_url)
                .unwrap_or_else(|| "http://127.0.0.1:8080".into())
                .trim_end_matches('/')
                .to_string(),
            token: token.or(profile.token).unwrap_or_default(),
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, CliError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CliError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| CliError::Unreachable(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| CliError::Other(format!("unexpected response: {e}")));
        }
        match serde_json::from_slice::<Problem>(&body) {
            Ok(problem) => Err(CliError::Api(problem)),
            Err(_) => Err(CliError::Other(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ))),
        }
    }

    pub async fn list_skus(&self) -> Result<Vec<Sku>, CliError> {
        Ok(self
            .send::<List<Sku>>(self.http.get(format!("{}/v1/skus", self.base)))
            .await?
            .items)
    }

    pub async fn list_nodes(&self) -> Result<Vec<Node>, CliError> {
        Ok(self
            .send::<List<Node>>(self.http.get(format!("{}/v1/nodes", self.base)))
            .await?
            .items)
    }

    pub async fn get_node(&self, id: &str) -> Result<Node, CliError> {
        self.send(self.http.get(format!("{}/v1/nodes/{id}", self.base)))
            .await
    }

    pub async fn set_cordoned(&self, id: &str, cordoned: bool) -> Result<Node, CliError> {
        let verb = if cordoned { "cordon" } else { "uncordon" };
        self.node_action(id, verb).await
    }

    /// `POST /v1/nodes/{id}/<action>` without a body.
    pub async fn node_action(&self, id: &str, action: &str) -> Result<Node, CliError> {
        self.send(
            self.http
                .post(format!("{}/v1/nodes/{id}/{action}", self.base)),
        )
        .await
    }

    pub async fn drain_node(&self, id: &str, deadline_seconds: u64) -> Result<Node, CliError> {
        let body = DrainNodeRequest {
            deadline_seconds: Some(deadline_seconds),
        };
        self.send(
            self.http
                .post(format!("{}/v1/nodes/{id}/drain", self.base))
                .json(&body),
        )
        .await
    }

    pub async fn node_events(&self, id: &str) -> Result<Vec<NodeEvent>, CliError> {
        Ok(self
            .send::<List<NodeEvent>>(self.http.get(format!("{}/v1/nodes/{id}/events", self.base)))
            .await?
            .items)
    }

    pub async fn create_instance(
        &self,
        req: &CreateInstanceRequest,
        key: Option<&str>,
    ) -> Result<Instance, CliError> {
        let mut builder = self
            .http
            .post(format!("{}/v1/instances", self.base))
            .json(req);
        if let Some(key) = key {
            builder = builder.header("Idempotency-Key", key);
        }
        self.send(builder).await
    }

    pub async fn list_instances(
        &self,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<Page<Instance>, CliError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_string()));
        }
        self.send(
            self.http
                .get(format!("{}/v1/instances", self.base))
                .query(&query),
        )
        .await
    }

    pub async fn get_instance(&self, id: &str) -> Result<Instance, CliError> {
        self.send(self.http.get(format!("{}/v1/instances/{id}", self.base)))
            .await
    }

    pub async fn delete_instance(&self, id: &str) -> Result<Instance, CliError> {
        self.send(self.http.delete(format!("{}/v1/instances/{id}", self.base)))
            .await
    }
}
