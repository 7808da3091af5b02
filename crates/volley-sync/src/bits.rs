//! Bounded, panic-free bit packing: the primitive under the snapshot codec.
//!
//! Bits are packed least-significant first: bit 0 of the stream is bit 0 of byte 0. A
//! [`BitWriter`] refuses to grow past the byte limit it was built with; a [`BitReader`] returns
//! [`BitsError::Exhausted`] instead of reading past its input. Neither panics on any input,
//! which is what lets the snapshot decoder face raw network bytes.
//!
//! Besides fixed-width fields there are two encodings for small numbers:
//!
//! - **zigzag** maps signed to unsigned so small magnitudes of either sign stay small
//!   (0, -1, 1, -2, 2... become 0, 1, 2, 3, 4...);
//! - **tiered** variable width: the writer picks the first width in a table that holds the value
//!   and writes the table index in unary first (`k` one bits, then a zero bit unless `k` is the
//!   last index). With the table `[3, 7, 32]`, 5 costs 1 + 3 bits, 100 costs 2 + 7 and a million
//!   costs 2 + 32. Both sides must use the same table.
#![deny(clippy::indexing_slicing)]

/// Hard ceiling on a writer's size: no bit stream in Volley is larger than this. Snapshots
/// normally ride in one QUIC datagram (~1.2 KB); this bound only exists so that a bad
/// `max_bytes` cannot ask for an unbounded buffer.
pub const BITS_MAX_BYTES: usize = 64 * 1024;

/// Most entries a tier table may have; the unary prefix is at most this long minus one.
pub const TIERS_MAX: usize = 8;

/// Why bits could not be written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BitsError {
    /// The writer would grow past its byte limit.
    #[error("bit stream full: writing {wanted_bits} more bits would exceed {max_bytes} bytes")]
    Full {
        /// Bits the failed write needed.
        wanted_bits: u32,
        /// The writer's limit.
        max_bytes: usize,
    },
    /// The reader reached the end of its input in the middle of a field.
    #[error("bit stream truncated: wanted {wanted_bits} bits, {remaining_bits} left")]
    Exhausted {
        /// Bits the failed read needed.
        wanted_bits: u32,
        /// Bits that were left.
        remaining_bits: usize,
    },
    /// A field width above 64 bits was asked for (a programming error in the caller).
    #[error("invalid field width {bits} (max 64)")]
    InvalidWidth {
        /// The width asked for.
        bits: u32,
    },
    /// A value does not fit the width (or the widest tier) it was written with.
    #[error("value {value} does not fit in {bits} bits")]
    ValueTooWide {
        /// The value.
        value: u64,
        /// The widest width available.
        bits: u32,
    },
    /// A tier table is empty, too long or has a width above 64.
    #[error("invalid tier table")]
    InvalidTiers,
}

/// Writes bit fields into a growing byte buffer with a fixed byte limit.
///
/// ```
/// use volley_sync::bits::{BitReader, BitWriter};
/// let mut w = BitWriter::with_max_bytes(16);
/// w.write_bits(5, 3)?;
/// w.write_bool(true)?;
/// w.write_zigzag(-3, 4)?;
/// let bytes = w.finish();
/// let mut r = BitReader::new(&bytes);
/// assert_eq!(r.read_bits(3)?, 5);
/// assert!(r.read_bool()?);
/// assert_eq!(r.read_zigzag(4)?, -3);
/// # Ok::<(), volley_sync::bits::BitsError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte of `bytes` (0 means the last byte is full or there is none).
    partial_bits: u32,
    len_bits: usize,
    max_bytes: usize,
}

impl BitWriter {
    /// A writer that holds at most `max_bytes` bytes (capped at [`BITS_MAX_BYTES`]).
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        let max_bytes = max_bytes.min(BITS_MAX_BYTES);
        BitWriter {
            bytes: Vec::with_capacity(max_bytes.min(1500)),
            partial_bits: 0,
            len_bits: 0,
            max_bytes,
        }
    }

    /// Bits written so far.
    pub fn len_bits(&self) -> usize {
        self.len_bits
    }

    /// Bytes the stream occupies so far (the last one may be partly used).
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The byte limit.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Writes the low `n` bits of `value` (`n` ≤ 64). Fails without writing anything when
    /// `value` has bits above `n` or the stream would outgrow its limit.
    pub fn write_bits(&mut self, value: u64, n: u32) -> Result<(), BitsError> {
        if n > 64 {
            return Err(BitsError::InvalidWidth { bits: n });
        }
        if n < 64 && value >> n != 0 {
            return Err(BitsError::ValueTooWide { value, bits: n });
        }
        let after_bits = self.len_bits + n as usize;
        if after_bits.div_ceil(8) > self.max_bytes {
            return Err(BitsError::Full {
                wanted_bits: n,
                max_bytes: self.max_bytes,
            });
        }
        let mut value = value;
        let mut left = n;
        while left > 0 {
            if self.partial_bits == 0 {
                self.bytes.push(0);
            }
            let room = 8 - self.partial_bits;
            let take = room.min(left);
            let chunk = (value & ((1u64 << take) - 1)) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= chunk << self.partial_bits;
            }
            self.partial_bits = (self.partial_bits + take) % 8;
            value = value.checked_shr(take).unwrap_or(0);
            left -= take;
        }
        self.len_bits = after_bits;
        Ok(())
    }

    /// Writes one bit.
    pub fn write_bool(&mut self, bit: bool) -> Result<(), BitsError> {
        self.write_bits(u64::from(bit), 1)
    }

    /// Writes a signed value zigzag-encoded in `n` bits.
    pub fn write_zigzag(&mut self, value: i64, n: u32) -> Result<(), BitsError> {
        self.write_bits(zigzag(value), n)
    }

    /// Writes `value` in the first width of `tiers` that holds it, preceded by the tier index in
    /// unary. See the module docs.
    pub fn write_tiered(&mut self, value: u64, tiers: &[u32]) -> Result<(), BitsError> {
        let (index, width) = pick_tier(value, tiers)?;
        let (prefix, prefix_bits) = tier_prefix(index, tiers.len());
        if (self.len_bits + (prefix_bits + width) as usize).div_ceil(8) > self.max_bytes {
            return Err(BitsError::Full {
                wanted_bits: prefix_bits + width,
                max_bytes: self.max_bytes,
            });
        }
        self.write_bits(prefix, prefix_bits)?;
        self.write_bits(value, width)
    }

    /// Writes a signed value zigzag-encoded with [`BitWriter::write_tiered`].
    pub fn write_tiered_signed(&mut self, value: i64, tiers: &[u32]) -> Result<(), BitsError> {
        self.write_tiered(zigzag(value), tiers)
    }

    /// The bytes written; unused bits of the last byte are zero.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads bit fields from a byte slice, front to back, never past its end.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos_bits: usize,
}

impl<'a> BitReader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos_bits: 0 }
    }

    /// Bits not yet read.
    pub fn remaining_bits(&self) -> usize {
        (self.bytes.len() * 8).saturating_sub(self.pos_bits)
    }

    /// Bits read so far.
    pub fn pos_bits(&self) -> usize {
        self.pos_bits
    }

    /// Reads `n` bits (`n` ≤ 64) as an unsigned value.
    pub fn read_bits(&mut self, n: u32) -> Result<u64, BitsError> {
        if n > 64 {
            return Err(BitsError::InvalidWidth { bits: n });
        }
        let remaining_bits = self.remaining_bits();
        if n as usize > remaining_bits {
            return Err(BitsError::Exhausted {
                wanted_bits: n,
                remaining_bits,
            });
        }
        let mut value = 0u64;
        let mut got = 0u32;
        while got < n {
            let byte = self
                .bytes
                .get(self.pos_bits / 8)
                .copied()
                .ok_or(BitsError::Exhausted {
                    wanted_bits: n,
                    remaining_bits,
                })?;
            let offset = (self.pos_bits % 8) as u32;
            let take = (8 - offset).min(n - got);
            let chunk = (u64::from(byte) >> offset) & ((1u64 << take) - 1);
            value |= chunk << got;
            got += take;
            self.pos_bits += take as usize;
        }
        Ok(value)
    }

    /// Reads one bit.
    pub fn read_bool(&mut self) -> Result<bool, BitsError> {
        Ok(self.read_bits(1)? == 1)
    }

    /// Reads a zigzag-encoded signed value of `n` bits.
    pub fn read_zigzag(&mut self, n: u32) -> Result<i64, BitsError> {
        Ok(unzigzag(self.read_bits(n)?))
    }

    /// Reads a value written by [`BitWriter::write_tiered`] with the same table.
    pub fn read_tiered(&mut self, tiers: &[u32]) -> Result<u64, BitsError> {
        check_tiers(tiers)?;
        let last = tiers.len() - 1;
        let mut index = 0;
        while index < last && self.read_bool()? {
            index += 1;
        }
        let width = tiers.get(index).copied().ok_or(BitsError::InvalidTiers)?;
        self.read_bits(width)
    }

    /// Reads a value written by [`BitWriter::write_tiered_signed`] with the same table.
    pub fn read_tiered_signed(&mut self, tiers: &[u32]) -> Result<i64, BitsError> {
        Ok(unzigzag(self.read_tiered(tiers)?))
    }
}

/// Maps a signed value to an unsigned one with small magnitudes first.
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Bits [`BitWriter::write_tiered`] would spend on `value` with `tiers`, or `None` when it does
/// not fit. Lets the snapshot encoder compare encodings before writing either.
pub fn tiered_cost_bits(value: u64, tiers: &[u32]) -> Option<u32> {
    let (index, width) = pick_tier(value, tiers).ok()?;
    Some(tier_prefix(index, tiers.len()).1 + width)
}

fn check_tiers(tiers: &[u32]) -> Result<(), BitsError> {
    if tiers.is_empty() || tiers.len() > TIERS_MAX || tiers.iter().any(|&w| w > 64) {
        return Err(BitsError::InvalidTiers);
    }
    Ok(())
}

fn pick_tier(value: u64, tiers: &[u32]) -> Result<(usize, u32), BitsError> {
    check_tiers(tiers)?;
    tiers
        .iter()
        .copied()
        .enumerate()
        .find(|&(_, w)| w == 64 || value >> w == 0)
        .ok_or(BitsError::ValueTooWide {
            value,
            bits: tiers.iter().copied().max().unwrap_or(0),
        })
}

/// The unary prefix for tier `index` of `count`: `index` ones, then a zero unless it is the
/// last tier (the reader stops there anyway).
fn tier_prefix(index: usize, count: usize) -> (u64, u32) {
    let ones = (1u64 << index) - 1;
    if index + 1 == count {
        (ones, index as u32)
    } else {
        (ones, index as u32 + 1)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_round_trip_across_byte_boundaries() {
        let mut w = BitWriter::with_max_bytes(64);
        w.write_bits(0b101, 3).unwrap();
        w.write_bits(0xdead_beef, 32).unwrap();
        w.write_bits(u64::MAX, 64).unwrap();
        w.write_bits(0, 0).unwrap();
        w.write_bool(true).unwrap();
        w.write_zigzag(-17, 6).unwrap();
        w.write_tiered(1_000_000, &[3, 7, 32]).unwrap();
        w.write_tiered_signed(-2, &[0, 3]).unwrap();
        assert_eq!(w.len_bits(), 3 + 32 + 64 + 1 + 6 + (2 + 32) + (1 + 3));
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read_bits(3).unwrap(), 0b101);
        assert_eq!(r.read_bits(32).unwrap(), 0xdead_beef);
        assert_eq!(r.read_bits(64).unwrap(), u64::MAX);
        assert_eq!(r.read_bits(0).unwrap(), 0);
        assert!(r.read_bool().unwrap());
        assert_eq!(r.read_zigzag(6).unwrap(), -17);
        assert_eq!(r.read_tiered(&[3, 7, 32]).unwrap(), 1_000_000);
        assert_eq!(r.read_tiered_signed(&[0, 3]).unwrap(), -2);
        assert!(r.remaining_bits() < 8);
    }

    #[test]
    fn tiered_costs_match_the_module_docs() {
        assert_eq!(tiered_cost_bits(5, &[3, 7, 32]), Some(4));
        assert_eq!(tiered_cost_bits(100, &[3, 7, 32]), Some(9));
        assert_eq!(tiered_cost_bits(1_000_000, &[3, 7, 32]), Some(34));
        assert_eq!(tiered_cost_bits(0, &[0, 4]), Some(1));
        assert_eq!(tiered_cost_bits(1 << 40, &[3, 32]), None);
    }

    #[test]
    fn writer_refuses_to_outgrow_its_limit_and_stays_usable() {
        let mut w = BitWriter::with_max_bytes(2);
        w.write_bits(0x3ff, 10).unwrap();
        assert!(matches!(w.write_bits(0, 7), Err(BitsError::Full { .. })));
        assert_eq!(w.len_bits(), 10);
        w.write_bits(0x3f, 6).unwrap();
        assert!(matches!(w.write_bool(true), Err(BitsError::Full { .. })));
        assert!(matches!(
            w.write_tiered(1000, &[2, 12]),
            Err(BitsError::Full { .. })
        ));
        assert_eq!(w.finish(), vec![0xff, 0xff]);
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let mut w = BitWriter::with_max_bytes(usize::MAX);
        assert_eq!(w.max_bytes(), BITS_MAX_BYTES);
        assert_eq!(
            w.write_bits(0, 65),
            Err(BitsError::InvalidWidth { bits: 65 })
        );
        assert!(matches!(
            w.write_bits(8, 3),
            Err(BitsError::ValueTooWide { .. })
        ));
        assert_eq!(w.write_tiered(1, &[]), Err(BitsError::InvalidTiers));
        assert_eq!(w.write_tiered(1, &[65]), Err(BitsError::InvalidTiers));
        assert_eq!(w.write_tiered(1, &[1; 9]), Err(BitsError::InvalidTiers));
        let mut r = BitReader::new(&[0xff]);
        assert_eq!(r.read_bits(65), Err(BitsError::InvalidWidth { bits: 65 }));
        assert_eq!(
            r.read_bits(9),
            Err(BitsError::Exhausted {
                wanted_bits: 9,
                remaining_bits: 8
            })
        );
        assert_eq!(r.read_tiered(&[]), Err(BitsError::InvalidTiers));
        // All-ones prefix runs into the end of input: an error, not a panic.
        assert!(matches!(
            r.read_tiered(&[1, 2, 3, 4, 5, 6, 7, 8]),
            Err(BitsError::Exhausted { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_field_sequence_round_trips(fields in proptest::collection::vec((any::<u64>(), 0u32..=64, any::<i64>()), 0..40)) {
            let tiers = [0u32, 3, 9, 20, 64];
            let mut w = BitWriter::with_max_bytes(BITS_MAX_BYTES);
            for &(v, n, s) in &fields {
                let masked = if n == 64 { v } else { v & ((1u64 << n) - 1) };
                w.write_bits(masked, n).unwrap();
                w.write_tiered(v, &tiers).unwrap();
                w.write_tiered_signed(s, &tiers).unwrap();
            }
            let bytes = w.finish();
            let mut r = BitReader::new(&bytes);
            for &(v, n, s) in &fields {
                let masked = if n == 64 { v } else { v & ((1u64 << n) - 1) };
                prop_assert_eq!(r.read_bits(n).unwrap(), masked);
                prop_assert_eq!(r.read_tiered(&tiers).unwrap(), v);
                prop_assert_eq!(r.read_tiered_signed(&tiers).unwrap(), s);
            }
            prop_assert!(r.remaining_bits() < 8);
        }

        #[test]
        fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), widths in proptest::collection::vec(0u32..=70, 0..64)) {
            let mut r = BitReader::new(&bytes);
            for w in widths {
                let _ = r.read_bits(w);
                let _ = r.read_tiered(&[0, 3, 9, 20, 64]);
            }
        }
    }

    #[test]
    fn zigzag_is_a_bijection_at_the_edges() {
        for v in [0i64, 1, -1, 2, -2, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }
}
