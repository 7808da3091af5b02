//! Real QUIC Initial packets for flood tests: what a spoofer sends in a victim's name.
//!
//! A spoofed-source flood is made of Initials the server can decrypt (so each one reaches the
//! gate as a new connection attempt) whose sender never answers. [`capture`] makes them by
//! letting a real QUIC client connect to a socket that only records: every first datagram is a
//! complete client Initial with its own destination connection id, usable against any server
//! that accepts the client's configuration. Replayed from any socket, each one is a fresh
//! connection attempt that never completes.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Most Initials one call captures.
pub const CAPTURE_MAX: usize = 100_000;

/// Captures `n` distinct client Initials (distinct destination connection ids) made by
/// `client` for `server_name`. Each is a whole UDP payload, padded as QUIC requires.
pub async fn capture(
    client: quinn::ClientConfig,
    server_name: &str,
    n: usize,
) -> io::Result<Vec<Vec<u8>>> {
    let n = n.min(CAPTURE_MAX);
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut endpoint = quinn::Endpoint::client(any)?;
    endpoint.set_default_client_config(client.clone());
    let mut out = Vec::with_capacity(n);
    let mut seen = HashSet::with_capacity(n);
    let mut buf = vec![0u8; 2048];
    // The attempts are kept alive until the end so none of them closes (and sends more).
    let mut attempts = Vec::with_capacity(n.min(4096));
    let mut tries = 0usize;
    while out.len() < n && tries < n.saturating_mul(4).max(16) {
        tries += 1;
        let connecting = endpoint
            .connect(sink_addr, server_name)
            .map_err(|e| io::Error::other(e.to_string()))?;
        attempts.push(connecting);
        // A new endpoint every few thousand attempts keeps its connection table small.
        if attempts.len() >= 4096 {
            attempts.clear();
            endpoint = quinn::Endpoint::client(any)?;
            endpoint.set_default_client_config(client.clone());
        }
        let got = tokio::time::timeout(Duration::from_secs(2), sink.recv_from(&mut buf)).await;
        let Ok(Ok((len, _))) = got else {
            continue;
        };
        let pkt = &buf[..len];
        if let Some(dcid) = initial_dcid(pkt) {
            if seen.insert(dcid.to_vec()) {
                out.push(pkt.to_vec());
            }
        }
    }
    Ok(out)
}

/// The destination connection id of a long-header Initial, if `pkt` is one.
pub fn initial_dcid(pkt: &[u8]) -> Option<&[u8]> {
    let first = *pkt.first()?;
    // Long header, packet type Initial (0b00).
    if first & 0x80 == 0 || (first >> 4) & 0x03 != 0 {
        return None;
    }
    let len = usize::from(*pkt.get(5)?);
    pkt.get(6..6 + len)
}
