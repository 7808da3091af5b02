//! Lazily maintained sorted indexes and the slot liveness table they are checked against.
//!
//! Removing a ticket from the matchmaker touches no sorted index: its entries go stale, are
//! recognised as such through [`Seats`] when met, and are dropped at the next compaction. A new
//! ticket's entries wait in a pending buffer and are merged in at the next compaction, once per
//! tick. This keeps a ticket's whole life to a few appends, and the scans to contiguous memory.

use super::TicketId;

/// An index entry: order-preserving bits of the sort value (skill, or a numeric property), the
/// ticket id (unique; breaks ties oldest first) and the slot holding the ticket.
pub(super) type Key = (u64, u64, usize);

/// Maps a non-NaN `f64` to a `u64` with the same order.
pub(super) fn order_bits(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// Inverse of [`order_bits`].
pub(super) fn from_order_bits(bits: u64) -> f64 {
    f64::from_bits(if bits >> 63 == 1 {
        bits & !(1 << 63)
    } else {
        !bits
    })
}

/// What the scans need to know about the ticket in a slot, kept dense so that most candidates
/// are judged without touching their [`Entry`](super::Entry).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Seat {
    /// `id << 1 | awake`, 0 for a free slot (ticket ids start at 1).
    ticket: u64,
    pub(super) enqueued_at_ms: u64,
    pub(super) players: u32,
    /// Where the ticket was in its pool's open index after the last compaction (a hint: check
    /// it before use).
    pub(super) open_position: u32,
    /// The regions within the ticket's latency limit as of the current tick, as a set of bits
    /// (region symbol mod 64); all ones for a ticket without latencies. Two tickets can share
    /// a region only if their masks intersect.
    pub(super) regions: u64,
}

impl Seat {
    pub(super) fn new(id: TicketId, enqueued_at_ms: u64, players: u32) -> Self {
        Self {
            ticket: id.0 << 1 | 1,
            enqueued_at_ms,
            players,
            open_position: u32::MAX,
            regions: u64::MAX,
        }
    }
}

impl Seat {
    /// Whether this seat holds ticket `id`, awake.
    pub(super) fn is_awake(&self, id: u64) -> bool {
        self.ticket == id << 1 | 1
    }
}

/// A [`Seat`] per slot.
#[derive(Debug, Default)]
pub(super) struct Seats(Vec<Seat>);

impl Seats {
    pub(super) fn set(&mut self, slot: usize, seat: Seat) {
        if self.0.len() <= slot {
            self.0.resize(slot + 1, Seat::default());
        }
        if let Some(s) = self.0.get_mut(slot) {
            *s = seat;
        }
    }

    pub(super) fn set_awake(&mut self, slot: usize, awake: bool) {
        if let Some(s) = self.0.get_mut(slot).filter(|s| s.ticket != 0) {
            s.ticket = s.ticket & !1 | u64::from(awake);
        }
    }

    pub(super) fn set_regions(&mut self, slot: usize, regions: u64) {
        if let Some(s) = self.0.get_mut(slot) {
            s.regions = regions;
        }
    }

    /// Records the open-index position of every entry of `index`.
    pub(super) fn record_positions(&mut self, index: &SortedIndex) {
        for (position, &(_, _, slot)) in index.items().iter().enumerate() {
            if let Some(s) = self.0.get_mut(slot) {
                s.open_position = u32::try_from(position).unwrap_or(u32::MAX);
            }
        }
    }

    pub(super) fn clear(&mut self, slot: usize) {
        if let Some(s) = self.0.get_mut(slot) {
            *s = Seat::default();
        }
    }

    pub(super) fn get(&self, slot: usize) -> Option<&Seat> {
        self.0.get(slot)
    }

    /// Whether ticket `id` is still queued in `slot`.
    pub(super) fn holds(&self, slot: usize, id: u64) -> bool {
        self.0
            .get(slot)
            .is_some_and(|s| s.ticket >> 1 == id && s.ticket != 0)
    }

    /// Whether ticket `id` is still queued in `slot` and awake.
    pub(super) fn awake(&self, slot: usize, id: u64) -> bool {
        self.0.get(slot).is_some_and(|s| s.is_awake(id))
    }
}

/// A sorted list of [`Key`]s with lazy deletion and batched insertion.
#[derive(Debug, Default)]
pub(super) struct SortedIndex {
    /// Sorted and deduplicated as of the last compaction; may hold stale entries.
    items: Vec<Key>,
    /// Added since the last compaction, unsorted.
    pending: Vec<Key>,
    /// Roughly how many of `items` went stale since the last compaction.
    stale: usize,
    /// The previous `items` allocation, reused by the next compaction.
    spare: Vec<Key>,
}

impl SortedIndex {
    pub(super) fn push(&mut self, key: Key) {
        self.pending.push(key);
    }

    /// Notes that an entry went stale (so that compaction eventually drops it).
    pub(super) fn mark_stale(&mut self) {
        self.stale += 1;
    }

    /// The entries as of the last compaction, sorted, some possibly stale.
    pub(super) fn items(&self) -> &[Key] {
        &self.items
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.pending.is_empty()
    }

    /// Merges the pending entries in and drops the entries `live` rejects, if there are
    /// pending entries or enough stale ones to be worth a pass. O(n + p log p).
    /// Returns whether it made a pass.
    pub(super) fn compact(&mut self, live: impl Fn(&Key) -> bool) -> bool {
        if self.pending.is_empty() && self.stale.saturating_mul(4) <= self.items.len() {
            return false;
        }
        self.pending.sort_unstable();
        let mut merged = std::mem::take(&mut self.spare);
        merged.clear();
        merged.reserve(self.items.len() + self.pending.len());
        let mut old = self.items.iter().peekable();
        let mut new = self.pending.iter().peekable();
        loop {
            let next = match (old.peek(), new.peek()) {
                (Some(a), Some(b)) if a <= b => old.next(),
                (Some(_), Some(_)) | (None, Some(_)) => new.next(),
                (Some(_), None) => old.next(),
                (None, None) => break,
            };
            if let Some(&key) = next {
                if merged.last() != Some(&key) && live(&key) {
                    merged.push(key);
                }
            }
        }
        self.spare = std::mem::replace(&mut self.items, merged);
        self.spare.clear();
        if self.spare.capacity() > 4 * self.items.len().max(64) {
            // Do not hold on to the memory of a list that shrank a lot.
            self.spare = Vec::new();
        }
        self.pending.clear();
        self.stale = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_bits_preserve_order_and_round_trip() {
        let values = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            3.0,
            1e300,
            f64::INFINITY,
        ];
        for pair in values.windows(2) {
            assert!(order_bits(pair[0]) < order_bits(pair[1]), "{pair:?}");
        }
        for v in values {
            assert_eq!(from_order_bits(order_bits(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn compaction_merges_dedups_and_drops_stale() {
        let mut index = SortedIndex::default();
        for k in [(5, 1, 0), (1, 2, 1), (3, 3, 2), (1, 2, 1)] {
            index.push(k);
        }
        assert!(index.items().is_empty());
        index.compact(|_| true);
        assert_eq!(index.items(), &[(1, 2, 1), (3, 3, 2), (5, 1, 0)]);
        index.push((4, 4, 3));
        index.compact(|k| k.1 != 3);
        assert_eq!(index.items(), &[(1, 2, 1), (4, 4, 3), (5, 1, 0)]);
        // Nothing pending and little stale: no pass (the predicate is not consulted).
        index.compact(|_| false);
        assert_eq!(index.items().len(), 3);
        index.mark_stale();
        index.compact(|k| k.1 != 1);
        assert_eq!(index.items(), &[(1, 2, 1), (4, 4, 3)]);
        assert!(!index.is_empty());
    }

    #[test]
    fn seats_track_liveness() {
        let mut seats = Seats::default();
        seats.set(3, Seat::new(TicketId(7), 100, 2));
        assert!(seats.holds(3, 7) && seats.awake(3, 7));
        assert_eq!(
            seats.get(3).map(|s| (s.enqueued_at_ms, s.players)),
            Some((100, 2))
        );
        assert!(!seats.holds(3, 8) && !seats.holds(2, 0) && !seats.holds(99, 7));
        seats.set_awake(3, false);
        assert!(seats.holds(3, 7) && !seats.awake(3, 7));
        seats.set_awake(3, true);
        assert!(seats.awake(3, 7));
        // A free slot cannot be woken into holding ticket 0.
        seats.set_awake(2, true);
        assert!(!seats.holds(2, 0));
        seats.clear(3);
        assert!(!seats.holds(3, 7));
        assert!(
            !seats.holds(3, 0),
            "a free slot holds no ticket, not even id 0"
        );
    }
}
