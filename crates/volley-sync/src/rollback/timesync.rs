//! Time sync: how far this player runs ahead of each peer, and how long to wait so nobody runs
//! ahead (the GGPO model).
//!
//! A peer that runs ahead sees everyone else's inputs late, predicts more and rolls back more,
//! and makes its peers roll back too. Each batch says which frame its sender was at; adding the
//! one-way delay (half the RTT the caller measured) estimates where that peer is *now*, and the
//! difference to our own frame is one sample of our advantage. Only the player that is ahead
//! waits, and only half its lead at a time, because the peer behind does not speed up and the
//! samples lag behind the waits they measure.
#![deny(clippy::indexing_slicing)]

use crate::game::Slot;

/// Advantage samples kept per peer.
const SAMPLES_PER_PEER: usize = 32;

/// Samples needed before a recommendation: a few frames of evidence, not one noisy datagram.
const MIN_SAMPLES: usize = 8;

/// Leads below this many frames are jitter; waiting them out would cost more than it saves.
const MIN_LEAD_FRAMES: i64 = 2;

/// Most frames one recommendation asks to wait (150 ms at 60 Hz), so a lying peer cannot freeze
/// us; a larger lead is closed over several recommendations.
pub const MAX_WAIT_FRAMES: u32 = 9;

/// A sample further off than this (10 s at 60 Hz) is a lie or a bug and is clamped.
const SAMPLE_LIMIT_FRAMES: i64 = 600;

#[derive(Debug, Clone, Default)]
struct PeerClock {
    rtt_ms: u32,
    samples: Vec<i64>,
    next: usize,
}

/// Frame-advantage tracking for every peer of one player.
#[derive(Debug, Clone)]
pub(crate) struct TimeSync {
    peers: Vec<PeerClock>,
    tick_hz: u32,
}

impl TimeSync {
    pub(crate) fn new(players: usize, tick_hz: u32) -> Self {
        TimeSync {
            peers: vec![PeerClock::default(); players],
            tick_hz: tick_hz.max(1),
        }
    }

    pub(crate) fn set_rtt_ms(&mut self, slot: Slot, rtt_ms: u32) {
        if let Some(peer) = self.peers.get_mut(usize::from(slot)) {
            peer.rtt_ms = rtt_ms;
        }
    }

    /// Records that a batch sent by `slot` at its frame `remote_frame` arrived while we were at
    /// `local_frame`.
    pub(crate) fn on_remote_frame(&mut self, slot: Slot, local_frame: u32, remote_frame: u32) {
        let tick_hz = u64::from(self.tick_hz);
        let Some(peer) = self.peers.get_mut(usize::from(slot)) else {
            return;
        };
        // Half the RTT, in frames, rounded to nearest.
        let one_way_frames = (u64::from(peer.rtt_ms) * tick_hz + 1000) / 2000;
        let remote_now = i64::from(remote_frame) + one_way_frames as i64;
        let sample =
            (i64::from(local_frame) - remote_now).clamp(-SAMPLE_LIMIT_FRAMES, SAMPLE_LIMIT_FRAMES);
        if peer.samples.len() < SAMPLES_PER_PEER {
            peer.samples.push(sample);
        } else if let Some(old) = peer.samples.get_mut(peer.next) {
            *old = sample;
        }
        peer.next = (peer.next + 1) % SAMPLES_PER_PEER;
    }

    /// Our mean lead over `slot` in frames (positive: we are ahead), once there are samples.
    pub(crate) fn advantage(&self, slot: Slot) -> Option<i64> {
        let peer = self.peers.get(usize::from(slot))?;
        let n = i64::try_from(peer.samples.len()).ok().filter(|n| *n > 0)?;
        Some(peer.samples.iter().sum::<i64>() / n)
    }

    /// Frames to wait now (0 almost always). A non-zero answer clears the samples, since they
    /// describe the time before the wait.
    pub(crate) fn recommend(&mut self) -> u32 {
        let lead = self
            .peers
            .iter()
            .filter(|p| p.samples.len() >= MIN_SAMPLES)
            .map(|p| p.samples.iter().sum::<i64>() / p.samples.len().max(1) as i64)
            .max()
            .unwrap_or(0);
        if lead < MIN_LEAD_FRAMES {
            return 0;
        }
        for peer in &mut self.peers {
            peer.samples.clear();
            peer.next = 0;
        }
        u32::try_from(lead / 2)
            .unwrap_or(MAX_WAIT_FRAMES)
            .clamp(1, MAX_WAIT_FRAMES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_player_ahead_waits() {
        let mut ahead = TimeSync::new(2, 60);
        let mut behind = TimeSync::new(2, 60);
        ahead.set_rtt_ms(1, 100); // 3 frames one way
        behind.set_rtt_ms(0, 100);
        for f in 0..MIN_SAMPLES as u32 {
            // `ahead` is 10 frames ahead of `behind`.
            ahead.on_remote_frame(1, 110 + f, 100 + f - 3);
            behind.on_remote_frame(0, 100 + f, 110 + f - 3);
        }
        assert_eq!(ahead.advantage(1), Some(10));
        assert_eq!(behind.advantage(0), Some(-10));
        assert_eq!(behind.recommend(), 0);
        assert_eq!(ahead.recommend(), 5);
        // The samples described the time before the wait.
        assert_eq!(ahead.recommend(), 0);
        assert_eq!(ahead.advantage(1), None);
    }
}
