//! Platform IAM. For now: the seeded default org and project, and project lookup.
//! Users, API keys and roles replace the dev bearer token in a later change.

use shared_ids::{OrgId, ProjectId};
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use uuid::Uuid;

/// The org seeded by the first iam migration.
pub const DEFAULT_ORG: OrgId = OrgId::from_u128(0x00000000_0000_7000_8000_000000000001);
/// The project every dev-token request acts in until real IAM lands.
pub const DEFAULT_PROJECT: ProjectId = ProjectId::from_u128(0x00000000_0000_7000_8000_000000000002);

#[derive(Debug, Clone, serde::Serialize)]
pub struct Project {
    pub id: ProjectId,
    pub org_id: OrgId,
    pub name: String,
}

pub async fn get_project(pool: &PgPool, id: ProjectId) -> DomainResult<Project> {
    let row: Option<(Uuid, Uuid, String)> =
        sqlx::query_as("SELECT id, org_id, name FROM iam.projects WHERE id = $1")
            .bind(id.uuid())
            .fetch_optional(pool)
            .await?;
    row.map(|(id, org_id, name)| Project {
        id: id.into(),
        org_id: org_id.into(),
        name,
    })
    .ok_or_else(|| DomainError::not_found("project_not_found", format!("project {id} not found")))
}
