//! Database pool and the single, ordered migration stream (file names are prefixed by domain).

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, migrate::Migrator};
use std::str::FromStr;
use std::time::Duration;

/// Every domain's migrations, in one stream: sqlx refuses several sources against one database.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../../migrations");

/// Connects to `url` (creating the database if it does not exist yet) and runs all pending
/// migrations.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.application_name("gpuaas");
    create_database_if_missing(&options).await?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

#[cfg(feature = "testing")]
pub mod testing {
    //! A fresh, migrated database per test, so tests run in parallel without sharing rows.
    use super::*;
    use sqlx::Connection;

    /// The server tests use; `scripts/test` exports it after making sure Postgres answers.
    pub fn server_url() -> String {
        std::env::var("GPUAAS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
    }

    /// Creates database `gpuaas_test_<random>` and returns a migrated pool and its URL.
    /// Test databases older than this are leftovers of killed runs and get dropped.
    const STALE_AFTER_S: u64 = 3 * 3600;

    pub async fn fresh_database() -> (PgPool, String) {
        let server = server_url();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // The creation time is in the name, so any test run can tell a leftover from a live one.
        let name = format!(
            "gpuaas_test_{now}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .expect("tests need Postgres: run them through scripts/test");
        drop_stale_databases(&mut admin, now).await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = match server.rfind('/') {
            Some(slash) => format!("{}/{name}", &server[..slash]),
            None => panic!("GPUAAS_TEST_DATABASE_URL must name a database"),
        };
        let pool = connect_and_migrate(&url, 10)
            .await
            .expect("migrate test database");
        (pool, url)
    }

    async fn drop_stale_databases(admin: &mut sqlx::PgConnection, now: u64) {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'gpuaas\\_test\\_%'",
        )
        .fetch_all(&mut *admin)
        .await
        .unwrap_or_default();
        for name in names {
            let created = name.split('_').nth(2).and_then(|t| t.parse::<u64>().ok());
            // Names without a timestamp come from before it was added: stale by definition.
            if created.is_none_or(|t| now.saturating_sub(t) > STALE_AFTER_S) {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut *admin)
                    .await;
            }
        }
    }
}

pub use sqlx::PgPool as Pool;

async fn create_database_if_missing(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    match sqlx::PgConnection::connect_with(options).await {
        Ok(conn) => conn.close().await,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            let name = options.get_database().unwrap_or("gpuaas").to_string();
            let mut admin =
                sqlx::PgConnection::connect_with(&options.clone().database("postgres")).await?;
            let created = sqlx::query(&format!("CREATE DATABASE \"{}\"", name.replace('"', "")))
                .execute(&mut admin)
                .await;
            match created {
                // Another process created it first.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42P04" | "23505")) =>
                {
                    Ok(())
                }
                other => other.map(|_| ()),
            }
        }
        Err(e) => Err(e),
    }
}

/// Readiness probe: the database answers a trivial query.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
