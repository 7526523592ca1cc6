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

async fn insert(
    conn: &mut sqlx::PgConnection,
    user: Uuid,
    family: Uuid,
) -> DomainResult<NewSecret> {
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
    .execute(conn)
    .await?;
    Ok(secret)
}

/// Starts a session for `user` (after a password check).
pub async fn start(pool: &PgPool, user: Uuid) -> DomainResult<Refreshed> {
    let session = Uuid::now_v7();
    let mut conn = pool.acquire().await?;
    Ok(Refreshed {
        user,
        session,
        refresh_token: insert(&mut conn, user, session).await?,
    })
}

/// The token's row, with its family locked for this transaction: every rotation and logout of a
/// family runs one after the other, so a replay that revokes the family cannot miss a token a
/// concurrent rotation is about to add.
async fn lock_family(
    tx: &mut sqlx::PgConnection,
    hash: &[u8],
) -> DomainResult<Option<(Uuid, Uuid, Uuid)>> {
    let row: Option<(Uuid, Uuid, Uuid)> = sqlx::query_as(
        "SELECT id, user_id, family_id FROM iam.refresh_tokens WHERE secret_hash = $1",
    )
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((_, _, family)) = row {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('iam.refresh_family:' || $1::text))")
            .bind(family)
            .execute(&mut *tx)
            .await?;
    }
    Ok(row)
}

/// Rotates a refresh token. A reused token revokes its family.
pub async fn rotate(pool: &PgPool, token: &str) -> DomainResult<Refreshed> {
    if !secrets::well_formed(SecretKind::RefreshToken, token) {
        return Err(invalid());
    }
    let mut tx = pool.begin().await?;
    let Some((id, user, family)) = lock_family(&mut tx, &secrets::hash(token)).await? else {
        return Err(invalid());
    };
    // Read after the lock: what a rotation or logout before us committed.
    let (rotated, usable): (bool, bool) = sqlx::query_as(
        "SELECT t.rotated_at IS NOT NULL,
                t.rotated_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > now()
                    AND u.deleted_at IS NULL
         FROM iam.refresh_tokens t JOIN iam.users u ON u.id = t.user_id WHERE t.id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if rotated {
        // Reuse of a rotated token: whoever holds the family now is not to be trusted.
        sqlx::query(
            "UPDATE iam.refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        )
        .bind(family)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::warn!("a rotated refresh token was reused; its session is revoked");
        return Err(invalid());
    }
    if !usable {
        return Err(invalid());
    }
    sqlx::query("UPDATE iam.refresh_tokens SET rotated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let refresh_token = insert(&mut tx, user, family).await?;
    tx.commit().await?;
    Ok(Refreshed {
        user,
        session: family,
        refresh_token,
    })
}

/// Ends the session the token belongs to. Idempotent; unknown tokens change nothing.
pub async fn logout(pool: &PgPool, token: &str) -> DomainResult<()> {
    if !secrets::well_formed(SecretKind::RefreshToken, token) {
        return Err(invalid());
    }
    let mut tx = pool.begin().await?;
    if let Some((_, _, family)) = lock_family(&mut tx, &secrets::hash(token)).await? {
        sqlx::query(
            "UPDATE iam.refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE family_id = $1",
        )
        .bind(family)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
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
