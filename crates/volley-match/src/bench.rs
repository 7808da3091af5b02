//! A reproducible load benchmark of the [`Matchmaker`].
//!
//! [`run_bench`] builds a seeded population of realistic tickets, queues them all, ticks a
//! simulated clock one second at a time until matching settles, and times it against the
//! "physical floor": a plain `sort_by` of the same tickets by skill, which any skill-based
//! matchmaker has to beat or match. This module is the only place in the crate that reads a
//! clock ([`std::time::Instant`]), and only to time itself; the matching is as deterministic
//! here as anywhere.
//!
//! The population: three pools (`duel` 1v1, `squads` 2v2, `battle` 6 to 12 players filling
//! after 5 s), parties of 1 to 3 players (solo in duels), member skills ~ N(1500, 300), four
//! regions of which each ticket reports three or four (15 to 60 ms to its home region, 70 to
//! 250 ms elsewhere), a `map` and a `lang` string property and a numeric `level`. A quarter of
//! the tickets insist on their own map, a tenth on a level within ±30 of theirs. The
//! *unmatchable* tickets are made so by a constraint nobody meets: half require a map that no
//! ticket offers, half a level above any ticket's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::matchmaker::{
    Clause, Matchmaker, MatchmakerConfig, Member, PoolConfig, Ticket, TicketId, Widening,
};

/// Simulated time between ticks.
pub const TICK_MS: u64 = 1000;
/// Most ticks one run makes.
pub const MAX_TICKS: usize = 120;
/// Most tickets one run builds; larger requests are clamped to it.
pub const MAX_TICKETS: usize = 10_000_000;

const REGIONS: [&str; 4] = ["eu-west", "us-east", "us-west", "ap-east"];
const MAPS: [&str; 4] = ["harbor", "desert", "tundra", "jungle"];
const LANGS: [&str; 5] = ["en", "es", "de", "fr", "pt"];
const POOLS: [&str; 3] = ["duel", "squads", "battle"];

/// What one [`run_bench`] did and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// Tickets queued.
    pub tickets: usize,
    /// Of which built to be unmatchable.
    pub unmatchable_tickets: usize,
    /// Players in all tickets.
    pub players: usize,
    /// Players in the tickets built to be matchable.
    pub matchable_players: usize,
    /// Matches formed.
    pub matches: usize,
    /// Players in the matches formed.
    pub players_matched: usize,
    /// Tickets built to be unmatchable that were matched anyway (always 0 for a correct
    /// matchmaker).
    pub unmatchable_matched: usize,
    /// Ticks run.
    pub ticks: usize,
    /// Tickets still queued at the end.
    pub remaining: usize,
    /// Tickets the matchmaker refused to queue (a pool the configuration lacks): neither
    /// matched nor remaining.
    pub tickets_refused: usize,
    /// Time spent queueing the tickets.
    pub add_time: Duration,
    /// Time spent queueing the tickets plus all ticks.
    pub matchmaker_time: Duration,
    /// Time of a plain `sort_by` of the same tickets by skill.
    pub sort_time: Duration,
}

impl BenchResult {
    /// Matchmaker time over sort time: how many "sorts" the whole matchmaking costs.
    pub fn cost_ratio(&self) -> f64 {
        self.matchmaker_time.as_secs_f64() / self.sort_time.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} tickets ({} unmatchable), {} players: {} matches, {}/{} matchable players \
             matched, {} unmatchable matched, {} left after {} ticks; matchmaker {:.1} ms \
             (add {:.1} ms), sort {:.2} ms, ratio {:.0}x",
            self.tickets,
            self.unmatchable_tickets,
            self.players,
            self.matches,
            self.players_matched,
            self.matchable_players,
            self.unmatchable_matched,
            self.remaining,
            self.ticks,
            self.matchmaker_time.as_secs_f64() * 1e3,
            self.add_time.as_secs_f64() * 1e3,
            self.sort_time.as_secs_f64() * 1e3,
            self.cost_ratio(),
        )
    }
}

/// SplitMix64: a small, fast, seeded generator, so the benchmark needs no dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo ..= hi`.
    fn between(&mut self, lo: u32, hi: u32) -> u32 {
        let span = u64::from(hi.saturating_sub(lo)) + 1;
        lo + u32::try_from(self.next_u64() % span).unwrap_or(0)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let i = usize::try_from(self.next_u64() % items.len().max(1) as u64).unwrap_or(0);
        items.get(i).copied().unwrap_or_default()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Normal by Box–Muller.
    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The configuration [`run_bench`] uses.
pub fn bench_config() -> MatchmakerConfig {
    let skill_window = Widening::new(100.0, 20.0, 500.0);
    let latency_limit = Widening::new(80.0, 10.0, 200.0);
    let pool = |min, max, fill_wait_ms| PoolConfig {
        min_players: min,
        max_players: max,
        fill_wait_ms,
        skill_window,
        latency_limit,
    };
    MatchmakerConfig::default()
        .with_pool("duel", pool(2, 2, 0))
        .with_pool("squads", pool(4, 4, 0))
        .with_pool("battle", pool(6, 12, 5_000))
}

/// One ticket of the benchmark population; `n` makes its user ids unique.
fn make_ticket(rng: &mut Rng, n: usize, unmatchable: bool) -> Ticket {
    let pool = rng.pick(&POOLS);
    let party = if pool == "duel" {
        1
    } else {
        match rng.unit() {
            x if x < 0.6 => 1,
            x if x < 0.85 => 2,
            _ => 3,
        }
    };
    let members = (0..party)
        .map(|i| Member::new(format!("user-{n}-{i}"), rng.normal(1500.0, 300.0)))
        .collect();
    let map = rng.pick(&MAPS);
    let level = f64::from(rng.between(1, 100));
    let mut ticket = Ticket::new(pool, members)
        .with_string("map", map)
        .with_string("lang", rng.pick(&LANGS))
        .with_number("level", level)
        .expires_at(600_000);

    // Three or four regions measured, always including the home one.
    let home = rng.between(0, 3) as usize;
    let skipped = rng
        .chance(0.5)
        .then(|| (home + rng.between(1, 3) as usize) % REGIONS.len());
    for (i, region) in REGIONS.iter().enumerate() {
        if Some(i) == skipped {
            continue;
        }
        let rtt = if i == home {
            rng.between(15, 60)
        } else {
            rng.between(70, 250)
        };
        ticket = ticket.with_latency(*region, rtt);
    }

    if unmatchable {
        ticket = if rng.chance(0.5) {
            ticket.must(Clause::eq("map", "unreleased"))
        } else {
            ticket.must(Clause::range("level", Some(1000.0), None))
        };
    } else {
        if rng.chance(0.25) {
            ticket = ticket.must(Clause::eq("map", map));
        }
        if rng.chance(0.1) {
            ticket = ticket.must(Clause::range(
                "level",
                Some(level - 30.0),
                Some(level + 30.0),
            ));
        }
    }
    ticket
}

/// Builds `n_tickets` random tickets (at most [`MAX_TICKETS`]) from `seed`, a share
/// `unmatchable_fraction` of them unmatchable (clamped to 0..=1, NaN meaning 0), queues them all
/// at time 0 and ticks every [`TICK_MS`] until the windows have reached their maxima, the fill
/// wait has passed and a tick forms no match (at most [`MAX_TICKS`] ticks). Times the queueing
/// and ticking together, and separately a `sort_by` of the same tickets by skill.
pub fn run_bench(n_tickets: usize, unmatchable_fraction: f64, seed: u64) -> BenchResult {
    run_bench_with(bench_config(), n_tickets, unmatchable_fraction, seed)
}

/// [`run_bench`] with another configuration. It should have the pools `duel`, `squads` and
/// `battle`: tickets for a missing pool are refused, and count as neither matched nor
/// remaining. An invalid configuration gives an empty result.
pub fn run_bench_with(
    config: MatchmakerConfig,
    n_tickets: usize,
    unmatchable_fraction: f64,
    seed: u64,
) -> BenchResult {
    let mut result = BenchResult {
        tickets: 0,
        unmatchable_tickets: 0,
        players: 0,
        matchable_players: 0,
        matches: 0,
        players_matched: 0,
        unmatchable_matched: 0,
        ticks: 0,
        remaining: 0,
        tickets_refused: 0,
        add_time: Duration::ZERO,
        matchmaker_time: Duration::ZERO,
        sort_time: Duration::ZERO,
    };
    let Ok(mut matchmaker) = Matchmaker::new(config) else {
        return result;
    };
    // When every window has stopped widening and every fill wait has passed.
    let settle_ms = matchmaker
        .config()
        .pools
        .values()
        .map(|p| {
            let widen = p
                .skill_window
                .time_to_max_ms()
                .unwrap_or(0)
                .max(p.latency_limit.time_to_max_ms().unwrap_or(0));
            widen.saturating_add(p.fill_wait_ms)
        })
        .max()
        .unwrap_or(0);

    let n_tickets = n_tickets.min(MAX_TICKETS);
    let fraction = if unmatchable_fraction.is_nan() {
        0.0
    } else {
        unmatchable_fraction.clamp(0.0, 1.0)
    };
    let mut rng = Rng(seed);
    let mut unmatchable = Vec::with_capacity(n_tickets);
    let tickets: Vec<Ticket> = (0..n_tickets)
        .map(|n| {
            let u = rng.chance(fraction);
            unmatchable.push(u);
            make_ticket(&mut rng, n, u)
        })
        .collect();
    result.tickets = n_tickets;
    result.unmatchable_tickets = unmatchable.iter().filter(|&&u| u).count();
    result.players = tickets.iter().map(Ticket::players).sum();
    result.matchable_players = tickets
        .iter()
        .zip(&unmatchable)
        .filter(|(_, &u)| !u)
        .map(|(t, _)| t.players())
        .sum();

    // The physical floor: one sort of the same tickets by skill.
    let mut sorted = tickets.clone();
    let start = Instant::now();
    sorted.sort_by(|a, b| {
        a.skill()
            .unwrap_or_default()
            .total_cmp(&b.skill().unwrap_or_default())
    });
    result.sort_time = start.elapsed();
    drop(sorted);

    let mut ids = Vec::with_capacity(n_tickets);
    let mut outputs = Vec::with_capacity(MAX_TICKS);
    let start = Instant::now();
    for ticket in tickets {
        let id = matchmaker.add(ticket, 0).ok();
        result.tickets_refused += usize::from(id.is_none());
        ids.push(id);
    }
    result.add_time = start.elapsed();
    let mut now_ms = 0;
    while result.ticks < MAX_TICKS {
        let out = matchmaker.tick(now_ms);
        result.ticks += 1;
        let settled = out.matches.is_empty() && now_ms >= settle_ms;
        outputs.push(out);
        if settled || matchmaker.is_empty() {
            break;
        }
        now_ms += TICK_MS;
    }
    result.matchmaker_time = start.elapsed();

    let is_unmatchable: BTreeMap<TicketId, bool> = ids
        .iter()
        .zip(&unmatchable)
        .filter_map(|(id, &u)| id.map(|id| (id, u)))
        .collect();
    for m in outputs.iter().flat_map(|o| &o.matches) {
        result.matches += 1;
        result.players_matched += m.quality.players as usize;
        result.unmatchable_matched += m
            .tickets
            .iter()
            .filter(|t| is_unmatchable.get(&t.id).copied().unwrap_or(false))
            .count();
    }
    result.remaining = matchmaker.len();
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_seeded_and_sane() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        for n in 0..200 {
            let t = make_ticket(&mut a, n, n % 3 == 0);
            assert_eq!(t, make_ticket(&mut b, n, n % 3 == 0));
            assert!((1..=3).contains(&t.players()));
            assert!((3..=4).contains(&t.latencies.len()));
            assert!(t.latencies.iter().any(|&(_, rtt)| rtt <= 60), "{t:?}");
            let mut regions: Vec<_> = t.latencies.iter().map(|(r, _)| r).collect();
            regions.sort();
            regions.dedup();
            assert_eq!(regions.len(), t.latencies.len());
        }
        let mean = (0..10_000).map(|_| a.normal(1500.0, 300.0)).sum::<f64>() / 10_000.0;
        assert!((mean - 1500.0).abs() < 15.0, "{mean}");
    }

    #[test]
    fn bench_of_a_thousand_is_sane() {
        let r = run_bench(1000, 0.2, 42);
        assert_eq!(r.tickets, 1000);
        assert!((150..=250).contains(&r.unmatchable_tickets), "{r}");
        assert_eq!(r.unmatchable_matched, 0, "{r}");
        assert!(r.matches > 0, "{r}");
        // Nearly every matchable player finds a match; stragglers at the skill extremes may not.
        assert!(
            r.players_matched as f64 >= 0.9 * r.matchable_players as f64,
            "{r}"
        );
        assert!(r.players_matched <= r.matchable_players);
        assert!(r.remaining >= r.unmatchable_tickets, "{r}");
        assert_eq!(r.tickets_refused, 0, "{r}");
        assert!(r.ticks <= MAX_TICKS);
        // The same seed gives the same matching.
        let again = run_bench(1000, 0.2, 42);
        assert_eq!(
            (
                again.matches,
                again.players_matched,
                again.remaining,
                again.ticks
            ),
            (r.matches, r.players_matched, r.remaining, r.ticks)
        );
    }

    #[test]
    fn bench_handles_degenerate_arguments() {
        let r = run_bench(0, f64::NAN, 1);
        assert_eq!((r.tickets, r.matches, r.players), (0, 0, 0));
        let r = run_bench(50, 1.0, 1);
        assert_eq!(r.unmatchable_tickets, 50);
        assert_eq!(r.players_matched, 0);
        let mut invalid = bench_config();
        invalid.max_candidates = 8;
        invalid.default_pool = Some(crate::PoolConfig::new(3, 2));
        let r = run_bench_with(invalid, 100, 0.0, 1);
        assert_eq!((r.tickets, r.ticks, r.matches), (0, 0, 0));
        // Without the `duel` pool, its tickets are refused, and counted.
        let mut no_duels = bench_config();
        no_duels.pools.remove("duel");
        let r = run_bench_with(no_duels, 100, 0.0, 1);
        assert!(r.tickets_refused > 0, "{r:?}");
        assert!(r.remaining + r.tickets_refused <= r.tickets, "{r:?}");
    }

    /// Release-mode numbers: `cargo test -p volley-match --release -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark; run in release mode"]
    fn bench_numbers() {
        let cases = [
            (1_000, 0.0),
            (10_000, 0.0),
            (100_000, 0.0),
            (1_000, 0.5),
            (10_000, 0.5),
            (100_000, 0.5),
        ];
        for (n, unmatchable) in cases {
            let r = run_bench(n, unmatchable, 1);
            println!("{r}");
            assert_eq!(r.unmatchable_matched, 0);
        }
    }
}
