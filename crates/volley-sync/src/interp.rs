//! Client-side interpolation of remote entities: render the world a little in the past, between
//! two snapshots that have both arrived.
//!
//! [`Interpolator::push`] takes each decoded snapshot with its tick and local arrival time;
//! [`Interpolator::sample`] takes the local render time and returns the entities interpolated at
//! the *render tick* `(now - offset - delay) / tick_ms`, where
//!
//! - `offset` is a smoothed estimate of `arrival_ms - tick * tick_ms` (the clock offset plus the
//!   typical one-way delay), and
//! - `delay` adapts: [`InterpConfig::delay_intervals`] snapshot intervals (two by default, so one
//!   lost snapshot does not starve the buffer) plus [`InterpConfig::jitter_factor`] times the
//!   measured jitter (RFC 3550's interarrival jitter, an EWMA with gain 1/16).
//!
//! Positions and velocities are interpolated linearly, angles along the shortest arc; kind,
//! health and flags switch when the render tick reaches the newer snapshot. When the render
//! tick passes the newest snapshot (an *underrun*, counted), entities are extrapolated along
//! their velocity for at most [`InterpConfig::extrapolate_ms_max`], then held.
//!
//! Time is passed in (milliseconds as `f64`, any epoch); nothing here reads a clock.
#![deny(clippy::indexing_slicing)]

use std::collections::VecDeque;

use crate::game::EntityView;

/// Largest buffer an interpolator may be configured with.
pub const INTERP_CAPACITY_MAX: usize = 1024;

/// Tuning of an [`Interpolator`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InterpConfig {
    /// Duration of one simulation tick (velocities are per tick). Default 1000/30 ms.
    pub tick_ms: f64,
    /// Snapshot intervals of delay before jitter is added. Default 2.
    pub delay_intervals: f64,
    /// Multiples of the measured jitter added to the delay. Default 2: the EWMA is a mean
    /// deviation, and late packets beyond one mean deviation are common.
    pub jitter_factor: f64,
    /// EWMA gain of the jitter estimate. Default 1/16 (RFC 3550).
    pub jitter_gain: f64,
    /// EWMA gain of the offset (clock + latency) estimate. Default 1/32.
    pub offset_gain: f64,
    /// Bounds on the adaptive delay. Defaults 0 and 500 ms.
    pub delay_ms_min: f64,
    /// See `delay_ms_min`.
    pub delay_ms_max: f64,
    /// How far past the newest snapshot entities are extrapolated before they are held.
    /// Default 100 ms.
    pub extrapolate_ms_max: f64,
    /// An entity that moves farther than this between two snapshots (in fixed-point units,
    /// Manhattan distance) teleported: it is not dragged across the map but switches at the newer
    /// snapshot. Default 16 world units (4096).
    pub snap_distance: i64,
    /// Snapshots kept. Default 32 (about a second at 30 Hz). Capped at [`INTERP_CAPACITY_MAX`].
    pub capacity: usize,
    /// Entities accepted per snapshot. Default 1024.
    pub max_entities: usize,
}

impl Default for InterpConfig {
    fn default() -> Self {
        InterpConfig {
            tick_ms: 1000.0 / 30.0,
            delay_intervals: 2.0,
            jitter_factor: 2.0,
            jitter_gain: 1.0 / 16.0,
            offset_gain: 1.0 / 32.0,
            delay_ms_min: 0.0,
            delay_ms_max: 500.0,
            extrapolate_ms_max: 100.0,
            snap_distance: 16 * 256,
            capacity: 32,
            max_entities: 1024,
        }
    }
}

impl InterpConfig {
    fn sanitized(self) -> Self {
        let d = InterpConfig::default();
        let pick = |v: f64, default: f64, ok: fn(f64) -> bool| {
            if v.is_finite() && ok(v) {
                v
            } else {
                default
            }
        };
        let non_negative = |v: f64| v >= 0.0;
        let gain = |v: f64| v > 0.0 && v <= 1.0;
        let mut c = InterpConfig {
            tick_ms: pick(self.tick_ms, d.tick_ms, |v| v > 0.0),
            delay_intervals: pick(self.delay_intervals, d.delay_intervals, non_negative),
            jitter_factor: pick(self.jitter_factor, d.jitter_factor, non_negative),
            jitter_gain: pick(self.jitter_gain, d.jitter_gain, gain),
            offset_gain: pick(self.offset_gain, d.offset_gain, gain),
            delay_ms_min: pick(self.delay_ms_min, d.delay_ms_min, non_negative),
            delay_ms_max: pick(self.delay_ms_max, d.delay_ms_max, non_negative),
            extrapolate_ms_max: pick(self.extrapolate_ms_max, d.extrapolate_ms_max, non_negative),
            snap_distance: self.snap_distance.max(0),
            capacity: self.capacity.clamp(2, INTERP_CAPACITY_MAX),
            max_entities: self.max_entities,
        };
        if c.delay_ms_min > c.delay_ms_max {
            c.delay_ms_min = d.delay_ms_min;
            c.delay_ms_max = d.delay_ms_max.max(c.delay_ms_max);
        }
        c
    }
}

/// Why a snapshot was not buffered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// The arrival time is NaN, infinite or beyond ±10^12 ms (31 years from any sane epoch).
    #[error("arrival time {0} is not a plausible number of milliseconds")]
    BadTime(f64),
    /// This tick is buffered already.
    #[error("snapshot for tick {0} already buffered")]
    Duplicate(u32),
    /// The render time is already past this tick and a newer snapshot is in use: it can never
    /// be shown. Its timing still fed the jitter estimate.
    #[error("snapshot for tick {tick} arrived after the render time passed it")]
    Late {
        /// The tick.
        tick: u32,
    },
    /// More entities than [`InterpConfig::max_entities`].
    #[error("{count} entities, limit {max}")]
    TooManyEntities {
        /// Entities given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Counters of one [`Interpolator`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterpStats {
    /// Snapshots buffered.
    pub buffered: u64,
    /// Snapshots refused as late.
    pub late: u64,
    /// Snapshots refused as duplicates.
    pub duplicates: u64,
    /// Snapshots refused for an arrival time that is not a plausible number of milliseconds.
    pub refused_bad_time: u64,
    /// Snapshots refused for holding more entities than [`InterpConfig::max_entities`].
    pub refused_too_many_entities: u64,
    /// Oldest snapshots dropped because the buffer was full.
    pub overflow_drops: u64,
    /// Samples taken.
    pub samples: u64,
    /// Times the render tick ran past the newest snapshot (counted once per episode).
    pub underruns: u64,
    /// Samples taken while in underrun (extrapolated or held).
    pub underrun_samples: u64,
    /// Underrun samples past the extrapolation limit (entities frozen).
    pub held_samples: u64,
}

#[derive(Debug, Clone)]
struct Buffered {
    tick: u32,
    entities: Vec<EntityView>,
}

/// The interpolation buffer of one client (one per remote world view).
#[derive(Debug, Clone)]
pub struct Interpolator {
    config: InterpConfig,
    /// In increasing tick order.
    buffer: VecDeque<Buffered>,
    offset_ms: Option<f64>,
    jitter_ms: f64,
    /// EWMA of the tick gap between consecutive newest snapshots.
    interval_ticks: f64,
    last_arrival: Option<(u32, f64)>,
    newest_tick: Option<u32>,
    render_tick: Option<f64>,
    in_underrun: bool,
    stats: InterpStats,
}

impl Interpolator {
    /// An empty buffer.
    /// An empty buffer. Out-of-range settings (NaN, negative, a minimum above the maximum) are
    /// replaced by their defaults, so no setting can make sampling panic or return garbage.
    pub fn new(config: InterpConfig) -> Self {
        let config = config.sanitized();
        Interpolator {
            config,
            buffer: VecDeque::with_capacity(config.capacity),
            offset_ms: None,
            jitter_ms: 0.0,
            interval_ticks: 1.0,
            last_arrival: None,
            newest_tick: None,
            render_tick: None,
            in_underrun: false,
            stats: InterpStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> InterpStats {
        self.stats
    }

    /// The measured jitter (mean deviation of transit times).
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_ms
    }

    /// The current interpolation delay.
    pub fn delay_ms(&self) -> f64 {
        let interval_ms = self.interval_ticks * self.config.tick_ms;
        let delay =
            self.config.delay_intervals * interval_ms + self.config.jitter_factor * self.jitter_ms;
        delay.clamp(self.config.delay_ms_min, self.config.delay_ms_max)
    }

    /// The tick (with fraction) the last sample showed: what a shot fired now was aimed at, for
    /// the node's lag compensation.
    pub fn render_tick(&self) -> Option<f64> {
        self.render_tick
    }

    /// Snapshots buffered.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Buffers a snapshot of `tick` that arrived at `arrival_ms` (local time).
    pub fn push(
        &mut self,
        tick: u32,
        arrival_ms: f64,
        mut entities: Vec<EntityView>,
    ) -> Result<(), InterpError> {
        if !plausible_ms(arrival_ms) {
            self.stats.refused_bad_time += 1;
            return Err(InterpError::BadTime(arrival_ms));
        }
        if entities.len() > self.config.max_entities {
            self.stats.refused_too_many_entities += 1;
            return Err(InterpError::TooManyEntities {
                count: entities.len(),
                max: self.config.max_entities,
            });
        }
        if self.buffer.iter().any(|b| b.tick == tick) {
            self.stats.duplicates += 1;
            return Err(InterpError::Duplicate(tick));
        }
        self.observe_timing(tick, arrival_ms);
        // Late: the render tick is past it and a snapshot at or after it, but not after the
        // render tick, is the lower bracket already.
        if let (Some(render), Some(oldest)) = (self.render_tick, self.buffer.front()) {
            if f64::from(tick) < render && tick < oldest.tick {
                self.stats.late += 1;
                return Err(InterpError::Late { tick });
            }
        }
        entities.sort_by_key(|e| e.id);
        entities.dedup_by_key(|e| e.id);
        let at = self.buffer.partition_point(|b| b.tick < tick);
        self.buffer.insert(at, Buffered { tick, entities });
        while self.buffer.len() > self.config.capacity {
            self.buffer.pop_front();
            self.stats.overflow_drops += 1;
        }
        self.stats.buffered += 1;
        Ok(())
    }

    fn observe_timing(&mut self, tick: u32, arrival_ms: f64) {
        let send_ms = f64::from(tick) * self.config.tick_ms;
        let transit = arrival_ms - send_ms;
        self.offset_ms = Some(match self.offset_ms {
            None => transit,
            Some(o) => o + (transit - o) * self.config.offset_gain,
        });
        if let Some((last_tick, last_arrival)) = self.last_arrival {
            let last_transit = last_arrival - f64::from(last_tick) * self.config.tick_ms;
            let d = (transit - last_transit).abs();
            self.jitter_ms += (d - self.jitter_ms) * self.config.jitter_gain;
        }
        self.last_arrival = Some((tick, arrival_ms));
        match self.newest_tick {
            Some(newest) if tick > newest => {
                // Capped, so one long stall does not blow the delay up for seconds.
                let gap = f64::from((tick - newest).min(8));
                self.interval_ticks += (gap - self.interval_ticks) * self.config.jitter_gain;
                self.newest_tick = Some(tick);
            }
            None => self.newest_tick = Some(tick),
            Some(_) => {}
        }
    }

    /// The remote entities as they should be drawn at local time `now_ms`. Empty until the
    /// first snapshot arrives.
    pub fn sample(&mut self, now_ms: f64) -> Vec<EntityView> {
        let Some(offset) = self.offset_ms else {
            return Vec::new();
        };
        if !plausible_ms(now_ms) {
            return self
                .buffer
                .back()
                .map(|b| b.entities.clone())
                .unwrap_or_default();
        }
        self.stats.samples += 1;
        let mut render = (now_ms - offset - self.delay_ms()) / self.config.tick_ms;
        // The render clock never runs backwards, even when the offset estimate moves.
        if let Some(previous) = self.render_tick {
            render = render.max(previous);
        }
        self.render_tick = Some(render);
        self.prune(render);
        let upper = self.buffer.iter().position(|b| f64::from(b.tick) > render);
        match upper {
            // Before the oldest snapshot: show it as it is.
            Some(0) => {
                self.in_underrun = false;
                self.buffer
                    .front()
                    .map(|b| b.entities.clone())
                    .unwrap_or_default()
            }
            Some(i) => {
                self.in_underrun = false;
                match (self.buffer.get(i - 1), self.buffer.get(i)) {
                    (Some(a), Some(b)) => self.interpolate(a, b, render),
                    _ => Vec::new(),
                }
            }
            None => self.extrapolate(render),
        }
    }

    /// Drops snapshots no longer needed: all but the newest one at or before the render tick.
    fn prune(&mut self, render: f64) {
        while self
            .buffer
            .get(1)
            .is_some_and(|second| f64::from(second.tick) <= render)
        {
            self.buffer.pop_front();
        }
    }

    fn interpolate(&self, a: &Buffered, b: &Buffered, render: f64) -> Vec<EntityView> {
        let span = f64::from(b.tick - a.tick);
        let t = ((render - f64::from(a.tick)) / span).clamp(0.0, 1.0);
        let mut later = b.entities.iter().peekable();
        let mut out = Vec::with_capacity(a.entities.len());
        for ea in &a.entities {
            while later.next_if(|eb| eb.id < ea.id).is_some() {}
            match later.next_if(|eb| eb.id == ea.id) {
                Some(eb) if eb.kind == ea.kind && !self.teleported(ea, eb) => {
                    out.push(lerp(ea, eb, t));
                }
                _ => out.push(*ea),
            }
        }
        out
    }

    fn teleported(&self, a: &EntityView, b: &EntityView) -> bool {
        let d = (i64::from(b.x) - i64::from(a.x)).abs() + (i64::from(b.y) - i64::from(a.y)).abs();
        d > self.config.snap_distance
    }

    fn extrapolate(&mut self, render: f64) -> Vec<EntityView> {
        let Some(newest) = self.buffer.back() else {
            return Vec::new();
        };
        self.stats.underrun_samples += 1;
        if !self.in_underrun {
            self.in_underrun = true;
            self.stats.underruns += 1;
        }
        let ahead_ticks = render - f64::from(newest.tick);
        let limit_ticks = self.config.extrapolate_ms_max / self.config.tick_ms;
        if ahead_ticks > limit_ticks {
            self.stats.held_samples += 1;
        }
        let dt = ahead_ticks.clamp(0.0, limit_ticks);
        newest
            .entities
            .iter()
            .map(|e| EntityView {
                x: (f64::from(e.x) + f64::from(e.vx) * dt).round() as i32,
                y: (f64::from(e.y) + f64::from(e.vy) * dt).round() as i32,
                ..*e
            })
            .collect()
    }
}

/// Times beyond ±10^12 ms would only feed overflowing arithmetic into the estimates.
fn plausible_ms(t: f64) -> bool {
    t.is_finite() && t.abs() < 1e12
}

/// Linear between `a` and `b` at `t` in 0..=1; angle along the shortest arc; discrete fields
/// from `a`, switching to `b` at `t = 1`.
fn lerp(a: &EntityView, b: &EntityView, t: f64) -> EntityView {
    let mix = |p: i32, q: i32| (f64::from(p) + (f64::from(q) - f64::from(p)) * t).round() as i32;
    let turn = f64::from(b.angle.wrapping_sub(a.angle) as i8);
    let angle = a.angle.wrapping_add((turn * t).round() as i8 as u8);
    let discrete = if t >= 1.0 { b } else { a };
    EntityView {
        id: a.id,
        kind: a.kind,
        x: mix(a.x, b.x),
        y: mix(a.y, b.y),
        vx: mix(a.vx, b.vx),
        vy: mix(a.vy, b.vy),
        angle,
        health: discrete.health,
        flags: discrete.flags,
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const TICK_MS: f64 = 1000.0 / 30.0;

    /// One entity moving +x at 0.25 unit/tick from x = 1000.
    fn truth(tick: f64) -> f64 {
        1000.0 + 64.0 * tick
    }

    fn snap(tick: u32) -> Vec<EntityView> {
        vec![EntityView {
            id: 1,
            kind: 1,
            x: truth(f64::from(tick)) as i32,
            y: 500,
            vx: 64,
            vy: 0,
            angle: 0,
            health: 100,
            flags: 0,
        }]
    }

    struct Outcome {
        stats: InterpStats,
        max_error: f64,
        jitter_ms: f64,
        delay_ms: f64,
    }

    /// 30 Hz snapshots over a path with `base_ms` latency plus uniform `jitter_ms` and `loss`
    /// percent loss; rendering at 60 Hz for 20 s. Errors are measured against the true position
    /// at the render tick, after a 2 s warm-up.
    fn run(seed: u64, base_ms: f64, jitter_ms: f64, loss: u32) -> Outcome {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut interp = Interpolator::new(InterpConfig::default());
        let mut in_flight: Vec<(f64, u32)> = Vec::new();
        let mut max_error: f64 = 0.0;
        let mut last_x = i32::MIN;
        let mut warm = InterpStats::default();
        let frame_ms = 1000.0 / 60.0;
        let mut next_send = 1u32;
        let mut underrun_samples = 0;
        for frame in 0..1200u32 {
            // Node and client share a clock here; the interpolator does not know that.
            let now = f64::from(frame) * frame_ms;
            while f64::from(next_send) * TICK_MS <= now {
                if rng.gen_range(0..100) >= loss {
                    let delay = base_ms + rng.gen_range(0.0..=jitter_ms);
                    in_flight.push((f64::from(next_send) * TICK_MS + delay, next_send));
                }
                next_send += 1;
            }
            in_flight.sort_by(|a, b| a.0.total_cmp(&b.0));
            while in_flight.first().is_some_and(|p| p.0 <= now) {
                let (at, tick) = in_flight.remove(0);
                let _ = interp.push(tick, at, snap(tick));
            }
            let out = interp.sample(now);
            if frame == 120 {
                warm = interp.stats();
            }
            let underran = interp.stats().underrun_samples > underrun_samples;
            underrun_samples = interp.stats().underrun_samples;
            if frame > 120 {
                let x = out[0].x;
                assert!(x >= last_x, "entity moved backwards: {last_x} -> {x}");
                last_x = x;
                if !underran {
                    let err = (f64::from(x) - truth(interp.render_tick().unwrap())).abs();
                    max_error = max_error.max(err);
                }
            }
        }
        let mut stats = interp.stats();
        stats.underruns -= warm.underruns;
        stats.underrun_samples -= warm.underrun_samples;
        Outcome {
            stats,
            max_error,
            jitter_ms: interp.jitter_ms(),
            delay_ms: interp.delay_ms(),
        }
    }

    #[test]
    fn a_clean_path_interpolates_exactly_with_two_intervals_of_delay() {
        let o = run(1, 40.0, 0.0, 0);
        assert_eq!(o.stats.underrun_samples, 0);
        assert!(o.max_error <= 1.0, "error {}", o.max_error);
        assert!(
            (o.delay_ms - 2.0 * TICK_MS).abs() < 1.0,
            "delay {}",
            o.delay_ms
        );
        assert!(o.jitter_ms < 0.01);
    }

    #[test]
    fn jitter_and_loss_raise_the_delay_and_rarely_underrun() {
        for seed in 0..4 {
            let o = run(seed, 40.0, 40.0, 10);
            println!(
                "seed {seed}: jitter {:.1} ms, delay {:.1} ms, underruns {} ({} samples of 1080), max error {:.2}",
                o.jitter_ms, o.delay_ms, o.stats.underruns, o.stats.underrun_samples, o.max_error
            );
            // 1080 measured samples; a few underruns on bursts of loss are expected.
            assert!(
                o.stats.underrun_samples < 1080 / 50,
                "seed {seed}: {} underrun samples",
                o.stats.underrun_samples
            );
            assert!(
                o.jitter_ms > 5.0 && o.jitter_ms < 40.0,
                "jitter {}",
                o.jitter_ms
            );
            assert!(o.delay_ms > 2.0 * TICK_MS + 10.0, "delay {}", o.delay_ms);
            // Linear motion interpolates exactly; loss only widens the bracket.
            assert!(o.max_error <= 1.0, "seed {seed}: error {}", o.max_error);
        }
    }

    #[test]
    fn nonsense_settings_fall_back_to_defaults_instead_of_panicking() {
        let mut interp = Interpolator::new(InterpConfig {
            tick_ms: f64::NAN,
            delay_intervals: -1.0,
            jitter_gain: 7.0,
            offset_gain: f64::INFINITY,
            delay_ms_min: 900.0,
            delay_ms_max: f64::NAN,
            extrapolate_ms_max: f64::NEG_INFINITY,
            snap_distance: -5,
            capacity: 0,
            ..InterpConfig::default()
        });
        for tick in 1..5 {
            interp
                .push(tick, f64::from(tick) * TICK_MS, snap(tick))
                .unwrap();
            assert_eq!(interp.sample(f64::from(tick) * TICK_MS + 1e9).len(), 1);
        }
        assert!(interp.delay_ms().is_finite());
    }

    #[test]
    fn angles_take_the_shortest_arc() {
        let a = EntityView {
            angle: 250,
            ..EntityView::default()
        };
        let b = EntityView {
            angle: 10,
            ..EntityView::default()
        };
        assert_eq!(lerp(&a, &b, 0.5).angle, 2);
        assert_eq!(lerp(&b, &a, 0.5).angle, 2);
        assert_eq!(lerp(&a, &b, 0.0).angle, 250);
        assert_eq!(lerp(&a, &b, 1.0).angle, 10);
    }

    #[test]
    fn an_underrun_extrapolates_a_bounded_amount_then_holds() {
        let mut interp = Interpolator::new(InterpConfig::default());
        for tick in 1..=10 {
            interp
                .push(tick, f64::from(tick) * TICK_MS + 50.0, snap(tick))
                .unwrap();
        }
        // Snapshots stop. Sample well past the newest one.
        let mut xs = Vec::new();
        for i in 0..60 {
            let now = 10.0 * TICK_MS + 50.0 + f64::from(i) * 10.0;
            xs.push(interp.sample(now)[0].x);
        }
        let s = interp.stats();
        assert_eq!(s.underruns, 1, "one episode");
        assert!(s.underrun_samples > 0 && s.held_samples > 0);
        let limit = truth(10.0) + 64.0 * (100.0 / TICK_MS);
        assert!(xs.iter().all(|&x| f64::from(x) <= limit + 1.0), "{xs:?}");
        assert_eq!(*xs.last().unwrap() as f64, limit.round());
        // Snapshots resume: the episode ends.
        interp
            .push(11, 11.0 * TICK_MS + 50.0 + 600.0, snap(11))
            .unwrap();
        interp
            .push(30, 30.0 * TICK_MS + 50.0 + 600.0, snap(30))
            .unwrap();
        interp.sample(11.0 * TICK_MS + 50.0 + 610.0);
        assert_eq!(interp.stats().underruns, 1);
    }

    #[test]
    fn spawns_appear_and_despawns_vanish_at_the_newer_snapshot_and_teleports_snap() {
        let mut interp = Interpolator::new(InterpConfig {
            delay_intervals: 0.0,
            jitter_factor: 0.0,
            ..InterpConfig::default()
        });
        let e = |id: u16, x: i32| EntityView {
            id,
            kind: 1,
            x,
            ..EntityView::default()
        };
        interp
            .push(0, 0.0, vec![e(1, 0), e(2, 0), e(3, 0)])
            .unwrap();
        interp
            .push(2, 2.0 * TICK_MS, vec![e(1, 100), e(3, 100_000), e(4, 7)])
            .unwrap();
        let mid = interp.sample(TICK_MS);
        assert_eq!(
            mid.iter().map(|v| (v.id, v.x)).collect::<Vec<_>>(),
            vec![(1, 50), (2, 0), (3, 0)]
        );
        let end = interp.sample(2.0 * TICK_MS);
        assert_eq!(
            end.iter().map(|v| (v.id, v.x)).collect::<Vec<_>>(),
            vec![(1, 100), (3, 100_000), (4, 7)]
        );
    }

    #[test]
    fn duplicates_late_and_bad_input_are_refused_and_the_buffer_is_bounded() {
        let mut interp = Interpolator::new(InterpConfig {
            capacity: 4,
            max_entities: 2,
            ..InterpConfig::default()
        });
        assert!(interp.sample(0.0).is_empty());
        assert!(matches!(
            interp.push(1, f64::NAN, snap(1)),
            Err(InterpError::BadTime(_))
        ));
        for bad in [f64::INFINITY, 1e300, -1e13] {
            assert!(matches!(
                interp.push(1, bad, snap(1)),
                Err(InterpError::BadTime(_))
            ));
        }
        assert!(matches!(
            interp.push(1, 0.0, vec![EntityView::default(); 3]),
            Err(InterpError::TooManyEntities { count: 3, max: 2 })
        ));
        assert_eq!(interp.stats().refused_bad_time, 4);
        assert_eq!(interp.stats().refused_too_many_entities, 1);
        for tick in 10..20 {
            interp
                .push(tick, f64::from(tick) * TICK_MS, snap(tick))
                .unwrap();
        }
        assert_eq!(interp.len(), 4);
        assert_eq!(interp.stats().overflow_drops, 6);
        assert_eq!(
            interp.push(19, 0.0, snap(19)),
            Err(InterpError::Duplicate(19))
        );
        interp.sample(19.0 * TICK_MS);
        assert_eq!(
            interp.push(3, 3.0 * TICK_MS, snap(3)),
            Err(InterpError::Late { tick: 3 })
        );
        assert_eq!(interp.stats().late, 1);
        // A non-finite render time does not poison the render clock.
        let before = interp.render_tick();
        assert!(!interp.sample(f64::NAN).is_empty());
        assert_eq!(interp.render_tick(), before);
    }
}
