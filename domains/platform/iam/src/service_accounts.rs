//! Service accounts: non-human principals of one project, with a role in it. They authenticate
//! with API keys only.

use crate::authz::Role;
use serde::Serialize;
use shared_ids::ProjectId;
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct ServiceAccount {
    pub id: Uuid,
    pub project_id: ProjectId,
    pub name: String,
    pub role: Role,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

type Row = (Uuid, Uuid, String, String, chrono::DateTime<chrono::Utc>);

fn account(row: Row) -> Option<ServiceAccount> {
    Some(ServiceAccount {
        id: row.0,
        project_id: row.1.into(),
        name: row.2,
        role: Role::parse(&row.3)?,
        created_at: row.4,
    })
}

pub async fn create(
    pool: &PgPool,
    project: ProjectId,
    name: &str,
    role: Role,
    created_by: Uuid,
) -> DomainResult<ServiceAccount> {
    crate::orgs::check_name("service account", "invalid_service_account_name", name)?;
    if role == Role::Owner {
        return Err(DomainError::invalid(
            "invalid_role",
            "a service account is admin, member or viewer",
        ));
    }
    let row: Option<Row> = sqlx::query_as(
        "INSERT INTO iam.service_accounts (id, project_id, name, role, created_by) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (project_id, name) WHERE deleted_at IS NULL DO NOTHING
         RETURNING id, project_id, name, role, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(project.uuid())
    .bind(name)
    .bind(role.as_str())
    .bind(created_by)
    .fetch_optional(pool)
    .await?;
    row.and_then(account).ok_or_else(|| {
        DomainError::conflict(
            "service_account_name_taken",
            format!("the project has a service account named {name}"),
        )
    })
}

pub async fn list(pool: &PgPool, project: ProjectId) -> DomainResult<Vec<ServiceAccount>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, project_id, name, role, created_at FROM iam.service_accounts
         WHERE project_id = $1 AND deleted_at IS NULL ORDER BY name",
    )
    .bind(project.uuid())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter_map(account).collect())
}

pub async fn get(pool: &PgPool, project: ProjectId, id: Uuid) -> DomainResult<ServiceAccount> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, project_id, name, role, created_at FROM iam.service_accounts
         WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(project.uuid())
    .fetch_optional(pool)
    .await?;
    row.and_then(account).ok_or_else(|| not_found(id))
}

fn not_found(id: Uuid) -> DomainError {
    DomainError::not_found(
        "service_account_not_found",
        format!("service account {id} not found"),
    )
}

/// Deletes a service account of `project` and revokes its keys.
pub async fn delete(pool: &PgPool, project: ProjectId, id: Uuid) -> DomainResult<()> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE iam.service_accounts SET deleted_at = now() WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(project.uuid())
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(not_found(id));
    }
    sqlx::query("UPDATE iam.api_keys SET revoked_at = now() WHERE service_account_id = $1 AND revoked_at IS NULL")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
