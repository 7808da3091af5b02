//! Node configuration: one struct with documented defaults. The binary maps a TOML file,
//! `VOLLEY_*` environment variables and flags onto it, in that order of precedence (flags win).

mod print;

pub use print::{redact_url, REDACTED};

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// When the node answers a new QUIC connection with a Retry (address validation) before doing
/// any handshake crypto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryPolicy {
    /// Every new connection is validated first. Costs one round trip at connect time and means
    /// no unvalidated source ever gets more bytes back than it sent.
    Always,
    /// Only when more than `handshakes_before_retry` handshakes are in progress.
    UnderLoad,
}

/// Everything a node can be told. Each key has one name everywhere: the TOML key `a_b`, the
/// flag `--a-b` and the environment variable `VOLLEY_A_B` (the tables `pools` and
/// `pool_modes` are TOML only).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its key and certificate (created on first run).
    pub data_dir: PathBuf,
    /// HTTP API listen address.
    pub http_addr: SocketAddr,
    /// QUIC listen address (port 0 picks a free port).
    pub quic_addr: SocketAddr,
    /// Address players are told to connect to and that tickets are bound to; defaults to the
    /// bound QUIC address.
    pub public_addr: Option<SocketAddr>,
    /// Connect ticket lifetime.
    pub ticket_lifetime_ms: u64,
    /// Players per room when the creator does not say.
    pub room_players_default: u32,
    /// Most players a room may be created for.
    pub room_players_max: u32,
    /// Most rooms at once.
    pub rooms_max: usize,
    /// Percent of `rooms_max` only the matchmaker may use (0-90): players creating rooms can
    /// never take the matchmaker's place.
    pub rooms_reserved_for_matches_percent: u8,
    /// Most open rooms one player may have created (they close when empty, or unused after
    /// twice the ticket lifetime).
    pub rooms_per_player_max: usize,
    /// Most content uploads (chunks, chunk batches, manifests) read at once; more wait their
    /// turn with 503 `uploads_busy` and a Retry-After.
    pub content_uploads_max: usize,
    /// Most content swarms one player may announce itself in at once.
    pub swarms_per_player_max: usize,
    /// Most connected players at once.
    pub players_max: usize,
    /// Retry policy for new QUIC connections.
    pub retry: RetryPolicy,
    /// With `retry = "under-load"`: handshakes in progress before Retry kicks in.
    pub handshakes_before_retry: usize,
    /// Handshakes in progress beyond which new connections are refused outright.
    pub handshakes_max: usize,
    /// New connection attempts allowed per source IP per second (token bucket refill).
    pub connects_per_ip_per_s: f64,
    /// Burst of connection attempts allowed per source IP.
    pub connects_per_ip_burst: f64,
    /// Time a connected player has to present its ticket.
    pub hello_timeout_ms: u64,
    /// Control frames queued towards one player before the sender is slowed down.
    pub player_queue_frames_max: usize,
    /// Database URL: `sqlite://path` or `postgres://user@host:port/db`. Default: SQLite file
    /// `volley.db` in `data_dir`.
    pub database: Option<String>,
    /// This deployment's name (1-32 of a-z, 0-9, -): every NATS subject is under
    /// `volley.<cluster>.` and every Redis key under `<redis_prefix><cluster>:`, so separate
    /// deployments sharing a NATS or Redis server never see each other's events or state.
    pub cluster: String,
    /// NATS URL (`nats://host:4222`) for events between nodes; in-process when absent.
    pub nats: Option<String>,
    /// Redis URL (`redis://host:6379/`) for state shared by every node: leaderboard ranks
    /// (sorted sets) and the content tracker; in memory per node when absent.
    pub redis: Option<String>,
    /// Root of the Redis keys; the cluster name follows it (`<redis_prefix><cluster>:`).
    pub redis_prefix: String,
    /// Upload cap for serving content chunks, KiB per second (0: none).
    pub content_max_kib_per_s: u64,
    /// Other nodes of the cluster (`http://host:port`) this node pulls a version's manifest
    /// and chunks from when it lacks them, keeping what it pulls: a build published to one
    /// node is then served by all.
    pub content_peers: Vec<String>,
    /// How long a chunk uploaded (or reported present to a publisher) but not yet referenced
    /// by a version's manifest is kept by a collection, seconds.
    pub content_grace_secs: u64,
    /// Collect every game's unreferenced chunks this often, seconds (0: only when asked,
    /// `volley content collect`).
    pub content_collect_every_secs: u64,
    /// This node's name in the cluster (presence, matches); unique per node.
    pub node_id: String,
    /// Key a studio's backend presents (`x-volley-server-key`) for server-to-server calls:
    /// custom-id login, match results, bans, content uploads. Those calls are refused when
    /// absent. Prefer the `VOLLEY_SERVER_KEY` environment variable to the flag: it keeps the key
    /// out of the process list.
    pub server_key: Option<String>,
    /// Token that `/metrics` on the API port asks for (`Authorization: Bearer <token>`). Without
    /// it, the API port serves `/metrics` only to loopback clients. Prefer
    /// `VOLLEY_METRICS_TOKEN` to the flag.
    pub metrics_token: Option<String>,
    /// A listener of its own for `/metrics` and `/healthz` (no token asked: keep it on a
    /// private network).
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the API over HTTPS. With `tls_cert` and `tls_key` (PEM files) that certificate;
    /// without them the node's own (the certificate whose fingerprint players pin).
    pub https: bool,
    /// PEM certificate chain for HTTPS (implies `https`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (implies `https`).
    pub tls_key: Option<PathBuf>,
    /// A request head must arrive within this many seconds, and a kept-alive connection
    /// waiting for its next request closes after it.
    pub http_header_timeout_secs: u64,
    /// A request body that sends nothing for this many seconds is refused.
    pub http_body_stall_secs: u64,
    /// Most HTTP connections open from one address.
    pub http_connections_per_address_max: usize,
    /// Most HTTP connections open in all.
    pub http_connections_max: usize,
    /// Most event WebSockets one player may hold open on this node.
    pub sockets_per_player_max: usize,
    /// Most event WebSockets open from one address on this node.
    pub sockets_per_address_max: usize,
    /// How long start-up waits for each external service (PostgreSQL, Redis, NATS) before it
    /// gives up with an error naming the service, seconds.
    pub connect_timeout_secs: u64,
    /// Session token lifetime.
    pub session_ttl_ms: u64,
    /// Argon2id memory cost, KiB (OWASP minimum 19456).
    pub argon2_m_kib: u32,
    /// Argon2id passes (OWASP: 2 at 19 MiB).
    pub argon2_t: u32,
    /// Login, register and refresh calls allowed per client address per second.
    pub logins_per_ip_per_s: f64,
    /// Burst of the above.
    pub logins_per_ip_burst: f64,
    /// Chat messages per second per sender.
    pub chat_per_s: f64,
    /// Burst of the above.
    pub chat_burst: f64,
    /// Matchmaker pools by name, a TOML table each (`[pools.duel]`): `min_players`,
    /// `max_players`, `fill_wait_ms` (how long a match below max_players waits for more), and
    /// two windows that widen with time in queue, `skill_window` (skill spread) and
    /// `latency_limit` (RTT ms to the match's region), each `{ initial = .., per_second = ..,
    /// max = .. }`. A pool not named here matches pairs (2 players) with the default widening.
    #[schemars(with = "std::collections::BTreeMap<String, serde_json::Value>")]
    pub pools: std::collections::BTreeMap<String, volley_match::PoolConfig>,
    /// Room logic (`mode`: `snapshot`, `snapshot-interest`, `rollback`) for matchmade rooms,
    /// by pool (`[pool_modes]` table: `duel = "rollback"`).
    pub pool_modes: std::collections::BTreeMap<String, String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("volley-data"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7350)),
            quic_addr: SocketAddr::from(([127, 0, 0, 1], 7351)),
            public_addr: None,
            ticket_lifetime_ms: 30_000,
            room_players_default: 8,
            room_players_max: 64,
            rooms_max: 10_000,
            rooms_reserved_for_matches_percent: 10,
            rooms_per_player_max: 8,
            swarms_per_player_max: 16,
            content_uploads_max: 8,
            players_max: 10_000,
            retry: RetryPolicy::Always,
            handshakes_before_retry: 64,
            handshakes_max: 4096,
            connects_per_ip_per_s: 20.0,
            connects_per_ip_burst: 40.0,
            hello_timeout_ms: 5_000,
            player_queue_frames_max: 4096,
            database: None,
            nats: None,
            redis: None,
            redis_prefix: "volley:".into(),
            cluster: "default".into(),
            content_max_kib_per_s: 0,
            content_peers: Vec::new(),
            content_grace_secs: 3_600,
            content_collect_every_secs: 0,
            node_id: "node-1".into(),
            server_key: None,
            connect_timeout_secs: 5,
            metrics_token: None,
            metrics_addr: None,
            https: false,
            tls_cert: None,
            tls_key: None,
            http_header_timeout_secs: 10,
            http_body_stall_secs: 10,
            http_connections_per_address_max: 128,
            http_connections_max: 16_384,
            sockets_per_player_max: 8,
            sockets_per_address_max: 256,
            session_ttl_ms: 3_600_000,
            argon2_m_kib: 19_456,
            argon2_t: 2,
            logins_per_ip_per_s: 5.0,
            logins_per_ip_burst: 20.0,
            chat_per_s: 2.0,
            chat_burst: 10.0,
            pools: Default::default(),
            pool_modes: Default::default(),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(String),
    /// The file could not be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl NodeConfig {
    /// The prefix of every Redis key this node writes: `<redis_prefix><cluster>:`.
    pub fn redis_keys(&self) -> String {
        format!("{}{}:", self.redis_prefix, self.cluster)
    }

    /// Rooms players may create between them: `rooms_max` less the matchmaker's share (at
    /// least one).
    pub fn rooms_for_players(&self) -> usize {
        let reserved = self.rooms_max * usize::from(self.rooms_reserved_for_matches_percent) / 100;
        self.rooms_max.saturating_sub(reserved).max(1)
    }

    /// Reads a TOML file; missing keys keep their defaults, unknown keys are errors.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Checks ranges, so a bad value fails at start with its name instead of misbehaving later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if !(1_000..=600_000).contains(&self.ticket_lifetime_ms) {
            return bad("ticket_lifetime_ms must be 1000..=600000 (tickets are short-lived)");
        }
        if self.room_players_max < 2
            || self.room_players_max as usize > volley_proto::msg::MAX_PEERS
        {
            return bad("room_players_max must be 2..=64");
        }
        if self.room_players_default < 2 || self.room_players_default > self.room_players_max {
            return bad("room_players_default must be 2..=room_players_max");
        }
        if !volley_store::bus::valid_cluster_name(&self.cluster) {
            return bad("cluster must be 1-32 of a-z, 0-9 and -");
        }
        if self.connects_per_ip_per_s <= 0.0 || self.connects_per_ip_burst < 1.0 {
            return bad("connects_per_ip_per_s must be > 0 and connects_per_ip_burst >= 1");
        }
        if self.rooms_reserved_for_matches_percent > 90
            || self.rooms_per_player_max == 0
            || self.swarms_per_player_max == 0
        {
            return bad(
                "rooms_reserved_for_matches_percent must be 0..=90, and rooms_per_player_max and swarms_per_player_max > 0",
            );
        }
        if self.rooms_max == 0 || self.players_max == 0 || self.handshakes_max == 0 {
            return bad("rooms_max, players_max and handshakes_max must be > 0");
        }
        if self.node_id.is_empty()
            || self.node_id.len() > 64
            || !self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("node_id must be 1-64 characters of [A-Za-z0-9_-]");
        }
        if self
            .content_peers
            .iter()
            .any(|p| !(p.starts_with("http://") || p.starts_with("https://")))
        {
            return bad("content_peers must be http:// or https:// URLs of other nodes");
        }
        if self.server_key.as_ref().is_some_and(|k| k.len() < 16) {
            return bad("server_key must be at least 16 characters");
        }
        if self.metrics_token.as_ref().is_some_and(|k| k.len() < 16) {
            return bad("metrics_token must be at least 16 characters");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together");
        }
        if [
            self.http_header_timeout_secs,
            self.http_body_stall_secs,
            self.http_connections_per_address_max as u64,
            self.http_connections_max as u64,
            self.sockets_per_player_max as u64,
            self.sockets_per_address_max as u64,
            self.content_uploads_max as u64,
        ]
        .contains(&0)
        {
            return bad("the http_*, sockets_* and content_uploads_max limits must be > 0");
        }
        if !(60_000..=30 * 86_400_000).contains(&self.session_ttl_ms) {
            return bad("session_ttl_ms must be 60000..=2592000000");
        }
        if self.logins_per_ip_per_s <= 0.0 || self.logins_per_ip_burst < 1.0 {
            return bad("logins_per_ip_per_s must be > 0 and logins_per_ip_burst >= 1");
        }
        if self.chat_per_s <= 0.0 || self.chat_burst < 1.0 {
            return bad("chat_per_s must be > 0 and chat_burst >= 1");
        }
        for (name, pool) in &self.pools {
            if pool.max_players > self.room_players_max || pool.min_players < 1 {
                return Err(ConfigError::Invalid(format!(
                    "pool {name:?}: players must be 1..=room_players_max ({})",
                    self.room_players_max
                )));
            }
        }
        if !(1..=300).contains(&self.connect_timeout_secs) {
            return bad("connect_timeout_secs must be 1..=300");
        }
        if self.argon2_m_kib < 8 || self.argon2_t == 0 {
            return bad("argon2_m_kib must be >= 8 and argon2_t >= 1");
        }
        if self.player_queue_frames_max < 16 {
            return bad("player_queue_frames_max must be >= 16");
        }
        Ok(())
    }
}
