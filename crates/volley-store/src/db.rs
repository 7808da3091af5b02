//! One database handle over two backends: SQLite (embedded default) and PostgreSQL.
//!
//! Both are reached through sqlx's `Any` driver, so the services write one SQL text with `$1`
//! placeholders that both backends accept. The schema differs per backend only where the two
//! disagree (auto-increment keys, float types); see [`crate::schema`].
//!
//! SQLite allows one writer at a time. Rather than letting concurrent writers collide on
//! `SQLITE_BUSY`, the handle keeps a separate single-connection pool for writes, so writes queue
//! in the process and reads run beside them (WAL). PostgreSQL uses one pool for both.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

use crate::StoreError;

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in a file (WAL).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A database handle: cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    backend: Backend,
    read: AnyPool,
    write: AnyPool,
}

const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA busy_timeout = 10000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = FULL",
];

impl Db {
    /// Opens (creating if needed) the SQLite database at `path` in WAL mode and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(StoreError::from)?
            .disable_statement_logging();
        let write = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    for p in SQLITE_PRAGMAS {
                        conn.execute(*p).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts.clone())
            .await?;
        let read = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    for p in SQLITE_PRAGMAS {
                        conn.execute(*p).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        let db = Db {
            backend: Backend::Sqlite,
            read,
            write,
        };
        crate::schema::migrate(&db).await?;
        Ok(db)
    }

    /// Connects to PostgreSQL at `url` (`postgres://user@host:port/db`) and migrates it. Several
    /// nodes may start at once: migrations take an advisory lock.
    pub async fn open_postgres(url: &str, max_connections: u32) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        let opts = AnyConnectOptions::from_str(url)
            .map_err(StoreError::from)?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        let db = Db {
            backend: Backend::Postgres,
            read: pool.clone(),
            write: pool,
        };
        crate::schema::migrate(&db).await?;
        Ok(db)
    }

    /// Opens by URL: `sqlite://path` / `sqlite:path`, or `postgres://...` / `postgresql://...`.
    pub async fn open(url: &str) -> Result<Db, StoreError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or(path);
            return Db::open_sqlite(Path::new(path)).await;
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Db::open_postgres(url, 16).await;
        }
        Err(StoreError::Config(format!(
            "database url must start with sqlite:// or postgres://, got {url:?}"
        )))
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for reads (several connections on both backends).
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// The pool for writes and read-modify-write transactions (one connection on SQLite).
    pub fn writer(&self) -> &AnyPool {
        &self.write
    }

    /// Closes both pools, waiting for connections in use.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}
