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
        if let Some(i) = scan(data, self.min, self.min, normal, self.mask_s) {
            return i + 1;
        }
        if let Some(i) = scan(data, self.min, normal, end, self.mask_l) {
            return i + 1;
        }
        end
    }
}

/// Bytes each lane of [`scan`] covers per block.
const BLOCK: usize = 1024;
/// Stretches [`scan`] hashes side by side.
const LANES: usize = 4;

/// The gear hash at position `i` of a run that started at `base`: only the last 64 bytes
/// count, since older ones are shifted out of the word.
fn warm(data: &[u8], base: usize, i: usize) -> u64 {
    let mut h = 0u64;
    for &b in &data[i.saturating_sub(64).max(base)..i] {
        h = (h << 1).wrapping_add(GEAR[b as usize]);
    }
    h
}

/// The first position in `from..to` where the gear hash of a run started at `base` has no bit
/// of `mask` set. Since the hash at a position depends only on the 64 bytes before it, four
/// stretches of `BLOCK` bytes are hashed side by side (four independent chains keep the core
/// busy where one chain waits on its own previous step), each warmed up on the 64 bytes before
/// it; the earliest hit wins, so cuts are exactly those of the one-byte-at-a-time loop.
fn scan(data: &[u8], base: usize, from: usize, to: usize, mask: u64) -> Option<usize> {
    let mut at = from;
    while to - at >= LANES * BLOCK {
        let block = &data[at..at + LANES * BLOCK];
        let mut h = [0u64; LANES];
        for (k, h) in h.iter_mut().enumerate() {
            *h = warm(data, base, at + k * BLOCK);
        }
        let mut hit = [usize::MAX; LANES];
        for j in 0..BLOCK {
            let mut any = false;
            for k in 0..LANES {
                h[k] = (h[k] << 1).wrapping_add(GEAR[block[k * BLOCK + j] as usize]);
                any |= h[k] & mask == 0;
            }
            if any {
                for k in 0..LANES {
                    if h[k] & mask == 0 && hit[k] == usize::MAX {
                        hit[k] = at + k * BLOCK + j;
                    }
                }
                if hit[0] != usize::MAX {
                    return Some(hit[0]);
                }
            }
        }
        if let Some(&i) = hit.iter().find(|&&i| i != usize::MAX) {
            return Some(i);
        }
        at += LANES * BLOCK;
    }
    let mut h = warm(data, base, at);
    for (i, &b) in data.iter().enumerate().take(to).skip(at) {
        h = (h << 1).wrapping_add(GEAR[b as usize]);
        if h & mask == 0 {
            return Some(i);
        }
    }
    None
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

    /// The plain one-byte-at-a-time FastCDC loop: the definition the fast scan must match.
    fn reference_cut(p: &Params, data: &[u8]) -> usize {
        let n = data.len();
        if n <= p.min {
            return n;
        }
        let end = n.min(p.max);
        let normal = end.min(p.avg);
        let mut h: u64 = 0;
        for i in p.min..end {
            h = (h << 1).wrapping_add(GEAR[data[i] as usize]);
            let mask = if i < normal { p.mask_s } else { p.mask_l };
            if h & mask == 0 {
                return i + 1;
            }
        }
        end
    }

    #[test]
    fn the_four_lane_scan_cuts_exactly_where_the_plain_loop_does() {
        // Random bytes, long runs of one byte (hash hits early and late in blocks) and short
        // inputs, at several averages.
        let mut inputs = vec![random(4 << 20, 7)];
        let mut runs = random(1 << 20, 8);
        for (k, b) in runs.iter_mut().enumerate() {
            if (k / 5000) % 3 == 0 {
                *b = 0;
            }
        }
        inputs.push(runs);
        inputs.push(random(70_000, 9));
        for avg in [1 << 10, 4 << 10, 16 << 10, 64 << 10] {
            let p = Params::new(avg).unwrap();
            for data in &inputs {
                let mut at = 0;
                let mut cuts = 0;
                while at < data.len() {
                    let want = reference_cut(&p, &data[at..]);
                    assert_eq!(p.cut(&data[at..]), want, "avg {avg} at {at}");
                    at += want;
                    cuts += 1;
                }
                assert!(cuts > 0);
            }
        }
    }

    #[test]
    fn bad_averages_are_refused() {
        assert!(Params::new(1000).is_none());
        assert!(Params::new(512).is_none());
        assert!(Params::new(1 << 25).is_none());
        assert!(Params::new(1 << 16).is_some());
    }
}
