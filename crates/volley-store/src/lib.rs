//! Persistence and the event bus.
//!
//! - [`Db`]: SQLite (the embedded default, WAL, in the node's data directory) or PostgreSQL
//!   (clusters), one SQL dialect for both, migrations in [`schema`].
//! - [`Bus`]: events between nodes; in-process by default, NATS when configured.
//!
//! The services in `volley-platform` use these and nothing else for state, so every service runs
//! the same on both backends and the same test suite covers both.
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod bus;
mod db;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;

pub use bus::{Bus, BusMessage, Subscription};
pub use db::{Backend, Db};

use std::time::{SystemTime, UNIX_EPOCH};

/// Errors from the store and the bus.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("{0}")]
    Migration(String),
    /// Bad configuration (URL).
    #[error("{0}")]
    Config(String),
    /// The bus failed.
    #[error("bus: {0}")]
    Bus(String),
}

impl StoreError {
    /// Whether this is a unique-constraint violation (a row that already exists).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(e) => schema::is_unique_violation(e),
            _ => false,
        }
    }
}

/// Milliseconds since the Unix epoch, as the schema stores times.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
