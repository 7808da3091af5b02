//! FastCDC content-defined chunking (Xia et al., USENIX ATC 2016): a gear rolling hash over the
//! bytes after a chunk's minimum size, cut where the hash's top bits are zero, with a harder mask
//! before the average size and an easier one after it ("normalized chunking"), so chunk sizes
//! cluster around the average. A cut depends only on the last 64 bytes and the distance from the
//! previous cut, so an insertion moves at most the boundaries near it and the chunker falls back
//! into step after it.

use std::io::Read;

/// 256 fixed pseudo-random words (splitmix64 from a constant seed): part of the format, since
/// every publisher and every player must cut the same bytes the same way.
const fn gear_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut x: u64 = 0x766f_6c6c_6579_6364; // "volleycd"
    let mut i = 0;
    while i < 256 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
}

static GEAR: [u64; 256] = gear_table();

/// Smallest and largest allowed average chunk sizes.
pub const AVG_MIN: u32 = 1 << 10;
/// See [`AVG_MIN`].
pub const AVG_MAX: u32 = 1 << 24;
/// Largest average a node accepts uploads for (its chunk bodies are capped at four times this).
pub const AVG_UPLOAD_MAX: u32 = 1 << 20;

/// Chunking parameters derived from the average size (a power of two): chunks are at least a
/// quarter and at most four times the average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Minimum chunk size (except a file's last chunk).
    pub min: usize,
    /// Target average.
    pub avg: usize,
    /// Maximum chunk size.
    pub max: usize,
    mask_s: u64,
    mask_l: u64,
}

fn top_bits(n: u32) -> u64 {
    if n == 0 {
        0
    } else {
        !0u64 << (64 - n.min(64))
    }
}

impl Params {
    /// Parameters for `avg` (a power of two within [`AVG_MIN`]..=[`AVG_MAX`]).
    pub fn new(avg: u32) -> Option<Params> {
        if !avg.is_power_of_two() || !(AVG_MIN..=AVG_MAX).contains(&avg) {
            return None;
        }
        let bits = avg.trailing_zeros();
        Some(Params {
            min: (avg / 4) as usize,
            avg: avg as usize,
            max: avg as usize * 4,
            mask_s: top_bits(bits + 2),
            mask_l: top_bits(bits - 2),
        })
    }

    /// The length of the first chunk of `data`, where `data` holds at least [`Params::max`]
    /// bytes or is the rest of the input.
    pub fn cut(&self, data: &[u8]) -> usize {
        let n = data.len();
        if n <= self.min {
            return n;
        }
        let end = n.min(self.max);
        let normal = end.min(self.avg);
        let mut h: u64 = 0;
        let mut i = self.min;
        while i < normal {
            h = (h << 1).wrapping_add(GEAR[data[i] as usize]);
            if h & self.mask_s == 0 {
                return i + 1;
            }
            i += 1;
        }
        while i < end {
            h = (h << 1).wrapping_add(GEAR[data[i] as usize]);
            if h & self.mask_l == 0 {
                return i + 1;
            }
            i += 1;
        }
        end
    }
}

/// Cuts everything `r` yields into chunks, calling `f` with each, in order; memory stays at two
/// maximum chunks whatever the input size. Returns the bytes read.
pub fn chunk_reader<R: Read, E: From<std::io::Error>>(
    mut r: R,
    p: &Params,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let mut buf = vec![0u8; p.max * 2];
    let (mut start, mut end, mut eof, mut total) = (0usize, 0usize, false, 0u64);
    loop {
        while !eof && end - start < p.max {
            if end == buf.len() {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            let n = r.read(&mut buf[end..])?;
            if n == 0 {
                eof = true;
            }
            end += n;
            total += n as u64;
        }
        if start == end {
            return Ok(total);
        }
        let len = p.cut(&buf[start..end]);
        f(&buf[start..start + len])?;
        start += len;
    }
}

/// Chunk boundaries of an in-memory buffer (lengths, in order).
pub fn chunk_lengths(data: &[u8], p: &Params) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let len = p.cut(&data[at..]);
        out.push(len);
        at += len;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    #[test]
    fn sizes_stay_within_bounds_and_cluster_near_the_average() {
        let p = Params::new(64 << 10).unwrap();
        let data = random(32 << 20, 1);
        let lens = chunk_lengths(&data, &p);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        assert!(lens[..lens.len() - 1]
            .iter()
            .all(|l| (p.min..=p.max).contains(l)));
        let mean = data.len() / lens.len();
        assert!(
            (48 << 10..=96 << 10).contains(&mean),
            "mean chunk {mean} for a 64 KiB average"
        );
    }

    #[test]
    fn the_streaming_chunker_cuts_like_the_buffer_one() {
        let p = Params::new(4 << 10).unwrap();
        let data = random(1 << 20, 2);
        let mut got = Vec::new();
        // A reader that returns odd-sized pieces.
        struct Odd<'a>(&'a [u8], usize);
        impl std::io::Read for Odd<'_> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                self.1 = self.1 % 7 + 1;
                let n = b.len().min(self.0.len()).min(self.1 * 1000);
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let total = chunk_reader::<_, std::io::Error>(Odd(&data, 0), &p, |c| {
            got.push(c.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(total, data.len() as u64);
        assert_eq!(got, chunk_lengths(&data, &p));
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let p = Params::new(16 << 10).unwrap();
        let old = random(8 << 20, 3);
        let mut new = old.clone();
        new.splice(100_000..100_000, random(37, 4));
        let hashes = |d: &[u8]| {
            let mut at = 0;
            let mut out = std::collections::HashSet::new();
            for l in chunk_lengths(d, &p) {
                out.insert(blake3::hash(&d[at..at + l]));
                at += l;
            }
            out
        };
        let (a, b) = (hashes(&old), hashes(&new));
        let changed = b.difference(&a).count();
        assert!(changed <= 3, "{changed} chunks changed for one insertion");
    }

    #[test]
    fn bad_averages_are_refused() {
        assert!(Params::new(1000).is_none());
        assert!(Params::new(512).is_none());
        assert!(Params::new(1 << 25).is_none());
        assert!(Params::new(1 << 16).is_some());
    }
}
