//! Unit tests of the referee.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::rollback::test_game::{Counter, Move};

fn batch(slot: Slot, first_frame: u32, inputs: &[i8]) -> InputBatch<Move> {
    InputBatch {
        slot,
        first_frame,
        sender_frame: first_frame,
        ack_frame: 0,
        inputs: inputs.iter().map(|m| Move(*m)).collect(),
    }
}

fn referee(players: usize) -> Referee<Counter> {
    Referee::new(Counter::new(players), players, RefereeConfig::default()).unwrap()
}

#[test]
fn simulates_once_every_input_is_in() {
    let mut r = referee(2);
    r.on_inputs(0, &batch(0, 0, &[1, 1, 1]), 0).unwrap();
    assert_eq!(r.frame(), 0);
    r.on_inputs(1, &batch(1, 0, &[-1, -1]), 0).unwrap();
    assert_eq!(r.frame(), 2);
    let mut game = Counter::new(2);
    game.step(&[Move(1), Move(-1)]);
    game.step(&[Move(1), Move(-1)]);
    assert_eq!(r.checksum_at(2), Some(game.checksum()));
    let out = r.take_broadcasts();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].first_frame, out[0].frames()), (0, 2));
    assert_eq!(out[0].filled, vec![0, 0]);
    assert_eq!(out[0].row(1), Some(&[Move(1), Move(-1)][..]));
    assert!(r.take_broadcasts().is_empty());
}

#[test]
fn fills_a_missing_input_after_the_wait_by_repeating() {
    let mut r = referee(2);
    r.on_inputs(0, &batch(0, 0, &[1, 1]), 0).unwrap();
    r.on_inputs(1, &batch(1, 0, &[2]), 0).unwrap();
    assert_eq!(r.frame(), 1);
    // Frame 1: player 1's input arrives nowhere. Due at 16 ms; first arrival at 0 ms.
    r.tick(16 + 249);
    assert_eq!(r.frame(), 1);
    r.tick(16 + 250);
    assert_eq!(r.frame(), 2);
    assert_eq!(r.stats().frames_filled, 1);
    let out = r.take_broadcasts();
    assert_eq!(out[0].filled, vec![0, 0b10]);
    // Player 1's last input (2) was repeated.
    assert_eq!(out[0].row(1), Some(&[Move(1), Move(2)][..]));
    // The real input, late, is dropped.
    r.on_inputs(1, &batch(1, 1, &[-3]), 300).unwrap();
    assert_eq!(r.stats().inputs_late, 1);
    // No input at all for a frame: nothing to fill against, the referee waits.
    r.tick(10_000);
    assert_eq!(r.frame(), 2);
}

#[test]
fn an_early_sender_does_not_shorten_the_wait() {
    let mut r = referee(2);
    // Player 0 sends frame 10 at 0 ms (within its lead); frame 10 is due at 166 ms.
    r.on_inputs(0, &batch(0, 0, &[0; 11]), 0).unwrap();
    r.on_inputs(1, &batch(1, 0, &[0; 10]), 0).unwrap();
    assert_eq!(r.frame(), 10);
    r.tick(300);
    assert_eq!(r.frame(), 10);
    r.tick(166 + 250);
    assert_eq!(r.frame(), 11);
}

#[test]
fn forged_messages_name_the_sender() {
    let mut r = referee(3);
    assert_eq!(
        r.on_inputs(2, &batch(0, 0, &[3]), 5),
        Err(RefereeError::Forged {
            from: 2,
            claimed: 0
        })
    );
    let _ = r.on_inputs(2, &batch(1, 0, &[3]), 6);
    let report = ChecksumReport {
        slot: 1,
        frame: 0,
        checksum: 0,
    };
    assert!(r.on_checksum(2, report, 7).is_err());
    let kinds: Vec<(Slot, VerdictKind)> = r.verdicts().iter().map(|v| (v.slot, v.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (2, VerdictKind::ForgedInput),
            (2, VerdictKind::ForgedReport)
        ]
    );
    assert_eq!(r.stats().forged_messages, 3);
    assert_eq!(
        r.on_inputs(3, &batch(3, 0, &[0]), 8),
        Err(RefereeError::InvalidSlot { slot: 3 })
    );
    // Nothing forged was stored.
    r.on_inputs(0, &batch(0, 0, &[0]), 9).unwrap();
    r.on_inputs(1, &batch(1, 0, &[0]), 9).unwrap();
    r.on_inputs(2, &batch(2, 0, &[0]), 9).unwrap();
    assert_eq!(r.take_broadcasts()[0].row(0), Some(&[Move(0); 3][..]));
}

#[test]
fn inputs_ahead_of_the_clock_flag_a_speed_hack() {
    let mut r = referee(2);
    // At 1000 ms the clock is at frame 60; 60 + 12 is the limit.
    r.on_inputs(0, &batch(0, 60, &[0; 13]), 1000).unwrap();
    assert_eq!(
        r.on_inputs(0, &batch(0, 60, &[0; 14]), 1000),
        Err(RefereeError::AheadOfClock {
            slot: 0,
            frame: 73,
            limit: 72
        })
    );
    let _ = r.on_inputs(0, &batch(0, 80, &[0; 4]), 1000);
    assert_eq!(r.verdicts().len(), 1);
    let v = r.verdicts()[0];
    assert_eq!(
        (v.slot, v.kind, v.frame, v.node_frame),
        (0, VerdictKind::SpeedHack, 73, 60)
    );
}

#[test]
fn desync_verdicts_and_resync() {
    let mut r = referee(2);
    for f in 0..20u32 {
        r.on_inputs(0, &batch(0, f, &[1]), u64::from(f) * 16)
            .unwrap();
        r.on_inputs(1, &batch(1, f, &[2]), u64::from(f) * 16)
            .unwrap();
    }
    let good = |frame| ChecksumReport {
        slot: 1,
        frame,
        checksum: r.checksum_at(frame).unwrap(),
    };
    let (good10, good12) = (good(10), good(12));
    r.on_checksum(1, good10, 400).unwrap();
    r.on_checksum(0, ChecksumReport { slot: 0, ..good10 }, 400)
        .unwrap();
    let bad = |frame| ChecksumReport {
        slot: 1,
        frame,
        checksum: 7,
    };
    r.on_checksum(1, bad(11), 400).unwrap();
    r.on_checksum(1, bad(12), 400).unwrap();
    assert_eq!(r.verdicts().len(), 1);
    assert_eq!(
        (
            r.verdicts()[0].slot,
            r.verdicts()[0].kind,
            r.verdicts()[0].frame
        ),
        (1, VerdictKind::Desync, 11)
    );
    let (frame, state) = r.resync_state(1);
    assert_eq!((frame, state.checksum()), (20, r.checksum_at(20).unwrap()));
    // Reports from before the resync, still in flight, do not count again.
    r.on_checksum(1, bad(15), 410).unwrap();
    r.on_checksum(1, good12, 410).unwrap();
    assert_eq!(r.verdicts().len(), 1);
    // A report for a frame not simulated yet waits for it.
    r.on_checksum(1, bad(21), 420).unwrap();
    assert_eq!(r.verdicts().len(), 1);
    r.on_inputs(0, &batch(0, 20, &[1, 1]), 430).unwrap();
    r.on_inputs(1, &batch(1, 20, &[2, 2]), 430).unwrap();
    assert_eq!(r.verdicts().len(), 2);
    assert_eq!(r.verdicts()[1].frame, 21);
    assert_eq!(r.stats().reports_matched, 3);
    assert_eq!(r.stats().reports_mismatched, 4);
}

#[test]
fn silence_about_checksums_is_flagged() {
    let config = RefereeConfig {
        checksum_overdue_frames: 30,
        ..RefereeConfig::default()
    };
    let mut r = Referee::new(Counter::new(2), 2, config).unwrap();
    for f in 0..40u32 {
        let now = u64::from(f) * 16;
        r.on_inputs(0, &batch(0, f, &[0]), now).unwrap();
        r.on_inputs(1, &batch(1, f, &[0]), now).unwrap();
        if f % 10 == 0 {
            let frame = r.frame();
            let checksum = r.checksum_at(frame).unwrap();
            r.on_checksum(
                0,
                ChecksumReport {
                    slot: 0,
                    frame,
                    checksum,
                },
                now,
            )
            .unwrap();
        }
        r.tick(now);
    }
    let v: Vec<_> = r.verdicts().iter().map(|v| (v.slot, v.kind)).collect();
    assert_eq!(v, vec![(1, VerdictKind::MissingChecksums)]);
}

#[test]
fn expelled_players_get_default_inputs() {
    let mut r = referee(2);
    r.on_inputs(0, &batch(0, 0, &[1; 70]), 1000).unwrap();
    r.on_inputs(1, &batch(1, 0, &[2; 10]), 1000).unwrap();
    assert_eq!(r.frame(), 10);
    r.expel(1);
    assert!(r.is_expelled(1));
    assert_eq!(r.frame(), 70);
    // Its messages are ignored from now on.
    assert_eq!(r.on_inputs(1, &batch(1, 70, &[3]), 1000), Ok(0));
    let out = r.take_broadcasts();
    // 70 frames: two messages. The first ends (64) after the expulsion (10), so both say so.
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].frames(), out[1].frames()), (64, 6));
    assert_eq!((out[0].expelled, out[1].expelled), (0b10, 0b10));
    assert_eq!(out[1].first_frame, 64);
    assert_eq!(out[0].row(9), Some(&[Move(1), Move(2)][..]));
    assert_eq!(out[0].row(10), Some(&[Move(1), Move(0)][..]));
    assert_eq!(out[0].filled[10], 0b10);
}

#[test]
fn an_expulsion_is_announced_only_once_its_frame_is_covered() {
    let mut r = referee(2);
    r.on_inputs(0, &batch(0, 0, &[1; 70]), 1000).unwrap();
    r.on_inputs(1, &batch(1, 0, &[2; 66]), 1000).unwrap();
    assert_eq!(r.frame(), 66);
    r.expel(1);
    let out = r.take_broadcasts();
    // The first message (frames 0..64) ends before the expulsion at 66.
    assert_eq!((out[0].expelled, out[1].expelled), (0, 0b10));
}

#[test]
fn bounded_buffers() {
    let mut r = referee(2);
    // Reports far in the future are kept up to the limit.
    for i in 0..(MAX_PENDING_REPORTS_PER_PLAYER as u32 + 5) {
        let report = ChecksumReport {
            slot: 0,
            frame: 1000 + i,
            checksum: 0,
        };
        r.on_checksum(0, report, 0).unwrap();
    }
    assert_eq!(r.stats().reports_dropped, 5);
    // Inputs beyond the window (but not the clock) are refused without a verdict.
    let config = RefereeConfig {
        input_window_frames: 16,
        speed_lead_frames_max: 16,
        ..RefereeConfig::default()
    };
    let mut r = Referee::new(Counter::new(2), 2, config).unwrap();
    assert_eq!(r.on_inputs(0, &batch(0, 0, &[0; 20]), 10_000), Ok(16));
    assert_eq!(r.stats().inputs_refused, 4);
    assert!(r.verdicts().is_empty());
}
