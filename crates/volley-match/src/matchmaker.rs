//! A continuous, deterministic matchmaker: tickets (parties) queue with properties, a query of
//! hard constraints, a skill and per-region latencies; every [`Matchmaker::tick`] forms the
//! matches it can and expires the tickets whose time is up.
//!
//! # What a match guarantees
//!
//! For every match returned, evaluated at the tick's `now_ms` with each ticket's wait measured
//! from the `now_ms` it was added at:
//!
//! - **Pool and size**: all tickets are in one pool and the match has `min_players ..=
//!   max_players` players (counted in players, parties are never split). A match smaller than
//!   `max_players` only forms once its oldest ticket has waited `fill_wait_ms`.
//! - **Hard constraints**: for every ordered pair of distinct tickets (A, B), every `must`
//!   clause of A holds for B's properties and no `must_not` clause of A does.
//! - **Skill**: the spread (highest minus lowest ticket skill, a ticket's skill being the mean
//!   of its members') is within the skill window of *every* ticket in the match, i.e. within
//!   the *minimum* of their windows. Each window widens with that ticket's own wait and never
//!   exceeds the pool's `skill_window.max`. Taking the minimum means no ticket is ever put in a
//!   match wider than it has itself come to accept.
//! - **Latency**: the match is placed in one region, and every ticket that reported latencies
//!   has a round-trip time to it within its own (widening) latency limit. Among the regions
//!   that satisfy everyone, the one with the lowest worst round-trip time is chosen (ties by
//!   name). Tickets without latencies accept any region; a match of only such tickets has no
//!   region.
//! - **Expiry**: a ticket is never matched at or after its `expires_at_ms`.
//!
//! # How it searches, and what it costs
//!
//! Each pool keeps its awake tickets in skill-sorted indexes: one of the tickets with no `must`
//! equality clause, and one per string property `key = value`. On a tick, tickets are tried as
//! *seeds* oldest first. A seed with `must` equality clauses scans the smallest index among its
//! required `key = value` pairs (so it only ever looks at tickets that can satisfy it); a seed
//! without scans the open index (tickets with equality requirements are found from their own
//! seeds instead). The scan walks outward from the seed's skill, nearest first, adding every
//! candidate that keeps the group valid, stopping when the group is full, when the skill window
//! rules out everything further, or after [`MatchmakerConfig::max_candidates`] (K) candidates.
//!
//! A ticket that cannot fill a match on its own and has a `must` clause that no other ticket in
//! its pool meets (an equality nobody offers, a range nobody's value falls in) is *dormant*: it
//! is in no scan index, so it costs other seeds nothing, and is not tried as a seed. Each pool
//! tracks what its tickets offer, so this check is a lookup or a binary search per clause;
//! dormant tickets are rechecked only on ticks after their pool gained tickets, the only event
//! that can wake them.
//!
//! The indexes are sorted vectors maintained lazily: adding a ticket appends to them, removing
//! one only marks it gone in a dense liveness table, and each tick first merges the additions
//! in and drops the departed in one linear pass. So a tick costs O(n + a·log a + s · (log n +
//! K · g)) for n queued tickets, a added since the last tick, s awake seeds and matches of at
//! most g tickets, never O(n²); a ticket nobody can match costs at most K candidate checks per
//! tick (nothing when dormant); adding or removing a ticket costs O(p) amortized for p
//! properties and members. The search is greedy, so with K bounded it can miss a valid match
//! hidden behind more than K incompatible neighbours; raising K trades work for recall.
//!
//! The matchmaker never reads a clock: time is the `now_ms` passed in, and the same calls with
//! the same arguments give the same results (all iteration that decides anything is over sorted
//! data; hash maps are only ever looked up).

mod compiled;
mod config;
mod error;
mod index;
mod pool;
mod search;
mod ticket;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

pub use config::{Limits, MatchmakerConfig, PoolConfig, Widening};
pub use error::Error;
pub use ticket::{
    Clause, Match, MatchQuality, Member, Properties, Query, QueuedTicket, TickOutput, Ticket,
    TicketId,
};

use compiled::{Compiled, Interner, Sym};
use index::{order_bits, Key, Seat, Seats};
use pool::Pool;
use search::{Group, Search};

/// Ticket ids stay below this so that [`Seats`] can pack them with a flag.
const MAX_TICKET_ID: u64 = 1 << 62;

/// A queued ticket with what the search needs precomputed.
#[derive(Debug)]
struct Entry {
    queued: QueuedTicket,
    skill: f64,
    players: u32,
    /// Its position in the pool's skill indexes.
    key: Key,
    compiled: Compiled,
    /// The pool's latency limit, for refreshing [`Seat::regions`].
    latency_limit: Widening,
    /// Whether the ticket is in its pool's scan indexes (see [`Pool`] on dormant tickets);
    /// mirrored in [`Seats`].
    awake: bool,
}

/// A string that occurs twice in `items`, if any; allocation-free for short lists.
fn repeated<'a, I>(items: I) -> Option<&'a str>
where
    I: ExactSizeIterator<Item = &'a str> + Clone,
{
    if items.len() <= 16 {
        let all = items.clone();
        items
            .enumerate()
            .find(|&(i, s)| all.clone().take(i).any(|t| t == s))
            .map(|(_, s)| s)
    } else {
        let mut sorted: Vec<&str> = items.collect();
        sorted.sort_unstable();
        sorted.windows(2).find_map(|w| match *w {
            [a, b] if a == b => Some(a),
            _ => None,
        })
    }
}

/// The matchmaker. See the [module documentation](self) for its guarantees and costs.
#[derive(Debug)]
pub struct Matchmaker {
    config: MatchmakerConfig,
    next_id: u64,
    /// Entries by slot; `None` for a free slot.
    slots: Vec<Option<Entry>>,
    free_slots: Vec<usize>,
    /// Liveness of every slot.
    seats: Seats,
    /// Number of queued tickets.
    queued: usize,
    /// Every queued ticket's id and slot in id (so age) order, plus some departed ones.
    order: Vec<(TicketId, usize)>,
    /// How many entries of `order` are departed.
    order_stale: usize,
    /// Slot of every queued user's ticket.
    users: HashMap<String, usize>,
    /// Every queued ticket by expiry, plus some departed ones.
    expiry: BinaryHeap<Reverse<(u64, TicketId, usize)>>,
    /// How many entries of `expiry` are departed.
    expiry_stale: usize,
    pools: BTreeMap<String, Pool>,
    interner: Interner,
    /// Buffers reused from tick to tick.
    seeds: Vec<usize>,
    group: Group,
    scratch: Vec<(Sym, u32)>,
}

impl Matchmaker {
    /// A matchmaker with no tickets. Fails if a pool has `min_players` of 0 or above
    /// `max_players`, or a widening window is not finite and non-negative with
    /// `initial <= max`.
    pub fn new(config: MatchmakerConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            config,
            next_id: 1,
            slots: Vec::new(),
            free_slots: Vec::new(),
            seats: Seats::default(),
            queued: 0,
            order: Vec::new(),
            order_stale: 0,
            users: HashMap::new(),
            expiry: BinaryHeap::new(),
            expiry_stale: 0,
            pools: BTreeMap::new(),
            interner: Interner::default(),
            seeds: Vec::new(),
            group: Group::default(),
            scratch: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MatchmakerConfig {
        &self.config
    }

    /// Number of queued tickets.
    pub fn len(&self) -> usize {
        self.queued
    }

    /// Whether no ticket is queued.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// A queued ticket.
    pub fn get(&self, id: TicketId) -> Option<&QueuedTicket> {
        self.slot_of(id).and_then(|slot| self.queued(slot))
    }

    /// The ticket `user_id` is queued in, if any.
    pub fn ticket_of(&self, user_id: &str) -> Option<TicketId> {
        self.users
            .get(user_id)
            .and_then(|&slot| self.queued(slot))
            .map(|q| q.id)
    }

    /// Every queued ticket, oldest first.
    pub fn tickets(&self) -> impl Iterator<Item = &QueuedTicket> + '_ {
        self.order
            .iter()
            .filter(|&&(id, slot)| self.seats.holds(slot, id.0))
            .filter_map(|&(_, slot)| self.queued(slot))
    }

    fn slot_of(&self, id: TicketId) -> Option<usize> {
        let i = self.order.binary_search_by_key(&id, |&(id, _)| id).ok()?;
        let &(_, slot) = self.order.get(i)?;
        self.seats.holds(slot, id.0).then_some(slot)
    }

    fn entry(&self, slot: usize) -> Option<&Entry> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    fn queued(&self, slot: usize) -> Option<&QueuedTicket> {
        self.entry(slot).map(|e| &e.queued)
    }

    /// Queues `ticket` at `now_ms` and returns its id.
    ///
    /// Refused if its pool is unknown, its party is empty, too large for the pool, repeats a
    /// user or has a user already queued in another ticket (a player is in at most one ticket),
    /// a user id is empty, a skill or numeric property is not finite, a range clause has a NaN
    /// bound or `min > max`, a region is empty or repeated, it exceeds a [`Limits`] bound, or it
    /// expires at or before `now_ms`.
    pub fn add(&mut self, ticket: Ticket, now_ms: u64) -> Result<TicketId, Error> {
        let pool_config = *self
            .config
            .pool(&ticket.pool)
            .ok_or_else(|| Error::UnknownPool(ticket.pool.clone()))?;
        self.validate(&ticket, &pool_config, now_ms)?;
        let skill = ticket.skill().ok_or(Error::InvalidSkill)?;
        let players = u32::try_from(ticket.players()).map_err(|_| Error::PartyTooLarge {
            players: ticket.players(),
            max_players: pool_config.max_players,
        })?;
        if self.queued >= self.config.limits.max_tickets || self.next_id >= MAX_TICKET_ID {
            return Err(Error::Full);
        }
        let id = TicketId(self.next_id);
        self.next_id += 1;

        let slot = self.free_slots.pop().unwrap_or(self.slots.len());
        let entry = Entry {
            skill,
            players,
            key: (order_bits(skill), id.0, slot),
            compiled: Compiled::new(&ticket, &mut self.interner),
            latency_limit: pool_config.latency_limit,
            awake: true,
            queued: QueuedTicket {
                id,
                enqueued_at_ms: now_ms,
                ticket,
            },
        };
        let pool_name = &entry.queued.ticket.pool;
        if !self.pools.contains_key(pool_name) {
            self.pools.insert(pool_name.clone(), Pool::new(pool_config));
        }
        if let Some(pool) = self.pools.get_mut(pool_name) {
            pool.insert(&entry, slot);
        }
        for member in &entry.queued.ticket.members {
            self.users.insert(member.user_id.clone(), slot);
        }
        self.seats.set(slot, Seat::new(id, now_ms, players));
        self.order.push((id, slot));
        self.expiry
            .push(Reverse((entry.queued.ticket.expires_at_ms, id, slot)));
        self.queued += 1;
        match self.slots.get_mut(slot) {
            Some(free) => *free = Some(entry),
            None => self.slots.push(Some(entry)),
        }
        Ok(id)
    }

    fn validate(&self, ticket: &Ticket, pool: &PoolConfig, now_ms: u64) -> Result<(), Error> {
        let limits = &self.config.limits;
        let check_len = |what: &'static str, s: &str| {
            if s.len() > limits.max_string_len {
                Err(Error::StringTooLong { what, len: s.len() })
            } else {
                Ok(())
            }
        };
        let check_count = |what: &'static str, count: usize, max: usize| {
            if count > max {
                Err(Error::TooMany { what, count, max })
            } else {
                Ok(())
            }
        };
        check_len("pool name", &ticket.pool)?;

        let members = &ticket.members;
        if members.is_empty() {
            return Err(Error::EmptyParty);
        }
        if u32::try_from(members.len()).map_or(true, |n| n > pool.max_players) {
            return Err(Error::PartyTooLarge {
                players: members.len(),
                max_players: pool.max_players,
            });
        }
        if let Some(user) = repeated(members.iter().map(|m| m.user_id.as_str())) {
            return Err(Error::DuplicateMember(user.to_owned()));
        }
        for member in members {
            if member.user_id.is_empty() {
                return Err(Error::EmptyUserId);
            }
            check_len("user id", &member.user_id)?;
            if !member.skill.is_finite() {
                return Err(Error::InvalidSkill);
            }
            if let Some(queued) = self.ticket_of(&member.user_id) {
                return Err(Error::UserQueued {
                    user_id: member.user_id.clone(),
                    ticket: queued,
                });
            }
        }

        let props = &ticket.properties;
        check_count(
            "properties",
            props.strings.len().saturating_add(props.numbers.len()),
            limits.max_properties,
        )?;
        for (key, value) in &props.strings {
            check_len("property key", key)?;
            check_len("property value", value)?;
        }
        for (key, value) in &props.numbers {
            check_len("property key", key)?;
            if !value.is_finite() {
                return Err(Error::InvalidNumber(key.clone()));
            }
        }

        let query = &ticket.query;
        check_count(
            "clauses",
            query.must.len().saturating_add(query.must_not.len()),
            limits.max_clauses,
        )?;
        for clause in query.must.iter().chain(&query.must_not) {
            check_len("clause key", clause.key())?;
            match clause {
                Clause::Eq { value, .. } => check_len("clause value", value)?,
                Clause::Range { key, min, max } => {
                    let nan = min.is_some_and(f64::is_nan) || max.is_some_and(f64::is_nan);
                    let empty = matches!((min, max), (Some(lo), Some(hi)) if lo > hi);
                    if nan || empty {
                        return Err(Error::InvalidRange(key.clone()));
                    }
                }
            }
        }

        check_count("regions", ticket.latencies.len(), limits.max_regions)?;
        for (region, _) in &ticket.latencies {
            check_len("region", region)?;
            if region.is_empty() {
                return Err(Error::InvalidRegion(region.clone()));
            }
        }
        if let Some(region) = repeated(ticket.latencies.iter().map(|(r, _)| r.as_str())) {
            return Err(Error::InvalidRegion(region.to_owned()));
        }

        if ticket.expires_at_ms <= now_ms {
            return Err(Error::AlreadyExpired);
        }
        Ok(())
    }

    /// Removes a queued ticket, returning it.
    pub fn remove(&mut self, id: TicketId) -> Option<QueuedTicket> {
        let slot = self.slot_of(id)?;
        self.depart(slot)
    }

    /// Removes the ticket `user_id` is queued in (with the rest of their party), returning it.
    pub fn remove_user(&mut self, user_id: &str) -> Option<QueuedTicket> {
        let slot = *self.users.get(user_id)?;
        self.depart(slot)
    }

    /// Removes the ticket in `slot` other than by expiry, leaving a stale expiry entry.
    fn depart(&mut self, slot: usize) -> Option<QueuedTicket> {
        let queued = self.remove_slot(slot)?;
        self.expiry_stale += 1;
        if self.expiry_stale > self.expiry.len() / 2 + 64 {
            let seats = &self.seats;
            self.expiry
                .retain(|Reverse((_, id, slot))| seats.holds(*slot, id.0));
            self.expiry_stale = 0;
        }
        Some(queued)
    }

    /// Removes the ticket in `slot` from everything but the expiry heap.
    fn remove_slot(&mut self, slot: usize) -> Option<QueuedTicket> {
        let entry = self.slots.get_mut(slot)?.take()?;
        self.free_slots.push(slot);
        self.seats.clear(slot);
        self.queued = self.queued.saturating_sub(1);
        self.order_stale += 1;
        if self.order_stale > self.order.len() / 2 + 64 {
            let seats = &self.seats;
            self.order.retain(|&(id, slot)| seats.holds(slot, id.0));
            self.order_stale = 0;
        }
        let queued = &entry.queued;
        for member in &queued.ticket.members {
            self.users.remove(&member.user_id);
        }
        if let Some(pool) = self.pools.get_mut(&queued.ticket.pool) {
            pool.remove(&entry);
            if pool.tickets == 0 {
                self.pools.remove(&queued.ticket.pool);
            }
        }
        entry.compiled.release(&mut self.interner);
        Some(entry.queued)
    }

    /// Advances the matchmaker to `now_ms`: expires the tickets whose `expires_at_ms` is at or
    /// before `now_ms`, then forms every match it finds. Matched and expired tickets leave the
    /// pool.
    pub fn tick(&mut self, now_ms: u64) -> TickOutput {
        let mut out = TickOutput::default();
        while let Some(&Reverse((expires_at_ms, id, slot))) = self.expiry.peek() {
            if expires_at_ms > now_ms {
                break;
            }
            self.expiry.pop();
            if self.seats.holds(slot, id.0) {
                self.remove_slot(slot);
                out.expired.push(id);
            } else {
                self.expiry_stale = self.expiry_stale.saturating_sub(1);
            }
        }
        out.expired.sort_unstable();

        for pool in self.pools.values_mut() {
            pool.compact(&mut self.seats);
        }
        self.wake_dormant();
        self.refresh_regions(now_ms);

        let mut seeds = std::mem::take(&mut self.seeds);
        let mut group = std::mem::take(&mut self.group);
        let mut scratch = std::mem::take(&mut self.scratch);
        seeds.clear();
        seeds.extend(
            self.order
                .iter()
                .filter(|&&(id, slot)| self.seats.awake(slot, id.0))
                .map(|&(_, slot)| slot),
        );
        for &seed in &seeds {
            if self.search(seed, now_ms, &mut group, &mut scratch) {
                out.matches.push(self.form(&group, now_ms));
            }
        }
        self.seeds = seeds;
        self.group = group;
        self.scratch = scratch;
        out
    }

    /// Wakes the dormant tickets whose `must` clauses can now be met, in pools that gained
    /// tickets since the last check, and brings those pools' indexes up to date again.
    fn wake_dormant(&mut self) {
        for pool in self.pools.values_mut() {
            let Some(dormant) = pool.needs_recheck() else {
                continue;
            };
            let mut woke = false;
            for (_, slot) in dormant {
                let Some(entry) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                    continue;
                };
                if !pool.should_sleep(entry, &self.seats) {
                    pool.wake(entry);
                    entry.awake = true;
                    self.seats.set_awake(slot, true);
                    woke = true;
                }
            }
            if woke {
                pool.compact(&mut self.seats);
            }
        }
    }

    /// Recomputes every awake ticket's [`Seat::regions`] for `now_ms`.
    fn refresh_regions(&mut self, now_ms: u64) {
        for (slot, entry) in self.slots.iter().enumerate() {
            if let Some(entry) = entry.as_ref().filter(|e| e.awake) {
                let limit = entry.latency_limit.at(entry.queued.waited_ms(now_ms));
                self.seats
                    .set_regions(slot, entry.compiled.region_mask(limit));
            }
        }
    }

    /// Looks for a match around the ticket in `seed` (putting it to sleep instead if its
    /// requirements cannot be met); returns whether `group` holds one that should form now.
    fn search(
        &mut self,
        seed: usize,
        now_ms: u64,
        group: &mut Group,
        scratch: &mut Vec<(Sym, u32)>,
    ) -> bool {
        let Some(entry) = self.slots.get_mut(seed).and_then(Option::as_mut) else {
            return false;
        };
        if !entry.awake {
            return false;
        }
        let Some(pool) = self.pools.get_mut(&entry.queued.ticket.pool) else {
            return false;
        };
        if pool.should_sleep(entry, &self.seats) {
            pool.sleep(entry, seed);
            entry.awake = false;
            self.seats.set_awake(seed, false);
            return false;
        }
        let search = Search {
            slots: &self.slots,
            seats: &self.seats,
            config: &pool.config,
            max_candidates: self.config.max_candidates,
            now_ms,
        };
        search.run(pool, seed, group, scratch)
    }

    /// Turns a found group into a match, removing its tickets from the pool.
    fn form(&mut self, group: &Group, now_ms: u64) -> Match {
        let region = group.regions().and_then(|regions| {
            regions
                .iter()
                .min_by(|a, b| (a.1, self.interner.name(a.0)).cmp(&(b.1, self.interner.name(b.0))))
                .map(|&(sym, worst)| (self.interner.name(sym).to_owned(), worst))
        });
        let pool = group
            .slots
            .first()
            .and_then(|&slot| self.entry(slot))
            .map(|e| e.queued.ticket.pool.clone())
            .unwrap_or_default();
        let mut tickets: Vec<QueuedTicket> = group
            .slots
            .iter()
            .filter_map(|&slot| self.depart(slot))
            .collect();
        tickets.sort_by_key(|t| t.id);
        let (region, max_latency_ms) = match region {
            Some((name, worst)) => (Some(name), Some(worst)),
            None => (None, None),
        };
        Match {
            pool,
            tickets,
            region,
            quality: MatchQuality {
                skill_spread: group.max_skill - group.min_skill,
                max_latency_ms,
                max_wait_ms: now_ms.saturating_sub(group.oldest_enqueued_ms),
                players: u32::try_from(group.players).unwrap_or(u32::MAX),
            },
        }
    }
}

#[cfg(test)]
impl Matchmaker {
    /// Checks the internal bookkeeping against the entries; panics on any inconsistency.
    fn check_invariants(&self) {
        let mut users = 0;
        let mut per_pool: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut live = 0;
        for (slot, entry) in self.slots.iter().enumerate() {
            let Some(entry) = entry else {
                assert!(self.seats.get(slot).is_none_or(|s| *s == Seat::default()));
                continue;
            };
            live += 1;
            let id = entry.queued.id;
            assert!(self.seats.holds(slot, id.0), "seat of {id}");
            assert_eq!(
                self.seats.awake(slot, id.0),
                entry.awake,
                "awake flag of {id}"
            );
            assert_eq!(entry.key.2, slot);
            assert_eq!(entry.key.1, id.0);
            assert_eq!(self.slot_of(id), Some(slot), "order entry of {id}");
            for member in &entry.queued.ticket.members {
                assert_eq!(self.users.get(&member.user_id), Some(&slot));
                users += 1;
            }
            let counts = per_pool.entry(&entry.queued.ticket.pool).or_default();
            counts.0 += 1;
            counts.1 += usize::from(!entry.awake);
        }
        assert_eq!(live, self.queued);
        assert_eq!(users, self.users.len());
        assert!(
            self.order.windows(2).all(|w| w[0].0 < w[1].0),
            "order sorted"
        );
        assert_eq!(
            self.order
                .iter()
                .filter(|&&(id, slot)| self.seats.holds(slot, id.0))
                .count(),
            live
        );
        assert_eq!(self.pools.len(), per_pool.len(), "no empty pools kept");
        for (name, pool) in &self.pools {
            let (tickets, dormant) = per_pool.get(name.as_str()).copied().unwrap_or_default();
            assert_eq!(pool.tickets, tickets, "ticket count of pool {name}");
            assert_eq!(pool.dormant_len(), dormant, "dormant count of pool {name}");
        }
        if live == 0 {
            assert_eq!(self.interner.live(), 0, "interned strings leaked");
        }
    }
}

#[cfg(test)]
mod tests;
