//! What the HTTP API and the QUIC gate share: the configuration, the node's identity, and one
//! owner per concern (the room directory, admission, the content origin, the platform).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use volley_net::tls::Identity;
use volley_proto::ticket::TicketKey;
use volley_proto::PlayerId;

use crate::admission::Admission;
use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::origin::Origin;
use crate::rooms::Rooms;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// State shared by the HTTP API, the gate and the relay.
pub(crate) struct Shared {
    pub(crate) cfg: NodeConfig,
    /// The address tickets are bound to.
    pub(crate) public_addr: SocketAddr,
    pub(crate) identity: Identity,
    pub(crate) ticket_key: TicketKey,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) platform: volley_platform::Platform,
    pub(crate) rooms: Arc<Rooms>,
    /// The connect limiter and replay window (locked briefly, never across an await).
    pub(crate) admission: Mutex<Admission>,
    pub(crate) origin: Arc<Origin>,
    /// QUIC handshakes in progress.
    pub(crate) handshakes: AtomicUsize,
    /// Content uploads being read now (`content_uploads_max` permits).
    pub(crate) uploads: Arc<tokio::sync::Semaphore>,
    /// Open event WebSockets per player and per address on this node.
    pub(crate) sockets: Mutex<SocketCounts>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("public_addr", &self.public_addr)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The admission state (a poisoned lock is taken over: admission state stays consistent
    /// after any panic, as every update is a single insert or remove).
    pub(crate) fn admission(&self) -> std::sync::MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for an event socket of `player` from `ip`, within the per-player and
    /// per-address caps; the place is given back when the returned slot drops.
    pub(crate) fn ws_reserve(
        self: &Arc<Self>,
        player: PlayerId,
        ip: IpAddr,
    ) -> Result<SocketSlot, &'static str> {
        let mut c = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.players.get(&player).copied().unwrap_or(0);
        if mine >= self.cfg.sockets_per_player_max {
            return Err("this player has sockets_per_player_max event sockets open");
        }
        if c.addresses.get(&ip).copied().unwrap_or(0) >= self.cfg.sockets_per_address_max {
            return Err("this address has sockets_per_address_max event sockets open");
        }
        *c.players.entry(player).or_insert(0) += 1;
        *c.addresses.entry(ip).or_insert(0) += 1;
        Ok(SocketSlot {
            shared: self.clone(),
            player,
            ip,
            first: mine == 0,
            done: false,
        })
    }

    /// Drops expired replay entries and closes empty rooms.
    pub(crate) fn sweep(&self) {
        self.admission().sweep(unix_ms());
        self.rooms.sweep();
    }
}

/// Open event WebSockets on this node, per player and per source address.
#[derive(Debug, Default)]
pub(crate) struct SocketCounts {
    players: HashMap<PlayerId, usize>,
    addresses: HashMap<IpAddr, usize>,
}

/// One event socket's place in [`SocketCounts`], given back on drop.
pub(crate) struct SocketSlot {
    shared: Arc<Shared>,
    player: PlayerId,
    ip: IpAddr,
    /// Whether it is the player's first socket on this node (it comes online).
    pub(crate) first: bool,
    /// Given back already (by `release`).
    done: bool,
}

impl SocketSlot {
    /// Gives the place back; true if it was the player's last socket on this node.
    pub(crate) fn release(mut self) -> bool {
        self.done = true;
        self.give_back()
    }

    fn give_back(&self) -> bool {
        let mut c = self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let c = &mut *c;
        let last = down(&mut c.players, &self.player);
        down(&mut c.addresses, &self.ip);
        last
    }
}

/// Takes `k`'s count down by one, forgetting it at zero; true when it reached zero.
pub(crate) fn down<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: &K) -> bool {
    match m.get_mut(k) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            m.remove(k);
            true
        }
        None => false,
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        if !self.done {
            self.give_back();
        }
    }
}
