//! Volley wire protocol: the bytes that cross the network, and nothing that moves them.
//!
//! This crate is sans-IO: it knows no sockets, clocks or random number generators. Time and
//! randomness are passed in as arguments, so the same code runs under tokio, in a seeded
//! simulation and in a fuzzer. The types that matter most:
//!
//! - [`msg::Up`] and [`msg::Down`]: control messages between a player and its node, framed on the
//!   node connection's reliable stream.
//! - [`msg::PeerFrame`] and [`msg::PeerDatagram`]: what two players say to each other, on a direct
//!   path or relayed through the node.
//! - [`ticket::Ticket`]: the sealed connect ticket (modeled on netcode.io connect tokens) that
//!   admits a player to a room.
//! - [`codec::Reader`] / [`codec::Writer`]: bounded, panic-free encoding primitives.
//! - [`api`]: the JSON bodies of the node's HTTP API, shared by server and SDK.
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod api;
pub mod codec;
pub mod msg;
pub mod ticket;

pub use codec::DecodeError;

/// Version of the wire protocol. Every control frame and ticket starts with it, so a node can
/// refuse an incompatible client with a clear error instead of misreading its bytes.
pub const PROTOCOL_VERSION: u8 = 1;

/// A player's identity inside one node. Assigned by the node at login.
pub type PlayerId = u64;

/// A room's identity inside one node.
pub type RoomId = u64;

/// SHA-256 of a QUIC certificate's DER encoding. Tickets bind a player to the certificate it
/// presents, and peers authenticate each other by the fingerprints the node vouched for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(der);
        let mut out = [0u8; 32];
        out.copy_from_slice(&digest);
        Fingerprint(out)
    }

    /// Lower-case hex, the form used in JSON and logs.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, DecodeError> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(DecodeError::Invalid("fingerprint must be 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair.first().copied())?;
            let lo = hex_val(pair.get(1).copied())?;
            if let Some(slot) = out.get_mut(i) {
                *slot = (hi << 4) | lo;
            }
        }
        Ok(Fingerprint(out))
    }
}

fn hex_val(c: Option<u8>) -> Result<u8, DecodeError> {
    match c {
        Some(c @ b'0'..=b'9') => Ok(c - b'0'),
        Some(c @ b'a'..=b'f') => Ok(c - b'a' + 10),
        Some(c @ b'A'..=b'F') => Ok(c - b'A' + 10),
        _ => Err(DecodeError::Invalid("non-hex digit")),
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = self.to_hex();
        write!(f, "Fingerprint({})", hex.get(..16).unwrap_or(&hex))
    }
}

/// Hex encoding for byte strings (tickets in JSON).
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Decodes hex produced by [`to_hex`]; `max_len` bounds the decoded size.
pub fn from_hex(s: &str, max_len: usize) -> Result<Vec<u8>, DecodeError> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(DecodeError::Invalid("odd number of hex digits"));
    }
    if bytes.len() / 2 > max_len {
        return Err(DecodeError::TooLong {
            what: "hex string",
            len: bytes.len() / 2,
            max: max_len,
        });
    }
    let mut out = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        let hi = hex_val(pair.first().copied())?;
        let lo = hex_val(pair.get(1).copied())?;
        out.push((hi << 4) | lo);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_hex_round_trip() {
        let fp = Fingerprint::of_der(b"certificate bytes");
        let hex = fp.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(Fingerprint::from_hex(&hex).ok(), Some(fp));
        assert!(Fingerprint::from_hex("zz").is_err());
        assert!(Fingerprint::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn hex_bounds() {
        assert_eq!(from_hex("00ff", 2).ok(), Some(vec![0, 255]));
        assert!(from_hex("00ff", 1).is_err());
        assert!(from_hex("0", 4).is_err());
    }
}
