//! Who is acting, for whom, and how they proved it: built once per request by the API (or
//! explicitly for background work) and passed to every domain call that changes or reads a
//! caller's objects. Workflow inputs carry its [`Principal`], so each step a workflow takes on a
//! caller's behalf is attributable to that caller.

use serde::{Deserialize, Serialize};
use shared_ids::{OrgId, ProjectId};
use std::fmt;
use std::net::IpAddr;
use uuid::Uuid;

/// The kind of principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    ServiceAccount,
    /// A node agent, with its per-node credential.
    Node,
    /// The platform itself (workflows, the reconciler, migrations); never a caller.
    System,
    /// A request that carried no valid credential (failed logins, for the audit log).
    Anonymous,
}

/// Who acts. `id` is the user's, service account's or node's id; `name` is for people reading
/// logs and the audit trail (an email, a service account's or node's name, a system job).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub id: Uuid,
    pub name: String,
}

impl Principal {
    /// A background job of the platform, named by what it is (`reconciler`, `node-lifecycle`).
    pub fn system(job: &str) -> Self {
        Self {
            kind: PrincipalKind::System,
            id: Uuid::nil(),
            name: job.to_string(),
        }
    }

    pub fn anonymous() -> Self {
        Self {
            kind: PrincipalKind::Anonymous,
            id: Uuid::nil(),
            name: "anonymous".into(),
        }
    }

    /// `user:<id>`, `service_account:<id>`, `node:<id>`, `system:<job>`: stable, for the record.
    pub fn label(&self) -> String {
        match self.kind {
            PrincipalKind::User => format!("user:{}", self.id),
            PrincipalKind::ServiceAccount => format!("service_account:{}", self.id),
            PrincipalKind::Node => format!("node:{}", self.id),
            PrincipalKind::System => format!("system:{}", self.name),
            PrincipalKind::Anonymous => "anonymous".into(),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.label(), self.name)
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// An access token (JWT) from a password login.
    AccessToken,
    ApiKey,
    /// A node agent's signed assertion (its per-node keypair).
    NodeCredential,
    /// A node agent's one-time join token.
    JoinToken,
    System,
    None,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::ApiKey => "api_key",
            Self::NodeCredential => "node_credential",
            Self::JoinToken => "join_token",
            Self::System => "system",
            Self::None => "none",
        }
    }
}

/// One operation's context.
#[derive(Debug, Clone)]
pub struct OperationContext {
    pub principal: Principal,
    pub auth_method: AuthMethod,
    /// The id of the key, token or credential used (never the secret itself).
    pub credential_id: Option<String>,
    /// The org and project the operation acts in, where it acts in one.
    pub org: Option<OrgId>,
    pub project: Option<ProjectId>,
    /// Whether the principal holds the platform's `operator` role (sees node names and ids).
    pub operator: bool,
    pub request_id: String,
    pub source_ip: Option<IpAddr>,
}

impl OperationContext {
    /// Background work of the platform: the reconciler, a workflow's own step. Sees every project.
    pub fn system(job: &str) -> Self {
        Self {
            principal: Principal::system(job),
            auth_method: AuthMethod::System,
            credential_id: None,
            org: None,
            project: None,
            operator: true,
            request_id: String::new(),
            source_ip: None,
        }
    }

    /// The project the operation acts in; an error for a context that has none (a bug: the API
    /// resolves the project before a project-scoped handler runs).
    pub fn require_project(&self) -> crate::DomainResult<ProjectId> {
        self.project.ok_or_else(|| {
            crate::DomainError::invalid("project_required", "this operation acts in a project")
        })
    }

    pub fn is_system(&self) -> bool {
        self.principal.kind == PrincipalKind::System
    }
}
