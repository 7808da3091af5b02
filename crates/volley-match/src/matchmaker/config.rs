//! Matchmaker configuration: pools, widening windows and input limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Error;

/// A tolerance that widens with a ticket's wait: `initial + per_second × wait`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Widening {
    /// Tolerance at zero wait.
    pub initial: f64,
    /// Growth per second waited.
    pub per_second: f64,
    /// Ceiling; the tolerance never exceeds it.
    pub max: f64,
}

impl Widening {
    /// A widening window.
    pub const fn new(initial: f64, per_second: f64, max: f64) -> Self {
        Self {
            initial,
            per_second,
            max,
        }
    }

    /// A window that never widens.
    pub const fn fixed(value: f64) -> Self {
        Self::new(value, 0.0, value)
    }

    /// The tolerance after waiting `waited_ms`. Non-decreasing in the wait and never above
    /// `max` (for a configuration [`Matchmaker::new`](super::Matchmaker::new) accepted).
    pub fn at(&self, waited_ms: u64) -> f64 {
        let grown = self.initial + self.per_second * (waited_ms as f64 / 1000.0);
        grown.min(self.max)
    }

    /// How long until the tolerance reaches `max`, in whole milliseconds (rounded up);
    /// `None` if it never grows there.
    pub fn time_to_max_ms(&self) -> Option<u64> {
        if self.initial >= self.max {
            return Some(0);
        }
        if self.per_second <= 0.0 {
            return None;
        }
        let ms = ((self.max - self.initial) / self.per_second * 1000.0).ceil();
        // `as` saturates, which is the right answer for an astronomically slow widening.
        Some(ms as u64)
    }

    fn validate(&self, what: &str) -> Result<(), Error> {
        let ok = [self.initial, self.per_second, self.max]
            .iter()
            .all(|x| x.is_finite() && *x >= 0.0)
            && self.initial <= self.max;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidConfig(format!(
                "{what}: initial, per_second and max must be finite and non-negative with \
                 initial <= max (got {self:?})"
            )))
        }
    }
}

/// One pool (game mode): match sizes and how tolerances widen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// Fewest players in a match.
    pub min_players: u32,
    /// Most players in a match; also the largest party the pool accepts.
    pub max_players: u32,
    /// A match smaller than `max_players` (but at least `min_players`) forms only once its
    /// oldest ticket has waited this long; full matches form at once.
    pub fill_wait_ms: u64,
    /// Largest skill spread (highest minus lowest ticket skill) a ticket accepts.
    pub skill_window: Widening,
    /// Largest round-trip time (ms) a ticket accepts to the match's region.
    pub latency_limit: Widening,
}

impl PoolConfig {
    /// A pool for matches of `min_players ..= max_players` players, filling partial matches
    /// after 10 s, with a skill window widening from 100 by 10/s to 400 and a latency limit
    /// widening from 80 ms by 5 ms/s to 200 ms.
    pub const fn new(min_players: u32, max_players: u32) -> Self {
        Self {
            min_players,
            max_players,
            fill_wait_ms: 10_000,
            skill_window: Widening::new(100.0, 10.0, 400.0),
            latency_limit: Widening::new(80.0, 5.0, 200.0),
        }
    }

    fn validate(&self, name: &str) -> Result<(), Error> {
        if self.min_players == 0 || self.min_players > self.max_players {
            return Err(Error::InvalidConfig(format!(
                "pool {name:?}: need 1 <= min_players <= max_players (got {} and {})",
                self.min_players, self.max_players
            )));
        }
        self.skill_window
            .validate(&format!("pool {name:?} skill_window"))?;
        self.latency_limit
            .validate(&format!("pool {name:?} latency_limit"))
    }
}

/// Bounds on what one ticket may carry, so that no input makes the matchmaker's memory or
/// work per ticket unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most tickets queued at once.
    pub max_tickets: usize,
    /// Longest user id, pool name, property key or value, or region name, in bytes.
    pub max_string_len: usize,
    /// Most properties (string and numeric together) per ticket.
    pub max_properties: usize,
    /// Most query clauses (`must` and `must_not` together) per ticket.
    pub max_clauses: usize,
    /// Most regions per ticket.
    pub max_regions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tickets: 1_000_000,
            max_string_len: 128,
            max_properties: 32,
            max_clauses: 16,
            max_regions: 16,
        }
    }
}

/// The matchmaker's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchmakerConfig {
    /// Pools by name.
    pub pools: BTreeMap<String, PoolConfig>,
    /// If set, tickets naming a pool not in `pools` get a pool of their own with this
    /// configuration; if not, they are refused.
    pub default_pool: Option<PoolConfig>,
    /// The most candidates one ticket examines per tick when it looks for a match (K). Bounds
    /// the work per ticket per tick; larger finds matches among more incompatible neighbours.
    pub max_candidates: usize,
    /// Input bounds.
    pub limits: Limits,
}

impl Default for MatchmakerConfig {
    /// No pools, no default pool, 64 candidates, default limits.
    fn default() -> Self {
        Self {
            pools: BTreeMap::new(),
            default_pool: None,
            max_candidates: 64,
            limits: Limits::default(),
        }
    }
}

impl MatchmakerConfig {
    /// This configuration with pool `name` added (or replaced).
    pub fn with_pool(mut self, name: impl Into<String>, pool: PoolConfig) -> Self {
        self.pools.insert(name.into(), pool);
        self
    }

    /// The configuration for pool `name`, if tickets may use it.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.get(name).or(self.default_pool.as_ref())
    }

    pub(super) fn validate(&self) -> Result<(), Error> {
        for (name, pool) in &self.pools {
            pool.validate(name)?;
        }
        if let Some(pool) = &self.default_pool {
            pool.validate("<default>")?;
        }
        Ok(())
    }
}
