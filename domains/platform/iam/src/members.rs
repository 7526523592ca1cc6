//! Org members, project members and invitations. An org always keeps at least one owner. A
//! project member holds a role in one project, besides (or without) an org role; their role in
//! the project is the stronger of the two (`authority::of_user`).

use crate::authz::Role;
use crate::secrets::{self, NewSecret, SecretKind};
use crate::users;
use serde::Serialize;
use shared_ids::{OrgId, ProjectId};
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    pub joined_at: chrono::DateTime<chrono::Utc>,
}

pub async fn list(pool: &PgPool, org: OrgId) -> DomainResult<Vec<Member>> {
    let rows: Vec<(Uuid, String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT u.id, u.email, m.role, m.created_at FROM iam.org_members m
         JOIN iam.users u ON u.id = m.user_id WHERE m.org_id = $1 ORDER BY u.email",
    )
    .bind(org.uuid())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(user_id, email, role, joined_at)| {
            Some(Member {
                user_id,
                email,
                role: Role::parse(&role)?,
                joined_at,
            })
        })
        .collect())
}

fn member_not_found(user: Uuid) -> DomainError {
    DomainError::not_found("member_not_found", format!("no member {user} in this org"))
}

/// Changes a member's role. Only an owner may make or unmake owners; the last owner stays.
pub async fn set_role(
    pool: &PgPool,
    org: OrgId,
    user: Uuid,
    role: Role,
    actor_role: Role,
) -> DomainResult<Member> {
    let mut tx = pool.begin().await?;
    let current = lock_member(&mut tx, org, user).await?;
    if (current == Role::Owner || role == Role::Owner) && actor_role != Role::Owner {
        return Err(DomainError::invalid(
            "owner_required",
            "only an owner can grant or take the owner role",
        ));
    }
    if current == Role::Owner && role != Role::Owner {
        ensure_another_owner(&mut tx, org, user).await?;
    }
    sqlx::query("UPDATE iam.org_members SET role = $3 WHERE org_id = $1 AND user_id = $2")
        .bind(org.uuid())
        .bind(user)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
    if role < current {
        users::expire_tokens(&mut tx, user).await?;
    }
    tx.commit().await?;
    list(pool, org)
        .await?
        .into_iter()
        .find(|m| m.user_id == user)
        .ok_or_else(|| member_not_found(user))
}

/// Removes a member from the org and from every project of the org.
pub async fn remove(pool: &PgPool, org: OrgId, user: Uuid, actor_role: Role) -> DomainResult<()> {
    let mut tx = pool.begin().await?;
    let current = lock_member(&mut tx, org, user).await?;
    if current == Role::Owner {
        if actor_role != Role::Owner {
            return Err(DomainError::invalid(
                "owner_required",
                "only an owner can remove an owner",
            ));
        }
        ensure_another_owner(&mut tx, org, user).await?;
    }
    sqlx::query("DELETE FROM iam.org_members WHERE org_id = $1 AND user_id = $2")
        .bind(org.uuid())
        .bind(user)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "DELETE FROM iam.project_members WHERE user_id = $2
           AND project_id IN (SELECT id FROM iam.projects WHERE org_id = $1)",
    )
    .bind(org.uuid())
    .bind(user)
    .execute(&mut *tx)
    .await?;
    users::expire_tokens(&mut tx, user).await?;
    // The member's keys for this org die with the membership.
    sqlx::query("UPDATE iam.api_keys SET revoked_at = now() WHERE org_id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(org.uuid())
        .bind(user)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn lock_member(tx: &mut sqlx::PgConnection, org: OrgId, user: Uuid) -> DomainResult<Role> {
    // Lock every owner row of the org, so two concurrent demotions cannot remove the last owner.
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT user_id, role FROM iam.org_members WHERE org_id = $1 AND (user_id = $2 OR role = 'owner')
         ORDER BY user_id FOR UPDATE",
    )
    .bind(org.uuid())
    .bind(user)
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .find(|(u, _)| *u == user)
        .and_then(|(_, r)| Role::parse(r))
        .ok_or_else(|| member_not_found(user))
}

async fn ensure_another_owner(
    tx: &mut sqlx::PgConnection,
    org: OrgId,
    user: Uuid,
) -> DomainResult<()> {
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM iam.org_members WHERE org_id = $1 AND role = 'owner' AND user_id <> $2",
    )
    .bind(org.uuid())
    .bind(user)
    .fetch_one(tx)
    .await?;
    if others == 0 {
        return Err(DomainError::conflict(
            "last_owner",
            "an org keeps at least one owner",
        ));
    }
    Ok(())
}

/// A user's role in one project (not counting their org role).
#[derive(Debug, Clone, Serialize)]
pub struct ProjectMember {
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    pub joined_at: chrono::DateTime<chrono::Utc>,
}

/// The project's members (their project roles), ordered by email.
pub async fn list_project(pool: &PgPool, project: ProjectId) -> DomainResult<Vec<ProjectMember>> {
    let rows: Vec<(Uuid, String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT u.id, u.email, m.role, m.created_at FROM iam.project_members m
         JOIN iam.users u ON u.id = m.user_id
         WHERE m.project_id = $1 AND u.deleted_at IS NULL ORDER BY u.email",
    )
    .bind(project.uuid())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(user_id, email, role, joined_at)| {
            Some(ProjectMember {
                user_id,
                email,
                role: Role::parse(&role)?,
                joined_at,
            })
        })
        .collect())
}

fn project_member_not_found() -> DomainError {
    DomainError::not_found("member_not_found", "no member of this project has this id")
}

/// The user's current project role, locked for the change.
async fn lock_project_member(
    tx: &mut sqlx::PgConnection,
    project: ProjectId,
    user: Uuid,
) -> DomainResult<Option<Role>> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT role FROM iam.project_members WHERE project_id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(project.uuid())
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(role.as_deref().and_then(Role::parse))
}

/// Gives `user` (any existing user, an org member or not) `role` in the project, or changes it.
/// Only an owner grants or takes the project owner role. A lowered role ends the user's access
/// tokens.
pub async fn set_project_role(
    pool: &PgPool,
    project: ProjectId,
    user: Uuid,
    role: Role,
    actor_role: Role,
) -> DomainResult<ProjectMember> {
    let mut tx = pool.begin().await?;
    // The membership row, then the user's (the order org member removal takes them in), so a
    // concurrent deletion of the user waits, then removes this membership too.
    let current = lock_project_member(&mut tx, project, user).await?;
    let exists: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM iam.users WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE",
    )
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    if exists.is_none() {
        return Err(DomainError::not_found(
            "user_not_found",
            "no user has this id",
        ));
    }
    if (role == Role::Owner || current == Some(Role::Owner)) && actor_role != Role::Owner {
        return Err(DomainError::invalid(
            "owner_required",
            "only an owner can grant or take the owner role",
        ));
    }
    sqlx::query(
        "INSERT INTO iam.project_members (project_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role",
    )
    .bind(project.uuid())
    .bind(user)
    .bind(role.as_str())
    .execute(&mut *tx)
    .await?;
    if current.is_some_and(|c| role < c) {
        users::expire_tokens(&mut tx, user).await?;
    }
    tx.commit().await?;
    list_project(pool, project)
        .await?
        .into_iter()
        .find(|m| m.user_id == user)
        .ok_or_else(project_member_not_found)
}

/// Takes the user's project role away (their org role, if any, stays) and ends their access
/// tokens. Only an owner removes a project owner.
pub async fn remove_project_member(
    pool: &PgPool,
    project: ProjectId,
    user: Uuid,
    actor_role: Role,
) -> DomainResult<()> {
    let mut tx = pool.begin().await?;
    let current = lock_project_member(&mut tx, project, user)
        .await?
        .ok_or_else(project_member_not_found)?;
    if current == Role::Owner && actor_role != Role::Owner {
        return Err(DomainError::invalid(
            "owner_required",
            "only an owner can remove an owner",
        ));
    }
    sqlx::query("DELETE FROM iam.project_members WHERE project_id = $1 AND user_id = $2")
        .bind(project.uuid())
        .bind(user)
        .execute(&mut *tx)
        .await?;
    users::expire_tokens(&mut tx, user).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct Invitation {
    pub id: Uuid,
    pub org_id: OrgId,
    pub email: String,
    pub role: Role,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub accepted_at: Option<chrono::DateTime<chrono::Utc>>,
}

type InvitationRow = (
    Uuid,
    Uuid,
    String,
    String,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
);

fn invitation(row: InvitationRow) -> Option<Invitation> {
    Some(Invitation {
        id: row.0,
        org_id: row.1.into(),
        email: row.2,
        role: Role::parse(&row.3)?,
        created_at: row.4,
        expires_at: row.5,
        accepted_at: row.6,
    })
}

/// Invites `email` to the org with `role`; the secret goes to the invitee (shown once).
pub async fn invite(
    pool: &PgPool,
    org: OrgId,
    email: &str,
    role: Role,
    invited_by: Uuid,
    ttl: chrono::Duration,
) -> DomainResult<(Invitation, NewSecret)> {
    let mut conn = pool.acquire().await?;
    invite_on(&mut conn, org, email, role, invited_by, ttl).await
}

/// [`invite`] on a connection, so it can share a transaction (an org and its owner's
/// invitation are written together or not at all).
pub(crate) async fn invite_on(
    conn: &mut sqlx::PgConnection,
    org: OrgId,
    email: &str,
    role: Role,
    invited_by: Uuid,
    ttl: chrono::Duration,
) -> DomainResult<(Invitation, NewSecret)> {
    if !email.contains('@') || email.len() > 254 {
        return Err(DomainError::invalid(
            "invalid_email",
            "not an email address",
        ));
    }
    let secret = secrets::generate(SecretKind::Invitation);
    let row: InvitationRow = sqlx::query_as(
        "INSERT INTO iam.invitations (id, org_id, email, role, secret_hash, invited_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + $7)
         RETURNING id, org_id, email, role, created_at, expires_at, accepted_at",
    )
    .bind(Uuid::now_v7())
    .bind(org.uuid())
    .bind(email.trim())
    .bind(role.as_str())
    .bind(&secret.hash)
    .bind(invited_by)
    .bind(ttl)
    .fetch_one(&mut *conn)
    .await?;
    Ok((invitation(row).expect("role was valid"), secret))
}

pub async fn invitations(pool: &PgPool, org: OrgId) -> DomainResult<Vec<Invitation>> {
    let rows: Vec<InvitationRow> = sqlx::query_as(
        "SELECT id, org_id, email, role, created_at, expires_at, accepted_at FROM iam.invitations
         WHERE org_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC LIMIT 500",
    )
    .bind(org.uuid())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter_map(invitation).collect())
}

/// Accepts an invitation: creates the invited user with `password` (or checks the password of
/// the existing account) and adds the membership. Single use. Returns the user's id.
pub async fn accept(pool: &PgPool, token: &str, password: &str) -> DomainResult<Uuid> {
    let invalid = || {
        DomainError::invalid(
            "invalid_invitation",
            "the invitation is unknown, used or expired",
        )
    };
    if !secrets::well_formed(SecretKind::Invitation, token) {
        return Err(invalid());
    }
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, Uuid, String, String)> = sqlx::query_as(
        "UPDATE iam.invitations SET accepted_at = now()
         WHERE secret_hash = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now()
         RETURNING id, org_id, email, role",
    )
    .bind(secrets::hash(token))
    .fetch_optional(&mut *tx)
    .await?;
    let (_, org, email, role) = row.ok_or_else(invalid)?;
    let existing: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM iam.users WHERE lower(email) = lower($1) AND deleted_at IS NULL",
    )
    .bind(&email)
    .fetch_optional(&mut *tx)
    .await?;
    let user = match existing {
        Some(id) => {
            if !users::verify_existing(pool, id, password).await? {
                return Err(DomainError::invalid(
                    "invalid_credentials",
                    "email or password is wrong",
                ));
            }
            id
        }
        None => users::create_plain(&mut tx, &email, password).await?.id,
    };
    sqlx::query(
        "INSERT INTO iam.org_members (org_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (org_id, user_id) DO NOTHING",
    )
    .bind(org)
    .bind(user)
    .bind(&role)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(user)
}
