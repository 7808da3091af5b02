//! Starting a node: the data directory, the listeners, the platform services and the
//! background tasks, wired together into a [`NodeHandle`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use volley_proto::ticket::TicketKey;
use volley_proto::Fingerprint;

use crate::admission::{Admission, AdmissionLimits};
use crate::config::NodeConfig;
use crate::logic::LogicFactory;
use crate::metrics::Metrics;
use crate::origin::{Origin, OriginConfig};
use crate::rooms::{MatchRooms, RoomLimits, Rooms};
use crate::start::{open_platform, StartError};
use crate::state::Shared;
use crate::{gate, http, origin, store};

/// How often the matchmaker runs.
const MATCHMAKER_PERIOD: Duration = Duration::from_millis(200);

/// A running node. Dropping it does not stop the node; call [`NodeHandle::shutdown`].
#[derive(Debug)]
pub struct NodeHandle {
    shared: Arc<Shared>,
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    /// Whether the API is served over HTTPS.
    pub https: bool,
    /// Bound address of the metrics listener, if one was asked for.
    pub metrics_addr: Option<SocketAddr>,
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
        self.shared.rooms.players_connected()
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
        if tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::debug!("shutdown: connections still closing after 2 s; leaving them");
        }
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
        logic: Option<Arc<dyn LogicFactory>>,
    ) -> Result<NodeHandle, StartError> {
        cfg.validate()?;
        if cfg.server_key.is_none() {
            tracing::warn!(
                "no server key: calls from the game's servers (custom-id login, match results, \
                 scores, grants, bans, content uploads) will be refused; set one of at least 16 \
                 characters in VOLLEY_SERVER_KEY (which keeps it out of the process list) or \
                 with --server-key"
            );
        }
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
        let tls = http::tls_acceptor(&cfg, &stored.identity).map_err(StartError::Https)?;
        let metrics_listener = match cfg.metrics_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr().map_err(|source| StartError::Bind {
                addr: cfg.http_addr,
                source,
            })?),
            None => None,
        };
        let platform = open_platform(&cfg).await?;
        let metrics = Arc::new(Metrics::default());
        let rooms = Arc::new(Rooms::new(
            RoomLimits {
                players_default: cfg.room_players_default,
                players_max: cfg.room_players_max,
                rooms_max: cfg.rooms_max,
                for_players: cfg.rooms_for_players(),
                per_player_max: cfg.rooms_per_player_max,
                unused_grace: Duration::from_millis(cfg.ticket_lifetime_ms * 2),
            },
            logic,
            metrics.clone(),
        ));
        platform.set_room_directory(rooms.clone());
        platform.set_room_maker(Arc::new(MatchRooms {
            rooms: Arc::downgrade(&rooms),
            pool_modes: cfg.pool_modes.clone(),
        }));
        let tracker_cfg = volley_content::tracker::TrackerConfig {
            max_swarms_per_peer: cfg.swarms_per_player_max,
            ..Default::default()
        };
        let tracker = match &cfg.redis {
            Some(url) => origin::tracker::SwarmTracker::redis(url, &cfg.redis_keys(), tracker_cfg)
                .await
                .map_err(|e| StartError::Platform(format!("redis (tracker): {e}")))?,
            None => origin::tracker::SwarmTracker::memory(tracker_cfg),
        };
        let origin = Origin::start(
            OriginConfig {
                root: cfg.data_dir.join("content"),
                grace: Duration::from_secs(cfg.content_grace_secs),
                peers: cfg.content_peers.clone(),
                upload_bytes_per_s: cfg.content_max_kib_per_s.saturating_mul(1024),
            },
            tracker,
            platform.bus().clone(),
            metrics.clone(),
        )
        .map_err(StartError::Platform)?;
        let admission = Admission::new(
            stored.ticket_key.clone(),
            public_addr,
            AdmissionLimits {
                connects_per_ip_per_s: cfg.connects_per_ip_per_s,
                connects_per_ip_burst: cfg.connects_per_ip_burst,
            },
        );
        let uploads = Arc::new(tokio::sync::Semaphore::new(cfg.content_uploads_max));
        let shared = Arc::new(Shared {
            cfg,
            public_addr,
            identity: stored.identity,
            ticket_key: stored.ticket_key,
            metrics,
            platform,
            rooms,
            admission: std::sync::Mutex::new(admission),
            origin,
            handshakes: std::sync::atomic::AtomicUsize::new(0),
            sockets: std::sync::Mutex::default(),
            uploads,
        });
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
        let https = tls.is_some();
        tasks.push(tokio::spawn(http::serve(shared.clone(), listener, tls)));
        if let Some(l) = metrics_listener {
            tasks.push(tokio::spawn(http::serve_metrics(shared.clone(), l)));
        }
        if shared.origin.has_peers() {
            // Subscribed before the node reports started, so no announcement after that is missed.
            match shared
                .platform
                .bus()
                .subscribe(origin::cluster::PUBLISHED_SUBJECT)
                .await
            {
                Ok(sub) => tasks.push(tokio::spawn(origin::cluster::follow_announcements(
                    Arc::downgrade(&shared.origin),
                    sub,
                ))),
                Err(e) => {
                    tracing::warn!(error = %e, "content: cannot follow version announcements")
                }
            }
        }
        if shared.cfg.content_collect_every_secs > 0 {
            tasks.push(tokio::spawn(origin::versions::collect_periodically(
                Arc::downgrade(&shared.origin),
                Duration::from_secs(shared.cfg.content_collect_every_secs),
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
        tracing::info!(%http_addr, https, ?metrics_addr, %quic_addr, %public_addr, fingerprint = %shared.identity.fingerprint.to_hex(), "node started");
        Ok(NodeHandle {
            shared,
            http_addr,
            https,
            metrics_addr,
            quic_addr,
            endpoint,
            tasks,
        })
    }
}
