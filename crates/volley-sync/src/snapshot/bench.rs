//! Bytes on the wire: the snapshot codec against a naive fixed-width encoding of the same world.
//!
//! The world is deterministic (seeded, no clock): players random-walk in a 64x64-unit arena at
//! up to 0.25 unit/frame, bouncing off walls, in one of two ways ([`BenchMotion`]):
//!
//! - **steering**, the way keyboard bots and players move: every frame a 1/15 chance to pick a
//!   new one of 8 directions, velocity steering towards it at up to 1/16 unit/frame²; aim
//!   turning towards a target re-picked 1/30 of frames, at most 8 angle steps a frame;
//! - **white noise**, the codec's worst case: a fresh uniformly random velocity every frame (so
//!   position is a pure random walk and dead reckoning predicts nothing) and the aim turning a
//!   random -8..=8 steps every frame.
//!
//! Both toggle the firing flag 1/20 of frames and take a hit 1/150 of frames. One snapshot per tick
//! goes to one client over a path where an ack reaches the node `ack_delay_ms` after the
//! snapshot left (so the encoder's baseline is that old), with optional loss both ways. Every
//! decoded snapshot is checked against the encoder's own record of the client's state.

use std::collections::VecDeque;
use std::fmt;

use super::{Decoder, Encoder, Snapshot, SnapshotConfig};
use crate::game::EntityView;

/// Bytes per entity of the naive encoding: every field at fixed width
/// (id 2 + kind 1 + x, y, vx, vy 4 each + angle, health, flags 1 each).
pub const NAIVE_ENTITY_BYTES: usize = 22;
/// Bytes per snapshot of the naive encoding besides entities: the tick.
pub const NAIVE_HEADER_BYTES: usize = 4;

const PLAYERS_MAX: usize = 1024;
/// One hour at 30 Hz: bounds a benchmark run.
const TICKS_MAX: u32 = 108_000;
const ARENA_MAX: i32 = 64 * 256;
/// 0.25 unit/frame, the arena's player top speed.
const PLAYER_SPEED: i32 = 64;
const PLAYER_ACCEL: i32 = 16;
const DIRECTIONS: [(i32, i32); 8] = [
    (PLAYER_SPEED, 0),
    (45, 45),
    (0, PLAYER_SPEED),
    (-45, 45),
    (-PLAYER_SPEED, 0),
    (-45, -45),
    (0, -PLAYER_SPEED),
    (45, -45),
];

/// What [`bench_snapshot_bytes`] simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotBenchConfig {
    /// Players in the world (capped at 1024).
    pub players: usize,
    /// Ticks simulated, one snapshot each (capped at 108 000).
    pub ticks: u32,
    /// World and loss seed.
    pub seed: u64,
    /// Simulation and snapshot rate. Default 30.
    pub tick_hz: u32,
    /// Time from a snapshot leaving the node to its ack arriving back. Default 100 ms.
    pub ack_delay_ms: u32,
    /// Datagrams lost in each direction, percent. Default 0.
    pub loss_percent: u8,
    /// Encoder byte budget per snapshot. Default 1200.
    pub max_bytes: usize,
    /// How players move. Default [`BenchMotion::Steering`].
    pub motion: BenchMotion,
}

/// How the benchmark's players move (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BenchMotion {
    /// Steering towards one of 8 directions, re-picked now and then: realistic.
    #[default]
    Steering,
    /// A new random velocity and turn every frame: nothing is predictable.
    WhiteNoise,
}

impl Default for SnapshotBenchConfig {
    fn default() -> Self {
        SnapshotBenchConfig {
            players: 32,
            ticks: 900,
            seed: 1,
            tick_hz: 30,
            ack_delay_ms: 100,
            loss_percent: 0,
            max_bytes: 1200,
            motion: BenchMotion::Steering,
        }
    }
}

/// What [`bench_snapshot_bytes`] measured: the codec and the naive encoding, same world, same
/// run.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotBenchReport {
    /// The configuration run.
    pub config: SnapshotBenchConfig,
    /// Snapshots encoded (moving world).
    pub snapshots: u64,
    /// Entity states that changed at wire resolution since the previous tick, summed.
    pub changed_entities: u64,
    /// Codec bytes, all packets of the moving world (headers included).
    pub bytes_total: u64,
    /// `bytes_total / changed_entities`.
    pub bytes_per_changed_entity: f64,
    /// The naive encoding's bytes per entity ([`NAIVE_ENTITY_BYTES`]).
    pub naive_bytes_per_entity: f64,
    /// Mean codec packet size.
    pub bytes_per_snapshot_mean: f64,
    /// Largest codec packet.
    pub bytes_per_snapshot_max: usize,
    /// The first (full) snapshot's size.
    pub full_snapshot_bytes: usize,
    /// Snapshots that went out full (the first, plus any after acks stopped).
    pub full_snapshots: u64,
    /// Codec downstream per client.
    pub downstream_bytes_per_s: f64,
    /// Naive downstream per client.
    pub naive_downstream_bytes_per_s: f64,
    /// Mean codec packet size when nothing moves.
    pub idle_bytes_per_snapshot: f64,
    /// Codec downstream per client when nothing moves.
    pub idle_downstream_bytes_per_s: f64,
    /// Snapshots decoded by the client.
    pub decoded: u64,
    /// Decode errors (must be 0 on this loss-only path).
    pub decode_errors: u64,
    /// Decoded snapshots that differed from the encoder's record (must be 0).
    pub mismatches: u64,
    /// Entity updates the byte budget held back.
    pub deferred_entities: u64,
}

impl fmt::Display for SnapshotBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "snapshot codec: {} players ({:?}), {} ticks at {} Hz, acks {} ms late, {}% loss, seed {}",
            c.players, c.motion, c.ticks, c.tick_hz, c.ack_delay_ms, c.loss_percent, c.seed
        )?;
        writeln!(
            f,
            "  bytes per changed entity: {:.2} (naive fixed-width: {:.0})",
            self.bytes_per_changed_entity, self.naive_bytes_per_entity
        )?;
        writeln!(
            f,
            "  packet: mean {:.1} B, max {} B, first (full) {} B, full snapshots {}",
            self.bytes_per_snapshot_mean,
            self.bytes_per_snapshot_max,
            self.full_snapshot_bytes,
            self.full_snapshots
        )?;
        writeln!(
            f,
            "  downstream per client: {:.0} B/s (naive {:.0} B/s); idle world {:.0} B/s ({:.1} B/snapshot)",
            self.downstream_bytes_per_s,
            self.naive_downstream_bytes_per_s,
            self.idle_downstream_bytes_per_s,
            self.idle_bytes_per_snapshot
        )?;
        write!(
            f,
            "  decoded {} (errors {}, mismatches {}), deferred entity updates {}",
            self.decoded, self.decode_errors, self.mismatches, self.deferred_entities
        )
    }
}

/// The standard measurement: `players` random-walking players for `ticks` at 30 Hz, acks 100 ms
/// late, no loss.
pub fn bench_bytes_per_entity(players: usize, ticks: u32, seed: u64) -> SnapshotBenchReport {
    bench_snapshot_bytes(&SnapshotBenchConfig {
        players,
        ticks,
        seed,
        ..SnapshotBenchConfig::default()
    })
}

/// Runs the moving and the idle world through an encoder/decoder pair and reports bytes next
/// to the naive encoding.
pub fn bench_snapshot_bytes(config: &SnapshotBenchConfig) -> SnapshotBenchReport {
    let config = SnapshotBenchConfig {
        players: config.players.min(PLAYERS_MAX),
        ticks: config.ticks.clamp(1, TICKS_MAX),
        tick_hz: config.tick_hz.max(1),
        loss_percent: config.loss_percent.min(100),
        ..*config
    };
    let moving = run(&config, true);
    let idle = run(&config, false);
    let seconds = f64::from(config.ticks) / f64::from(config.tick_hz);
    let snapshots = moving.snapshots.max(1) as f64;
    let naive_snapshot_bytes = NAIVE_HEADER_BYTES + NAIVE_ENTITY_BYTES * config.players;
    SnapshotBenchReport {
        config,
        snapshots: moving.snapshots,
        changed_entities: moving.changed_entities,
        bytes_total: moving.bytes_total,
        bytes_per_changed_entity: moving.bytes_total as f64 / moving.changed_entities.max(1) as f64,
        naive_bytes_per_entity: NAIVE_ENTITY_BYTES as f64,
        bytes_per_snapshot_mean: moving.bytes_total as f64 / snapshots,
        bytes_per_snapshot_max: moving.bytes_max,
        full_snapshot_bytes: moving.first_bytes,
        full_snapshots: moving.full_snapshots,
        downstream_bytes_per_s: moving.bytes_total as f64 / seconds,
        naive_downstream_bytes_per_s: naive_snapshot_bytes as f64 * f64::from(config.tick_hz),
        idle_bytes_per_snapshot: idle.bytes_total as f64 / idle.snapshots.max(1) as f64,
        idle_downstream_bytes_per_s: idle.bytes_total as f64 / seconds,
        decoded: moving.decoded,
        decode_errors: moving.decode_errors,
        mismatches: moving.mismatches,
        deferred_entities: moving.deferred,
    }
}

#[derive(Debug, Default)]
struct Run {
    snapshots: u64,
    changed_entities: u64,
    bytes_total: u64,
    bytes_max: usize,
    first_bytes: usize,
    full_snapshots: u64,
    decoded: u64,
    decode_errors: u64,
    mismatches: u64,
    deferred: u64,
}

fn run(config: &SnapshotBenchConfig, moving: bool) -> Run {
    let mut world_rng = SplitMix64(config.seed);
    let mut net_rng = SplitMix64(config.seed ^ 0x6e65_7477_6f72_6b00);
    let mut players: Vec<Player> = (0..config.players)
        .map(|_| Player::spawn(&mut world_rng))
        .collect();
    let mut encoder = Encoder::new(SnapshotConfig::default());
    let mut decoder = Decoder::new(SnapshotConfig::default());
    let ack_delay_ticks = (u64::from(config.ack_delay_ms) * u64::from(config.tick_hz) + 500) / 1000;
    let down_ticks = ack_delay_ticks / 2;
    let up_ticks = ack_delay_ticks - down_ticks;
    let mut to_client: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut to_node: VecDeque<(u64, u32)> = VecDeque::new();
    let mut previous: Option<Snapshot> = None;
    let mut out = Run::default();
    for tick in 1..=config.ticks {
        let now = u64::from(tick);
        if moving {
            players
                .iter_mut()
                .for_each(|p| p.step(&mut world_rng, config.motion));
        }
        while let Some((_, ack)) = to_node.pop_front_if_due(now) {
            encoder.on_ack(ack);
        }
        let snap = Snapshot {
            tick,
            entities: players.iter().enumerate().map(|(i, p)| p.view(i)).collect(),
        };
        let quantized = snap.quantized();
        out.changed_entities += count_changed(previous.as_ref(), &quantized);
        previous = Some(quantized);
        let Ok(bytes) = encoder.encode(&snap, config.max_bytes) else {
            continue;
        };
        out.snapshots += 1;
        out.bytes_total += bytes.len() as u64;
        out.bytes_max = out.bytes_max.max(bytes.len());
        if out.snapshots == 1 {
            out.first_bytes = bytes.len();
        }
        if !net_rng.chance_percent(config.loss_percent) {
            to_client.push_back((now + down_ticks, bytes));
        }
        while let Some((_, packet)) = to_client.pop_front_if_due(now) {
            match decoder.decode(&packet) {
                Ok(decoded) => {
                    out.decoded += 1;
                    if encoder.sent(decoded.tick) != Some(&decoded) {
                        out.mismatches += 1;
                    }
                    if !net_rng.chance_percent(config.loss_percent) {
                        to_node.push_back((now + up_ticks, decoded.tick));
                    }
                }
                Err(_) => out.decode_errors += 1,
            }
        }
    }
    let stats = encoder.stats();
    out.full_snapshots = stats.full_snapshots;
    out.deferred = stats.deferred_entities;
    out
}

fn count_changed(previous: Option<&Snapshot>, current: &Snapshot) -> u64 {
    let Some(previous) = previous else {
        return current.entities.len() as u64;
    };
    // Both are in id order (quantized() sorts), so a binary search finds the previous state.
    current
        .entities
        .iter()
        .filter(|e| {
            let before = previous.entities.binary_search_by_key(&e.id, |p| p.id);
            before.map_or(true, |i| previous.entities.get(i) != Some(*e))
        })
        .count() as u64
}

trait PopDue<T> {
    fn pop_front_if_due(&mut self, now: u64) -> Option<(u64, T)>;
}

impl<T> PopDue<T> for VecDeque<(u64, T)> {
    fn pop_front_if_due(&mut self, now: u64) -> Option<(u64, T)> {
        if self.front().is_some_and(|(due, _)| *due <= now) {
            self.pop_front()
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Player {
    x: i32,
    y: i32,
    vx: i32,
    vy: i32,
    direction: usize,
    angle: u8,
    aim: u8,
    health: u8,
    flags: u8,
}

impl Player {
    fn spawn(rng: &mut SplitMix64) -> Player {
        Player {
            x: rng.below(ARENA_MAX as u64 + 1) as i32,
            y: rng.below(ARENA_MAX as u64 + 1) as i32,
            vx: 0,
            vy: 0,
            direction: rng.below(8) as usize,
            angle: rng.next() as u8,
            aim: rng.next() as u8,
            health: 100,
            flags: 0,
        }
    }

    fn step(&mut self, rng: &mut SplitMix64, motion: BenchMotion) {
        match motion {
            BenchMotion::Steering => {
                if rng.below(15) == 0 {
                    self.direction = rng.below(8) as usize;
                }
                let (tx, ty) = DIRECTIONS.get(self.direction).copied().unwrap_or((0, 0));
                self.vx += (tx - self.vx).clamp(-PLAYER_ACCEL, PLAYER_ACCEL);
                self.vy += (ty - self.vy).clamp(-PLAYER_ACCEL, PLAYER_ACCEL);
                if rng.below(30) == 0 {
                    self.aim = rng.next() as u8;
                }
                let turn = (self.aim.wrapping_sub(self.angle) as i8).clamp(-8, 8);
                self.angle = self.angle.wrapping_add(turn as u8);
            }
            BenchMotion::WhiteNoise => {
                let span = 2 * PLAYER_SPEED as u64 + 1;
                self.vx = rng.below(span) as i32 - PLAYER_SPEED;
                self.vy = rng.below(span) as i32 - PLAYER_SPEED;
                let turn = rng.below(17) as i8 - 8;
                self.angle = self.angle.wrapping_add(turn as u8);
            }
        }
        self.x += self.vx;
        self.y += self.vy;
        if !(0..=ARENA_MAX).contains(&self.x) || !(0..=ARENA_MAX).contains(&self.y) {
            self.x = self.x.clamp(0, ARENA_MAX);
            self.y = self.y.clamp(0, ARENA_MAX);
            self.vx = -self.vx;
            self.vy = -self.vy;
            self.direction = (self.direction + 4) % 8;
        }
        if rng.below(20) == 0 {
            self.flags ^= 1;
        }
        if rng.below(150) == 0 {
            self.health = match self.health.saturating_sub(25) {
                0 => 100,
                h => h,
            };
        }
    }

    fn view(&self, index: usize) -> EntityView {
        EntityView {
            id: index as u16,
            kind: 1,
            x: self.x,
            y: self.y,
            vx: self.vx,
            vy: self.vy,
            angle: self.angle,
            health: self.health,
            flags: self.flags,
        }
    }
}

/// SplitMix64: a tiny seeded generator, so the benchmark needs no dependency and runs the same
/// everywhere.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0) for a benchmark.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance_percent(&mut self, percent: u8) -> bool {
        self.below(100) < u64::from(percent)
    }
}
