//! The QUIC gate: address validation, per-source limits, ticket admission, and the per-player
//! loops that relay between members of a room.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use volley_net::endpoint::TransportTuning;
use volley_net::framing::{read_frame, FrameError};
use volley_net::tls::{self, Identity, Pin};
use volley_proto::msg::{Down, NodeDatagram, PeerInfo, RejectCode, Up, MAX_CANDIDATES};
use volley_proto::{DecodeError, Fingerprint};

use crate::config::{NodeConfig, RetryPolicy};
use crate::metrics::DropReason;
use crate::room::{Member, RoomRef};
use crate::state::{unix_ms, Shared};

/// QUIC handshakes that take longer than this are abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A relayed reliable frame waits at most this long for room in the recipient's queue; past it
/// the recipient is too slow to keep up and is disconnected.
const RELAY_QUEUE_WAIT: Duration = Duration::from_secs(2);

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
        if !shared
            .admission()
            .allow_connect(ip, std::time::Instant::now())
        {
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
        let must_validate = match shared.cfg.retry {
            RetryPolicy::Always => true,
            RetryPolicy::UnderLoad => in_flight >= shared.cfg.handshakes_before_retry,
        };
        if must_validate && !incoming.remote_address_validated() {
            shared.metrics.retries.fetch_add(1, Ordering::Relaxed);
            // A Retry is smaller than the client's padded Initial: no amplification.
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            continue;
        }
        shared.handshakes.fetch_add(1, Ordering::Relaxed);
        let slot = HandshakeSlot(shared.clone());
        tokio::spawn(handle(shared.clone(), incoming, slot));
    }
}

async fn handle(shared: Arc<Shared>, incoming: quinn::Incoming, slot: HandshakeSlot) {
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
        Ok(Ok(())) => admit(&shared, &conn, fingerprint, &buf),
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
    serve_member(shared, room, me, rx, conn, send, recv).await;
}

fn decode_reject(e: DecodeError) -> (RejectCode, String) {
    match e {
        DecodeError::Version { .. } => (RejectCode::Version, e.to_string()),
        _ => (RejectCode::Malformed, e.to_string()),
    }
}

/// A player let in: its room, its membership, and the queue of frames to write to it.
type Admitted = (RoomRef, Member, mpsc::Receiver<Vec<u8>>);

/// Checks the hello and its ticket, then enters the player into its room.
fn admit(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    fingerprint: Fingerprint,
    frame: &[u8],
) -> Result<Admitted, (RejectCode, String)> {
    let (ticket_bytes, local_addrs) = match Up::decode(frame).map_err(decode_reject)? {
        Up::Hello {
            ticket,
            local_addrs,
        } => (ticket, local_addrs),
        _ => return Err((RejectCode::Protocol, "first frame must be Hello".into())),
    };
    let opened = shared
        .admission()
        .open_ticket(&ticket_bytes, fingerprint, unix_ms())?;
    let t = opened.ticket;
    let remote = conn.remote_address();
    let room = shared.rooms.get(t.room_id).ok_or((
        RejectCode::RoomGone,
        format!("room {} is closed", t.room_id),
    ))?;
    {
        let mut admission = shared.admission();
        let in_use = room
            .member(t.player_id)
            .is_some_and(|m| m.nonce == opened.nonce);
        admission.check_nonce(&opened.nonce, remote, in_use)?;
        let mut members = room
            .members
            .lock()
            .map_err(|_| (RejectCode::Protocol, "internal lock".to_owned()))?;
        let rejoin = members.contains_key(&t.player_id);
        if !rejoin && members.len() >= room.max_players as usize {
            return Err((RejectCode::RoomFull, format!("room {} is full", room.id)));
        }
        if !rejoin && shared.players_connected_hint() >= shared.cfg.players_max {
            return Err((RejectCode::RoomFull, "node is at its player limit".into()));
        }
        admission.claim_nonce(opened.nonce, remote, t.expires_at_ms);
        let mut candidates = vec![remote];
        for a in local_addrs {
            if candidates.len() >= MAX_CANDIDATES {
                break;
            }
            if !a.ip().is_unspecified()
                && !a.ip().is_multicast()
                && a.port() != 0
                && !candidates.contains(&a)
            {
                candidates.push(a);
            }
        }
        // The queue exists from the moment the member is visible to others, so a peer relaying
        // to a player that is still being welcomed waits in line instead of failing.
        let (tx, rx) = mpsc::channel(shared.cfg.player_queue_frames_max);
        let member = Member {
            info: PeerInfo {
                player_id: t.player_id,
                fingerprint,
                candidates,
            },
            conn: conn.clone(),
            tx,
            nonce: opened.nonce,
        };
        // Welcome goes first in the queue, before any peer can see (and relay to) the member.
        let welcome = Down::Welcome {
            player_id: t.player_id,
            room_id: room.id,
            observed_addr: remote,
            peers: members
                .values()
                .filter(|m| m.info.player_id != t.player_id)
                .map(|m| m.info.clone())
                .collect(),
        };
        // The queue was made just above with room for thousands of frames; a failure here
        // would be a bug, counted rather than hidden.
        if member.tx.try_send(welcome.encode()).is_err() {
            shared.metrics.note_drop(DropReason::WelcomeQueueFull);
        }
        if let Some(old) = members.insert(t.player_id, member.clone()) {
            old.conn.close(0u32.into(), b"replaced by a new connection");
        }
        room.used.store(true, Ordering::Relaxed);
        Ok((room.clone(), member, rx))
    }
}

impl Shared {
    /// Players connected, read without holding room locks for long (approximate under races,
    /// which is fine for a capacity limit).
    fn players_connected_hint(&self) -> usize {
        self.metrics.players.load(Ordering::Relaxed) as usize
    }
}

async fn serve_member(
    shared: Arc<Shared>,
    room: RoomRef,
    me: Member,
    mut rx: mpsc::Receiver<Vec<u8>>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let id = me.info.player_id;
    let tx = me.tx.clone();
    shared.metrics.players.fetch_add(1, Ordering::Relaxed);
    room.to_logic(crate::room::LogicEvent::Join(id), &shared.metrics);
    let others = room.others(id);
    let joined = Down::PeerJoined(me.info.clone()).encode();
    for o in &others {
        if o.tx
            .send_timeout(joined.clone(), RELAY_QUEUE_WAIT)
            .await
            .is_err()
        {
            shared.metrics.note_drop(DropReason::PeerJoinedQueueFull);
        }
    }
    tracing::debug!(player = id, room = room.id, remote = %conn.remote_address(), "player admitted");

    let metrics = shared.metrics.clone();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if send.write_all(&frame).await.is_err() {
                metrics.note_drop(DropReason::ControlWriteFailed);
                break;
            }
        }
        // Finishing fails only when the stream is already closed, which ends the member anyway.
        send.finish().ok();
    });
    let datagrams = tokio::spawn(relay_datagrams(
        shared.clone(),
        room.clone(),
        id,
        conn.clone(),
    ));
    let mut buf = Vec::new();
    loop {
        match read_frame(&mut recv, &mut buf).await {
            Ok(()) => {}
            Err(FrameError::Decode(e)) => {
                tracing::debug!(player = id, error = %e, "bad control frame; closing");
                conn.close((RejectCode::Protocol as u32).into(), b"bad control frame");
                break;
            }
            Err(_) => break,
        }
        let msg = match Up::decode(&buf) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(player = id, error = %e, "undecodable control frame; closing");
                conn.close((RejectCode::Protocol as u32).into(), b"bad control frame");
                break;
            }
        };
        match msg {
            Up::Relay { to, frame } => {
                let Some(target) = room.member(to).filter(|_| to != id) else {
                    shared.metrics.relay_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let bytes = frame.len() as u64;
                let out = Down::Relayed { from: id, frame }.encode();
                if target.tx.send_timeout(out, RELAY_QUEUE_WAIT).await.is_err() {
                    shared.metrics.relay_dropped.fetch_add(1, Ordering::Relaxed);
                    target
                        .conn
                        .close(2u32.into(), b"too slow to receive relayed traffic");
                    continue;
                }
                shared.metrics.relay_frames.fetch_add(1, Ordering::Relaxed);
                shared
                    .metrics
                    .relay_frame_bytes
                    .fetch_add(bytes, Ordering::Relaxed);
            }
            Up::PunchRequest { peer } => {
                if let Some(target) = room.member(peer).filter(|_| peer != id) {
                    if tx
                        .try_send(Down::Punch(target.info.clone()).encode())
                        .is_err()
                    {
                        shared.metrics.note_drop(DropReason::PunchQueueFull);
                    }
                    if target
                        .tx
                        .try_send(Down::Punch(me.info.clone()).encode())
                        .is_err()
                    {
                        shared.metrics.note_drop(DropReason::PunchQueueFull);
                    }
                }
            }
            Up::PathReport { peer, path, rtt_us } => room.report_path(id, peer, path, rtt_us),
            Up::ToNode { payload } => room.to_logic(
                crate::room::LogicEvent::Message {
                    from: id,
                    payload,
                    reliable: true,
                },
                &shared.metrics,
            ),
            Up::Leave => break,
            Up::Hello { .. } => {
                conn.close((RejectCode::Protocol as u32).into(), b"second hello");
                break;
            }
        }
    }
    datagrams.abort();
    if room.remove_if(id, &me.nonce) {
        room.to_logic(crate::room::LogicEvent::Leave(id), &shared.metrics);
        let left = Down::PeerLeft { player_id: id }.encode();
        for o in room.others(id) {
            if o.tx.try_send(left.clone()).is_err() {
                shared.metrics.note_drop(DropReason::PeerLeftQueueFull);
            }
        }
    }
    shared.metrics.players.fetch_sub(1, Ordering::Relaxed);
    drop(tx);
    if tokio::time::timeout(Duration::from_millis(200), writer)
        .await
        .is_err()
    {
        tracing::debug!(
            player = id,
            "control stream writer still busy at leave; closing"
        );
    }
    conn.close(0u32.into(), b"bye");
}

async fn relay_datagrams(shared: Arc<Shared>, room: RoomRef, id: u64, conn: quinn::Connection) {
    // The last target is cached: in a room, a player sends to the same few peers over and over,
    // and the cache saves a lock per datagram.
    let mut cache: Option<(u64, quinn::Connection)> = None;
    while let Ok(d) = conn.read_datagram().await {
        let (peer, payload) = match NodeDatagram::decode(&d) {
            Ok(NodeDatagram::ToPeer { peer, payload }) if peer != id => (peer, payload),
            Ok(NodeDatagram::ToNode { payload }) => {
                room.to_logic(
                    crate::room::LogicEvent::Message {
                        from: id,
                        payload,
                        reliable: false,
                    },
                    &shared.metrics,
                );
                continue;
            }
            _ => {
                shared.metrics.relay_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let target = match &cache {
            Some((p, c)) if *p == peer && c.close_reason().is_none() => c.clone(),
            _ => match room.member(peer) {
                Some(m) => {
                    cache = Some((peer, m.conn.clone()));
                    m.conn
                }
                None => {
                    shared.metrics.relay_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        let len = payload.len() as u64;
        let out = NodeDatagram::FromPeer { peer: id, payload }.encode();
        match target.send_datagram(out.into()) {
            Ok(()) => {
                shared
                    .metrics
                    .relay_datagrams
                    .fetch_add(1, Ordering::Relaxed);
                shared
                    .metrics
                    .relay_datagram_bytes
                    .fetch_add(len, Ordering::Relaxed);
            }
            Err(_) => {
                shared.metrics.relay_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
