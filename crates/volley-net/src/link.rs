//! The reliable sequence of a peer link, independent of the path that carries it.
//!
//! QUIC streams are reliable per connection, but a peer link moves between connections (direct
//! ↔ relay) mid-session. So reliability is also kept end to end: the sender numbers every
//! message and keeps it until the peer acknowledges it ([`PeerDatagram::Ack`] carries the next
//! expected number); on a path change it re-sends what is unacknowledged on the new path. The
//! receiver delivers in order, exactly once, whichever path a copy arrived on.
//!
//! [`PeerDatagram::Ack`]: volley_proto::msg::PeerDatagram::Ack

use std::collections::{BTreeMap, VecDeque};

use volley_proto::msg::{PeerFrame, MAX_RELIABLE_PAYLOAD_BYTES};

/// Bounds of one reliable link.
#[derive(Debug, Clone, Copy)]
pub struct LinkLimits {
    /// Most messages sent but not yet acknowledged; past it, sending is refused (backpressure).
    pub unacked_messages_max: usize,
    /// Most bytes sent but not yet acknowledged.
    pub unacked_bytes_max: usize,
    /// Most messages held out of order at the receiver.
    pub reorder_messages_max: usize,
}

impl Default for LinkLimits {
    fn default() -> Self {
        LinkLimits {
            unacked_messages_max: 4096,
            unacked_bytes_max: 8 << 20,
            reorder_messages_max: 4096,
        }
    }
}

/// Why a reliable operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The send window is full: the peer has not acknowledged enough yet. Try again later.
    #[error("send window full ({messages} messages, {bytes} bytes unacknowledged)")]
    WindowFull {
        /// Unacknowledged messages.
        messages: usize,
        /// Unacknowledged bytes.
        bytes: usize,
    },
    /// The message is larger than a reliable message may be.
    #[error("message of {0} bytes exceeds the reliable limit of {MAX_RELIABLE_PAYLOAD_BYTES}")]
    TooLarge(usize),
    /// The peer sent a frame far beyond what the receive window allows (a broken or hostile
    /// peer); the frame was dropped.
    #[error("frame {seq} is beyond the receive window (next expected {next})")]
    BeyondWindow {
        /// The frame's number.
        seq: u64,
        /// The next expected number.
        next: u64,
    },
}

/// Sending half: numbers messages and keeps them until acknowledged.
#[derive(Debug, Default)]
pub struct ReliableSender {
    limits: LinkLimits,
    next_seq: u64,
    unacked: VecDeque<PeerFrame>,
    unacked_bytes: usize,
}

impl ReliableSender {
    /// A sender with the given limits.
    pub fn new(limits: LinkLimits) -> Self {
        ReliableSender {
            limits,
            ..Default::default()
        }
    }

    /// Numbers `payload` and keeps it for retransmission. Returns the frame to send now.
    pub fn push(&mut self, payload: Vec<u8>) -> Result<PeerFrame, LinkError> {
        if payload.len() > MAX_RELIABLE_PAYLOAD_BYTES {
            return Err(LinkError::TooLarge(payload.len()));
        }
        if self.unacked.len() >= self.limits.unacked_messages_max
            || self.unacked_bytes + payload.len() > self.limits.unacked_bytes_max
        {
            return Err(LinkError::WindowFull {
                messages: self.unacked.len(),
                bytes: self.unacked_bytes,
            });
        }
        let frame = PeerFrame {
            seq: self.next_seq,
            payload,
        };
        self.next_seq += 1;
        self.unacked_bytes += frame.payload.len();
        self.unacked.push_back(frame.clone());
        Ok(frame)
    }

    /// The peer has everything below `next_seq`. Acks for numbers never sent are ignored (a
    /// hostile peer cannot make us forget messages it did not receive... beyond what it claims).
    pub fn on_ack(&mut self, next_seq: u64) {
        let next_seq = next_seq.min(self.next_seq);
        while let Some(front) = self.unacked.front() {
            if front.seq >= next_seq {
                break;
            }
            self.unacked_bytes -= front.payload.len();
            self.unacked.pop_front();
        }
    }

    /// Messages sent but not yet acknowledged, oldest first: re-send these on a new path.
    pub fn unacked(&self) -> impl Iterator<Item = &PeerFrame> {
        self.unacked.iter()
    }

    /// Number of unacknowledged messages.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Bytes of unacknowledged messages.
    pub fn unacked_bytes(&self) -> usize {
        self.unacked_bytes
    }

    /// Messages numbered so far.
    pub fn sent(&self) -> u64 {
        self.next_seq
    }
}

/// Receiving half: orders, deduplicates and acknowledges.
#[derive(Debug, Default)]
pub struct ReliableReceiver {
    limits: LinkLimits,
    next_expected: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    duplicates: u64,
}

impl ReliableReceiver {
    /// A receiver with the given limits.
    pub fn new(limits: LinkLimits) -> Self {
        ReliableReceiver {
            limits,
            ..Default::default()
        }
    }

    /// Accepts a frame from any path; returns the payloads now deliverable, in order.
    pub fn on_frame(&mut self, frame: PeerFrame) -> Result<Vec<Vec<u8>>, LinkError> {
        if frame.seq < self.next_expected || self.pending.contains_key(&frame.seq) {
            self.duplicates += 1;
            return Ok(Vec::new());
        }
        let window = self.limits.reorder_messages_max as u64;
        if frame.seq >= self.next_expected.saturating_add(window) {
            return Err(LinkError::BeyondWindow {
                seq: frame.seq,
                next: self.next_expected,
            });
        }
        if frame.seq != self.next_expected {
            self.pending.insert(frame.seq, frame.payload);
            return Ok(Vec::new());
        }
        let mut out = vec![frame.payload];
        self.next_expected += 1;
        while let Some(p) = self.pending.remove(&self.next_expected) {
            out.push(p);
            self.next_expected += 1;
        }
        Ok(out)
    }

    /// The cumulative acknowledgement to send: the next number expected.
    pub fn next_expected(&self) -> u64 {
        self.next_expected
    }

    /// Copies received more than once (expected around path changes).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_limits_apply_and_acks_release() {
        let mut s = ReliableSender::new(LinkLimits {
            unacked_messages_max: 2,
            unacked_bytes_max: 100,
            reorder_messages_max: 8,
        });
        assert!(s.push(vec![0; 10]).is_ok());
        assert!(s.push(vec![0; 10]).is_ok());
        assert!(matches!(
            s.push(vec![0; 10]),
            Err(LinkError::WindowFull { .. })
        ));
        s.on_ack(1);
        assert_eq!(s.unacked_len(), 1);
        assert!(s.push(vec![0; 10]).is_ok());
        s.on_ack(u64::MAX);
        assert_eq!(s.unacked_len(), 0);
        assert_eq!(s.unacked_bytes(), 0);
        assert!(matches!(
            s.push(vec![0; MAX_RELIABLE_PAYLOAD_BYTES + 1]),
            Err(LinkError::TooLarge(_))
        ));
    }

    #[test]
    fn receiver_refuses_frames_far_ahead() {
        let mut r = ReliableReceiver::new(LinkLimits {
            reorder_messages_max: 4,
            ..Default::default()
        });
        let f = PeerFrame {
            seq: 4,
            payload: vec![],
        };
        assert!(matches!(r.on_frame(f), Err(LinkError::BeyondWindow { .. })));
    }

    proptest! {
        /// Whatever the paths do (drop, duplicate, reorder) as long as retransmission of
        /// unacknowledged frames eventually gets each through once, the receiver delivers every
        /// message exactly once and in order.
        #[test]
        fn exactly_once_in_order(
            n in 1usize..200,
            ops in proptest::collection::vec((0u8..4, any::<u16>()), 0..600),
        ) {
            let mut s = ReliableSender::new(LinkLimits::default());
            let mut r = ReliableReceiver::new(LinkLimits::default());
            let mut wire: Vec<PeerFrame> = Vec::new();
            let mut delivered = Vec::new();
            for i in 0..n {
                wire.push(s.push((i as u32).to_be_bytes().to_vec()).map_err(|e| TestCaseError::fail(e.to_string()))?);
            }
            for (op, x) in ops {
                if wire.is_empty() { break; }
                let i = x as usize % wire.len();
                match op {
                    0 => { wire.remove(i); }                     // lost
                    1 => { let f = wire[i].clone(); wire.push(f); } // duplicated
                    2 => { let f = wire.remove(i); wire.push(f); }  // reordered
                    _ => {                                            // delivered
                        let f = wire.remove(i);
                        delivered.extend(r.on_frame(f).map_err(|e| TestCaseError::fail(e.to_string()))?);
                        s.on_ack(r.next_expected());
                    }
                }
            }
            // Path change: everything unacknowledged goes again, in order, on a clean path.
            let resend: Vec<PeerFrame> = s.unacked().cloned().collect();
            for f in wire.into_iter().chain(resend) {
                delivered.extend(r.on_frame(f).map_err(|e| TestCaseError::fail(e.to_string()))?);
            }
            s.on_ack(r.next_expected());
            let expected: Vec<Vec<u8>> = (0..n as u32).map(|i| i.to_be_bytes().to_vec()).collect();
            prop_assert_eq!(delivered, expected);
            prop_assert_eq!(s.unacked_len(), 0);
        }
    }
}
