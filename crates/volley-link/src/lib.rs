//! Seeded userspace link emulator: impairment model and UDP proxy.
//!
//! This crate makes a loopback path behave like a bad network, reproducibly and without
//! privileges. The types that matter:
//!
//! - [`impair::Impairment`] and [`impair::LinkProfile`]: a sans-IO, seeded model of one
//!   direction of a bad link (delay, jitter, random and bursty loss, reordering, duplication, a
//!   rate cap). Deterministic: same seed and inputs, same verdicts. Usable directly in
//!   simulations with virtual time.
//! - [`udp_link::UdpLinkEmulator`]: a tokio UDP proxy on loopback that applies the model per
//!   client and per direction. Needs no privileges.
//! - [`DirectionStats`]: what an emulator did to the packets of one direction;
//!   [`stats::DirectionCounters`] are the live counters behind it, for emulators built on this
//!   crate (the TUN link of `volley-testkit` is one).
//!
//! `volley demo --profile weak-4g` runs its bots through [`udp_link::UdpLinkEmulator`];
//! `volley-testkit` re-exports [`impair`] and [`udp_link`] for tests.
//!
//! Invariants: every queue and map is bounded by a named constant; nothing sends traffic
//! anywhere but an emulator's target and its clients.

#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod impair;
pub mod stats;
pub mod udp_link;

pub use impair::{DropReason, Impairment, LinkProfile, ProfileError, Verdict};
pub use stats::DirectionStats;
