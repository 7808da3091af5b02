//! Connect tickets, modeled on netcode.io connect tokens.
//!
//! The node that mints a ticket seals it with its own key (XChaCha20-Poly1305), so only that node
//! can open it and nobody can alter it unseen. A ticket binds one player to one room on one node
//! address, and to the certificate the player will present in the QUIC handshake. It is
//! short-lived and the node accepts it from one address only (see the server's replay guard).
//!
//! Layout: `[version u8][expires_at_ms u64][nonce 24][ciphertext || tag 16]`. The version and
//! expiry are in the clear so a node can refuse stale tickets before any crypto work, and they are
//! the AEAD's associated data so changing them breaks the seal.

use std::net::SocketAddr;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::codec::{DecodeError, Reader, Writer};
use crate::{Fingerprint, PlayerId, RoomId, PROTOCOL_VERSION};

/// Bytes of the clear header: version and expiry.
const HEADER_BYTES: usize = 9;
/// Nonce bytes (XChaCha20 uses 192-bit nonces, so random nonces never collide in practice).
pub const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;

/// The claims a ticket carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Who may connect.
    pub player_id: PlayerId,
    /// The room they may join.
    pub room_id: RoomId,
    /// The node address the ticket is valid at.
    pub node_addr: SocketAddr,
    /// The certificate the player must present.
    pub fingerprint: Fingerprint,
    /// Unix time in milliseconds after which the ticket is void.
    pub expires_at_ms: u64,
}

/// A node's symmetric ticket key.
#[derive(Clone)]
pub struct TicketKey([u8; 32]);

impl TicketKey {
    /// A key from 32 secret bytes (generate them with a CSPRNG and keep them in the data dir).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TicketKey(bytes)
    }

    /// The key bytes, for persisting.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// The bytes are not a ticket.
    #[error("malformed ticket: {0}")]
    Malformed(#[from] DecodeError),
    /// Minted for another protocol version.
    #[error("ticket version {0} is not supported")]
    Version(u8),
    /// Its lifetime is over.
    #[error("ticket expired {ago_ms} ms ago")]
    Expired {
        /// How long ago.
        ago_ms: u64,
    },
    /// Not sealed by this key, or altered.
    #[error("ticket seal does not verify (minted by another node or altered)")]
    Forged,
}

/// An opened ticket and the nonce that identifies it for replay protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The claims.
    pub ticket: Ticket,
    /// The ticket's unique nonce.
    pub nonce: [u8; NONCE_BYTES],
}

impl Ticket {
    fn encode_claims(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(80);
        w.u64(self.player_id)
            .u64(self.room_id)
            .socket_addr(&self.node_addr)
            .raw(&self.fingerprint.0);
        w.into_bytes()
    }

    fn decode_claims(bytes: &[u8], expires_at_ms: u64) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let t = Ticket {
            player_id: r.u64()?,
            room_id: r.u64()?,
            node_addr: r.socket_addr()?,
            fingerprint: Fingerprint(r.array()?),
            expires_at_ms,
        };
        r.finish()?;
        Ok(t)
    }

    /// Seals the ticket. `nonce` must be fresh random bytes for every ticket.
    pub fn seal(&self, key: &TicketKey, nonce: [u8; NONCE_BYTES]) -> Vec<u8> {
        let mut header = Writer::with_capacity(HEADER_BYTES);
        header.u8(PROTOCOL_VERSION).u64(self.expires_at_ms);
        let header = header.into_bytes();
        let claims = self.encode_claims();
        // Encryption with a valid key and nonce length cannot fail; an empty ciphertext would
        // simply fail to open, never admit anyone.
        let sealed = key
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &claims,
                    aad: &header,
                },
            )
            .unwrap_or_default();
        let mut out = header;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a sealed ticket, checking version, expiry (against `now_ms`, Unix milliseconds)
    /// and seal, in that order: the cheap checks come before the crypto work.
    pub fn open(bytes: &[u8], key: &TicketKey, now_ms: u64) -> Result<Opened, TicketError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(TicketError::Version(version));
        }
        let expires_at_ms = r.u64()?;
        if now_ms >= expires_at_ms {
            return Err(TicketError::Expired {
                ago_ms: now_ms - expires_at_ms,
            });
        }
        let nonce: [u8; NONCE_BYTES] = r.array()?;
        let sealed = r.rest();
        if sealed.len() < TAG_BYTES {
            return Err(TicketError::Malformed(DecodeError::Truncated));
        }
        let header = bytes.get(..HEADER_BYTES).ok_or(DecodeError::Truncated)?;
        let claims = key
            .cipher()
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .map_err(|_| TicketError::Forged)?;
        let ticket = Ticket::decode_claims(&claims, expires_at_ms)?;
        Ok(Opened { ticket, nonce })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample() -> Ticket {
        Ticket {
            player_id: 42,
            room_id: 7,
            node_addr: "127.0.0.1:4433".parse().unwrap_or_else(|_| unreachable!()),
            fingerprint: Fingerprint([3; 32]),
            expires_at_ms: 10_000,
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let key = TicketKey::from_bytes([1; 32]);
        let sealed = sample().seal(&key, [9; NONCE_BYTES]);
        let opened = Ticket::open(&sealed, &key, 5_000);
        assert_eq!(
            opened,
            Ok(Opened {
                ticket: sample(),
                nonce: [9; NONCE_BYTES]
            })
        );
    }

    #[test]
    fn expired_foreign_and_altered_tickets_are_refused() {
        let key = TicketKey::from_bytes([1; 32]);
        let sealed = sample().seal(&key, [9; NONCE_BYTES]);
        assert!(matches!(
            Ticket::open(&sealed, &key, 10_000),
            Err(TicketError::Expired { .. })
        ));
        let other = TicketKey::from_bytes([2; 32]);
        assert_eq!(Ticket::open(&sealed, &other, 0), Err(TicketError::Forged));
        // Extending the clear expiry breaks the seal.
        let mut stretched = sealed.clone();
        stretched[1..9].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(Ticket::open(&stretched, &key, 0), Err(TicketError::Forged));
        for i in HEADER_BYTES..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x80;
            assert_eq!(
                Ticket::open(&bad, &key, 0),
                Err(TicketError::Forged),
                "byte {i}"
            );
        }
        for n in 0..sealed.len() {
            assert!(Ticket::open(&sealed[..n], &key, 0).is_err());
        }
    }
}
