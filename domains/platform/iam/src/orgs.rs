//! Orgs (tenants) and the projects inside them. Every org has one default project.

use serde::Serialize;
use shared_ids::{OrgId, ProjectId};
use shared_kernel::{DomainError, DomainResult};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub id: ProjectId,
    pub org_id: OrgId,
    pub name: String,
    pub is_default: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

pub const DEFAULT_PROJECT_NAME: &str = "default";

pub(crate) fn check_name(what: &'static str, code: &'static str, name: &str) -> DomainResult<()> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            code,
            format!("{what} names are 1-63 characters of a-z, 0-9 and '-', not starting with '-'"),
        ))
    }
}

/// Creates an org and its default project on `conn` (the caller's transaction).
pub(crate) async fn create_on(conn: &mut PgConnection, name: &str) -> DomainResult<(Org, Project)> {
    check_name("org", "invalid_org_name", name)?;
    let org_id = OrgId::new();
    let created: Option<(chrono::DateTime<chrono::Utc>,)> = sqlx::query_as(
        "INSERT INTO iam.orgs (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING created_at",
    )
    .bind(org_id.uuid())
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((created_at,)) = created else {
        return Err(DomainError::conflict(
            "org_name_taken",
            format!("an org named {name} exists"),
        ));
    };
    let project = insert_project(conn, org_id, DEFAULT_PROJECT_NAME, true).await?;
    Ok((
        Org {
            id: org_id,
            name: name.to_string(),
            created_at,
        },
        project,
    ))
}

/// Creates an org with its default project (operators, when sign-up is closed).
pub async fn create(pool: &PgPool, name: &str) -> DomainResult<(Org, Project)> {
    let mut tx = pool.begin().await?;
    let created = create_on(&mut tx, name).await?;
    tx.commit().await?;
    Ok(created)
}

/// A new org with its default project and its owner's invitation, in one transaction: a
/// refused invitation leaves no org behind.
pub async fn create_with_owner(
    pool: &PgPool,
    name: &str,
    owner_email: &str,
    invited_by: Uuid,
    ttl: chrono::Duration,
) -> DomainResult<(
    Org,
    Project,
    crate::members::Invitation,
    crate::secrets::NewSecret,
)> {
    let mut tx = pool.begin().await?;
    let (org, project) = create_on(&mut tx, name).await?;
    let (invitation, secret) = crate::members::invite_on(
        &mut tx,
        org.id,
        owner_email,
        crate::authz::Role::Owner,
        invited_by,
        ttl,
    )
    .await?;
    tx.commit().await?;
    Ok((org, project, invitation, secret))
}

pub async fn get(pool: &PgPool, id: OrgId) -> DomainResult<Org> {
    let row: Option<(Uuid, String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, name, created_at FROM iam.orgs WHERE id = $1")
            .bind(id.uuid())
            .fetch_optional(pool)
            .await?;
    row.map(|(id, name, created_at)| Org {
        id: id.into(),
        name,
        created_at,
    })
    .ok_or_else(|| org_not_found(id))
}

pub fn org_not_found(id: impl std::fmt::Display) -> DomainError {
    DomainError::not_found("org_not_found", format!("org {id} not found"))
}

/// The orgs in `ids` (those a caller belongs to), by name.
pub async fn list(pool: &PgPool, ids: &[OrgId]) -> DomainResult<Vec<Org>> {
    let ids: Vec<Uuid> = ids.iter().map(|i| i.uuid()).collect();
    let rows: Vec<(Uuid, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT id, name, created_at FROM iam.orgs WHERE id = ANY($1) ORDER BY name",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, created_at)| Org {
            id: id.into(),
            name,
            created_at,
        })
        .collect())
}

type ProjectRow = (Uuid, Uuid, String, bool, chrono::DateTime<chrono::Utc>);

fn project(row: ProjectRow) -> Project {
    Project {
        id: row.0.into(),
        org_id: row.1.into(),
        name: row.2,
        is_default: row.3,
        created_at: row.4,
    }
}

async fn insert_project(
    conn: &mut PgConnection,
    org: OrgId,
    name: &str,
    is_default: bool,
) -> DomainResult<Project> {
    check_name("project", "invalid_project_name", name)?;
    let row: Option<ProjectRow> = sqlx::query_as(
        "INSERT INTO iam.projects (id, org_id, name, is_default) VALUES ($1, $2, $3, $4)
         ON CONFLICT (org_id, name) DO NOTHING
         RETURNING id, org_id, name, is_default, created_at",
    )
    .bind(ProjectId::new().uuid())
    .bind(org.uuid())
    .bind(name)
    .bind(is_default)
    .fetch_optional(conn)
    .await?;
    row.map(project).ok_or_else(|| {
        DomainError::conflict(
            "project_name_taken",
            format!("the org has a project named {name}"),
        )
    })
}

pub async fn create_project(pool: &PgPool, org: OrgId, name: &str) -> DomainResult<Project> {
    let mut conn = pool.acquire().await?;
    insert_project(&mut conn, org, name, false).await
}

pub async fn list_projects(pool: &PgPool, org: OrgId) -> DomainResult<Vec<Project>> {
    let rows: Vec<ProjectRow> = sqlx::query_as(
        "SELECT id, org_id, name, is_default, created_at FROM iam.projects WHERE org_id = $1 ORDER BY name",
    )
    .bind(org.uuid())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(project).collect())
}

/// A project by id.
pub async fn get_project(pool: &PgPool, id: ProjectId) -> DomainResult<Project> {
    let row: Option<ProjectRow> = sqlx::query_as(
        "SELECT id, org_id, name, is_default, created_at FROM iam.projects WHERE id = $1",
    )
    .bind(id.uuid())
    .fetch_optional(pool)
    .await?;
    row.map(project).ok_or_else(|| project_not_found(id))
}

/// A project by name in one of `orgs`; two matches are ambiguous.
pub async fn find_project(pool: &PgPool, orgs: &[OrgId], name: &str) -> DomainResult<Project> {
    let ids: Vec<Uuid> = orgs.iter().map(|o| o.uuid()).collect();
    let rows: Vec<ProjectRow> = sqlx::query_as(
        "SELECT id, org_id, name, is_default, created_at FROM iam.projects
         WHERE org_id = ANY($1) AND name = $2 LIMIT 2",
    )
    .bind(&ids)
    .bind(name)
    .fetch_all(pool)
    .await?;
    match rows.len() {
        1 => Ok(project(rows.into_iter().next().expect("one row"))),
        0 => Err(project_not_found(name)),
        _ => Err(DomainError::invalid(
            "ambiguous_project",
            format!("several of your orgs have a project named {name}; pass its id"),
        )),
    }
}

pub fn project_not_found(id: impl std::fmt::Display) -> DomainError {
    DomainError::not_found("project_not_found", format!("project {id} not found"))
}
