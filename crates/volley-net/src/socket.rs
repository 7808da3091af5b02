//! The UDP socket under a QUIC endpoint, shared with hole punching.
//!
//! Punching only helps if the probes leave from the very socket (and so the very NAT mapping)
//! that QUIC will use afterwards. [`PunchSocket`] wraps quinn's socket: QUIC packets pass through
//! untouched; datagrams that are [`Probe`]s (first byte with the QUIC fixed bit clear) are copied
//! to a bounded queue for the punching logic. The endpoint must be configured not to grease the
//! fixed bit (see [`crate::endpoint::endpoint_config`]), so QUIC itself drops those datagrams.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};
use tokio::sync::mpsc;
use volley_proto::msg::Probe;

/// Probes waiting for the punching logic. Beyond this, probes are dropped and counted: a flood
/// of probes must not grow memory.
pub const PROBE_QUEUE_MAX: usize = 1024;

/// A probe and where it came from (the address the peer's NAT actually used).
#[derive(Debug, Clone, Copy)]
pub struct ReceivedProbe {
    /// The decoded probe.
    pub probe: Probe,
    /// The observed source address.
    pub from: SocketAddr,
}

/// QUIC's UDP socket plus probe interception. Create with [`PunchSocket::bind`].
pub struct PunchSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    probes: mpsc::Sender<ReceivedProbe>,
    /// Probes dropped because the queue was full or they did not decode.
    pub probes_dropped: AtomicU64,
}

impl fmt::Debug for PunchSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PunchSocket")
            .field("local_addr", &self.inner.local_addr().ok())
            .finish()
    }
}

/// Handle for sending raw probes through a [`PunchSocket`] after it was given to an endpoint.
#[derive(Debug, Clone)]
pub struct ProbeSender {
    socket: Arc<PunchSocket>,
}

impl ProbeSender {
    /// Sends one probe to `to`. Errors (e.g. unreachable network) are returned, not retried:
    /// punching sends many probes anyway.
    pub fn send(&self, to: SocketAddr, probe: &Probe) -> io::Result<()> {
        let bytes = probe.encode();
        self.socket.inner.try_send(&Transmit {
            destination: to,
            ecn: None,
            contents: &bytes,
            segment_size: None,
            src_ip: None,
        })
    }

    /// Local address of the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.inner.local_addr()
    }
}

impl PunchSocket {
    /// Binds a UDP socket and wraps it. Returns the socket (for the endpoint), a sender for
    /// probes and the queue of received probes.
    pub fn bind(
        addr: SocketAddr,
    ) -> io::Result<(Arc<PunchSocket>, ProbeSender, mpsc::Receiver<ReceivedProbe>)> {
        let std_socket = std::net::UdpSocket::bind(addr)?;
        Self::wrap(std_socket)
    }

    /// Wraps an already bound socket (e.g. one bound inside a network namespace).
    pub fn wrap(
        std_socket: std::net::UdpSocket,
    ) -> io::Result<(Arc<PunchSocket>, ProbeSender, mpsc::Receiver<ReceivedProbe>)> {
        let inner = quinn::TokioRuntime.wrap_udp_socket(std_socket)?;
        let (tx, rx) = mpsc::channel(PROBE_QUEUE_MAX);
        let socket = Arc::new(PunchSocket {
            inner,
            probes: tx,
            probes_dropped: AtomicU64::new(0),
        });
        let sender = ProbeSender {
            socket: socket.clone(),
        };
        Ok((socket, sender, rx))
    }

    fn intercept(&self, data: &[u8], from: SocketAddr) {
        match Probe::decode(data) {
            Ok(probe) => {
                if self.probes.try_send(ReceivedProbe { probe, from }).is_err() {
                    self.probes_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                self.probes_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl AsyncUdpSocket for PunchSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = match self.inner.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        // Peek at each received segment; probes are copied out and also left in place, where
        // QUIC drops them for their clear fixed bit. Leaving them avoids shuffling GRO buffers.
        for (buf, m) in bufs.iter().zip(meta.iter()).take(n) {
            let stride = m.stride.max(1);
            let data = buf.get(..m.len).unwrap_or(&[]);
            for segment in data.chunks(stride) {
                if Probe::is_probe(segment) {
                    self.intercept(segment, m.addr);
                }
            }
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
