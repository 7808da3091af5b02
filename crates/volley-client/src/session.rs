//! A player's session in a room: the node connection, the peer links and their paths.
//!
//! One lock (`State`) guards every peer link; it is never held across an `await`. Tasks feed it:
//! the node's control stream and datagrams, each direct connection's stream and datagrams, the
//! punch socket's probes, and a ticker that pings, acknowledges, punches and switches paths.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use volley_net::endpoint::{self, PunchEndpoint, TransportTuning};
use volley_net::framing::read_frame;
use volley_net::link::{LinkLimits, ReliableReceiver, ReliableSender};
use volley_net::path::{PathConfig, PathMonitor};
use volley_net::socket::{ProbeSender, ReceivedProbe};
use volley_net::tls::{Identity, Pin};
use volley_proto::api::JoinTicket;
use volley_proto::msg::{
    Down, NodeDatagram, PathKind, PeerDatagram, PeerFrame, PeerInfo, Probe, Up,
    MAX_UNRELIABLE_PAYLOAD_BYTES,
};
use volley_proto::{Fingerprint, PlayerId, RoomId};

use crate::Error;

/// Bytes a direct connection's opener writes first, so the acceptor sees the stream at once.
const DIRECT_PREAMBLE: &[u8; 4] = b"VLYD";
/// Received messages the game has not read yet, in bytes. Past it, unreliable messages are
/// dropped and reliable ones are no longer acknowledged, so senders slow down instead of this
/// queue growing without end.
const EVENT_QUEUE_BYTES_MAX: usize = 64 << 20;
/// RTT samples kept per peer for percentiles.
const RTT_SAMPLES_MAX: usize = 8192;
/// Handshake budget for a direct connection.
const DIRECT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// SDK settings. Defaults suit a game on a real network.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Local address of the player's UDP socket (QUIC and punching share it).
    pub bind_addr: SocketAddr,
    /// Try direct paths. When false every peer link uses the relay.
    pub direct: bool,
    /// Liveness and ping settings for direct paths.
    pub path: PathConfig,
    /// Ping interval on the relay path. The node connection's own liveness covers the relay, so
    /// these pings only measure RTT, and they cost node bandwidth: keep them sparse.
    pub relay_ping_interval: Duration,
    /// How long one punching attempt lasts.
    pub punch_duration: Duration,
    /// Gap between probes while punching.
    pub probe_interval: Duration,
    /// First wait before punching again after a failure or a lost direct path; doubles up to
    /// `repunch_max`.
    pub repunch_after: Duration,
    /// Longest wait between punching attempts.
    pub repunch_max: Duration,
    /// Period of the ticker that pings, acknowledges and switches paths.
    pub tick: Duration,
    /// How often path reports go to the node.
    pub report_interval: Duration,
    /// Reliable window limits per peer.
    pub link: LinkLimits,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bind_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            direct: true,
            path: PathConfig::default(),
            relay_ping_interval: Duration::from_millis(250),
            punch_duration: Duration::from_secs(3),
            probe_interval: Duration::from_millis(20),
            repunch_after: Duration::from_secs(2),
            repunch_max: Duration::from_secs(30),
            tick: Duration::from_millis(10),
            report_interval: Duration::from_secs(1),
            link: LinkLimits::default(),
        }
    }
}

/// Something that happened in the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer entered the room.
    PeerJoined(PlayerId),
    /// A peer left the room.
    PeerLeft(PlayerId),
    /// A peer link moved to another path.
    PathChanged {
        /// The peer.
        peer: PlayerId,
        /// The new path.
        path: PathKind,
    },
    /// A reliable message, in order, exactly once.
    Reliable {
        /// Sender.
        from: PlayerId,
        /// The game's bytes.
        payload: Vec<u8>,
    },
    /// An unreliable message.
    Unreliable {
        /// Sender.
        from: PlayerId,
        /// The game's bytes.
        payload: Vec<u8>,
    },
    /// A message from the room's game logic on the node.
    FromNode {
        /// The game's bytes.
        payload: Vec<u8>,
        /// Whether it came on the reliable channel.
        reliable: bool,
    },
    /// The node connection ended; the session is over.
    Closed {
        /// Why.
        reason: String,
    },
}

/// The node connection as QUIC sees it, and what the session dropped on it.
#[derive(Debug, Clone, Copy)]
pub struct NodeQuality {
    /// Smoothed RTT, milliseconds.
    pub rtt_ms: f64,
    /// Congestion window.
    pub congestion_window_bytes: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// UDP bytes sent.
    pub sent_bytes: u64,
    /// UDP bytes received.
    pub received_bytes: u64,
    /// Control messages (path reports, punch requests) not sent because the writer of the
    /// node's stream had ended (the connection is closing).
    pub control_unsent_stream_closed: u64,
    /// Datagrams from the node that did not decode, or of a kind the node never sends.
    pub datagrams_malformed: u64,
    /// Unreliable messages from the room's game logic dropped because the game's event queue
    /// was over its limit.
    pub from_node_dropped_queue_full: u64,
    /// Frames and datagrams from players not (or no longer) in the room.
    pub from_unknown_peers: u64,
}

/// A peer link's state, cheap to poll every frame.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// The peer.
    pub player_id: PlayerId,
    /// Path in use.
    pub path: PathKind,
    /// Smoothed RTT on the path in use, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Median of recent RTT samples, milliseconds.
    pub rtt_ms_p50: Option<f64>,
    /// 99th percentile of recent RTT samples, milliseconds.
    pub rtt_ms_p99: Option<f64>,
    /// RTT variation on the path in use, milliseconds.
    pub jitter_ms: f64,
    /// Fraction of recent pings lost on the path in use.
    pub loss: f64,
    /// Reliable messages sent.
    pub reliable_sent: u64,
    /// Reliable messages delivered.
    pub reliable_received: u64,
    /// Unreliable messages sent.
    pub unreliable_sent: u64,
    /// Unreliable messages delivered.
    pub unreliable_received: u64,
    /// Payload bytes sent (both channels).
    pub bytes_sent: u64,
    /// Payload bytes received (both channels).
    pub bytes_received: u64,
    /// Reliable bytes sent but not yet acknowledged (queued).
    pub unacked_bytes: usize,
    /// Payload bytes sent per second over the last full second.
    pub send_bytes_per_s: f64,
    /// Payload bytes received per second over the last full second.
    pub recv_bytes_per_s: f64,
    /// Path changes so far.
    pub path_changes: u64,
    /// Time from learning of the peer to the first direct path, if one formed.
    pub direct_after_ms: Option<f64>,
    /// Unreliable messages from the peer dropped because the game's event queue was over its
    /// limit.
    pub unreliable_dropped_queue_full: u64,
    /// Reliable frames from the peer that did not decode.
    pub frames_malformed: u64,
    /// Reliable frames from the peer refused for being far beyond the receive window.
    pub frames_refused_beyond_window: u64,
    /// Datagrams from the peer that did not decode.
    pub datagrams_malformed: u64,
    /// Reliable frames not handed to a stream because its writer (the direct connection's or
    /// the node's) had ended. They stay unacknowledged and go again when the path changes.
    pub frames_unsent_stream_closed: u64,
    /// Datagrams (messages, pings, pongs, acks) larger than the path's datagram size.
    pub datagrams_unsent_too_large: u64,
    /// Datagrams QUIC refused because the connection was lost or does not take datagrams.
    pub datagrams_unsent_link_down: u64,
    /// Punch probes the socket did not send (an I/O error, e.g. no route to the candidate).
    pub probes_unsent_io_error: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct(usize),
    Relay,
}

#[derive(Debug)]
struct Direct {
    conn: quinn::Connection,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    mon: PathMonitor,
}

#[derive(Debug)]
struct Punch {
    until: Duration,
    next_probe: Duration,
}

#[derive(Debug, Default)]
struct Stats {
    rtts_us: VecDeque<u64>,
    reliable_sent: u64,
    reliable_received: u64,
    unreliable_sent: u64,
    unreliable_received: u64,
    bytes_sent: u64,
    bytes_received: u64,
    path_changes: u64,
    direct_after: Option<Duration>,
    /// Start of the current rate window and the byte counters at that moment.
    window: (Duration, u64, u64),
    /// Rates measured over the last complete window.
    rates: (f64, f64),
    unreliable_dropped_queue_full: u64,
    frames_malformed: u64,
    frames_refused_beyond_window: u64,
    datagrams_malformed: u64,
    frames_unsent_stream_closed: u64,
    datagrams_unsent_too_large: u64,
    datagrams_unsent_link_down: u64,
    probes_unsent_io_error: u64,
}

/// What the session dropped on the node connection (see [`NodeQuality`]).
#[derive(Debug, Default)]
struct NodeDrops {
    control_unsent_stream_closed: AtomicU64,
    datagrams_malformed: AtomicU64,
    from_node_dropped_queue_full: AtomicU64,
    from_unknown_peers: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    // Relaxed: statistics; nobody synchronizes on them.
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// Counts a datagram QUIC refused, by why.
    fn datagram_unsent(&mut self, e: &quinn::SendDatagramError) {
        use quinn::SendDatagramError as E;
        match e {
            E::TooLarge => self.datagrams_unsent_too_large += 1,
            E::ConnectionLost(_) | E::UnsupportedByPeer | E::Disabled => {
                self.datagrams_unsent_link_down += 1
            }
        }
    }

    /// Closes the rate window once a second has passed.
    fn roll_rates(&mut self, now: Duration) {
        let (t0, sent0, recv0) = self.window;
        let span = now.saturating_sub(t0);
        if span >= Duration::from_secs(1) {
            let secs = span.as_secs_f64();
            self.rates = (
                (self.bytes_sent - sent0) as f64 / secs,
                (self.bytes_received - recv0) as f64 / secs,
            );
            self.window = (now, self.bytes_sent, self.bytes_received);
        }
    }
}

#[derive(Debug)]
struct Peer {
    info: PeerInfo,
    sender: ReliableSender,
    receiver: ReliableReceiver,
    path: PathKind,
    direct: Option<Direct>,
    relay_mon: PathMonitor,
    punch: Option<Punch>,
    /// Source address a probe from this peer last came from (its peer-reflexive address).
    seen_at: Option<SocketAddr>,
    dialing: bool,
    repunch_at: Duration,
    repunch_backoff: Duration,
    ack_due: bool,
    last_ack_at: Duration,
    last_report_at: Option<Duration>,
    reported: Option<PathKind>,
    joined_at: Duration,
    stats: Stats,
}

#[derive(Debug, Default)]
struct State {
    peers: HashMap<PlayerId, Peer>,
}

#[derive(Debug)]
struct Shared {
    cfg: ClientConfig,
    me: PlayerId,
    room_id: RoomId,
    identity: Identity,
    endpoint: quinn::Endpoint,
    probes_out: ProbeSender,
    node: quinn::Connection,
    node_tx: mpsc::UnboundedSender<Vec<u8>>,
    events: mpsc::UnboundedSender<Event>,
    event_bytes: AtomicUsize,
    epoch: Instant,
    state: Mutex<State>,
    closed: AtomicBool,
    drops: NodeDrops,
}

/// The player's QUIC endpoint and certificate, before joining.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    identity: Identity,
    pe: PunchEndpoint,
}

impl Client {
    /// Creates the player's identity and binds its endpoint (inside a tokio runtime).
    pub fn new(cfg: ClientConfig) -> Result<Self, Error> {
        let socket = std::net::UdpSocket::bind(cfg.bind_addr)
            .map_err(|e| Error::Endpoint(endpoint::EndpointError::Bind(e)))?;
        Client::with_socket(cfg, socket)
    }

    /// Like [`Client::new`] on a socket the caller bound (e.g. inside a network namespace).
    pub fn with_socket(cfg: ClientConfig, socket: std::net::UdpSocket) -> Result<Self, Error> {
        let identity = Identity::generate("volley-player")?;
        Client::with_socket_and_identity(cfg, socket, identity)
    }

    /// Like [`Client::new`] with a certificate the game kept (e.g. to reconnect as itself).
    pub fn with_identity(cfg: ClientConfig, identity: Identity) -> Result<Self, Error> {
        let socket = std::net::UdpSocket::bind(cfg.bind_addr)
            .map_err(|e| Error::Endpoint(endpoint::EndpointError::Bind(e)))?;
        Client::with_socket_and_identity(cfg, socket, identity)
    }

    fn with_socket_and_identity(
        cfg: ClientConfig,
        socket: std::net::UdpSocket,
        identity: Identity,
    ) -> Result<Self, Error> {
        let server =
            endpoint::server_config(&identity, Pin::AnyVerifiedKey, &TransportTuning::direct())?;
        let pe = endpoint::bind_punch_endpoint_on(socket, Some(server))?;
        Ok(Client { cfg, identity, pe })
    }

    /// The fingerprint to ask a ticket for.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint
    }

    /// The endpoint's local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.pe.endpoint.local_addr().ok()
    }

    /// Connects to the node named in `ticket`, presents it, and starts the session.
    pub async fn join(self, ticket: &JoinTicket) -> Result<Session, Error> {
        let node_addr: SocketAddr = ticket
            .node_addr
            .parse()
            .map_err(|_| Error::Ticket(format!("node address {:?}", ticket.node_addr)))?;
        let node_fp = Fingerprint::from_hex(&ticket.node_fingerprint)
            .map_err(|e| Error::Ticket(format!("node fingerprint: {e}")))?;
        let sealed = volley_proto::from_hex(&ticket.ticket, volley_proto::msg::MAX_TICKET_BYTES)
            .map_err(|e| Error::Ticket(e.to_string()))?;
        let cc =
            endpoint::client_config(&self.identity, Pin::One(node_fp), &TransportTuning::node())?;
        let connecting = self
            .pe
            .endpoint
            .connect_with(cc, node_addr, "volley-node")
            .map_err(|e| Error::Connection(e.to_string()))?;
        let node = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| Error::Connection("timed out connecting to the node".into()))?
            .map_err(|e| Error::Connection(e.to_string()))?;
        let (mut send, mut recv) = node
            .open_bi()
            .await
            .map_err(|e| Error::Connection(e.to_string()))?;
        let local = self.pe.endpoint.local_addr().ok();
        let local_addrs = local
            .filter(|a| !a.ip().is_unspecified())
            .into_iter()
            .collect();
        send.write_all(
            &Up::Hello {
                ticket: sealed,
                local_addrs,
            }
            .encode(),
        )
        .await
        .map_err(|e| Error::Connection(e.to_string()))?;
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv, &mut buf))
            .await
            .map_err(|_| Error::Connection("no answer to hello".into()))?
            .map_err(|e| Error::Connection(e.to_string()))?;
        let (me, room_id, peers) = match Down::decode(&buf) {
            Ok(Down::Welcome {
                player_id,
                room_id,
                peers,
                ..
            }) => (player_id, room_id, peers),
            Ok(Down::Reject { code, detail }) => return Err(Error::Rejected { code, detail }),
            Ok(other) => {
                return Err(Error::Connection(format!(
                    "unexpected first frame {other:?}"
                )))
            }
            Err(e) => return Err(Error::Connection(e.to_string())),
        };
        let (node_tx, node_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            cfg: self.cfg,
            me,
            room_id,
            identity: self.identity,
            endpoint: self.pe.endpoint.clone(),
            probes_out: self.pe.probes_out,
            node: node.clone(),
            node_tx,
            events: events_tx,
            event_bytes: AtomicUsize::new(0),
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            drops: NodeDrops::default(),
        });
        for p in peers {
            shared.add_peer(p);
        }
        let tasks = vec![
            tokio::spawn(write_stream(node_rx, send)),
            tokio::spawn(node_reader(shared.clone(), recv)),
            tokio::spawn(node_datagrams(shared.clone())),
            tokio::spawn(probe_loop(shared.clone(), self.pe.probes_in)),
            tokio::spawn(accept_loop(shared.clone())),
            tokio::spawn(ticker(shared.clone())),
        ];
        Ok(Session {
            shared,
            events: events_rx,
            tasks,
        })
    }
}

/// A player's live session in a room.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<Event>,
    tasks: Vec<JoinHandle<()>>,
}

impl Session {
    /// This player's id.
    pub fn me(&self) -> PlayerId {
        self.shared.me
    }

    /// The room.
    pub fn room_id(&self) -> RoomId {
        self.shared.room_id
    }

    /// Sends on the reliable ordered channel to one peer.
    pub fn send_reliable(&self, to: PlayerId, payload: impl Into<Vec<u8>>) -> Result<(), Error> {
        let mut st = self.shared.lock();
        let peer = st.peers.get_mut(&to).ok_or(Error::UnknownPeer(to))?;
        let payload = payload.into();
        let len = payload.len() as u64;
        let frame = peer.sender.push(payload)?;
        self.shared.send_frame(peer, &frame);
        peer.stats.reliable_sent += 1;
        peer.stats.bytes_sent += len;
        Ok(())
    }

    /// Sends on the unreliable channel to one peer (may be lost, duplicated never).
    pub fn send_unreliable(&self, to: PlayerId, payload: impl Into<Vec<u8>>) -> Result<(), Error> {
        let payload = payload.into();
        if payload.len() > MAX_UNRELIABLE_PAYLOAD_BYTES {
            return Err(Error::TooLarge(payload.len()));
        }
        let mut st = self.shared.lock();
        let peer = st.peers.get_mut(&to).ok_or(Error::UnknownPeer(to))?;
        peer.stats.unreliable_sent += 1;
        peer.stats.bytes_sent += payload.len() as u64;
        let via = peer.via();
        self.shared
            .send_datagram(to, peer, &PeerDatagram::Unreliable(payload), via);
        Ok(())
    }

    /// Sends a message to the room's game logic on the node: reliable (ordered, on the control
    /// stream) or unreliable (a datagram; at most the unreliable size limit).
    pub fn send_to_node(&self, payload: impl Into<Vec<u8>>, reliable: bool) -> Result<(), Error> {
        let payload = payload.into();
        if reliable {
            if payload.len() > volley_proto::msg::MAX_RELIABLE_PAYLOAD_BYTES {
                return Err(Error::TooLarge(payload.len()));
            }
            self.shared
                .node_tx
                .send(Up::ToNode { payload }.encode())
                .map_err(|_| Error::Closed)
        } else {
            if payload.len() > MAX_UNRELIABLE_PAYLOAD_BYTES {
                return Err(Error::TooLarge(payload.len()));
            }
            self.shared
                .node
                .send_datagram(NodeDatagram::ToNode { payload }.encode().into())
                .map_err(|e| Error::Connection(e.to_string()))
        }
    }

    /// Sends reliably to every peer. Tries all; returns the first error.
    pub fn broadcast_reliable(&self, payload: &[u8]) -> Result<(), Error> {
        let mut first = Ok(());
        for p in self.peer_ids() {
            if let Err(e) = self.send_reliable(p, payload.to_vec()) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Sends unreliably to every peer.
    pub fn broadcast_unreliable(&self, payload: &[u8]) -> Result<(), Error> {
        for p in self.peer_ids() {
            self.send_unreliable(p, payload.to_vec())?;
        }
        Ok(())
    }

    /// Peers in the room now.
    pub fn peer_ids(&self) -> Vec<PlayerId> {
        let mut ids: Vec<_> = self.shared.lock().peers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Path and quality of every peer link; cheap enough to call every frame.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = self.shared.now();
        let st = self.shared.lock();
        let mut out: Vec<PeerStatus> = st.peers.values().map(|p| p.status(now)).collect();
        out.sort_by_key(|p| p.player_id);
        out
    }

    /// RTT to the node, as QUIC measures it.
    pub fn node_rtt(&self) -> Duration {
        self.shared.node.rtt()
    }

    /// Quality of the connection to the node (which carries every relayed peer link).
    pub fn node_quality(&self) -> NodeQuality {
        let s = self.shared.node.stats();
        let drops = &self.shared.drops;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NodeQuality {
            rtt_ms: s.path.rtt.as_secs_f64() * 1000.0,
            congestion_window_bytes: s.path.cwnd,
            sent_packets: s.path.sent_packets,
            lost_packets: s.path.lost_packets,
            sent_bytes: s.udp_tx.bytes,
            received_bytes: s.udp_rx.bytes,
            control_unsent_stream_closed: get(&drops.control_unsent_stream_closed),
            datagrams_malformed: get(&drops.datagrams_malformed),
            from_node_dropped_queue_full: get(&drops.from_node_dropped_queue_full),
            from_unknown_peers: get(&drops.from_unknown_peers),
        }
    }

    /// The next event, waiting for one. `None` once the session is over and drained.
    pub async fn next_event(&mut self) -> Option<Event> {
        use std::future::Future;
        use std::task::Poll;
        // While the game waits here, it also reads its direct connections' datagrams itself:
        // handing them over from the background reader would cost a task wake-up on each side
        // of every exchange. The background readers keep running for when the game is busy.
        loop {
            if let Ok(e) = self.events.try_recv() {
                self.shared.consumed(&e);
                return Some(e);
            }
            let conns = self.shared.direct_conns();
            let mut reads: Vec<_> = conns
                .iter()
                .map(|(peer, conn)| (*peer, conn.stable_id(), Box::pin(conn.read_datagram())))
                .collect();
            let events = &mut self.events;
            let got = std::future::poll_fn(|cx| {
                if let Poll::Ready(e) = events.poll_recv(cx) {
                    return Poll::Ready(Err(e));
                }
                for (peer, sid, read) in reads.iter_mut() {
                    if let Poll::Ready(r) = read.as_mut().poll(cx) {
                        return Poll::Ready(Ok((*peer, *sid, r)));
                    }
                }
                Poll::Pending
            })
            .await;
            match got {
                Err(e) => {
                    if let Some(e) = &e {
                        self.shared.consumed(e);
                    }
                    return e;
                }
                Ok((peer, sid, Ok(d))) => self.shared.on_datagram(peer, &d, Via::Direct(sid)),
                // A closed connection drops out of `direct_conns` (it has a close reason now);
                // the ticker fails the link over.
                Ok((_, _, Err(_))) => {}
            }
        }
    }

    /// The next event if one is ready.
    pub fn try_event(&mut self) -> Option<Event> {
        let e = self.events.try_recv().ok();
        if let Some(e) = &e {
            self.shared.consumed(e);
        }
        e
    }

    /// Leaves the room and closes the endpoint.
    pub async fn leave(self) {
        if self.shared.node_tx.send(Up::Leave.encode()).is_err() {
            tracing::debug!(
                me = self.shared.me,
                "leave not sent: the node connection had ended already"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.endpoint.close(0u32.into(), b"leaving");
        for t in &self.tasks {
            t.abort();
        }
        let idle =
            tokio::time::timeout(Duration::from_secs(1), self.shared.endpoint.wait_idle()).await;
        if idle.is_err() {
            tracing::debug!(
                me = self.shared.me,
                "the endpoint was not idle 1 s after leaving; closed without waiting further"
            );
        }
    }

    /// Test hook: drops this side's direct path to `peer` as if the network cut it, without
    /// telling anyone. The path monitor on both sides must notice and fail over.
    pub fn cut_direct_for_test(&self, peer: PlayerId) -> bool {
        let st = self.shared.lock();
        match st.peers.get(&peer).and_then(|p| p.direct.as_ref()) {
            Some(d) => {
                d.conn.close(9u32.into(), b"test cut");
                true
            }
            None => false,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn payload_len(e: &Event) -> usize {
    match e {
        Event::Reliable { payload, .. }
        | Event::Unreliable { payload, .. }
        | Event::FromNode { payload, .. } => payload.len(),
        _ => 0,
    }
}

fn percentile(sorted: &[u64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(idx).map(|us| *us as f64 / 1000.0)
}

impl Peer {
    fn via(&self) -> Via {
        match (&self.path, &self.direct) {
            (PathKind::Direct, Some(d)) => Via::Direct(d.conn.stable_id()),
            _ => Via::Relay,
        }
    }

    fn active_mon(&self) -> &PathMonitor {
        match (&self.path, &self.direct) {
            (PathKind::Direct, Some(d)) => &d.mon,
            _ => &self.relay_mon,
        }
    }

    fn status(&self, now: Duration) -> PeerStatus {
        let mon = self.active_mon();
        let mut sorted: Vec<u64> = self.stats.rtts_us.iter().copied().collect();
        sorted.sort_unstable();
        PeerStatus {
            player_id: self.info.player_id,
            path: self.path,
            rtt_ms: mon.rtt().map(|d| d.as_secs_f64() * 1000.0),
            rtt_ms_p50: percentile(&sorted, 0.50),
            rtt_ms_p99: percentile(&sorted, 0.99),
            jitter_ms: mon.jitter().as_secs_f64() * 1000.0,
            loss: mon.loss(now),
            reliable_sent: self.stats.reliable_sent,
            reliable_received: self.stats.reliable_received,
            unreliable_sent: self.stats.unreliable_sent,
            unreliable_received: self.stats.unreliable_received,
            bytes_sent: self.stats.bytes_sent,
            bytes_received: self.stats.bytes_received,
            unacked_bytes: self.sender.unacked_bytes(),
            send_bytes_per_s: self.stats.rates.0,
            recv_bytes_per_s: self.stats.rates.1,
            path_changes: self.stats.path_changes,
            direct_after_ms: self.stats.direct_after.map(|d| d.as_secs_f64() * 1000.0),
            unreliable_dropped_queue_full: self.stats.unreliable_dropped_queue_full,
            frames_malformed: self.stats.frames_malformed,
            frames_refused_beyond_window: self.stats.frames_refused_beyond_window,
            datagrams_malformed: self.stats.datagrams_malformed,
            frames_unsent_stream_closed: self.stats.frames_unsent_stream_closed,
            datagrams_unsent_too_large: self.stats.datagrams_unsent_too_large,
            datagrams_unsent_link_down: self.stats.datagrams_unsent_link_down,
            probes_unsent_io_error: self.stats.probes_unsent_io_error,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this module; recover the data rather
        // than poisoning every later call.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn emit(&self, e: Event) {
        self.event_bytes
            .fetch_add(payload_len(&e), Ordering::Relaxed);
        // The receiver lives in the `Session`: it is gone only once the game dropped the
        // session, and then nobody reads events any more.
        // dropped: nobody is left to deliver to
        let _ = self.events.send(e);
    }

    fn consumed(&self, e: &Event) {
        self.event_bytes
            .fetch_sub(payload_len(e), Ordering::Relaxed);
    }

    fn events_full(&self) -> bool {
        self.event_bytes.load(Ordering::Relaxed) > EVENT_QUEUE_BYTES_MAX
    }

    /// Open direct connections, for the game's own `next_event` to read from.
    fn direct_conns(&self) -> Vec<(PlayerId, quinn::Connection)> {
        self.lock()
            .peers
            .iter()
            .filter_map(|(id, p)| p.direct.as_ref().map(|d| (*id, d.conn.clone())))
            .filter(|(_, c)| c.close_reason().is_none())
            .collect()
    }

    fn add_peer(&self, info: PeerInfo) {
        let now = self.now();
        let id = info.player_id;
        if id == self.me {
            return;
        }
        let mut st = self.lock();
        if let Some(p) = st.peers.get_mut(&id) {
            // Same player, new connection (rejoin): new candidates and fingerprint.
            p.info = info;
        } else {
            let link = self.cfg.link;
            st.peers.insert(
                id,
                Peer {
                    info,
                    sender: ReliableSender::new(link),
                    receiver: ReliableReceiver::new(link),
                    path: PathKind::Relay,
                    direct: None,
                    relay_mon: PathMonitor::new(PathConfig {
                        ping_interval: self.cfg.relay_ping_interval,
                        ..self.cfg.path
                    }),
                    punch: None,
                    seen_at: None,
                    dialing: false,
                    repunch_at: now + self.cfg.repunch_after,
                    repunch_backoff: self.cfg.repunch_after,
                    ack_due: false,
                    last_ack_at: now,
                    last_report_at: None,
                    reported: None,
                    joined_at: now,
                    stats: Stats::default(),
                },
            );
            drop(st);
            self.emit(Event::PeerJoined(id));
            st = self.lock();
        }
        if let Some(p) = st.peers.get_mut(&id) {
            self.start_punch(p, now);
        }
    }

    fn start_punch(&self, p: &mut Peer, now: Duration) {
        if !self.cfg.direct || p.direct.is_some() {
            return;
        }
        p.punch = Some(Punch {
            until: now + self.cfg.punch_duration,
            next_probe: now,
        });
    }

    fn send_frame(&self, peer: &mut Peer, frame: &PeerFrame) {
        let sent = match (&peer.path, &peer.direct) {
            (PathKind::Direct, Some(d)) => d.tx.send(frame.encode_framed()).is_ok(),
            _ => self
                .node_tx
                .send(
                    Up::Relay {
                        to: peer.info.player_id,
                        frame: frame.encode(),
                    }
                    .encode(),
                )
                .is_ok(),
        };
        if !sent {
            peer.stats.frames_unsent_stream_closed += 1;
        }
    }

    fn send_datagram(&self, to: PlayerId, peer: &mut Peer, d: &PeerDatagram, via: Via) {
        let bytes = d.encode();
        let sent = match (via, &peer.direct) {
            (Via::Direct(_), Some(direct)) => direct.conn.send_datagram(bytes.into()),
            _ => self.node.send_datagram(
                NodeDatagram::ToPeer {
                    peer: to,
                    payload: bytes,
                }
                .encode()
                .into(),
            ),
        };
        if let Err(e) = sent {
            peer.stats.datagram_unsent(&e);
        }
    }

    /// Counts a frame or datagram from a player who is not (or no longer) in the room.
    fn count_unknown_peer(&self) {
        bump(&self.drops.from_unknown_peers);
    }

    /// Sends a control message to the node; counted when the node's stream writer had ended.
    fn send_control(&self, msg: Up) {
        if self.node_tx.send(msg.encode()).is_err() {
            bump(&self.drops.control_unsent_stream_closed);
        }
    }

    fn on_frame(&self, from: PlayerId, bytes: &[u8], via: Via) {
        let decoded = PeerFrame::decode(bytes);
        let now = self.now();
        let mut delivered = Vec::new();
        {
            let mut st = self.lock();
            let Some(p) = st.peers.get_mut(&from) else {
                self.count_unknown_peer();
                return;
            };
            let Ok(frame) = decoded else {
                p.stats.frames_malformed += 1;
                return;
            };
            mark_heard(p, via, now);
            match p.receiver.on_frame(frame) {
                Ok(d) => delivered = d,
                // The receiver refuses only frames beyond its window.
                Err(_) => p.stats.frames_refused_beyond_window += 1,
            }
            p.ack_due = true;
            p.stats.reliable_received += delivered.len() as u64;
            p.stats.bytes_received += delivered.iter().map(|d| d.len() as u64).sum::<u64>();
        }
        for payload in delivered {
            self.emit(Event::Reliable { from, payload });
        }
    }

    fn on_datagram(&self, from: PlayerId, bytes: &[u8], via: Via) {
        let decoded = PeerDatagram::decode(bytes);
        let now = self.now();
        let mut st = self.lock();
        let Some(p) = st.peers.get_mut(&from) else {
            self.count_unknown_peer();
            return;
        };
        let Ok(d) = decoded else {
            p.stats.datagrams_malformed += 1;
            return;
        };
        mark_heard(p, via, now);
        match d {
            PeerDatagram::Unreliable(payload) => {
                if self.events_full() {
                    p.stats.unreliable_dropped_queue_full += 1;
                    return;
                }
                p.stats.unreliable_received += 1;
                p.stats.bytes_received += payload.len() as u64;
                drop(st);
                self.emit(Event::Unreliable { from, payload });
            }
            PeerDatagram::Ack { next_seq } => p.sender.on_ack(next_seq),
            PeerDatagram::Ping { id, sent_us } => {
                self.send_datagram(from, p, &PeerDatagram::Pong { id, sent_us }, via);
            }
            PeerDatagram::Pong { id, sent_us } => {
                let sent = Duration::from_micros(sent_us);
                let active = p.via() == via;
                let mon = match (via, p.direct.as_mut()) {
                    (Via::Direct(sid), Some(d)) if d.conn.stable_id() == sid => &mut d.mon,
                    (Via::Direct(_), _) => return,
                    (Via::Relay, _) => &mut p.relay_mon,
                };
                let before = mon.samples();
                mon.on_pong(now, id, sent);
                if active && mon.samples() > before {
                    if p.stats.rtts_us.len() == RTT_SAMPLES_MAX {
                        p.stats.rtts_us.pop_front();
                    }
                    p.stats
                        .rtts_us
                        .push_back(now.saturating_sub(sent).as_micros() as u64);
                }
            }
        }
    }

    fn on_probe(self: &Arc<Self>, rp: ReceivedProbe) {
        let probe = rp.probe;
        if probe.room_id != self.room_id || probe.to != self.me || !self.cfg.direct {
            return;
        }
        let now = self.now();
        let mut st = self.lock();
        let Some(p) = st.peers.get_mut(&probe.from) else {
            return;
        };
        if !probe.is_reply {
            let reply = Probe {
                is_reply: true,
                room_id: self.room_id,
                from: self.me,
                to: probe.from,
                observed: Some(rp.from),
            };
            if self.probes_out.send(rp.from, &reply).is_err() {
                p.stats.probes_unsent_io_error += 1;
            }
        }
        p.seen_at = Some(rp.from);
        if p.direct.is_none() && p.punch.is_none() {
            // The peer is punching towards us; punch back even if the node's word is late.
            self.start_punch(p, now);
        }
        // The lower id dials, so two peers never race two connections.
        if self.me < probe.from && p.direct.is_none() && !p.dialing {
            p.dialing = true;
            let fp = p.info.fingerprint;
            tokio::spawn(dial(self.clone(), probe.from, rp.from, fp));
        }
    }

    fn install_direct(
        self: &Arc<Self>,
        peer: PlayerId,
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) {
        let now = self.now();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut mon = PathMonitor::new(self.cfg.path);
        mon.on_heard(now);
        {
            let mut st = self.lock();
            let Some(p) = st.peers.get_mut(&peer) else {
                conn.close(0u32.into(), b"unknown peer");
                return;
            };
            if let Some(old) = p.direct.take() {
                old.conn.close(0u32.into(), b"replaced");
            }
            p.direct = Some(Direct {
                conn: conn.clone(),
                tx,
                mon,
            });
            p.dialing = false;
            p.punch = None;
            p.repunch_backoff = self.cfg.repunch_after;
            tracing::debug!(me = self.me, peer, remote = %conn.remote_address(), "direct path up");
        }
        let sid = conn.stable_id();
        tokio::spawn(write_stream(rx, send));
        tokio::spawn(direct_reader(self.clone(), peer, sid, recv));
        tokio::spawn(direct_datagrams(self.clone(), peer, conn));
    }

    /// One tick: liveness, path choice, pings, acks, punching, reports.
    fn tick(&self) {
        let now = self.now();
        let events_full = self.events_full();
        let mut changes = Vec::new();
        let mut st = self.lock();
        for (id, p) in st.peers.iter_mut() {
            let id = *id;
            p.stats.roll_rates(now);
            if let Some(d) = &p.direct {
                if !d.mon.is_alive(now) || d.conn.close_reason().is_some() {
                    d.conn.close(0u32.into(), b"path dead");
                    p.direct = None;
                    p.repunch_at = now + p.repunch_backoff;
                }
            }
            let want = if p.direct.is_some() {
                PathKind::Direct
            } else {
                PathKind::Relay
            };
            if want != p.path {
                p.path = want;
                p.stats.path_changes += 1;
                if want == PathKind::Direct && p.stats.direct_after.is_none() {
                    p.stats.direct_after = Some(now.saturating_sub(p.joined_at));
                }
                // Whatever the old path had in flight may be lost with it: send it again on
                // the new one. The receiver drops the copies it already has.
                let unacked: Vec<PeerFrame> = p.sender.unacked().cloned().collect();
                for f in &unacked {
                    self.send_frame(p, f);
                }
                changes.push((id, want));
            }
            if let Some(d) = p.direct.as_mut() {
                if let Some(pid) = d.mon.poll_ping(now) {
                    let ping = PeerDatagram::Ping {
                        id: pid,
                        sent_us: now.as_micros() as u64,
                    };
                    if let Err(e) = d.conn.send_datagram(ping.encode().into()) {
                        p.stats.datagram_unsent(&e);
                    }
                }
            }
            {
                if let Some(pid) = p.relay_mon.poll_ping(now) {
                    let ping = PeerDatagram::Ping {
                        id: pid,
                        sent_us: now.as_micros() as u64,
                    };
                    self.send_datagram(id, p, &ping, Via::Relay);
                }
            }
            let re_ack = p.receiver.next_expected() > 0
                && now.saturating_sub(p.last_ack_at) >= Duration::from_millis(200);
            if (p.ack_due || re_ack) && !events_full {
                let ack = PeerDatagram::Ack {
                    next_seq: p.receiver.next_expected(),
                };
                self.send_datagram(id, p, &ack, p.via());
                p.ack_due = false;
                p.last_ack_at = now;
            }
            self.punch_tick(id, p, now);
            let report_due = p.reported != Some(p.path)
                || p.last_report_at
                    .is_none_or(|t| now.saturating_sub(t) >= self.cfg.report_interval);
            if report_due {
                let rtt_us = p.active_mon().rtt().map_or(0, |d| d.as_micros() as u64);
                self.send_control(Up::PathReport {
                    peer: id,
                    path: p.path,
                    rtt_us,
                });
                p.reported = Some(p.path);
                p.last_report_at = Some(now);
            }
        }
        drop(st);
        for (peer, path) in changes {
            self.emit(Event::PathChanged { peer, path });
        }
    }

    fn punch_tick(&self, id: PlayerId, p: &mut Peer, now: Duration) {
        if !self.cfg.direct || p.direct.is_some() {
            p.punch = None;
            return;
        }
        match &mut p.punch {
            Some(punch) if now >= punch.until => {
                p.punch = None;
                p.repunch_at = now + p.repunch_backoff;
                p.repunch_backoff = (p.repunch_backoff * 2).min(self.cfg.repunch_max);
            }
            Some(punch) if now >= punch.next_probe => {
                punch.next_probe = now + self.cfg.probe_interval;
                let probe = Probe {
                    is_reply: false,
                    room_id: self.room_id,
                    from: self.me,
                    to: id,
                    observed: None,
                };
                let mut targets = p.info.candidates.clone();
                if let Some(seen) = p.seen_at {
                    if !targets.contains(&seen) {
                        targets.push(seen);
                    }
                }
                for t in targets {
                    if self.probes_out.send(t, &probe).is_err() {
                        p.stats.probes_unsent_io_error += 1;
                    }
                }
            }
            Some(_) => {}
            None => {
                // Only the lower id asks the node to start a new round, so one request covers
                // both sides; the node tells both to punch at once.
                if self.me < id && now >= p.repunch_at && !p.dialing {
                    p.repunch_at = now + p.repunch_backoff;
                    self.send_control(Up::PunchRequest { peer: id });
                }
            }
        }
    }

    fn on_down(&self, msg: Down) {
        match msg {
            Down::PeerJoined(info) => self.add_peer(info),
            Down::Punch(info) => {
                let now = self.now();
                let mut st = self.lock();
                if let Some(p) = st.peers.get_mut(&info.player_id) {
                    p.info.candidates = info.candidates;
                    self.start_punch(p, now);
                }
            }
            Down::PeerLeft { player_id } => {
                let removed = self.lock().peers.remove(&player_id);
                if let Some(p) = removed {
                    if let Some(d) = p.direct {
                        d.conn.close(0u32.into(), b"peer left");
                    }
                    self.emit(Event::PeerLeft(player_id));
                }
            }
            Down::Relayed { from, frame } => self.on_frame(from, &frame, Via::Relay),
            Down::FromNode { payload } => self.emit(Event::FromNode {
                payload,
                reliable: true,
            }),
            Down::Welcome { .. } | Down::Reject { .. } => {
                tracing::debug!("unexpected admission frame mid-session ignored");
            }
        }
    }

    fn close(&self, reason: String) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            self.emit(Event::Closed { reason });
        }
    }
}

fn mark_heard(p: &mut Peer, via: Via, now: Duration) {
    match (via, p.direct.as_mut()) {
        (Via::Direct(sid), Some(d)) if d.conn.stable_id() == sid => d.mon.on_heard(now),
        (Via::Relay, _) => p.relay_mon.on_heard(now),
        _ => {}
    }
}

/// Writes what arrives on `rx` to `send`, until the senders are gone or a write fails. After a
/// failed write the receiver goes, so later sends are refused and counted by their senders.
async fn write_stream(mut rx: mpsc::UnboundedReceiver<Vec<u8>>, mut send: quinn::SendStream) {
    while let Some(bytes) = rx.recv().await {
        if let Err(error) = send.write_all(&bytes).await {
            tracing::debug!(%error, "stream write failed; the stream's writer ends");
            break;
        }
    }
    if let Err(error) = send.finish() {
        tracing::debug!(%error, "stream already closed when its writer ended");
    }
}

async fn node_reader(shared: Arc<Shared>, mut recv: quinn::RecvStream) {
    let mut buf = Vec::new();
    let reason = loop {
        if let Err(e) = read_frame(&mut recv, &mut buf).await {
            break format!("node connection ended: {e}");
        }
        match Down::decode(&buf) {
            Ok(msg) => shared.on_down(msg),
            Err(e) => break format!("node sent an undecodable frame: {e}"),
        }
    };
    let reason = match shared.node.close_reason() {
        Some(r) => format!("{reason} ({r})"),
        None => reason,
    };
    shared.close(reason);
}

async fn node_datagrams(shared: Arc<Shared>) {
    while let Ok(d) = shared.node.read_datagram().await {
        match NodeDatagram::decode(&d) {
            Ok(NodeDatagram::FromPeer { peer, payload }) => {
                shared.on_datagram(peer, &payload, Via::Relay)
            }
            Ok(NodeDatagram::FromNode { payload }) => {
                if shared.events_full() {
                    bump(&shared.drops.from_node_dropped_queue_full);
                } else {
                    shared.emit(Event::FromNode {
                        payload,
                        reliable: false,
                    })
                }
            }
            Ok(NodeDatagram::ToNode { .. } | NodeDatagram::ToPeer { .. }) | Err(_) => {
                bump(&shared.drops.datagrams_malformed);
            }
        }
    }
}

async fn probe_loop(shared: Arc<Shared>, mut probes: mpsc::Receiver<ReceivedProbe>) {
    while let Some(rp) = probes.recv().await {
        shared.on_probe(rp);
    }
}

async fn ticker(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.cfg.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.closed.load(Ordering::Relaxed) {
            break;
        }
        shared.tick();
    }
}

async fn dial(shared: Arc<Shared>, peer: PlayerId, addr: SocketAddr, fp: Fingerprint) {
    let attempt = async {
        let cc =
            endpoint::client_config(&shared.identity, Pin::One(fp), &TransportTuning::direct())
                .map_err(|e| e.to_string())?;
        let conn = shared
            .endpoint
            .connect_with(cc, addr, "volley-peer")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(DIRECT_PREAMBLE)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((conn, send, recv))
    };
    match tokio::time::timeout(DIRECT_HANDSHAKE_TIMEOUT, attempt).await {
        Ok(Ok((conn, send, recv))) => shared.install_direct(peer, conn, send, recv),
        other => {
            tracing::debug!(me = shared.me, peer, %addr, result = ?other.err(), "direct dial failed");
            if let Some(p) = shared.lock().peers.get_mut(&peer) {
                p.dialing = false;
            }
        }
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        tokio::spawn(accept_direct(shared.clone(), incoming));
    }
}

async fn accept_direct(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let attempt = async {
        let conn = incoming.await.map_err(|e| e.to_string())?;
        let fp = volley_net::tls::peer_fingerprint(&conn).ok_or("no client certificate")?;
        let peer = shared
            .lock()
            .peers
            .values()
            .find(|p| p.info.fingerprint == fp)
            .map(|p| p.info.player_id);
        let Some(peer) = peer else {
            conn.close(3u32.into(), b"not a peer the node vouched for");
            return Err("unknown certificate".to_owned());
        };
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut preamble = [0u8; 4];
        recv.read_exact(&mut preamble)
            .await
            .map_err(|e| e.to_string())?;
        if &preamble != DIRECT_PREAMBLE {
            conn.close(3u32.into(), b"bad preamble");
            return Err("bad preamble".to_owned());
        }
        Ok((peer, conn, send, recv))
    };
    match tokio::time::timeout(DIRECT_HANDSHAKE_TIMEOUT, attempt).await {
        Ok(Ok((peer, conn, send, recv))) => shared.install_direct(peer, conn, send, recv),
        other => tracing::debug!(me = shared.me, result = ?other.err(), "direct accept failed"),
    }
}

async fn direct_reader(
    shared: Arc<Shared>,
    peer: PlayerId,
    sid: usize,
    mut recv: quinn::RecvStream,
) {
    let mut buf = Vec::new();
    let error = loop {
        if let Err(e) = read_frame(&mut recv, &mut buf).await {
            break e;
        }
        shared.on_frame(peer, &buf, Via::Direct(sid));
    };
    // The ticker notices the closed connection and fails the link over to the relay.
    tracing::debug!(me = shared.me, peer, %error, "direct stream ended");
}

async fn direct_datagrams(shared: Arc<Shared>, peer: PlayerId, conn: quinn::Connection) {
    let via = Via::Direct(conn.stable_id());
    while let Ok(d) = conn.read_datagram().await {
        shared.on_datagram(peer, &d, via);
    }
}
