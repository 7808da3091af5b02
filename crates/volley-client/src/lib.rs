//! The Volley client SDK: what a game links to join a hybrid peer-to-peer session.
//!
//! 1. [`Api`]: log in and ask the node for a connect ticket over HTTP.
//! 2. [`Client`]: owns the player's QUIC endpoint and certificate; [`Client::join`] presents the
//!    ticket and returns a [`Session`].
//! 3. [`Session`]: send to one peer or all on the reliable ordered channel or the unreliable
//!    channel; receive [`Event`]s; poll [`Session::peers`] every frame for path and quality.
//!
//! Every peer link prefers a direct QUIC path (punched through NATs from the endpoint's own
//! socket) and falls back to the node's relay when there is none or it dies, without losing or
//! duplicating a reliable message.
#![warn(missing_docs, unreachable_pub)]

mod api;
pub mod content;
pub mod netplay;
mod session;
pub mod swarm;

pub use api::{Api, Events};
pub use session::{Client, ClientConfig, Event, NodeQuality, PeerStatus, Session};

/// What can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP request failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The node answered with an error.
    #[error("node refused ({status} {code}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Explanation.
        message: String,
    },
    /// The ticket or node address from the API is unusable.
    #[error("bad ticket: {0}")]
    Ticket(String),
    /// The QUIC connection failed.
    #[error("connection: {0}")]
    Connection(String),
    /// The node refused admission.
    #[error("admission rejected ({}): {detail}", code.as_str())]
    Rejected {
        /// Why.
        code: volley_proto::msg::RejectCode,
        /// The node's explanation.
        detail: String,
    },
    /// Endpoint setup failed.
    #[error(transparent)]
    Endpoint(#[from] volley_net::endpoint::EndpointError),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] volley_net::tls::TlsError),
    /// A send was refused.
    #[error(transparent)]
    Link(#[from] volley_net::link::LinkError),
    /// No such peer in the room.
    #[error("no peer {0} in this room")]
    UnknownPeer(u64),
    /// The payload is too large for the unreliable channel.
    #[error("unreliable payload of {0} bytes exceeds {max}", max = volley_proto::msg::MAX_UNRELIABLE_PAYLOAD_BYTES)]
    TooLarge(usize),
    /// The session is over.
    #[error("session closed")]
    Closed,
    /// Content (a manifest, a chunk, the install directory) was refused or failed.
    #[error(transparent)]
    Content(#[from] volley_content::ContentError),
}
