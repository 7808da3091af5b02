//! Authoritative snapshot mode, both ends, sans-IO: the node's [`SnapshotHost`] simulates at a
//! fixed tick from the inputs clients send and sends each client snapshots delta-encoded against
//! what it acknowledged; the client's [`SnapshotClient`] predicts its own entity, reconciles on
//! every snapshot and interpolates everyone else.
//!
//! Wire (inside the node messages of the transport):
//! - input, client → node, unreliable: `[1][ack_tick u32][first_frame u32][n u8][n × 4-byte input]`
//!   carrying the last `n` inputs, so single losses cost nothing;
//! - snapshot, node → client, unreliable: `[2][last_input_frame u32][buffer i8][codec bytes]`;
//! - start, node → client, reliable: `[3][slot u8][players u8][tick_hz u8][snapshot_every u8]`.

use std::collections::{BTreeMap, VecDeque};

use crate::game::{EntityView, Game, Slot};
use crate::interp::{InterpConfig, Interpolator};
use crate::lagcomp::{LagCompConfig, LagHistory};
use crate::snapshot::{Decoder, Encoder, Snapshot, SnapshotConfig};

/// Inputs in one input packet (the newest and the ones before it).
pub const INPUT_REDUNDANCY: usize = 8;
/// How far ahead of the node's frame a client's inputs may be. Further is a speed hack (or a
/// broken clock) and is refused and counted.
pub const INPUT_AHEAD_FRAMES_MAX: u32 = 60;
/// Inputs buffered per client.
const INPUT_BUFFER_MAX: usize = 128;
/// Inputs the client keeps for reconciliation.
const PENDING_INPUTS_MAX: usize = 256;
/// Distance (fixed-point units) between prediction and authority below which the prediction
/// stands: positions travel at 1/32 unit (8 units), so smaller differences are rounding.
const RECONCILE_TOLERANCE: f64 = 16.0;
/// Snapshot bytes budget per packet (fits one QUIC datagram).
pub const SNAPSHOT_BYTES_MAX: usize = 1100;

const TAG_INPUT: u8 = 1;
const TAG_SNAPSHOT: u8 = 2;
const TAG_START: u8 = 3;

/// Why a netplay packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetplayError {
    /// Too short, unknown tag or bad field.
    #[error("malformed netplay packet: {0}")]
    Malformed(&'static str),
    /// An input for a frame too far ahead of the node.
    #[error("input for frame {frame} is {ahead} frames ahead of the node (max {INPUT_AHEAD_FRAMES_MAX})")]
    TooFarAhead {
        /// The frame.
        frame: u32,
        /// How far ahead.
        ahead: u32,
    },
    /// The snapshot codec refused the packet.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, NetplayError> {
    let bytes = b
        .get(at..at + 4)
        .ok_or(NetplayError::Malformed("truncated"))?;
    let mut a = [0u8; 4];
    a.copy_from_slice(bytes);
    Ok(u32::from_be_bytes(a))
}

/// The start message: which slot this client plays and how the match runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The client's slot.
    pub slot: Slot,
    /// Players in the match.
    pub players: u8,
    /// Simulation rate.
    pub tick_hz: u8,
    /// Frames between snapshots.
    pub snapshot_every: u8,
}

impl Start {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        vec![
            TAG_START,
            self.slot,
            self.players,
            self.tick_hz,
            self.snapshot_every,
        ]
    }

    /// Decodes.
    pub fn decode(b: &[u8]) -> Result<Self, NetplayError> {
        match b {
            [TAG_START, slot, players, tick_hz, every] if *tick_hz > 0 && *every > 0 => Ok(Start {
                slot: *slot,
                players: *players,
                tick_hz: *tick_hz,
                snapshot_every: *every,
            }),
            _ => Err(NetplayError::Malformed("start")),
        }
    }
}

/// What the host tells about its tick cost and clients.
#[derive(Debug, Clone, Default)]
pub struct HostStats {
    /// Frames simulated.
    pub frames: u64,
    /// Inputs that arrived too late for their frame (the last input was repeated instead).
    pub inputs_late: u64,
    /// Inputs refused as too far ahead (speed hack or broken clock), per slot.
    pub inputs_ahead: Vec<u64>,
    /// Snapshot packets sent.
    pub snapshots: u64,
    /// Snapshot bytes sent.
    pub snapshot_bytes: u64,
    /// Player-steps judged against a rewound view (lag compensation).
    pub lag_rewinds: u64,
    /// Ticks rewound, summed over those.
    pub lag_rewound_ticks: u64,
    /// Of those, views older than the cap (clamped to it).
    pub lag_clamped: u64,
    /// World states the lag-compensation history refused to record (a tick not after the
    /// newest, or more entities than its limit): a player whose view falls on such a tick is
    /// judged against the present world, without a rewind.
    pub lag_history_refused: u64,
}

#[derive(Debug)]
struct HostClient {
    encoder: Encoder,
    inputs: BTreeMap<u32, [u8; 4]>,
    last_frame: u32,
}

/// Per-client relevance in snapshot mode: entities farther than `radius` from a client's own
/// entity get an update at most every `far_every` snapshots (the client dead-reckons them in
/// between along their last velocity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// Distance within which everything is sent every snapshot, fixed-point 1/256 units.
    pub radius: i32,
    /// Snapshots between updates of a far entity.
    pub far_every: u32,
}

/// The node's side of snapshot mode.
#[derive(Debug)]
pub struct SnapshotHost<G: Game> {
    game: G,
    clients: Vec<Option<HostClient>>,
    last_input: Vec<G::Input>,
    snapshot_every: u32,
    interest: Option<Interest>,
    lag: Option<LagHistory>,
    stats: HostStats,
}

impl<G: Game> SnapshotHost<G> {
    /// A host for `game` with `players` slots, sending a snapshot every `snapshot_every` frames.
    pub fn new(game: G, players: usize, snapshot_every: u32) -> Self {
        SnapshotHost {
            game,
            clients: (0..players).map(|_| None).collect(),
            last_input: vec![G::Input::default(); players],
            snapshot_every: snapshot_every.max(1),
            interest: None,
            lag: None,
            stats: HostStats {
                inputs_ahead: vec![0; players],
                ..HostStats::default()
            },
        }
    }

    /// Turns lag compensation on (or off with `None`): the node keeps a history of the world
    /// and steps the game with each player's view of it, rewound by the time since the
    /// snapshot that player last acknowledged plus its interpolation delay, capped at
    /// `rewind_ticks_max` (see [`Game::step_compensated`]).
    pub fn set_lag_compensation(&mut self, config: Option<LagCompConfig>) {
        self.lag = config.map(LagHistory::new);
    }

    /// Turns interest management on (or off with `None`).
    pub fn set_interest(&mut self, interest: Option<Interest>) {
        self.interest = interest;
    }

    /// Entity updates held back by interest management so far, over all clients.
    pub fn interest_deferred(&self) -> u64 {
        self.clients
            .iter()
            .flatten()
            .map(|c| c.encoder.stats().interest_deferred)
            .sum()
    }

    /// The authoritative game.
    pub fn game(&self) -> &G {
        &self.game
    }

    /// Counters.
    pub fn stats(&self) -> &HostStats {
        &self.stats
    }

    /// A client takes `slot` (a new encoder: its first snapshot is a full one).
    pub fn join(&mut self, slot: Slot) {
        if let Some(c) = self.clients.get_mut(usize::from(slot)) {
            *c = Some(HostClient {
                encoder: Encoder::new(SnapshotConfig::default()),
                inputs: BTreeMap::new(),
                last_frame: self.game.frame(),
            });
        }
    }

    /// The client in `slot` left; its player stands still.
    pub fn leave(&mut self, slot: Slot) {
        if let Some(c) = self.clients.get_mut(usize::from(slot)) {
            *c = None;
        }
        if let Some(i) = self.last_input.get_mut(usize::from(slot)) {
            *i = G::Input::default();
        }
    }

    /// An input packet from the client in `slot` (the transport knows the sender: a client can
    /// only ever speak for its own slot).
    pub fn on_input_packet(&mut self, slot: Slot, b: &[u8]) -> Result<(), NetplayError> {
        let now = self.game.frame();
        let Some(Some(c)) = self.clients.get_mut(usize::from(slot)) else {
            return Err(NetplayError::Malformed("no client in that slot"));
        };
        if b.first() != Some(&TAG_INPUT) {
            return Err(NetplayError::Malformed("not an input packet"));
        }
        let ack = u32_at(b, 1)?;
        let first = u32_at(b, 5)?;
        let n = usize::from(*b.get(9).ok_or(NetplayError::Malformed("truncated"))?);
        if n > INPUT_REDUNDANCY || b.len() != 10 + 4 * n {
            return Err(NetplayError::Malformed("input count"));
        }
        if ack != u32::MAX {
            c.encoder.on_ack(ack);
        }
        for i in 0..n {
            let frame = first.wrapping_add(i as u32);
            let mut raw = [0u8; 4];
            raw.copy_from_slice(b.get(10 + 4 * i..14 + 4 * i).unwrap_or(&[0; 4]));
            if G::decode_input(raw).is_none() {
                return Err(NetplayError::Malformed("input value"));
            }
            if frame < now {
                continue; // already simulated (a redundant copy, or late)
            }
            if frame - now > INPUT_AHEAD_FRAMES_MAX {
                if let Some(x) = self.stats.inputs_ahead.get_mut(usize::from(slot)) {
                    *x += 1;
                }
                return Err(NetplayError::TooFarAhead {
                    frame,
                    ahead: frame - now,
                });
            }
            if c.inputs.len() < INPUT_BUFFER_MAX {
                c.inputs.insert(frame, raw);
            }
        }
        Ok(())
    }

    /// Simulates one frame; on snapshot frames returns a packet per connected slot.
    pub fn tick(&mut self) -> Vec<(Slot, Vec<u8>)> {
        let frame = self.game.frame();
        let mut inputs = Vec::with_capacity(self.clients.len());
        for (slot, c) in self.clients.iter_mut().enumerate() {
            let last = self.last_input.get(slot).copied().unwrap_or_default();
            let input = match c {
                Some(c) => {
                    // Drop anything older than this frame, then take this frame's input.
                    while let Some((&f, _)) = c.inputs.first_key_value() {
                        if f >= frame {
                            break;
                        }
                        c.inputs.pop_first();
                    }
                    match c.inputs.remove(&frame).and_then(G::decode_input) {
                        Some(i) => {
                            c.last_frame = frame;
                            i
                        }
                        None => {
                            self.stats.inputs_late += 1;
                            last
                        }
                    }
                }
                None => G::Input::default(),
            };
            if let Some(l) = self.last_input.get_mut(slot) {
                *l = input;
            }
            inputs.push(input);
        }
        match &mut self.lag {
            None => self.game.step(&inputs),
            Some(history) => {
                if history.newest_tick().is_none()
                    && history
                        .record(self.game.frame(), &self.game.entities())
                        .is_err()
                {
                    self.stats.lag_history_refused += 1;
                }
                let newest = history.newest_tick().unwrap_or(0);
                let floor = newest.saturating_sub(history.config().rewind_ticks_max);
                // A client renders about two snapshot intervals behind the newest snapshot it
                // has; the newest it has is (at least) the one it acknowledged.
                let interp = 2 * self.snapshot_every;
                let mut views = Vec::with_capacity(self.clients.len());
                for c in &self.clients {
                    let view = c.as_ref().and_then(|c| c.encoder.acked_tick()).map(|ack| {
                        let want = ack.saturating_sub(interp);
                        let tick = want.clamp(floor, newest);
                        self.stats.lag_rewinds += 1;
                        self.stats.lag_rewound_ticks += u64::from(newest - tick);
                        self.stats.lag_clamped += u64::from(want < floor);
                        tick
                    });
                    views.push(view.and_then(|t| history.rewind(t)));
                }
                self.game.step_compensated(&inputs, &views);
                if history
                    .record(self.game.frame(), &self.game.entities())
                    .is_err()
                {
                    self.stats.lag_history_refused += 1;
                }
            }
        }
        self.stats.frames += 1;
        let mut out = Vec::new();
        if !self.game.frame().is_multiple_of(self.snapshot_every) {
            return out;
        }
        let snap = Snapshot {
            tick: self.game.frame(),
            entities: self.game.entities(),
        };
        let now = self.game.frame();
        let interest = self.interest;
        for (slot, c) in self.clients.iter_mut().enumerate() {
            let Some(c) = c else { continue };
            let own = snap
                .entities
                .iter()
                .find(|e| usize::from(e.id) == slot)
                .copied();
            let period = |e: &EntityView| match (interest, own) {
                (Some(i), Some(o)) if e.id != o.id => {
                    let dx = i64::from(e.x) - i64::from(o.x);
                    let dy = i64::from(e.y) - i64::from(o.y);
                    let r = i64::from(i.radius);
                    if dx * dx + dy * dy > r * r {
                        i.far_every
                    } else {
                        1
                    }
                }
                _ => 1,
            };
            let Ok(body) = c
                .encoder
                .encode_with_interest(&snap, SNAPSHOT_BYTES_MAX, period)
            else {
                continue;
            };
            // How many frames of input are waiting: the client aims to keep this small and
            // positive (it speeds up when it is negative, slows down when it is large).
            let buffer = c
                .inputs
                .last_key_value()
                .map_or(-1, |(f, _)| i64::from(*f) - i64::from(now))
                .clamp(-127, 127) as i8;
            let mut p = Vec::with_capacity(body.len() + 6);
            p.push(TAG_SNAPSHOT);
            p.extend_from_slice(&c.last_frame.to_be_bytes());
            p.push(buffer as u8);
            p.extend_from_slice(&body);
            self.stats.snapshots += 1;
            self.stats.snapshot_bytes += p.len() as u64;
            out.push((slot as Slot, p));
        }
        out
    }
}

/// What a client measured.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    /// Snapshots decoded.
    pub snapshots: u64,
    /// Snapshot packets refused (stale, malformed, not a snapshot packet...).
    pub refused: u64,
    /// Reconciliations that moved the predicted entity.
    pub corrections: u64,
    /// Sum of correction distances, fixed-point units.
    pub correction_sum: f64,
    /// Frames the client skipped to get ahead of the node (its inputs were late).
    pub speedups: u64,
    /// Frames the client held back (its inputs were too early).
    pub slowdowns: u64,
}

/// The client's side of snapshot mode.
#[derive(Debug)]
pub struct SnapshotClient<G: Game> {
    start: Start,
    decoder: Decoder,
    interp: Interpolator,
    pending: VecDeque<(u32, G::Input)>,
    next_frame: Option<u32>,
    predicted: Option<EntityView>,
    /// Our predicted entity after each pending frame's input.
    history: VecDeque<(u32, EntityView)>,
    last_buffer: i8,
    held: bool,
    stats: ClientStats,
}

impl<G: Game> SnapshotClient<G> {
    /// A client for the match described by `start`.
    pub fn new(start: Start) -> Self {
        let tick_ms = 1000.0 / f64::from(start.tick_hz.max(1));
        SnapshotClient {
            start,
            decoder: Decoder::new(SnapshotConfig::default()),
            interp: Interpolator::new(InterpConfig {
                tick_ms,
                ..InterpConfig::default()
            }),
            pending: VecDeque::new(),
            next_frame: None,
            predicted: None,
            history: VecDeque::new(),
            last_buffer: 0,
            held: false,
            stats: ClientStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// The interpolation buffer's counters (underruns...).
    pub fn interp_stats(&self) -> crate::interp::InterpStats {
        self.interp.stats()
    }

    /// The predicted own entity.
    pub fn predicted(&self) -> Option<EntityView> {
        self.predicted
    }

    /// A snapshot packet from the node, received at `now_ms`.
    pub fn on_packet(&mut self, b: &[u8], now_ms: f64) -> Result<(), NetplayError> {
        if b.first() != Some(&TAG_SNAPSHOT) || b.len() < 6 {
            self.stats.refused += 1;
            return Err(NetplayError::Malformed("not a snapshot packet"));
        }
        // Bytes 1..5 carry the last input frame the node applied; reconciliation below goes by
        // the snapshot's tick instead.
        let buffer = b.get(5).map_or(0, |x| *x as i8);
        let snap = match self.decoder.decode(b.get(6..).unwrap_or(&[])) {
            Ok(s) => s,
            Err(e) => {
                self.stats.refused += 1;
                return Err(NetplayError::Snapshot(e.to_string()));
            }
        };
        self.stats.snapshots += 1;
        let me = u16::from(self.start.slot);
        let own = snap.entities.iter().find(|e| e.id == me).copied();
        // A snapshot the interpolator refuses still serves reconciliation below.
        // dropped: the interpolator counts each refusal by reason (see `interp_stats`)
        let _ = self.interp.push(snap.tick, now_ms, snap.entities.clone());
        // Frame pacing: aim for 2 frames of input waiting at the node.
        match self.next_frame {
            None => self.next_frame = Some(snap.tick.saturating_add(4)),
            Some(f) if buffer < 0 => {
                self.next_frame = Some(f.max(snap.tick).saturating_add(1));
                self.stats.speedups += 1;
            }
            _ => {}
        }
        // Reconcile: compare what we predicted for the snapshot's frame with what the authority
        // computed. Within the wire's rounding, keep predicting from our own (unrounded) state;
        // beyond it, start again from the authority's entity and replay the inputs it has not
        // applied yet.
        self.last_buffer = buffer;
        let applied_through = snap.tick.wrapping_sub(1);
        while self
            .pending
            .front()
            .is_some_and(|(f, _)| *f <= applied_through)
        {
            self.pending.pop_front();
        }
        let mine = loop {
            match self.history.front() {
                Some((f, _)) if *f < applied_through => {
                    self.history.pop_front();
                }
                Some((f, e)) if *f == applied_through => break Some(*e),
                _ => break None,
            }
        };
        if let Some(server) = own {
            let error = mine.map(|p| f64::from(p.x - server.x).hypot(f64::from(p.y - server.y)));
            if error.is_none_or(|d| d > RECONCILE_TOLERANCE) {
                if let Some(d) = error {
                    self.stats.corrections += 1;
                    self.stats.correction_sum += d;
                }
                let mut e = server;
                self.history.clear();
                for (f, input) in &self.pending {
                    e = G::predict(&e, input);
                    self.history.push_back((*f, e));
                }
                self.predicted = Some(e);
            }
        }
        Ok(())
    }

    /// Whether the client should skip this frame to let the node catch up (its inputs are
    /// queued too far ahead). Every other frame at most, so the game never freezes.
    fn hold(&mut self) -> bool {
        let hold = self.last_buffer > 6 && !self.held;
        self.held = hold;
        if hold {
            self.stats.slowdowns += 1;
        }
        hold
    }

    /// One client frame with the local `input`: predicts, and returns the input packet to send
    /// (or `None` before the first snapshot, when the node's frame is unknown).
    pub fn frame(&mut self, input: G::Input) -> Option<Vec<u8>> {
        if self.hold() {
            return None;
        }
        let frame = self.next_frame?;
        self.next_frame = Some(frame.saturating_add(1));
        if self.pending.len() == PENDING_INPUTS_MAX {
            self.pending.pop_front();
        }
        self.pending.push_back((frame, input));
        if let Some(p) = self.predicted {
            let next = G::predict(&p, &input);
            self.predicted = Some(next);
            if self.history.len() == PENDING_INPUTS_MAX {
                self.history.pop_front();
            }
            self.history.push_back((frame, next));
        }
        let n = self.pending.len().min(INPUT_REDUNDANCY);
        let first = self.pending.len() - n;
        let first_frame = self.pending.get(first).map_or(frame, |(f, _)| *f);
        let mut p = Vec::with_capacity(10 + 4 * n);
        p.push(TAG_INPUT);
        p.extend_from_slice(&self.decoder.newest_tick().unwrap_or(u32::MAX).to_be_bytes());
        p.extend_from_slice(&first_frame.to_be_bytes());
        p.push(n as u8);
        for (_, i) in self.pending.iter().skip(first) {
            p.extend_from_slice(&G::encode_input(i));
        }
        Some(p)
    }

    /// What to draw at `now_ms`: everyone interpolated, with the own entity predicted.
    pub fn render(&mut self, now_ms: f64) -> Vec<EntityView> {
        let me = u16::from(self.start.slot);
        let mut out = self.interp.sample(now_ms);
        if let Some(p) = self.predicted {
            if let Some(e) = out.iter_mut().find(|e| e.id == me) {
                *e = p;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::{Arena, Bot};

    /// A seeded lossy, delayed channel in frames.
    struct Pipe {
        q: VecDeque<(u32, Vec<u8>)>,
        delay: u32,
        loss_every: u32,
        n: u32,
    }

    impl Pipe {
        fn send(&mut self, now: u32, p: Vec<u8>) {
            self.n += 1;
            if self.loss_every > 0 && self.n.is_multiple_of(self.loss_every) {
                return;
            }
            self.q.push_back((now + self.delay, p));
        }
        fn recv(&mut self, now: u32) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            while self.q.front().is_some_and(|(t, _)| *t <= now) {
                if let Some((_, p)) = self.q.pop_front() {
                    out.push(p);
                }
            }
            out
        }
    }

    fn run(players: usize, delay: u32, loss_every: u32) -> (HostStats, Vec<ClientStats>, Vec<f64>) {
        let (h, c, e, _) = run_with(players, delay, loss_every, None, false);
        (h, c, e)
    }

    fn run_with(
        players: usize,
        delay: u32,
        loss_every: u32,
        interest: Option<Interest>,
        lag: bool,
    ) -> (HostStats, Vec<ClientStats>, Vec<f64>, u64) {
        let mut host = SnapshotHost::new(Arena::new(players, 5), players, 2);
        host.set_interest(interest);
        host.set_lag_compensation(lag.then(LagCompConfig::default));
        let mut clients: Vec<SnapshotClient<Arena>> = (0..players)
            .map(|s| {
                host.join(s as Slot);
                SnapshotClient::new(Start {
                    slot: s as Slot,
                    players: players as u8,
                    tick_hz: 60,
                    snapshot_every: 2,
                })
            })
            .collect();
        let mut bots: Vec<Bot> = (0..players).map(|s| Bot::new(s, s as u64)).collect();
        let pipe = |_: usize| Pipe {
            q: VecDeque::new(),
            delay,
            loss_every,
            n: 0,
        };
        let mut up: Vec<Pipe> = (0..players).map(pipe).collect();
        let mut down: Vec<Pipe> = (0..players).map(pipe).collect();
        let mut final_err = vec![0.0; players];
        for t in 0..1200u32 {
            for (s, c) in clients.iter_mut().enumerate() {
                for p in down[s].recv(t) {
                    let _ = c.on_packet(&p, f64::from(t) * 1000.0 / 60.0);
                }
                let input = bots[s].input(host.game());
                if let Some(p) = c.frame(input) {
                    up[s].send(t, p);
                }
            }
            for (s, u) in up.iter_mut().enumerate() {
                for p in u.recv(t) {
                    let _ = host.on_input_packet(s as Slot, &p);
                }
            }
            for (s, p) in host.tick() {
                down[usize::from(s)].send(t, p);
            }
        }
        for (s, c) in clients.iter().enumerate() {
            let truth = host.game().entities()[s];
            if let Some(p) = c.predicted() {
                final_err[s] = f64::from(p.x - truth.x).hypot(f64::from(p.y - truth.y));
            }
        }
        (
            host.stats().clone(),
            clients.iter().map(|c| c.stats().clone()).collect(),
            final_err,
            host.interest_deferred(),
        )
    }

    /// A seeded datagram link in frames (60 Hz) with a [`crate::sim::LinkProfile`]'s latency,
    /// jitter, loss, duplication and reordering.
    struct SeededPipe {
        q: Vec<(u32, u64, Vec<u8>)>,
        link: crate::sim::LinkProfile,
        rng: u64,
        seq: u64,
    }

    impl SeededPipe {
        fn next(&mut self) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng
        }

        fn chance(&mut self, ppm: u32) -> bool {
            self.next() % 1_000_000 < u64::from(ppm)
        }

        fn latency_frames(&mut self) -> u32 {
            let j = u64::from(self.link.jitter_ms);
            let ms = u64::from(self.link.one_way_ms) + self.next() % (2 * j + 1) - j;
            (ms * 60).div_ceil(1000) as u32
        }

        fn send(&mut self, now: u32, p: Vec<u8>) {
            if self.chance(self.link.loss_ppm) {
                return;
            }
            let copies = if self.chance(self.link.duplicate_ppm) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let mut at = now + self.latency_frames();
                if self.chance(self.link.reorder_ppm) {
                    at += 1 + (self.next() % 3) as u32;
                }
                self.seq += 1;
                self.q.push((at, self.seq, p.clone()));
            }
        }

        fn recv(&mut self, now: u32) -> Vec<Vec<u8>> {
            self.q.sort_by_key(|(at, seq, _)| (*at, *seq));
            let n = self.q.iter().take_while(|(at, _, _)| *at <= now).count();
            self.q.drain(..n).map(|(_, _, p)| p).collect()
        }
    }

    /// Snapshot mode over seeded links: returns a trace (stats of everyone) and per-client
    /// own-entity prediction error against the authority at the end.
    fn run_seeded(
        players: usize,
        link: crate::sim::LinkProfile,
        seed: u64,
    ) -> (String, Vec<f64>, Vec<ClientStats>) {
        let mut host = SnapshotHost::new(Arena::new(players, seed), players, 2);
        host.set_lag_compensation(Some(LagCompConfig::default()));
        let mut clients: Vec<SnapshotClient<Arena>> = (0..players)
            .map(|s| {
                host.join(s as Slot);
                SnapshotClient::new(Start {
                    slot: s as Slot,
                    players: players as u8,
                    tick_hz: 60,
                    snapshot_every: 2,
                })
            })
            .collect();
        let mut bots: Vec<Bot> = (0..players).map(|s| Bot::new(s, seed + s as u64)).collect();
        let pipe = |k: u64| SeededPipe {
            q: Vec::new(),
            link,
            rng: (seed ^ (k * 0x9e37_79b9)) | 1,
            seq: 0,
        };
        let mut up: Vec<SeededPipe> = (0..players as u64).map(pipe).collect();
        let mut down: Vec<SeededPipe> = (0..players as u64).map(|k| pipe(k + 100)).collect();
        for t in 0..1800u32 {
            for (s, c) in clients.iter_mut().enumerate() {
                for p in down[s].recv(t) {
                    let _ = c.on_packet(&p, f64::from(t) * 1000.0 / 60.0);
                }
                let input = bots[s].input(host.game());
                if let Some(p) = c.frame(input) {
                    up[s].send(t, p);
                }
            }
            for (s, u) in up.iter_mut().enumerate() {
                for p in u.recv(t) {
                    let _ = host.on_input_packet(s as Slot, &p);
                }
            }
            for (s, p) in host.tick() {
                down[usize::from(s)].send(t, p);
            }
        }
        let err = clients
            .iter()
            .enumerate()
            .map(|(s, c)| {
                let truth = host.game().entities()[s];
                c.predicted().map_or(f64::MAX, |p| {
                    f64::from(p.x - truth.x).hypot(f64::from(p.y - truth.y))
                })
            })
            .collect();
        let trace = format!(
            "{:?} {:?} {:x}",
            host.stats(),
            clients
                .iter()
                .map(|c| c.stats().clone())
                .collect::<Vec<_>>(),
            host.game().checksum()
        );
        (
            trace,
            err,
            clients.iter().map(|c| c.stats().clone()).collect(),
        )
    }

    #[test]
    fn seeded_links_from_perfect_to_bad_keep_snapshot_clients_on_the_authority() {
        use crate::sim::LinkProfile;
        for (name, link) in [
            ("perfect", LinkProfile::PERFECT),
            ("lan", LinkProfile::LAN_LIKE),
            ("regional", LinkProfile::REGIONAL),
            ("bad", LinkProfile::BAD),
        ] {
            let (trace, err, stats) = run_seeded(4, link, 9);
            eprintln!("{name}: {trace} error {err:?}");
            let (again, _, _) = run_seeded(4, link, 9);
            assert_eq!(trace, again, "{name}: the same seed gives the same trace");
            let (other, _, _) = run_seeded(4, link, 10);
            assert_ne!(trace, other, "{name}: another seed, another trace");
            for c in &stats {
                // Only duplicated or overtaken (stale) snapshots are refused.
                assert!(c.refused * 20 <= c.snapshots, "{name}: {c:?}");
                assert!(c.snapshots > 700, "{name}: {c:?}");
            }
        }
        // On every link the clients' predicted own positions end within a few units of the
        // authority's (respawns and collisions aside, prediction runs on the same rules).
        for (name, link) in [("perfect", LinkProfile::PERFECT), ("bad", LinkProfile::BAD)] {
            let (_, err, _) = run_seeded(4, link, 9);
            let close = err.iter().filter(|e| **e <= 4.0 * 256.0).count();
            assert!(close >= 3, "{name}: {err:?}");
        }
    }

    #[test]
    fn lag_compensation_rewinds_by_each_clients_delay_within_the_cap() {
        let mean = |h: &HostStats| h.lag_rewound_ticks as f64 / h.lag_rewinds.max(1) as f64;
        let (off, _, _, _) = run_with(4, 1, 0, None, false);
        assert_eq!(off.lag_rewinds, 0);
        let (near, clients, _, _) = run_with(4, 1, 0, None, true);
        let (far, _, _, _) = run_with(4, 4, 0, None, true);
        eprintln!(
            "rewind: {:.1} ticks at 1 tick each way, {:.1} at 4 ({} of {} clamped)",
            mean(&near),
            mean(&far),
            far.lag_clamped,
            far.lag_rewinds
        );
        assert!(near.lag_rewinds > 4 * 1000, "every player-step is judged");
        // Round trip (2 ticks) + snapshot spacing (up to 2) + interpolation (4).
        assert!((5.0..=9.0).contains(&mean(&near)), "{}", mean(&near));
        assert!(mean(&far) > mean(&near) + 3.0);
        assert!(mean(&far) <= 12.0, "capped at rewind_ticks_max");
        assert_eq!(near.lag_clamped, 0);
        for c in &clients {
            assert_eq!(c.refused, 0);
            assert!(c.corrections * 20 < c.snapshots, "{c:?}");
        }
    }

    #[test]
    fn interest_management_sends_far_entities_less_and_clients_still_track() {
        let (all, _, _, none_held) = run_with(12, 3, 0, None, false);
        let interest = Interest {
            radius: 16 * 256,
            far_every: 3,
        };
        let (some, clients, err, held) = run_with(12, 3, 0, Some(interest), false);
        eprintln!(
            "interest: {} B vs {} B, {held} updates held back, prediction error {err:?}",
            some.snapshot_bytes, all.snapshot_bytes
        );
        assert_eq!(none_held, 0);
        assert!(held > 1000, "far entities were held back: {held}");
        assert!(
            some.snapshot_bytes * 10 < all.snapshot_bytes * 9,
            "at least 10 % fewer bytes: {} vs {}",
            some.snapshot_bytes,
            all.snapshot_bytes
        );
        // The own entity is always near: prediction and reconciliation are as good as before.
        for c in &clients {
            assert_eq!(c.refused, 0);
            assert!(c.corrections * 20 < c.snapshots, "{c:?}");
        }
    }

    #[test]
    fn clients_track_the_authority_on_a_clean_link() {
        let (host, clients, err) = run(4, 3, 0);
        eprintln!("clean: {host:?} {clients:?} final prediction error {err:?}");
        assert!(host.snapshots > 2000);
        // Once paced, inputs arrive in time: late inputs are a small fraction of all frames.
        assert!(
            host.inputs_late < host.frames * 4 / 10,
            "late {} of {}",
            host.inputs_late,
            host.frames * 4
        );
        for c in &clients {
            assert!(c.snapshots > 500);
            assert_eq!(c.refused, 0);
            // Mispredictions are rare events (deaths, respawns, collisions), not every frame.
            assert!(c.corrections * 20 < c.snapshots, "{c:?}");
        }
    }

    #[test]
    fn lossy_link_still_converges() {
        let (host, clients, err) = run(4, 6, 17);
        eprintln!("lossy: {host:?} {clients:?} final prediction error {err:?}");
        assert!(host.snapshots > 2000);
        for c in &clients {
            assert!(c.snapshots > 400, "{c:?}");
            assert!(c.corrections * 20 < c.snapshots, "{c:?}");
        }
        assert!(
            host.inputs_late * 5 < host.frames * 4,
            "redundancy covers single losses"
        );
    }

    #[test]
    fn inputs_far_ahead_are_refused_as_speed_hacks() {
        let mut host = SnapshotHost::new(Arena::new(2, 1), 2, 2);
        host.join(0);
        let mut p = vec![TAG_INPUT];
        p.extend_from_slice(&u32::MAX.to_be_bytes());
        p.extend_from_slice(&(INPUT_AHEAD_FRAMES_MAX + 10).to_be_bytes());
        p.push(1);
        p.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            host.on_input_packet(0, &p),
            Err(NetplayError::TooFarAhead { .. })
        ));
        assert_eq!(host.stats().inputs_ahead[0], 1);
        // Malformed packets are refused, never panic.
        for n in 0..p.len() {
            let _ = host.on_input_packet(0, &p[..n]);
        }
        assert!(host.on_input_packet(1, &p).is_err(), "no client in slot 1");
        let mut c = SnapshotClient::<Arena>::new(Start {
            slot: 0,
            players: 2,
            tick_hz: 60,
            snapshot_every: 2,
        });
        for n in 0..6 {
            assert!(c.on_packet(&vec![2u8; n], 0.0).is_err(), "{n} bytes");
        }
        for n in 6..64 {
            let _ = c.on_packet(&vec![2u8; n], 0.0); // refused or accepted, never a panic
        }
    }
}

/// Rollback mode messages (inside the transport's node and peer messages).
///
/// - start, node → client, reliable: `[0x10][slot][players][tick_hz][seed u64][players × player id u64]`
/// - final inputs, node → client, reliable: `[0x11][FinalInputs]`
/// - input batch, client → peers and node, unreliable: `[0x20][InputBatch]`
/// - checksum report, client → node, reliable: `[0x21][ChecksumReport]`
/// - resync, node → one client, reliable: `[0x12][frame u32][Game::encode_state]`
pub mod rollback_wire {
    use super::NetplayError;

    /// Tag of the start message.
    pub const START: u8 = 0x10;
    /// Tag of final inputs from the referee.
    pub const FINAL: u8 = 0x11;
    /// Tag of an input batch.
    pub const INPUTS: u8 = 0x20;
    /// Tag of a checksum report.
    pub const CHECKSUM: u8 = 0x21;
    /// Tag of an authoritative state for a client that diverged: `[0x12][frame u32][state]`.
    pub const RESYNC: u8 = 0x12;

    /// The rollback match description.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RollbackStart {
        /// The receiver's slot.
        pub slot: u8,
        /// Simulation rate.
        pub tick_hz: u8,
        /// Seed of the initial state.
        pub seed: u64,
        /// Player id of each slot, so peers' messages map to slots.
        pub players: Vec<u64>,
    }

    impl RollbackStart {
        /// Encodes.
        pub fn encode(&self) -> Vec<u8> {
            let mut p = vec![START, self.slot, self.players.len() as u8, self.tick_hz];
            p.extend_from_slice(&self.seed.to_be_bytes());
            for id in &self.players {
                p.extend_from_slice(&id.to_be_bytes());
            }
            p
        }

        /// Decodes.
        pub fn decode(b: &[u8]) -> Result<Self, NetplayError> {
            let (&[START, slot, n, tick_hz], rest) = b
                .split_first_chunk::<4>()
                .ok_or(NetplayError::Malformed("start"))?
            else {
                return Err(NetplayError::Malformed("start"));
            };
            let n = usize::from(n);
            if rest.len() != 8 + 8 * n || n == 0 || usize::from(slot) >= n || tick_hz == 0 {
                return Err(NetplayError::Malformed("start"));
            }
            let word = |i: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(rest.get(i..i + 8).unwrap_or(&[0; 8]));
                u64::from_be_bytes(a)
            };
            Ok(RollbackStart {
                slot,
                tick_hz,
                seed: word(0),
                players: (0..n).map(|i| word(8 + 8 * i)).collect(),
            })
        }
    }
}
