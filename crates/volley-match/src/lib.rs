//! Matchmaker core and skill ratings, sans-IO and deterministic: nothing here reads a clock, a
//! socket or an unseeded random number generator (time is the `now_ms` the caller passes in),
//! and the same calls give the same results.
//!
//! - [`rating`]: Glicko-2 ratings, for one player's rating period ([`rating::update`]) or a
//!   multi-player match by placements ([`rating::update_match`]).
//! - [`matchmaker`]: continuous matchmaking of parties in pools, with hard property
//!   constraints, widening skill windows, region latency limits and expiry
//!   ([`Matchmaker`]).
//! - [`bench`](mod@bench): a reproducible load benchmark of the matchmaker (the one place that reads a
//!   clock, to time itself).
//!
//! No input makes anything here panic: invalid numbers, empty strings and oversized tickets are
//! refused with an error or, for ratings, handled as documented.
//!
//! ```
//! use volley_match::rating::{update_match, DEFAULT_TAU};
//! use volley_match::{Clause, Matchmaker, MatchmakerConfig, Member, PoolConfig, Rating, Ticket};
//!
//! // 2v2: four players per match, formed at once when full, or after 10 s with at least two;
//! // skill spread within 100 (widening by 10/s), latency within 80 ms (widening by 5 ms/s).
//! let config = MatchmakerConfig::default().with_pool("2v2", PoolConfig::new(2, 4));
//! let mut matchmaker = Matchmaker::new(config)?;
//!
//! // A party of two that insists on the harbor map, and two solo players.
//! let party = Ticket::new("2v2", vec![Member::new("ann", 1510.0), Member::new("bob", 1490.0)])
//!     .with_string("map", "harbor")
//!     .must(Clause::eq("map", "harbor"))
//!     .with_latency("eu-west", 35)
//!     .with_latency("us-east", 110);
//! matchmaker.add(party, 0)?;
//! for (user, skill, rtt) in [("cid", 1450.0, 50), ("dee", 1540.0, 42)] {
//!     let solo = Ticket::solo("2v2", user, skill)
//!         .with_string("map", "harbor")
//!         .with_latency("eu-west", rtt);
//!     matchmaker.add(solo, 0)?;
//! }
//!
//! let out = matchmaker.tick(1_000);
//! let found = &out.matches[0];
//! assert_eq!(found.quality.players, 4);
//! assert_eq!(found.region.as_deref(), Some("eu-west"));
//! assert!(matchmaker.is_empty());
//!
//! // After the game: ann and bob won, cid and dee lost.
//! let before = [Rating::default(); 4];
//! let after = update_match(&before, &[1, 1, 2, 2], DEFAULT_TAU)?;
//! assert!(after[0].rating > 1500.0 && after[3].rating < 1500.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod bench;
pub mod matchmaker;
pub mod rating;

pub use matchmaker::{
    Clause, Error, Match, MatchQuality, Matchmaker, MatchmakerConfig, Member, PoolConfig, Query,
    QueuedTicket, TickOutput, Ticket, TicketId, Widening,
};
pub use rating::{Outcome, Rating};
