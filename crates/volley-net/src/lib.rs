//! Volley transport: QUIC endpoints and the pieces that make a peer link survive path changes.
//!
//! - [`tls`]: self-signed identities and certificate verifiers that pin SHA-256 fingerprints, so a
//!   node and two peers authenticate each other without a certificate authority.
//! - [`socket::PunchSocket`]: the UDP socket under a QUIC endpoint, which also sends and receives
//!   hole-punching probes, so punching opens exactly the NAT mapping QUIC then uses.
//! - [`link`]: the sans-IO reliable sequence of a peer link (sequence numbers, acknowledgements,
//!   retransmission on a new path, in-order delivery without duplicates).
//! - [`path::PathMonitor`]: the sans-IO liveness and RTT tracker that decides direct or relay.
//! - [`framing`]: length-prefixed frames on QUIC streams.
//! - [`endpoint`]: endpoint and transport configuration shared by the node and the SDK.
#![warn(missing_docs, unreachable_pub)]

pub mod endpoint;
pub mod framing;
pub mod link;
pub mod path;
pub mod socket;
pub mod tls;

pub use volley_proto as proto;

/// ALPN protocol id for every Volley QUIC connection.
pub const ALPN: &[u8] = b"volley/1";
