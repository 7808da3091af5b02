//! Why the matchmaker refused a configuration or a ticket.

use super::TicketId;

/// Why [`Matchmaker::new`](super::Matchmaker::new) or
/// [`Matchmaker::add`](super::Matchmaker::add) refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable; the message says why.
    InvalidConfig(String),
    /// The ticket names a pool that is not configured (and there is no default pool).
    UnknownPool(String),
    /// The ticket has no members.
    EmptyParty,
    /// The party is larger than the pool's `max_players`.
    PartyTooLarge {
        /// Players in the party.
        players: usize,
        /// The pool's `max_players`.
        max_players: u32,
    },
    /// A member has an empty user id.
    EmptyUserId,
    /// The same user appears twice in the ticket.
    DuplicateMember(String),
    /// A member is already in a queued ticket.
    UserQueued {
        /// The user.
        user_id: String,
        /// The ticket they are queued in.
        ticket: TicketId,
    },
    /// A member's skill is not finite, or the party's mean is not.
    InvalidSkill,
    /// A numeric property is not finite.
    InvalidNumber(String),
    /// A range clause has a NaN bound or `min > max`.
    InvalidRange(String),
    /// A region name is empty or listed twice.
    InvalidRegion(String),
    /// A string is longer than [`Limits::max_string_len`](super::Limits::max_string_len).
    StringTooLong {
        /// What the string is (e.g. `"property key"`).
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The ticket carries more of something than [`Limits`](super::Limits) allows.
    TooMany {
        /// What there is too much of (e.g. `"clauses"`).
        what: &'static str,
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The ticket's `expires_at_ms` is not after `now_ms`.
    AlreadyExpired,
    /// [`Limits::max_tickets`](super::Limits::max_tickets) tickets are already queued.
    Full,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidConfig(why) => write!(f, "invalid matchmaker configuration: {why}"),
            Error::UnknownPool(pool) => write!(f, "unknown pool {pool:?}"),
            Error::EmptyParty => f.write_str("ticket has no members"),
            Error::PartyTooLarge {
                players,
                max_players,
            } => write!(
                f,
                "party of {players} does not fit matches of at most {max_players} players"
            ),
            Error::EmptyUserId => f.write_str("empty user id"),
            Error::DuplicateMember(user) => write!(f, "user {user:?} is in the party twice"),
            Error::UserQueued { user_id, ticket } => {
                write!(f, "user {user_id:?} is already queued in {ticket}")
            }
            Error::InvalidSkill => f.write_str("skill is not a finite number"),
            Error::InvalidNumber(key) => write!(f, "numeric property {key:?} is not finite"),
            Error::InvalidRange(key) => {
                write!(f, "range clause on {key:?} has a NaN bound or min > max")
            }
            Error::InvalidRegion(region) => {
                write!(f, "region {region:?} is empty or listed twice")
            }
            Error::StringTooLong { what, len } => write!(f, "{what} is too long ({len} bytes)"),
            Error::TooMany { what, count, max } => {
                write!(f, "too many {what}: {count} (at most {max})")
            }
            Error::AlreadyExpired => f.write_str("ticket expires before it is queued"),
            Error::Full => f.write_str("matchmaker is full"),
        }
    }
}

impl std::error::Error for Error {}
