//! Wire types of the platform route family: identity (sign-up, login, tokens), orgs, projects,
//! members, invitations, service accounts, API keys, node join tokens, quotas and audit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_ids::{OrgId, ProjectId};

// ----- auth

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    pub org_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AcceptInvitationRequest {
    pub token: String,
    pub password: String,
}

/// What a login, sign-up, refresh or accepted invitation answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignupResponse {
    pub user: User,
    pub org: Org,
    pub project: Project,
    #[serde(flatten)]
    pub tokens: TokenResponse,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub id: uuid::Uuid,
    pub email: String,
    /// `operator` or `finance`, for platform staff; absent for tenants.
    pub platform_role: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The caller: who it is, and where it may act.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Me {
    /// `user` or `service_account`.
    pub kind: String,
    pub id: uuid::Uuid,
    pub name: String,
    pub platform_role: Option<String>,
    /// How this request authenticated: `access_token` or `api_key`.
    pub auth_method: String,
    pub default_project_id: Option<ProjectId>,
    pub memberships: Vec<Membership>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Membership {
    pub org_id: OrgId,
    pub project_id: Option<ProjectId>,
    pub role: String,
}

// ----- orgs, projects, members

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateOrgRequest {
    pub name: String,
    /// Invited as the org's first owner.
    pub owner_email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateOrgResponse {
    pub org: Org,
    pub project: Project,
    pub invitation: CreatedInvitation,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Project {
    pub id: ProjectId,
    pub org_id: OrgId,
    pub name: String,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateProjectRequest {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub user_id: uuid::Uuid,
    pub email: String,
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

/// A user's role in one project (`/v1/project-members`), besides any org role they hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProjectMember {
    pub user_id: uuid::Uuid,
    pub email: String,
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SetRoleRequest {
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateInvitationRequest {
    pub email: String,
    pub role: String,
    /// Default 7 days.
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Invitation {
    pub id: uuid::Uuid,
    pub org_id: OrgId,
    pub email: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
}

/// An invitation and its secret, shown once: the invitee accepts with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreatedInvitation {
    pub invitation: Invitation,
    pub token: String,
}

// ----- service accounts, API keys

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceAccount {
    pub id: uuid::Uuid,
    pub project_id: ProjectId,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateServiceAccountRequest {
    pub name: String,
    /// `admin`, `member` or `viewer` in the project.
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateApiKeyRequest {
    pub name: String,
    /// A key for this service account of the project; absent: a key for the caller.
    pub service_account_id: Option<uuid::Uuid>,
    /// Bind the key to the request's project (default true for service accounts, which always
    /// are); false: the key reaches every project of the org its owner may.
    pub bind_to_project: Option<bool>,
    /// Limit the key to these permissions (`instances:read`, …); absent: all its owner's.
    pub scopes: Option<Vec<String>>,
    pub expires_in_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiKey {
    pub id: uuid::Uuid,
    /// The first characters of the key (`gpk_` and 8 more), to recognise it.
    pub prefix: String,
    pub name: String,
    /// `user` or `service_account`.
    pub owner_kind: String,
    pub owner_id: uuid::Uuid,
    pub org_id: OrgId,
    pub project_id: Option<ProjectId>,
    pub scopes: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key and its secret, shown once and never again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreatedApiKey {
    pub api_key: ApiKey,
    pub key: String,
}

// ----- nodes' identity

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateJoinTokenRequest {
    /// Default 3600.
    pub ttl_seconds: Option<i64>,
}

/// A join token, shown once: one host joins with it, once, before it expires.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JoinToken {
    pub id: uuid::Uuid,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

// ----- quotas and plans

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Quota {
    pub project_id: ProjectId,
    pub plan: String,
    /// SKU names the org may launch; absent: all.
    pub entitled_skus: Option<Vec<String>>,
    /// Concurrent GPUs the project may hold; absent: no limit.
    pub max_concurrent_gpus: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SetPlanRequest {
    pub plan: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SetQuotaRequest {
    /// Absent or null: the plan's default.
    pub max_concurrent_gpus: Option<i32>,
}

// ----- audit

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    pub seq: i64,
    pub chain: String,
    pub chain_seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub actor_name: String,
    pub actor_kind: String,
    pub auth_method: String,
    pub credential_id: Option<String>,
    pub org_id: Option<OrgId>,
    pub project_id: Option<ProjectId>,
    pub action: String,
    pub resource: String,
    /// `success` or `failure`.
    pub outcome: String,
    pub status: i32,
    pub error_code: Option<String>,
    pub request_id: String,
    pub source_ip: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditAnchor {
    pub chain: String,
    pub chain_seq: i64,
    pub hash: String,
    pub at: DateTime<Utc>,
    pub key_id: String,
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditVerifyReport {
    pub ok: bool,
    pub events_checked: i64,
    pub chains_checked: i64,
    pub problems: Vec<String>,
}

/// A self-verifying export: the events of a range, the events around it that its chain links
/// need, and the signed chain heads that cover them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditBundle {
    /// `gpuaas-audit-bundle-v1`.
    pub format: String,
    pub org: Option<OrgId>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub events: Vec<AuditEvent>,
    pub context: Vec<AuditEvent>,
    pub heads: Vec<AuditAnchor>,
}
