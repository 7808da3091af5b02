//! Volley netcode cores, sans-IO and deterministic: nothing here reads a clock, a socket or an
//! unseeded random number generator, so every core runs the same under tokio, in a seeded
//! simulation and in a fuzzer.
//!
//! - [`game::Game`]: the small trait a game implements (state, input, fixed step, checksum,
//!   entity views for snapshots).
//! - [`arena`]: the demo arena game (fixed-point, bit-identical on every machine) and its bots.
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod arena;
pub mod bits;
pub mod game;
pub mod interp;
pub mod lagcomp;
pub mod netplay;
pub mod referee;
pub mod rollback;
pub mod sim;
pub mod snapshot;
