//! Packet counters shared by the emulators: [`DirectionStats`] as seen by a caller, and the live
//! [`DirectionCounters`] an emulator (here or in another crate) updates as packets pass.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::impair::{DropReason, Verdict};

/// Counters for one direction of an emulated link, as seen at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets that entered the link.
    pub packets_in: u64,
    /// Bytes that entered the link.
    pub bytes_in: u64,
    /// Packets delivered at the far end (a duplicate counts twice).
    pub packets_out: u64,
    /// Bytes delivered at the far end.
    pub bytes_out: u64,
    /// Packets lost by the impairment model (random and burst loss).
    pub dropped_loss: u64,
    /// Packets dropped because a queue was full: the profile's serialization queue or the
    /// emulator's own bound on packets in flight.
    pub dropped_queue: u64,
    /// Packets dropped because the link was blackholed, on entry or while in flight.
    pub dropped_blackhole: u64,
    /// Packets that could not be written at the far end (socket or device error).
    pub dropped_error: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
}

impl DirectionStats {
    /// All dropped packets, whatever the reason.
    pub fn packets_dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_queue + self.dropped_blackhole + self.dropped_error
    }
}

/// Lock-free live counters behind [`DirectionStats`].
#[derive(Debug, Default)]
pub struct DirectionCounters {
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    packets_out: AtomicU64,
    bytes_out: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_queue: AtomicU64,
    dropped_blackhole: AtomicU64,
    dropped_error: AtomicU64,
    duplicated: AtomicU64,
}

/// Why an emulator (not the model) dropped a packet.
#[derive(Debug, Clone, Copy)]
pub enum EmulatorDrop {
    /// The link was blackholed, on entry or while the packet was in flight.
    Blackhole,
    /// The emulator's own bound on packets in flight was reached.
    Queue,
    /// The packet could not be written at the far end.
    Error,
}

fn bump(counter: &AtomicU64, by: u64) {
    // Relaxed: these are statistics; nobody synchronizes on them.
    counter.fetch_add(by, Ordering::Relaxed);
}

impl DirectionCounters {
    /// Counts a packet of `len` bytes entering the link.
    pub fn received(&self, len: usize) {
        bump(&self.packets_in, 1);
        bump(&self.bytes_in, len as u64);
    }

    /// Counts a packet (or copy) of `len` bytes delivered at the far end.
    pub fn delivered(&self, len: usize) {
        bump(&self.packets_out, 1);
        bump(&self.bytes_out, len as u64);
    }

    /// Records what the model decided (loss or duplication).
    pub fn verdict(&self, verdict: &Verdict) {
        match verdict {
            Verdict::Drop(DropReason::QueueFull) => bump(&self.dropped_queue, 1),
            Verdict::Drop(_) => bump(&self.dropped_loss, 1),
            Verdict::Duplicate(..) => bump(&self.duplicated, 1),
            Verdict::Deliver(_) => {}
        }
    }

    /// Counts a packet the emulator itself dropped.
    pub fn dropped(&self, why: EmulatorDrop) {
        let counter = match why {
            EmulatorDrop::Blackhole => &self.dropped_blackhole,
            EmulatorDrop::Queue => &self.dropped_queue,
            EmulatorDrop::Error => &self.dropped_error,
        };
        bump(counter, 1);
    }

    /// The counters as they are now.
    pub fn snapshot(&self) -> DirectionStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            packets_in: get(&self.packets_in),
            bytes_in: get(&self.bytes_in),
            packets_out: get(&self.packets_out),
            bytes_out: get(&self.bytes_out),
            dropped_loss: get(&self.dropped_loss),
            dropped_queue: get(&self.dropped_queue),
            dropped_blackhole: get(&self.dropped_blackhole),
            dropped_error: get(&self.dropped_error),
            duplicated: get(&self.duplicated),
        }
    }
}

/// Derives independent per-direction / per-client seeds from one user seed (splitmix64), so
/// that two directions with the same profile do not lose the same packets.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
