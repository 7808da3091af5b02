//! Tickets, their properties and queries, and the matches they end up in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Identifies a queued ticket. Assigned by [`Matchmaker::add`](super::Matchmaker::add) in
/// increasing order and never reused by the same matchmaker, so a lower id is an older ticket.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct TicketId(pub u64);

impl std::fmt::Display for TicketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ticket#{}", self.0)
    }
}

/// One player of a ticket's party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The player's user id; a user may be in at most one queued ticket.
    pub user_id: String,
    /// The player's skill, typically [`Rating::rating`](crate::rating::Rating::rating).
    pub skill: f64,
}

impl Member {
    /// A member with the given user id and skill.
    pub fn new(user_id: impl Into<String>, skill: f64) -> Self {
        Self {
            user_id: user_id.into(),
            skill,
        }
    }
}

/// What a ticket says about itself, for other tickets' queries to test.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Properties {
    /// String properties, e.g. `map = "harbor"`.
    pub strings: BTreeMap<String, String>,
    /// Numeric properties, e.g. `level = 12`. Must be finite.
    pub numbers: BTreeMap<String, f64>,
}

/// One condition on another ticket's [`Properties`]. A clause on a key the other ticket does not
/// have never holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Clause {
    /// The string property `key` equals `value`.
    Eq {
        /// Property name.
        key: String,
        /// Required value.
        value: String,
    },
    /// The numeric property `key` lies in `min ..= max`; a missing bound is unbounded.
    Range {
        /// Property name.
        key: String,
        /// Inclusive lower bound.
        min: Option<f64>,
        /// Inclusive upper bound.
        max: Option<f64>,
    },
}

impl Clause {
    /// `key == value`.
    pub fn eq(key: impl Into<String>, value: impl Into<String>) -> Self {
        Clause::Eq {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `min <= key <= max`, either bound optional.
    pub fn range(key: impl Into<String>, min: Option<f64>, max: Option<f64>) -> Self {
        Clause::Range {
            key: key.into(),
            min,
            max,
        }
    }

    /// The property name the clause tests.
    pub fn key(&self) -> &str {
        match self {
            Clause::Eq { key, .. } | Clause::Range { key, .. } => key,
        }
    }

    /// Whether the clause holds for `properties`.
    pub fn holds(&self, properties: &Properties) -> bool {
        match self {
            Clause::Eq { key, value } => properties.strings.get(key) == Some(value),
            Clause::Range { key, min, max } => properties
                .numbers
                .get(key)
                .is_some_and(|&x| min.is_none_or(|lo| lo <= x) && max.is_none_or(|hi| x <= hi)),
        }
    }
}

/// Hard constraints a ticket puts on every other ticket of its match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Query {
    /// Every clause must hold for every other ticket.
    pub must: Vec<Clause>,
    /// No clause may hold for any other ticket.
    pub must_not: Vec<Clause>,
}

impl Query {
    /// Whether a ticket with this query accepts a ticket with `other` properties.
    pub fn accepts(&self, other: &Properties) -> bool {
        self.must.iter().all(|c| c.holds(other)) && !self.must_not.iter().any(|c| c.holds(other))
    }
}

/// A request to be matched: a party of one or more players entering a pool as one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// The pool (game mode) to match in; matches only form within a pool.
    pub pool: String,
    /// The party; never split across matches.
    pub members: Vec<Member>,
    /// What this ticket offers to other tickets' queries.
    pub properties: Properties,
    /// What this ticket demands of the other tickets.
    pub query: Query,
    /// Round-trip times to candidate regions as measured by the client, one entry per region.
    /// An empty list means "any region" (the ticket does not constrain placement).
    pub latencies: Vec<(String, u32)>,
    /// The ticket leaves the pool unmatched at the first tick with `now_ms >= expires_at_ms`.
    pub expires_at_ms: u64,
}

impl Ticket {
    /// A ticket for `members` in `pool`, with no properties, no query, no latencies and no
    /// expiry (`u64::MAX`).
    pub fn new(pool: impl Into<String>, members: Vec<Member>) -> Self {
        Self {
            pool: pool.into(),
            members,
            properties: Properties::default(),
            query: Query::default(),
            latencies: Vec::new(),
            expires_at_ms: u64::MAX,
        }
    }

    /// A ticket for a single player.
    pub fn solo(pool: impl Into<String>, user_id: impl Into<String>, skill: f64) -> Self {
        Self::new(pool, vec![Member::new(user_id, skill)])
    }

    /// With the string property `key = value`.
    pub fn with_string(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.strings.insert(key.into(), value.into());
        self
    }

    /// With the numeric property `key = value`.
    pub fn with_number(mut self, key: impl Into<String>, value: f64) -> Self {
        self.properties.numbers.insert(key.into(), value);
        self
    }

    /// With one more `must` clause.
    pub fn must(mut self, clause: Clause) -> Self {
        self.query.must.push(clause);
        self
    }

    /// With one more `must_not` clause.
    pub fn must_not(mut self, clause: Clause) -> Self {
        self.query.must_not.push(clause);
        self
    }

    /// With a measured round-trip time to `region`.
    pub fn with_latency(mut self, region: impl Into<String>, rtt_ms: u32) -> Self {
        self.latencies.push((region.into(), rtt_ms));
        self
    }

    /// Expiring at `expires_at_ms`.
    pub fn expires_at(mut self, expires_at_ms: u64) -> Self {
        self.expires_at_ms = expires_at_ms;
        self
    }

    /// Number of players in the party.
    pub fn players(&self) -> usize {
        self.members.len()
    }

    /// The ticket's skill: the mean of its members' skills, or `None` for an empty party or a
    /// non-finite mean.
    pub fn skill(&self) -> Option<f64> {
        let n = self.members.len() as f64;
        // Summing pre-divided terms cannot overflow where the mean itself does not.
        let mean: f64 = self.members.iter().map(|m| m.skill / n).sum();
        (!self.members.is_empty() && mean.is_finite()).then_some(mean)
    }

    /// The round-trip time to `region`, if measured.
    pub fn latency(&self, region: &str) -> Option<u32> {
        self.latencies
            .iter()
            .find(|(r, _)| r == region)
            .map(|&(_, rtt)| rtt)
    }

    /// Whether the two tickets' hard constraints allow them in one match, in both directions.
    pub fn compatible(&self, other: &Ticket) -> bool {
        self.query.accepts(&other.properties) && other.query.accepts(&self.properties)
    }
}

/// A ticket as queued: its id, when it was added and the ticket itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedTicket {
    /// The id [`Matchmaker::add`](super::Matchmaker::add) returned.
    pub id: TicketId,
    /// The `now_ms` it was added at; its wait is measured from here.
    pub enqueued_at_ms: u64,
    /// The ticket.
    pub ticket: Ticket,
}

impl QueuedTicket {
    /// How long the ticket has waited at `now_ms` (0 if `now_ms` is before it was added).
    pub fn waited_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.enqueued_at_ms)
    }
}

/// How good a match is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchQuality {
    /// Highest minus lowest ticket skill.
    pub skill_spread: f64,
    /// Highest round-trip time to the match's region among the tickets that reported
    /// latencies; `None` when the match has no region.
    pub max_latency_ms: Option<u32>,
    /// The longest any of its tickets waited.
    pub max_wait_ms: u64,
    /// Number of players.
    pub players: u32,
}

/// A formed match. Its tickets have left the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// The pool it formed in.
    pub pool: String,
    /// Its tickets, in id order (oldest first).
    pub tickets: Vec<QueuedTicket>,
    /// The region to host it in; `None` only when no ticket reported latencies.
    pub region: Option<String>,
    /// How good it is.
    pub quality: MatchQuality,
}

impl Match {
    /// Every player's user id, ticket by ticket.
    pub fn user_ids(&self) -> impl Iterator<Item = &str> {
        self.tickets
            .iter()
            .flat_map(|t| t.ticket.members.iter().map(|m| m.user_id.as_str()))
    }
}

/// What one [`Matchmaker::tick`](super::Matchmaker::tick) produced.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TickOutput {
    /// Matches formed, in the order they formed.
    pub matches: Vec<Match>,
    /// Tickets that expired unmatched, in id order.
    pub expired: Vec<TicketId>,
}
