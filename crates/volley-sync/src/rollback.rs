//! A GGPO-style rollback session for one player: predict, simulate, and roll back when the
//! inputs that arrive differ from the predictions.
//!
//! [`Rollback`] is sans-IO: the caller hands it local inputs, the batches peers sent
//! ([`InputBatch`]), the node referee's [`FinalInputs`] and measured RTTs, and calls
//! [`Rollback::advance`] once per tick of its own frame clock. It hands back the batch to send
//! ([`Rollback::outgoing_inputs`]), checksum reports for the node
//! ([`Rollback::take_checksum_reports`]) and how many frames to wait
//! ([`Rollback::frames_to_wait`]).
//!
//! Frames: the input "for frame `f`" is what the step from the state at frame `f` to the state
//! at frame `f + 1` consumes; [`Game::frame`] of a state is the number of steps behind it.
//!
//! Three frontiers move forward:
//! - the *input-complete* frame: every player's input is known for all frames below it (from
//!   peers or from the referee). Prediction never runs more than
//!   [`RollbackConfig::max_prediction_frames`] past it: beyond that, [`Rollback::advance`]
//!   stalls.
//! - the *finalized* frame: the referee has said which inputs it simulated for every frame below
//!   it ([`FinalInputs`]). Its word beats anything a peer said, so every honest player confirms
//!   exactly what the referee simulated, including inputs the referee had to fill in. Without a
//!   referee ([`RollbackConfig::referee_finality`] off) input-complete frames are final.
//! - the *confirmed* frame: the newest state whose inputs are all final and which was simulated
//!   with them. Its checksum is kept ([`Rollback::checksum_at`]) and reported to the node.
//!
//! # Example
//! ```
//! # use volley_sync::game::{EntityView, Game};
//! # #[derive(Clone)] struct Walk { frame: u32, x: i64 }
//! # impl Game for Walk {
//! #     type Input = i8;
//! #     fn step(&mut self, inputs: &[i8]) { for i in inputs { self.x += i64::from(*i) } self.frame += 1 }
//! #     fn frame(&self) -> u32 { self.frame }
//! #     fn checksum(&self) -> u64 { self.x as u64 ^ u64::from(self.frame) << 40 }
//! #     fn encode_input(i: &i8) -> [u8; 4] { [*i as u8, 0, 0, 0] }
//! #     fn decode_input(b: [u8; 4]) -> Option<i8> { Some(b[0] as i8) }
//! #     fn entities(&self) -> Vec<EntityView> { Vec::new() }
//! # }
//! use volley_sync::rollback::{Rollback, RollbackConfig};
//!
//! let config = RollbackConfig { referee_finality: false, ..RollbackConfig::default() };
//! let mut a = Rollback::new(Walk { frame: 0, x: 0 }, 2, 0, config).unwrap();
//! let mut b = Rollback::new(Walk { frame: 0, x: 0 }, 2, 1, config).unwrap();
//! for _ in 0..20 {
//!     a.add_local_input(1).unwrap();
//!     b.add_local_input(-1).unwrap();
//!     a.on_remote_batch(1, &b.outgoing_inputs()).unwrap();
//!     b.on_remote_batch(0, &a.outgoing_inputs()).unwrap();
//!     a.advance().unwrap();
//!     b.advance().unwrap();
//! }
//! assert_eq!(a.checksum_at(15), b.checksum_at(15));
//! ```
#![deny(clippy::indexing_slicing)]

mod cost;
pub(crate) mod ring;
#[cfg(test)]
pub(crate) mod test_game;
#[cfg(test)]
mod tests;
mod timesync;
mod wire;

use std::collections::VecDeque;

pub use cost::{
    max_one_way_ms_without_stall, max_rtt_ms_without_input_delay, resimulation_cost, ResimCost,
};
pub use timesync::MAX_WAIT_FRAMES;
pub use wire::{
    ChecksumReport, FinalInputs, InputBatch, WireError, MAX_BATCH_INPUTS, MAX_FINAL_FRAMES,
    MAX_PLAYERS,
};

use crate::game::{Game, Slot};
use ring::FrameRing;
use timesync::TimeSync;

/// The smallest prediction window a session accepts: with fewer frames, ordinary jitter on a
/// good link already stalls the game.
pub const MIN_PREDICTION_FRAMES: u32 = 8;
/// The largest prediction window (1 s at 60 Hz): beyond it a rollback costs more frames of
/// simulation than a tick has time for, for any game worth playing.
pub const MAX_PREDICTION_FRAMES: u32 = 60;
/// The largest input delay (250 ms at 60 Hz).
pub const MAX_INPUT_DELAY_FRAMES: u32 = 15;
/// The largest state history (10 s at 60 Hz): one saved state per frame.
pub const MAX_STATE_HISTORY_FRAMES: u32 = 600;
/// The largest checksum history kept for [`Rollback::checksum_at`].
pub const MAX_CHECKSUM_HISTORY_FRAMES: u32 = 3600;
/// Checksum reports waiting for [`Rollback::take_checksum_reports`]; the oldest go first.
pub const MAX_PENDING_REPORTS: usize = 64;
/// Referee frames received ahead of what this player can store yet (a player far behind the
/// node); beyond this the player must resync.
pub const MAX_REFEREE_BACKLOG_FRAMES: usize = 1024;

/// Frames of slack on top of the computed window of acceptable remote inputs, for the order in
/// which a tick adds, receives and advances.
const ACCEPT_SLACK_FRAMES: u32 = 4;

/// How a [`Rollback`] session behaves. Every player in a match should use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollbackConfig {
    /// Frames between sampling a local input and applying it (default 2). Each frame of delay
    /// hides a frame of latency from prediction at the cost of a frame of responsiveness.
    pub input_delay_frames: u32,
    /// How many frames past the input-complete frame a player may predict before stalling
    /// (default 8, at least [`MIN_PREDICTION_FRAMES`]).
    pub max_prediction_frames: u32,
    /// How many of the newest local inputs each batch repeats (default 8), so losing a few
    /// datagrams in a row costs nothing.
    pub redundancy: u32,
    /// The fixed simulation rate (default 60).
    pub tick_hz: u32,
    /// Whether a node referee has the final word on inputs (default true). When off, inputs
    /// from peers are final as soon as they arrive (pure peer-to-peer).
    pub referee_finality: bool,
    /// Saved states, one per frame (default 120, 2 s at 60 Hz). With a referee this bounds how
    /// far the player may run ahead of the referee's final inputs (the node's RTT plus its fill
    /// wait); beyond it the session stalls.
    pub state_history_frames: u32,
    /// Report the confirmed checksum every this many frames (default 10; 0 = never).
    pub checksum_interval_frames: u32,
    /// Confirmed checksums kept for [`Rollback::checksum_at`] (default 256).
    pub checksum_history_frames: u32,
}

impl Default for RollbackConfig {
    fn default() -> Self {
        RollbackConfig {
            input_delay_frames: 2,
            max_prediction_frames: MIN_PREDICTION_FRAMES,
            redundancy: 8,
            tick_hz: 60,
            referee_finality: true,
            state_history_frames: 120,
            checksum_interval_frames: 10,
            checksum_history_frames: 256,
        }
    }
}

/// A configuration or match shape a session cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Player count outside `1..=MAX_PLAYERS`.
    #[error("{players} players; a rollback match has 1 to {MAX_PLAYERS}")]
    Players {
        /// The count given.
        players: usize,
    },
    /// The local slot is not one of the players.
    #[error("local slot {slot} is not below the player count {players}")]
    LocalSlot {
        /// The slot given.
        slot: Slot,
        /// The player count.
        players: usize,
    },
    /// A value outside its documented range.
    #[error("{what} = {value} is outside {min}..={max}")]
    OutOfRange {
        /// The field.
        what: &'static str,
        /// The value given.
        value: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
}

impl RollbackConfig {
    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |what, value: u32, min: u32, max: u32| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    what,
                    value,
                    min,
                    max,
                })
            }
        };
        check(
            "max_prediction_frames",
            self.max_prediction_frames,
            MIN_PREDICTION_FRAMES,
            MAX_PREDICTION_FRAMES,
        )?;
        check(
            "input_delay_frames",
            self.input_delay_frames,
            0,
            MAX_INPUT_DELAY_FRAMES,
        )?;
        check("redundancy", self.redundancy, 1, MAX_BATCH_INPUTS as u32)?;
        check("tick_hz", self.tick_hz, 1, 1000)?;
        // The history must hold a whole prediction window plus the state it starts from.
        check(
            "state_history_frames",
            self.state_history_frames,
            self.max_prediction_frames + 1,
            MAX_STATE_HISTORY_FRAMES,
        )?;
        check(
            "checksum_interval_frames",
            self.checksum_interval_frames,
            0,
            MAX_CHECKSUM_HISTORY_FRAMES,
        )?;
        check(
            "checksum_history_frames",
            self.checksum_history_frames,
            1,
            MAX_CHECKSUM_HISTORY_FRAMES,
        )
    }
}

/// An input or message the session refused. Nothing here is fatal: the session stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// The slot is not a remote player of this match.
    #[error("slot {slot} is not a remote player of this match")]
    InvalidSlot {
        /// The slot given.
        slot: Slot,
    },
    /// A batch that arrived from one peer claims another player's slot.
    #[error("peer in slot {from} sent a batch claiming slot {claimed}: forged, dropped")]
    Forged {
        /// The slot of the connection it came from.
        from: Slot,
        /// The slot it claimed.
        claimed: Slot,
    },
    /// Inputs further ahead than an honest peer can be; those from `frame` on were dropped.
    #[error(
        "inputs of slot {slot} from frame {frame} are beyond the window (frames < {limit}); dropped"
    )]
    BeyondWindow {
        /// The sender.
        slot: Slot,
        /// First dropped frame.
        frame: u32,
        /// First frame outside the window.
        limit: u32,
    },
    /// The local input for this frame was already added (the last `advance` stalled).
    #[error("the local input for frame {frame} was already added")]
    LocalInputAlreadyAdded {
        /// The frame the input was for.
        frame: u32,
    },
    /// A referee message for another player count.
    #[error("referee message for {found} players, the match has {expected}")]
    PlayerCount {
        /// This match's players.
        expected: usize,
        /// The message's players.
        found: usize,
    },
    /// Referee messages must arrive in order and complete (the node's reliable stream).
    #[error(
        "referee inputs start at frame {found}, expected at most {expected}: a message was lost"
    )]
    RefereeGap {
        /// The next frame this session needs.
        expected: u32,
        /// The first frame of the message.
        found: u32,
    },
    /// This player is so far behind the referee that it must resync.
    #[error("more than {MAX_REFEREE_BACKLOG_FRAMES} referee frames ahead of this player: resync")]
    RefereeBacklogFull,
    /// A resync state older than the inputs this session still has.
    #[error("cannot adopt frame {frame}: inputs before frame {oldest} are gone")]
    ResyncTooOld {
        /// The state's frame.
        frame: u32,
        /// The oldest frame that can be adopted now.
        oldest: u32,
    },
    /// A resync state whose [`Game::frame`] is not the frame it was sent as.
    #[error("state claims frame {state_frame} but was sent as frame {frame}")]
    StateFrameMismatch {
        /// The frame it was sent as.
        frame: u32,
        /// The state's own frame.
        state_frame: u32,
    },
    /// Frame numbers ran past `u32::MAX` (a forged message).
    #[error("frame numbers overflow")]
    FrameOverflow,
}

/// Why [`Rollback::advance`] did not simulate a frame. Not an error: call again next tick.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stall {
    /// Predicting further would pass `max_prediction_frames` beyond the input-complete frame.
    #[error("frame {frame}: waiting for inputs (all known below frame {input_complete})")]
    PredictionWindowFull {
        /// The frame that would be simulated.
        frame: u32,
        /// The input-complete frame.
        input_complete: u32,
    },
    /// The state history is full of frames the referee has not finalized yet.
    #[error("frame {frame}: waiting for the referee (final below frame {finalized})")]
    AwaitingReferee {
        /// The frame that would be simulated.
        frame: u32,
        /// The finalized frame.
        finalized: u32,
    },
    /// [`Rollback::add_local_input`] was not called for this frame.
    #[error("frame {frame}: no local input yet")]
    NeedLocalInput {
        /// The frame whose local input is missing.
        frame: u32,
    },
    /// A saved state the session needed is gone: a bug in this module, never caused by input.
    #[error("frame {frame}: saved state lost (bug)")]
    StateLost {
        /// The frame.
        frame: u32,
    },
}

/// What one successful [`Rollback::advance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvanceOutcome {
    /// The frame of the state now current.
    pub frame: u32,
    /// Frames re-simulated by a rollback before this frame (0 when predictions held).
    pub rolled_back_frames: u32,
    /// Mask of players whose input for the simulated frame was predicted.
    pub predicted: u16,
    /// The confirmed frame after this step.
    pub confirmed_frame: u32,
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollbackStats {
    /// Frames simulated forward by `advance` (not counting re-simulation).
    pub frames_advanced: u64,
    /// Of those, frames where some remote input was predicted.
    pub predicted_frames: u64,
    /// Rollbacks performed.
    pub rollbacks: u64,
    /// Frames re-simulated by all rollbacks.
    pub rollback_frames_total: u64,
    /// The longest rollback, in frames.
    pub rollback_frames_max: u32,
    /// Inputs that arrived for a simulated frame and differed from what it used.
    pub mispredictions: u64,
    /// Calls to `advance` that stalled.
    pub stalls: u64,
    /// Inputs received again (redundancy at work).
    pub duplicates: u64,
    /// A peer sent two different inputs for one frame (the first was kept).
    pub conflicting_inputs: u64,
    /// Batches claiming another slot than their connection's.
    pub forged_batches: u64,
    /// Remote inputs dropped for being beyond the window.
    pub rejected_beyond_window: u64,
    /// Inputs the referee finalized differently from what a peer (or we) had said.
    pub referee_overrides: u64,
    /// Frames of waiting recommended by time sync.
    pub frames_waited: u64,
    /// Authoritative states adopted.
    pub resyncs: u64,
    /// Checksum reports dropped because nobody took them.
    pub reports_dropped: u64,
    /// Local inputs refused: one was added for that frame already, or the frame number would
    /// overflow. The frame runs on the input it has.
    pub local_inputs_refused: u64,
}

impl RollbackStats {
    /// Mean frames per rollback (0 when there was none).
    pub fn rollback_frames_mean(&self) -> f64 {
        if self.rollbacks == 0 {
            0.0
        } else {
            self.rollback_frames_total as f64 / self.rollbacks as f64
        }
    }
}

/// An input as this session knows it.
#[derive(Debug, Clone, Copy)]
struct Known<I> {
    input: I,
    /// Said by the referee (or final by peer-to-peer rules): never changes again.
    is_final: bool,
}

/// One player's rollback session. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Rollback<G: Game> {
    config: RollbackConfig,
    players: usize,
    local: Slot,
    /// The state at frame `current`.
    state: G,
    current: u32,
    /// Saved states, at least from the earliest frame that can still change up to `current`.
    states: FrameRing<G>,
    /// The inputs each simulated frame used (known or predicted).
    used: FrameRing<Vec<G::Input>>,
    /// Per slot, the inputs known.
    inputs: Vec<FrameRing<Known<G::Input>>>,
    /// The frame the next local input is for.
    local_next: u32,
    /// The first frame with a local input (the session's start).
    first_frame: u32,
    complete: u32,
    finalized: u32,
    /// Referee rows for frames `finalized..`, received before this player could store them.
    referee_backlog: VecDeque<Vec<G::Input>>,
    /// Per slot, the frame from which the referee expelled it (inputs `Default` from there).
    expelled_from: Vec<Option<u32>>,
    /// The earliest frame whose inputs changed after it was simulated.
    pending_rollback: Option<u32>,
    confirmed: u32,
    checksums: FrameRing<u64>,
    reports: VecDeque<ChecksumReport>,
    /// Per slot, the newest input-complete frame the peer acknowledged.
    peer_ack: Vec<u32>,
    time_sync: TimeSync,
    /// Remote inputs are accepted for frames below `current + accept_lead`.
    accept_lead: u32,
    stats: RollbackStats,
}

impl<G: Game> Rollback<G> {
    /// A session for the player in `local_slot` of a `players`-player match, starting from
    /// `game` (usually frame 0; every player must start from the same state).
    pub fn new(
        game: G,
        players: usize,
        local_slot: Slot,
        config: RollbackConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if players == 0 || players > MAX_PLAYERS {
            return Err(ConfigError::Players { players });
        }
        if usize::from(local_slot) >= players {
            return Err(ConfigError::LocalSlot {
                slot: local_slot,
                players,
            });
        }
        let history = config.state_history_frames as usize;
        // An honest peer is at most a prediction window ahead of our newest input, which is
        // an input delay ahead of us; its own input delay comes on top.
        let accept_lead =
            config.max_prediction_frames + 2 * config.input_delay_frames + ACCEPT_SLACK_FRAMES;
        // Inputs must survive from the oldest mutable frame (a history back) or the oldest
        // frame a batch resends, up to the newest acceptable frame.
        let input_capacity = history + MAX_BATCH_INPUTS + accept_lead as usize + 2;
        let start = game.frame();
        let mut session = Rollback {
            config,
            players,
            local: local_slot,
            current: start,
            states: FrameRing::new(history + 2),
            used: FrameRing::new(history + 2),
            inputs: (0..players)
                .map(|_| FrameRing::new(input_capacity))
                .collect(),
            local_next: start,
            first_frame: start,
            complete: start,
            finalized: start,
            referee_backlog: VecDeque::new(),
            expelled_from: vec![None; players],
            pending_rollback: None,
            confirmed: start,
            checksums: FrameRing::new(config.checksum_history_frames as usize),
            reports: VecDeque::new(),
            peer_ack: vec![start; players],
            time_sync: TimeSync::new(players, config.tick_hz),
            accept_lead,
            stats: RollbackStats::default(),
            state: game,
        };
        session.states.insert(start, session.state.clone());
        session.checksums.insert(start, session.state.checksum());
        // Nobody has inputs for the first `input_delay_frames` frames: they are "no input".
        for _ in 0..config.input_delay_frames {
            session.store_local(G::Input::default());
        }
        Ok(session)
    }

    /// The configuration.
    pub fn config(&self) -> &RollbackConfig {
        &self.config
    }

    /// Players in the match.
    pub fn players(&self) -> usize {
        self.players
    }

    /// This player's slot.
    pub fn local_slot(&self) -> Slot {
        self.local
    }

    /// The current (possibly predicted) state, for rendering.
    pub fn state(&self) -> &G {
        &self.state
    }

    /// The frame of the current state.
    pub fn current_frame(&self) -> u32 {
        self.current
    }

    /// Every player's input is known for all frames below this.
    pub fn input_complete_frame(&self) -> u32 {
        self.complete
    }

    /// The referee has finalized all frames below this (equals the input-complete frame
    /// without a referee).
    pub fn finalized_frame(&self) -> u32 {
        if self.config.referee_finality {
            self.finalized
        } else {
            self.complete
        }
    }

    /// The newest state that is final and was simulated with final inputs.
    pub fn confirmed_frame(&self) -> u32 {
        self.confirmed
    }

    /// The checksum of the confirmed state at `frame`, for the last
    /// [`RollbackConfig::checksum_history_frames`] confirmed frames.
    pub fn checksum_at(&self, frame: u32) -> Option<u64> {
        if frame > self.confirmed {
            return None;
        }
        self.checksums.get(frame).copied()
    }

    /// The counters.
    pub fn stats(&self) -> &RollbackStats {
        &self.stats
    }

    /// Whether [`Rollback::add_local_input`] is due before the next [`Rollback::advance`].
    pub fn needs_local_input(&self) -> bool {
        self.current.saturating_add(self.config.input_delay_frames) >= self.local_next
    }

    /// Adds this player's input sampled at the current frame; it applies at the current frame
    /// plus the input delay. Returns that frame.
    /// A refused input is counted in [`RollbackStats::local_inputs_refused`].
    pub fn add_local_input(&mut self, input: G::Input) -> Result<u32, RollbackError> {
        let Some(target) = self.current.checked_add(self.config.input_delay_frames) else {
            self.stats.local_inputs_refused += 1;
            return Err(RollbackError::FrameOverflow);
        };
        if target < self.local_next {
            self.stats.local_inputs_refused += 1;
            return Err(RollbackError::LocalInputAlreadyAdded { frame: target });
        }
        // Only after a resync jumped forward can frames be skipped: they had no local input.
        while self.local_next < target {
            self.store_local(G::Input::default());
        }
        self.store_local(input);
        self.update_complete();
        Ok(target)
    }

    fn store_local(&mut self, input: G::Input) {
        let frame = self.local_next;
        let slot = usize::from(self.local);
        // A frame the referee already finalized keeps the referee's input.
        if !self.known(slot, frame).is_some_and(|k| k.is_final) {
            self.set_input(
                slot,
                frame,
                Known {
                    input,
                    is_final: false,
                },
            );
        }
        self.local_next = frame.saturating_add(1);
    }

    /// The batch to send to every peer and to the node: the newest
    /// [`RollbackConfig::redundancy`] local inputs, reaching further back when a peer's
    /// acknowledgement shows it is missing older ones (up to [`MAX_BATCH_INPUTS`]).
    pub fn outgoing_inputs(&self) -> InputBatch<G::Input> {
        let end = self.local_next;
        let mut start = end.saturating_sub(self.config.redundancy);
        for (slot, ack) in self.peer_ack.iter().enumerate() {
            let expelled = self.expelled_from.get(slot).is_some_and(Option::is_some);
            if slot != usize::from(self.local) && !expelled {
                start = start.min(*ack);
            }
        }
        let oldest = start
            .max(end.saturating_sub(MAX_BATCH_INPUTS as u32))
            .max(self.first_frame);
        let mut first_frame = oldest;
        let mut inputs = Vec::with_capacity((end.saturating_sub(oldest)) as usize);
        let ring = self.inputs.get(usize::from(self.local));
        for frame in oldest..end {
            match ring.and_then(|r| r.get(frame)) {
                Some(known) => inputs.push(known.input),
                None => {
                    // Send only the contiguous newest run.
                    inputs.clear();
                    first_frame = frame.saturating_add(1);
                }
            }
        }
        InputBatch {
            slot: self.local,
            first_frame,
            sender_frame: self.current,
            ack_frame: self.complete,
            inputs,
        }
    }

    /// Takes the checksum reports of newly confirmed frames (every
    /// [`RollbackConfig::checksum_interval_frames`]), to send to the node.
    pub fn take_checksum_reports(&mut self) -> Vec<ChecksumReport> {
        self.reports.drain(..).collect()
    }

    /// Records the RTT measured to the peer in `slot` (time sync uses half of it).
    pub fn set_peer_rtt_ms(&mut self, slot: Slot, rtt_ms: u32) {
        self.time_sync.set_rtt_ms(slot, rtt_ms);
    }

    /// Our mean lead over the peer in `slot`, in frames (positive: we are ahead).
    pub fn frame_advantage(&self, slot: Slot) -> Option<i64> {
        self.time_sync.advantage(slot)
    }

    /// How many ticks to skip `advance` now so that this player does not run ahead of its
    /// peers (0 almost always; at most [`MAX_WAIT_FRAMES`]). Only the player ahead waits.
    pub fn frames_to_wait(&mut self) -> u32 {
        let wait = self.time_sync.recommend();
        self.stats.frames_waited += u64::from(wait);
        wait
    }

    /// Handles a batch that arrived on the connection of the peer in `from_slot`: checks the
    /// slot it claims, records its acknowledgement and frame (time sync), then its inputs (see
    /// [`Rollback::on_remote_inputs`]). Returns how many inputs were new.
    pub fn on_remote_batch(
        &mut self,
        from_slot: Slot,
        batch: &InputBatch<G::Input>,
    ) -> Result<usize, RollbackError> {
        self.check_remote(from_slot)?;
        if batch.slot != from_slot {
            self.stats.forged_batches += 1;
            return Err(RollbackError::Forged {
                from: from_slot,
                claimed: batch.slot,
            });
        }
        if let Some(ack) = self.peer_ack.get_mut(usize::from(from_slot)) {
            // An acknowledgement beyond our newest input is a lie or a bug: ignore the excess.
            *ack = (*ack).max(batch.ack_frame.min(self.local_next));
        }
        // An expelled peer's clock no longer matters (and must not make us wait).
        if self
            .expelled_from
            .get(usize::from(from_slot))
            .is_some_and(Option::is_none)
        {
            self.time_sync
                .on_remote_frame(from_slot, self.current, batch.sender_frame);
        }
        self.on_remote_inputs(from_slot, batch.first_frame, &batch.inputs)
    }

    /// Takes a peer's inputs for `first_frame..`: repeats are ignored (counted), a different
    /// input for a frame already known is ignored (counted: the referee decides), and an input
    /// that differs from what a simulated frame used schedules a rollback. Inputs from
    /// `current + max_prediction + 2 × delay + 4` on are dropped with
    /// [`RollbackError::BeyondWindow`], after the ones before were taken.
    pub fn on_remote_inputs(
        &mut self,
        slot: Slot,
        first_frame: u32,
        inputs: &[G::Input],
    ) -> Result<usize, RollbackError> {
        self.check_remote(slot)?;
        let s = usize::from(slot);
        if self.expelled_from.get(s).is_some_and(Option::is_some) {
            return Ok(0);
        }
        let limit = self.current.saturating_add(self.accept_lead);
        let mut fresh = 0;
        let mut result = Ok(());
        for (i, input) in inputs.iter().enumerate() {
            let Some(frame) = u32::try_from(i)
                .ok()
                .and_then(|i| first_frame.checked_add(i))
            else {
                result = Err(RollbackError::FrameOverflow);
                break;
            };
            if frame >= limit {
                self.stats.rejected_beyond_window += (inputs.len() - i) as u64;
                result = Err(RollbackError::BeyondWindow { slot, frame, limit });
                break;
            }
            // Below the input-complete frame everything is known and can no longer change by
            // a peer's word; older frames may be gone from the ring.
            if frame < self.complete {
                self.stats.duplicates += 1;
                continue;
            }
            match self.known(s, frame) {
                Some(known) if known.input == *input => self.stats.duplicates += 1,
                Some(known) if !known.is_final => self.stats.conflicting_inputs += 1,
                Some(_) => {}
                None => {
                    self.set_input(
                        s,
                        frame,
                        Known {
                            input: *input,
                            is_final: false,
                        },
                    );
                    fresh += 1;
                }
            }
        }
        self.update_complete();
        self.update_confirmed();
        result.map(|()| fresh)
    }

    /// Takes the referee's final inputs (in order, from the node's reliable stream). They
    /// replace whatever peers said; a frame simulated with something else is rolled back.
    pub fn on_final_inputs(&mut self, msg: &FinalInputs<G::Input>) -> Result<(), RollbackError> {
        if usize::from(msg.players) != self.players {
            return Err(RollbackError::PlayerCount {
                expected: self.players,
                found: usize::from(msg.players),
            });
        }
        let mut expected = self.referee_next();
        if msg.first_frame > expected {
            return Err(RollbackError::RefereeGap {
                expected,
                found: msg.first_frame,
            });
        }
        for index in 0..msg.frames() {
            let Some(row) = msg.row(index) else { break };
            let frame = msg.first_frame.saturating_add(index as u32);
            if frame < expected {
                continue;
            }
            if self.referee_backlog.is_empty()
                && frame < self.current.saturating_add(self.accept_lead)
            {
                self.apply_final_row(frame, row);
            } else if self.referee_backlog.len() < MAX_REFEREE_BACKLOG_FRAMES {
                self.referee_backlog.push_back(row.to_vec());
            } else {
                return Err(RollbackError::RefereeBacklogFull);
            }
            expected = frame.saturating_add(1);
        }
        self.apply_expelled(msg.expelled, msg.end_frame());
        self.update_complete();
        self.update_confirmed();
        Ok(())
    }

    /// Adopts the referee's authoritative `state` at `frame` (after a desync), then
    /// re-simulates up to the current frame with the inputs this session has.
    pub fn adopt_state(&mut self, frame: u32, state: G) -> Result<(), RollbackError> {
        if state.frame() != frame {
            return Err(RollbackError::StateFrameMismatch {
                frame,
                state_frame: state.frame(),
            });
        }
        let oldest = self
            .current
            .saturating_sub(self.config.state_history_frames);
        if frame < oldest {
            return Err(RollbackError::ResyncTooOld { frame, oldest });
        }
        self.checksums.insert(frame, state.checksum());
        self.states.insert(frame, state.clone());
        if frame < self.current {
            // Re-simulate from the adopted state; what happened before it no longer matters.
            self.pending_rollback = Some(frame);
        } else {
            self.state = state;
            self.current = frame;
            self.pending_rollback = None;
            let needed = frame.saturating_add(self.config.input_delay_frames);
            while self.local_next < needed {
                self.store_local(G::Input::default());
            }
        }
        while self.finalized < frame && !self.referee_backlog.is_empty() {
            self.referee_backlog.pop_front();
            self.finalized += 1;
        }
        self.finalized = self.finalized.max(frame);
        self.complete = self.complete.max(frame);
        self.confirmed = frame;
        self.reports.retain(|r| r.frame <= frame);
        self.stats.resyncs += 1;
        self.update_complete();
        self.update_confirmed();
        Ok(())
    }

    /// Simulates one frame: first re-simulates from the earliest frame whose inputs changed
    /// (rollback), then steps the current frame with known inputs, predicting missing remote
    /// ones by repeating each player's last input.
    pub fn advance(&mut self) -> Result<AdvanceOutcome, Stall> {
        let rolled_back_frames = self.run_pending_rollback()?;
        self.update_confirmed();
        let frame = self.current;
        if frame.saturating_sub(self.complete) >= self.config.max_prediction_frames {
            self.stats.stalls += 1;
            return Err(Stall::PredictionWindowFull {
                frame,
                input_complete: self.complete,
            });
        }
        if self.config.referee_finality
            && frame.saturating_sub(self.finalized) >= self.config.state_history_frames
        {
            self.stats.stalls += 1;
            return Err(Stall::AwaitingReferee {
                frame,
                finalized: self.finalized,
            });
        }
        if self.known(usize::from(self.local), frame).is_none() {
            return Err(Stall::NeedLocalInput { frame });
        }
        let predicted = self.simulate_one();
        self.stats.frames_advanced += 1;
        if predicted != 0 {
            self.stats.predicted_frames += 1;
        }
        self.drain_referee_backlog();
        self.update_complete();
        self.update_confirmed();
        Ok(AdvanceOutcome {
            frame: self.current,
            rolled_back_frames,
            predicted,
            confirmed_frame: self.confirmed,
        })
    }

    fn check_remote(&self, slot: Slot) -> Result<(), RollbackError> {
        if usize::from(slot) >= self.players || slot == self.local {
            return Err(RollbackError::InvalidSlot { slot });
        }
        Ok(())
    }

    fn known(&self, slot: usize, frame: u32) -> Option<Known<G::Input>> {
        if let Some(Some(from)) = self.expelled_from.get(slot) {
            if frame >= *from {
                return Some(Known {
                    input: G::Input::default(),
                    is_final: true,
                });
            }
        }
        self.inputs.get(slot)?.get(frame).copied()
    }

    /// Stores an input and schedules a rollback if a simulated frame used something else.
    fn set_input(&mut self, slot: usize, frame: u32, known: Known<G::Input>) {
        if let Some(ring) = self.inputs.get_mut(slot) {
            ring.insert(frame, known);
        }
        self.note_input(slot, frame, known.input);
    }

    fn note_input(&mut self, slot: usize, frame: u32, input: G::Input) {
        if frame >= self.current {
            return;
        }
        let differs = self
            .used
            .get(frame)
            .is_some_and(|used| used.get(slot) != Some(&input));
        if differs {
            self.stats.mispredictions += 1;
            self.pending_rollback = Some(self.pending_rollback.map_or(frame, |p| p.min(frame)));
        }
    }

    fn referee_next(&self) -> u32 {
        self.finalized
            .saturating_add(self.referee_backlog.len() as u32)
    }

    fn apply_final_row(&mut self, frame: u32, row: &[G::Input]) {
        for (slot, input) in row.iter().enumerate().take(self.players) {
            if let Some(known) = self.known(slot, frame) {
                if !known.is_final && known.input != *input {
                    self.stats.referee_overrides += 1;
                }
            }
            self.set_input(
                slot,
                frame,
                Known {
                    input: *input,
                    is_final: true,
                },
            );
        }
        self.finalized = frame.saturating_add(1);
    }

    fn drain_referee_backlog(&mut self) {
        let limit = self.current.saturating_add(self.accept_lead);
        while self.finalized < limit {
            let Some(row) = self.referee_backlog.pop_front() else {
                break;
            };
            self.apply_final_row(self.finalized, &row);
        }
    }

    /// Slots newly expelled get `Default` inputs from `from_frame` on.
    fn apply_expelled(&mut self, mask: u16, from_frame: u32) {
        for slot in 0..self.players {
            let newly = mask & (1 << slot) != 0
                && self.expelled_from.get(slot).is_some_and(Option::is_none);
            if !newly {
                continue;
            }
            if let Some(e) = self.expelled_from.get_mut(slot) {
                *e = Some(from_frame);
            }
            for frame in from_frame..self.current {
                let differs = self
                    .used
                    .get(frame)
                    .is_some_and(|used| used.get(slot) != Some(&G::Input::default()));
                if differs {
                    self.pending_rollback =
                        Some(self.pending_rollback.map_or(frame, |p| p.min(frame)));
                    break;
                }
            }
        }
    }

    fn update_complete(&mut self) {
        let limit = self.current.saturating_add(self.accept_lead);
        while self.complete < limit
            && (0..self.players).all(|slot| self.known(slot, self.complete).is_some())
        {
            self.complete += 1;
        }
    }

    /// The earliest frame whose inputs may still change.
    fn earliest_mutable(&self) -> u32 {
        if self.config.referee_finality {
            self.finalized
        } else {
            self.complete
        }
    }

    fn update_confirmed(&mut self) {
        let target = self
            .earliest_mutable()
            .min(self.current)
            .min(self.pending_rollback.unwrap_or(u32::MAX));
        while self.confirmed < target {
            self.confirmed += 1;
            let Some(state) = self.states.get(self.confirmed) else {
                continue;
            };
            let checksum = state.checksum();
            self.checksums.insert(self.confirmed, checksum);
            let interval = self.config.checksum_interval_frames;
            // `checked_rem` is `None` for an interval of 0 (reports off).
            if self.confirmed.checked_rem(interval) == Some(0) {
                if self.reports.len() >= MAX_PENDING_REPORTS {
                    self.reports.pop_front();
                    self.stats.reports_dropped += 1;
                }
                self.reports.push_back(ChecksumReport {
                    slot: self.local,
                    frame: self.confirmed,
                    checksum,
                });
            }
        }
    }

    fn run_pending_rollback(&mut self) -> Result<u32, Stall> {
        let Some(from) = self.pending_rollback.take() else {
            return Ok(0);
        };
        if from >= self.current {
            return Ok(0);
        }
        let Some(saved) = self.states.get(from) else {
            debug_assert!(false, "state {from} lost before rollback");
            return Err(Stall::StateLost { frame: from });
        };
        self.state = saved.clone();
        let end = self.current;
        self.current = from;
        while self.current < end {
            self.simulate_one();
        }
        let frames = end - from;
        self.stats.rollbacks += 1;
        self.stats.rollback_frames_total += u64::from(frames);
        self.stats.rollback_frames_max = self.stats.rollback_frames_max.max(frames);
        Ok(frames)
    }

    /// Steps the current frame and saves the new state. Returns the mask of predicted slots.
    fn simulate_one(&mut self) -> u16 {
        let frame = self.current;
        let mut predicted = 0u16;
        let mut inputs = Vec::with_capacity(self.players);
        for slot in 0..self.players {
            let input = match self.known(slot, frame) {
                Some(known) => known.input,
                None => {
                    predicted |= 1 << slot;
                    self.predict(slot, frame)
                }
            };
            inputs.push(input);
        }
        self.state.step(&inputs);
        self.used.insert(frame, inputs);
        self.current = frame.saturating_add(1);
        self.states.insert(self.current, self.state.clone());
        predicted
    }

    /// The input of the player's last frame before `frame`, as simulated. Every input change
    /// below the current frame triggers a rollback, so the previous frame's inputs always
    /// reflect everything known.
    fn predict(&self, slot: usize, frame: u32) -> G::Input {
        let previous = frame.checked_sub(1);
        if let Some(used) = previous.and_then(|p| self.used.get(p)) {
            return used.get(slot).copied().unwrap_or_default();
        }
        // Right after the start or a resync nothing was simulated: use the newest known input.
        let capacity = self.inputs.get(slot).map_or(0, |r| r.capacity()) as u32;
        let oldest = frame.saturating_sub(capacity);
        (oldest..frame)
            .rev()
            .find_map(|f| self.known(slot, f))
            .map(|k| k.input)
            .unwrap_or_default()
    }
}
