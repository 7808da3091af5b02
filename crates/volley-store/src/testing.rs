//! Test databases for the backend-generic suites (feature `testing`).
//!
//! [`TestDb::sqlite`] makes a fresh file in a temporary directory; [`TestDb::postgres`] creates a
//! fresh database on the PostgreSQL named by `VOLLEY_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`), named after this process, and drops the ones that
//! earlier, finished test processes left behind. PostgreSQL being unreachable is an error, not
//! a skip: the project's scripts start it.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Connection, Executor, Row};

use crate::{Backend, Db, StoreError};

/// The PostgreSQL the tests use.
pub fn pg_url() -> String {
    std::env::var("VOLLEY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// NATS for tests (`VOLLEY_TEST_NATS`, default `nats://127.0.0.1:4222`).
pub fn nats_url() -> String {
    std::env::var("VOLLEY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A database that lives as long as the test.
#[derive(Debug)]
pub struct TestDb {
    /// The handle.
    pub db: Db,
    /// The URL another process (a node under test) can open.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database on `backend`.
    pub async fn new(backend: Backend) -> Result<TestDb, StoreError> {
        match backend {
            Backend::Sqlite => TestDb::sqlite().await,
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    /// A fresh SQLite file.
    pub async fn sqlite() -> Result<TestDb, StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Config(e.to_string()))?;
        let path = dir.path().join("volley.db");
        let db = Db::open_sqlite(&path).await?;
        Ok(TestDb {
            db,
            url: format!("sqlite://{}", path.display()),
            _dir: Some(dir),
        })
    }

    /// A fresh PostgreSQL database.
    pub async fn postgres() -> Result<TestDb, StoreError> {
        let url = empty_postgres().await?;
        let db = Db::open_postgres(&url, 8).await?;
        Ok(TestDb {
            db,
            url,
            _dir: None,
        })
    }
}

/// Creates an empty PostgreSQL database (not migrated) and returns its URL.
pub async fn empty_postgres() -> Result<String, StoreError> {
    {
        sqlx::any::install_default_drivers();
        let admin_url = pg_url();
        let mut admin = sqlx::AnyConnection::connect(&admin_url).await?;
        // Drop databases of test processes that are gone.
        let rows = sqlx::query(
            "SELECT datname::text AS datname FROM pg_database WHERE datname LIKE 'volley_t_%'",
        )
        .fetch_all(&mut admin)
        .await?;
        for row in rows {
            let name: String = row.try_get("datname")?;
            let pid = name
                .strip_prefix("volley_t_")
                .and_then(|r| r.split('_').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    let dropped = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                    if let Err(error) = dropped {
                        // Another test process may be dropping it at the same moment; a later
                        // run tries again.
                        tracing::warn!(database = %name, %error, "could not drop a stale test database");
                    }
                }
            }
        }
        let name = format!(
            "volley_t_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            crate::unix_ms() % 1_000_000
        );
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        admin.close().await?;
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => {
                return Err(StoreError::Config(format!(
                    "bad VOLLEY_TEST_PG {admin_url}"
                )))
            }
        };
        Ok(url)
    }
}
