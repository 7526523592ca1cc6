//! Login sessions: a family of refresh tokens. Each refresh rotates the token; presenting a token
//! that was already rotated means it was stolen (or replayed), and revokes the whole family.

use crate::secrets::{self, NewSecret, SecretKind};
use shared_kernel::{DomainError, DomainResult};
use sqlx::PgPool;
use uuid::Uuid;

pub const REFRESH_TTL_DAYS: i64 = 30;

/// A session's new refresh token and whose it is.
#[derive(Debug)]
pub struct Refreshed {
    pub user: Uuid,
    pub session: Uuid,
    pub refresh_token: NewSecret,
}

fn invalid() -> DomainError {
    DomainError::invalid(
        "invalid_refresh_token",
        "the refresh token is unknown, expired or revoked",
    )
}

async fn insert(pool: &PgPool, user: Uuid, family: Uuid) -> DomainResult<NewSecret> {
    let secret = secrets::generate(SecretKind::RefreshToken);
    sqlx::query(
        "INSERT INTO iam.refresh_tokens (id, family_id, user_id, secret_hash, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(days => $5::int))",
    )
    .bind(Uuid::now_v7())
    .bind(family)
    .bind(user)
    .bind(&secret.hash)
    .bind(REFRESH_TTL_DAYS as i32)
    .execute(pool)
    .await?;
    Ok(secret)
}

/// Starts a session for `user` (after a password check).
pub async fn start(pool: &PgPool, user: Uuid) -> DomainResult<Refreshed> {
    let session = Uuid::now_v7();
    Ok(Refreshed {
        user,
        session,
        refresh_token: insert(pool, user, session).await?,
    })
}

/// Rotates a refresh token. A reused token revokes its family.
pub async fn rotate(pool: &PgPool, token: &str) -> DomainResult<Refreshed> {
    if !secrets::well_formed(SecretKind::RefreshToken, token) {
        return Err(invalid());
    }
    let hash = secrets::hash(token);
    let rotated: Option<(Uuid, Uuid)> = sqlx::query_as(
        "UPDATE iam.refresh_tokens t SET rotated_at = now()
         FROM iam.users u
         WHERE t.secret_hash = $1 AND t.rotated_at IS NULL AND t.revoked_at IS NULL
           AND t.expires_at > now() AND u.id = t.user_id AND u.deleted_at IS NULL
         RETURNING t.user_id, t.family_id",
    )
    .bind(&hash)
    .fetch_optional(pool)
    .await?;
    let Some((user, family)) = rotated else {
        // Reuse of a rotated token: whoever holds the family now is not to be trusted.
        let revoked = sqlx::query(
            "UPDATE iam.refresh_tokens SET revoked_at = now()
             WHERE revoked_at IS NULL AND family_id = (SELECT family_id FROM iam.refresh_tokens WHERE secret_hash = $1 AND rotated_at IS NOT NULL)",
        )
        .bind(&hash)
        .execute(pool)
        .await?;
        if revoked.rows_affected() > 0 {
            tracing::warn!("a rotated refresh token was reused; its session is revoked");
        }
        return Err(invalid());
    };
    Ok(Refreshed {
        user,
        session: family,
        refresh_token: insert(pool, user, family).await?,
    })
}

/// Ends the session the token belongs to. Idempotent; unknown tokens change nothing.
pub async fn logout(pool: &PgPool, token: &str) -> DomainResult<()> {
    if !secrets::well_formed(SecretKind::RefreshToken, token) {
        return Err(invalid());
    }
    sqlx::query(
        "UPDATE iam.refresh_tokens SET revoked_at = coalesce(revoked_at, now())
         WHERE family_id = (SELECT family_id FROM iam.refresh_tokens WHERE secret_hash = $1)",
    )
    .bind(secrets::hash(token))
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether a session is still live (not logged out, not revoked for reuse).
pub async fn is_live(pool: &PgPool, session: Uuid) -> DomainResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM iam.refresh_tokens WHERE family_id = $1 AND revoked_at IS NULL)",
    )
    .bind(session)
    .fetch_one(pool)
    .await?)
}
