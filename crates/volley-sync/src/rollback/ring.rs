//! A fixed-capacity ring of values keyed by frame number.
//!
//! Every per-frame buffer in the rollback session and the referee is one of these, so each has a
//! capacity fixed at construction: a frame older than `newest - capacity` is simply gone, and a
//! lookup for it answers `None` instead of returning the value of another frame.
#![deny(clippy::indexing_slicing)]

/// Values keyed by frame; each entry remembers its frame so stale entries never alias.
#[derive(Debug, Clone)]
pub(crate) struct FrameRing<T> {
    slots: Vec<Option<(u32, T)>>,
}

impl<T> FrameRing<T> {
    /// A ring holding at most `capacity` frames (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let mut slots = Vec::with_capacity(capacity);
        slots.resize_with(capacity, || None);
        FrameRing { slots }
    }

    /// How many frames the ring holds.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn index(&self, frame: u32) -> usize {
        // `new` guarantees a non-zero length.
        frame as usize % self.slots.len().max(1)
    }

    /// The value stored for exactly `frame`.
    pub(crate) fn get(&self, frame: u32) -> Option<&T> {
        match self.slots.get(self.index(frame)) {
            Some(Some((f, value))) if *f == frame => Some(value),
            _ => None,
        }
    }

    /// Stores `value` for `frame`, evicting whatever frame shared its slot.
    pub(crate) fn insert(&mut self, frame: u32, value: T) {
        let index = self.index(frame);
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Some((frame, value));
        }
    }

    /// Removes and returns the value stored for exactly `frame`.
    pub(crate) fn remove(&mut self, frame: u32) -> Option<T> {
        let index = self.index(frame);
        let slot = self.slots.get_mut(index)?;
        match slot {
            Some((f, _)) if *f == frame => slot.take().map(|(_, value)| value),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stale_frames_do_not_alias() {
        let mut ring = FrameRing::new(4);
        ring.insert(1, "a");
        ring.insert(5, "b");
        assert_eq!(ring.get(1), None);
        assert_eq!(ring.get(5), Some(&"b"));
        assert_eq!(ring.remove(5), Some("b"));
        assert_eq!(ring.get(5), None);
        let empty: FrameRing<u8> = FrameRing::new(0);
        assert_eq!(empty.capacity(), 1);
        assert_eq!(empty.get(0), None);
    }
}
