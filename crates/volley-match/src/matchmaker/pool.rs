//! One pool's indexes: skill-sorted scan indexes of the awake tickets, what every queued ticket
//! offers (to decide cheaply whether a requirement can be met at all), and the dormant tickets.

use std::collections::BTreeMap;

use super::compiled::Sym;
use super::index::{order_bits, Key, Seats, SortedIndex};
use super::{Entry, PoolConfig, TicketId};

/// Most stale entries a satisfiability check steps over before it gives up and answers
/// "satisfiable" (the safe answer: it only means the ticket stays awake).
const STALE_STEPS: usize = 64;

/// A string property: how many queued tickets offer it, and the awake ones by skill.
#[derive(Debug, Default)]
struct Offer {
    queued: usize,
    awake: SortedIndex,
}

/// The tickets of one pool.
///
/// A ticket is *dormant* when it cannot fill a match on its own and one of its `must` clauses
/// is met by no other queued ticket in the pool: no match can include it, so it sits in no scan
/// index and is not tried as a seed. Only a new ticket can meet a clause nobody met, so dormant
/// tickets are rechecked only after the pool gained tickets ([`Pool::needs_recheck`]).
///
/// The indexes are [`SortedIndex`]es: [`Pool::compact`] must run before they are read, which
/// [`Matchmaker::tick`](super::Matchmaker::tick) does first thing.
#[derive(Debug)]
pub(super) struct Pool {
    pub(super) config: PoolConfig,
    /// Awake tickets without `must` equality clauses, by skill.
    open: SortedIndex,
    /// String properties offered.
    properties: BTreeMap<(Sym, Sym), Offer>,
    /// Every queued ticket's numeric properties, by key then value.
    numbers: BTreeMap<Sym, SortedIndex>,
    /// Dormant tickets and their slots.
    dormant: BTreeMap<TicketId, usize>,
    /// Tickets in the pool.
    pub(super) tickets: usize,
    /// Bumped whenever a ticket joins.
    generation: u64,
    /// `generation` when the dormant tickets were last rechecked.
    checked_generation: u64,
}

impl Pool {
    pub(super) fn new(config: PoolConfig) -> Self {
        Self {
            config,
            open: SortedIndex::default(),
            properties: BTreeMap::new(),
            numbers: BTreeMap::new(),
            dormant: BTreeMap::new(),
            tickets: 0,
            generation: 0,
            checked_generation: 0,
        }
    }

    /// Whether `entry` could be part of a match with other tickets as far as its `must` clauses
    /// go: every clause is met by at least one other queued ticket in the pool. A necessary
    /// condition only (`must_not` clauses and the other tickets' own demands are not
    /// considered), and it may err towards "yes".
    pub(super) fn satisfiable(&self, entry: &Entry, seats: &Seats) -> bool {
        let id = entry.queued.id.0;
        let strings_ok = entry.compiled.required().all(|pair| {
            let offered = self.properties.get(&pair).map_or(0, |o| o.queued);
            offered > usize::from(entry.compiled.offers(pair))
        });
        strings_ok
            && entry.compiled.required_ranges().all(|(key, lo, hi)| {
                let Some(values) = self.numbers.get(&key) else {
                    return false;
                };
                let (lo, hi) = (order_bits(lo), order_bits(hi));
                let items = values.items();
                let start = items.partition_point(|k| k.0 < lo);
                let mut stale = 0;
                for &(value, other, slot) in items.get(start..).unwrap_or_default() {
                    if value > hi {
                        return false;
                    }
                    if other != id && seats.holds(slot, other) {
                        return true;
                    }
                    stale += 1;
                    if stale > STALE_STEPS {
                        return true;
                    }
                }
                false
            })
    }

    /// Whether `entry` should be dormant: it cannot fill a match alone and its `must` clauses
    /// cannot be met.
    pub(super) fn should_sleep(&self, entry: &Entry, seats: &Seats) -> bool {
        entry.players < self.config.min_players && !self.satisfiable(entry, seats)
    }

    /// Adds `entry` (in `slot`), awake or dormant as its `awake` flag says.
    pub(super) fn insert(&mut self, entry: &Entry, slot: usize) {
        for &pair in entry.compiled.strings() {
            self.properties.entry(pair).or_default().queued += 1;
        }
        for &(key, value) in entry.compiled.numbers() {
            self.numbers
                .entry(key)
                .or_default()
                .push((order_bits(value), entry.queued.id.0, slot));
        }
        if entry.awake {
            self.index(entry);
        } else {
            self.dormant.insert(entry.queued.id, slot);
        }
        self.tickets += 1;
        self.generation += 1;
    }

    /// Removes `entry`; its index entries go stale.
    pub(super) fn remove(&mut self, entry: &Entry) {
        for pair in entry.compiled.strings() {
            if let Some(offer) = self.properties.get_mut(pair) {
                offer.queued = offer.queued.saturating_sub(1);
            }
        }
        for (key, _) in entry.compiled.numbers() {
            if let Some(values) = self.numbers.get_mut(key) {
                values.mark_stale();
            }
        }
        if entry.awake {
            self.unindex(entry);
        } else {
            self.dormant.remove(&entry.queued.id);
        }
        self.tickets = self.tickets.saturating_sub(1);
    }

    /// Moves an awake `entry` (in `slot`) to the dormant set (the caller clears its `awake`
    /// flag).
    pub(super) fn sleep(&mut self, entry: &Entry, slot: usize) {
        self.unindex(entry);
        self.dormant.insert(entry.queued.id, slot);
    }

    /// Moves a dormant `entry` back into the scan indexes (the caller sets its `awake` flag).
    pub(super) fn wake(&mut self, entry: &Entry) {
        self.dormant.remove(&entry.queued.id);
        self.index(entry);
    }

    /// If tickets joined since the last recheck, the dormant tickets to recheck (and marks
    /// them checked).
    pub(super) fn needs_recheck(&mut self) -> Option<Vec<(TicketId, usize)>> {
        if self.generation == self.checked_generation {
            return None;
        }
        self.checked_generation = self.generation;
        Some(self.dormant.iter().map(|(&id, &slot)| (id, slot)).collect())
    }

    /// Brings every index up to date: merges new entries in, drops stale ones (awake tickets
    /// only in the scan indexes, queued ones in the numeric index) and forgets properties no
    /// ticket offers any more. Records the open-index positions in `seats`.
    pub(super) fn compact(&mut self, seats: &mut Seats) {
        if self.open.compact(|k: &Key| seats.awake(k.2, k.1)) {
            seats.record_positions(&self.open);
        }
        let seats = &*seats;
        let awake = |k: &Key| seats.awake(k.2, k.1);
        let queued = |k: &Key| seats.holds(k.2, k.1);
        self.properties.retain(|_, offer| {
            offer.awake.compact(awake);
            offer.queued > 0 || !offer.awake.is_empty()
        });
        self.numbers.retain(|_, values| {
            values.compact(queued);
            !values.is_empty()
        });
    }

    fn index(&mut self, entry: &Entry) {
        if entry.compiled.required().next().is_none() {
            self.open.push(entry.key);
        }
        for &pair in entry.compiled.strings() {
            self.properties
                .entry(pair)
                .or_default()
                .awake
                .push(entry.key);
        }
    }

    fn unindex(&mut self, entry: &Entry) {
        if entry.compiled.required().next().is_none() {
            self.open.mark_stale();
        }
        for pair in entry.compiled.strings() {
            if let Some(offer) = self.properties.get_mut(pair) {
                offer.awake.mark_stale();
            }
        }
    }

    /// The skill index a seed scans for candidates: the smallest of its required `key = value`
    /// indexes, or the open index if it requires none. `None` if no awake ticket offers one of
    /// its requirements.
    pub(super) fn candidates_for(&self, seed: &Entry) -> Option<&[Key]> {
        let mut best: Option<&[Key]> = None;
        for pair in seed.compiled.required() {
            let index = self.properties.get(&pair)?.awake.items();
            if best.is_none_or(|b| index.len() < b.len()) {
                best = Some(index);
            }
        }
        Some(best.unwrap_or(self.open.items()))
    }

    /// Number of dormant tickets.
    #[cfg(test)]
    pub(super) fn dormant_len(&self) -> usize {
        self.dormant.len()
    }
}
