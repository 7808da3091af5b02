//! Platform services: what a player touches before and around a match.
//!
//! Everything here keeps its state in a [`volley_store::Db`] (SQLite or PostgreSQL, the same SQL
//! for both) and sends real-time events through a [`volley_store::Bus`] (in-process or NATS), so
//! any number of nodes can serve the same players. Time comes from the caller (`now_ms`) where a
//! rule depends on it, so the rules are testable without sleeping.
//!
//! - [`accounts`]: device, email + password (Argon2id on a bounded pool), custom ids; sessions and
//!   rotating refresh tokens; login limits; ban and delete.
//! - [`social`]: friends (request, accept, block).
//! - [`lobbies`]: parties and lobbies (invite, join, leave, kick, promote, attributes, search).
//! - [`chat`]: channels for rooms, lobbies/parties and direct messages, persisted and paged, rate
//!   limited; [`presence`]: who is online, across nodes.
//! - [`matchmaking`]: tickets into the `volley-match` core, matches into rooms, ratings.
//! - [`events`]: the per-player event stream (WebSocket) over the bus.
//! - [`ledger`]: the double-entry ledger (bounded balances, idempotent linked transfers, unique
//!   items, audit); [`economy`]: grants, gifts, bonus codes with fraud holds.
//! - [`leaderboards`]: boards with Redis sorted-set semantics over the [`rank`] index.
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod accounts;
pub mod chat;
pub mod cron;
pub mod economy;
mod error;
pub mod events;
pub mod hasher;
pub mod leaderboards;
pub mod ledger;
pub mod limits;
pub mod lobbies;
pub mod matchmaking;
pub mod presence;
pub mod rank;
pub mod social;

use std::sync::Arc;

pub use error::{ErrorKind, PlatformError};
pub use volley_store::{Backend, Bus, Db};

/// Account ids as the API shows them (the game's player id).
pub type AccountId = u64;

/// Tunables of the platform services.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// This node's name (presence, matches).
    pub node_id: String,
    /// Session token lifetime, ms.
    pub session_ttl_ms: i64,
    /// Refresh token lifetime, ms.
    pub refresh_ttl_ms: i64,
    /// A refresh token reused within this long after its first use is treated as a benign race
    /// (a second tab, a retried request) and gets a fresh token in the same family; later reuse
    /// revokes the family.
    pub refresh_grace_ms: i64,
    /// Argon2id memory, KiB (OWASP: 19456).
    pub argon2_m_kib: u32,
    /// Argon2id passes (OWASP: 2).
    pub argon2_t: u32,
    /// Hashing threads; 0 = one per core.
    pub hash_workers: usize,
    /// Hash requests that may wait for a worker before new ones are refused (load shedding).
    pub hash_queue: usize,
    /// Login/register attempts per second per address, and the burst.
    pub login_per_ip_per_s: f64,
    /// Burst of the above.
    pub login_per_ip_burst: f64,
    /// Failed logins on one account before it is slowed down.
    pub login_free_failures: i64,
    /// Failed logins on one account per window before it is locked for the rest of the window.
    pub login_max_failures: i64,
    /// The failure window, ms.
    pub login_window_ms: i64,
    /// Key a studio's backend presents for server-to-server calls (custom-id login, results,
    /// bans). Empty disables those calls.
    pub server_key: String,
    /// Chat: longest message, bytes.
    pub chat_max_bytes: usize,
    /// Chat: messages per second per sender, and the burst.
    pub chat_per_s: f64,
    /// Burst of the above.
    pub chat_burst: f64,
    /// Matchmaker pools and limits.
    pub matchmaker: volley_match::MatchmakerConfig,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            node_id: "node-1".into(),
            session_ttl_ms: 3_600_000,
            refresh_ttl_ms: 30 * 24 * 3_600_000,
            refresh_grace_ms: 10_000,
            argon2_m_kib: 19_456,
            argon2_t: 2,
            hash_workers: 0,
            hash_queue: 64,
            login_per_ip_per_s: 5.0,
            login_per_ip_burst: 20.0,
            login_free_failures: 5,
            login_max_failures: 20,
            login_window_ms: 15 * 60_000,
            server_key: String::new(),
            chat_max_bytes: 2048,
            chat_per_s: 2.0,
            chat_burst: 10.0,
            matchmaker: volley_match::MatchmakerConfig {
                default_pool: Some(volley_match::PoolConfig::new(2, 2)),
                ..volley_match::MatchmakerConfig::default()
            },
        }
    }
}

/// The services, sharing one database, one bus and one hashing pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Platform {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    bus: Bus,
    cfg: PlatformConfig,
    hasher: hasher::Hasher,
    ip_limits: limits::KeyedBuckets<std::net::IpAddr>,
    chat_limits: limits::KeyedBuckets<AccountId>,
    matchmaker: matchmaking::Engine,
    rooms: std::sync::OnceLock<Arc<dyn chat::RoomDirectory>>,
    boards: leaderboards::Boards,
}

impl Platform {
    /// Services over `db` and `bus`; fails only on an invalid matchmaker configuration.
    pub fn new(db: Db, bus: Bus, cfg: PlatformConfig) -> Result<Platform, PlatformError> {
        let hasher = hasher::Hasher::new(
            cfg.argon2_m_kib,
            cfg.argon2_t,
            cfg.hash_workers,
            cfg.hash_queue,
        );
        let ip_limits = limits::KeyedBuckets::new(cfg.login_per_ip_per_s, cfg.login_per_ip_burst);
        let chat_limits = limits::KeyedBuckets::new(cfg.chat_per_s, cfg.chat_burst);
        let matchmaker = matchmaking::Engine::new(cfg.matchmaker.clone())?;
        Ok(Platform {
            inner: Arc::new(Inner {
                db,
                bus,
                cfg,
                hasher,
                ip_limits,
                chat_limits,
                matchmaker,
                rooms: std::sync::OnceLock::new(),
                boards: leaderboards::Boards::default(),
            }),
        })
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The configuration.
    pub fn config(&self) -> &PlatformConfig {
        &self.inner.cfg
    }

    /// The password hashing pool.
    pub fn hasher(&self) -> &hasher::Hasher {
        &self.inner.hasher
    }

    /// Whether `key` is the configured server key (constant time; never true when unset).
    pub fn check_server_key(&self, key: &str) -> bool {
        let want = self.inner.cfg.server_key.as_bytes();
        !want.is_empty() && same_secret(key.as_bytes(), want)
    }
}

/// Whether `given` equals `want`, in time that does not depend on where they differ.
pub fn same_secret(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    volley_store::unix_ms()
}

/// 32 random bytes as 64 hex characters: session and refresh tokens, ticket ids.
pub(crate) fn random_token() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

/// A shorter random id (16 bytes hex).
pub(crate) fn random_id() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

/// SHA-256 of a token, hex: what the database keeps instead of the token.
pub(crate) fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
