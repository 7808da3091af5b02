//! Netcode modes as library calls a game drives from its frame loop.
//!
//! [`SnapshotPlayer`]: authoritative snapshots. Each frame the game calls
//! [`SnapshotPlayer::poll`] (takes in what arrived), [`SnapshotPlayer::frame`] with its input
//! (predicts and sends), and [`SnapshotPlayer::render`] (what to draw).

use std::time::{Duration, Instant};

use volley_sync::game::{EntityView, Game};
use volley_sync::interp::InterpStats;
use volley_sync::netplay::{ClientStats, SnapshotClient, Start};

use crate::{Error, Event, Session};

/// A player in a room running the node's `snapshot` mode.
#[derive(Debug)]
pub struct SnapshotPlayer<G: Game> {
    session: Session,
    client: Option<SnapshotClient<G>>,
    epoch: Instant,
    closed: Option<String>,
    /// Snapshot packets that arrived (including refused ones).
    pub packets: u64,
}

impl<G: Game> SnapshotPlayer<G> {
    /// Wraps a joined session.
    pub fn new(session: Session) -> Self {
        SnapshotPlayer {
            session,
            client: None,
            epoch: Instant::now(),
            closed: None,
            packets: 0,
        }
    }

    fn now_ms(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1000.0
    }

    /// The session underneath (peers, quality, node RTT).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The match description, once the node sent it.
    pub fn started(&self) -> bool {
        self.client.is_some()
    }

    /// Takes in everything that arrived. Call once per frame.
    pub fn poll(&mut self) -> Result<(), Error> {
        while let Some(e) = self.session.try_event() {
            match e {
                Event::FromNode {
                    payload,
                    reliable: true,
                } => match Start::decode(&payload) {
                    Ok(start) => self.client = Some(SnapshotClient::new(start)),
                    Err(error) => {
                        tracing::warn!(%error, "the node's match start did not decode");
                    }
                },
                Event::FromNode {
                    payload,
                    reliable: false,
                } => {
                    self.packets += 1;
                    let now = self.now_ms();
                    if let Some(c) = &mut self.client {
                        // A refused snapshot (stale, unknown baseline): the next one repairs the
                        // state.
                        // dropped: counted in `ClientStats::refused` (see `stats`)
                        let _ = c.on_packet(&payload, now);
                    }
                }
                Event::Closed { reason } => self.closed = Some(reason),
                _ => {}
            }
        }
        match &self.closed {
            Some(r) => Err(Error::Connection(r.clone())),
            None => Ok(()),
        }
    }

    /// Waits until the node has assigned this player its slot.
    pub async fn wait_start(&mut self, within: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        while self.client.is_none() {
            self.poll()?;
            if Instant::now() > deadline {
                return Err(Error::Connection("the node sent no start".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// One frame with the local input: predicts the own entity and sends the input (with the
    /// previous ones, so single losses cost nothing).
    pub fn frame(&mut self, input: G::Input) -> Result<(), Error> {
        let Some(c) = &mut self.client else {
            return Ok(());
        };
        if let Some(packet) = c.frame(input) {
            self.session.send_to_node(packet, false)?;
        }
        Ok(())
    }

    /// What to draw now: others interpolated, the own entity predicted.
    pub fn render(&mut self) -> Vec<EntityView> {
        let now = self.now_ms();
        self.client
            .as_mut()
            .map(|c| c.render(now))
            .unwrap_or_default()
    }

    /// Prediction and snapshot counters.
    pub fn stats(&self) -> Option<(ClientStats, InterpStats)> {
        self.client
            .as_ref()
            .map(|c| (c.stats().clone(), c.interp_stats()))
    }

    /// Leaves the room.
    pub async fn leave(self) {
        self.session.leave().await;
    }
}

use volley_sync::netplay::rollback_wire::{self, RollbackStart};
use volley_sync::rollback::{
    ChecksumReport, FinalInputs, InputBatch, Rollback, RollbackConfig, RollbackStats,
};

/// A player in a room running the node's `rollback` mode: inputs go to every peer (directly
/// or through the relay, whichever path the link has) and to the node, which referees.
#[derive(Debug)]
pub struct RollbackPlayer<G: Game> {
    session: Session,
    make: fn(usize, u64) -> G,
    start: Option<RollbackStart>,
    rb: Option<Rollback<G>>,
    closed: Option<String>,
    /// Frames the session could not advance (waiting for inputs or the referee).
    pub stalls: u64,
    /// Frames skipped to let slower peers catch up (time sync).
    pub waits: u64,
    /// Messages from peers or the node that did not decode or were refused.
    pub refused: u64,
    /// Input batches not sent to a peer because it had left the room (the referee fills its
    /// inputs).
    pub inputs_unsent_peer_left: u64,
    /// Input batches not sent to a peer because they were over the unreliable size limit (the
    /// same batch then fails to go to the node, and `frame` returns that error).
    pub inputs_unsent_too_large: u64,
}

impl<G: Game> RollbackPlayer<G> {
    /// Wraps a joined session; `make(players, seed)` builds the match's initial state, which
    /// must be the same on every machine.
    pub fn new(session: Session, make: fn(usize, u64) -> G) -> Self {
        RollbackPlayer {
            session,
            make,
            start: None,
            rb: None,
            closed: None,
            stalls: 0,
            waits: 0,
            refused: 0,
            inputs_unsent_peer_left: 0,
            inputs_unsent_too_large: 0,
        }
    }

    /// The session underneath.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The current (possibly predicted) game state, once the match started.
    pub fn state(&self) -> Option<&G> {
        self.rb.as_ref().map(|r| r.state())
    }

    /// The rollback session's counters.
    pub fn stats(&self) -> Option<&RollbackStats> {
        self.rb.as_ref().map(|r| r.stats())
    }

    /// The last frame every player's input is final for.
    pub fn confirmed_frame(&self) -> Option<u32> {
        self.rb.as_ref().map(|r| r.confirmed_frame())
    }

    /// Checksum of a confirmed frame (to compare with the node's).
    pub fn checksum_at(&self, frame: u32) -> Option<u64> {
        self.rb.as_ref().and_then(|r| r.checksum_at(frame))
    }

    /// Alters this player's own state behind the referee's back: a cheat, for tests and demos
    /// that show the referee catching and resyncing it.
    pub fn cheat_alter_state(&mut self, alter: impl FnOnce(&mut G)) -> bool {
        let Some(rb) = self.rb.as_mut() else {
            return false;
        };
        let mut s = rb.state().clone();
        alter(&mut s);
        let frame = rb.current_frame();
        rb.adopt_state(frame, s).is_ok()
    }

    /// This player's slot, once the match started.
    pub fn slot(&self) -> Option<u8> {
        self.start.as_ref().map(|s| s.slot)
    }

    fn slot_of(&self, player: u64) -> Option<u8> {
        let s = self.start.as_ref()?;
        s.players.iter().position(|p| *p == player).map(|i| i as u8)
    }

    /// Takes in everything that arrived. Call once per frame.
    pub fn poll(&mut self) -> Result<(), Error> {
        while let Some(e) = self.session.try_event() {
            match e {
                Event::FromNode {
                    payload,
                    reliable: true,
                } => match payload.first() {
                    Some(&rollback_wire::START) => match RollbackStart::decode(&payload) {
                        Ok(s) => {
                            let cfg = RollbackConfig {
                                tick_hz: u32::from(s.tick_hz),
                                ..RollbackConfig::default()
                            };
                            let game = (self.make)(s.players.len(), s.seed);
                            self.rb = match Rollback::new(game, s.players.len(), s.slot, cfg) {
                                Ok(rb) => Some(rb),
                                Err(error) => {
                                    tracing::warn!(
                                        %error,
                                        "the node's match start gives no valid session"
                                    );
                                    self.refused += 1;
                                    None
                                }
                            };
                            self.start = Some(s);
                        }
                        Err(_) => self.refused += 1,
                    },
                    Some(&rollback_wire::RESYNC) => {
                        let ok = payload
                            .get(1..5)
                            .and_then(|f| <[u8; 4]>::try_from(f).ok())
                            .map(u32::from_be_bytes)
                            .zip(payload.get(5..).and_then(G::decode_state))
                            .zip(self.rb.as_mut())
                            .map(|((frame, state), rb)| rb.adopt_state(frame, state).is_ok());
                        if ok != Some(true) {
                            self.refused += 1;
                        }
                    }
                    Some(&rollback_wire::FINAL) => {
                        let ok = match (&mut self.rb, FinalInputs::decode::<G>(&payload[1..])) {
                            (Some(rb), Ok(f)) => rb.on_final_inputs(&f).is_ok(),
                            _ => false,
                        };
                        if !ok {
                            self.refused += 1;
                        }
                    }
                    _ => self.refused += 1,
                },
                Event::Unreliable { from, payload } => {
                    let slot = self.slot_of(from);
                    let ok = match (slot, payload.split_first(), &mut self.rb) {
                        (Some(slot), Some((&rollback_wire::INPUTS, rest)), Some(rb)) => {
                            InputBatch::decode::<G>(rest)
                                .map(|b| rb.on_remote_batch(slot, &b).is_ok())
                                .unwrap_or(false)
                        }
                        _ => false,
                    };
                    if !ok {
                        self.refused += 1;
                    }
                }
                Event::Closed { reason } => self.closed = Some(reason),
                _ => {}
            }
        }
        match &self.closed {
            Some(r) => Err(Error::Connection(r.clone())),
            None => Ok(()),
        }
    }

    /// Waits until every player is in and the node started the match.
    pub async fn wait_start(&mut self, within: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        while self.rb.is_none() {
            self.poll()?;
            if Instant::now() > deadline {
                return Err(Error::Connection("the node did not start the match".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// One frame: the local input (asked of `input_for` with the current state when needed),
    /// advance with prediction and rollback, send inputs to peers and the node, and checksum
    /// reports to the node. Returns whether the game advanced.
    pub fn frame(&mut self, input_for: impl FnOnce(&G) -> G::Input) -> Result<bool, Error> {
        let Some(rb) = self.rb.as_mut() else {
            return Ok(false);
        };
        let Some(start) = self.start.as_ref() else {
            return Ok(false);
        };
        for p in self.session.peers() {
            if let (Some(slot), Some(rtt)) = (
                start.players.iter().position(|x| *x == p.player_id),
                p.rtt_ms,
            ) {
                rb.set_peer_rtt_ms(slot as u8, rtt as u32);
            }
        }
        let advanced = if rb.frames_to_wait() > 0 {
            self.waits += 1;
            false
        } else {
            if rb.needs_local_input() {
                let input = input_for(rb.state());
                // dropped: counted in `RollbackStats::local_inputs_refused` (see `stats`)
                let _ = rb.add_local_input(input);
            }
            match rb.advance() {
                Ok(_) => true,
                Err(_) => {
                    self.stalls += 1;
                    false
                }
            }
        };
        let mut batch = vec![rollback_wire::INPUTS];
        batch.extend_from_slice(&rb.outgoing_inputs().encode::<G>());
        let me = self.session.me();
        for peer in start.players.iter().filter(|p| **p != me) {
            // A peer that left is gone from the session; the referee fills its inputs.
            match self.session.send_unreliable(*peer, batch.clone()) {
                Ok(()) => {}
                Err(Error::UnknownPeer(_)) => self.inputs_unsent_peer_left += 1,
                // The only other refusal: over the size limit.
                Err(_) => self.inputs_unsent_too_large += 1,
            }
        }
        self.session.send_to_node(batch, false)?;
        for r in rb.take_checksum_reports() {
            let mut p = vec![rollback_wire::CHECKSUM];
            p.extend_from_slice(&ChecksumReport::encode(&r));
            self.session.send_to_node(p, true)?;
        }
        Ok(advanced)
    }

    /// Leaves the room.
    pub async fn leave(self) {
        self.session.leave().await;
    }
}
