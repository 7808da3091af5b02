//! A player's Hello: its ticket checked by [`crate::admission`], then the player entered into
//! its room, with the Welcome first in its queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use volley_proto::msg::{Down, PeerInfo, RejectCode, Up, MAX_CANDIDATES};
use volley_proto::{DecodeError, Fingerprint};

use crate::metrics::DropReason;
use crate::room::{Member, RoomRef};
use crate::state::{unix_ms, Shared};

fn decode_reject(e: DecodeError) -> (RejectCode, String) {
    match e {
        DecodeError::Version { .. } => (RejectCode::Version, e.to_string()),
        _ => (RejectCode::Malformed, e.to_string()),
    }
}

/// A player let in: its room, its membership, and the queue of frames to write to it.
pub(super) type Admitted = (RoomRef, Member, mpsc::Receiver<Vec<u8>>);

/// Checks the hello and its ticket, then enters the player into its room.
pub(super) fn admit(
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
