//! What the HTTP API and the QUIC gate share: the configuration, the node's identity, and one
//! owner per concern (the room directory, admission, the content origin, the platform).

use std::collections::HashMap;
use std::net::SocketAddr;
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
    /// Open event WebSockets per player on this node.
    pub(crate) sockets: Mutex<HashMap<PlayerId, usize>>,
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

    /// Counts an event socket opening; true if it is the player's first on this node.
    pub(crate) fn ws_open(&self, player: PlayerId) -> bool {
        let mut m = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(player).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts an event socket closing; true if it was the player's last on this node.
    pub(crate) fn ws_close(&self, player: PlayerId) -> bool {
        let mut m = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(&player) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                m.remove(&player);
                true
            }
            None => false,
        }
    }

    /// Drops expired replay entries and closes empty rooms.
    pub(crate) fn sweep(&self) {
        self.admission().sweep(unix_ms());
        self.rooms.sweep();
    }
}
