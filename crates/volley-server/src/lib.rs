//! The Volley node: HTTP API, QUIC gate, rooms and relay.
//!
//! [`Node::start`] binds the HTTP API and the QUIC endpoint and returns a [`NodeHandle`]. A player
//! logs in over HTTP, asks to join a room and receives a sealed connect ticket; it then connects
//! over QUIC, where the gate ([`gate`]) admits it only with a valid ticket, tells it about its
//! peers and relays for any pair of players without a direct path.
#![warn(missing_docs, unreachable_pub)]

pub mod config;
mod gate;
mod http;
pub mod logic;
pub mod metrics;
mod room;
mod store;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use sha2::Digest;
use volley_net::tls::Identity;
use volley_proto::ticket::{TicketKey, NONCE_BYTES};
use volley_proto::{Fingerprint, PlayerId, RoomId};

pub use config::{NodeConfig, RetryPolicy};
pub use metrics::Metrics;

use room::RoomRef;

/// Most entries in the per-source rate-limit table; when full, it is cleared (a flood of
/// spoofed sources then costs the attacker the same as before, and memory stays bounded).
const RATE_TABLE_MAX: usize = 65_536;
/// Most live sessions (login tokens).
const SESSIONS_MAX: usize = 1_000_000;

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The data directory could not be prepared.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What failed.
        message: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] volley_net::tls::TlsError),
}

#[derive(Debug, Default)]
struct Accounts {
    next_player: PlayerId,
    by_device: HashMap<String, PlayerId>,
    /// SHA-256 of the token → player. Tokens are never stored in the clear.
    sessions: HashMap<[u8; 32], PlayerId>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// State shared by the HTTP API, the gate and the relay.
struct Shared {
    cfg: NodeConfig,
    public_addr: SocketAddr,
    identity: Identity,
    ticket_key: TicketKey,
    metrics: Arc<Metrics>,
    logic: Option<Arc<dyn logic::LogicFactory>>,
    accounts: Mutex<Accounts>,
    rooms: Mutex<HashMap<RoomId, RoomRef>>,
    next_room: AtomicU64,
    /// Ticket nonce → (first address it was used from, expiry in Unix ms).
    replay: Mutex<HashMap<[u8; NONCE_BYTES], (SocketAddr, u64)>>,
    handshakes: AtomicUsize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn token_hash(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&sha2::Sha256::digest(token.as_bytes()));
    out
}

impl Shared {
    /// Token-bucket check for a new connection attempt from `ip`.
    fn allow_connect(&self, ip: IpAddr) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        if buckets.len() >= RATE_TABLE_MAX && !buckets.contains_key(&ip) {
            buckets.clear();
        }
        let now = Instant::now();
        let burst = self.cfg.connects_per_ip_burst;
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.cfg.connects_per_ip_per_s;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn login_device(&self, device_id: &str) -> Option<(String, PlayerId, bool)> {
        let mut accounts = self.accounts.lock().ok()?;
        if accounts.sessions.len() >= SESSIONS_MAX {
            return None;
        }
        let (player, created) = match accounts.by_device.get(device_id) {
            Some(p) => (*p, false),
            None => {
                accounts.next_player += 1;
                let p = accounts.next_player;
                accounts.by_device.insert(device_id.to_owned(), p);
                (p, true)
            }
        };
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = volley_proto::to_hex(&raw);
        accounts.sessions.insert(token_hash(&token), player);
        Some((token, player, created))
    }

    fn session_player(&self, token: &str) -> Option<PlayerId> {
        self.accounts
            .lock()
            .ok()?
            .sessions
            .get(&token_hash(token))
            .copied()
    }

    fn room(&self, id: RoomId) -> Option<RoomRef> {
        self.rooms.lock().ok()?.get(&id).cloned()
    }

    fn players_connected(&self) -> usize {
        self.rooms
            .lock()
            .map(|r| r.values().map(|room| room.len()).sum())
            .unwrap_or(0)
    }

    /// Drops expired replay entries and closes rooms that are empty (used ones at once, never
    /// used ones after twice the ticket lifetime).
    fn sweep(&self) {
        let now = unix_ms();
        if let Ok(mut replay) = self.replay.lock() {
            replay.retain(|_, (_, exp)| *exp > now);
        }
        let grace = Duration::from_millis(self.cfg.ticket_lifetime_ms * 2);
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.retain(|_, r| {
                r.len() > 0 || (!r.used.load(Ordering::Relaxed) && r.created.elapsed() < grace)
            });
            self.metrics
                .rooms
                .store(rooms.len() as u64, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("public_addr", &self.public_addr)
            .finish_non_exhaustive()
    }
}

/// A running node. Dropping it does not stop the node; call [`NodeHandle::shutdown`].
#[derive(Debug)]
pub struct NodeHandle {
    shared: Arc<Shared>,
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    /// Bound QUIC address.
    pub quic_addr: SocketAddr,
    endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NodeHandle {
    /// Fingerprint of the node's QUIC certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.shared.identity.fingerprint
    }

    /// The node's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The address tickets are bound to.
    pub fn public_addr(&self) -> SocketAddr {
        self.shared.public_addr
    }

    /// Players connected now.
    pub fn players_connected(&self) -> usize {
        self.shared.players_connected()
    }

    /// The ticket key (tests use it to mint tickets the node must refuse for other reasons).
    pub fn ticket_key(&self) -> TicketKey {
        self.shared.ticket_key.clone()
    }

    /// Closes every connection and stops the listeners.
    pub async fn shutdown(self) {
        self.endpoint.close(0u32.into(), b"node shutting down");
        for t in &self.tasks {
            t.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// The node.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Validates `cfg`, prepares the data directory (key and certificate are created on first
    /// run and reused after), binds HTTP and QUIC, and starts serving.
    pub async fn start(cfg: NodeConfig) -> Result<NodeHandle, StartError> {
        Node::start_with(cfg, None).await
    }

    /// Like [`Node::start`], with game logic that rooms can ask for by mode.
    pub async fn start_with(
        cfg: NodeConfig,
        logic: Option<Arc<dyn logic::LogicFactory>>,
    ) -> Result<NodeHandle, StartError> {
        cfg.validate()?;
        let stored = store::load_or_create(&cfg.data_dir)?;
        let server_cfg = gate::server_config(&stored.identity, &cfg)?;
        let socket =
            std::net::UdpSocket::bind(cfg.quic_addr).map_err(|source| StartError::Bind {
                addr: cfg.quic_addr,
                source,
            })?;
        let pe = volley_net::endpoint::bind_punch_endpoint_on(socket, Some(server_cfg)).map_err(
            |e| match e {
                volley_net::endpoint::EndpointError::Bind(source) => StartError::Bind {
                    addr: cfg.quic_addr,
                    source,
                },
                volley_net::endpoint::EndpointError::Tls(t) => StartError::Tls(t),
            },
        )?;
        let endpoint = pe.endpoint;
        let quic_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
            addr: cfg.quic_addr,
            source,
        })?;
        let public_addr = cfg.public_addr.unwrap_or(quic_addr);
        let listener = tokio::net::TcpListener::bind(cfg.http_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: cfg.http_addr,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: cfg.http_addr,
            source,
        })?;
        let shared = Arc::new(Shared {
            cfg,
            public_addr,
            identity: stored.identity,
            ticket_key: stored.ticket_key,
            metrics: Arc::new(Metrics::default()),
            logic,
            accounts: Mutex::new(Accounts::default()),
            rooms: Mutex::new(HashMap::new()),
            next_room: AtomicU64::new(1),
            replay: Mutex::new(HashMap::new()),
            handshakes: AtomicUsize::new(0),
            buckets: Mutex::new(HashMap::new()),
        });
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(gate::accept_loop(
            shared.clone(),
            endpoint.clone(),
        )));
        tasks.push(tokio::spawn(http::serve(shared.clone(), listener)));
        let sweeper = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                sweeper.sweep();
            }
        }));
        tracing::info!(%http_addr, %quic_addr, %public_addr, fingerprint = %shared.identity.fingerprint.to_hex(), "node started");
        Ok(NodeHandle {
            shared,
            http_addr,
            quic_addr,
            endpoint,
            tasks,
        })
    }
}
