//! Which chunk to ask whom for. Sans-IO: the swarm tells the picker what peers hold and what
//! finished; the picker answers requests for work.
//!
//! - **Rarest first**: a peer is asked for the chunk the fewest connected peers hold (among a
//!   sample of candidates starting at a random place, so that a large build stays cheap and
//!   peers spread over different chunks).
//! - **The origin last**: the origin is asked only for chunks no connected peer holds and no
//!   peer has claimed (a claim says "I am fetching it from the origin"), or chunks whose peer
//!   requests failed twice (too slow or gone). So the origin sends each chunk about once and
//!   the swarm spreads it.
//! - **Endgame**: once every missing chunk is requested, a peer may be asked for a chunk
//!   already requested elsewhere (at most two requests per chunk), so one slow peer does not
//!   hold up the end.

use crate::wire::Bits;

/// How many candidate chunks a pick compares.
const SAMPLE: usize = 64;
/// Below this many missing chunks, a pick may double a request (endgame).
const ENDGAME_SCAN: usize = 512;
/// Failed peer requests after which the origin may serve a chunk peers hold.
const FAILURES_FOR_ORIGIN: u8 = 2;

/// The picker.
#[derive(Debug, Clone)]
pub struct Picker {
    have: Bits,
    avail: Vec<u16>,
    inflight: Vec<u8>,
    failures: Vec<u8>,
    /// Milliseconds (saturating at about 49 days).
    claimed_until: Vec<u32>,
    missing: Vec<u32>,
    pos: Vec<u32>,
    rng: u64,
}

impl Picker {
    /// A picker for a manifest of `chunks` distinct chunks, of which `needed` must be fetched.
    pub fn new(chunks: usize, needed: impl IntoIterator<Item = u32>, seed: u64) -> Picker {
        let mut missing = Vec::new();
        let mut pos = vec![u32::MAX; chunks];
        for i in needed {
            let iu = i as usize;
            if iu < chunks && pos[iu] == u32::MAX {
                pos[iu] = missing.len() as u32;
                missing.push(i);
            }
        }
        // `have` holds what is not missing.
        let mut have = Bits::new(chunks);
        for (i, p) in pos.iter().enumerate() {
            if *p == u32::MAX {
                have.set(i);
            }
        }
        Picker {
            have,
            avail: vec![0; chunks],
            inflight: vec![0; chunks],
            failures: vec![0; chunks],
            claimed_until: vec![0; chunks],
            missing,
            pos,
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

    /// Chunks still missing.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// Whether every needed chunk arrived.
    pub fn done(&self) -> bool {
        self.missing.is_empty()
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
        for i in 0..bits.len().min(self.avail.len()) {
            if bits.get(i) {
                self.avail[i] = self.avail[i].saturating_add(1);
            }
        }
    }

    /// A peer with these chunks left (or its bitfield is being replaced).
    pub fn remove_peer(&mut self, bits: &Bits) {
        for i in 0..bits.len().min(self.avail.len()) {
            if bits.get(i) {
                self.avail[i] = self.avail[i].saturating_sub(1);
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
    pub fn claimed(&mut self, i: u32, until_ms: u64) {
        if let Some(c) = self.claimed_until.get_mut(i as usize) {
            *c = (*c).max(u32::try_from(until_ms).unwrap_or(u32::MAX));
        }
    }

    /// Whether peer `bits` holds anything still missing here.
    pub fn interesting(&self, bits: &Bits) -> bool {
        self.missing.iter().any(|&i| bits.get(i as usize))
    }

    /// The chunk to request from a peer holding `bits`, or none. `asked(i)`: this peer already
    /// has a request for `i` open. Marks the chunk requested.
    pub fn pick_for_peer(&mut self, bits: &Bits, asked: impl Fn(u32) -> bool) -> Option<u32> {
        let n = self.missing.len();
        if n == 0 {
            return None;
        }
        let start = (self.next_rand() % n as u64) as usize;
        let mut best: Option<(u16, u32)> = None;
        let mut seen = 0;
        for k in 0..n {
            let i = self.missing[(start + k) % n];
            let iu = i as usize;
            if self.inflight[iu] > 0 || !bits.get(iu) {
                continue;
            }
            let a = self.avail[iu];
            if best.is_none_or(|(b, _)| a < b) {
                best = Some((a, i));
            }
            seen += 1;
            if seen >= SAMPLE || a <= 1 {
                break;
            }
        }
        if best.is_none()
            && n <= ENDGAME_SCAN
            && self.missing.iter().all(|&i| self.inflight[i as usize] > 0)
        {
            // Endgame: everything missing is requested somewhere; double the oldest-looking
            // request this peer can serve.
            best = (0..n)
                .map(|k| self.missing[(start + k) % n])
                .find(|&i| {
                    let iu = i as usize;
                    bits.get(iu) && self.inflight[iu] < 2 && !asked(i)
                })
                .map(|i| (0, i));
        }
        let (_, i) = best?;
        self.inflight[i as usize] += 1;
        Some(i)
    }

    /// The chunk to fetch from the origin, or none: one no connected peer holds, nobody is
    /// fetching and nobody claimed, or one whose peer requests failed repeatedly. Marks it
    /// requested.
    pub fn pick_for_origin(&mut self, now_ms: u64) -> Option<u32> {
        let n = self.missing.len();
        if n == 0 {
            return None;
        }
        let start = (self.next_rand() % n as u64) as usize;
        let found = (0..n).map(|k| self.missing[(start + k) % n]).find(|&i| {
            let iu = i as usize;
            self.inflight[iu] == 0
                && ((self.avail[iu] == 0 && u64::from(self.claimed_until[iu]) <= now_ms)
                    || self.failures[iu] >= FAILURES_FOR_ORIGIN)
        })?;
        self.inflight[found as usize] += 1;
        Some(found)
    }

    /// A request for chunk `i` was withdrawn without fault (the peer choked us or left).
    pub fn released(&mut self, i: u32) {
        if let Some(n) = self.inflight.get_mut(i as usize) {
            *n = n.saturating_sub(1);
        }
    }

    /// A request for chunk `i` ended: `ok` if it delivered verified bytes. Returns whether the
    /// chunk is new here (false for the second copy of an endgame double).
    pub fn finished(&mut self, i: u32, ok: bool) -> bool {
        let iu = i as usize;
        if iu >= self.inflight.len() {
            return false;
        }
        self.inflight[iu] = self.inflight[iu].saturating_sub(1);
        if !ok {
            self.failures[iu] = self.failures[iu].saturating_add(1);
            return false;
        }
        if !self.have.set(iu) {
            return false;
        }
        let p = self.pos[iu];
        if p != u32::MAX {
            let p = p as usize;
            self.missing.swap_remove(p);
            if let Some(&moved) = self.missing.get(p) {
                self.pos[moved as usize] = p as u32;
            }
            self.pos[iu] = u32::MAX;
        }
        true
    }
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
        p.claimed(0, 1_000);
        p.claimed(1, 1_000);
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
