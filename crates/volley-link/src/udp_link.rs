//! A UDP proxy on loopback that impairs traffic: link emulation for tests that run without root.
//!
//! [`UdpLinkEmulator`] listens on one address and forwards to one target. Every distinct client
//! source address gets its own upstream socket, so the target sees one address per client (like
//! a NAT), and its own pair of [`Impairment`]s. Packets wait in a timer queue until their
//! delivery time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::impair::{Impairment, LinkProfile, ProfileError};
use crate::stats::{derive_seed, DirectionCounters, DirectionStats, EmulatorDrop};

/// Most distinct client addresses served; packets from further clients are dropped and counted
/// in [`UdpLinkStats::clients_rejected`].
pub const CLIENTS_MAX: usize = 1024;
/// Most packets waiting in the timer queue (both directions together).
pub const IN_FLIGHT_PACKETS_MAX: usize = 16 * 1024;
/// Most bytes waiting in the timer queue (both directions together).
pub const IN_FLIGHT_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Most packets waiting between the upstream readers and the forwarding task.
const DOWNSTREAM_CHANNEL_PACKETS_MAX: usize = 4096;
/// Largest UDP payload.
const DATAGRAM_BYTES_MAX: usize = 65_535;
/// Consecutive socket errors after which a reader gives up, so a broken socket cannot spin.
const CONSECUTIVE_ERRORS_MAX: u32 = 1000;

/// Errors from [`UdpLinkEmulator`].
#[derive(Debug, thiserror::Error)]
pub enum UdpLinkError {
    /// A profile failed validation.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Binding the listening socket failed.
    #[error("binding the emulator to {addr}: {source}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The forwarding task is gone (it was shut down or it panicked).
    #[error("the emulator task has stopped")]
    Stopped,
}

/// Counters of a [`UdpLinkEmulator`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpLinkStats {
    /// Client → target.
    pub up: DirectionStats,
    /// Target → client.
    pub down: DirectionStats,
    /// Distinct clients seen (each has its own upstream socket).
    pub clients: u64,
    /// Packets dropped because [`CLIENTS_MAX`] clients were already served, or because no
    /// upstream socket could be bound for a new client.
    pub clients_rejected: u64,
    /// Packets from an address other than the target that reached a client's upstream socket,
    /// ignored as a port-restricted NAT ignores them (not counted in `down`).
    pub foreign_ignored: u64,
}

/// State shared between the handle and the forwarding task.
#[derive(Debug, Default)]
struct Shared {
    blackhole: AtomicBool,
    up: DirectionCounters,
    down: DirectionCounters,
    clients: AtomicU64,
    clients_rejected: AtomicU64,
    foreign_ignored: AtomicU64,
}

/// A running UDP link emulator. Dropping it stops the forwarding task; [`Self::shutdown`] does
/// the same and waits for it.
///
/// ```no_run
/// # async fn demo() -> Result<(), volley_link::udp_link::UdpLinkError> {
/// use volley_link::impair::LinkProfile;
/// use volley_link::udp_link::UdpLinkEmulator;
/// let server = "127.0.0.1:4433".parse().unwrap();
/// let wifi = LinkProfile::by_name("wifi").unwrap();
/// let link = UdpLinkEmulator::start("127.0.0.1:0".parse().unwrap(), server, wifi, wifi, 1).await?;
/// // Point the client at link.local_addr() instead of the server.
/// link.set_blackhole(true); // the path dies
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct UdpLinkEmulator {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    profiles: watch::Sender<(LinkProfile, LinkProfile)>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl UdpLinkEmulator {
    /// Binds `listen` and starts forwarding to `target`, impairing client → target traffic with
    /// `up` and target → client traffic with `down`. Must be called inside a tokio runtime.
    ///
    /// Each client's impairments are seeded from `seed` and the order in which clients first
    /// appeared, so a single-client run is reproducible up to OS timing.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        up: LinkProfile,
        down: LinkProfile,
        seed: u64,
    ) -> Result<Self, UdpLinkError> {
        up.validate()?;
        down.validate()?;
        let socket = UdpSocket::bind(listen)
            .await
            .map_err(|source| UdpLinkError::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = socket.local_addr().map_err(|source| UdpLinkError::Bind {
            addr: listen,
            source,
        })?;
        let shared = Arc::new(Shared::default());
        let (profiles, profiles_rx) = watch::channel((up, down));
        let (stop, stop_rx) = oneshot::channel();
        let forwarder = Forwarder::new(socket, target, seed, shared.clone(), profiles_rx);
        let task = tokio::spawn(forwarder.run(stop_rx));
        Ok(Self {
            local_addr,
            shared,
            profiles,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address clients should send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces both profiles for every client, now and for clients that appear later. Packets
    /// already in flight keep their delivery times.
    pub fn set_profiles(&self, up: LinkProfile, down: LinkProfile) -> Result<(), UdpLinkError> {
        up.validate()?;
        down.validate()?;
        self.profiles
            .send((up, down))
            .map_err(|_| UdpLinkError::Stopped)
    }

    /// While `true`, every packet is dropped in both directions, including packets already in
    /// flight: the path is dead.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::Relaxed);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> UdpLinkStats {
        UdpLinkStats {
            up: self.shared.up.snapshot(),
            down: self.shared.down.snapshot(),
            clients: self.shared.clients.load(Ordering::Relaxed),
            clients_rejected: self.shared.clients_rejected.load(Ordering::Relaxed),
            foreign_ignored: self.shared.foreign_ignored.load(Ordering::Relaxed),
        }
    }

    /// Stops forwarding and waits for the task to end; packets still in flight are discarded.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            if stop.send(()).is_err() {
                tracing::debug!("udp link: the forwarding task had stopped already");
            }
        }
        if let Some(task) = self.task.take() {
            // A join error means the task panicked or was aborted; it is gone either way.
            match task.await {
                Ok(()) => {}
                Err(error) if error.is_panic() => {
                    tracing::warn!(%error, "udp link: the forwarding task panicked");
                }
                Err(error) => {
                    tracing::debug!(%error, "udp link: the forwarding task was cancelled")
                }
            }
        }
    }
}

impl Drop for UdpLinkEmulator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// A packet waiting for its delivery time. Ordered by `(at, seq)` only; `seq` keeps packets with
/// equal times in arrival order.
#[derive(Debug)]
struct InFlight {
    at: Instant,
    seq: u64,
    direction: Direction,
    client: usize,
    data: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Client {
    addr: SocketAddr,
    upstream: Arc<UdpSocket>,
    up: Impairment,
    down: Impairment,
}

/// The forwarding task's state. One task owns everything, so no locks are needed on the data
/// path; upstream sockets are read by small reader tasks that feed a bounded channel.
struct Forwarder {
    listen: Arc<UdpSocket>,
    target: SocketAddr,
    seed: u64,
    shared: Arc<Shared>,
    profiles: watch::Receiver<(LinkProfile, LinkProfile)>,
    epoch: Instant,
    clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<InFlight>>,
    queued_bytes: usize,
    next_seq: u64,
    readers: JoinSet<()>,
    down_tx: mpsc::Sender<(usize, Vec<u8>)>,
    down_rx: mpsc::Receiver<(usize, Vec<u8>)>,
}

impl Forwarder {
    fn new(
        listen: UdpSocket,
        target: SocketAddr,
        seed: u64,
        shared: Arc<Shared>,
        profiles: watch::Receiver<(LinkProfile, LinkProfile)>,
    ) -> Self {
        let (down_tx, down_rx) = mpsc::channel(DOWNSTREAM_CHANNEL_PACKETS_MAX);
        Self {
            listen: Arc::new(listen),
            target,
            seed,
            shared,
            profiles,
            epoch: Instant::now(),
            clients: Vec::new(),
            by_addr: HashMap::new(),
            queue: BinaryHeap::new(),
            queued_bytes: 0,
            next_seq: 0,
            readers: JoinSet::new(),
            down_tx,
            down_rx,
        }
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
        let mut consecutive_errors = 0u32;
        loop {
            // A far-future deadline when idle; the branch is disabled then anyway.
            let next_at = self.queue.peek().map(|Reverse(p)| p.at);
            let deadline = next_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = &mut stop => break,
                changed = self.profiles.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.apply_profiles();
                }
                received = self.listen.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        consecutive_errors = 0;
                        let data = buf.get(..len).unwrap_or_default().to_vec();
                        self.on_upstream_packet(from, data).await;
                    }
                    Err(error) => {
                        consecutive_errors += 1;
                        tracing::debug!(%error, "udp link: receive error");
                        if consecutive_errors > CONSECUTIVE_ERRORS_MAX {
                            tracing::warn!(%error, "udp link: listening socket keeps failing, stopping");
                            break;
                        }
                    }
                },
                Some((client, data)) = self.down_rx.recv() => self.on_downstream_packet(client, data),
                _ = tokio::time::sleep_until(deadline), if next_at.is_some() => {
                    self.deliver_due().await;
                }
            }
        }
        // Dropping `readers` aborts the upstream reader tasks.
    }

    fn apply_profiles(&mut self) {
        let (up, down) = *self.profiles.borrow_and_update();
        for client in &mut self.clients {
            // Profiles were validated by `set_profiles`, so these cannot fail; if they somehow
            // did, the old profile stays, which is the safe choice.
            for (direction, impairment, profile) in
                [("up", &mut client.up, up), ("down", &mut client.down, down)]
            {
                if let Err(error) = impairment.set_profile(profile) {
                    tracing::warn!(
                        client = %client.addr,
                        direction,
                        %error,
                        "udp link: profile refused; the client keeps its old one"
                    );
                }
            }
        }
    }

    fn now(&self) -> Duration {
        Instant::now().duration_since(self.epoch)
    }

    async fn on_upstream_packet(&mut self, from: SocketAddr, data: Vec<u8>) {
        self.shared.up.received(data.len());
        if self.shared.blackhole.load(Ordering::Relaxed) {
            self.shared.up.dropped(EmulatorDrop::Blackhole);
            return;
        }
        let client = match self.by_addr.get(&from) {
            Some(&index) => index,
            None => match self.add_client(from).await {
                Some(index) => index,
                None => {
                    self.shared.clients_rejected.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        self.impair(Direction::Up, client, data);
    }

    fn on_downstream_packet(&mut self, client: usize, data: Vec<u8>) {
        self.shared.down.received(data.len());
        if self.shared.blackhole.load(Ordering::Relaxed) {
            self.shared.down.dropped(EmulatorDrop::Blackhole);
            return;
        }
        self.impair(Direction::Down, client, data);
    }

    /// Registers a new client: binds its upstream socket and starts its reader. `None` when the
    /// client limit is reached or no socket could be bound.
    async fn add_client(&mut self, addr: SocketAddr) -> Option<usize> {
        if self.clients.len() >= CLIENTS_MAX {
            return None;
        }
        let upstream = match UdpSocket::bind(upstream_bind_addr(self.target)).await {
            Ok(socket) => Arc::new(socket),
            Err(error) => {
                tracing::warn!(%error, "udp link: cannot bind an upstream socket");
                return None;
            }
        };
        let index = self.clients.len();
        let (up, down) = *self.profiles.borrow();
        let stream = index as u64 * 2;
        let impairments = Impairment::new(up, derive_seed(self.seed, stream)).and_then(|up| {
            Impairment::new(down, derive_seed(self.seed, stream + 1)).map(|down| (up, down))
        });
        let (up, down) = match impairments {
            Ok(pair) => pair,
            Err(error) => {
                // Profiles were validated by `set_profiles`; counted in `clients_rejected`.
                tracing::warn!(%error, "udp link: profile refused for a new client");
                return None;
            }
        };
        let client = Client {
            addr,
            upstream: upstream.clone(),
            up,
            down,
        };
        self.clients.push(client);
        self.by_addr.insert(addr, index);
        self.shared.clients.fetch_add(1, Ordering::Relaxed);
        let reader = read_upstream(
            upstream,
            self.target,
            index,
            self.down_tx.clone(),
            self.shared.clone(),
        );
        self.readers.spawn(reader);
        Some(index)
    }

    fn impair(&mut self, direction: Direction, client: usize, data: Vec<u8>) {
        // `select!` may pick a packet before a pending profile change; the first packet after
        // `set_profiles` must already see the new profile.
        if self.profiles.has_changed().unwrap_or(false) {
            self.apply_profiles();
        }
        let now = self.now();
        let (counters, verdict) = {
            let Some(c) = self.clients.get_mut(client) else {
                return;
            };
            match direction {
                Direction::Up => (&self.shared.up, c.up.on_packet(now, data.len())),
                Direction::Down => (&self.shared.down, c.down.on_packet(now, data.len())),
            }
        };
        counters.verdict(&verdict);
        let len = data.len();
        let mut data = Some(data);
        let mut copies = verdict.delivery_times().peekable();
        while let Some(at) = copies.next() {
            // Clone only when a second copy follows; the last copy takes the buffer.
            let payload = if copies.peek().is_some() {
                data.clone()
            } else {
                data.take()
            };
            let Some(payload) = payload else {
                break;
            };
            if self.queue.len() >= IN_FLIGHT_PACKETS_MAX
                || self.queued_bytes + len > IN_FLIGHT_BYTES_MAX
            {
                counters.dropped(EmulatorDrop::Queue);
                continue;
            }
            // Only an absurd profile (a huge queue at a tiny rate) overflows the clock.
            let Some(at) = self.epoch.checked_add(at) else {
                counters.dropped(EmulatorDrop::Queue);
                continue;
            };
            self.queued_bytes += len;
            self.next_seq += 1;
            self.queue.push(Reverse(InFlight {
                at,
                seq: self.next_seq,
                direction,
                client,
                data: payload,
            }));
        }
    }

    async fn deliver_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse(head)) = self.queue.peek() {
            if head.at > now {
                break;
            }
            let Some(Reverse(packet)) = self.queue.pop() else {
                break;
            };
            self.queued_bytes = self.queued_bytes.saturating_sub(packet.data.len());
            let counters = match packet.direction {
                Direction::Up => &self.shared.up,
                Direction::Down => &self.shared.down,
            };
            if self.shared.blackhole.load(Ordering::Relaxed) {
                counters.dropped(EmulatorDrop::Blackhole);
                continue;
            }
            let Some(client) = self.clients.get(packet.client) else {
                // Cannot be: clients are never removed.
                counters.dropped(EmulatorDrop::Error);
                continue;
            };
            let sent = match packet.direction {
                Direction::Up => client.upstream.send_to(&packet.data, self.target).await,
                Direction::Down => self.listen.send_to(&packet.data, client.addr).await,
            };
            match sent {
                Ok(_) => counters.delivered(packet.data.len()),
                Err(error) => {
                    tracing::debug!(%error, "udp link: send failed");
                    counters.dropped(EmulatorDrop::Error);
                }
            }
        }
    }
}

/// The address an upstream socket binds to: loopback when the target is on loopback (so the
/// proxy never exposes a port beyond the machine), otherwise the unspecified address.
fn upstream_bind_addr(target: SocketAddr) -> SocketAddr {
    let ip = match (target.ip(), target.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// Reads replies from the target on one client's upstream socket and hands them to the
/// forwarding task. Packets from anyone but the target are ignored, like a port-restricted NAT.
async fn read_upstream(
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    client: usize,
    tx: mpsc::Sender<(usize, Vec<u8>)>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    let mut consecutive_errors = 0u32;
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, from)) => {
                consecutive_errors = 0;
                if from != target {
                    shared.foreign_ignored.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let data = buf.get(..len).unwrap_or_default().to_vec();
                match tx.try_send((client, data)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full((_, data))) => {
                        shared.down.received(data.len());
                        shared.down.dropped(EmulatorDrop::Queue);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        tracing::debug!(
                            client,
                            "udp link: the forwarding task stopped; upstream reader ends"
                        );
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, "udp link: upstream receive error");
                consecutive_errors += 1;
                if consecutive_errors > CONSECUTIVE_ERRORS_MAX {
                    tracing::warn!(%error, "udp link: upstream socket keeps failing, stopping");
                    return;
                }
            }
        }
    }
}
