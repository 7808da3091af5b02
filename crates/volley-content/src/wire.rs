//! The peer protocol's messages.
//!
//! Two peers of a swarm talk over one QUIC connection. The side that connects opens the
//! control stream (the first bidirectional stream); both sides send on it, each message
//! framed as `[length u32 BE][type u8][payload]`:
//!
//! | type | message | payload |
//! |---|---|---|
//! | 1 | `Hello` | magic `VLYP`, protocol 1, peer id u64, manifest id (BLAKE3 of the signed manifest) 32 bytes, chunk count u32 |
//! | 2 | `Bitfield` | one bit per chunk of the manifest, chunk 0 in the high bit of byte 0 |
//! | 3 | `Have` | chunk index u32 |
//! | 4 / 5 | `Choke` / `Unchoke` | none: requests are refused / served |
//! | 6 / 7 | `Interested` / `NotInterested` | none: the sender wants chunks the receiver has |
//! | 8 | `Claim` | chunk index u32: the sender is fetching it from the origin (others leave it) |
//!
//! Every chunk request is its own bidirectional stream: the requester sends the chunk index
//! (u32 BE) and finishes; the server answers one status byte ([`Status`]) and, on `Ok`, the
//! chunk's bytes up to the end of the stream. QUIC's stream limit caps the requests one peer
//! may have open at a time.

/// Protocol magic in `Hello`.
pub const MAGIC: [u8; 4] = *b"VLYP";
/// Protocol version in `Hello`.
pub const PROTOCOL: u8 = 1;
/// Largest control frame (a bitfield for 8M chunks).
pub const FRAME_MAX: usize = 1 << 20;

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message ended early.
    #[error("message truncated")]
    Truncated,
    /// Bytes after the message's end.
    #[error("trailing bytes after the message")]
    Trailing,
    /// Unknown message type.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// Not the Volley peer protocol (or another version of it).
    #[error("not Volley peer protocol 1")]
    BadMagic,
    /// A frame longer than [`FRAME_MAX`].
    #[error("frame of {0} bytes is over the limit")]
    TooLong(usize),
}

/// The handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The sender's random id for this swarm (detects self-connections and duplicates).
    pub peer_id: u64,
    /// BLAKE3 of the signed manifest both serve.
    pub manifest_id: [u8; 32],
    /// Distinct chunks in the manifest.
    pub chunks: u32,
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// The handshake, first on the control stream in both directions.
    Hello(Hello),
    /// Which chunks the sender holds (replaces what was known).
    Bitfield(Vec<u8>),
    /// The sender now holds this chunk.
    Have(u32),
    /// The sender refuses the receiver's requests until `Unchoke`.
    Choke,
    /// The sender serves the receiver's requests.
    Unchoke,
    /// The sender wants chunks the receiver holds.
    Interested,
    /// The sender wants nothing the receiver holds.
    NotInterested,
    /// The sender is fetching this chunk from the origin.
    Claim(u32),
}

/// The answer to a chunk request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The chunk's bytes follow.
    Ok = 0,
    /// The requester is choked.
    Choked = 1,
    /// The server does not hold the chunk (or no longer can read it).
    DontHave = 2,
    /// The index is outside the manifest.
    BadIndex = 3,
}

impl Status {
    /// The status of a byte.
    pub fn from_byte(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::Choked,
            2 => Status::DontHave,
            3 => Status::BadIndex,
            _ => return None,
        })
    }
}

fn u32_at(b: &[u8]) -> Result<u32, WireError> {
    match b {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ if b.len() < 4 => Err(WireError::Truncated),
        _ => Err(WireError::Trailing),
    }
}

fn empty(b: &[u8]) -> Result<(), WireError> {
    if b.is_empty() {
        Ok(())
    } else {
        Err(WireError::Trailing)
    }
}

impl Msg {
    /// The message body (type and payload, without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        match self {
            Msg::Hello(h) => {
                out.push(1);
                out.extend_from_slice(&MAGIC);
                out.push(PROTOCOL);
                out.extend_from_slice(&h.peer_id.to_be_bytes());
                out.extend_from_slice(&h.manifest_id);
                out.extend_from_slice(&h.chunks.to_be_bytes());
            }
            Msg::Bitfield(bits) => {
                out.push(2);
                out.extend_from_slice(bits);
            }
            Msg::Have(i) => {
                out.push(3);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Msg::Choke => out.push(4),
            Msg::Unchoke => out.push(5),
            Msg::Interested => out.push(6),
            Msg::NotInterested => out.push(7),
            Msg::Claim(i) => {
                out.push(8);
                out.extend_from_slice(&i.to_be_bytes());
            }
        }
        out
    }

    /// The message framed for the control stream.
    pub fn frame(&self) -> Vec<u8> {
        let body = self.encode();
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses a message body.
    pub fn decode(b: &[u8]) -> Result<Msg, WireError> {
        let (&t, rest) = b.split_first().ok_or(WireError::Truncated)?;
        Ok(match t {
            1 => {
                if rest.len() < 49 {
                    return Err(WireError::Truncated);
                }
                if rest.len() > 49 {
                    return Err(WireError::Trailing);
                }
                if rest[..4] != MAGIC || rest[4] != PROTOCOL {
                    return Err(WireError::BadMagic);
                }
                let mut id = [0u8; 8];
                id.copy_from_slice(&rest[5..13]);
                let mut manifest_id = [0u8; 32];
                manifest_id.copy_from_slice(&rest[13..45]);
                Msg::Hello(Hello {
                    peer_id: u64::from_be_bytes(id),
                    manifest_id,
                    chunks: u32_at(&rest[45..49])?,
                })
            }
            2 => Msg::Bitfield(rest.to_vec()),
            3 => Msg::Have(u32_at(rest)?),
            4 => empty(rest).map(|()| Msg::Choke)?,
            5 => empty(rest).map(|()| Msg::Unchoke)?,
            6 => empty(rest).map(|()| Msg::Interested)?,
            7 => empty(rest).map(|()| Msg::NotInterested)?,
            8 => Msg::Claim(u32_at(rest)?),
            other => return Err(WireError::UnknownType(other)),
        })
    }

    /// The body length a frame's prefix announces, if within [`FRAME_MAX`].
    pub fn frame_len(prefix: [u8; 4]) -> Result<usize, WireError> {
        let n = u32::from_be_bytes(prefix) as usize;
        if n > FRAME_MAX {
            Err(WireError::TooLong(n))
        } else {
            Ok(n)
        }
    }
}

/// A set of chunk indexes of one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bits {
    len: usize,
    words: Vec<u64>,
    ones: usize,
}

impl Bits {
    /// `len` indexes, none set.
    pub fn new(len: usize) -> Bits {
        Bits {
            len,
            words: vec![0; len.div_ceil(64)],
            ones: 0,
        }
    }

    /// `len` indexes, all set.
    pub fn full(len: usize) -> Bits {
        let mut b = Bits::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Indexes covered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No indexes covered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Indexes set.
    pub fn count(&self) -> usize {
        self.ones
    }

    /// Every index set.
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether `i` is set (false outside the range).
    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// The 64 indexes from `64 * k` as bits (index `64 * k + j` in bit `j`); 0 past the end.
    pub fn word(&self, k: usize) -> u64 {
        self.words.get(k).copied().unwrap_or(0)
    }

    /// The indexes set, in order.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(k, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let j = w.trailing_zeros() as usize;
                    w &= w - 1;
                    k * 64 + j
                })
            })
        })
    }

    /// Sets `i`; returns whether it was newly set (false outside the range).
    pub fn set(&mut self, i: usize) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.words[i / 64] |= 1 << (i % 64);
        self.ones += 1;
        true
    }

    /// The wire form (chunk 0 in the high bit of byte 0).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len.div_ceil(8)];
        for (i, byte) in out.iter_mut().enumerate() {
            for bit in 0..8 {
                if self.get(i * 8 + bit) {
                    *byte |= 0x80 >> bit;
                }
            }
        }
        out
    }

    /// Parses the wire form for `len` indexes; refuses a wrong length or set padding bits.
    pub fn from_bytes(bytes: &[u8], len: usize) -> Result<Bits, WireError> {
        if bytes.len() != len.div_ceil(8) {
            return Err(if bytes.len() < len.div_ceil(8) {
                WireError::Truncated
            } else {
                WireError::Trailing
            });
        }
        let mut b = Bits::new(len);
        for (i, byte) in bytes.iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    if i * 8 + bit >= len {
                        return Err(WireError::Trailing);
                    }
                    b.set(i * 8 + bit);
                }
            }
        }
        Ok(b)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let all = [
            Msg::Hello(Hello {
                peer_id: 7,
                manifest_id: [9; 32],
                chunks: 8192,
            }),
            Msg::Bitfield(vec![0xA0, 0x01]),
            Msg::Have(77),
            Msg::Choke,
            Msg::Unchoke,
            Msg::Interested,
            Msg::NotInterested,
            Msg::Claim(3),
        ];
        for m in &all {
            assert_eq!(&Msg::decode(&m.encode()).unwrap(), m);
            let f = m.frame();
            let n = Msg::frame_len([f[0], f[1], f[2], f[3]]).unwrap();
            assert_eq!(n, f.len() - 4);
        }
        assert_eq!(Msg::decode(&[]), Err(WireError::Truncated));
        assert_eq!(Msg::decode(&[3, 0, 0]), Err(WireError::Truncated));
        assert_eq!(Msg::decode(&[4, 0]), Err(WireError::Trailing));
        assert_eq!(Msg::decode(&[99]), Err(WireError::UnknownType(99)));
        let mut h = all[0].encode();
        h[1] = b'X';
        assert_eq!(Msg::decode(&h), Err(WireError::BadMagic));
        assert_eq!(
            Msg::frame_len((FRAME_MAX as u32 + 1).to_be_bytes()),
            Err(WireError::TooLong(FRAME_MAX + 1))
        );
    }

    #[test]
    fn bitfields_round_trip_and_check_their_length() {
        let mut b = Bits::new(13);
        for i in [0, 5, 12] {
            assert!(b.set(i));
        }
        assert!(!b.set(5));
        assert!(!b.set(13));
        assert_eq!(b.count(), 3);
        let bytes = b.to_bytes();
        assert_eq!(bytes, vec![0b1000_0100, 0b0000_1000]);
        assert_eq!(Bits::from_bytes(&bytes, 13).unwrap(), b);
        assert_eq!(
            Bits::from_bytes(&[0, 0x04], 13),
            Err(WireError::Trailing),
            "a padding bit set"
        );
        assert_eq!(Bits::from_bytes(&[0], 13), Err(WireError::Truncated));
        assert!(Bits::full(70).is_full());
    }
}
