//! A member's life in its room: its control stream (relay, punch requests, path reports,
//! messages to the room's logic) and its datagrams (relayed to peers).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use volley_net::framing::{read_frame, FrameError};
use volley_proto::msg::{Down, NodeDatagram, RejectCode, Up};

use crate::metrics::DropReason;
use crate::room::{Member, RoomRef};
use crate::state::Shared;

/// A relayed reliable frame waits at most this long for room in the recipient's queue; past it
/// the recipient is too slow to keep up and is disconnected.
const RELAY_QUEUE_WAIT: Duration = Duration::from_secs(2);

pub(super) async fn serve_member(
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
