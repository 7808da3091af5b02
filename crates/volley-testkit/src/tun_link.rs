//! An impaired IP link between two network namespaces, built from two TUN devices (needs root).
//!
//! The kernel has no `netem` here, so delay, jitter, loss and reordering are done in userspace:
//! [`TunLink`] opens a TUN device inside each namespace, gives them point-to-point addresses
//! ([`ADDR_A`] and [`ADDR_B`]), and forwards every IP packet from one device to the other through
//! an [`Impairment`] per direction. Each direction is one plain OS thread: it polls its source
//! device, queues packets until their delivery time, and writes them to the other device.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::impair::{Impairment, LinkProfile, ProfileError};
use crate::netlab::{self, LabError};
use volley_link::stats::{derive_seed, DirectionCounters, DirectionStats, EmulatorDrop};

/// Address of the TUN device in namespace A; its peer is [`ADDR_B`].
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Address of the TUN device in namespace B; its peer is [`ADDR_A`].
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Most packets waiting in one direction's delay queue.
pub const QUEUE_PACKETS_MAX: usize = 8192;
/// Most bytes waiting in one direction's delay queue.
pub const QUEUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most packets read in one go before deliveries are checked again, so a flood on one device
/// cannot delay delivery.
const READ_BATCH_MAX: usize = 64;
/// Longest poll, in milliseconds: how quickly a worker notices a stop request.
const POLL_MS_MAX: u64 = 20;
/// Largest IP packet a TUN device can hand over.
const PACKET_BYTES_MAX: usize = 65_535;
/// Name template for the devices; the kernel fills in the number.
const DEVICE_NAME_TEMPLATE: &[u8] = b"vtl%d";

/// Errors from [`TunLink`].
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// A profile failed validation.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Entering a namespace or configuring a device with `ip` failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// Both ends were given the same namespace.
    #[error("a TUN link needs two different namespaces, got {0:?} twice")]
    SameNamespace(String),
    /// Opening or configuring `/dev/net/tun` failed.
    #[error("creating a TUN device in namespace {namespace:?}: {source}")]
    Tun {
        /// The namespace.
        namespace: String,
        /// The OS error.
        source: io::Error,
    },
    /// A forwarding thread could not be started.
    #[error("starting a forwarding thread: {0}")]
    Thread(io::Error),
}

/// Counters of a [`TunLink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunStats {
    /// Packets from namespace A to namespace B.
    pub a_to_b: DirectionStats,
    /// Packets from namespace B to namespace A.
    pub b_to_a: DirectionStats,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    blackhole: AtomicBool,
    counters: [DirectionCounters; 2],
    /// Profile changes not yet picked up by the workers, indexed like `counters`.
    pending: Mutex<[Option<LinkProfile>; 2]>,
}

/// A running TUN link between two namespaces. Dropping it stops the workers (within
/// [`POLL_MS_MAX`] ms) and closes the devices, which removes them.
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use volley_testkit::{impair::LinkProfile, netlab::Lab, tun_link::TunLink};
/// let mut lab = Lab::new("demo")?;
/// let (a, b) = (lab.add_namespace()?, lab.add_namespace()?);
/// let weak = LinkProfile::by_name("weak-4g").unwrap();
/// let link = TunLink::start(&a, &b, weak, weak, 7)?;
/// // In namespace a, 192.0.2.2 (link.addr_b()) is now ~90 ms round trip away.
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TunLink {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    devices: [String; 2],
}

impl TunLink {
    /// Creates the devices in `ns_a` and `ns_b` (existing namespaces, e.g. from
    /// [`netlab::Lab::add_namespace`]), addresses them and starts forwarding, impairing A → B
    /// with `profile_ab` and B → A with `profile_ba`.
    pub fn start(
        ns_a: &str,
        ns_b: &str,
        profile_ab: LinkProfile,
        profile_ba: LinkProfile,
        seed: u64,
    ) -> Result<Self, TunError> {
        if ns_a == ns_b {
            return Err(TunError::SameNamespace(ns_a.to_owned()));
        }
        let impair_ab = Impairment::new(profile_ab, derive_seed(seed, 0))?;
        let impair_ba = Impairment::new(profile_ba, derive_seed(seed, 1))?;
        let (fd_a, dev_a) = open_in(ns_a)?;
        let (fd_b, dev_b) = open_in(ns_b)?;
        configure(ns_a, &dev_a, ADDR_A, ADDR_B)?;
        configure(ns_b, &dev_b, ADDR_B, ADDR_A)?;

        let mut link = Self {
            shared: Arc::new(Shared::default()),
            workers: Vec::with_capacity(2),
            devices: [dev_a, dev_b],
        };
        let (fd_a, fd_b) = (Arc::new(fd_a), Arc::new(fd_b));
        for (index, src, dst, impairment) in [
            (0, fd_a.clone(), fd_b.clone(), impair_ab),
            (1, fd_b, fd_a, impair_ba),
        ] {
            let worker = Worker {
                index,
                src,
                dst,
                impairment,
                shared: link.shared.clone(),
                queue: BinaryHeap::new(),
                queued_bytes: 0,
                next_seq: 0,
            };
            // On error `link` is dropped, which stops the worker already started.
            let handle = std::thread::Builder::new()
                .name(format!("tun link {index}"))
                .spawn(move || worker.run())
                .map_err(TunError::Thread)?;
            link.workers.push(handle);
        }
        Ok(link)
    }

    /// The address of namespace A's end.
    pub fn addr_a(&self) -> Ipv4Addr {
        ADDR_A
    }

    /// The address of namespace B's end.
    pub fn addr_b(&self) -> Ipv4Addr {
        ADDR_B
    }

    /// The device names in namespace A and namespace B.
    pub fn devices(&self) -> (&str, &str) {
        (&self.devices[0], &self.devices[1])
    }

    /// While `true`, every packet is dropped in both directions, including packets in flight.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::Relaxed);
    }

    /// Replaces the profiles; packets already queued keep their delivery times.
    pub fn set_profiles(&self, ab: LinkProfile, ba: LinkProfile) -> Result<(), ProfileError> {
        ab.validate()?;
        ba.validate()?;
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *pending = [Some(ab), Some(ba)];
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TunStats {
        let [ab, ba] = &self.shared.counters;
        TunStats {
            a_to_b: ab.snapshot(),
            b_to_a: ba.snapshot(),
        }
    }
}

impl Drop for TunLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for worker in self.workers.drain(..) {
            // A panicked worker has stopped too; nothing more to do.
            let _ = worker.join();
        }
    }
}

/// Opens a TUN device on a thread inside `namespace`, so the device is created there.
fn open_in(namespace: &str) -> Result<(OwnedFd, String), TunError> {
    netlab::enter_namespace(namespace, open_tun)?.map_err(|source| TunError::Tun {
        namespace: namespace.to_owned(),
        source,
    })
}

/// Creates a non-persistent TUN device (IFF_TUN | IFF_NO_PI: bare IP packets, no header) in the
/// calling thread's namespace and returns its non-blocking fd and name.
fn open_tun() -> io::Result<(OwnedFd, String)> {
    // SAFETY: a valid NUL-terminated path and plain flags.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly opened fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(DEVICE_NAME_TEMPLATE) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let name: String = ifr
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| char::from(*c as u8))
        .collect();
    Ok((fd, name))
}

fn configure(ns: &str, dev: &str, local: Ipv4Addr, peer: Ipv4Addr) -> Result<(), LabError> {
    let (local, peer) = (local.to_string(), format!("{peer}/32"));
    netlab::ip(&["-n", ns, "addr", "add", &local, "peer", &peer, "dev", dev])?;
    netlab::ip(&["-n", ns, "link", "set", dev, "up"])?;
    netlab::ip(&["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// One direction: reads from `src`, impairs, writes to `dst`.
struct Worker {
    index: usize,
    src: Arc<OwnedFd>,
    dst: Arc<OwnedFd>,
    impairment: Impairment,
    shared: Arc<Shared>,
    /// (delivery time, arrival sequence, packet): a min-heap on time, FIFO among equal times.
    queue: BinaryHeap<Reverse<(Duration, u64, Vec<u8>)>>,
    queued_bytes: usize,
    next_seq: u64,
}

impl Worker {
    fn counters(&self) -> Option<&DirectionCounters> {
        self.shared.counters.get(self.index)
    }

    fn run(mut self) {
        let epoch = Instant::now();
        let mut buf = vec![0u8; PACKET_BYTES_MAX];
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.take_profile_change();
            self.deliver_due(epoch.elapsed());
            let wait = match self.queue.peek() {
                Some(Reverse((at, _, _))) => at.saturating_sub(epoch.elapsed()),
                None => Duration::from_millis(POLL_MS_MAX),
            };
            // Round up: waking before the deadline would only spin.
            let wait_ms = wait.as_micros().div_ceil(1000).min(u128::from(POLL_MS_MAX));
            let mut pfd = libc::pollfd {
                fd: self.src.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, wait_ms as libc::c_int) };
            if rc < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    tracing::warn!(%error, "tun link: poll failed, stopping this direction");
                    return;
                }
                continue;
            }
            if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                tracing::warn!("tun link: device closed, stopping this direction");
                return;
            }
            if pfd.revents & libc::POLLIN != 0 {
                // Pick up a profile change made while we slept, so the first packet after
                // `set_profiles` already gets the new profile.
                self.take_profile_change();
                self.read_batch(epoch, &mut buf);
            }
        }
    }

    fn take_profile_change(&mut self) {
        let change = match self.shared.pending.try_lock() {
            Ok(mut pending) => pending.get_mut(self.index).and_then(Option::take),
            // Busy or poisoned: try again next round.
            Err(_) => None,
        };
        if let Some(profile) = change {
            // Validated by `set_profiles`; on failure the old profile stays.
            let _ = self.impairment.set_profile(profile);
        }
    }

    fn read_batch(&mut self, epoch: Instant, buf: &mut [u8]) {
        for _ in 0..READ_BATCH_MAX {
            // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
            let n = unsafe { libc::read(self.src.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(len) = usize::try_from(n) else {
                // EAGAIN: drained. Anything else shows up again in poll.
                return;
            };
            let Some(packet) = buf.get(..len) else {
                return;
            };
            self.on_packet(epoch.elapsed(), packet.to_vec());
        }
    }

    fn on_packet(&mut self, now: Duration, packet: Vec<u8>) {
        let Some(counters) = self.shared.counters.get(self.index) else {
            return;
        };
        counters.received(packet.len());
        if self.shared.blackhole.load(Ordering::Relaxed) {
            counters.dropped(EmulatorDrop::Blackhole);
            return;
        }
        let verdict = self.impairment.on_packet(now, packet.len());
        counters.verdict(&verdict);
        let len = packet.len();
        let mut packet = Some(packet);
        let mut copies = verdict.delivery_times().peekable();
        while let Some(at) = copies.next() {
            // Clone only when a second copy follows; the last copy takes the buffer.
            let copy = if copies.peek().is_some() {
                packet.clone()
            } else {
                packet.take()
            };
            let Some(copy) = copy else {
                break;
            };
            if self.queue.len() >= QUEUE_PACKETS_MAX || self.queued_bytes + len > QUEUE_BYTES_MAX {
                counters.dropped(EmulatorDrop::Queue);
                continue;
            }
            self.queued_bytes += len;
            self.next_seq += 1;
            self.queue.push(Reverse((at, self.next_seq, copy)));
        }
    }

    fn deliver_due(&mut self, now: Duration) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > now {
                return;
            }
            let Some(Reverse((_, _, packet))) = self.queue.pop() else {
                return;
            };
            self.queued_bytes = self.queued_bytes.saturating_sub(packet.len());
            let Some(counters) = self.counters() else {
                return;
            };
            if self.shared.blackhole.load(Ordering::Relaxed) {
                counters.dropped(EmulatorDrop::Blackhole);
                continue;
            }
            // SAFETY: `packet` is valid for `packet.len()` bytes of reads.
            let n =
                unsafe { libc::write(self.dst.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
            if n < 0 {
                counters.dropped(EmulatorDrop::Error);
            } else {
                counters.delivered(packet.len());
            }
        }
    }
}
