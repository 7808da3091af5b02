//! FastCDC content-defined chunking (Xia et al., USENIX ATC 2016): a gear rolling hash over the
//! bytes after a chunk's minimum size, cut where the hash's top bits are zero, with a harder mask
//! before the average size and an easier one after it ("normalized chunking"), so chunk sizes
//! cluster around the average.
//!
//! Volley's cut rule adds a prefilter in front of the gear test so that the scan runs at SIMD
//! speed. With `w0` the 4 bytes ending at a position and `w4` the 4 ending 4 bytes before it
//! (little-endian words), the position is a cut candidate only if
//! `w0·K + (w4·K >> 1) + C` (mod 2^32) is below 2^(32 - a), with `a` = 10 at the default
//! average: one position in 2^a on random data. Only at candidates is the gear hash of the 64
//! bytes ending there computed, and tested against a mask `a` bits shorter than plain
//! FastCDC's ([`plain_cut`]), so the chance of a cut per position is plain FastCDC's and chunk
//! sizes on random data are distributed the same. The prefilter is a multiply per 16 (AVX-512)
//! or 8 (AVX2) positions instead of a dependent table load per byte. A cut still depends only
//! on the 64 bytes before it and the distance from the previous cut, so an insertion moves at
//! most the boundaries near it and the chunker falls back into step after it.

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
    /// A position is a candidate when its 4-byte word times [`FILTER_MUL`] is below this.
    filter: u32,
}

/// The prefilter's multiplier (odd; 2^32 / golden ratio): part of the format.
const FILTER_MUL: u32 = 0x9e37_79b1;
/// Added to the sum of the products. With it no run of one byte value (a run of zeros,
/// padding) is a candidate at any average (a test checks every byte value): without it a zero
/// run always was, and binaries were cut at nearly every run of zeros.
const FILTER_ADD: u32 = 0x2265_b1f5;

/// Bits the prefilter takes from the cut test for an average of 2^`bits` (at least 6 and at
/// most 10, leaving the gear test at least 2 bits after the average).
fn filter_bits(bits: u32) -> u32 {
    bits.saturating_sub(4).min(10)
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
        let a = filter_bits(bits);
        Some(Params {
            min: (avg / 4) as usize,
            avg: avg as usize,
            max: avg as usize * 4,
            mask_s: top_bits(bits + 2 - a),
            mask_l: top_bits(bits - 2 - a),
            filter: 1 << (32 - a),
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
        if let Some(i) = scan(data, self.min, self.min, normal, self.mask_s, self.filter) {
            return i + 1;
        }
        if let Some(i) = scan(data, self.min, normal, end, self.mask_l, self.filter) {
            return i + 1;
        }
        end
    }
}

/// For the fuzzer (`cdc_kernels`): every prefilter kernel this CPU runs finds the candidate
/// the scalar kernel finds in `from..to` of `data` with 2^-`a` of positions passing
/// (`a` in 1..=31), and [`Params::cut`] at a 1 KiB average cuts where the plain
/// one-position-at-a-time definition does. Panics otherwise.
#[doc(hidden)]
pub fn check_kernels(data: &[u8], from: usize, to: usize, a: u32) {
    let filter = 1u32 << (32 - a.clamp(1, 31));
    let want = next_candidate_scalar(data, from, to, filter);
    for (name, got) in every_kernel(data, from, to, filter) {
        assert_eq!(got, want, "{name} kernel, {from}..{to}, a = {a}");
    }
    if let Some(p) = Params::new(AVG_MIN) {
        assert_eq!(
            p.cut(data),
            reference_cut(&p, data),
            "cut at a 1 KiB average"
        );
    }
}

/// What every prefilter kernel this CPU can run (and the dispatcher) finds in `from..to`, by
/// name, to compare with the scalar kernel.
fn every_kernel(
    data: &[u8],
    from: usize,
    to: usize,
    filter: u32,
) -> Vec<(&'static str, Option<usize>)> {
    let mut out = vec![("dispatch", next_candidate(data, from, to, filter))];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            let got = unsafe { simd::next_candidate_avx2(data, from, to, filter) };
            out.push(("avx2", got));
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            let got = unsafe { simd::next_candidate_avx512(data, from, to, filter) };
            out.push(("avx512", got));
        }
    }
    out
}

/// The cut rule one position at a time, straight from its definition (the module docs).
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
        let w0 = u32::from_le_bytes([data[i - 3], data[i - 2], data[i - 1], data[i]]);
        let w4 = u32::from_le_bytes([data[i - 7], data[i - 6], data[i - 5], data[i - 4]]);
        let f = w0
            .wrapping_mul(FILTER_MUL)
            .wrapping_add(w4.wrapping_mul(FILTER_MUL) >> 1)
            .wrapping_add(FILTER_ADD);
        if f < p.filter && h & mask == 0 {
            return i + 1;
        }
    }
    end
}

/// Plain FastCDC with the same gear table and sizes and no prefilter (masks of `bits ± 2` top
/// bits, one byte at a time): the rule Volley cut with before the prefilter, kept to compare
/// chunk statistics and speed against ([`Params::cut`] is the rule in use).
pub fn plain_cut(p: &Params, data: &[u8]) -> usize {
    let n = data.len();
    if n <= p.min {
        return n;
    }
    let end = n.min(p.max);
    let normal = end.min(p.avg);
    let bits = p.avg.trailing_zeros();
    let (mask_s, mask_l) = (top_bits(bits + 2), top_bits(bits - 2));
    let mut h: u64 = 0;
    for (i, &b) in data.iter().enumerate().take(end).skip(p.min) {
        h = (h << 1).wrapping_add(GEAR[b as usize]);
        if h & if i < normal { mask_s } else { mask_l } == 0 {
            return i + 1;
        }
    }
    end
}

/// The gear hash at position `i` of a run that started at `base`: only the last 64 bytes
/// count, since older ones are shifted out of the word.
fn gear(data: &[u8], base: usize, i: usize) -> u64 {
    let mut h = 0u64;
    for &b in &data[(i + 1).saturating_sub(64).max(base)..=i] {
        h = (h << 1).wrapping_add(GEAR[b as usize]);
    }
    h
}

/// The 4 bytes ending at `i` (`i >= 3`) as a little-endian word.
fn word(data: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([data[i - 3], data[i - 2], data[i - 1], data[i]])
}

/// Whether position `i` passes the prefilter.
fn candidate(data: &[u8], i: usize, filter: u32) -> bool {
    mix(
        word(data, i).wrapping_mul(FILTER_MUL),
        word(data, i - 4).wrapping_mul(FILTER_MUL),
    ) < filter
}

/// The prefilter's value from the products of the word ending at a position and the word
/// ending 4 bytes before it.
fn mix(now: u32, before: u32) -> u32 {
    now.wrapping_add(before >> 1).wrapping_add(FILTER_ADD)
}

/// The first position in `from..to` (`from >= 3`) where a run started at `base` cuts: the
/// prefilter passes and the gear hash has no bit of `mask` set.
fn scan(data: &[u8], base: usize, from: usize, to: usize, mask: u64, filter: u32) -> Option<usize> {
    let mut at = from;
    while let Some(i) = next_candidate(data, at, to, filter) {
        if gear(data, base, i) & mask == 0 {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

/// The first position in `from..to` that passes the prefilter (positions below 7, which have
/// no two words, never do), with the widest kernel this CPU has.
fn next_candidate(data: &[u8], from: usize, to: usize, filter: u32) -> Option<usize> {
    match kernel() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `kernel` picks AVX-512 only where the CPU has AVX-512F, hence AVX2.
        Kernel::Avx512 => unsafe { simd::next_candidate_avx512(data, from, to, filter) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `kernel` picks AVX2 only where the CPU has it.
        Kernel::Avx2 => unsafe { simd::next_candidate_avx2(data, from, to, filter) },
        Kernel::Scalar => next_candidate_scalar(data, from, to, filter),
    }
}

/// The prefilter kernels (all find the same candidates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512F, 64 positions per step.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2, 32 positions per step.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// One position at a time.
    Scalar,
}

/// The kernel the chunker uses: the widest this CPU has, or a narrower one named by
/// `VOLLEY_CDC_KERNEL` (`avx2` or `scalar`; for measuring them side by side).
pub fn kernel() -> Kernel {
    static PICK: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *PICK.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let want = std::env::var("VOLLEY_CDC_KERNEL").unwrap_or_default();
            if want != "avx2" && want != "scalar" && std::arch::is_x86_feature_detected!("avx512f")
            {
                return Kernel::Avx512;
            }
            if want != "scalar" && std::arch::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Scalar
    })
}

fn next_candidate_scalar(data: &[u8], from: usize, to: usize, filter: u32) -> Option<usize> {
    let to = to.min(data.len());
    let mut i = from.max(7);
    if i >= to {
        return None;
    }
    // The products of the words ending at i - 4 ..= i - 1, so that each position multiplies
    // once; four positions per step, their words read from one 8-byte load.
    let mut before = [0u32; 4];
    for (k, b) in before.iter_mut().enumerate() {
        *b = word(data, i - 4 + k).wrapping_mul(FILTER_MUL);
    }
    while i + 5 <= to {
        let Some(&bytes) = data.get(i - 3..i + 5).and_then(|b| b.first_chunk::<8>()) else {
            break;
        };
        let x = u64::from_le_bytes(bytes);
        let mut now = [0u32; 4];
        let mut least = u32::MAX;
        for k in 0..4 {
            now[k] = ((x >> (8 * k)) as u32).wrapping_mul(FILTER_MUL);
            least = least.min(mix(now[k], before[k]));
        }
        if least < filter {
            return (i..i + 4).find(|&j| candidate(data, j, filter));
        }
        before = now;
        i += 4;
    }
    (i..to).find(|&j| candidate(data, j, filter))
}

/// The prefilter on 32 (AVX2) or 64 (AVX-512) positions per step. The words ending at
/// positions `p + j + 4m` (m = 0, 1, ...) are the lanes of one unaligned load from `p - 3 + j`,
/// so four such loads cover a step, and an unsigned minimum over them tests it with one
/// compare; a step with a candidate (about one in 16 at the default average) finds the first
/// one from the four loads' compare masks. The word 4 bytes before each position is the lane
/// below in the same load: AVX-512 takes it from there (one multiply per position); AVX2,
/// whose lane shifts cost more than they save here, loads and multiplies it again.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// See the module docs: AVX2, 32 positions per step.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn next_candidate_avx2(
        data: &[u8],
        from: usize,
        to: usize,
        filter: u32,
    ) -> Option<usize> {
        let to = to.min(data.len());
        let mut p = from.max(7);
        let mul = _mm256_set1_epi32(super::FILTER_MUL as i32);
        let add = _mm256_set1_epi32(super::FILTER_ADD as i32);
        let limit = _mm256_set1_epi32(filter.wrapping_sub(1) as i32);
        while p + 32 <= to {
            // SAFETY: load j reads bytes p - 7 + j .. p + 29 + j, within 0..to since p >= 7,
            // j <= 3 and p + 32 <= to <= data.len(); unaligned loads are allowed.
            let prod = |j: usize| unsafe {
                let w = _mm256_loadu_si256(data.as_ptr().add(p - 3 + j).cast());
                let v = _mm256_loadu_si256(data.as_ptr().add(p - 7 + j).cast());
                let x = _mm256_add_epi32(_mm256_srli_epi32(_mm256_mullo_epi32(v, mul), 1), add);
                _mm256_add_epi32(_mm256_mullo_epi32(w, mul), x)
            };
            let w = [prod(0), prod(1), prod(2), prod(3)];
            let m = _mm256_min_epu32(_mm256_min_epu32(w[0], w[1]), _mm256_min_epu32(w[2], w[3]));
            let hit = _mm256_cmpeq_epi32(_mm256_min_epu32(m, limit), m);
            if _mm256_testz_si256(hit, hit) == 0 {
                let mut first = usize::MAX;
                for (j, v) in w.into_iter().enumerate() {
                    let eq = _mm256_cmpeq_epi32(_mm256_min_epu32(v, limit), v);
                    let bits = _mm256_movemask_ps(_mm256_castsi256_ps(eq)) as u32;
                    if bits != 0 {
                        first = first.min(p + j + 4 * bits.trailing_zeros() as usize);
                    }
                }
                return Some(first);
            }
            p += 32;
        }
        super::next_candidate_scalar(data, p, to, filter)
    }

    /// See the module docs: AVX-512F, 64 positions per step; the rest with AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f,avx2")]
    pub(super) unsafe fn next_candidate_avx512(
        data: &[u8],
        from: usize,
        to: usize,
        filter: u32,
    ) -> Option<usize> {
        let to = to.min(data.len());
        let mut p = from.max(7);
        let mul = _mm512_set1_epi32(super::FILTER_MUL as i32);
        let add = _mm512_set1_epi32(super::FILTER_ADD as i32);
        let limit = _mm512_set1_epi32(filter.wrapping_sub(1) as i32);
        if p + 64 <= to {
            // prev[j]'s last lane: the product at position p + j - 4, the word before the first
            // word of load j (see the module docs); read only once a step fits, since the
            // data may be shorter than p.
            let mut prev = [0, 1, 2, 3].map(|j| {
                _mm512_set1_epi32(
                    super::word(data, p + j - 4).wrapping_mul(super::FILTER_MUL) as i32
                )
            });
            while p + 64 <= to {
                let mut w = prev;
                for (j, w) in w.iter_mut().enumerate() {
                    // SAFETY: load j reads bytes p - 3 + j .. p + 61 + j, within 0..to since
                    // p >= 7, j <= 3 and p + 64 <= to <= data.len(); unaligned loads are
                    // allowed.
                    let now = _mm512_mullo_epi32(
                        unsafe { _mm512_loadu_si512(data.as_ptr().add(p - 3 + j).cast()) },
                        mul,
                    );
                    // Each lane's word 4 bytes earlier: the lane below, or the last of the
                    // step before.
                    let before = _mm512_alignr_epi32(now, prev[j], 15);
                    prev[j] = now;
                    *w = _mm512_add_epi32(now, _mm512_add_epi32(_mm512_srli_epi32(before, 1), add));
                }
                let m =
                    _mm512_min_epu32(_mm512_min_epu32(w[0], w[1]), _mm512_min_epu32(w[2], w[3]));
                if _mm512_cmple_epu32_mask(m, limit) != 0 {
                    let mut first = usize::MAX;
                    for (j, v) in w.into_iter().enumerate() {
                        let bits = u32::from(_mm512_cmple_epu32_mask(v, limit));
                        if bits != 0 {
                            first = first.min(p + j + 4 * bits.trailing_zeros() as usize);
                        }
                    }
                    return Some(first);
                }
                p += 64;
            }
        }
        // SAFETY: the caller's CPU has AVX-512F, hence AVX2.
        unsafe { next_candidate_avx2(data, p, to, filter) }
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

/// A chunk of a file: where it starts, its length and its BLAKE3 hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Offset in the file.
    pub at: u64,
    /// Length in bytes.
    pub len: u32,
    /// BLAKE3 of the bytes.
    pub hash: [u8; 32],
}

/// Bytes each parallel task of [`chunk_files`] chunks (a file longer than this is split).
pub const SPAN: u64 = 64 << 20;
/// Read buffer of one task.
const READ_BUF: usize = 4 << 20;

/// A file to chunk: open for reading, with its length.
pub trait Source: Sync {
    /// Length in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `at` (the range lies within the length).
    fn read_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()>;
}

impl Source for (std::fs::File, u64) {
    fn size(&self) -> u64 {
        self.1
    }
    fn read_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.read_exact_at(buf, at)
    }
}

impl Source for &[u8] {
    fn size(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()> {
        let at = at as usize;
        buf.copy_from_slice(&self[at..at + buf.len()]);
        Ok(())
    }
}

/// Cuts and hashes every file of `files` on up to `threads` threads, returning each file's
/// chunks in order: exactly the chunks the one-pass chunker ([`chunk_reader`]) makes.
///
/// Files are split into stretches of [`SPAN`] bytes, and the stretches are chunked in
/// parallel, each as if a chunk began at its start. A cut depends only on the bytes since the
/// previous cut, so once the chunks continuing from one stretch reach a cut the next stretch
/// also made, the two agree from there on: the stretches are joined by chunking on from the end
/// of one (usually one to three chunks) until a chunk starts where one of the next stretch's
/// does. Where they never meet (a long run of one byte cut only at the maximum size, out of
/// phase), the join simply chunks on through the next stretch; the result is the same.
///
/// A read error is returned with the index of the file it came from.
pub fn chunk_files<S: Source>(
    files: &[S],
    p: &Params,
    threads: usize,
) -> Result<Vec<Vec<Cut>>, (usize, std::io::Error)> {
    chunk_stretches(files, p, threads, SPAN)
}

fn chunk_stretches<S: Source>(
    files: &[S],
    p: &Params,
    threads: usize,
    stretch: u64,
) -> Result<Vec<Vec<Cut>>, (usize, std::io::Error)> {
    // Every (file, stretch start), in order.
    let mut tasks = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        let mut at = 0;
        while at < f.size() {
            tasks.push((fi, at));
            at += stretch;
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: Vec<std::sync::Mutex<Option<std::io::Result<Vec<Cut>>>>> =
        tasks.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let work = || {
        let mut buf = vec![0u8; READ_BUF.max(p.max * 2)];
        loop {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&(fi, at)) = tasks.get(k) else {
                return;
            };
            let f = &files[fi];
            let r = chunk_span(f, p, at, (at + stretch).min(f.size()), &mut buf);
            *done[k].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        }
    };
    crate::on_threads(threads, tasks.len(), work);
    // Join the stretches of each file.
    let mut out: Vec<Vec<Cut>> = files.iter().map(|_| Vec::new()).collect();
    let mut buf = vec![0u8; p.max];
    for (slot, &(fi, _)) in done.into_iter().zip(&tasks) {
        let span = slot
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(|| Ok(Vec::new()))
            .map_err(|e| (fi, e))?;
        let cuts = &mut out[fi];
        let Some(first) = span.first() else {
            continue;
        };
        let mut end = cuts.last().map_or(0, |c| c.at + u64::from(c.len));
        let span_end = span.last().map_or(first.at, |c| c.at + u64::from(c.len));
        loop {
            if let Ok(j) = span.binary_search_by_key(&end, |c| c.at) {
                cuts.extend_from_slice(&span[j..]);
                break;
            }
            if end >= span_end {
                break; // this stretch's chunks were all passed over
            }
            let c = chunk_one(&files[fi], p, end, &mut buf).map_err(|e| (fi, e))?;
            end += u64::from(c.len);
            cuts.push(c);
        }
    }
    // A file whose last stretch was passed over ends where the join stopped; finish it.
    for (fi, cuts) in out.iter_mut().enumerate() {
        let len = files[fi].size();
        let mut end = cuts.last().map_or(0, |c| c.at + u64::from(c.len));
        while end < len {
            let c = chunk_one(&files[fi], p, end, &mut buf).map_err(|e| (fi, e))?;
            end += u64::from(c.len);
            cuts.push(c);
        }
    }
    Ok(out)
}

/// The chunk that starts at `at`.
fn chunk_one<S: Source>(f: &S, p: &Params, at: u64, buf: &mut [u8]) -> std::io::Result<Cut> {
    let n = (p.max as u64).min(f.size() - at) as usize;
    f.read_at(&mut buf[..n], at)?;
    let len = p.cut(&buf[..n]);
    Ok(Cut {
        at,
        len: len as u32,
        hash: *blake3::hash(&buf[..len]).as_bytes(),
    })
}

/// Chunks from `from` (as if a chunk began there) until a chunk starts at or after `until`.
fn chunk_span<S: Source>(
    f: &S,
    p: &Params,
    from: u64,
    until: u64,
    buf: &mut [u8],
) -> std::io::Result<Vec<Cut>> {
    let len = f.size();
    let mut out = Vec::with_capacity(((until - from) / p.avg as u64) as usize + 1);
    // The buffer holds the file's bytes [base, base + filled).
    let (mut base, mut filled) = (from, 0usize);
    let mut at = from;
    while at < until {
        let need = (p.max as u64).min(len - at) as usize;
        let off = (at - base) as usize;
        if off + need > filled {
            buf.copy_within(off..filled, 0);
            filled -= off;
            base = at;
            let more = ((buf.len() - filled) as u64).min(len - (base + filled as u64)) as usize;
            f.read_at(&mut buf[filled..filled + more], base + filled as u64)?;
            filled += more;
        }
        let off = (at - base) as usize;
        let data = &buf[off..off + need];
        let n = p.cut(data);
        out.push(Cut {
            at,
            len: n as u32,
            hash: *blake3::hash(&data[..n]).as_bytes(),
        });
        at += n as u64;
    }
    Ok(out)
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
    fn the_simd_prefilter_finds_exactly_the_candidates_of_the_plain_loop() {
        let mut data = random(1 << 16, 21);
        data[20_000..30_000].fill(0); // a run: every position there passes or none does
        for a in [1u32, 4, 6, 10, 12] {
            let filter = 1u32 << (32 - a);
            let mut at = 3;
            let mut found = 0;
            // Every candidate in turn, each search ending at a different distance.
            while let Some(i) = next_candidate_scalar(&data, at, data.len(), filter) {
                for (name, got) in every_kernel(&data, at, data.len(), filter) {
                    assert_eq!(got, Some(i), "{name}, a = {a}");
                }
                for (name, got) in every_kernel(&data, at, i, filter) {
                    assert_eq!(got, None, "{name}, a = {a}, {at}..{i}");
                }
                found += 1;
                at = i + 1;
            }
            assert!(found > 0, "a = {a}");
            // Data shorter than the range, even than the first position with two words (a
            // kernel once read a word there before checking; the fuzzer found it).
            for n in 0..24 {
                for from in 0..12 {
                    for to in 0..40 {
                        let want = next_candidate_scalar(&data[..n], from, to, filter);
                        for (name, got) in every_kernel(&data[..n], from, to, filter) {
                            assert_eq!(got, want, "{name} {n}");
                        }
                    }
                }
            }
            // Short and unaligned ranges at both ends of the data.
            let n = data.len();
            for from in (0..100).chain(n - 100..n).step_by(3) {
                for to in from..(from + 140).min(n + 1) {
                    let want = next_candidate_scalar(&data, from, to, filter);
                    for (name, got) in every_kernel(&data, from, to, filter) {
                        assert_eq!(got, want, "{name} {from}..{to}");
                    }
                }
            }
        }
    }

    #[test]
    fn no_run_of_one_byte_value_is_a_candidate_at_any_average() {
        for avg in (AVG_MIN.trailing_zeros()..=AVG_MAX.trailing_zeros()).map(|b| 1u32 << b) {
            let p = Params::new(avg).unwrap();
            for b in 0..=255u8 {
                assert!(!candidate(&[b; 8], 7, p.filter), "byte {b}, average {avg}");
            }
        }
    }

    #[test]
    fn the_fast_scan_cuts_exactly_where_the_plain_loop_does() {
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
    fn parallel_stretches_join_into_exactly_the_one_pass_chunks() {
        // Random bytes; a file of one repeated byte (cut only at the maximum size, so stretches
        // never meet and the join chunks on through them); a mix; a file shorter than a
        // chunk; an empty file; a file of exactly one stretch.
        let p = Params::new(1 << 10).unwrap();
        let stretch = 100_000;
        let s = stretch as usize;
        let random_file = random(7 * s + 12_345, 11);
        let zeros = vec![0u8; 3 * s + 7];
        let mut mixed = random(5 * s + 99, 12);
        mixed[s - 5_000..2 * s + 30_000].fill(7);
        let small = random(300, 13);
        let one = random(s, 14);
        let files: Vec<&[u8]> = vec![&random_file, &zeros, &mixed, &small, &[], &one];
        for threads in [1, 3] {
            let got = chunk_stretches(&files, &p, threads, stretch).unwrap();
            for (f, cuts) in files.iter().zip(&got) {
                let mut at = 0;
                let want: Vec<Cut> = chunk_lengths(f, &p)
                    .into_iter()
                    .map(|l| {
                        let c = Cut {
                            at: at as u64,
                            len: l as u32,
                            hash: *blake3::hash(&f[at..at + l]).as_bytes(),
                        };
                        at += l;
                        c
                    })
                    .collect();
                assert_eq!(cuts.len(), want.len(), "file of {} bytes", f.len());
                assert!(*cuts == want, "file of {} bytes", f.len());
            }
        }
    }

    #[test]
    fn a_read_error_names_its_file() {
        struct Flaky<'a>(&'a [u8], bool);
        impl Source for Flaky<'_> {
            fn size(&self) -> u64 {
                self.0.len() as u64
            }
            fn read_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()> {
                if self.1 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.0.read_at(buf, at)
            }
        }
        let p = Params::new(1 << 10).unwrap();
        let data = random(250_000, 15);
        let files = [
            Flaky(&data, false),
            Flaky(&data, false),
            Flaky(&data, true),
            Flaky(&data, false),
        ];
        for threads in [1, 2] {
            let (k, e) = chunk_stretches(&files, &p, threads, 100_000).unwrap_err();
            assert_eq!(k, 2);
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
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
