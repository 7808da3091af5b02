//! Rooms, their members, and the relay between members.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use volley_proto::msg::{PathKind, PeerInfo};
use volley_proto::ticket::NONCE_BYTES;
use volley_proto::{PlayerId, RoomId};

/// A connected player, as the room sees it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// What peers are told about this player.
    pub(crate) info: PeerInfo,
    /// The player's QUIC connection to the node.
    pub(crate) conn: quinn::Connection,
    /// Encoded control frames to write to the player, bounded.
    pub(crate) tx: mpsc::Sender<Vec<u8>>,
    /// The ticket nonce the player was admitted with.
    pub(crate) nonce: [u8; NONCE_BYTES],
}

/// A room: members and their reported paths. Locks are held only to copy out what is needed.
#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) id: RoomId,
    pub(crate) max_players: u32,
    pub(crate) created: Instant,
    pub(crate) members: Mutex<HashMap<PlayerId, Member>>,
    /// (from, to) → (path, rtt µs), as reported by `from`.
    pub(crate) paths: Mutex<HashMap<(PlayerId, PlayerId), (PathKind, u64)>>,
    /// Whether anyone ever joined (empty rooms that were used are closed at once; never-used
    /// rooms live until the reaper's grace period ends).
    pub(crate) used: std::sync::atomic::AtomicBool,
    /// The game logic's mode name, queue and report, when the room runs logic.
    pub(crate) logic: std::sync::OnceLock<(String, mpsc::Sender<LogicEvent>, Report)>,
    /// For a matchmade room: the only players who may join.
    pub(crate) reserved: std::sync::OnceLock<Vec<PlayerId>>,
    /// The player who created it (`None` for the matchmaker's rooms).
    pub(crate) creator: Option<PlayerId>,
}

impl Room {
    pub(crate) fn new(id: RoomId, max_players: u32, creator: Option<PlayerId>) -> Self {
        Room {
            id,
            max_players,
            created: Instant::now(),
            members: Mutex::new(HashMap::new()),
            paths: Mutex::new(HashMap::new()),
            used: std::sync::atomic::AtomicBool::new(false),
            logic: std::sync::OnceLock::new(),
            reserved: std::sync::OnceLock::new(),
            creator,
        }
    }

    pub(crate) fn member(&self, id: PlayerId) -> Option<Member> {
        self.members.lock().ok()?.get(&id).cloned()
    }

    pub(crate) fn others(&self, me: PlayerId) -> Vec<Member> {
        self.members
            .lock()
            .map(|m| {
                m.values()
                    .filter(|x| x.info.player_id != me)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn player_ids(&self) -> Vec<PlayerId> {
        let mut ids: Vec<_> = self
            .members
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    pub(crate) fn len(&self) -> usize {
        self.members.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Removes `id` if it is still the member admitted with `nonce` (a reconnect may already
    /// have replaced it). Returns whether it was removed.
    pub(crate) fn remove_if(&self, id: PlayerId, nonce: &[u8; NONCE_BYTES]) -> bool {
        let Ok(mut members) = self.members.lock() else {
            return false;
        };
        if members.get(&id).is_some_and(|m| &m.nonce == nonce) {
            members.remove(&id);
            if let Ok(mut paths) = self.paths.lock() {
                paths.retain(|(a, b), _| *a != id && *b != id);
            }
            return true;
        }
        false
    }

    /// Hands an event to the room's logic, if it has one; counts it when the queue is full.
    pub(crate) fn to_logic(&self, ev: LogicEvent, metrics: &crate::metrics::Metrics) {
        if let Some((_, tx, _)) = self.logic.get() {
            if tx.try_send(ev).is_err() {
                metrics
                    .logic_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn report_path(&self, from: PlayerId, to: PlayerId, path: PathKind, rtt_us: u64) {
        if let Ok(mut paths) = self.paths.lock() {
            // Bounded by members² (≤ 64²): reports for non-members are ignored.
            let known = self
                .members
                .lock()
                .map(|m| m.contains_key(&to))
                .unwrap_or(false);
            if known {
                paths.insert((from, to), (path, rtt_us));
            }
        }
    }
}

/// Shared handle to a room.
pub(crate) type RoomRef = Arc<Room>;

/// What the room task receives.
#[derive(Debug)]
pub(crate) enum LogicEvent {
    Join(PlayerId),
    Leave(PlayerId),
    Message {
        from: PlayerId,
        payload: Vec<u8>,
        reliable: bool,
    },
}

/// Shared between the room task and the HTTP API.
pub(crate) type Report = Arc<std::sync::Mutex<serde_json::Value>>;
