//! Endpoint and transport configuration shared by the node and the SDK.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::socket::{ProbeSender, PunchSocket, ReceivedProbe};
use crate::tls::{self, Identity, Pin, TlsError};

/// Errors creating an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The socket could not be bound.
    #[error("cannot bind UDP socket: {0}")]
    Bind(#[from] std::io::Error),
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Transport tuning for one kind of connection.
#[derive(Debug, Clone)]
pub struct TransportTuning {
    /// Close the connection after this long without hearing from the other side.
    pub idle_timeout: Duration,
    /// Send a keep-alive when nothing else was sent for this long.
    pub keep_alive: Duration,
    /// First RTT guess before any sample (smaller means faster handshake retransmits).
    pub initial_rtt: Duration,
    /// Bytes of received datagrams buffered before the oldest are dropped.
    pub datagram_receive_buffer_bytes: usize,
}

impl TransportTuning {
    /// Player ↔ node connections: a dead player is noticed in a few seconds.
    pub fn node() -> Self {
        TransportTuning {
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(1),
            initial_rtt: Duration::from_millis(100),
            datagram_receive_buffer_bytes: 1 << 20,
        }
    }

    /// Direct peer connections: liveness is judged by the path monitor's pings; the QUIC idle
    /// timeout only reaps connections that are long dead.
    pub fn direct() -> Self {
        TransportTuning {
            idle_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_millis(500),
            initial_rtt: Duration::from_millis(50),
            datagram_receive_buffer_bytes: 1 << 20,
        }
    }

    /// The quinn transport config for this tuning.
    pub fn to_transport(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        match quinn::IdleTimeout::try_from(self.idle_timeout) {
            Ok(idle) => {
                t.max_idle_timeout(Some(idle));
            }
            Err(error) => tracing::warn!(
                idle_timeout = ?self.idle_timeout,
                %error,
                "idle timeout out of QUIC's range; quinn's default stays"
            ),
        }
        t.keep_alive_interval(Some(self.keep_alive));
        t.initial_rtt(self.initial_rtt);
        t.datagram_receive_buffer_size(Some(self.datagram_receive_buffer_bytes));
        t.max_concurrent_uni_streams(0u8.into());
        t.max_concurrent_bidi_streams(4u8.into());
        t
    }
}

/// Endpoint config for all Volley endpoints: the QUIC fixed bit is never greased, so hole-punching
/// probes (fixed bit clear) can share the socket.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut cfg = quinn::EndpointConfig::default();
    cfg.grease_quic_bit(false);
    cfg
}

/// Server config presenting `me`, requiring client certificates accepted by `pin`.
pub fn server_config(
    me: &Identity,
    pin: Pin,
    tuning: &TransportTuning,
) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = tls::server_crypto(me, pin)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(tuning.to_transport()));
    Ok(cfg)
}

/// Client config presenting `me`, accepting only a server matching `pin`.
pub fn client_config(
    me: &Identity,
    pin: Pin,
    tuning: &TransportTuning,
) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = tls::client_crypto(me, pin)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(tuning.to_transport()));
    Ok(cfg)
}

/// An endpoint on a [`PunchSocket`], with its probe sender and probe queue.
#[derive(Debug)]
pub struct PunchEndpoint {
    /// The QUIC endpoint.
    pub endpoint: quinn::Endpoint,
    /// Sends raw probes from the endpoint's socket.
    pub probes_out: ProbeSender,
    /// Probes received on the endpoint's socket.
    pub probes_in: mpsc::Receiver<ReceivedProbe>,
}

/// Binds an endpoint on `addr` that can punch, optionally accepting connections.
pub fn bind_punch_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<PunchEndpoint, EndpointError> {
    bind_punch_endpoint_on(std::net::UdpSocket::bind(addr)?, server)
}

/// Like [`bind_punch_endpoint`] with a socket the caller bound (e.g. inside a namespace).
pub fn bind_punch_endpoint_on(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> Result<PunchEndpoint, EndpointError> {
    let (sock, probes_out, probes_in) = PunchSocket::wrap(socket)?;
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        endpoint_config(),
        server,
        sock,
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok(PunchEndpoint {
        endpoint,
        probes_out,
        probes_in,
    })
}
