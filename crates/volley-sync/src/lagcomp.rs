//! Lag compensation on the node: judge a shot against the world as the shooter saw it.
//!
//! A client renders remote entities in the past (interpolation delay plus latency), so a
//! player who aims exactly at a target aims at where the target *was*. The node keeps a bounded
//! history of entity states per tick ([`LagHistory::record`]); a shot carries the tick (and
//! fraction) the shooter was rendering, and [`LagHistory::hit_test`] rewinds to it, at most
//! [`LagCompConfig::rewind_ticks_max`] ticks back, so a high-latency (or lying) client cannot
//! shoot arbitrarily far into the past. Beyond the cap the rewind is clamped and the outcome
//! says so.
//!
//! The geometry is integer ray-versus-circle in the game's fixed-point units (1/256 world unit);
//! only the entry distance used to rank hits is a (deterministic, IEEE) `f64`. Time is ticks.
#![deny(clippy::indexing_slicing)]

use std::collections::VecDeque;

use crate::game::EntityView;

/// Largest history a lag compensator may keep.
pub const LAG_HISTORY_TICKS_MAX: usize = 4096;
/// Largest shot range and hit radius, in fixed-point units (65536 world units): bounds the
/// integer math.
pub const SHOT_LENGTH_MAX: i32 = 1 << 24;

/// Limits of a [`LagHistory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagCompConfig {
    /// Ticks of history kept. Default 60 (1 s at 60 Hz). Capped at [`LAG_HISTORY_TICKS_MAX`].
    pub history_ticks: usize,
    /// Furthest a shot may rewind behind the newest recorded tick. Default 12 (200 ms at 60 Hz).
    pub rewind_ticks_max: u32,
    /// Entities accepted per tick. Default 1024.
    pub max_entities: usize,
}

impl Default for LagCompConfig {
    fn default() -> Self {
        LagCompConfig {
            history_ticks: 60,
            rewind_ticks_max: 12,
            max_entities: 1024,
        }
    }
}

/// Why a tick was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LagCompError {
    /// Ticks must increase.
    #[error("tick {tick} is not after the newest recorded tick {newest}")]
    TickNotIncreasing {
        /// The tick given.
        tick: u32,
        /// Newest recorded.
        newest: u32,
    },
    /// More entities than [`LagCompConfig::max_entities`].
    #[error("{count} entities, limit {max}")]
    TooManyEntities {
        /// Entities given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// A shot to judge, in fixed-point world units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shot {
    /// The tick the shooter was rendering when firing (the whole part of
    /// [`crate::interp::Interpolator::render_tick`]).
    pub view_tick: u32,
    /// How far between `view_tick` and the next tick the shooter was, in 1/256ths.
    pub view_fraction: u8,
    /// Where the shot starts.
    pub origin_x: i32,
    /// Where the shot starts.
    pub origin_y: i32,
    /// Direction; any length, not both zero.
    pub direction_x: i32,
    /// Direction; any length, not both zero.
    pub direction_y: i32,
    /// How far the shot reaches (capped at [`SHOT_LENGTH_MAX`]).
    pub range: i32,
    /// Hit radius: target radius plus projectile radius (capped at [`SHOT_LENGTH_MAX`]).
    pub radius: i32,
    /// An entity the shot never hits (the shooter itself).
    pub shooter: Option<u16>,
}

/// What a shot hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The entity hit.
    pub id: u16,
    /// Distance from the origin to where the shot enters the target's radius, fixed-point.
    pub distance: i32,
}

/// The verdict on a [`Shot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShotOutcome {
    /// The nearest entity the shot hit (ties: the lowest id).
    pub hit: Option<Hit>,
    /// The tick the world was rewound to (`None` when there is no history).
    pub rewound_to_tick: Option<u32>,
    /// The shooter's view was outside what may be rewound (too old, or in the future) and was
    /// clamped: worth counting per player.
    pub clamped: bool,
}

#[derive(Debug, Clone)]
struct Frame {
    tick: u32,
    entities: Vec<EntityView>,
}

/// The node's bounded history of entity states, one per simulated tick.
#[derive(Debug, Clone)]
pub struct LagHistory {
    config: LagCompConfig,
    /// In increasing tick order.
    frames: VecDeque<Frame>,
}

impl LagHistory {
    /// An empty history.
    pub fn new(config: LagCompConfig) -> Self {
        let config = LagCompConfig {
            history_ticks: config.history_ticks.clamp(1, LAG_HISTORY_TICKS_MAX),
            ..config
        };
        LagHistory {
            config,
            frames: VecDeque::with_capacity(config.history_ticks),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &LagCompConfig {
        &self.config
    }

    /// The newest tick recorded.
    pub fn newest_tick(&self) -> Option<u32> {
        self.frames.back().map(|f| f.tick)
    }

    /// Records the entities of `tick` (after the node stepped it), forgetting the oldest tick
    /// when the history is full.
    pub fn record(&mut self, tick: u32, entities: &[EntityView]) -> Result<(), LagCompError> {
        if let Some(newest) = self.newest_tick() {
            if tick <= newest {
                return Err(LagCompError::TickNotIncreasing { tick, newest });
            }
        }
        if entities.len() > self.config.max_entities {
            return Err(LagCompError::TooManyEntities {
                count: entities.len(),
                max: self.config.max_entities,
            });
        }
        let mut entities = entities.to_vec();
        entities.sort_by_key(|e| e.id);
        if self.frames.len() >= self.config.history_ticks {
            self.frames.pop_front();
        }
        self.frames.push_back(Frame { tick, entities });
        Ok(())
    }

    /// The entities as they were at `tick`, if that tick is still in the history. Not capped:
    /// the cap applies to shots.
    pub fn rewind(&self, tick: u32) -> Option<&[EntityView]> {
        self.frame_index(tick)
            .and_then(|i| self.frames.get(i))
            .map(|f| f.entities.as_slice())
    }

    fn frame_index(&self, tick: u32) -> Option<usize> {
        self.frames.binary_search_by_key(&tick, |f| f.tick).ok()
    }

    /// Judges `shot` against the world at the shooter's view, rewound at most
    /// [`LagCompConfig::rewind_ticks_max`] ticks.
    pub fn hit_test(&self, shot: &Shot) -> ShotOutcome {
        let (Some(newest), Some(oldest)) = (self.frames.back(), self.frames.front()) else {
            return ShotOutcome::default();
        };
        let floor_tick = newest
            .tick
            .saturating_sub(self.config.rewind_ticks_max)
            .max(oldest.tick);
        let (tick, fraction, clamped) = if shot.view_tick >= newest.tick {
            let future = shot.view_tick > newest.tick || shot.view_fraction > 0;
            (newest.tick, 0, future)
        } else if shot.view_tick < floor_tick {
            (floor_tick, 0, true)
        } else {
            (shot.view_tick, shot.view_fraction, false)
        };
        let world = self.world_at(tick, fraction);
        ShotOutcome {
            hit: nearest_hit(&world, shot),
            rewound_to_tick: Some(tick),
            clamped,
        }
    }

    /// The entities at `tick` plus `fraction`/256 of the way to `tick + 1` (when both were
    /// recorded), positions interpolated in integers the way clients interpolate them. Ticks
    /// missing from the history (a skipped tick) resolve to the newest recorded before them.
    fn world_at(&self, tick: u32, fraction: u8) -> Vec<EntityView> {
        let at = self.frames.partition_point(|f| f.tick <= tick);
        let Some(a) = at.checked_sub(1).and_then(|i| self.frames.get(i)) else {
            return Vec::new();
        };
        let b = self
            .frames
            .get(at)
            .filter(|b| b.tick == a.tick.wrapping_add(1));
        match b {
            Some(b) if fraction > 0 && a.tick == tick => {
                let mix = |p: i32, q: i32| {
                    let v =
                        i64::from(p) + (i64::from(q) - i64::from(p)) * i64::from(fraction) / 256;
                    v as i32
                };
                a.entities
                    .iter()
                    .map(|ea| {
                        match b
                            .entities
                            .binary_search_by_key(&ea.id, |e| e.id)
                            .ok()
                            .and_then(|i| b.entities.get(i))
                        {
                            Some(eb) if eb.kind == ea.kind => EntityView {
                                x: mix(ea.x, eb.x),
                                y: mix(ea.y, eb.y),
                                ..*ea
                            },
                            _ => *ea,
                        }
                    })
                    .collect()
            }
            _ => a.entities.clone(),
        }
    }
}

/// The nearest living entity (not the shooter) whose radius the shot's segment enters.
fn nearest_hit(world: &[EntityView], shot: &Shot) -> Option<Hit> {
    let range = i64::from(shot.range.clamp(0, SHOT_LENGTH_MAX));
    let radius = i64::from(shot.radius.clamp(0, SHOT_LENGTH_MAX));
    let (dx, dy) = bounded_direction(shot.direction_x, shot.direction_y)?;
    let (ox, oy) = (i64::from(shot.origin_x), i64::from(shot.origin_y));
    let mut best: Option<Hit> = None;
    for e in world {
        if Some(e.id) == shot.shooter || e.health == 0 {
            continue;
        }
        let (mx, my) = (i64::from(e.x) - ox, i64::from(e.y) - oy);
        // Cheap reject, and it bounds every product below far inside i128.
        if mx.abs() > range + radius || my.abs() > range + radius {
            continue;
        }
        let Some(distance) = entry_distance(mx, my, dx, dy, radius) else {
            continue;
        };
        if distance > range {
            continue;
        }
        let hit = Hit {
            id: e.id,
            distance: distance as i32,
        };
        best = match best {
            Some(b) if (b.distance, b.id) <= (hit.distance, hit.id) => Some(b),
            _ => Some(hit),
        };
    }
    best
}

/// Shrinks a direction to at most 2^16 per component (keeping its heading) so the products stay
/// small; `None` for the zero vector.
fn bounded_direction(x: i32, y: i32) -> Option<(i64, i64)> {
    let (mut x, mut y) = (i64::from(x), i64::from(y));
    if x == 0 && y == 0 {
        return None;
    }
    while x.abs() > 1 << 16 || y.abs() > 1 << 16 {
        x /= 2;
        y /= 2;
    }
    Some((x, y))
}

/// Distance along the ray (origin at 0, direction `d`) to where it enters the circle of
/// `radius` around `m`; 0 when the origin is inside; `None` when the ray misses or the circle is
/// behind. The hit decision is exact integer math.
fn entry_distance(mx: i64, my: i64, dx: i64, dy: i64, radius: i64) -> Option<i64> {
    let (mx, my, dx, dy, r) = (
        i128::from(mx),
        i128::from(my),
        i128::from(dx),
        i128::from(dy),
        i128::from(radius),
    );
    let mm = mx * mx + my * my;
    if mm <= r * r {
        return Some(0);
    }
    let dot = mx * dx + my * dy;
    if dot <= 0 {
        return None;
    }
    let dd = dx * dx + dy * dy;
    // dot² - |d|²(|m|² - r²) ≥ 0  ⇔  the line passes within r of the centre.
    let disc = dot * dot - dd * (mm - r * r);
    if disc < 0 {
        return None;
    }
    let entry = (dot as f64 - (disc as f64).sqrt()) / (dd as f64).sqrt();
    Some(entry.max(0.0).ceil() as i64)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const UNIT: i32 = 256;

    fn target(id: u16, x: i32, y: i32) -> EntityView {
        EntityView {
            id,
            kind: 1,
            x,
            y,
            vx: 0,
            vy: 0,
            angle: 0,
            health: 100,
            flags: 0,
        }
    }

    /// Target 7 moves +x at 0.25 unit/tick for ticks 0..=100 (60 Hz); shooter 1 sits still
    /// 10 units below the target's row.
    fn history() -> LagHistory {
        let mut h = LagHistory::new(LagCompConfig::default());
        for tick in 0..=100u32 {
            let x = 10 * UNIT + 64 * tick as i32;
            h.record(
                tick,
                &[target(7, x, 20 * UNIT), target(1, 30 * UNIT, 10 * UNIT)],
            )
            .unwrap();
        }
        h
    }

    fn x_at(tick: u32) -> i32 {
        10 * UNIT + 64 * tick as i32
    }

    /// A shot straight up (+y) from 10 units below the target's row at column `x`.
    fn shot_up(view_tick: u32, x: i32) -> Shot {
        Shot {
            view_tick,
            view_fraction: 0,
            origin_x: x,
            origin_y: 10 * UNIT,
            direction_x: 0,
            direction_y: 1,
            range: 50 * UNIT,
            radius: UNIT / 2,
            shooter: Some(1),
        }
    }

    #[test]
    fn history_is_bounded_and_rewinds_exact_ticks() {
        let h = history();
        assert_eq!(h.newest_tick(), Some(100));
        assert!(h.rewind(40).is_none(), "older than 60 ticks: forgotten");
        assert_eq!(h.rewind(94).unwrap()[1].x, x_at(94));
        assert!(h.rewind(101).is_none());
    }

    #[test]
    fn a_shot_at_where_the_target_was_in_the_shooters_view_hits() {
        let h = history();
        // 6 ticks (100 ms) of latency + interpolation: the shooter saw tick 94.
        let out = h.hit_test(&shot_up(94, x_at(94)));
        assert_eq!(out.rewound_to_tick, Some(94));
        assert!(!out.clamped);
        let hit = out.hit.unwrap();
        assert_eq!(hit.id, 7);
        assert_eq!(hit.distance, 10 * UNIT - UNIT / 2);
    }

    #[test]
    fn a_shot_at_where_the_target_is_now_but_was_not_misses() {
        let h = history();
        // At tick 94 the target was 1.5 units left of its tick-100 position; radius 0.5.
        assert_eq!(h.hit_test(&shot_up(94, x_at(100))).hit, None);
        // Without compensation (view = now) the same shot hits.
        assert_eq!(h.hit_test(&shot_up(100, x_at(100))).hit.unwrap().id, 7);
    }

    #[test]
    fn rewinds_beyond_the_cap_are_clamped() {
        let h = history();
        // The client claims it saw tick 50 (833 ms ago): clamped to 100 - 12 = 88.
        let out = h.hit_test(&shot_up(50, x_at(50)));
        assert!(out.clamped);
        assert_eq!(out.rewound_to_tick, Some(88));
        assert_eq!(
            out.hit, None,
            "where the target was at tick 50 is not hittable"
        );
        let out = h.hit_test(&shot_up(50, x_at(88)));
        assert!(out.clamped);
        assert_eq!(out.hit.unwrap().id, 7);
        // A view in the future is clamped to now.
        let out = h.hit_test(&shot_up(500, x_at(100)));
        assert!(out.clamped);
        assert_eq!(out.rewound_to_tick, Some(100));
        assert_eq!(out.hit.unwrap().id, 7);
    }

    #[test]
    fn a_fractional_view_interpolates_between_ticks() {
        let h = history();
        let between = x_at(94) + 32; // half way to tick 95
        let mut shot = shot_up(94, between + UNIT / 2 - 20);
        assert_eq!(
            h.hit_test(&shot).hit,
            None,
            "0.55 units right of the tick-94 position"
        );
        shot.view_fraction = 128;
        assert_eq!(h.hit_test(&shot).hit.unwrap().id, 7);
    }

    #[test]
    fn the_shooter_the_dead_and_targets_behind_or_out_of_range_are_not_hit() {
        let mut h = LagHistory::new(LagCompConfig::default());
        let mut dead = target(3, 0, 5 * UNIT);
        dead.health = 0;
        h.record(
            1,
            &[
                target(1, 0, 0),         // the shooter, at the origin
                target(2, 0, -5 * UNIT), // behind
                dead,                    // in front, dead
                target(4, 0, 40 * UNIT), // in front, out of range
                target(5, 0, 12 * UNIT), // in front, in range: the hit
                target(6, 0, 15 * UNIT), // behind 5
            ],
        )
        .unwrap();
        let shot = Shot {
            view_tick: 1,
            direction_y: 1000,
            range: 20 * UNIT,
            radius: UNIT,
            shooter: Some(1),
            ..Shot::default()
        };
        assert_eq!(h.hit_test(&shot).hit.unwrap().id, 5);
        assert_eq!(
            h.hit_test(&Shot {
                direction_y: 0,
                ..shot
            })
            .hit,
            None,
            "no direction"
        );
        assert_eq!(
            h.hit_test(&Shot {
                shooter: None,
                ..shot
            })
            .hit
            .unwrap()
            .id,
            1,
            "inside"
        );
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let mut h = LagHistory::new(LagCompConfig::default());
        assert_eq!(h.hit_test(&Shot::default()), ShotOutcome::default());
        h.record(
            0,
            &[target(1, i32::MAX, i32::MIN), target(2, i32::MIN, i32::MAX)],
        )
        .unwrap();
        for (x, y, dx, dy) in [
            (i32::MIN, i32::MIN, i32::MAX, i32::MAX),
            (i32::MAX, i32::MAX, i32::MIN, i32::MIN),
            (0, 0, i32::MIN, 1),
        ] {
            let _ = h.hit_test(&Shot {
                origin_x: x,
                origin_y: y,
                direction_x: dx,
                direction_y: dy,
                range: i32::MAX,
                radius: i32::MAX,
                view_tick: u32::MAX,
                view_fraction: 255,
                ..Shot::default()
            });
        }
        assert_eq!(
            h.record(0, &[]),
            Err(LagCompError::TickNotIncreasing { tick: 0, newest: 0 })
        );
        let many = vec![target(0, 0, 0); 1025];
        assert!(matches!(
            h.record(1, &many),
            Err(LagCompError::TooManyEntities { .. })
        ));
    }
}
