//! This node's room directory: creating rooms (for players and for the matchmaker), finding
//! them, and closing the empty ones. Rooms themselves are in [`crate::room`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use volley_proto::msg::PathKind;
use volley_proto::{PlayerId, RoomId};

use crate::logic::LogicFactory;
use crate::metrics::Metrics;
use crate::room::{Room, RoomRef};

/// How long a matchmade room waits for its first player.
const MATCH_ROOM_GRACE: Duration = Duration::from_secs(600);

/// Why a room was not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RoomError {
    /// The request asked for something this node cannot make.
    #[error("{0}")]
    Refused(String),
    /// The node hosts its maximum number of rooms (for players: all but the matchmaker's).
    #[error("this node hosts its maximum number of rooms")]
    Full,
    /// The player has as many open rooms as one player may.
    #[error("you have {0} open rooms, the most one player may; join or leave one first")]
    PlayerLimit(usize),
}

/// Who a room is made for.
#[derive(Debug, Clone)]
pub(crate) enum MadeFor {
    /// A player creating a room; counted against the player's share.
    Player(PlayerId),
    /// A match: only these players may join.
    Match(Vec<PlayerId>),
}

/// The limits rooms are made within.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoomLimits {
    /// Players per room when the creator does not say.
    pub(crate) players_default: u32,
    /// Most players a room may be made for.
    pub(crate) players_max: u32,
    /// Most rooms at once.
    pub(crate) rooms_max: usize,
    /// Of those, rooms players may create between them (the rest are the matchmaker's).
    pub(crate) for_players: usize,
    /// Most open rooms one player may have created.
    pub(crate) per_player_max: usize,
    /// How long a room nobody joined stays open.
    pub(crate) unused_grace: Duration,
}

/// The rooms of this node.
pub(crate) struct Rooms {
    table: Mutex<HashMap<RoomId, RoomRef>>,
    next: AtomicU64,
    limits: RoomLimits,
    logic: Option<Arc<dyn LogicFactory>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Rooms {
    pub(crate) fn new(
        limits: RoomLimits,
        logic: Option<Arc<dyn LogicFactory>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Rooms {
            table: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            limits,
            logic,
            metrics,
        }
    }

    /// The room `id`, if open.
    pub(crate) fn get(&self, id: RoomId) -> Option<RoomRef> {
        self.table.lock().ok()?.get(&id).cloned()
    }

    /// Makes a room for `max_players` (default when `None`) running `mode`'s logic, for the
    /// matchmaker (only `reserved` players may join) or for the player `creator`.
    pub(crate) fn make(
        &self,
        max_players: Option<u32>,
        mode: Option<&str>,
        made_for: MadeFor,
    ) -> Result<RoomRef, RoomError> {
        let max = max_players.unwrap_or(self.limits.players_default);
        if !(2..=self.limits.players_max).contains(&max) {
            return Err(RoomError::Refused(format!(
                "max_players must be 2..={}",
                self.limits.players_max
            )));
        }
        let mut rooms = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match &made_for {
            MadeFor::Match(_) => {
                if rooms.len() >= self.limits.rooms_max {
                    return Err(RoomError::Full);
                }
            }
            MadeFor::Player(creator) => {
                // Players share what the matchmaker does not keep for itself, and each holds
                // only a few rooms: one player can fill neither the node nor the matchmaker.
                let by_players = rooms.values().filter(|r| r.creator.is_some()).count();
                if by_players >= self.limits.for_players {
                    return Err(RoomError::Full);
                }
                let mine = rooms
                    .values()
                    .filter(|r| r.creator == Some(*creator))
                    .count();
                if mine >= self.limits.per_player_max {
                    return Err(RoomError::PlayerLimit(mine));
                }
            }
        }
        let logic = match (mode, &self.logic) {
            (None, _) => None,
            (Some(mode), Some(factory)) => Some(
                factory
                    .create(mode, max)
                    .map_err(|e| RoomError::Refused(format!("mode {mode:?}: {e}")))?,
            ),
            (Some(mode), None) => {
                return Err(RoomError::Refused(format!(
                    "this node runs no game logic (mode {mode:?})"
                )));
            }
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let creator = match &made_for {
            MadeFor::Player(p) => Some(*p),
            MadeFor::Match(_) => None,
        };
        let room = Arc::new(Room::new(id, max, creator));
        if let (Some(logic), Some(mode)) = (logic, mode) {
            let (tx, report) = crate::logic::spawn(&room, logic, self.metrics.clone());
            // dropped: a fresh room's cells are empty, so neither set can fail.
            let _ = room.logic.set((mode.to_owned(), tx, report));
        }
        if let MadeFor::Match(players) = made_for {
            // dropped: as above.
            let _ = room.reserved.set(players);
        }
        rooms.insert(id, room.clone());
        self.metrics
            .rooms
            .store(rooms.len() as u64, Ordering::Relaxed);
        Ok(room)
    }

    /// Players connected in every room.
    pub(crate) fn players_connected(&self) -> usize {
        self.table
            .lock()
            .map(|r| r.values().map(|room| room.len()).sum())
            .unwrap_or(0)
    }

    /// Peer pairs on a direct path and on the relay, over every room.
    pub(crate) fn path_counts(&self) -> (u64, u64) {
        let Ok(rooms) = self.table.lock() else {
            return (0, 0);
        };
        let (mut direct, mut relay) = (0, 0);
        for room in rooms.values() {
            if let Ok(paths) = room.paths.lock() {
                for (kind, _) in paths.values() {
                    match kind {
                        PathKind::Direct => direct += 1,
                        PathKind::Relay => relay += 1,
                    }
                }
            }
        }
        (direct, relay)
    }

    /// Closes rooms that are empty: used ones at once, never used ones after their grace.
    pub(crate) fn sweep(&self) {
        let Ok(mut rooms) = self.table.lock() else {
            return;
        };
        let grace = self.limits.unused_grace;
        rooms.retain(|_, r| {
            // A matchmade room waits longer: its players may be offline when it is made.
            let grace = if r.reserved.get().is_some() {
                grace.max(MATCH_ROOM_GRACE)
            } else {
                grace
            };
            r.len() > 0 || (!r.used.load(Ordering::Relaxed) && r.created.elapsed() < grace)
        });
        self.metrics
            .rooms
            .store(rooms.len() as u64, Ordering::Relaxed);
    }
}

/// Lets chat see who is in this node's rooms.
impl volley_platform::chat::RoomDirectory for Rooms {
    fn members(&self, room: u64) -> Option<Vec<u64>> {
        self.get(room).map(|r| r.player_ids())
    }
}

/// Makes rooms for the matchmaker.
#[derive(Debug)]
pub(crate) struct MatchRooms {
    pub(crate) rooms: std::sync::Weak<Rooms>,
    /// Room logic for matchmade rooms, by pool.
    pub(crate) pool_modes: std::collections::BTreeMap<String, String>,
}

impl volley_platform::matchmaking::RoomMaker for MatchRooms {
    fn make_room(&self, pool: &str, players: &[u64]) -> Result<u64, String> {
        let rooms = self.rooms.upgrade().ok_or("node is shutting down")?;
        let max = (players.len() as u32).max(2);
        let mode = self.pool_modes.get(pool).map(String::as_str);
        rooms
            .make(Some(max), mode, MadeFor::Match(players.to_vec()))
            .map(|r| r.id)
            .map_err(|e| e.to_string())
    }
}
