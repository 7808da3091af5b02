//! The Volley node: HTTP API, QUIC gate, rooms and relay.
//!
//! [`Node::start`] binds the HTTP API and the QUIC endpoint and returns a [`NodeHandle`]. A player
//! logs in over HTTP, asks to join a room and receives a sealed connect ticket; it then connects
//! over QUIC, where the gate ([`gate`]) admits it only with a valid ticket, tells it about its
//! peers and relays for any pair of players without a direct path.
#![warn(missing_docs, unreachable_pub)]

mod api;
pub mod config;
mod content;
mod gate;
mod http;
pub mod logic;
pub mod metrics;
pub mod modes;
mod openapi;
mod room;
mod store;
mod swarm_tracker;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use volley_net::tls::Identity;
use volley_proto::ticket::{TicketKey, NONCE_BYTES};
use volley_proto::{Fingerprint, PlayerId, RoomId};

pub use config::{NodeConfig, RetryPolicy};
pub use metrics::Metrics;

use room::RoomRef;

/// Most entries in the per-source rate-limit table; when full, it is cleared (a flood of
/// spoofed sources then costs the attacker the same as before, and memory stays bounded).
const RATE_TABLE_MAX: usize = 65_536;
/// How long a matchmade room waits for its first player.
const MATCH_ROOM_GRACE: Duration = Duration::from_secs(600);
/// How often the matchmaker runs.
const MATCHMAKER_PERIOD: Duration = Duration::from_millis(200);

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
    /// The database or the bus could not be opened.
    #[error(transparent)]
    Store(#[from] volley_store::StoreError),
    /// The platform services could not start.
    #[error("platform: {0}")]
    Platform(String),
}

type RoomTable = Arc<Mutex<HashMap<RoomId, RoomRef>>>;

/// Lets chat see who is in this node's rooms.
#[derive(Debug)]
struct Rooms(RoomTable);

impl volley_platform::chat::RoomDirectory for Rooms {
    fn members(&self, room: u64) -> Option<Vec<u64>> {
        self.0.lock().ok()?.get(&room).map(|r| r.player_ids())
    }
}

/// Makes rooms for the matchmaker.
#[derive(Debug)]
struct MatchRooms(std::sync::Weak<Shared>);

impl volley_platform::matchmaking::RoomMaker for MatchRooms {
    fn make_room(&self, pool: &str, players: &[u64]) -> Result<u64, String> {
        let shared = self.0.upgrade().ok_or("node is shutting down")?;
        let max = (players.len() as u32).max(2);
        let mode = shared.cfg.pool_modes.get(pool).map(String::as_str);
        http::make_room(&shared, Some(max), mode, Some(players.to_vec()))
            .map(|r| r.id)
            .map_err(|e| e.2)
    }
}

/// Opens the database (SQLite in the data directory unless `database` names one), the bus
/// (NATS when `nats` is set) and the platform services over them.
async fn open_platform(
    cfg: &NodeConfig,
) -> Result<(volley_platform::Platform, RoomTable), StartError> {
    let db = match &cfg.database {
        Some(url) => volley_store::Db::open(url).await?,
        None => volley_store::Db::open_sqlite(&cfg.data_dir.join("volley.db")).await?,
    };
    let bus = match &cfg.nats {
        Some(url) => volley_store::Bus::nats(url).await?,
        None => volley_store::Bus::local(),
    };
    let pcfg = volley_platform::PlatformConfig {
        node_id: cfg.node_id.clone(),
        server_key: cfg.server_key.clone().unwrap_or_default(),
        session_ttl_ms: cfg.session_ttl_ms as i64,
        argon2_m_kib: cfg.argon2_m_kib,
        argon2_t: cfg.argon2_t,
        login_per_ip_per_s: cfg.logins_per_ip_per_s,
        login_per_ip_burst: cfg.logins_per_ip_burst,
        chat_per_s: cfg.chat_per_s,
        chat_burst: cfg.chat_burst,
        matchmaker: volley_match::MatchmakerConfig {
            pools: cfg.pools.clone(),
            default_pool: Some(volley_match::PoolConfig::new(2, 2)),
            ..volley_match::MatchmakerConfig::default()
        },
        ..volley_platform::PlatformConfig::default()
    };
    let platform = volley_platform::Platform::new(db, bus, pcfg)
        .map_err(|e| StartError::Platform(e.to_string()))?;
    platform
        .clear_node_presence()
        .await
        .map_err(|e| StartError::Platform(e.to_string()))?;
    if let Some(url) = &cfg.redis {
        platform
            .use_redis(url, &cfg.redis_prefix)
            .await
            .map_err(|e| StartError::Platform(format!("redis: {e}")))?;
    }
    let rooms: RoomTable = Arc::new(Mutex::new(HashMap::new()));
    platform.set_room_directory(Arc::new(Rooms(rooms.clone())));
    Ok((platform, rooms))
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
    platform: volley_platform::Platform,
    rooms: Arc<Mutex<HashMap<RoomId, RoomRef>>>,
    next_room: AtomicU64,
    /// Ticket nonce → (first address it was used from, expiry in Unix ms).
    replay: Mutex<HashMap<[u8; NONCE_BYTES], (SocketAddr, u64)>>,
    handshakes: AtomicUsize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// Open event WebSockets per player on this node.
    sockets: Mutex<HashMap<PlayerId, usize>>,
    /// Content swarms: which players hold which build (this node's announces, or the
    /// cluster's in Redis).
    tracker: swarm_tracker::SwarmTracker,
    /// The origin's upload cap for chunks.
    content_pace: volley_content::pace::Pace,
    /// Each game's chunk store, opened on first use (opening reads its index).
    content_stores: Mutex<HashMap<String, Arc<volley_content::pack::PackStore>>>,
    /// Pulls content from the other nodes of the cluster (`content_peers`).
    content_http: reqwest::Client,
    /// Pulled chunks on their way into the store (written behind, in batches).
    content_keep: tokio::sync::mpsc::Sender<content::Pulled>,
    /// Versions (`game/version`) whose chunks this node is pulling in the background.
    content_prefetching: Mutex<std::collections::HashSet<String>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

    /// Counts an event socket opening; true if it is the player's first on this node.
    fn ws_open(&self, player: PlayerId) -> bool {
        let Ok(mut m) = self.sockets.lock() else {
            return false;
        };
        let n = m.entry(player).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts an event socket closing; true if it was the player's last on this node.
    fn ws_close(&self, player: PlayerId) -> bool {
        let Ok(mut m) = self.sockets.lock() else {
            return false;
        };
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

    /// The platform services (accounts, social, chat, matchmaking) this node serves.
    pub fn platform(&self) -> &volley_platform::Platform {
        &self.shared.platform
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
        let (platform, rooms) = open_platform(&cfg).await?;
        let content_pace = volley_content::pace::Pace::new(cfg.content_upload_bytes_per_s);
        let tracker = match &cfg.redis {
            Some(url) => {
                swarm_tracker::SwarmTracker::redis(url, &cfg.redis_prefix, Default::default())
                    .await
                    .map_err(|e| StartError::Platform(format!("redis (tracker): {e}")))?
            }
            None => swarm_tracker::SwarmTracker::memory(Default::default()),
        };
        let (content_keep, kept) = tokio::sync::mpsc::channel(content::KEEP_QUEUE);
        let shared = Arc::new(Shared {
            cfg,
            public_addr,
            identity: stored.identity,
            ticket_key: stored.ticket_key,
            metrics: Arc::new(Metrics::default()),
            logic,
            platform,
            rooms,
            next_room: AtomicU64::new(1),
            replay: Mutex::new(HashMap::new()),
            handshakes: AtomicUsize::new(0),
            buckets: Mutex::new(HashMap::new()),
            sockets: Mutex::new(HashMap::new()),
            tracker,
            content_pace,
            content_stores: Mutex::new(HashMap::new()),
            content_http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| StartError::Platform(format!("http client: {e}")))?,
            content_keep,
            content_prefetching: Mutex::new(std::collections::HashSet::new()),
        });
        tokio::spawn(content::keep_pulled(Arc::downgrade(&shared), kept));
        shared
            .platform
            .set_room_maker(Arc::new(MatchRooms(Arc::downgrade(&shared))));
        match shared.platform.reload_tickets().await {
            Ok(n) if n > 0 => tracing::info!(tickets = n, "matchmaker queue reloaded"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not reload matchmaker tickets"),
        }
        let mut tasks = Vec::new();
        let seasons = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = seasons
                    .platform
                    .run_season_resets(volley_platform::now_ms())
                    .await
                {
                    tracing::warn!(error = %e, "season resets failed");
                }
            }
        }));
        let mm = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(MATCHMAKER_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = mm.platform.run_matchmaker(volley_platform::now_ms()).await {
                    tracing::warn!(error = %e, "matchmaker pass failed");
                }
            }
        }));
        tasks.push(tokio::spawn(gate::accept_loop(
            shared.clone(),
            endpoint.clone(),
        )));
        tasks.push(tokio::spawn(http::serve(shared.clone(), listener)));
        if !shared.cfg.content_peers.is_empty() {
            // Subscribed before the node reports started, so no announcement after that is missed.
            match shared
                .platform
                .bus()
                .subscribe(content::PUBLISHED_SUBJECT)
                .await
            {
                Ok(sub) => tasks.push(tokio::spawn(content::follow_announcements(
                    Arc::downgrade(&shared),
                    sub,
                ))),
                Err(e) => {
                    tracing::warn!(error = %e, "content: cannot follow version announcements")
                }
            }
        }
        if shared.cfg.content_collect_every_ms > 0 {
            tasks.push(tokio::spawn(content::collect_periodically(
                Arc::downgrade(&shared),
                Duration::from_millis(shared.cfg.content_collect_every_ms),
            )));
        }
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
