//! The rollback messages and their bytes: input batches (peer to peer and peer to node),
//! checksum reports (peer to node) and final inputs (node to peers).
//!
//! Every decoder checks each count against a named limit before allocating and returns a
//! [`WireError`] instead of panicking; inputs are decoded by the game's own
//! [`Game::decode_input`], so bytes that cannot be an input are refused here, at the edge.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use volley_proto::codec::{Reader, Writer};
use volley_proto::DecodeError;

use crate::game::{Game, Slot};

/// Most players a rollback match can have. Masks of players are `u16`.
pub const MAX_PLAYERS: usize = 16;

/// Most inputs one [`InputBatch`] carries. Large enough for the redundancy window plus a peer
/// that fell a whole prediction window behind (see [`super::MAX_PREDICTION_FRAMES`]); small
/// enough that a batch stays one datagram (128 × 4 bytes).
pub const MAX_BATCH_INPUTS: usize = 128;

/// Most frames one [`FinalInputs`] message carries (64 × 16 players × 4 bytes = 4 KiB).
pub const MAX_FINAL_FRAMES: usize = 64;

const KIND_INPUT_BATCH: u8 = 0x49; // 'I'
const KIND_CHECKSUM_REPORT: u8 = 0x43; // 'C'
const KIND_FINAL_INPUTS: u8 = 0x46; // 'F'

/// Why rollback bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes are malformed (truncated, an over-long count, trailing bytes...).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The first byte names another message.
    #[error("message kind {found:#04x}, expected {expected:#04x}")]
    Kind {
        /// Kind byte found.
        found: u8,
        /// Kind byte this decoder reads.
        expected: u8,
    },
    /// The game refused the bytes of one input (a forged or broken packet).
    #[error("input {index} is not a valid input for this game")]
    BadInput {
        /// Position of the input in the message.
        index: usize,
    },
    /// A slot or player count outside `0..MAX_PLAYERS`.
    #[error("slot or player count {found} out of range (max {MAX_PLAYERS} players)")]
    Slot {
        /// The value found.
        found: u64,
    },
    /// A frame number that does not fit in 32 bits, or a range of frames that would overflow.
    #[error("frame number out of range")]
    FrameOverflow,
}

/// A player's recent inputs, sent every frame to every peer and to the node.
///
/// Each batch repeats the last few inputs (the session's redundancy), and more when a peer's
/// acknowledgement shows it is missing older ones, so a lost datagram costs nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputBatch<I> {
    /// The sender's slot. The receiver checks it against the connection it came from.
    pub slot: Slot,
    /// Frame of `inputs[0]`.
    pub first_frame: u32,
    /// The frame the sender was about to simulate when it sent this (for time sync).
    pub sender_frame: u32,
    /// The sender has every player's inputs for all frames below this (an acknowledgement for
    /// all its peers at once).
    pub ack_frame: u32,
    /// Inputs for `first_frame..first_frame + inputs.len()`; at most [`MAX_BATCH_INPUTS`].
    pub inputs: Vec<I>,
}

impl<I: Copy> InputBatch<I> {
    /// One past the last frame this batch carries (saturating).
    pub fn end_frame(&self) -> u32 {
        let len = u32::try_from(self.inputs.len()).unwrap_or(u32::MAX);
        self.first_frame.saturating_add(len)
    }

    /// Encodes the batch. Inputs beyond [`MAX_BATCH_INPUTS`] are a programmer error and are
    /// cut (the newest are kept, since they are the ones nobody has yet).
    pub fn encode<G: Game<Input = I>>(&self) -> Vec<u8> {
        let skip = self.inputs.len().saturating_sub(MAX_BATCH_INPUTS);
        let first_frame = self
            .first_frame
            .saturating_add(u32::try_from(skip).unwrap_or(u32::MAX));
        let inputs = self.inputs.iter().skip(skip);
        let mut w = Writer::with_capacity(16 + 4 * self.inputs.len().min(MAX_BATCH_INPUTS));
        w.u8(KIND_INPUT_BATCH)
            .u8(self.slot)
            .varint(u64::from(first_frame))
            .varint(u64::from(self.sender_frame))
            .varint(u64::from(self.ack_frame))
            .varint(inputs.len() as u64);
        for input in inputs {
            w.raw(&G::encode_input(input));
        }
        w.into_bytes()
    }

    /// Decodes a batch; never panics.
    pub fn decode<G: Game<Input = I>>(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        expect_kind(&mut r, KIND_INPUT_BATCH)?;
        let slot = read_slot(&mut r)?;
        let first_frame = read_frame(&mut r)?;
        let sender_frame = read_frame(&mut r)?;
        let ack_frame = read_frame(&mut r)?;
        let count = r.len("input batch", MAX_BATCH_INPUTS)?;
        let last = u32::try_from(count).map_err(|_| WireError::FrameOverflow)?;
        first_frame
            .checked_add(last)
            .ok_or(WireError::FrameOverflow)?;
        let inputs = read_inputs::<G>(&mut r, count, 0)?;
        r.finish()?;
        Ok(InputBatch {
            slot,
            first_frame,
            sender_frame,
            ack_frame,
            inputs,
        })
    }
}

/// A player's checksum of its confirmed state at one frame, sent to the node periodically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChecksumReport {
    /// The reporting player's slot.
    pub slot: Slot,
    /// The state's frame.
    pub frame: u32,
    /// [`Game::checksum`] of the state at that frame.
    pub checksum: u64,
}

impl ChecksumReport {
    /// Encodes the report.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(16);
        w.u8(KIND_CHECKSUM_REPORT)
            .u8(self.slot)
            .varint(u64::from(self.frame))
            .u64(self.checksum);
        w.into_bytes()
    }

    /// Decodes a report; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        expect_kind(&mut r, KIND_CHECKSUM_REPORT)?;
        let slot = read_slot(&mut r)?;
        let frame = read_frame(&mut r)?;
        let checksum = r.u64()?;
        r.finish()?;
        Ok(ChecksumReport {
            slot,
            frame,
            checksum,
        })
    }
}

/// The inputs the node's referee simulated, frame by frame: the final word on those frames.
///
/// The node sends these to every player on its reliable, ordered stream. A player adopts them
/// over anything it heard from peers, so everyone ends up confirming exactly what the referee
/// simulated, including the frames where the referee had to fill in a missing input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalInputs<I> {
    /// Frame of the first row.
    pub first_frame: u32,
    /// Players per frame (1..=[`MAX_PLAYERS`]).
    pub players: u8,
    /// Row-major inputs: `players` inputs per frame.
    pub inputs: Vec<I>,
    /// Per frame, the mask of slots whose input the referee filled in (it had not arrived in
    /// time, or the player was expelled).
    pub filled: Vec<u16>,
    /// Slots the referee has expelled: their input is `Default` from the end of this message on.
    pub expelled: u16,
}

impl<I: Copy> FinalInputs<I> {
    /// How many frames this message carries.
    pub fn frames(&self) -> usize {
        self.filled.len()
    }

    /// One past the last frame this message carries (saturating).
    pub fn end_frame(&self) -> u32 {
        let len = u32::try_from(self.frames()).unwrap_or(u32::MAX);
        self.first_frame.saturating_add(len)
    }

    /// The inputs of the `index`-th frame of this message, one per player.
    pub fn row(&self, index: usize) -> Option<&[I]> {
        let players = usize::from(self.players);
        if players == 0 {
            return None;
        }
        self.inputs.chunks_exact(players).nth(index)
    }

    /// Encodes the message. A message longer than [`MAX_FINAL_FRAMES`] or with rows that do not
    /// match `players` is a programmer error; only the whole rows up to the limit are written.
    pub fn encode<G: Game<Input = I>>(&self) -> Vec<u8> {
        let players = usize::from(self.players).clamp(1, MAX_PLAYERS);
        let rows = self
            .frames()
            .min(MAX_FINAL_FRAMES)
            .min(self.inputs.len() / players);
        let mut w = Writer::with_capacity(16 + rows * (2 + 4 * players));
        w.u8(KIND_FINAL_INPUTS)
            .varint(u64::from(self.first_frame))
            .u8(players as u8)
            .u16(self.expelled)
            .varint(rows as u64);
        for (row, filled) in self
            .inputs
            .chunks_exact(players)
            .zip(&self.filled)
            .take(rows)
        {
            w.u16(*filled);
            for input in row {
                w.raw(&G::encode_input(input));
            }
        }
        w.into_bytes()
    }

    /// Decodes a message; never panics.
    pub fn decode<G: Game<Input = I>>(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        expect_kind(&mut r, KIND_FINAL_INPUTS)?;
        let first_frame = read_frame(&mut r)?;
        let players = r.u8()?;
        if players == 0 || usize::from(players) > MAX_PLAYERS {
            return Err(WireError::Slot {
                found: u64::from(players),
            });
        }
        let expelled = r.u16()?;
        let rows = r.len("final inputs", MAX_FINAL_FRAMES)?;
        let rows_u32 = u32::try_from(rows).map_err(|_| WireError::FrameOverflow)?;
        first_frame
            .checked_add(rows_u32)
            .ok_or(WireError::FrameOverflow)?;
        let players_n = usize::from(players);
        let mut inputs = Vec::with_capacity(rows * players_n);
        let mut filled = Vec::with_capacity(rows);
        for row in 0..rows {
            filled.push(r.u16()?);
            inputs.extend(read_inputs::<G>(&mut r, players_n, row * players_n)?);
        }
        r.finish()?;
        Ok(FinalInputs {
            first_frame,
            players,
            inputs,
            filled,
            expelled,
        })
    }
}

fn expect_kind(r: &mut Reader<'_>, expected: u8) -> Result<(), WireError> {
    let found = r.u8()?;
    if found != expected {
        return Err(WireError::Kind { found, expected });
    }
    Ok(())
}

fn read_slot(r: &mut Reader<'_>) -> Result<Slot, WireError> {
    let slot = r.u8()?;
    if usize::from(slot) >= MAX_PLAYERS {
        return Err(WireError::Slot {
            found: u64::from(slot),
        });
    }
    Ok(slot)
}

fn read_frame(r: &mut Reader<'_>) -> Result<u32, WireError> {
    u32::try_from(r.varint()?).map_err(|_| WireError::FrameOverflow)
}

/// Reads `count` inputs; `index_base` numbers them in errors.
fn read_inputs<G: Game>(
    r: &mut Reader<'_>,
    count: usize,
    index_base: usize,
) -> Result<Vec<G::Input>, WireError> {
    // The count was checked against a limit; check the bytes exist before allocating.
    if r.remaining() < count.saturating_mul(4) {
        return Err(DecodeError::Truncated.into());
    }
    let mut inputs = Vec::with_capacity(count);
    for i in 0..count {
        let bytes = r.array::<4>()?;
        let input = G::decode_input(bytes).ok_or(WireError::BadInput {
            index: index_base + i,
        })?;
        inputs.push(input);
    }
    Ok(inputs)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::rollback::test_game::{Counter, Move};
    use proptest::prelude::*;

    fn any_move() -> impl Strategy<Value = Move> {
        (-3i8..=3).prop_map(Move)
    }

    proptest! {
        #[test]
        fn batch_round_trip(
            slot in 0u8..16,
            first_frame in 0u32..1_000_000,
            sender_frame in any::<u32>(),
            ack_frame in any::<u32>(),
            inputs in proptest::collection::vec(any_move(), 0..MAX_BATCH_INPUTS),
        ) {
            let batch = InputBatch { slot, first_frame, sender_frame, ack_frame, inputs };
            let bytes = batch.encode::<Counter>();
            prop_assert_eq!(InputBatch::decode::<Counter>(&bytes), Ok(batch));
        }

        #[test]
        fn report_round_trip(slot in 0u8..16, frame in any::<u32>(), checksum in any::<u64>()) {
            let report = ChecksumReport { slot, frame, checksum };
            prop_assert_eq!(ChecksumReport::decode(&report.encode()), Ok(report));
        }

        #[test]
        fn final_round_trip(
            first_frame in 0u32..1_000_000,
            players in 1u8..=16,
            rows in 0usize..MAX_FINAL_FRAMES,
            expelled in any::<u16>(),
            seed in any::<u64>(),
        ) {
            let mut x = seed;
            let mut next = || { x = x.wrapping_mul(6364136223846793005).wrapping_add(1); x };
            let inputs = (0..rows * usize::from(players))
                .map(|_| Move((next() % 7) as i8 - 3))
                .collect();
            let filled = (0..rows).map(|_| next() as u16).collect();
            let msg = FinalInputs { first_frame, players, inputs, filled, expelled };
            prop_assert_eq!(FinalInputs::decode::<Counter>(&msg.encode::<Counter>()), Ok(msg));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = InputBatch::<Move>::decode::<Counter>(&bytes);
            let _ = ChecksumReport::decode(&bytes);
            let _ = FinalInputs::<Move>::decode::<Counter>(&bytes);
        }

        #[test]
        fn corrupted_batches_never_panic(
            inputs in proptest::collection::vec(any_move(), 0..16),
            flip in any::<usize>(),
            value in any::<u8>(),
            cut in any::<usize>(),
        ) {
            let batch = InputBatch { slot: 1, first_frame: 7, sender_frame: 9, ack_frame: 3, inputs };
            let mut bytes = batch.encode::<Counter>();
            let i = flip % bytes.len();
            bytes[i] = value;
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = InputBatch::<Move>::decode::<Counter>(&bytes);
        }
    }

    #[test]
    fn refuses_what_cannot_be() {
        let batch = InputBatch {
            slot: 0,
            first_frame: 0,
            sender_frame: 0,
            ack_frame: 0,
            inputs: vec![Move(1)],
        };
        let mut bytes = batch.encode::<Counter>();
        // An input the game refuses.
        let last = bytes.len() - 1;
        bytes[last - 3] = 0x7f;
        assert_eq!(
            InputBatch::<Move>::decode::<Counter>(&bytes),
            Err(WireError::BadInput { index: 0 })
        );
        // A slot out of range.
        let mut bytes = batch.encode::<Counter>();
        bytes[1] = 16;
        assert_eq!(
            InputBatch::<Move>::decode::<Counter>(&bytes),
            Err(WireError::Slot { found: 16 })
        );
        // A frame range that would overflow.
        let far = InputBatch {
            first_frame: u32::MAX,
            ..batch.clone()
        };
        assert_eq!(
            InputBatch::<Move>::decode::<Counter>(&far.encode::<Counter>()),
            Err(WireError::FrameOverflow)
        );
        // The wrong message.
        let report = ChecksumReport {
            slot: 0,
            frame: 1,
            checksum: 2,
        }
        .encode();
        assert!(matches!(
            InputBatch::<Move>::decode::<Counter>(&report),
            Err(WireError::Kind { .. })
        ));
        // A huge count with no bytes behind it allocates nothing and fails.
        let bytes = [KIND_INPUT_BATCH, 0, 0, 0, 0, 0x40, 0x80];
        assert!(InputBatch::<Move>::decode::<Counter>(&bytes).is_err());
    }
}
