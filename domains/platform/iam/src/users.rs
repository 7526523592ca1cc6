//! Users: sign-up, password login, deletion, and the platform's bootstrap accounts.

use crate::authz::{PlatformRole, Role};
use crate::orgs::{self, Org, Project};
use crate::passwords;
use serde::Serialize;
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub platform_role: Option<PlatformRole>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

fn check_email(email: &str) -> DomainResult<String> {
    let email = email.trim();
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.contains(char::is_whitespace);
    if ok {
        Ok(email.to_string())
    } else {
        Err(DomainError::invalid(
            "invalid_email",
            "not an email address",
        ))
    }
}

/// Hashing is CPU-bound for tens of milliseconds: off the async executor.
async fn hash_password(password: &str) -> DomainResult<String> {
    passwords::check_policy(password)?;
    let password = password.to_string();
    Ok(
        tokio::task::spawn_blocking(move || passwords::hash(&password))
            .await
            .expect("hashing does not panic"),
    )
}

async fn verify_password(password: &str, stored: &str) -> bool {
    let (password, stored) = (password.to_string(), stored.to_string());
    tokio::task::spawn_blocking(move || passwords::verify(&password, &stored))
        .await
        .unwrap_or(false)
}

fn email_taken() -> DomainError {
    DomainError::conflict("email_taken", "an account with this email exists")
}

/// Creates a user, an org with that user as owner, and the org's default project.
pub async fn signup(
    pool: &PgPool,
    email: &str,
    password: &str,
    org_name: &str,
) -> DomainResult<(User, Org, Project)> {
    let email = check_email(email)?;
    orgs::check_name("org", "invalid_org_name", org_name)?;
    let hash = hash_password(password).await?;
    let mut tx = pool.begin().await?;
    let user = insert_user(&mut tx, &email, &hash, None).await?;
    let (org, project) = orgs::create_on(&mut tx, org_name).await?;
    sqlx::query("INSERT INTO iam.org_members (org_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(org.id.uuid())
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((user, org, project))
}

pub(crate) async fn insert_user(
    conn: &mut sqlx::PgConnection,
    email: &str,
    password_hash: &str,
    platform_role: Option<PlatformRole>,
) -> DomainResult<User> {
    let id = Uuid::now_v7();
    let row: Option<(chrono::DateTime<chrono::Utc>,)> = sqlx::query_as(
        "INSERT INTO iam.users (id, email, password_hash, platform_role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (lower(email)) WHERE deleted_at IS NULL DO NOTHING RETURNING created_at",
    )
    .bind(id)
    .bind(email)
    .bind(password_hash)
    .bind(platform_role.map(PlatformRole::as_str))
    .fetch_optional(conn)
    .await?;
    let (created_at,) = row.ok_or_else(email_taken)?;
    Ok(User {
        id,
        email: email.to_string(),
        platform_role,
        created_at,
    })
}

/// Creates `email` with `password` and a platform role, or leaves an existing account as it is
/// (the dev stack and tests bootstrap their operator this way).
pub async fn ensure_platform_user(
    pool: &PgPool,
    email: &str,
    password: &str,
    role: PlatformRole,
) -> DomainResult<Uuid> {
    let email = check_email(email)?;
    if let Some((id,)) = sqlx::query_as::<_, (Uuid,)>(
        "SELECT id FROM iam.users WHERE lower(email) = lower($1) AND deleted_at IS NULL",
    )
    .bind(&email)
    .fetch_optional(pool)
    .await?
    {
        return Ok(id);
    }
    let hash = hash_password(password).await?;
    let mut conn = pool.acquire().await?;
    Ok(insert_user(&mut conn, &email, &hash, Some(role)).await?.id)
}

/// Checks an email and password; the same error (and about the same time) for an unknown email
/// and a wrong password.
pub async fn authenticate(pool: &PgPool, email: &str, password: &str) -> DomainResult<Uuid> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, password_hash FROM iam.users WHERE lower(email) = lower($1) AND deleted_at IS NULL",
    )
    .bind(email.trim())
    .fetch_optional(pool)
    .await?;
    let (id, stored) = match &row {
        Some((id, stored)) => (Some(*id), stored.as_str()),
        None => (None, passwords::dummy_hash()),
    };
    if verify_password(password, stored).await
        && let Some(id) = id
    {
        return Ok(id);
    }
    Err(DomainError::invalid(
        "invalid_credentials",
        "email or password is wrong",
    ))
}

pub async fn get(pool: &PgPool, id: Uuid) -> DomainResult<User> {
    let row: Option<(Uuid, String, Option<String>, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as(
            "SELECT id, email, platform_role, created_at FROM iam.users WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.map(|(id, email, role, created_at)| User {
        id,
        email,
        platform_role: role.as_deref().and_then(PlatformRole::parse),
        created_at,
    })
    .ok_or_else(|| DomainError::not_found("user_not_found", format!("user {id} not found")))
}

/// Deletes a user: their memberships, keys and sessions end with them.
pub async fn delete(pool: &PgPool, id: Uuid) -> DomainResult<()> {
    let mut tx = pool.begin().await?;
    let done =
        sqlx::query("UPDATE iam.users SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    if done.rows_affected() == 0 {
        return Err(DomainError::not_found(
            "user_not_found",
            format!("user {id} not found"),
        ));
    }
    for sql in [
        "DELETE FROM iam.org_members WHERE user_id = $1",
        "DELETE FROM iam.project_members WHERE user_id = $1",
        "UPDATE iam.api_keys SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        "UPDATE iam.refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        "UPDATE iam.users SET tokens_not_before = now() WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Adds an existing user to an org (tests and operators; people join through invitations).
pub async fn add_to_org(
    pool: &PgPool,
    org: shared_ids::OrgId,
    user: Uuid,
    role: Role,
) -> DomainResult<()> {
    sqlx::query(
        "INSERT INTO iam.org_members (org_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role",
    )
    .bind(org.uuid())
    .bind(user)
    .bind(role.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// Creates a user who belongs to no org yet (tests and operators add memberships).
pub async fn create(pool: &PgPool, email: &str, password: &str) -> DomainResult<User> {
    let mut conn = pool.acquire().await?;
    create_plain(&mut conn, email, password).await
}

/// Refuses every access token issued until now (the user must log in again).
pub(crate) async fn expire_tokens(conn: &mut sqlx::PgConnection, user: Uuid) -> DomainResult<()> {
    sqlx::query("UPDATE iam.users SET tokens_not_before = now() WHERE id = $1")
        .bind(user)
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates a user with no org (an invited person, before they accept).
pub(crate) async fn create_plain(
    conn: &mut sqlx::PgConnection,
    email: &str,
    password: &str,
) -> DomainResult<User> {
    let email = check_email(email)?;
    let hash = hash_password(password).await?;
    insert_user(conn, &email, &hash, None).await
}

pub(crate) async fn verify_existing(pool: &PgPool, id: Uuid, password: &str) -> DomainResult<bool> {
    let stored: Option<String> = sqlx::query_scalar(
        "SELECT password_hash FROM iam.users WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(match stored {
        Some(stored) => verify_password(password, &stored).await,
        None => false,
    })
}
