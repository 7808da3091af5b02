//! The authoritative snapshot codec: quantized, bit-packed world states, delta-encoded against
//! the last snapshot each client acknowledged.
//!
//! The node keeps one [`Encoder`] per client and the client one [`Decoder`]. Both keep the
//! snapshots of the last [`SnapshotConfig::history_len`] ticks they sent or decoded, *as the
//! client sees them* (quantized, and with any entity the byte budget held back left at its
//! predicted baseline value). A delta names its baseline tick; because both sides derive the same
//! baseline and apply the same deterministic prediction, the decoder reproduces exactly the state
//! the encoder recorded. Nothing drifts: the encoder never diffs against raw game state.
//!
//! # Quantization (the wire resolution)
//!
//! | field | game units | wire units | worst error |
//! |---|---|---|---|
//! | `x`, `y` | 1/256 world unit | 1/32 unit ([`POS_SHIFT`] = 3) | 1/64 unit |
//! | `vx`, `vy` | 1/256 unit/frame | 1/64 unit/frame ([`VEL_SHIFT`] = 2) | 1/128 unit/frame |
//! | `angle`, `health`, `flags`, `kind` | 8 bits | unchanged | exact |
//!
//! 1/32 unit is about a pixel when a 64-unit arena fills a 2048-pixel screen, and 1/64 unit of
//! error is far below a player's ~1-unit hit radius; the lag compensator works on the node's
//! exact state anyway. Velocity only drives the client's extrapolation: 1/128 unit/frame of
//! error over a 100 ms extrapolation is 0.02 units. Rounding is to nearest with ties up, done
//! on integers, so every machine quantizes identically; quantizing twice changes nothing.
//!
//! # Packet layout (all fields LSB-first, see [`crate::bits`])
//!
//! ```text
//! tick u32 | has_baseline bit | [baseline age-1 tiered]
//! [removed: count, then baseline index gaps]            (delta only)
//! [updates: mode bit; 0 = one changed bit per kept entity, 1 = count + index gaps;
//!  each changed entity is followed by its record]        (delta only)
//! added: count, then per entity: id gap, kind u8, record against an all-zero entity
//! record: pos? [delta|absolute x y] vel? [dvx dvy] angle? [dangle] misc? [health? u8] [flags? u8]
//! ```
//!
//! A kept entity is "unchanged" when it equals its baseline *moved along its baseline velocity*
//! for the ticks between baseline and snapshot, so an entity gliding at constant speed costs one
//! bit (or nothing, in count mode). Position deltas are taken from that prediction too; far
//! moves (teleports, spawns) use absolute coordinates, whichever is cheaper.
//!
//! # Budget
//!
//! [`Encoder::encode`] takes a byte budget. When the changes do not fit, the entities held back
//! longest go first and the rest stay at their predicted baseline on the client (and in the
//! encoder's record of what the client has), to be sent in a later snapshot: the world
//! converges instead of the packet growing.
#![deny(clippy::indexing_slicing)]

mod bench;

use std::collections::{HashMap, VecDeque};

use crate::bits::{tiered_cost_bits, zigzag, BitReader, BitWriter, BitsError};
use crate::game::EntityView;

pub use bench::{
    bench_bytes_per_entity, bench_snapshot_bytes, BenchMotion, SnapshotBenchConfig,
    SnapshotBenchReport, NAIVE_ENTITY_BYTES, NAIVE_HEADER_BYTES,
};

/// Positions go on the wire in units of 2^POS_SHIFT game units: 1/32 world unit.
pub const POS_SHIFT: u32 = 3;
/// Velocities go on the wire in units of 2^VEL_SHIFT game units per frame: 1/64 unit/frame.
pub const VEL_SHIFT: u32 = 2;

/// Largest history a codec may keep (snapshots per client).
pub const HISTORY_LEN_MAX: usize = 1024;
/// Largest entity count a codec may be configured for (every possible `u16` id).
pub const ENTITIES_MAX: usize = 1 << 16;

// Quantized ranges: chosen so that dequantizing (shifting back) always fits an i32.
const Q_POS_MIN: i64 = (i32::MIN >> POS_SHIFT) as i64;
const Q_POS_MAX: i64 = (i32::MAX >> POS_SHIFT) as i64;
const Q_VEL_MIN: i64 = (i32::MIN >> VEL_SHIFT) as i64;
const Q_VEL_MAX: i64 = (i32::MAX >> VEL_SHIFT) as i64;

// Tier tables (see `crate::bits`). Tuned for a 64-unit arena at 30-60 Hz with baselines a few
// ticks old: most position deltas from the prediction fit 5-7 bits, velocity deltas 4-6.
const AGE_TIERS: &[u32] = &[2, 4, 8, 32];
const COUNT_TIERS: &[u32] = &[0, 3, 6, 10, 17];
const GAP_TIERS: &[u32] = &[0, 3, 6, 10, 16];
const POS_DELTA_TIERS: &[u32] = &[3, 5, 7, 9, 11];
/// 13 bits hold a zigzagged 64-unit arena coordinate (0..=2048 at 1/32); the 32-bit tier holds
/// any quantized i32.
const POS_ABS_TIERS: &[u32] = &[13, 32];
const VEL_TIERS: &[u32] = &[2, 4, 6, 8, 32];
const ANGLE_TIERS: &[u32] = &[3, 5, 8];
const TICK_BITS: u32 = 32;
/// Worst case of one id or index gap (65535 in the last gap tier).
const GAP_BITS_MAX: usize = 20;

/// One tick of the world as the snapshot codec sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The simulation tick (frame) this state belongs to.
    pub tick: u32,
    /// The entities, in increasing id order with unique ids.
    pub entities: Vec<EntityView>,
}

impl Snapshot {
    /// This snapshot at wire resolution: what a client decodes when nothing is held back.
    pub fn quantized(&self) -> Snapshot {
        let mut entities: Vec<EntityView> = self.entities.iter().map(quantize).collect();
        entities.sort_by_key(|e| e.id);
        Snapshot {
            tick: self.tick,
            entities,
        }
    }
}

/// Quantizes one entity to wire resolution (see the module docs). Idempotent.
pub fn quantize(e: &EntityView) -> EntityView {
    Q::from_view(e).to_view()
}

/// Limits of one snapshot codec (one per client connection, on each side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Snapshots each side remembers (sent / decoded). A client ack older than this many
    /// snapshots is useless and the encoder falls back to a full snapshot. Default 64 (2 s at
    /// 30 Hz). Both sides should use the same value. Capped at [`HISTORY_LEN_MAX`].
    pub history_len: usize,
    /// Most entities in one snapshot. Default 1024. Capped at [`ENTITIES_MAX`].
    pub max_entities: usize,
    /// Largest packet the encoder writes and the decoder accepts. Default 1200 bytes (one QUIC
    /// datagram). Capped at [`crate::bits::BITS_MAX_BYTES`].
    pub max_packet_bytes: usize,
    /// The decoder refuses a packet this many ticks or more older than the newest it decoded.
    /// Default 64.
    pub stale_window_ticks: u32,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            history_len: 64,
            max_entities: 1024,
            max_packet_bytes: 1200,
            stale_window_ticks: 64,
        }
    }
}

impl SnapshotConfig {
    fn clamped(self) -> Self {
        SnapshotConfig {
            history_len: self.history_len.clamp(1, HISTORY_LEN_MAX),
            max_entities: self.max_entities.min(ENTITIES_MAX),
            max_packet_bytes: self.max_packet_bytes.min(crate::bits::BITS_MAX_BYTES),
            stale_window_ticks: self.stale_window_ticks.max(1),
        }
    }
}

/// Why a snapshot could not be encoded. The encoder's state is unchanged after an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Ticks must increase from one encode to the next: each tick is encoded once, so both sides
    /// agree on what the client holds for it.
    #[error("tick {tick} is not after the last encoded tick {last}")]
    TickNotIncreasing {
        /// The tick given.
        tick: u32,
        /// The last tick encoded.
        last: u32,
    },
    /// The snapshot has more entities than [`SnapshotConfig::max_entities`].
    #[error("{count} entities, limit {max}")]
    TooManyEntities {
        /// Entities in the snapshot.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Two entities share an id.
    #[error("duplicate entity id {id}")]
    DuplicateId {
        /// The id.
        id: u16,
    },
    /// Even with every change held back, the header and removals need more than the budget.
    /// Raise `max_bytes`, or remove fewer entities per tick.
    #[error("budget {max_bytes} bytes is below the {needed_bytes} bytes this snapshot needs")]
    BudgetTooSmall {
        /// Bytes the smallest valid packet needs.
        needed_bytes: usize,
        /// The budget (after capping at `max_packet_bytes`).
        max_bytes: usize,
    },
    /// A bit-level error while writing; a bug in the encoder if ever seen.
    #[error("bit writer: {0}")]
    Bits(#[from] BitsError),
}

/// Why a packet was refused. The decoder's state is unchanged after an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet is larger than [`SnapshotConfig::max_packet_bytes`].
    #[error("packet of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Packet size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bits ran out in the middle of a field (a truncated or garbled packet).
    #[error("malformed snapshot: {0}")]
    Bits(#[from] BitsError),
    /// A field holds a value no encoder writes.
    #[error("malformed snapshot: {0}")]
    Invalid(&'static str),
    /// The packet is older than the decoder's window: its tick is `stale_window_ticks` or more
    /// behind the newest decoded one, or older than everything in a full history.
    #[error("stale snapshot: tick {tick}, newest decoded {newest}")]
    Stale {
        /// The packet's tick.
        tick: u32,
        /// Newest tick decoded.
        newest: u32,
    },
    /// This tick was decoded already (a duplicated datagram).
    #[error("snapshot for tick {tick} already decoded")]
    Duplicate {
        /// The tick.
        tick: u32,
    },
    /// The baseline tick is not in the history, though not older than it: the node deltas
    /// against a snapshot this client never decoded (a forged ack, or a restarted client).
    #[error("snapshot {tick} is a delta against unknown baseline {baseline}")]
    UnknownBaseline {
        /// The packet's tick.
        tick: u32,
        /// The baseline named.
        baseline: u32,
    },
    /// The baseline tick fell out of the history.
    #[error("baseline {baseline} is older than the oldest kept snapshot {oldest}")]
    BaselineTooOld {
        /// The baseline named.
        baseline: u32,
        /// Oldest tick still kept.
        oldest: u32,
    },
    /// The packet describes more entities than [`SnapshotConfig::max_entities`].
    #[error("snapshot with {count} entities, limit {max}")]
    TooManyEntities {
        /// Entities the packet describes (at least).
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Counters of one [`Encoder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncoderStats {
    /// Snapshots encoded.
    pub snapshots: u64,
    /// Of those, full snapshots (no usable ack).
    pub full_snapshots: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Entity updates held back by the byte budget, summed over snapshots.
    pub deferred_entities: u64,
    /// Acks ignored because they named a tick not in the history (or not newer).
    pub acks_ignored: u64,
    /// Entity updates held back by interest management (far entities sent less often).
    pub interest_deferred: u64,
}

/// The node's side of one client's snapshot stream.
#[derive(Debug, Clone)]
pub struct Encoder {
    config: SnapshotConfig,
    /// What the client holds (or will hold) for each tick sent, oldest first.
    sent: VecDeque<Snapshot>,
    acked_tick: Option<u32>,
    last_tick: Option<u32>,
    /// Consecutive snapshots each entity's update was held back by the budget: its priority.
    deferred_streak: HashMap<u16, u32>,
    stats: EncoderStats,
}

impl Encoder {
    /// A fresh encoder: the first snapshot will be full.
    pub fn new(config: SnapshotConfig) -> Self {
        let config = config.clamped();
        Encoder {
            config,
            sent: VecDeque::with_capacity(config.history_len),
            acked_tick: None,
            last_tick: None,
            deferred_streak: HashMap::new(),
            stats: EncoderStats::default(),
        }
    }

    /// The configuration in force (after capping).
    pub fn config(&self) -> &SnapshotConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> EncoderStats {
        self.stats
    }

    /// The newest tick the client acknowledged that is still usable as a baseline.
    pub fn acked_tick(&self) -> Option<u32> {
        self.acked_tick
            .filter(|&t| self.sent.iter().any(|s| s.tick == t))
    }

    /// What the client holds for `tick`, if it decoded that packet: the exact state the next
    /// delta against `tick` starts from.
    pub fn sent(&self, tick: u32) -> Option<&Snapshot> {
        self.sent.iter().find(|s| s.tick == tick)
    }

    /// Records the client's acknowledgement of `tick`. Returns `false` (and ignores it) unless
    /// the tick was sent, is still in the history and is newer than the current ack.
    pub fn on_ack(&mut self, tick: u32) -> bool {
        let newer = self.acked_tick.is_none_or(|a| tick > a);
        if newer && self.sent(tick).is_some() {
            self.acked_tick = Some(tick);
            true
        } else {
            self.stats.acks_ignored += 1;
            false
        }
    }

    /// Forgets acks, so the next snapshot is full (e.g. after the client reports it lost state).
    pub fn reset_acks(&mut self) {
        self.acked_tick = None;
    }

    /// Encodes `snap` for this client in at most `max_bytes` (capped at
    /// [`SnapshotConfig::max_packet_bytes`]): a delta against the client's newest usable ack, or
    /// a full snapshot when there is none.
    pub fn encode(&mut self, snap: &Snapshot, max_bytes: usize) -> Result<Vec<u8>, EncodeError> {
        self.encode_with_interest(snap, max_bytes, |_| 1)
    }

    /// [`Encoder::encode`] with per-client relevance: `period(entity)` says how often a changed
    /// entity is worth an update to this client (1: every snapshot; `n`: at most every `n`th,
    /// with the client dead-reckoning it in between). Entities that appear or disappear are
    /// always sent; an update held back gains priority like one held back by the budget.
    pub fn encode_with_interest(
        &mut self,
        snap: &Snapshot,
        max_bytes: usize,
        period: impl Fn(&EntityView) -> u32,
    ) -> Result<Vec<u8>, EncodeError> {
        if let Some(last) = self.last_tick {
            if snap.tick <= last {
                return Err(EncodeError::TickNotIncreasing {
                    tick: snap.tick,
                    last,
                });
            }
        }
        if snap.entities.len() > self.config.max_entities {
            return Err(EncodeError::TooManyEntities {
                count: snap.entities.len(),
                max: self.config.max_entities,
            });
        }
        let mut current: Vec<Q> = snap.entities.iter().map(Q::from_view).collect();
        current.sort_by_key(|q| q.id);
        if let Some(pair) = current
            .windows(2)
            .find(|w| w.first().map(|q| q.id) == w.get(1).map(|q| q.id))
        {
            let id = pair.first().map_or(0, |q| q.id);
            return Err(EncodeError::DuplicateId { id });
        }
        let baseline = self.acked_tick().and_then(|t| self.sent(t)).map(|s| {
            (
                s.tick,
                s.entities.iter().map(Q::from_view).collect::<Vec<_>>(),
            )
        });
        let plan = Plan::new(snap.tick, baseline, current);
        let max_bytes = max_bytes.min(self.config.max_packet_bytes);

        let mut send = plan.send_everything();
        let mut held = 0u64;
        for (k, slot) in plan.kept.iter().zip(send.kept.iter_mut()) {
            if !k.changed() {
                continue;
            }
            let p = period(&k.current.to_view()).max(1);
            let streak = self
                .deferred_streak
                .get(&k.current.id)
                .copied()
                .unwrap_or(0);
            if p > 1 && streak + 1 < p {
                *slot = false;
                held += 1;
            }
        }
        let allowed = send.clone();
        let writer = match plan.write(&send, max_bytes) {
            Ok(w) => w,
            Err(BitsError::Full { .. }) => {
                send = self.select_within_budget(&plan, &allowed, max_bytes)?;
                plan.write(&send, max_bytes)?
            }
            Err(e) => return Err(e.into()),
        };
        let bytes = writer.finish();
        self.commit(&plan, &send, bytes.len());
        self.stats.interest_deferred += held;
        self.stats.deferred_entities -= held.min(self.stats.deferred_entities);
        Ok(bytes)
    }

    /// Picks which records fit when not everything does: longest-deferred first, then lowest
    /// id; greedy, so a small record still fits after a big one did not.
    fn select_within_budget(
        &self,
        plan: &Plan,
        allowed: &Send,
        max_bytes: usize,
    ) -> Result<Send, EncodeError> {
        let budget_bits = max_bytes.saturating_mul(8);
        let skeleton_bits = plan.skeleton_bits_max()?;
        if skeleton_bits > budget_bits {
            return Err(EncodeError::BudgetTooSmall {
                needed_bytes: skeleton_bits.div_ceil(8),
                max_bytes,
            });
        }
        // (streak, id, is_added, index, cost_bits)
        let mut candidates: Vec<(u32, u16, bool, usize, usize)> = Vec::new();
        for (i, k) in plan.kept.iter().enumerate() {
            if k.changed() && allowed.kept.get(i).copied().unwrap_or(false) {
                let cost = record_bits(&k.predicted, &k.current)?;
                let streak = self
                    .deferred_streak
                    .get(&k.current.id)
                    .copied()
                    .unwrap_or(0);
                candidates.push((streak, k.current.id, false, i, cost));
            }
        }
        for (i, a) in plan.added.iter().enumerate() {
            let cost = GAP_BITS_MAX + 8 + record_bits(&Q::zero(a.id, a.kind), a)?;
            let streak = self.deferred_streak.get(&a.id).copied().unwrap_or(0);
            candidates.push((streak, a.id, true, i, cost));
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut left_bits = budget_bits - skeleton_bits;
        let mut send = Send {
            kept: vec![false; plan.kept.len()],
            added: vec![false; plan.added.len()],
        };
        for (_, _, is_added, i, cost) in candidates {
            if cost <= left_bits {
                left_bits -= cost;
                let slot = if is_added {
                    send.added.get_mut(i)
                } else {
                    send.kept.get_mut(i)
                };
                if let Some(s) = slot {
                    *s = true;
                }
            }
        }
        Ok(send)
    }

    /// Records what the client will hold for this tick and updates priorities and counters.
    fn commit(&mut self, plan: &Plan, send: &Send, len_bytes: usize) {
        let mut entities: Vec<EntityView> = Vec::with_capacity(plan.kept.len() + plan.added.len());
        let mut streaks = HashMap::new();
        let mut deferred = 0u64;
        for (k, &sent) in plan.kept.iter().zip(&send.kept) {
            if sent || !k.changed() {
                entities.push(k.current.to_view());
            } else {
                entities.push(k.predicted.to_view());
                deferred += 1;
                let s = self
                    .deferred_streak
                    .get(&k.current.id)
                    .copied()
                    .unwrap_or(0);
                streaks.insert(k.current.id, s.saturating_add(1));
            }
        }
        for (a, &sent) in plan.added.iter().zip(&send.added) {
            if sent {
                entities.push(a.to_view());
            } else {
                deferred += 1;
                let s = self.deferred_streak.get(&a.id).copied().unwrap_or(0);
                streaks.insert(a.id, s.saturating_add(1));
            }
        }
        entities.sort_by_key(|e| e.id);
        self.deferred_streak = streaks;
        if self.sent.len() >= self.config.history_len {
            self.sent.pop_front();
        }
        self.sent.push_back(Snapshot {
            tick: plan.tick,
            entities,
        });
        self.last_tick = Some(plan.tick);
        self.stats.snapshots += 1;
        self.stats.full_snapshots += u64::from(plan.baseline_tick.is_none());
        self.stats.bytes += len_bytes as u64;
        self.stats.deferred_entities += deferred;
    }
}

/// The client's side of its snapshot stream.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: SnapshotConfig,
    /// Decoded snapshots in increasing tick order.
    history: VecDeque<Snapshot>,
    newest_tick: Option<u32>,
    stats: DecoderStats,
}

/// Counters of one [`Decoder`]: every refusal is counted by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Packets decoded.
    pub decoded: u64,
    /// Refused as stale or duplicate (late or repeated datagrams: normal in small numbers).
    pub stale_or_duplicate: u64,
    /// Refused for an unknown or too old baseline.
    pub missing_baseline: u64,
    /// Refused as malformed, oversized or over the entity limit.
    pub malformed: u64,
}

impl Decoder {
    /// A fresh decoder: it accepts only full snapshots until it has decoded one.
    pub fn new(config: SnapshotConfig) -> Self {
        let config = config.clamped();
        Decoder {
            config,
            history: VecDeque::with_capacity(config.history_len),
            newest_tick: None,
            stats: DecoderStats::default(),
        }
    }

    /// The configuration in force (after capping).
    pub fn config(&self) -> &SnapshotConfig {
        &self.config
    }

    /// The newest tick decoded: what the client acknowledges.
    pub fn newest_tick(&self) -> Option<u32> {
        self.newest_tick
    }

    /// A decoded snapshot still in the history.
    pub fn snapshot(&self, tick: u32) -> Option<&Snapshot> {
        self.history.iter().find(|s| s.tick == tick)
    }

    /// Counters.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Decodes one packet, remembers the result as a possible baseline and returns it.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        let result = self.decode_packet(bytes);
        let counter = match &result {
            Ok(_) => &mut self.stats.decoded,
            Err(DecodeError::Stale { .. } | DecodeError::Duplicate { .. }) => {
                &mut self.stats.stale_or_duplicate
            }
            Err(DecodeError::UnknownBaseline { .. } | DecodeError::BaselineTooOld { .. }) => {
                &mut self.stats.missing_baseline
            }
            Err(_) => &mut self.stats.malformed,
        };
        *counter += 1;
        result
    }

    fn decode_packet(&mut self, bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        if bytes.len() > self.config.max_packet_bytes {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: self.config.max_packet_bytes,
            });
        }
        let mut r = BitReader::new(bytes);
        let tick = r.read_bits(TICK_BITS)? as u32;
        self.check_fresh(tick)?;
        let mut entities = if r.read_bool()? {
            let age = r.read_tiered(AGE_TIERS)?.saturating_add(1);
            let baseline_tick = u64::from(tick)
                .checked_sub(age)
                .ok_or(DecodeError::Invalid("baseline before tick 0"))?
                as u32;
            let baseline = self.baseline(tick, baseline_tick)?;
            let age = tick - baseline_tick;
            let kept = read_removals(&mut r, baseline)?
                .into_iter()
                .map(|b| b.predict(age))
                .collect::<Vec<_>>();
            read_updates(&mut r, kept)?
        } else {
            Vec::new()
        };
        read_added(&mut r, &mut entities, self.config.max_entities)?;
        if r.remaining_bits() >= 8 {
            return Err(DecodeError::Invalid("trailing bytes"));
        }
        if r.read_bits(r.remaining_bits() as u32)? != 0 {
            return Err(DecodeError::Invalid("nonzero padding"));
        }
        let snap = Snapshot {
            tick,
            entities: entities.into_iter().map(Q::to_view).collect(),
        };
        self.remember(snap.clone());
        Ok(snap)
    }

    fn check_fresh(&self, tick: u32) -> Result<(), DecodeError> {
        let Some(newest) = self.newest_tick else {
            return Ok(());
        };
        let oldest = self.history.front().map_or(newest, |s| s.tick);
        let full = self.history.len() >= self.config.history_len;
        if newest.saturating_sub(tick) >= self.config.stale_window_ticks || (full && tick < oldest)
        {
            return Err(DecodeError::Stale { tick, newest });
        }
        if self.snapshot(tick).is_some() {
            return Err(DecodeError::Duplicate { tick });
        }
        Ok(())
    }

    fn baseline(&self, tick: u32, baseline: u32) -> Result<Vec<Q>, DecodeError> {
        match self.snapshot(baseline) {
            Some(s) => Ok(s.entities.iter().map(Q::from_view).collect()),
            None => match self.history.front() {
                Some(o) if baseline < o.tick => Err(DecodeError::BaselineTooOld {
                    baseline,
                    oldest: o.tick,
                }),
                _ => Err(DecodeError::UnknownBaseline { tick, baseline }),
            },
        }
    }

    fn remember(&mut self, snap: Snapshot) {
        let at = self.history.partition_point(|s| s.tick < snap.tick);
        self.newest_tick = Some(self.newest_tick.map_or(snap.tick, |n| n.max(snap.tick)));
        self.history.insert(at, snap);
        while self.history.len() > self.config.history_len {
            self.history.pop_front();
        }
    }
}

/// An entity at wire resolution (positions in 1/32 units, velocities in 1/64 units/frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Q {
    id: u16,
    kind: u8,
    x: i64,
    y: i64,
    vx: i64,
    vy: i64,
    angle: u8,
    health: u8,
    flags: u8,
}

impl Q {
    fn zero(id: u16, kind: u8) -> Q {
        Q {
            id,
            kind,
            x: 0,
            y: 0,
            vx: 0,
            vy: 0,
            angle: 0,
            health: 0,
            flags: 0,
        }
    }

    fn from_view(e: &EntityView) -> Q {
        Q {
            id: e.id,
            kind: e.kind,
            x: quantize_pos(i64::from(e.x)),
            y: quantize_pos(i64::from(e.y)),
            vx: quantize_vel(i64::from(e.vx)),
            vy: quantize_vel(i64::from(e.vy)),
            angle: e.angle,
            health: e.health,
            flags: e.flags,
        }
    }

    /// Back to game units. Every `Q` built here holds in-range values, so the shifts fit i32.
    fn to_view(self) -> EntityView {
        EntityView {
            id: self.id,
            kind: self.kind,
            x: (self.x << POS_SHIFT) as i32,
            y: (self.y << POS_SHIFT) as i32,
            vx: (self.vx << VEL_SHIFT) as i32,
            vy: (self.vy << VEL_SHIFT) as i32,
            angle: self.angle,
            health: self.health,
            flags: self.flags,
        }
    }

    /// Dead reckoning from a baseline `age_ticks` old: position moved along the velocity, in
    /// game units, then re-quantized. Saturating integer math, so identical everywhere.
    fn predict(&self, age_ticks: u32) -> Q {
        let step = |p: i64, v: i64| {
            let fixed = (p << POS_SHIFT)
                .saturating_add((v << VEL_SHIFT).saturating_mul(i64::from(age_ticks)));
            quantize_pos(fixed)
        };
        Q {
            x: step(self.x, self.vx),
            y: step(self.y, self.vy),
            ..*self
        }
    }
}

fn quantize_pos(fixed: i64) -> i64 {
    (fixed.saturating_add(1 << (POS_SHIFT - 1)) >> POS_SHIFT).clamp(Q_POS_MIN, Q_POS_MAX)
}

fn quantize_vel(fixed: i64) -> i64 {
    (fixed.saturating_add(1 << (VEL_SHIFT - 1)) >> VEL_SHIFT).clamp(Q_VEL_MIN, Q_VEL_MAX)
}

/// A baseline entity that is still there: where the client predicts it and where it is.
#[derive(Debug, Clone, Copy)]
struct Kept {
    predicted: Q,
    current: Q,
}

impl Kept {
    fn changed(&self) -> bool {
        self.predicted != self.current
    }
}

/// Which records go in the packet: one flag per kept entity and per added entity.
#[derive(Debug, Clone)]
struct Send {
    kept: Vec<bool>,
    added: Vec<bool>,
}

/// One snapshot's diff against its baseline, before choosing what fits.
#[derive(Debug)]
struct Plan {
    tick: u32,
    baseline_tick: Option<u32>,
    /// Baseline indices of removed entities (also when an id changed kind).
    removed: Vec<usize>,
    kept: Vec<Kept>,
    added: Vec<Q>,
}

impl Plan {
    fn new(tick: u32, baseline: Option<(u32, Vec<Q>)>, current: Vec<Q>) -> Plan {
        let Some((baseline_tick, base)) = baseline else {
            return Plan {
                tick,
                baseline_tick: None,
                removed: Vec::new(),
                kept: Vec::new(),
                added: current,
            };
        };
        let age = tick - baseline_tick;
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        let mut added = Vec::new();
        let mut cur = current.into_iter().peekable();
        for (i, b) in base.iter().enumerate() {
            while let Some(c) = cur.next_if(|c| c.id < b.id) {
                added.push(c);
            }
            match cur.next_if(|c| c.id == b.id) {
                Some(c) if c.kind == b.kind => kept.push(Kept {
                    predicted: b.predict(age),
                    current: c,
                }),
                Some(c) => {
                    removed.push(i);
                    added.push(c);
                }
                None => removed.push(i),
            }
        }
        added.extend(cur);
        Plan {
            tick,
            baseline_tick: Some(baseline_tick),
            removed,
            kept,
            added,
        }
    }

    fn send_everything(&self) -> Send {
        Send {
            kept: vec![true; self.kept.len()],
            added: vec![true; self.added.len()],
        }
    }

    /// Writes the packet; `BitsError::Full` when it does not fit `max_bytes`.
    fn write(&self, send: &Send, max_bytes: usize) -> Result<BitWriter, BitsError> {
        let mut w = BitWriter::with_max_bytes(max_bytes);
        self.write_header_and_removals(&mut w)?;
        if self.baseline_tick.is_some() {
            self.write_updates(&mut w, send)?;
        }
        let added: Vec<&Q> = self
            .added
            .iter()
            .zip(&send.added)
            .filter_map(|(a, &s)| s.then_some(a))
            .collect();
        w.write_tiered(added.len() as u64, COUNT_TIERS)?;
        let mut next_id = 0u64;
        for a in added {
            w.write_tiered(u64::from(a.id) - next_id, GAP_TIERS)?;
            next_id = u64::from(a.id) + 1;
            w.write_bits(u64::from(a.kind), 8)?;
            write_record(&mut w, &Q::zero(a.id, a.kind), a)?;
        }
        Ok(w)
    }

    fn write_header_and_removals(&self, w: &mut BitWriter) -> Result<(), BitsError> {
        w.write_bits(u64::from(self.tick), TICK_BITS)?;
        w.write_bool(self.baseline_tick.is_some())?;
        if let Some(b) = self.baseline_tick {
            w.write_tiered(u64::from(self.tick - b - 1), AGE_TIERS)?;
            w.write_tiered(self.removed.len() as u64, COUNT_TIERS)?;
            let mut next = 0usize;
            for &i in &self.removed {
                w.write_tiered((i - next) as u64, GAP_TIERS)?;
                next = i + 1;
            }
        }
        Ok(())
    }

    /// The update section, in whichever mode is smaller: a bit per kept entity, or a count and
    /// the index gaps of the changed ones (wins when few of many entities changed).
    fn write_updates(&self, w: &mut BitWriter, send: &Send) -> Result<(), BitsError> {
        let changed: Vec<usize> = self
            .kept
            .iter()
            .zip(&send.kept)
            .enumerate()
            .filter_map(|(i, (k, &s))| (s && k.changed()).then_some(i))
            .collect();
        let bitmask_bits = self.kept.len() as u64;
        let mut list_bits =
            u64::from(tiered_cost_bits(changed.len() as u64, COUNT_TIERS).unwrap_or(u32::MAX));
        let mut next = 0usize;
        for &i in &changed {
            list_bits +=
                u64::from(tiered_cost_bits((i - next) as u64, GAP_TIERS).unwrap_or(u32::MAX));
            next = i + 1;
        }
        if list_bits < bitmask_bits {
            w.write_bool(true)?;
            w.write_tiered(changed.len() as u64, COUNT_TIERS)?;
            let mut next = 0usize;
            for &i in &changed {
                w.write_tiered((i - next) as u64, GAP_TIERS)?;
                next = i + 1;
                if let Some(k) = self.kept.get(i) {
                    write_record(w, &k.predicted, &k.current)?;
                }
            }
        } else {
            w.write_bool(false)?;
            let mut changed = changed.iter().peekable();
            for (i, k) in self.kept.iter().enumerate() {
                let is_changed = changed.next_if(|&&c| c == i).is_some();
                w.write_bool(is_changed)?;
                if is_changed {
                    write_record(w, &k.predicted, &k.current)?;
                }
            }
        }
        Ok(())
    }

    /// An upper bound on the packet with every record held back: header, removals, one bit per
    /// kept entity, the mode bit and the largest added count.
    fn skeleton_bits_max(&self) -> Result<usize, BitsError> {
        let mut w = BitWriter::with_max_bytes(crate::bits::BITS_MAX_BYTES);
        self.write_header_and_removals(&mut w)?;
        let mut bits = w.len_bits();
        if self.baseline_tick.is_some() {
            bits += 1 + self.kept.len();
        }
        bits += tiered_cost_bits(self.added.len() as u64, COUNT_TIERS).unwrap_or(u32::MAX) as usize;
        Ok(bits)
    }
}

fn record_bits(reference: &Q, current: &Q) -> Result<usize, BitsError> {
    let mut w = BitWriter::with_max_bytes(64);
    write_record(&mut w, reference, current)?;
    Ok(w.len_bits())
}

/// One entity's changes against `r` (its predicted baseline, or all zeros when added).
fn write_record(w: &mut BitWriter, r: &Q, c: &Q) -> Result<(), BitsError> {
    let pos_changed = c.x != r.x || c.y != r.y;
    w.write_bool(pos_changed)?;
    if pos_changed {
        let (dx, dy) = (c.x - r.x, c.y - r.y);
        let delta_bits = tiered_cost_bits(zigzag(dx), POS_DELTA_TIERS)
            .zip(tiered_cost_bits(zigzag(dy), POS_DELTA_TIERS))
            .map(|(a, b)| a + b);
        let abs_bits = tiered_cost_bits(zigzag(c.x), POS_ABS_TIERS)
            .zip(tiered_cost_bits(zigzag(c.y), POS_ABS_TIERS))
            .map_or(u32::MAX, |(a, b)| a + b);
        match delta_bits {
            Some(d) if d <= abs_bits => {
                w.write_bool(false)?;
                w.write_tiered_signed(dx, POS_DELTA_TIERS)?;
                w.write_tiered_signed(dy, POS_DELTA_TIERS)?;
            }
            _ => {
                w.write_bool(true)?;
                w.write_tiered_signed(c.x, POS_ABS_TIERS)?;
                w.write_tiered_signed(c.y, POS_ABS_TIERS)?;
            }
        }
    }
    let vel_changed = c.vx != r.vx || c.vy != r.vy;
    w.write_bool(vel_changed)?;
    if vel_changed {
        w.write_tiered_signed(c.vx - r.vx, VEL_TIERS)?;
        w.write_tiered_signed(c.vy - r.vy, VEL_TIERS)?;
    }
    w.write_bool(c.angle != r.angle)?;
    if c.angle != r.angle {
        // Shortest arc: a turn from 250 to 4 is +10, not -246.
        w.write_tiered_signed(i64::from(c.angle.wrapping_sub(r.angle) as i8), ANGLE_TIERS)?;
    }
    let misc_changed = c.health != r.health || c.flags != r.flags;
    w.write_bool(misc_changed)?;
    if misc_changed {
        for (new, old) in [(c.health, r.health), (c.flags, r.flags)] {
            w.write_bool(new != old)?;
            if new != old {
                w.write_bits(u64::from(new), 8)?;
            }
        }
    }
    Ok(())
}

fn read_record(rd: &mut BitReader<'_>, r: &Q) -> Result<Q, DecodeError> {
    let mut c = *r;
    if rd.read_bool()? {
        if rd.read_bool()? {
            c.x = in_range(rd.read_tiered_signed(POS_ABS_TIERS)?, Q_POS_MIN, Q_POS_MAX)?;
            c.y = in_range(rd.read_tiered_signed(POS_ABS_TIERS)?, Q_POS_MIN, Q_POS_MAX)?;
        } else {
            let dx = rd.read_tiered_signed(POS_DELTA_TIERS)?;
            let dy = rd.read_tiered_signed(POS_DELTA_TIERS)?;
            c.x = in_range(r.x.saturating_add(dx), Q_POS_MIN, Q_POS_MAX)?;
            c.y = in_range(r.y.saturating_add(dy), Q_POS_MIN, Q_POS_MAX)?;
        }
    }
    if rd.read_bool()? {
        let dvx = rd.read_tiered_signed(VEL_TIERS)?;
        let dvy = rd.read_tiered_signed(VEL_TIERS)?;
        c.vx = in_range(r.vx.saturating_add(dvx), Q_VEL_MIN, Q_VEL_MAX)?;
        c.vy = in_range(r.vy.saturating_add(dvy), Q_VEL_MIN, Q_VEL_MAX)?;
    }
    if rd.read_bool()? {
        let turn = rd.read_tiered_signed(ANGLE_TIERS)?;
        let turn =
            i8::try_from(turn).map_err(|_| DecodeError::Invalid("angle turn out of range"))?;
        c.angle = r.angle.wrapping_add(turn as u8);
    }
    if rd.read_bool()? {
        if rd.read_bool()? {
            c.health = rd.read_bits(8)? as u8;
        }
        if rd.read_bool()? {
            c.flags = rd.read_bits(8)? as u8;
        }
    }
    Ok(c)
}

fn in_range(v: i64, min: i64, max: i64) -> Result<i64, DecodeError> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(DecodeError::Invalid("quantized value out of range"))
    }
}

/// Reads the removal list and returns the baseline entities that stay, in order.
fn read_removals(r: &mut BitReader<'_>, baseline: Vec<Q>) -> Result<Vec<Q>, DecodeError> {
    let count = r.read_tiered(COUNT_TIERS)?;
    if count > baseline.len() as u64 {
        return Err(DecodeError::Invalid("more removals than baseline entities"));
    }
    let mut removed = vec![false; baseline.len()];
    let mut next = 0u64;
    for _ in 0..count {
        let index = next.saturating_add(r.read_tiered(GAP_TIERS)?);
        let slot = usize::try_from(index)
            .ok()
            .and_then(|i| removed.get_mut(i))
            .ok_or(DecodeError::Invalid("removal index past the baseline"))?;
        *slot = true;
        next = index + 1;
    }
    Ok(baseline
        .into_iter()
        .zip(removed)
        .filter_map(|(q, gone)| (!gone).then_some(q))
        .collect())
}

/// Reads the update section, turning predicted kept entities into their current state.
fn read_updates(r: &mut BitReader<'_>, mut kept: Vec<Q>) -> Result<Vec<Q>, DecodeError> {
    if r.read_bool()? {
        let count = r.read_tiered(COUNT_TIERS)?;
        if count > kept.len() as u64 {
            return Err(DecodeError::Invalid("more updates than kept entities"));
        }
        let mut next = 0u64;
        for _ in 0..count {
            let index = next.saturating_add(r.read_tiered(GAP_TIERS)?);
            let slot = usize::try_from(index)
                .ok()
                .and_then(|i| kept.get_mut(i))
                .ok_or(DecodeError::Invalid("update index past the kept entities"))?;
            *slot = read_record(r, slot)?;
            next = index + 1;
        }
    } else {
        for slot in kept.iter_mut() {
            if r.read_bool()? {
                *slot = read_record(r, slot)?;
            }
        }
    }
    Ok(kept)
}

/// Reads the added entities and merges them into `entities` (kept ones, in id order).
fn read_added(
    r: &mut BitReader<'_>,
    entities: &mut Vec<Q>,
    max_entities: usize,
) -> Result<(), DecodeError> {
    let count = r.read_tiered(COUNT_TIERS)?;
    let total = (entities.len() as u64).saturating_add(count);
    if total > max_entities as u64 {
        return Err(DecodeError::TooManyEntities {
            count: usize::try_from(total).unwrap_or(usize::MAX),
            max: max_entities,
        });
    }
    if count == 0 {
        return Ok(());
    }
    let mut added = Vec::with_capacity(count as usize);
    let mut next_id = 0u64;
    for _ in 0..count {
        let id = next_id.saturating_add(r.read_tiered(GAP_TIERS)?);
        let id = u16::try_from(id).map_err(|_| DecodeError::Invalid("entity id above 65535"))?;
        let kind = r.read_bits(8)? as u8;
        added.push(read_record(r, &Q::zero(id, kind))?);
        next_id = u64::from(id) + 1;
    }
    entities.extend(added);
    entities.sort_by_key(|q| q.id);
    if entities
        .windows(2)
        .any(|w| w.first().map(|q| q.id) == w.get(1).map(|q| q.id))
    {
        return Err(DecodeError::Invalid("added entity id already present"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
