//! Test support for Volley: a userspace link emulator and a NAT lab of network namespaces.
//!
//! The types that matter most:
//!
//! - [`impair::Impairment`] and [`impair::LinkProfile`]: a sans-IO, seeded model of one
//!   direction of a bad link (delay, jitter, random and bursty loss, reordering, duplication, a
//!   rate cap). Deterministic: same seed and inputs, same verdicts. Usable directly in
//!   simulations with virtual time.
//! - [`udp_link::UdpLinkEmulator`]: a tokio UDP proxy on loopback that applies the model per
//!   client and per direction. Needs no privileges.
//!
//!   These two live in the `volley-link` crate (the product binary uses them too) and are
//!   re-exported here unchanged.
//! - [`netlab::Lab`]: network namespaces wired into a small internet with NAT routers of each
//!   [`netlab::NatKind`] (full cone, port-restricted, symmetric) built with nftables. Needs root.
//! - [`tun_link::TunLink`]: an impaired IP link between two namespaces through two TUN devices,
//!   since this kernel has no `netem`. Needs root.
//!
//! - [`initials::capture`]: real QUIC client Initials, to replay as a spoofed-source flood.
//!
//! Root-only tests should start with [`netlab::lab_required`], which skips loudly on a
//! developer machine and fails in CI when the lab cannot run, telling the user to run
//! `scripts/setup-lab.sh`.
//!
//! Invariants: every queue and map is bounded by a named constant; nothing sends traffic
//! anywhere but loopback or namespaces this crate created; lab addresses come from TEST-NET
//! (`192.0.2.0/24`, `203.0.113.0/24`) and shared address space (`100.64.0.0/10`) inside those
//! namespaces only.

#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod initials;
pub mod netlab;
pub mod tun_link;

pub use volley_link::{impair, udp_link};
pub use volley_link::{DirectionStats, DropReason, Impairment, LinkProfile, ProfileError, Verdict};
