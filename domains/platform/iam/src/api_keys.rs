//! API keys for users and service accounts: shown once, stored as a hash, listable by prefix and
//! last use, revocable, optionally bound to a project and limited to scopes.

use crate::authz::Permission;
use crate::secrets::{self, NewSecret, SecretKind};
use serde::Serialize;
use shared_ids::{OrgId, ProjectId};
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum KeyOwner {
    User(Uuid),
    ServiceAccount(Uuid),
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub prefix: String,
    pub name: String,
    pub owner: KeyOwner,
    pub org_id: OrgId,
    pub project_id: Option<ProjectId>,
    pub scopes: Option<Vec<Permission>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub struct NewApiKey<'a> {
    pub name: &'a str,
    pub owner: KeyOwner,
    pub org: OrgId,
    pub project: Option<ProjectId>,
    pub scopes: Option<Vec<Permission>>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

type KeyRow = (
    Uuid,
    String,
    String,
    Option<Uuid>,
    Option<Uuid>,
    Uuid,
    Option<Uuid>,
    Option<Vec<String>>,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
);
const COLUMNS: &str = "id, prefix, name, user_id, service_account_id, org_id, project_id, scopes, created_at, expires_at, last_used_at, revoked_at";

fn key(row: KeyRow) -> ApiKey {
    ApiKey {
        id: row.0,
        prefix: row.1,
        name: row.2,
        owner: match (row.3, row.4) {
            (Some(u), _) => KeyOwner::User(u),
            (None, Some(s)) => KeyOwner::ServiceAccount(s),
            (None, None) => unreachable!("a CHECK constraint guarantees an owner"),
        },
        org_id: row.5.into(),
        project_id: row.6.map(ProjectId::from),
        scopes: row
            .7
            .map(|s| s.iter().filter_map(|p| Permission::parse(p)).collect()),
        created_at: row.8,
        expires_at: row.9,
        last_used_at: row.10,
        revoked_at: row.11,
    }
}

pub fn parse_scopes(scopes: &[String]) -> DomainResult<Vec<Permission>> {
    scopes
        .iter()
        .map(|s| {
            Permission::parse(s)
                .ok_or_else(|| DomainError::invalid("invalid_scope", format!("unknown scope {s}")))
        })
        .collect()
}

/// Creates a key; the returned secret is the only time its text exists outside the caller.
pub async fn create(pool: &PgPool, new: &NewApiKey<'_>) -> DomainResult<(ApiKey, NewSecret)> {
    if !(1..=64).contains(&new.name.trim().len()) {
        return Err(DomainError::invalid(
            "invalid_api_key_name",
            "an API key's name has 1-64 characters",
        ));
    }
    let secret = secrets::generate(SecretKind::ApiKey);
    let (user, sa) = match new.owner {
        KeyOwner::User(u) => (Some(u), None),
        KeyOwner::ServiceAccount(s) => (None, Some(s)),
    };
    let scopes: Option<Vec<&str>> = new
        .scopes
        .as_ref()
        .map(|s| s.iter().map(|p| p.as_str()).collect());
    let row: KeyRow = sqlx::query_as(&format!(
        "INSERT INTO iam.api_keys (id, prefix, secret_hash, name, user_id, service_account_id, org_id, project_id, scopes, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(secrets::display_prefix(&secret.text))
    .bind(&secret.hash)
    .bind(new.name.trim())
    .bind(user)
    .bind(sa)
    .bind(new.org.uuid())
    .bind(new.project.map(ProjectId::uuid))
    .bind(scopes)
    .bind(new.expires_at)
    .fetch_one(pool)
    .await?;
    Ok((key(row), secret))
}

/// Which keys a project admin sees: those bound to the project, those of the project's service
/// accounts, and the caller's own.
const VISIBLE: &str = "org_id = $1 AND (project_id = $2 OR user_id = $3
       OR service_account_id IN (SELECT id FROM iam.service_accounts WHERE project_id = $2))";

/// The keys `caller` may manage in `project` of `org`, newest first.
pub async fn list(
    pool: &PgPool,
    org: OrgId,
    project: ProjectId,
    caller: Uuid,
) -> DomainResult<Vec<ApiKey>> {
    let rows: Vec<KeyRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM iam.api_keys WHERE {VISIBLE} ORDER BY created_at DESC LIMIT 500"
    ))
    .bind(org.uuid())
    .bind(project.uuid())
    .bind(caller)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(key).collect())
}

/// Revokes a key `caller` may manage in `project`. Idempotent.
pub async fn revoke(
    pool: &PgPool,
    org: OrgId,
    project: ProjectId,
    caller: Uuid,
    id: Uuid,
) -> DomainResult<ApiKey> {
    let row: Option<KeyRow> = sqlx::query_as(&format!(
        "UPDATE iam.api_keys SET revoked_at = coalesce(revoked_at, now())
         WHERE id = $4 AND {VISIBLE} RETURNING {COLUMNS}"
    ))
    .bind(org.uuid())
    .bind(project.uuid())
    .bind(caller)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(key)
        .ok_or_else(|| DomainError::not_found("api_key_not_found", "API key not found"))
}

/// A live key by its text. Malformed text (bad prefix or checksum) costs no database query.
pub async fn resolve(pool: &PgPool, text: &str) -> DomainResult<Option<ApiKey>> {
    if !secrets::well_formed(SecretKind::ApiKey, text) {
        return Ok(None);
    }
    let row: Option<KeyRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM iam.api_keys
         WHERE secret_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
    ))
    .bind(secrets::hash(text))
    .fetch_optional(pool)
    .await?;
    let Some(found) = row.map(key) else {
        return Ok(None);
    };
    // Last use, at most once a minute per key: no write per request.
    let stale = found
        .last_used_at
        .is_none_or(|t| chrono::Utc::now() - t > chrono::Duration::seconds(60));
    if stale {
        let pool = pool.clone();
        let id = found.id;
        tokio::spawn(async move {
            let _ = sqlx::query("UPDATE iam.api_keys SET last_used_at = now() WHERE id = $1")
                .bind(id)
                .execute(&pool)
                .await;
        });
    }
    Ok(Some(found))
}
