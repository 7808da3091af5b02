//! Bounded, panic-free encoding primitives.
//!
//! Every length read from the wire is checked against the remaining input and against a
//! named maximum before anything is allocated, so a hostile length field costs nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why bytes could not be decoded. Every decoder in this crate returns this instead of
/// panicking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a field.
    #[error("truncated input")]
    Truncated,
    /// A length field exceeds the limit for that field.
    #[error("{what} too long: {len} > {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// The length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An enum tag that this version does not know.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// The enum.
        what: &'static str,
        /// The tag found.
        tag: u64,
    },
    /// The frame was written by a different protocol version.
    #[error("protocol version {found}, expected {expected}")]
    Version {
        /// Version in the frame.
        found: u8,
        /// Version this build speaks.
        expected: u8,
    },
    /// Bytes left over after a complete message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A field holds a value that cannot be valid.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// Reads fields from a byte slice, front to back.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes the rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    /// Big-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Big-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Big-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// QUIC-style variable-length integer (1, 2, 4 or 8 bytes, up to 2^62 - 1).
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let first = self.u8()?;
        let len = 1usize << (first >> 6);
        let mut value = u64::from(first & 0x3f);
        for _ in 1..len {
            value = (value << 8) | u64::from(self.u8()?);
        }
        Ok(value)
    }

    /// A varint length, checked against `max` and the remaining input, then that many bytes.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.len(what, max)?;
        self.take(len)
    }

    /// A varint-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes(what, max)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid("string is not UTF-8"))
    }

    /// A varint count or length, checked against `max`.
    pub fn len(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let raw = self.varint()?;
        let len = usize::try_from(raw).unwrap_or(usize::MAX);
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        Ok(len)
    }

    /// A socket address: tag 4 or 6, the address bytes, the port.
    pub fn socket_addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            7 => {
                // IPv6 with flow info and scope id (link-local addresses need the scope).
                let ip = Ipv6Addr::from(self.array::<16>()?);
                let port = self.u16()?;
                let flowinfo = self.u32()?;
                let scope_id = self.u32()?;
                return Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                    ip, port, flowinfo, scope_id,
                )));
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "address family",
                    tag: u64::from(tag),
                })
            }
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
}

/// Appends fields to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }

    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Raw bytes, no length prefix.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// Big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// Big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// QUIC-style varint. Values above 2^62 - 1 are a programmer error and saturate.
    pub fn varint(&mut self, v: u64) -> &mut Self {
        let v = v.min((1 << 62) - 1);
        if v < (1 << 6) {
            self.u8(v as u8)
        } else if v < (1 << 14) {
            self.u16(0x4000 | v as u16)
        } else if v < (1 << 30) {
            self.u32(0x8000_0000 | v as u32)
        } else {
            self.u64(0xc000_0000_0000_0000 | v)
        }
    }

    /// Varint length then bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.varint(bytes.len() as u64);
        self.raw(bytes)
    }

    /// Varint length then UTF-8 bytes.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// A socket address as [`Reader::socket_addr`] reads it.
    pub fn socket_addr(&mut self, addr: &SocketAddr) -> &mut Self {
        match addr {
            SocketAddr::V4(a) => self.u8(4).raw(&a.ip().octets()).u16(a.port()),
            SocketAddr::V6(a) if a.flowinfo() == 0 && a.scope_id() == 0 => {
                self.u8(6).raw(&a.ip().octets()).u16(a.port())
            }
            SocketAddr::V6(a) => self
                .u8(7)
                .raw(&a.ip().octets())
                .u16(a.port())
                .u32(a.flowinfo())
                .u32(a.scope_id()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trip(v in 0u64..(1 << 62)) {
            let mut w = Writer::new();
            w.varint(v);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.varint().ok(), Some(v));
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let _ = r.varint();
            let _ = r.bytes("x", 16);
            let _ = r.socket_addr();
            let _ = r.string("s", 8);
        }
    }

    #[test]
    fn hostile_length_is_refused_before_allocation() {
        let mut w = Writer::new();
        w.varint(1 << 40);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert!(matches!(
            r.bytes("payload", 1024),
            Err(DecodeError::TooLong { .. })
        ));
        let mut w = Writer::new();
        w.varint(100).raw(&[1, 2, 3]);
        let bytes = w.into_bytes();
        assert_eq!(
            Reader::new(&bytes).bytes("payload", 1024),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn socket_addr_round_trip() {
        for addr in [
            "127.0.0.1:4433",
            "[::1]:9",
            "203.0.113.7:65535",
            "[fe80::1%2]:4433",
        ] {
            let addr: SocketAddr = addr.parse().unwrap_or_else(|_| unreachable!());
            let mut w = Writer::new();
            w.socket_addr(&addr);
            let bytes = w.into_bytes();
            assert_eq!(Reader::new(&bytes).socket_addr(), Ok(addr));
        }
    }
}
