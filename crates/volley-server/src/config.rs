//! Node configuration: one struct with documented defaults. The binary maps a TOML file,
//! `VOLLEY_*` environment variables and flags onto it, in that order of precedence (flags win).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// When the node answers a new QUIC connection with a Retry (address validation) before doing
/// any handshake crypto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryPolicy {
    /// Every new connection is validated first. Costs one round trip at connect time and means
    /// no unvalidated source ever gets more bytes back than it sent.
    Always,
    /// Only when more than `handshakes_before_retry` handshakes are in progress.
    UnderLoad,
}

/// Everything a node can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Most connected players at once.
    pub players_max: usize,
    /// Retry policy for new QUIC connections.
    pub retry: RetryPolicy,
    /// With [`RetryPolicy::UnderLoad`]: handshakes in progress before Retry kicks in.
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
            players_max: 10_000,
            retry: RetryPolicy::Always,
            handshakes_before_retry: 64,
            handshakes_max: 4096,
            connects_per_ip_per_s: 20.0,
            connects_per_ip_burst: 40.0,
            hello_timeout_ms: 5_000,
            player_queue_frames_max: 4096,
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
        if self.connects_per_ip_per_s <= 0.0 || self.connects_per_ip_burst < 1.0 {
            return bad("connects_per_ip_per_s must be > 0 and connects_per_ip_burst >= 1");
        }
        if self.rooms_max == 0 || self.players_max == 0 || self.handshakes_max == 0 {
            return bad("rooms_max, players_max and handshakes_max must be > 0");
        }
        if self.player_queue_frames_max < 16 {
            return bad("player_queue_frames_max must be >= 16");
        }
        Ok(())
    }
}
