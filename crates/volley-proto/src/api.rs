//! JSON bodies of the node's HTTP API (`/v1/...`), shared by the server and the SDK so the SDK
//! never links server code.

use serde::{Deserialize, Serialize};

/// `POST /v1/auth/device`: log in (or sign up) with a device id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceLogin {
    /// A stable id the game generated for this device; 8-128 printable ASCII characters.
    pub device_id: String,
}

/// A session, returned by login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Opaque bearer token for `Authorization: Bearer ...`.
    pub token: String,
    /// The player's id.
    pub player_id: u64,
    /// Whether this login created the account.
    pub created: bool,
}

/// `POST /v1/rooms`: create a room.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// Most players; the node's default when absent.
    pub max_players: Option<u32>,
    /// Game logic the node runs for the room (e.g. `rollback`, `snapshot`); none when absent.
    #[serde(default)]
    pub mode: Option<String>,
}

/// A room as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room's id.
    pub room_id: u64,
    /// Most players.
    pub max_players: u32,
    /// Players connected now.
    pub players: Vec<u64>,
    /// Each player's last report of its path to each peer.
    pub paths: Vec<PathInfo>,
    /// The room's game logic, if any.
    #[serde(default)]
    pub mode: Option<String>,
    /// The logic's own report (stats, verdicts), refreshed about twice a second.
    #[serde(default)]
    pub logic: Option<serde_json::Value>,
}

/// One player's report of its path to one peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathInfo {
    /// The reporting player.
    pub from: u64,
    /// The peer.
    pub to: u64,
    /// `"direct"` or `"relay"`.
    pub path: String,
    /// Smoothed RTT, microseconds.
    pub rtt_us: u64,
}

/// `POST /v1/rooms/{id}/join`: ask for a connect ticket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRoom {
    /// Hex SHA-256 of the certificate the player's QUIC endpoint will present.
    pub fingerprint: String,
}

/// A connect ticket and where to use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinTicket {
    /// The room.
    pub room_id: u64,
    /// The player.
    pub player_id: u64,
    /// QUIC address of the node.
    pub node_addr: String,
    /// Hex fingerprint of the node's QUIC certificate: the client pins it.
    pub node_fingerprint: String,
    /// Hex of the sealed ticket.
    pub ticket: String,
    /// Milliseconds until the ticket expires.
    pub expires_in_ms: u64,
}

/// Every error body: a stable machine-readable code and a message for humans.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable code, e.g. `unauthorized`, `bad_request`, `not_found`, `room_full`.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}
