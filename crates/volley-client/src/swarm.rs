//! The content swarm: players fetch a build from each other over QUIC and from the origin at
//! once, and serve what they hold to others.
//!
//! One [`Swarm`] serves one signed manifest. It listens on a QUIC endpoint, learns peers from
//! the node's tracker (announcing itself there), from LAN discovery (UDP multicast) and from
//! addresses it is given, and speaks the peer protocol of [`volley_content::wire`] with each:
//! bitfields and `Have`s, choking, one stream per chunk request. As a [`ChunkSource`] it feeds
//! the installer: the [`Picker`] chooses rarest chunks from peers (the nearest by RTT first)
//! and gives the origin only what no peer holds or claims, or what peers failed to deliver.
//! Every chunk is verified before it is delivered or served; a peer that serves a bad chunk is
//! dropped and banned, and the chunk is fetched elsewhere.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, Notify};
use volley_content::install::{ChunkSource, Delivered, InstallOptions};
use volley_content::manifest::SignedManifest;
use volley_content::pace::Pace;
use volley_content::picker::Picker;
use volley_content::staging::Staging;
use volley_content::table::ChunkTable;
use volley_content::wire::{Bits, Hello, Msg, Status, WireError};
use volley_content::{chunk_name, ChunkRef, ContentError, Verified};
use volley_net::tls::{self, Identity, Pin};

use crate::content::Origin;
use crate::{Api, Error};

/// Swarm tunables.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    /// Where the peer endpoint listens (UDP).
    pub listen: SocketAddr,
    /// Upload cap for serving peers, bytes per second (0: none).
    pub upload_bytes_per_s: u64,
    /// Download cap from peers and the origin together, bytes per second (0: none).
    pub download_bytes_per_s: u64,
    /// Peers unchoked at once (one more slot rotates optimistically).
    pub upload_slots: usize,
    /// Chunk requests in flight to one peer.
    pub peer_depth: usize,
    /// Chunk requests in flight to the origin.
    pub origin_depth: usize,
    /// Most peers connected at once.
    pub max_peers: usize,
    /// Most peers downloaded from at once: the lowest-RTT ones holding something we need.
    pub download_peers: usize,
    /// A chunk request to a peer that takes longer than this fails (the chunk goes back to
    /// the pool; after two failures the origin may serve it).
    pub request_timeout: Duration,
    /// Peers to connect to besides those the tracker and LAN discovery name.
    pub peers: Vec<SocketAddr>,
    /// LAN discovery: the multicast group and port, and the interface address to use.
    pub lan: Option<(SocketAddrV4, Ipv4Addr)>,
    /// How often to announce to the tracker and on the LAN.
    pub announce_every: Duration,
    /// Wait this long for the first peers before asking the origin for anything.
    pub settle: Duration,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        SwarmOptions {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            upload_bytes_per_s: 0,
            download_bytes_per_s: 0,
            upload_slots: 6,
            peer_depth: 6,
            origin_depth: 4,
            max_peers: 40,
            download_peers: 12,
            request_timeout: Duration::from_secs(10),
            peers: Vec::new(),
            lan: None,
            announce_every: Duration::from_secs(15),
            settle: Duration::from_millis(500),
        }
    }
}

/// Default LAN discovery group.
pub const LAN_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 76, 76), 7361);
const LAN_MAGIC: &[u8; 4] = b"VLYL";

/// Counters of one swarm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwarmStats {
    /// Peers connected now.
    pub peers: usize,
    /// Verified bytes received from peers.
    pub peer_bytes: u64,
    /// Verified bytes received from the origin.
    pub origin_bytes: u64,
    /// Bytes received twice (endgame doubles) or failing verification.
    pub wasted_bytes: u64,
    /// Chunk bytes served to peers.
    pub uploaded_bytes: u64,
    /// Peers dropped for serving corrupt chunks.
    pub banned_peers: usize,
    /// Verified bytes that arrived after the installer had stopped taking chunks (the install
    /// failed or was dropped).
    pub bytes_dropped_installer_gone: u64,
    /// Peers' chunk requests not read whole within 5 s (or cut off): answered with a reset.
    pub requests_unreadable: u64,
    /// Answers to peers' chunk requests (a status or a chunk) not written whole, because the
    /// peer closed the stream or the connection first.
    pub answers_unsent_stream_closed: u64,
    /// Chunks that could not be read from disk for serving (an I/O error): answered as not
    /// held.
    pub serve_reads_failed: u64,
    /// Chunks read from disk for serving whose bytes no longer match their hash: answered as
    /// not held.
    pub serve_reads_corrupt: u64,
}

/// Where served chunks are read from.
enum Serve {
    /// The staging area of an install in progress.
    Staging(Arc<Staging>),
    /// An installed version: its files (each chunk's first place in them is the chunk
    /// table's).
    Installed { paths: Vec<PathBuf> },
}

struct PeerState {
    bits: Bits,
    /// They refuse our requests.
    choking_us: bool,
    /// We refuse theirs.
    choked: bool,
    interested_in_us: bool,
    we_are_interested: bool,
    /// Allowed to be downloaded from (among the nearest).
    active: bool,
    asked: HashSet<u32>,
    /// Bytes they sent us / we sent them in this choke round.
    got_round: u64,
    sent_round: u64,
}

struct Peer {
    id: u64,
    addr: SocketAddr,
    /// We opened the connection.
    outbound: bool,
    conn: quinn::Connection,
    ctl: mpsc::Sender<Msg>,
    state: Mutex<PeerState>,
    wake: Notify,
}

impl Peer {
    /// Queues a control message; a peer that lets `CTL_DEPTH` of them pile up (it stopped
    /// reading its control stream) is disconnected rather than buffered for without bound. A
    /// closed queue means the peer's writer ended with its connection: the peer is being
    /// dropped, and the message has nobody to go to.
    fn send(&self, m: Msg) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.ctl.try_send(m) {
            self.conn
                .close(CLOSE_SLOW.into(), b"control stream backed up");
        }
    }
}

struct Inner {
    peer_id: u64,
    manifest_id: [u8; 32],
    table: Arc<ChunkTable>,
    opts: SwarmOptions,
    endpoint: quinn::Endpoint,
    client_cfg: quinn::ClientConfig,
    origin: Option<Origin>,
    api: Option<Api>,
    game: String,
    version: String,
    held: Mutex<Bits>,
    serve: Mutex<Serve>,
    /// The chunks delivered or served last, verified, to serve again without a disk read (a
    /// new chunk is what the other peers ask for next).
    recent: Mutex<Recent>,
    picker: Mutex<Option<Picker>>,
    out: Mutex<Option<mpsc::Sender<Delivered>>>,
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
    connecting: Mutex<HashSet<SocketAddr>>,
    banned: Mutex<HashSet<SocketAddr>>,
    up: Pace,
    down: Pace,
    wake: Notify,
    /// Announce to the tracker now (the version became complete here, or what is served
    /// changed), not at the next scheduled time.
    announce_now: Notify,
    start: Instant,
    closed: AtomicBool,
    peer_bytes: AtomicU64,
    origin_bytes: AtomicU64,
    wasted_bytes: AtomicU64,
    uploaded_bytes: AtomicU64,
    corrupt_pending: AtomicUsize,
    banned_count: AtomicUsize,
    bytes_dropped_installer_gone: AtomicU64,
    requests_unreadable: AtomicU64,
    answers_unsent_stream_closed: AtomicU64,
    serve_reads_failed: AtomicU64,
    serve_reads_corrupt: AtomicU64,
}

/// Bytes of recent chunks kept in memory for serving.
const RECENT_BYTES: usize = 4 << 20;

#[derive(Default)]
struct Recent {
    chunks: std::collections::VecDeque<(u32, Bytes)>,
    bytes: usize,
}

impl Recent {
    fn get(&self, i: u32) -> Option<Bytes> {
        self.chunks
            .iter()
            .rev()
            .find(|(j, _)| *j == i)
            .map(|(_, b)| b.clone())
    }

    fn push(&mut self, i: u32, b: Bytes) {
        if self.chunks.iter().any(|(j, _)| *j == i) {
            return;
        }
        self.bytes += b.len();
        self.chunks.push_back((i, b));
        while self.bytes > RECENT_BYTES {
            match self.chunks.pop_front() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A swarm serving (and fetching) one version.
#[derive(Clone)]
pub struct Swarm {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm")
            .field("peer_id", &self.inner.peer_id)
            .field("addr", &self.local_addr())
            .finish()
    }
}

const CLOSE_DONE: u32 = 0;
const CLOSE_PROTOCOL: u32 = 1;
const CLOSE_CORRUPT: u32 = 2;
const CLOSE_DUPLICATE: u32 = 3;
const CLOSE_SLOW: u32 = 4;
/// Control messages queued for one peer at most.
const CTL_DEPTH: usize = 4096;
/// Control messages written to the stream at once.
const CTL_BATCH: usize = 64;

impl Swarm {
    /// A swarm for the version `manifest`. `origin` serves what peers cannot; `api` (logged
    /// in) announces to the node's tracker. Serves nothing until [`Swarm::serve_staging`] or
    /// [`Swarm::serve_installed`].
    pub fn start(
        manifest: Arc<SignedManifest>,
        origin: Option<Origin>,
        api: Option<Api>,
        opts: SwarmOptions,
    ) -> Result<Swarm, Error> {
        let game = manifest.game().to_owned();
        let version = manifest.version().to_owned();
        let table = Arc::new(ChunkTable::new(manifest)?);
        let me = Identity::generate("volley-peer").map_err(|e| Error::Http(e.to_string()))?;
        let transport = Arc::new(transport(opts.peer_depth));
        let server =
            tls::server_crypto(&me, Pin::AnyVerifiedKey).map_err(|e| Error::Http(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
        server.transport_config(transport.clone());
        let client =
            tls::client_crypto(&me, Pin::AnyVerifiedKey).map_err(|e| Error::Http(e.to_string()))?;
        let mut client_cfg = quinn::ClientConfig::new(Arc::new(client));
        client_cfg.transport_config(transport);
        let socket = std::net::UdpSocket::bind(opts.listen)
            .map_err(|e| Error::Http(format!("peer endpoint {}: {e}", opts.listen)))?;
        let endpoint = quinn::Endpoint::new(
            volley_net::endpoint::endpoint_config(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| Error::Http(format!("peer endpoint: {e}")))?;
        let n = table.len();
        let inner = Arc::new(Inner {
            peer_id: rand_u64(),
            manifest_id: *table.id(),
            table,
            up: Pace::new(opts.upload_bytes_per_s),
            down: Pace::new(opts.download_bytes_per_s),
            opts,
            endpoint,
            client_cfg,
            origin,
            api,
            game,
            version,
            held: Mutex::new(Bits::new(n)),
            serve: Mutex::new(Serve::Installed { paths: Vec::new() }),
            recent: Mutex::new(Recent::default()),
            picker: Mutex::new(None),
            out: Mutex::new(None),
            peers: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashSet::new()),
            banned: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            announce_now: Notify::new(),
            start: Instant::now(),
            closed: AtomicBool::new(false),
            peer_bytes: AtomicU64::new(0),
            origin_bytes: AtomicU64::new(0),
            wasted_bytes: AtomicU64::new(0),
            uploaded_bytes: AtomicU64::new(0),
            corrupt_pending: AtomicUsize::new(0),
            banned_count: AtomicUsize::new(0),
            bytes_dropped_installer_gone: AtomicU64::new(0),
            requests_unreadable: AtomicU64::new(0),
            answers_unsent_stream_closed: AtomicU64::new(0),
            serve_reads_failed: AtomicU64::new(0),
            serve_reads_corrupt: AtomicU64::new(0),
        });
        let s = Swarm { inner };
        tokio::spawn(accept_loop(s.inner.clone()));
        tokio::spawn(choke_loop(s.inner.clone()));
        tokio::spawn(announce_loop(s.inner.clone()));
        if let Some((group, iface)) = s.inner.opts.lan {
            let inner = s.inner.clone();
            tokio::spawn(async move {
                if let Err(e) = lan_loop(inner, group, iface).await {
                    tracing::warn!(error = %e, "LAN discovery stopped");
                }
            });
        }
        for addr in s.inner.opts.peers.clone() {
            spawn_connect(&s.inner, addr);
        }
        Ok(s)
    }

    /// The peer endpoint's address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.endpoint.local_addr().ok()
    }

    /// This swarm member's random id.
    pub fn peer_id(&self) -> u64 {
        self.inner.peer_id
    }

    /// Serves the verified chunks in an install's staging area (those there now, and each
    /// new one as the installer writes it).
    pub fn serve_staging(&self, staging: Arc<Staging>) {
        let mut held = Bits::new(self.inner.table.len());
        for i in 0..self.inner.table.len() {
            if staging.has_chunk(i as u32) {
                held.set(i);
            }
        }
        *lock(&self.inner.serve) = Serve::Staging(staging);
        self.replace_held(held);
    }

    /// Serves every chunk from the version installed in `dir` (which must be this version).
    pub fn serve_installed(&self, dir: &Path) -> Result<(), Error> {
        let table = &self.inner.table;
        match volley_content::install::installed_id(dir)? {
            None => {
                return Err(
                    ContentError::Invalid(format!("{} holds no install", dir.display())).into(),
                )
            }
            Some(id) if &id != table.id() => {
                return Err(ContentError::Invalid(format!(
                    "{} holds another version than the {} {} this swarm serves",
                    dir.display(),
                    self.inner.game,
                    self.inner.version
                ))
                .into())
            }
            Some(_) => {}
        }
        let mut held = Bits::new(table.len());
        for i in 0..table.len() {
            held.set(i);
        }
        let paths = table
            .manifest()
            .files()
            .iter()
            .map(|f| dir.join(&f.path))
            .collect();
        *lock(&self.inner.serve) = Serve::Installed { paths };
        self.replace_held(held);
        Ok(())
    }

    /// After an install swapped its staging area into `dir`: serves the same chunks from
    /// there, placed as the staging area placed them (no second reading of the manifest).
    fn serve_swapped(&self, dir: &Path) -> Result<(), Error> {
        let layout = match &*lock(&self.inner.serve) {
            Serve::Staging(s) => Some(s.layout(dir)),
            Serve::Installed { .. } => None,
        };
        match layout {
            Some(paths) => {
                *lock(&self.inner.serve) = Serve::Installed { paths };
                Ok(())
            }
            None => self.serve_installed(dir),
        }
    }

    fn replace_held(&self, held: Bits) {
        let bytes = held.to_bytes();
        let complete = held.is_full();
        *lock(&self.inner.held) = held;
        for p in lock(&self.inner.peers).values() {
            p.send(Msg::Bitfield(bytes.clone()));
            if complete {
                p.send(Msg::NotInterested);
            }
        }
        self.inner.wake.notify_waiters();
        self.inner.announce_now.notify_waiters();
    }

    /// Counters so far.
    pub fn stats(&self) -> SwarmStats {
        let i = &self.inner;
        SwarmStats {
            peers: lock(&i.peers).len(),
            peer_bytes: i.peer_bytes.load(Ordering::Relaxed),
            origin_bytes: i.origin_bytes.load(Ordering::Relaxed),
            wasted_bytes: i.wasted_bytes.load(Ordering::Relaxed),
            uploaded_bytes: i.uploaded_bytes.load(Ordering::Relaxed),
            banned_peers: i.banned_count.load(Ordering::Relaxed),
            bytes_dropped_installer_gone: i.bytes_dropped_installer_gone.load(Ordering::Relaxed),
            requests_unreadable: i.requests_unreadable.load(Ordering::Relaxed),
            answers_unsent_stream_closed: i.answers_unsent_stream_closed.load(Ordering::Relaxed),
            serve_reads_failed: i.serve_reads_failed.load(Ordering::Relaxed),
            serve_reads_corrupt: i.serve_reads_corrupt.load(Ordering::Relaxed),
        }
    }

    /// Connects to a peer (it may be refused or fail; the swarm goes on).
    pub fn add_peer(&self, addr: SocketAddr) {
        spawn_connect(&self.inner, addr);
    }

    /// Leaves the tracker and closes every connection.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        if let Some(api) = &self.inner.api {
            if let Err(error) = api.leave_swarm(&self.inner.game, &self.inner.version).await {
                // The tracker forgets a peer that stops announcing anyway.
                tracing::debug!(%error, "leaving the tracker failed");
            }
        }
        for p in lock(&self.inner.peers).values() {
            p.conn.close(CLOSE_DONE.into(), b"bye");
        }
        self.inner.endpoint.close(CLOSE_DONE.into(), b"bye");
        self.inner.wake.notify_waiters();
    }
}

fn transport(depth: usize) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // 15 s, in milliseconds.
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        15_000,
    ))));
    t.keep_alive_interval(Some(Duration::from_secs(3)));
    t.max_concurrent_uni_streams(0u8.into());
    // The control stream and `depth` requests (plus a few for doubled endgame requests).
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32((depth + 3).min(64) as u32));
    t.stream_receive_window(quinn::VarInt::from_u32(1 << 20));
    t.receive_window(quinn::VarInt::from_u32(8 << 20));
    t.send_window(8 << 20);
    // Builds are bulk transfers: let MTU discovery find large datagrams where the path allows
    // them (loopback, jumbo-frame LANs); elsewhere probes fail and it stays at 1452 bytes.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(16_384);
    t.mtu_discovery_config(Some(mtu));
    t
}

fn rand_u64() -> u64 {
    rand::random()
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn idx(&self, i: u32) -> Option<ChunkRef> {
        self.table.get(i)
    }

    /// Chunk `i` from the recent ones in memory, if held.
    fn recent_chunk(&self, i: u32) -> Option<Bytes> {
        if !lock(&self.held).get(i as usize) {
            return None;
        }
        lock(&self.recent).get(i)
    }

    /// Reads and verifies chunk `i` for serving.
    fn read_chunk(&self, i: u32) -> Option<Vec<u8>> {
        if !lock(&self.held).get(i as usize) {
            return None;
        }
        let c = self.idx(i)?;
        let loc = match &*lock(&self.serve) {
            Serve::Staging(staging) => {
                return match staging.get(&c.hash) {
                    Ok(data) => data,
                    Err(_) => {
                        self.serve_reads_failed.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                };
            }
            Serve::Installed { paths } => {
                let (fi, off) = self.table.first_place(i)?;
                (paths.get(fi)?.clone(), off)
            }
        };
        let read = || -> std::io::Result<Vec<u8>> {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&loc.0)?;
            f.seek(SeekFrom::Start(loc.1))?;
            let mut buf = vec![0u8; c.size as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        };
        match read() {
            Ok(buf) if blake3::hash(&buf).as_bytes() == &c.hash => Some(buf),
            Ok(_) => {
                self.serve_reads_corrupt.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(_) => {
                self.serve_reads_failed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn broadcast(&self, m: Msg) {
        for p in lock(&self.peers).values() {
            p.send(m.clone());
        }
    }

    /// A verified chunk arrived (from a peer or the origin): hand it to the installer.
    async fn deliver(&self, i: u32, data: Verified, from_peer: bool) {
        let n = data.bytes().len() as u64;
        // The installer's channel is taken before the chunk counts as delivered: once the
        // last chunk counts, the download ends and clears `out`, and a chunk counted but not
        // yet sent would be lost (a fetch then stopped a few chunks short).
        let out = lock(&self.out).clone();
        let new = out.is_some()
            && lock(&self.picker)
                .as_mut()
                .is_some_and(|p| p.finished(i, true));
        let (true, Some(out)) = (new, out) else {
            self.wasted_bytes.fetch_add(n, Ordering::Relaxed);
            return;
        };
        if from_peer {
            self.peer_bytes.fetch_add(n, Ordering::Relaxed);
        } else {
            self.origin_bytes.fetch_add(n, Ordering::Relaxed);
        }
        lock(&self.recent).push(i, data.shared());
        let corrupt = self.corrupt_pending.swap(0, Ordering::Relaxed);
        if out.send(Ok((data, corrupt))).await.is_err() {
            self.bytes_dropped_installer_gone
                .fetch_add(n, Ordering::Relaxed);
        }
        self.wake.notify_waiters();
    }

    fn failed(&self, i: u32) {
        if let Some(p) = lock(&self.picker).as_mut() {
            p.finished(i, false);
        }
        self.wake.notify_waiters();
    }

    fn released(&self, i: u32) {
        if let Some(p) = lock(&self.picker).as_mut() {
            p.released(i);
        }
        self.wake.notify_waiters();
    }

    fn drop_peer(&self, peer: &Peer) {
        let removed = {
            let mut peers = lock(&self.peers);
            match peers.get(&peer.id) {
                Some(p) if std::ptr::eq(Arc::as_ptr(p), peer) => peers.remove(&peer.id),
                _ => None,
            }
        };
        if removed.is_some() {
            let st = lock(&peer.state);
            if let Some(p) = lock(&self.picker).as_mut() {
                p.remove_peer(&st.bits);
                for &i in &st.asked {
                    p.released(i);
                }
            }
        }
        self.wake.notify_waiters();
    }

    fn ban(&self, peer: &Peer, why: &str) {
        if lock(&self.banned).insert(peer.addr) {
            tracing::warn!(peer = %peer.addr, why, "dropping peer");
            self.banned_count.fetch_add(1, Ordering::Relaxed);
        }
        peer.conn.close(CLOSE_CORRUPT.into(), why.as_bytes());
        self.drop_peer(peer);
    }
}

impl ChunkSource for Swarm {
    fn fetch(&self, chunk: ChunkRef) -> BoxFuture<'_, Result<Vec<u8>, ContentError>> {
        Box::pin(async move {
            match &self.inner.origin {
                Some(o) => o.fetch(chunk).await,
                None => Err(ContentError::Fetch("no origin to repair from".into())),
            }
        })
    }

    fn download<'a>(
        &'a self,
        table: Arc<ChunkTable>,
        wanted: Bits,
        opts: InstallOptions,
        out: mpsc::Sender<Delivered>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            if table.id() != inner.table.id() {
                tell_installer(
                    &out,
                    ContentError::Invalid(
                        "asked for chunks of another version than the swarm's".into(),
                    ),
                )
                .await;
                return;
            }
            let needed = wanted.ones().map(|i| i as u32);
            let mut picker = Picker::new(inner.table.len(), needed, rand_u64());
            drop(wanted);
            for p in lock(&inner.peers).values() {
                picker.add_peer(&lock(&p.state).bits);
            }
            // The channel first: a chunk counts as delivered only once it can be sent.
            *lock(&inner.out) = Some(out.clone());
            *lock(&inner.picker) = Some(picker);
            // Tell peers what we want now that we know.
            for p in lock(&inner.peers).values() {
                update_interest(inner, p);
                p.wake.notify_waiters();
            }
            inner.wake.notify_waiters();
            // Give the first peers a moment to connect before the origin is used.
            let settle = Instant::now() + inner.opts.settle;
            let mut origin_tasks = Vec::new();
            if inner.origin.is_some() {
                for _ in 0..inner.opts.origin_depth.max(1) {
                    origin_tasks.push(tokio::spawn(origin_worker(
                        inner.clone(),
                        settle,
                        opts.attempts.max(1) as u32,
                    )));
                }
            }
            loop {
                let notified = inner.wake.notified();
                if lock(&inner.picker).as_ref().is_none_or(Picker::done) || out.is_closed() {
                    break;
                }
                if origin_tasks.iter().all(|t| t.is_finished()) && inner.origin.is_some() {
                    // The origin gave up on a chunk no peer holds.
                    break;
                }
                notified_or_after(notified, Duration::from_millis(500)).await;
            }
            for t in origin_tasks {
                t.abort();
            }
            *lock(&inner.out) = None;
            // Done (or given up): nothing more is picked, and its per-chunk state goes.
            *lock(&inner.picker) = None;
            for p in lock(&inner.peers).values() {
                update_interest(inner, p);
            }
        })
    }

    fn chunk_table(&self) -> Option<Arc<ChunkTable>> {
        Some(self.inner.table.clone())
    }

    fn attach_staging(&self, staging: Arc<Staging>) {
        self.serve_staging(staging);
    }

    fn stored(&self, chunk: &ChunkRef) {
        let Some(i) = self.inner.table.find(&chunk.hash) else {
            return;
        };
        let (new, full) = {
            let mut held = lock(&self.inner.held);
            (held.set(i as usize), held.is_full())
        };
        if new {
            self.inner.broadcast(Msg::Have(i));
            if full {
                self.inner.announce_now.notify_waiters();
            }
        }
    }

    fn sources(&self) -> (usize, u64, u64) {
        let s = self.stats();
        (s.peers, s.peer_bytes, s.origin_bytes)
    }
}

async fn origin_worker(inner: Arc<Inner>, settle: Instant, attempts: u32) {
    tokio::time::sleep_until(settle.into()).await;
    let Some(origin) = inner.origin.clone() else {
        return;
    };
    let mut fails: HashMap<u32, u32> = HashMap::new();
    loop {
        let notified = inner.wake.notified();
        let pick = {
            let mut g = lock(&inner.picker);
            match g.as_mut() {
                None => return,
                Some(p) if p.done() => return,
                Some(p) => p.pick_for_origin(inner.now_ms()),
            }
        };
        let Some(i) = pick else {
            notified_or_after(notified, Duration::from_millis(100)).await;
            continue;
        };
        let Some(c) = inner.idx(i) else { return };
        inner.broadcast(Msg::Claim(i));
        inner.down.wait(u64::from(c.size)).await;
        match origin.fetch(c).await.map(|d| Verified::check(c, d)) {
            Ok(Ok(v)) => {
                inner.deliver(i, v, false).await;
            }
            other => {
                if let Ok(Err(d)) = other {
                    inner
                        .wasted_bytes
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                    inner.corrupt_pending.fetch_add(1, Ordering::Relaxed);
                }
                inner.released(i);
                let f = fails.entry(i).or_default();
                *f += 1;
                if *f >= attempts {
                    let out = lock(&inner.out).clone();
                    if let Some(out) = out {
                        let error = ContentError::Fetch(format!(
                            "the origin failed {attempts} times to deliver chunk {}",
                            chunk_name(&c.hash)
                        ));
                        tell_installer(&out, error).await;
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Hands the installer an error that ends its download; logged when the installer had stopped
/// already (then nobody waits for it).
async fn tell_installer(out: &mpsc::Sender<Delivered>, error: ContentError) {
    if let Err(mpsc::error::SendError(Err(error))) = out.send(Err(error)).await {
        tracing::debug!(%error, "the installer had stopped; its download's error goes unread");
    }
}

/// Waits until `notified` fires or `at_most` passes, whichever comes first.
async fn notified_or_after(notified: tokio::sync::futures::Notified<'_>, at_most: Duration) {
    tokio::select! {
        () = notified => {}
        () = tokio::time::sleep(at_most) => {}
    }
}

fn update_interest(inner: &Inner, p: &Peer) {
    // Lock order everywhere: peers, then a peer's state, then the picker.
    let mut st = lock(&p.state);
    let interesting = lock(&inner.picker)
        .as_ref()
        .is_some_and(|pk| !pk.done() && pk.interesting(&st.bits));
    if interesting != st.we_are_interested {
        st.we_are_interested = interesting;
        p.send(if interesting {
            Msg::Interested
        } else {
            Msg::NotInterested
        });
    }
}

fn spawn_connect(inner: &Arc<Inner>, addr: SocketAddr) {
    if inner.closed.load(Ordering::Relaxed)
        || lock(&inner.banned).contains(&addr)
        || Some(addr) == inner.endpoint.local_addr().ok()
        || lock(&inner.peers).values().any(|p| p.addr == addr)
        || lock(&inner.peers).len() >= inner.opts.max_peers
        || !lock(&inner.connecting).insert(addr)
    {
        return;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        let r = connect(&inner, addr).await;
        lock(&inner.connecting).remove(&addr);
        if let Err(e) = r {
            tracing::debug!(%addr, error = %e, "peer connection failed");
        }
    });
}

async fn connect(inner: &Arc<Inner>, addr: SocketAddr) -> Result<(), String> {
    let conn = inner
        .endpoint
        .connect_with(inner.client_cfg.clone(), addr, "volley-peer")
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&hello(inner).frame())
        .await
        .map_err(|e| e.to_string())?;
    let theirs = read_hello(inner, &mut recv).await?;
    run_peer(inner.clone(), conn, theirs, true, send, recv).await;
    Ok(())
}

fn hello(inner: &Inner) -> Msg {
    Msg::Hello(Hello {
        peer_id: inner.peer_id,
        manifest_id: inner.manifest_id,
        chunks: inner.table.len() as u32,
    })
}

async fn read_msg(recv: &mut quinn::RecvStream) -> Result<Msg, String> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| e.to_string())?;
    let n = Msg::frame_len(prefix).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; n];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Msg::decode(&body).map_err(|e| e.to_string())
}

async fn read_hello(inner: &Inner, recv: &mut quinn::RecvStream) -> Result<Hello, String> {
    let m = tokio::time::timeout(Duration::from_secs(5), read_msg(recv))
        .await
        .map_err(|_| "no hello".to_owned())??;
    let Msg::Hello(h) = m else {
        return Err("first message is not a hello".into());
    };
    if h.manifest_id != inner.manifest_id || h.chunks as usize != inner.table.len() {
        return Err("the peer serves another version".into());
    }
    if h.peer_id == inner.peer_id {
        return Err("connected to ourselves".into());
    }
    Ok(h)
}

async fn accept_loop(inner: Arc<Inner>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        if inner.closed.load(Ordering::Relaxed) {
            break;
        }
        if lock(&inner.banned).contains(&incoming.remote_address())
            || lock(&inner.peers).len() >= inner.opts.max_peers
        {
            incoming.refuse();
            continue;
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            let conn = match tokio::time::timeout(Duration::from_secs(5), incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(error)) => {
                    tracing::debug!(%addr, %error, "incoming peer handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "incoming peer handshake timed out");
                    return;
                }
            };
            let (mut send, mut recv) =
                match tokio::time::timeout(Duration::from_secs(5), conn.accept_bi()).await {
                    Ok(Ok(streams)) => streams,
                    Ok(Err(error)) => {
                        tracing::debug!(%addr, %error, "incoming peer opened no control stream");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "incoming peer opened no control stream in time");
                        return;
                    }
                };
            match read_hello(&inner, &mut recv).await {
                Ok(h) => {
                    if send.write_all(&hello(&inner).frame()).await.is_ok() {
                        run_peer(inner, conn, h, false, send, recv).await;
                    }
                }
                Err(e) => conn.close(CLOSE_PROTOCOL.into(), e.as_bytes()),
            }
        });
    }
}

/// Registers a connected peer and runs it until the connection ends.
async fn run_peer(
    inner: Arc<Inner>,
    conn: quinn::Connection,
    h: Hello,
    outbound: bool,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let (ctl, mut ctl_rx) = mpsc::channel::<Msg>(CTL_DEPTH);
    let peer = Arc::new(Peer {
        id: h.peer_id,
        addr: conn.remote_address(),
        outbound,
        conn: conn.clone(),
        ctl,
        state: Mutex::new(PeerState {
            bits: Bits::new(inner.table.len()),
            choking_us: true,
            choked: true,
            interested_in_us: false,
            we_are_interested: false,
            active: true,
            asked: HashSet::new(),
            got_round: 0,
            sent_round: 0,
        }),
        wake: Notify::new(),
    });
    {
        // Two connections between the same pair: both sides keep the one the smaller id opened.
        let mut peers = lock(&inner.peers);
        if let Some(old) = peers.get(&h.peer_id) {
            let opener = |p: &Peer| if p.outbound { inner.peer_id } else { p.id };
            if opener(old) <= opener(&peer) {
                conn.close(CLOSE_DUPLICATE.into(), b"duplicate");
                return;
            }
            old.conn.close(CLOSE_DUPLICATE.into(), b"duplicate");
        }
        peers.insert(h.peer_id, peer.clone());
    }
    let bitfield = lock(&inner.held).to_bytes();
    peer.send(Msg::Bitfield(bitfield));
    // Writer: control messages in order, those waiting written together.
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(CTL_BATCH);
        let mut buf = Vec::new();
        while ctl_rx.recv_many(&mut batch, CTL_BATCH).await > 0 {
            buf.clear();
            for m in batch.drain(..) {
                buf.extend_from_slice(&m.frame());
            }
            if send.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let server = tokio::spawn(serve_requests(inner.clone(), peer.clone()));
    let downloader = tokio::spawn(download_from(inner.clone(), peer.clone()));
    // Reader: the control stream until it fails.
    let why = loop {
        let m = match read_msg(&mut recv).await {
            Ok(m) => m,
            Err(e) => break e,
        };
        if let Err(e) = on_msg(&inner, &peer, m) {
            conn.close(CLOSE_PROTOCOL.into(), e.to_string().as_bytes());
            break e.to_string();
        }
    };
    tracing::debug!(peer = %peer.addr, why, "peer gone");
    conn.close(CLOSE_DONE.into(), b"");
    inner.drop_peer(&peer);
    writer.abort();
    server.abort();
    downloader.abort();
}

fn on_msg(inner: &Inner, peer: &Peer, m: Msg) -> Result<(), WireError> {
    match m {
        Msg::Hello(_) => return Err(WireError::UnknownType(1)),
        Msg::Bitfield(bytes) => {
            let bits = Bits::from_bytes(&bytes, inner.table.len())?;
            let old = std::mem::replace(&mut lock(&peer.state).bits, bits.clone());
            if let Some(p) = lock(&inner.picker).as_mut() {
                p.remove_peer(&old);
                p.add_peer(&bits);
            }
            update_interest(inner, peer);
            peer.wake.notify_waiters();
        }
        Msg::Have(i) => {
            if i as usize >= inner.table.len() {
                return Err(WireError::Trailing);
            }
            if lock(&peer.state).bits.set(i as usize) {
                let wanted = {
                    let mut g = lock(&inner.picker);
                    g.as_mut().is_some_and(|p| {
                        p.peer_has(i);
                        !p.has(i)
                    })
                };
                if wanted && !lock(&peer.state).we_are_interested {
                    update_interest(inner, peer);
                }
                peer.wake.notify_waiters();
            }
        }
        Msg::Choke => lock(&peer.state).choking_us = true,
        Msg::Unchoke => {
            lock(&peer.state).choking_us = false;
            peer.wake.notify_waiters();
        }
        Msg::Interested => {
            let unchoke = {
                let mut st = lock(&peer.state);
                st.interested_in_us = true;
                st.choked
            };
            // A free upload slot is given at once.
            if unchoke && unchoked_count(inner) < inner.opts.upload_slots.max(1) {
                set_choke(peer, false);
            }
        }
        Msg::NotInterested => lock(&peer.state).interested_in_us = false,
        Msg::Claim(i) => {
            if i as usize >= inner.table.len() {
                return Err(WireError::Trailing);
            }
            let now = inner.now_ms();
            if let Some(p) = lock(&inner.picker).as_mut() {
                p.claimed(i, now + 10_000, now);
            }
        }
    }
    Ok(())
}

fn unchoked_count(inner: &Inner) -> usize {
    lock(&inner.peers)
        .values()
        .filter(|p| !lock(&p.state).choked)
        .count()
}

fn set_choke(peer: &Peer, choke: bool) {
    let mut st = lock(&peer.state);
    if st.choked != choke {
        st.choked = choke;
        peer.send(if choke { Msg::Choke } else { Msg::Unchoke });
    }
}

/// Serves the peer's chunk requests, one stream each.
async fn serve_requests(inner: Arc<Inner>, peer: Arc<Peer>) {
    while let Ok((mut send, mut recv)) = peer.conn.accept_bi().await {
        let inner = inner.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let mut b = [0u8; 4];
            if tokio::time::timeout(Duration::from_secs(5), recv.read_exact(&mut b))
                .await
                .map_or(true, |r| r.is_err())
            {
                inner.requests_unreadable.fetch_add(1, Ordering::Relaxed);
                // dropped: fails only on a stream finished or reset already, needing no reset
                let _ = send.reset(1u8.into());
                return;
            }
            let i = u32::from_be_bytes(b);
            let status = if i as usize >= inner.table.len() {
                Status::BadIndex
            } else if lock(&peer.state).choked {
                Status::Choked
            } else {
                Status::Ok
            };
            let data = if status != Status::Ok {
                None
            } else if let Some(b) = inner.recent_chunk(i) {
                Some(b)
            } else {
                let inner2 = inner.clone();
                let read = match tokio::task::spawn_blocking(move || inner2.read_chunk(i)).await {
                    Ok(read) => read.map(Bytes::from),
                    // The read panicked (or the runtime is shutting down).
                    Err(_) => {
                        inner.serve_reads_failed.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                };
                if let Some(b) = &read {
                    lock(&inner.recent).push(i, b.clone());
                }
                read
            };
            let Some(data) = data else {
                let s = if status == Status::Ok {
                    Status::DontHave
                } else {
                    status
                };
                let answered = send.write_all(&[s as u8]).await.is_ok() && send.finish().is_ok();
                if !answered {
                    inner
                        .answers_unsent_stream_closed
                        .fetch_add(1, Ordering::Relaxed);
                }
                return;
            };
            inner.up.wait(data.len() as u64).await;
            let n = data.len();
            let mut answered = false;
            if send.write_all(&[Status::Ok as u8]).await.is_ok()
                && send.write_chunk(data).await.is_ok()
            {
                // Counted before the stream is finished: the peer holds the chunk only once the
                // end arrives, so no peer can report bytes this side has not counted yet.
                inner.uploaded_bytes.fetch_add(n as u64, Ordering::Relaxed);
                lock(&peer.state).sent_round += n as u64;
                answered = send.finish().is_ok();
            }
            if !answered {
                inner
                    .answers_unsent_stream_closed
                    .fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Keeps up to `peer_depth` requests open to the peer while it has chunks we need.
async fn download_from(inner: Arc<Inner>, peer: Arc<Peer>) {
    let depth = Arc::new(tokio::sync::Semaphore::new(inner.opts.peer_depth.max(1)));
    loop {
        let notified = peer.wake.notified();
        let global = inner.wake.notified();
        let Ok(permit) = depth.clone().acquire_owned().await else {
            return;
        };
        let pick = {
            let st = lock(&peer.state);
            if st.choking_us || !st.active {
                None
            } else {
                let mut g = lock(&inner.picker);
                match g.as_mut() {
                    Some(p) if !p.done() => p.pick_for_peer(&st.bits, |i| st.asked.contains(&i)),
                    _ => None,
                }
            }
        };
        let Some(i) = pick else {
            drop(permit);
            tokio::select! {
                _ = notified => {}
                _ = global => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            continue;
        };
        lock(&peer.state).asked.insert(i);
        let inner = inner.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let r = tokio::time::timeout(inner.opts.request_timeout, request(&inner, &peer, i))
                .await
                .unwrap_or(Err(Fail::Slow));
            lock(&peer.state).asked.remove(&i);
            match r {
                Ok(data) => {
                    lock(&peer.state).got_round += data.bytes().len() as u64;
                    inner.deliver(i, data, true).await;
                }
                Err(Fail::Choked) => {
                    lock(&peer.state).choking_us = true;
                    inner.released(i);
                }
                Err(Fail::Corrupt(n)) => {
                    inner.wasted_bytes.fetch_add(n, Ordering::Relaxed);
                    inner.corrupt_pending.fetch_add(1, Ordering::Relaxed);
                    inner.failed(i);
                    inner.ban(&peer, "served a corrupt chunk");
                }
                Err(Fail::Protocol) => {
                    inner.failed(i);
                    peer.conn.close(CLOSE_PROTOCOL.into(), b"bad response");
                }
                Err(Fail::DontHave | Fail::Slow | Fail::Gone) => inner.failed(i),
            }
            drop(permit);
        });
    }
}

enum Fail {
    Choked,
    DontHave,
    Corrupt(u64),
    Protocol,
    Slow,
    Gone,
}

async fn request(inner: &Inner, peer: &Peer, i: u32) -> Result<Verified, Fail> {
    let c = inner.idx(i).ok_or(Fail::Protocol)?;
    inner.down.wait(u64::from(c.size)).await;
    let (mut send, mut recv) = peer.conn.open_bi().await.map_err(|_| Fail::Gone)?;
    send.write_all(&i.to_be_bytes())
        .await
        .map_err(|_| Fail::Gone)?;
    // Fails only on a stream closed already: then no answer can come.
    send.finish().map_err(|_| Fail::Gone)?;
    let mut status = [0u8; 1];
    recv.read_exact(&mut status).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => Fail::Protocol,
        quinn::ReadExactError::ReadError(_) => Fail::Gone,
    })?;
    let body = recv
        .read_to_end(c.size as usize)
        .await
        .map_err(|e| match e {
            quinn::ReadToEndError::TooLong => Fail::Protocol,
            quinn::ReadToEndError::Read(_) => Fail::Gone,
        })?;
    match Status::from_byte(status[0]) {
        Some(Status::Ok) => Verified::check(c, body).map_err(|d| Fail::Corrupt(d.len() as u64)),
        Some(_) if !body.is_empty() => Err(Fail::Protocol),
        Some(Status::Choked) => Err(Fail::Choked),
        Some(Status::DontHave) => Err(Fail::DontHave),
        Some(Status::BadIndex) | None => Err(Fail::Protocol),
    }
}

/// Every 2 s: unchoke the interested peers that gave us the most (while downloading) or took
/// the most (while seeding), up to the slots, plus one optimistic unchoke that rotates; mark
/// the nearest peers active for downloading.
async fn choke_loop(inner: Arc<Inner>) {
    let mut round = 0u64;
    let mut optimistic: Option<u64> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if inner.closed.load(Ordering::Relaxed) {
            return;
        }
        round += 1;
        let peers: Vec<Arc<Peer>> = lock(&inner.peers).values().cloned().collect();
        let downloading = lock(&inner.picker).as_ref().is_some_and(|p| !p.done());
        let mut ranked: Vec<(u64, u64)> = peers
            .iter()
            .filter_map(|p| {
                let mut st = lock(&p.state);
                let score = if downloading {
                    st.got_round
                } else {
                    st.sent_round
                };
                st.got_round = 0;
                st.sent_round = 0;
                st.interested_in_us.then_some((score, p.id))
            })
            .collect();
        ranked.sort_by_key(|&(score, id)| (std::cmp::Reverse(score), id));
        let slots = inner.opts.upload_slots.max(1);
        let mut unchoke: HashSet<u64> = ranked.iter().take(slots).map(|&(_, id)| id).collect();
        if round % 3 == 1 || optimistic.is_none_or(|o| !ranked.iter().any(|&(_, id)| id == o)) {
            let rest: Vec<u64> = ranked.iter().skip(slots).map(|&(_, id)| id).collect();
            optimistic = (!rest.is_empty()).then(|| rest[(rand_u64() as usize) % rest.len()]);
        }
        if let Some(o) = optimistic {
            unchoke.insert(o);
        }
        for p in &peers {
            set_choke(p, !unchoke.contains(&p.id));
        }
        // The nearest peers are the ones we download from.
        let mut by_rtt: Vec<(Duration, &Arc<Peer>)> =
            peers.iter().map(|p| (p.conn.rtt(), p)).collect();
        by_rtt.sort_by_key(|&(rtt, p)| (rtt, p.id));
        for (k, (_, p)) in by_rtt.iter().enumerate() {
            let active = k < inner.opts.download_peers.max(1);
            lock(&p.state).active = active;
            if active {
                p.wake.notify_waiters();
            }
        }
    }
}

/// Announces to the node's tracker and connects to the peers it names.
async fn announce_loop(inner: Arc<Inner>) {
    let Some(api) = inner.api.clone() else {
        return;
    };
    let Some(port) = inner.endpoint.local_addr().ok().map(|a| a.port()) else {
        return;
    };
    loop {
        if inner.closed.load(Ordering::Relaxed) {
            return;
        }
        // Registered before announcing, so a change during the announce is not missed.
        let notified = inner.announce_now.notified();
        let have = lock(&inner.held).count() as u32;
        match api
            .announce_peer(
                &inner.game,
                &inner.version,
                &volley_proto::api::PeerAnnounce {
                    port,
                    have_chunks: have,
                    total_chunks: inner.table.len() as u32,
                },
            )
            .await
        {
            Ok(peers) => {
                for p in peers.peers {
                    match p.addr.parse::<SocketAddr>() {
                        Ok(addr) => spawn_connect(&inner, addr),
                        Err(error) => {
                            tracing::debug!(addr = %p.addr, %error, "tracker named a bad address");
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "tracker announce failed"),
        }
        // Re-announce on schedule, or as soon as this peer became a seed (others then see
        // it as complete); never more than 5 times a second.
        notified_or_after(notified, inner.opts.announce_every).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// LAN discovery: every 2 s, multicast `VLYL` + manifest id + peer id + port; connect to
/// every member of the same version heard.
async fn lan_loop(inner: Arc<Inner>, group: SocketAddrV4, iface: Ipv4Addr) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::from(([0, 0, 0, 0], group.port())).into())?;
    s.join_multicast_v4(group.ip(), &iface)?;
    s.set_multicast_if_v4(&iface)?;
    s.set_multicast_loop_v4(true)?;
    s.set_nonblocking(true)?;
    let sock = tokio::net::UdpSocket::from_std(s.into())?;
    let port = inner.endpoint.local_addr()?.port();
    let mut hello = Vec::with_capacity(46);
    hello.extend_from_slice(LAN_MAGIC);
    hello.extend_from_slice(&inner.manifest_id);
    hello.extend_from_slice(&inner.peer_id.to_be_bytes());
    hello.extend_from_slice(&port.to_be_bytes());
    let mut buf = [0u8; 128];
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    // Whether the last announcement failed: a failure is logged when it starts, not every 2 s.
    let mut failing = false;
    loop {
        if inner.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        tokio::select! {
            _ = tick.tick() => {
                match sock.send_to(&hello, SocketAddr::V4(group)).await {
                    Ok(_) => failing = false,
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(
                            %group,
                            %error,
                            "LAN announcement not sent; peers on the LAN may not find this one"
                        );
                    }
                    // Still failing: logged when the failures started.
                    Err(_) => {}
                }
            }
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r?;
                if let Some((id, port)) = parse_lan(&buf[..n], &inner.manifest_id) {
                    if id != inner.peer_id && !lock(&inner.peers).contains_key(&id) {
                        spawn_connect(&inner, SocketAddr::new(from.ip(), port));
                    }
                }
            }
        }
    }
}

/// A LAN announcement for `manifest_id`: (peer id, port).
fn parse_lan(b: &[u8], manifest_id: &[u8; 32]) -> Option<(u64, u16)> {
    if b.len() != 46 || &b[..4] != LAN_MAGIC || &b[4..36] != manifest_id {
        return None;
    }
    let id = u64::from_be_bytes(b[36..44].try_into().ok()?);
    let port = u16::from_be_bytes(b[44..46].try_into().ok()?);
    (port != 0).then_some((id, port))
}

/// What a swarm fetch did.
#[derive(Debug, Clone)]
pub struct SwarmFetch {
    /// The install.
    pub report: volley_content::install::InstallReport,
    /// The swarm's counters at the end of the install.
    pub stats: SwarmStats,
    /// The swarm, now serving the installed version (drop or close it to stop seeding).
    pub swarm: Swarm,
}

/// Fetches `version` of `game` like [`crate::content::fetch_with`], from peers and the origin at
/// once, serving what it holds to others while it runs; afterwards the returned swarm serves
/// the whole installed version. `api` (logged in to the node) is used for the tracker; without
/// it only `opts.peers` and LAN discovery find peers.
#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    base: &str,
    api: Option<Api>,
    game: &str,
    version: &str,
    to: &Path,
    trusted: &ed25519_dalek::VerifyingKey,
    install: InstallOptions,
    opts: SwarmOptions,
    progress: impl FnMut(&volley_content::install::Progress) + Send,
) -> Result<SwarmFetch, Error> {
    let origin = Origin::new(base, game);
    let m = origin.open_version(version, trusted).await?;
    volley_content::install::recover(to)?;
    let swarm = Swarm::start(m.clone(), Some(origin), api, opts)?;
    let r = volley_content::install::install(m, to, &swarm, install, progress).await;
    let stats = swarm.stats();
    match r {
        Ok(report) => {
            swarm.serve_swapped(to)?;
            Ok(SwarmFetch {
                report,
                stats,
                swarm,
            })
        }
        Err(e) => {
            swarm.close().await;
            Err(e.into())
        }
    }
}

/// Serves the version installed in `to` to the swarm (a seed). The version's manifest comes
/// from the install itself, checked against `trusted`.
pub async fn seed(
    to: &Path,
    trusted: &ed25519_dalek::VerifyingKey,
    api: Option<Api>,
    opts: SwarmOptions,
) -> Result<Swarm, Error> {
    let Some(m) = volley_content::install::installed(to)? else {
        return Err(ContentError::Invalid(format!("{} holds no install", to.display())).into());
    };
    if m.key() != trusted {
        return Err(ContentError::BadSignature(format!(
            "{} holds a version signed by {}, which is not the trusted publisher {}",
            to.display(),
            hex::encode(m.key().as_bytes()),
            hex::encode(trusted.as_bytes())
        ))
        .into());
    }
    let m = Arc::new(m);
    let swarm = Swarm::start(m.clone(), None, api, opts)?;
    // Read from disk from here on, if the install's state folder takes a file (it stays in
    // memory otherwise).
    if let Err(error) = m.move_to_disk(&to.join(".volley")) {
        tracing::warn!(%error, "the manifest stays in memory: it could not be moved to disk");
    }
    swarm.serve_installed(to)?;
    Ok(swarm)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lan_announcements_parse_only_for_our_version() {
        let id = [7u8; 32];
        let mut b = Vec::new();
        b.extend_from_slice(LAN_MAGIC);
        b.extend_from_slice(&id);
        b.extend_from_slice(&42u64.to_be_bytes());
        b.extend_from_slice(&9000u16.to_be_bytes());
        assert_eq!(parse_lan(&b, &id), Some((42, 9000)));
        assert_eq!(parse_lan(&b, &[8u8; 32]), None);
        assert_eq!(parse_lan(&b[..45], &id), None);
        b[45] = 0;
        b[44] = 0;
        assert_eq!(parse_lan(&b, &id), None, "port 0");
    }
}
