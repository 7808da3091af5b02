//! Which chunk to ask whom for. Sans-IO: the swarm tells the picker what peers hold and what
//! finished; the picker answers requests for work.
//!
//! - **Rarest first**: a peer is asked for the chunk the fewest connected peers hold (among a
//!   sample of 64 candidates taken in a random order of each pick's own, so that a large
//!   build stays cheap and peers spread over different chunks).
//! - **The origin last**: the origin is asked only for chunks no connected peer holds and no
//!   peer has claimed (a claim says "I am fetching it from the origin"), or chunks whose peer
//!   requests failed twice (too slow or gone). So the origin sends each chunk about once and
//!   the swarm spreads it.
//! - **Endgame**: once every missing chunk is requested, a peer may be asked for a chunk
//!   already requested elsewhere (at most two requests per chunk), so one slow peer does not
//!   hold up the end.

use std::collections::HashMap;

use crate::wire::Bits;

/// How many candidate chunks a pick compares.
const SAMPLE: usize = 64;
/// Below this many missing chunks, a pick may double a request (endgame).
const ENDGAME_SCAN: usize = 512;
/// Failed peer requests after which the origin may serve a chunk peers hold.
const FAILURES_FOR_ORIGIN: u8 = 2;
/// Claims kept at most (expired ones are dropped first). Claims are many only if peers lie:
/// each peer claims the few chunks it is fetching from the origin, and a claim not kept
/// costs at most a chunk the origin sends twice.
const CLAIMS_MAX: usize = 4096;

/// The picker. Per chunk it keeps a bit (held) and how many connected peers hold it; what
/// is in flight, failed or claimed elsewhere is kept only for the chunks concerned, so it
/// grows with the requests open, not with the build.
#[derive(Debug, Clone)]
pub struct Picker {
    /// Held, or never needed.
    have: Bits,
    avail: Vec<u16>,
    missing: usize,
    inflight: HashMap<u32, u8>,
    failures: HashMap<u32, u8>,
    /// Milliseconds (saturating at about 49 days).
    claimed_until: HashMap<u32, u32>,
    rng: u64,
}

impl Picker {
    /// A picker for a manifest of `chunks` distinct chunks, of which `needed` must be fetched.
    pub fn new(chunks: usize, needed: impl IntoIterator<Item = u32>, seed: u64) -> Picker {
        let mut wanted = Bits::new(chunks);
        for i in needed {
            wanted.set(i as usize);
        }
        // `have` holds what is not missing.
        let mut have = Bits::new(chunks);
        for i in 0..chunks {
            if !wanted.get(i) {
                have.set(i);
            }
        }
        Picker {
            missing: chunks - have.count(),
            have,
            avail: vec![0; chunks],
            inflight: HashMap::new(),
            failures: HashMap::new(),
            claimed_until: HashMap::new(),
            rng: seed | 1,
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Visits missing chunks (among those `peer` holds, if given) in a random order of this
    /// picker's own, until `visit` returns true; returns that chunk.
    ///
    /// The order matters: two peers (or a peer and the origin) that take "the first fitting
    /// chunk from a random place" in one shared order pick the same chunk far more often than
    /// chance, since the chunk after a long stretch of held ones is hit from every place in
    /// that stretch (measured: the origin sent 3 % twice at 16 peers when the order was the
    /// chunk numbers). So the order is a random permutation per pick (a full-period
    /// congruential walk over the next power of two, out-of-range values skipped); once few
    /// chunks are missing, the missing ones are listed from the bits and walked the same way.
    fn scan(
        &mut self,
        peer: Option<&Bits>,
        mut visit: impl FnMut(&Self, u32) -> bool,
    ) -> Option<u32> {
        let len = self.have.len();
        if self.missing == 0 || len == 0 {
            return None;
        }
        let r = self.next_rand();
        let fits = |p: &Self, i: usize| !p.have.get(i) && peer.is_none_or(|b| b.get(i));
        if self.missing.saturating_mul(32) < len {
            let mut few = Vec::with_capacity(self.missing);
            for w in 0..len.div_ceil(64) {
                let mut bits = !self.have.word(w);
                if let Some(p) = peer {
                    bits &= p.word(w);
                }
                while bits != 0 {
                    let i = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if i < len {
                        few.push(i as u32);
                    }
                }
            }
            return permuted(few.len(), r)
                .map(|k| few[k])
                .find(|&i| visit(&*self, i));
        }
        for i in permuted(len, r) {
            if fits(self, i) && visit(&*self, i as u32) {
                return Some(i as u32);
            }
        }
        None
    }

    fn in_flight(&self, i: u32) -> u8 {
        self.inflight.get(&i).copied().unwrap_or(0)
    }

    fn request(&mut self, i: u32) {
        *self.inflight.entry(i).or_insert(0) += 1;
    }

    fn unrequest(&mut self, i: u32) {
        if let Some(n) = self.inflight.get_mut(&i) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inflight.remove(&i);
            }
        }
    }

    /// Chunks still missing.
    pub fn missing(&self) -> usize {
        self.missing
    }

    /// Whether every needed chunk arrived.
    pub fn done(&self) -> bool {
        self.missing == 0
    }

    /// Whether chunk `i` is held (or was never needed).
    pub fn has(&self, i: u32) -> bool {
        self.have.get(i as usize)
    }

    /// Connected peers holding chunk `i`.
    pub fn availability(&self, i: u32) -> u16 {
        self.avail.get(i as usize).copied().unwrap_or(0)
    }

    /// A peer with these chunks connected.
    pub fn add_peer(&mut self, bits: &Bits) {
        self.count_peer(bits, true);
    }

    /// A peer with these chunks left (or its bitfield is being replaced).
    pub fn remove_peer(&mut self, bits: &Bits) {
        self.count_peer(bits, false);
    }

    fn count_peer(&mut self, bits: &Bits, add: bool) {
        for i in bits.ones() {
            if let Some(a) = self.avail.get_mut(i) {
                *a = if add {
                    a.saturating_add(1)
                } else {
                    a.saturating_sub(1)
                };
            }
        }
    }

    /// A connected peer announced chunk `i`.
    pub fn peer_has(&mut self, i: u32) {
        if let Some(a) = self.avail.get_mut(i as usize) {
            *a = a.saturating_add(1);
        }
    }

    /// Another peer is fetching chunk `i` from the origin until `until_ms`.
    pub fn claimed(&mut self, i: u32, until_ms: u64, now_ms: u64) {
        if self.has(i) || i as usize >= self.have.len() {
            return;
        }
        if self.claimed_until.len() >= CLAIMS_MAX && !self.claimed_until.contains_key(&i) {
            let now = u32::try_from(now_ms).unwrap_or(u32::MAX);
            self.claimed_until.retain(|_, c| *c > now);
            if self.claimed_until.len() >= CLAIMS_MAX {
                return;
            }
        }
        let c = self.claimed_until.entry(i).or_insert(0);
        *c = (*c).max(u32::try_from(until_ms).unwrap_or(u32::MAX));
    }

    /// Whether peer `bits` holds anything still missing here.
    pub fn interesting(&self, bits: &Bits) -> bool {
        self.missing > 0
            && (0..self.have.len().div_ceil(64)).any(|w| !self.have.word(w) & bits.word(w) != 0)
    }

    /// The chunk to request from a peer holding `bits`, or none. `asked(i)`: this peer already
    /// has a request for `i` open. Marks the chunk requested.
    pub fn pick_for_peer(&mut self, bits: &Bits, asked: impl Fn(u32) -> bool) -> Option<u32> {
        if self.missing == 0 {
            return None;
        }
        let mut best: Option<(u16, u32)> = None;
        let mut seen = 0;
        self.scan(Some(bits), |p, i| {
            if p.in_flight(i) > 0 {
                return false;
            }
            let a = p.availability(i);
            if best.is_none_or(|(b, _)| a < b) {
                best = Some((a, i));
            }
            seen += 1;
            seen >= SAMPLE || a <= 1
        });
        if best.is_none() && self.missing <= ENDGAME_SCAN && self.all_requested() {
            // Endgame: everything missing is requested somewhere; double a request this peer
            // can serve.
            best = self
                .scan(Some(bits), |p, i| p.in_flight(i) < 2 && !asked(i))
                .map(|i| (0, i));
        }
        let (_, i) = best?;
        self.request(i);
        Some(i)
    }

    /// Whether every missing chunk has a request open.
    fn all_requested(&mut self) -> bool {
        self.scan(None, |p, i| p.in_flight(i) == 0).is_none()
    }

    /// The chunk to fetch from the origin, or none: one no connected peer holds, nobody is
    /// fetching and nobody claimed, or one whose peer requests failed repeatedly. Marks it
    /// requested.
    pub fn pick_for_origin(&mut self, now_ms: u64) -> Option<u32> {
        let found = self.scan(None, |p, i| {
            p.in_flight(i) == 0
                && ((p.availability(i) == 0
                    && p.claimed_until
                        .get(&i)
                        .is_none_or(|&c| u64::from(c) <= now_ms))
                    || p.failures
                        .get(&i)
                        .is_some_and(|&f| f >= FAILURES_FOR_ORIGIN))
        })?;
        self.claimed_until.remove(&found);
        self.request(found);
        Some(found)
    }

    /// A request for chunk `i` was withdrawn without fault (the peer choked us or left).
    pub fn released(&mut self, i: u32) {
        self.unrequest(i);
    }

    /// A request for chunk `i` ended: `ok` if it delivered verified bytes. Returns whether the
    /// chunk is new here (false for the second copy of an endgame double).
    pub fn finished(&mut self, i: u32, ok: bool) -> bool {
        if i as usize >= self.have.len() {
            return false;
        }
        self.unrequest(i);
        if !ok {
            if !self.has(i) {
                let f = self.failures.entry(i).or_insert(0);
                *f = f.saturating_add(1);
            }
            return false;
        }
        if !self.have.set(i as usize) {
            return false;
        }
        self.missing -= 1;
        self.failures.remove(&i);
        self.claimed_until.remove(&i);
        true
    }
}

/// `0..len` in a random order given by `r`: a full-period linear congruential walk modulo the
/// next power of two (multiplier 1 mod 4, odd increment), values past `len` skipped. Each
/// value comes once; the walk is at most twice `len` steps.
fn permuted(len: usize, r: u64) -> impl Iterator<Item = usize> {
    let m = len.next_power_of_two().max(1) as u64;
    let mask = m - 1;
    let a = ((r >> 2) << 2 | 1) & mask;
    let a = if m >= 4 { a } else { 1 };
    let c = (r >> 32) | 1;
    let mut x = r.rotate_left(17) & mask;
    (0..m).filter_map(move |_| {
        x = x.wrapping_mul(a).wrapping_add(c) & mask;
        ((x as usize) < len).then_some(x as usize)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bits(len: usize, set: &[usize]) -> Bits {
        let mut b = Bits::new(len);
        for &i in set {
            b.set(i);
        }
        b
    }

    #[test]
    fn rarest_first_then_endgame() {
        let mut p = Picker::new(4, [0, 1, 2, 3], 42);
        let a = bits(4, &[0, 1, 2]);
        let b = bits(4, &[0, 1]);
        let c = bits(4, &[0]);
        p.add_peer(&a);
        p.add_peer(&b);
        p.add_peer(&c);
        // From a: chunk 2 (only a holds it), then 1, then 0.
        assert_eq!(p.pick_for_peer(&a, |_| false), Some(2));
        assert_eq!(p.pick_for_peer(&a, |_| false), Some(1));
        assert_eq!(p.pick_for_peer(&a, |_| false), Some(0));
        // Chunk 3 nobody holds: the origin's.
        assert_eq!(p.pick_for_origin(0), Some(3));
        assert_eq!(p.pick_for_origin(0), None);
        // Endgame: b may double a request it can serve and did not make.
        let d = p.pick_for_peer(&b, |_| false).unwrap();
        assert!(d == 0 || d == 1);
        assert!(p.finished(d, true));
        assert!(!p.finished(d, true), "the second copy is not new");
        for i in [0, 1, 2, 3] {
            p.finished(i, true);
        }
        assert!(p.done());
        assert_eq!(p.pick_for_peer(&a, |_| false), None);
    }

    #[test]
    fn claims_keep_the_origin_off_and_failures_bring_it_back() {
        let mut p = Picker::new(3, [0, 1, 2], 7);
        p.claimed(0, 1_000, 0);
        p.claimed(1, 1_000, 0);
        assert_eq!(p.pick_for_origin(500), Some(2));
        assert_eq!(p.pick_for_origin(500), None);
        // The claim on 0 and 1 expired without a Have: the origin takes them.
        let x = p.pick_for_origin(1_500).unwrap();
        assert!(x < 2);
        // A chunk peers hold goes to the origin only after two failed peer requests.
        let mut p = Picker::new(1, [0], 1);
        let a = bits(1, &[0]);
        p.add_peer(&a);
        assert_eq!(p.pick_for_origin(0), None);
        for _ in 0..2 {
            assert_eq!(p.pick_for_peer(&a, |_| false), Some(0));
            assert!(!p.finished(0, false));
        }
        assert_eq!(p.pick_for_origin(0), Some(0));
        assert!(p.finished(0, true));
        assert!(p.done());
    }

    #[test]
    fn chunks_not_needed_count_as_held() {
        let mut p = Picker::new(5, [1, 3], 3);
        assert!(p.has(0) && !p.has(1) && p.has(2));
        assert_eq!(p.missing(), 2);
        let everything = Bits::full(5);
        p.add_peer(&everything);
        assert!(p.interesting(&everything));
        let mut got = vec![
            p.pick_for_peer(&everything, |_| false).unwrap(),
            p.pick_for_peer(&everything, |_| false).unwrap(),
        ];
        got.sort_unstable();
        assert_eq!(got, vec![1, 3]);
    }

    #[test]
    fn a_permutation_visits_each_value_once() {
        for len in [0usize, 1, 2, 3, 4, 5, 63, 64, 65, 1000, 4096] {
            for r in [1u64, 7, 0xdead_beef, u64::MAX, 0x1234_5678_9abc_def0] {
                let mut v: Vec<usize> = permuted(len, r).collect();
                v.sort_unstable();
                assert_eq!(v, (0..len).collect::<Vec<_>>(), "len {len} r {r:#x}");
            }
        }
        // Different draws, different orders.
        let a: Vec<usize> = permuted(1000, 11).take(8).collect();
        let b: Vec<usize> = permuted(1000, 0x5555_1234_0000_0777).take(8).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn every_missing_chunk_is_reached_from_any_start() {
        // Sizes around word edges; every start place must still reach every chunk once.
        for n in [1usize, 63, 64, 65, 130, 1000] {
            for seed in 1..20u64 {
                let needed: Vec<u32> = (0..n as u32).filter(|i| i % 3 != 1).collect();
                let mut p = Picker::new(n, needed.iter().copied(), seed * 7919);
                let mut got = Vec::new();
                while let Some(i) = p.pick_for_origin(0) {
                    got.push(i);
                }
                got.sort_unstable();
                assert_eq!(got, needed, "n {n} seed {seed}");
                for i in got {
                    assert!(p.finished(i, true));
                }
                assert!(p.done());
                assert_eq!(p.pick_for_origin(0), None);
            }
        }
    }

    #[test]
    fn claims_from_a_lying_peer_are_bounded() {
        let n = CLAIMS_MAX * 3;
        let mut p = Picker::new(n, 0..n as u32, 5);
        for i in 0..n as u32 {
            p.claimed(i, 10_000, 0);
        }
        assert!(p.claimed_until.len() <= CLAIMS_MAX);
        // Unclaimed chunks still go to the origin at once.
        let i = p.pick_for_origin(1).unwrap();
        assert!(i as usize >= CLAIMS_MAX, "{i}");
        // Expired claims make room for new ones.
        p.claimed(n as u32 - 1, 30_000, 20_000);
        assert_eq!(p.claimed_until.len(), 1);
        // Failures of a held chunk leave nothing behind.
        assert!(p.finished(i, true));
        assert!(!p.finished(i, false));
        assert!(p.failures.is_empty() && p.inflight.is_empty());
    }

    #[test]
    fn spread_over_many_picks_is_wide() {
        // Eight peers picking from the same full seed start on different chunks.
        let n = 1000;
        let seed = Bits::full(n);
        let mut firsts = std::collections::HashSet::new();
        for s in 1..=8u64 {
            let mut p = Picker::new(n, 0..n as u32, s * 7919);
            p.add_peer(&seed);
            firsts.insert(p.pick_for_peer(&seed, |_| false).unwrap());
        }
        assert!(firsts.len() >= 7, "{firsts:?}");
    }
}
