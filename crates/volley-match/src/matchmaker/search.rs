//! The search for one seed's match: walk the pool's skill index outward from the seed, nearest
//! first, adding every candidate that keeps the group valid, within a budget of K candidates.

use super::compiled::Sym;
use super::index::{from_order_bits, Key, Seat, Seats};
use super::pool::Pool;
use super::{Entry, PoolConfig};

/// A group of tickets being assembled around a seed. Reused from seed to seed.
#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) slots: Vec<usize>,
    pub(super) players: u64,
    pub(super) min_skill: f64,
    pub(super) max_skill: f64,
    /// The smallest skill window among the members.
    pub(super) window: f64,
    pub(super) oldest_enqueued_ms: u64,
    /// The intersection of the members' [`Seat::regions`]: a candidate whose mask misses it
    /// cannot share a region with the group.
    pub(super) region_mask: u64,
    /// Whether any member reported latencies (if not, the match has no region).
    pub(super) placed: bool,
    /// If `placed`: the regions acceptable to every member that reported latencies, with the
    /// worst round-trip time among them, sorted by region symbol; never empty.
    pub(super) regions: Vec<(Sym, u32)>,
}

impl Group {
    /// The acceptable regions, or `None` if no member constrains the region.
    pub(super) fn regions(&self) -> Option<&[(Sym, u32)]> {
        self.placed.then_some(self.regions.as_slice())
    }
}

/// Narrows the acceptable regions `current` by a ticket's latencies under `limit` into `out`.
/// Returns `false` if no region remains. A ticket without latencies leaves `current` as is
/// (and `out` untouched).
fn narrow_regions(
    current: Option<&[(Sym, u32)]>,
    latencies: &[(Sym, u32)],
    limit: f64,
    out: &mut Vec<(Sym, u32)>,
) -> bool {
    if latencies.is_empty() {
        return current.is_none_or(|c| !c.is_empty());
    }
    let within = |&&(_, rtt): &&(Sym, u32)| f64::from(rtt) <= limit;
    out.clear();
    match current {
        None => out.extend(latencies.iter().filter(within)),
        Some(current) => {
            let mut mine = latencies.iter().filter(within).peekable();
            for &(region, worst) in current {
                while mine.next_if(|&&(r, _)| r < region).is_some() {}
                if let Some(&(_, rtt)) = mine.next_if(|&&(r, _)| r == region) {
                    out.push((region, worst.max(rtt)));
                }
            }
        }
    }
    !out.is_empty()
}

/// One seed's search: the queued entries and their liveness, the pool's configuration, the
/// budget and the time.
pub(super) struct Search<'a> {
    pub(super) slots: &'a [Option<Entry>],
    pub(super) seats: &'a Seats,
    pub(super) config: &'a PoolConfig,
    /// Candidates examined at most (K).
    pub(super) max_candidates: usize,
    pub(super) now_ms: u64,
}

impl Search<'_> {
    fn entry(&self, slot: usize) -> Option<&Entry> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    fn max_players(&self) -> u64 {
        u64::from(self.config.max_players)
    }

    fn window(&self, enqueued_at_ms: u64) -> f64 {
        self.config
            .skill_window
            .at(self.now_ms.saturating_sub(enqueued_at_ms))
    }

    fn limit(&self, e: &Entry) -> f64 {
        self.config
            .latency_limit
            .at(e.queued.waited_ms(self.now_ms))
    }

    /// Assembles in `group` the match around the ticket in `seed`; returns whether it should
    /// form now: it is full, or has enough players and its oldest ticket has waited the fill
    /// wait. `scratch` is a reusable buffer.
    pub(super) fn run(
        &self,
        pool: &Pool,
        seed: usize,
        group: &mut Group,
        scratch: &mut Vec<(Sym, u32)>,
    ) -> bool {
        let Some(seed_entry) = self.entry(seed) else {
            return false;
        };
        if !self.start(seed, seed_entry, group) {
            return false;
        }

        if group.players < self.max_players() {
            if let Some(index) = pool.candidates_for(seed_entry) {
                self.scan(index, seed, seed_entry, group, scratch);
            }
        }

        let waited = self.now_ms.saturating_sub(group.oldest_enqueued_ms);
        group.players == self.max_players()
            || (group.players >= u64::from(self.config.min_players)
                && waited >= self.config.fill_wait_ms)
    }

    /// Walks `index` outward from the seed's skill, nearest first, offering each live
    /// candidate to the group, until the group is full, the skill window rules out the rest,
    /// K candidates were examined, or 4·K stale entries (tickets matched earlier this tick or
    /// gone dormant) were stepped over.
    fn scan(
        &self,
        index: &[Key],
        seed: usize,
        seed_entry: &Entry,
        group: &mut Group,
        scratch: &mut Vec<(Sym, u32)>,
    ) {
        // The seed's recorded position if this is the index it sits in, else a binary search.
        let hint = self
            .seats
            .get(seed)
            .map_or(usize::MAX, |s| s.open_position as usize);
        let position = if index.get(hint) == Some(&seed_entry.key) {
            hint
        } else {
            index.partition_point(|k| *k < seed_entry.key)
        };
        let (lower, upper) = index.split_at_checked(position).unwrap_or_default();
        let decode = |&(bits, id, slot): &Key| (from_order_bits(bits), id, slot);
        let mut below = lower.iter().rev().map(decode);
        let mut above = upper.iter().map(decode);
        let mut next_below = below.next();
        let mut next_above = above.next();
        let max_players = self.max_players();
        let mut budget = self.max_candidates;
        let mut stale_budget = self.max_candidates.saturating_mul(4);
        while budget > 0 && group.players < max_players {
            // Everything beyond a candidate the window rules out is ruled out too: the group's
            // extremes and window only get worse for it as members join.
            if next_below.is_some_and(|(skill, ..)| group.max_skill - skill > group.window) {
                next_below = None;
            }
            if next_above.is_some_and(|(skill, ..)| skill - group.min_skill > group.window) {
                next_above = None;
            }
            // Nearest skill first; the older ticket on a tie.
            let pick_below = match (next_below, next_above) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((low, low_id, _)), Some((high, high_id, _))) => {
                    (seed_entry.skill - low, low_id) <= (high - seed_entry.skill, high_id)
                }
            };
            let candidate = if pick_below {
                std::mem::replace(&mut next_below, below.next())
            } else {
                std::mem::replace(&mut next_above, above.next())
            };
            let Some((skill, id, slot)) = candidate else {
                break;
            };
            let seat = self.seats.get(slot);
            let Some(seat) = seat.filter(|s| slot != seed && s.is_awake(id)) else {
                if stale_budget == 0 {
                    break;
                }
                stale_budget -= 1;
                continue;
            };
            budget -= 1;
            self.try_join(group, slot, skill, seat, scratch);
        }
    }

    /// Resets `group` to just the seed. Returns `false` if the seed can be in no match now (it
    /// reported latencies but none is within its limit).
    fn start(&self, slot: usize, seed: &Entry, group: &mut Group) -> bool {
        let latencies = &seed.compiled.latencies;
        group.region_mask = self.seats.get(slot).map_or(u64::MAX, |s| s.regions);
        group.placed = !latencies.is_empty();
        if !narrow_regions(None, latencies, self.limit(seed), &mut group.regions) {
            return false;
        }
        group.slots.clear();
        group.slots.push(slot);
        group.players = u64::from(seed.players);
        group.min_skill = seed.skill;
        group.max_skill = seed.skill;
        group.window = self.window(seed.queued.enqueued_at_ms);
        group.oldest_enqueued_ms = seed.queued.enqueued_at_ms;
        true
    }

    /// Adds the ticket in `slot` (of skill `skill`, described by `seat`) to `group` if the
    /// group stays valid with it. Cheap checks first, on the dense seat: size, skill, region
    /// bits; then, on the entry, the exact regions and the pairwise hard constraints.
    fn try_join(
        &self,
        group: &mut Group,
        slot: usize,
        skill: f64,
        seat: &Seat,
        scratch: &mut Vec<(Sym, u32)>,
    ) {
        let players = group.players + u64::from(seat.players);
        if players > self.max_players() {
            return;
        }
        let min_skill = group.min_skill.min(skill);
        let max_skill = group.max_skill.max(skill);
        let window = group.window.min(self.window(seat.enqueued_at_ms));
        if max_skill - min_skill > window || group.region_mask & seat.regions == 0 {
            return;
        }
        let Some(c) = self.entry(slot) else {
            return;
        };
        let latencies = &c.compiled.latencies;
        if !narrow_regions(group.regions(), latencies, self.limit(c), scratch) {
            return;
        }
        let compatible = group.slots.iter().all(|&m| {
            self.entry(m)
                .is_some_and(|m| m.compiled.compatible(&c.compiled))
        });
        if !compatible {
            return;
        }
        if !latencies.is_empty() {
            std::mem::swap(&mut group.regions, scratch);
            group.placed = true;
        }
        group.slots.push(slot);
        group.players = players;
        group.min_skill = min_skill;
        group.max_skill = max_skill;
        group.window = window;
        group.region_mask &= seat.regions;
        group.oldest_enqueued_ms = group.oldest_enqueued_ms.min(seat.enqueued_at_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_narrow_by_intersection_and_limit() {
        let mut out = Vec::new();
        // First ticket: regions 1 and 3 within 100 ms, region 2 too far.
        assert!(narrow_regions(
            None,
            &[(1, 40), (2, 150), (3, 90)],
            100.0,
            &mut out
        ));
        assert_eq!(out, vec![(1, 40), (3, 90)]);
        let current = out.clone();
        // Second ticket: only region 3 in common within its limit; worst rtt kept.
        assert!(narrow_regions(
            Some(&current),
            &[(0, 10), (1, 300), (3, 60)],
            100.0,
            &mut out
        ));
        assert_eq!(out, vec![(3, 90)]);
        // No latencies: no constraint.
        assert!(narrow_regions(Some(&current), &[], 1.0, &mut out));
        assert!(narrow_regions(None, &[], 1.0, &mut out));
        // Nothing in common.
        assert!(!narrow_regions(Some(&current), &[(2, 5)], 100.0, &mut out));
        // Nothing within the limit.
        assert!(!narrow_regions(None, &[(2, 500)], 100.0, &mut out));
    }
}
