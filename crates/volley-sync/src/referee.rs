//! The node's referee for a rollback match: simulates the inputs players send, decides the
//! inputs of every frame, checks players' checksums and names cheaters.
//!
//! [`Referee`] is sans-IO: the room hands it each player's [`InputBatch`]es and
//! [`ChecksumReport`]s together with the connection they came from and the milliseconds since
//! the match started, calls [`Referee::tick`] regularly, sends what
//! [`Referee::take_broadcasts`] returns to every player on the reliable stream, and acts on
//! [`Referee::verdicts`] (resync with [`Referee::resync_state`], expel with
//! [`Referee::expel`]).
//!
//! # The fill rule
//! The referee simulates frame `f` as soon as it has every player's input for `f`. If one is
//! missing, it waits until `fill_wait_ms` after the later of (a) the first arrival of any
//! player's input for `f` and (b) the time frame `f` is due on the node's clock; then it fills
//! each missing input by **repeating that player's input of the previous frame** (`Default` at
//! the start), and an expelled player's input is always `Default`. An input arriving after its
//! frame was simulated is dropped. Because [`FinalInputs`] carries every input the referee
//! simulated and players prefer it over anything a peer said, honest players end up confirming
//! exactly what the referee simulated; filled frames are marked in
//! [`FinalInputs::filled`].
//!
//! (b) keeps an early sender (a speed hacker) from shortening everyone else's wait; (a) keeps a
//! match whose players all run behind the node's clock from being filled wholesale.
//!
//! # Cheats it detects
//! - [`VerdictKind::ForgedInput`] / [`VerdictKind::ForgedReport`]: a message claiming another
//!   player's slot than the connection's, at once.
//! - [`VerdictKind::SpeedHack`]: inputs for a frame more than
//!   [`RefereeConfig::speed_lead_frames_max`] ahead of the node's clock, at once.
//! - [`VerdictKind::Desync`]: a checksum that differs from the referee's for the same frame:
//!   within the reporting interval plus the time the report takes to confirm and arrive.
//! - [`VerdictKind::MissingChecksums`]: no report for
//!   [`RefereeConfig::checksum_overdue_frames`] (a player hiding a desync).
#![deny(clippy::indexing_slicing)]

use std::collections::VecDeque;

use crate::game::{Game, Slot};
use crate::rollback::ring::FrameRing;
use crate::rollback::{
    ChecksumReport, ConfigError, FinalInputs, InputBatch, MAX_FINAL_FRAMES, MAX_PLAYERS,
};

/// The largest input window (frames buffered ahead of the referee's frame).
pub const MAX_INPUT_WINDOW_FRAMES: u32 = 1024;
/// The largest checksum history (1 min at 60 Hz).
pub const MAX_CHECKSUM_HISTORY_FRAMES: u32 = 3600;
/// Reports for frames not simulated yet, kept per player; the oldest go first.
pub const MAX_PENDING_REPORTS_PER_PLAYER: usize = 32;
/// Verdicts kept; later ones are counted in [`RefereeStats::verdicts_dropped`].
pub const MAX_VERDICTS: usize = 256;
/// Simulated frames not yet taken by [`Referee::take_broadcasts`]; at this many the referee
/// stops simulating until they are taken (backpressure, counted).
pub const MAX_PENDING_FINAL_FRAMES: usize = 4096;

/// How a [`Referee`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefereeConfig {
    /// The fixed simulation rate (default 60); the node's clock runs at it.
    pub tick_hz: u32,
    /// How long a missing input is waited for (default 250 ms; see the fill rule).
    pub fill_wait_ms: u32,
    /// Inputs more than this many frames ahead of the node's clock are refused and flag their
    /// sender as a speed hacker (default 12: an honest player starts after the node's clock and
    /// runs at its rate, so only its input delay puts its inputs ahead).
    pub speed_lead_frames_max: u32,
    /// Frames of inputs buffered ahead of the referee's frame (default 256).
    pub input_window_frames: u32,
    /// Own checksums kept to compare reports against (default 600, 10 s at 60 Hz).
    pub checksum_history_frames: u32,
    /// A player with no report for this many frames is flagged (default 600; 0 = never).
    pub checksum_overdue_frames: u32,
}

impl Default for RefereeConfig {
    fn default() -> Self {
        RefereeConfig {
            tick_hz: 60,
            fill_wait_ms: 250,
            speed_lead_frames_max: 12,
            input_window_frames: 256,
            checksum_history_frames: 600,
            checksum_overdue_frames: 600,
        }
    }
}

impl RefereeConfig {
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
        check("tick_hz", self.tick_hz, 1, 1000)?;
        check("fill_wait_ms", self.fill_wait_ms, 0, 10_000)?;
        check(
            "speed_lead_frames_max",
            self.speed_lead_frames_max,
            1,
            self.input_window_frames,
        )?;
        check(
            "input_window_frames",
            self.input_window_frames,
            1,
            MAX_INPUT_WINDOW_FRAMES,
        )?;
        check(
            "checksum_history_frames",
            self.checksum_history_frames,
            1,
            MAX_CHECKSUM_HISTORY_FRAMES,
        )?;
        check(
            "checksum_overdue_frames",
            self.checksum_overdue_frames,
            0,
            u32::MAX,
        )
    }
}

/// What a verdict is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerdictKind {
    /// The player's checksum differs from the referee's: its state diverged (altered memory, a
    /// modified client, or a bug).
    Desync,
    /// The player sent inputs claiming another player's slot.
    ForgedInput,
    /// The player sent a checksum report claiming another player's slot.
    ForgedReport,
    /// The player's inputs run ahead of the node's clock.
    SpeedHack,
    /// The player stopped reporting checksums.
    MissingChecksums,
}

/// Evidence against one player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verdict {
    /// The player it names (the connection's slot, never a slot a message claimed).
    pub slot: Slot,
    /// The frame of the evidence (the checksum's frame, the forged batch's first frame, the
    /// input frame that ran ahead, the last report's frame).
    pub frame: u32,
    /// What it is for.
    pub kind: VerdictKind,
    /// The node's clock frame when it was found.
    pub node_frame: u32,
}

/// A message the referee refused. Verdicts are recorded separately.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefereeError {
    /// The connection's slot is not a player of this match.
    #[error("slot {slot} is not a player of this match")]
    InvalidSlot {
        /// The slot.
        slot: Slot,
    },
    /// A message claiming another slot than its connection's.
    #[error("player {from} sent a message claiming slot {claimed}: forged, dropped")]
    Forged {
        /// The connection's slot.
        from: Slot,
        /// The slot claimed.
        claimed: Slot,
    },
    /// Inputs ahead of the node's clock (from `frame` on) were dropped.
    #[error(
        "player {slot}: inputs from frame {frame} are ahead of the node's clock (limit {limit})"
    )]
    AheadOfClock {
        /// The sender.
        slot: Slot,
        /// First dropped frame.
        frame: u32,
        /// Newest acceptable frame.
        limit: u32,
    },
}

/// Counters of one referee.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefereeStats {
    /// Frames simulated.
    pub frames_simulated: u64,
    /// Of those, frames where some input was filled in.
    pub frames_filled: u64,
    /// Inputs filled in (not counting expelled players).
    pub inputs_filled: u64,
    /// Inputs that arrived after their frame was simulated (redundant copies, mostly).
    pub inputs_late: u64,
    /// Inputs received twice.
    pub inputs_duplicate: u64,
    /// A player sent two different inputs for one frame (the first was kept).
    pub inputs_conflicting: u64,
    /// Inputs refused for being ahead of the clock or the window.
    pub inputs_refused: u64,
    /// Messages claiming another slot.
    pub forged_messages: u64,
    /// Reports that matched the referee's checksum.
    pub reports_matched: u64,
    /// Reports that did not.
    pub reports_mismatched: u64,
    /// Reports for frames whose checksum is no longer kept, or dropped from a full queue.
    pub reports_dropped: u64,
    /// Ticks on which simulation waited for broadcasts to be taken.
    pub broadcast_backpressure: u64,
    /// Verdicts not kept because [`MAX_VERDICTS`] were.
    pub verdicts_dropped: u64,
}

const FLAG_FORGED_INPUT: u8 = 1;
const FLAG_FORGED_REPORT: u8 = 2;
const FLAG_SPEED: u8 = 4;
const FLAG_MISSING: u8 = 8;

#[derive(Debug, Clone, Default)]
struct PlayerRecord {
    last_report_frame: u32,
    /// A desync verdict stands and no resync was sent yet: no more desync verdicts.
    desync_open: bool,
    /// Reports before this frame describe a state from before the last resync.
    resync_from: u32,
    /// Kinds already reported once (`FLAG_*`).
    flagged: u8,
    expelled_at: Option<u32>,
    reports: VecDeque<ChecksumReport>,
}

/// The referee of one rollback match. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Referee<G: Game> {
    config: RefereeConfig,
    players: usize,
    state: G,
    start_frame: u32,
    now_ms: u64,
    inputs: Vec<FrameRing<G::Input>>,
    /// Per frame, when the first input for it arrived.
    arrivals: FrameRing<u64>,
    last_used: Vec<G::Input>,
    checksums: FrameRing<u64>,
    records: Vec<PlayerRecord>,
    /// Simulated rows not yet broadcast, for frames `pending_first..`.
    pending: VecDeque<(Vec<G::Input>, u16)>,
    pending_first: u32,
    verdicts: Vec<Verdict>,
    stats: RefereeStats,
}

impl<G: Game> Referee<G> {
    /// A referee for a `players`-player match starting from `game` (the state every player
    /// starts from) at node time 0 ms.
    pub fn new(game: G, players: usize, config: RefereeConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        if players == 0 || players > MAX_PLAYERS {
            return Err(ConfigError::Players { players });
        }
        let start = game.frame();
        let window = config.input_window_frames as usize;
        let mut checksums = FrameRing::new(config.checksum_history_frames as usize);
        checksums.insert(start, game.checksum());
        let records = (0..players)
            .map(|_| PlayerRecord {
                last_report_frame: start,
                resync_from: start,
                ..PlayerRecord::default()
            })
            .collect();
        Ok(Referee {
            config,
            players,
            start_frame: start,
            now_ms: 0,
            inputs: (0..players).map(|_| FrameRing::new(window)).collect(),
            arrivals: FrameRing::new(window),
            last_used: vec![G::Input::default(); players],
            checksums,
            records,
            pending: VecDeque::new(),
            pending_first: start,
            verdicts: Vec::new(),
            stats: RefereeStats::default(),
            state: game,
        })
    }

    /// The frame of the referee's state: every frame below it is decided.
    pub fn frame(&self) -> u32 {
        self.state.frame()
    }

    /// The node's clock, in frames: the start frame plus the elapsed time at the tick rate.
    pub fn clock_frame(&self) -> u32 {
        let elapsed = self.now_ms * u64::from(self.config.tick_hz) / 1000;
        self.start_frame
            .saturating_add(u32::try_from(elapsed).unwrap_or(u32::MAX))
    }

    /// The authoritative state.
    pub fn state(&self) -> &G {
        &self.state
    }

    /// The referee's checksum of its state at `frame`, for the last
    /// [`RefereeConfig::checksum_history_frames`] frames.
    pub fn checksum_at(&self, frame: u32) -> Option<u64> {
        self.checksums.get(frame).copied()
    }

    /// Every verdict so far (at most [`MAX_VERDICTS`]), oldest first.
    pub fn verdicts(&self) -> &[Verdict] {
        &self.verdicts
    }

    /// The counters.
    pub fn stats(&self) -> &RefereeStats {
        &self.stats
    }

    /// Whether the player in `slot` was expelled.
    pub fn is_expelled(&self, slot: Slot) -> bool {
        self.records
            .get(usize::from(slot))
            .is_some_and(|r| r.expelled_at.is_some())
    }

    /// Advances the node's clock to `now_ms` (milliseconds since the match started; never goes
    /// back), fills and simulates the frames whose wait is over, and checks for players that
    /// stopped reporting.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.simulate();
        self.check_overdue();
    }

    /// Takes a batch that arrived on the connection of the player in `from_slot`. Returns how
    /// many inputs were new.
    pub fn on_inputs(
        &mut self,
        from_slot: Slot,
        batch: &InputBatch<G::Input>,
        now_ms: u64,
    ) -> Result<usize, RefereeError> {
        self.now_ms = self.now_ms.max(now_ms);
        let s = self.check_slot(from_slot)?;
        if batch.slot != from_slot {
            self.stats.forged_messages += 1;
            self.flag_once(from_slot, batch.first_frame, VerdictKind::ForgedInput);
            return Err(RefereeError::Forged {
                from: from_slot,
                claimed: batch.slot,
            });
        }
        if self.is_expelled(from_slot) {
            return Ok(0);
        }
        let clock_limit = self
            .clock_frame()
            .saturating_add(self.config.speed_lead_frames_max);
        let window_end = self.frame().saturating_add(self.config.input_window_frames);
        let mut fresh = 0;
        let mut refused = None;
        for (i, input) in batch.inputs.iter().enumerate() {
            let frame = batch.first_frame.saturating_add(i as u32);
            if frame > clock_limit || frame >= window_end {
                self.stats.inputs_refused += (batch.inputs.len() - i) as u64;
                refused = Some(frame);
                break;
            }
            if frame < self.frame() {
                self.stats.inputs_late += 1;
                continue;
            }
            let Some(ring) = self.inputs.get_mut(s) else {
                break;
            };
            match ring.get(frame) {
                Some(had) if had == input => self.stats.inputs_duplicate += 1,
                Some(_) => self.stats.inputs_conflicting += 1,
                None => {
                    ring.insert(frame, *input);
                    if self.arrivals.get(frame).is_none() {
                        self.arrivals.insert(frame, self.now_ms);
                    }
                    fresh += 1;
                }
            }
        }
        self.simulate();
        match refused {
            Some(frame) if frame > clock_limit => {
                self.flag_once(from_slot, frame, VerdictKind::SpeedHack);
                Err(RefereeError::AheadOfClock {
                    slot: from_slot,
                    frame,
                    limit: clock_limit,
                })
            }
            // Beyond the window but not the clock: the referee itself is behind; the sender
            // will repeat these inputs.
            _ => Ok(fresh),
        }
    }

    /// Takes a checksum report that arrived on the connection of the player in `from_slot`.
    pub fn on_checksum(
        &mut self,
        from_slot: Slot,
        report: ChecksumReport,
        now_ms: u64,
    ) -> Result<(), RefereeError> {
        self.now_ms = self.now_ms.max(now_ms);
        let s = self.check_slot(from_slot)?;
        if report.slot != from_slot {
            self.stats.forged_messages += 1;
            self.flag_once(from_slot, report.frame, VerdictKind::ForgedReport);
            return Err(RefereeError::Forged {
                from: from_slot,
                claimed: report.slot,
            });
        }
        if self.is_expelled(from_slot) {
            return Ok(());
        }
        if report.frame > self.frame() {
            let Some(record) = self.records.get_mut(s) else {
                return Ok(());
            };
            if record.reports.len() >= MAX_PENDING_REPORTS_PER_PLAYER {
                record.reports.pop_front();
                self.stats.reports_dropped += 1;
            }
            record.reports.push_back(report);
        } else {
            self.compare(s, report);
        }
        Ok(())
    }

    /// The authoritative state for a desynced player to adopt
    /// ([`crate::rollback::Rollback::adopt_state`]), and its frame. Desync verdicts for the
    /// player resume from that frame.
    pub fn resync_state(&mut self, slot: Slot) -> (u32, G) {
        let frame = self.frame();
        if let Some(record) = self.records.get_mut(usize::from(slot)) {
            record.desync_open = false;
            record.resync_from = frame;
        }
        (frame, self.state.clone())
    }

    /// Expels the player in `slot` (a cheater, or a player who left): from the referee's
    /// current frame on, its input is `Default` and its messages are ignored. Players learn it
    /// from [`FinalInputs::expelled`].
    pub fn expel(&mut self, slot: Slot) {
        let frame = self.frame();
        if let Some(record) = self.records.get_mut(usize::from(slot)) {
            record.expelled_at.get_or_insert(frame);
        }
        self.simulate();
    }

    /// Takes the inputs simulated since the last call, as messages of at most
    /// [`MAX_FINAL_FRAMES`] frames, to send to every player in order on the reliable stream.
    pub fn take_broadcasts(&mut self) -> Vec<FinalInputs<G::Input>> {
        let mut out = Vec::new();
        while !self.pending.is_empty() {
            let take = self.pending.len().min(MAX_FINAL_FRAMES);
            let first_frame = self.pending_first;
            let end = first_frame.saturating_add(take as u32);
            let mut inputs = Vec::with_capacity(take * self.players);
            let mut filled = Vec::with_capacity(take);
            for (row, mask) in self.pending.drain(..take) {
                inputs.extend(row);
                filled.push(mask);
            }
            // A player learns of an expulsion in the first message that ends at or after it,
            // since it applies `Default` from the message's end on.
            let expelled = self
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.expelled_at.is_some_and(|at| at <= end))
                .fold(0u16, |mask, (slot, _)| mask | (1 << slot));
            out.push(FinalInputs {
                first_frame,
                players: self.players as u8,
                inputs,
                filled,
                expelled,
            });
            self.pending_first = end;
        }
        out
    }

    fn check_slot(&self, slot: Slot) -> Result<usize, RefereeError> {
        let s = usize::from(slot);
        if s >= self.players {
            return Err(RefereeError::InvalidSlot { slot });
        }
        Ok(s)
    }

    /// When frame `frame` is due on the node's clock, in ms.
    fn due_ms(&self, frame: u32) -> u64 {
        u64::from(frame.saturating_sub(self.start_frame)) * 1000
            / u64::from(self.config.tick_hz.max(1))
    }

    fn simulate(&mut self) {
        let clock_limit = self
            .clock_frame()
            .saturating_add(self.config.speed_lead_frames_max);
        loop {
            let frame = self.frame();
            // Nothing honest is ahead of the clock limit, and this bounds the loop.
            if frame > clock_limit {
                break;
            }
            if self.pending.len() >= MAX_PENDING_FINAL_FRAMES {
                self.stats.broadcast_backpressure += 1;
                break;
            }
            let Some((row, filled)) = self.decide(frame) else {
                break;
            };
            self.step(frame, row, filled);
        }
    }

    /// The inputs for `frame`, or `None` while a missing one is still waited for.
    fn decide(&mut self, frame: u32) -> Option<(Vec<G::Input>, u16)> {
        let mut row = Vec::with_capacity(self.players);
        let mut missing = 0u16;
        let mut expelled = 0u16;
        for slot in 0..self.players {
            let is_expelled = self
                .records
                .get(slot)
                .and_then(|r| r.expelled_at)
                .is_some_and(|at| frame >= at);
            let input = if is_expelled {
                expelled |= 1 << slot;
                G::Input::default()
            } else if let Some(input) = self.inputs.get(slot).and_then(|r| r.get(frame)) {
                *input
            } else {
                missing |= 1 << slot;
                self.last_used.get(slot).copied().unwrap_or_default()
            };
            row.push(input);
        }
        if missing != 0 {
            let arrived = *self.arrivals.get(frame)?;
            let deadline = arrived.max(self.due_ms(frame)) + u64::from(self.config.fill_wait_ms);
            if self.now_ms < deadline {
                return None;
            }
            self.stats.frames_filled += 1;
            self.stats.inputs_filled += u64::from(missing.count_ones());
        }
        Some((row, missing | expelled))
    }

    fn step(&mut self, frame: u32, row: Vec<G::Input>, filled: u16) {
        self.state.step(&row);
        self.last_used.clone_from(&row);
        for ring in &mut self.inputs {
            ring.remove(frame);
        }
        self.arrivals.remove(frame);
        self.pending.push_back((row, filled));
        self.stats.frames_simulated += 1;
        let now = self.state.frame();
        self.checksums.insert(now, self.state.checksum());
        for slot in 0..self.players {
            let due: Vec<ChecksumReport> = match self.records.get_mut(slot) {
                Some(record) => {
                    let keep = record.reports.iter().filter(|r| r.frame > now).count();
                    let split = record.reports.len() - keep;
                    record.reports.drain(..split).collect()
                }
                None => Vec::new(),
            };
            for report in due {
                self.compare(slot, report);
            }
        }
    }

    fn compare(&mut self, slot: usize, report: ChecksumReport) {
        let Some(own) = self.checksums.get(report.frame).copied() else {
            self.stats.reports_dropped += 1;
            return;
        };
        let node_frame = self.clock_frame();
        let Some(record) = self.records.get_mut(slot) else {
            return;
        };
        record.last_report_frame = record.last_report_frame.max(report.frame);
        record.flagged &= !FLAG_MISSING;
        if own == report.checksum {
            self.stats.reports_matched += 1;
            return;
        }
        self.stats.reports_mismatched += 1;
        if report.frame < record.resync_from || record.desync_open {
            return;
        }
        record.desync_open = true;
        self.push_verdict(Verdict {
            slot: report.slot,
            frame: report.frame,
            kind: VerdictKind::Desync,
            node_frame,
        });
    }

    fn check_overdue(&mut self) {
        let overdue = self.config.checksum_overdue_frames;
        if overdue == 0 {
            return;
        }
        let frame = self.frame();
        for slot in 0..self.players {
            let late = self.records.get(slot).and_then(|r| {
                let due = r.last_report_frame.saturating_add(overdue);
                (r.expelled_at.is_none() && frame >= due).then_some(r.last_report_frame)
            });
            if let Some(last) = late {
                self.flag_once(slot as Slot, last, VerdictKind::MissingChecksums);
            }
        }
    }

    fn flag_once(&mut self, slot: Slot, frame: u32, kind: VerdictKind) {
        let bit = match kind {
            VerdictKind::ForgedInput => FLAG_FORGED_INPUT,
            VerdictKind::ForgedReport => FLAG_FORGED_REPORT,
            VerdictKind::SpeedHack => FLAG_SPEED,
            VerdictKind::MissingChecksums => FLAG_MISSING,
            VerdictKind::Desync => 0,
        };
        let Some(record) = self.records.get_mut(usize::from(slot)) else {
            return;
        };
        if record.flagged & bit != 0 {
            return;
        }
        record.flagged |= bit;
        let node_frame = self.clock_frame();
        self.push_verdict(Verdict {
            slot,
            frame,
            kind,
            node_frame,
        });
    }

    fn push_verdict(&mut self, verdict: Verdict) {
        if self.verdicts.len() >= MAX_VERDICTS {
            self.stats.verdicts_dropped += 1;
        } else {
            self.verdicts.push(verdict);
        }
    }
}

#[cfg(test)]
mod tests;
