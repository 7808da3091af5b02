//! The QUIC gate: address validation, per-source limits, ticket admission, and the per-player
//! loops that relay between members of a room ([`admit`] lets a player in, [`member`] serves it).

mod admit;
mod member;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use volley_net::endpoint::TransportTuning;
use volley_net::framing::{read_frame, FrameError};
use volley_net::tls::{self, Identity, Pin};
use volley_proto::msg::{Down, RejectCode};

use crate::config::{NodeConfig, RetryPolicy};
use crate::metrics::DropReason;
use crate::state::Shared;

/// QUIC handshakes that take longer than this are abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn server_config(
    identity: &Identity,
    cfg: &NodeConfig,
) -> Result<quinn::ServerConfig, tls::TlsError> {
    let mut sc = volley_net::endpoint::server_config(
        identity,
        Pin::AnyVerifiedKey,
        &TransportTuning::node(),
    )?;
    // The gate decides on Retry itself, per connection.
    sc.max_incoming(cfg.handshakes_max.saturating_mul(2).max(16));
    Ok(sc)
}

/// Decrements the in-flight handshake count when dropped.
struct HandshakeSlot(Arc<Shared>);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn accept_loop(shared: Arc<Shared>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let ip = incoming.remote_address().ip();
        let now = std::time::Instant::now();
        // Only a validated source is charged to its address's bucket: an unvalidated Initial
        // may carry anyone's address, and charging it would let a spoofed flood lock a
        // victim out. A source whose bucket is empty is asked to prove its address first.
        let validated = incoming.remote_address_validated();
        if validated && !shared.admission().allow_connect(ip, now) {
            // Silence, not a refusal: an answer would be traffic an attacker could aim.
            shared
                .metrics
                .ignored_rate_limited
                .fetch_add(1, Ordering::Relaxed);
            incoming.ignore();
            continue;
        }
        let in_flight = shared.handshakes.load(Ordering::Relaxed);
        if in_flight >= shared.cfg.handshakes_max {
            shared
                .metrics
                .refused_overload
                .fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        let must_validate = !validated
            && match shared.cfg.retry {
                RetryPolicy::Always => true,
                RetryPolicy::UnderLoad => {
                    in_flight >= shared.cfg.handshakes_before_retry
                        || shared.admission().exhausted(ip, now)
                }
            };
        if must_validate {
            shared.metrics.retries.fetch_add(1, Ordering::Relaxed);
            // A Retry is smaller than the client's padded Initial: no amplification.
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            continue;
        }
        shared.handshakes.fetch_add(1, Ordering::Relaxed);
        let slot = HandshakeSlot(shared.clone());
        // Unvalidated here means a handshake without Retry: it is charged once it completes.
        tokio::spawn(handle(shared.clone(), incoming, slot, !validated));
    }
}

async fn handle(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    slot: HandshakeSlot,
    charge_when_done: bool,
) {
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(_) => {
            shared
                .metrics
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(c)) => c,
        _ => {
            shared
                .metrics
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    drop(slot);
    if charge_when_done
        && !shared
            .admission()
            .allow_connect(conn.remote_address().ip(), std::time::Instant::now())
    {
        // The completed handshake proved the address; its bucket is empty.
        shared
            .metrics
            .ignored_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        conn.close(
            (RejectCode::RateLimited as u32).into(),
            b"too many connections from this address",
        );
        return;
    }
    let Some(fingerprint) = tls::peer_fingerprint(&conn) else {
        conn.close(1u32.into(), b"client certificate required");
        return;
    };
    let hello_timeout = Duration::from_millis(shared.cfg.hello_timeout_ms);
    let (mut send, mut recv) = match tokio::time::timeout(hello_timeout, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return,
        Err(_) => {
            shared.metrics.reject(RejectCode::Timeout);
            conn.close((RejectCode::Timeout as u32).into(), b"no hello");
            return;
        }
    };
    let mut buf = Vec::new();
    let first = tokio::time::timeout(hello_timeout, read_frame(&mut recv, &mut buf)).await;
    let admitted = match first {
        Err(_) => Err((
            RejectCode::Timeout,
            "no hello within the time limit".to_owned(),
        )),
        Ok(Err(FrameError::Decode(e))) => Err((RejectCode::Malformed, e.to_string())),
        Ok(Err(_)) => return,
        Ok(Ok(())) => admit::admit(&shared, &conn, fingerprint, &buf),
    };
    let (room, me, rx) = match admitted {
        Ok(x) => x,
        Err((code, detail)) => {
            shared.metrics.reject(code);
            tracing::debug!(remote = %conn.remote_address(), reason = code.as_str(), %detail, "admission rejected");
            let written = send
                .write_all(&Down::Reject { code, detail }.encode())
                .await;
            if written.is_err() || send.finish().is_err() {
                shared.metrics.note_drop(DropReason::RejectUnsent);
            } else if tokio::time::timeout(Duration::from_millis(500), send.stopped())
                .await
                .is_err()
            {
                tracing::debug!(remote = %conn.remote_address(), "refused player did not read its reject in time");
            }
            conn.close((code as u32).into(), code.as_str().as_bytes());
            return;
        }
    };
    shared.metrics.admitted.fetch_add(1, Ordering::Relaxed);
    member::serve_member(shared, room, me, rx, conn, send, recv).await;
}
