//! The Volley node: HTTP API, QUIC gate, rooms and relay, content origin.
//!
//! [`Node::start`] binds the HTTP API and the QUIC endpoint and returns a [`NodeHandle`]. A player
//! logs in over HTTP, asks to join a room and receives a sealed connect ticket; it then connects
//! over QUIC, where the gate admits it only with a valid ticket (`admission` decides, without
//! sockets or clocks), tells it about its peers and relays for any pair of players without a
//! direct path.
//!
//! Map: [`node`] wires everything; `state` is what the API and the gate share; `http/` holds the
//! API, one module per domain; `gate` the QUIC side; `rooms` and `room` the room directory and
//! rooms; `origin/` the content origin; `logic` lets rooms run game code, and [`modes`] is the game logic a node offers.
#![warn(missing_docs, unreachable_pub)]

mod admission;
pub mod config;
mod gate;
mod http;
pub mod logic;
pub mod metrics;
pub mod modes;
pub mod node;
mod origin;
mod room;
mod rooms;
mod start;
mod state;
mod store;

pub use config::{NodeConfig, RetryPolicy};
pub use metrics::Metrics;
pub use node::{Node, NodeHandle};
pub use start::StartError;
