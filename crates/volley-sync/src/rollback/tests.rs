//! Unit and property tests of the rollback session, against a reference simulation that
//! steps the test game directly with the inputs every player meant.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::test_game::{Counter, Move};
use super::*;
use crate::referee::{Referee, RefereeConfig};

const SEEDS: [u64; 4] = [11, 22, 33, 44];

/// The input a bot player meant for `frame` (sampled `delay` frames earlier).
fn meant(slot: usize, frame: u32, delay: u32) -> Move {
    if frame < delay {
        Move::default()
    } else {
        Counter::bot_input(slot as Slot, frame - delay, SEEDS[slot])
    }
}

/// Checksums of the reference run at frames `0..=frames`.
fn reference(players: usize, delay: u32, frames: u32) -> Vec<u64> {
    let mut game = Counter::new(players);
    let mut out = vec![game.checksum()];
    for f in 0..frames {
        let inputs: Vec<Move> = (0..players).map(|s| meant(s, f, delay)).collect();
        game.step(&inputs);
        out.push(game.checksum());
    }
    out
}

fn p2p() -> RollbackConfig {
    RollbackConfig {
        referee_finality: false,
        ..RollbackConfig::default()
    }
}

fn sessions(players: usize, config: RollbackConfig) -> Vec<Rollback<Counter>> {
    (0..players)
        .map(|s| Rollback::new(Counter::new(players), players, s as Slot, config).unwrap())
        .collect()
}

fn add_bot_input(session: &mut Rollback<Counter>) {
    if session.needs_local_input() {
        let slot = usize::from(session.local_slot());
        let frame = session.current_frame();
        session
            .add_local_input(Counter::bot_input(slot as Slot, frame, SEEDS[slot]))
            .unwrap();
    }
}

/// Every confirmed checksum still kept equals the reference.
fn assert_matches_reference(session: &Rollback<Counter>, reference: &[u64]) -> u32 {
    let mut checked = 0;
    for frame in 0..=session.confirmed_frame() {
        if let Some(sum) = session.checksum_at(frame) {
            assert_eq!(Some(&sum), reference.get(frame as usize), "frame {frame}");
            checked += 1;
        }
    }
    checked
}

#[test]
fn config_limits() {
    let bad = RollbackConfig {
        max_prediction_frames: 4,
        ..RollbackConfig::default()
    };
    assert!(matches!(
        Rollback::new(Counter::new(2), 2, 0, bad),
        Err(ConfigError::OutOfRange {
            what: "max_prediction_frames",
            ..
        })
    ));
    assert!(matches!(
        Rollback::new(Counter::new(2), 2, 2, p2p()),
        Err(ConfigError::LocalSlot { .. })
    ));
    assert!(matches!(
        Rollback::new(Counter::new(17), 17, 0, p2p()),
        Err(ConfigError::Players { players: 17 })
    ));
}

#[test]
fn lockstep_exchange_converges_without_rollback() {
    let mut s = sessions(3, p2p());
    for _ in 0..200 {
        for session in &mut s {
            add_bot_input(session);
        }
        let batches: Vec<_> = s.iter().map(|x| x.outgoing_inputs()).collect();
        for (to, session) in s.iter_mut().enumerate() {
            for (from, batch) in batches.iter().enumerate() {
                if from != to {
                    session.on_remote_batch(from as Slot, batch).unwrap();
                }
            }
        }
        for session in &mut s {
            let outcome = session.advance().unwrap();
            assert_eq!(outcome.rolled_back_frames, 0);
            assert_eq!(outcome.predicted, 0);
        }
    }
    let reference = reference(3, 2, 200);
    for session in &s {
        assert_eq!(session.confirmed_frame(), 200);
        assert!(assert_matches_reference(session, &reference) >= 200);
        assert_eq!(session.stats().rollbacks, 0);
    }
}

#[test]
fn misprediction_rolls_back_and_corrects() {
    let mut s = sessions(2, p2p());
    // B holds a move of 3; A hears nothing for 6 frames and predicts "no input".
    for _ in 0..6 {
        add_bot_input(&mut s[0]);
        s[1].add_local_input(Move(3)).unwrap();
        s[0].advance().unwrap();
        s[1].advance().unwrap();
    }
    let batch = s[1].outgoing_inputs();
    assert_eq!(batch.first_frame, 0);
    assert_eq!(batch.inputs.len(), 8);
    s[0].on_remote_batch(1, &batch).unwrap();
    add_bot_input(&mut s[0]);
    let outcome = s[0].advance().unwrap();
    // Frames 0 and 1 were B's "no input" delay frames; the rollback starts at frame 2.
    assert_eq!(outcome.rolled_back_frames, 4);
    assert_eq!(outcome.predicted, 0);
    let stats = s[0].stats();
    assert_eq!((stats.rollbacks, stats.rollback_frames_max), (1, 4));
    // One wrong guess per input: frames 2, 3, 4 and 5.
    assert_eq!(stats.mispredictions, 4);

    // The corrected state equals a direct simulation.
    let mut game = Counter::new(2);
    for f in 0..7u32 {
        let b = if f < 2 { Move(0) } else { Move(3) };
        game.step(&[meant(0, f, 2), b]);
    }
    assert_eq!(s[0].state().checksum(), game.checksum());
}

#[test]
fn stalls_after_the_prediction_window() {
    let mut s = sessions(2, p2p());
    let mut advanced = 0;
    let stall = loop {
        add_bot_input(&mut s[0]);
        match s[0].advance() {
            Ok(_) => advanced += 1,
            Err(stall) => break stall,
        }
        assert!(advanced <= 8);
    };
    assert_eq!(advanced, 8);
    assert_eq!(
        stall,
        Stall::PredictionWindowFull {
            frame: 8,
            input_complete: 0
        }
    );
    // The input for this frame was added already; adding it again is refused.
    assert_eq!(
        s[0].add_local_input(Move(1)),
        Err(RollbackError::LocalInputAlreadyAdded { frame: 10 })
    );
    assert_eq!(s[0].stats().local_inputs_refused, 1);
    assert!(!s[0].needs_local_input());
    // B's inputs arrive: A resumes.
    for _ in 0..8 {
        add_bot_input(&mut s[1]);
        s[1].advance().unwrap();
    }
    let batch = s[1].outgoing_inputs();
    s[0].on_remote_batch(1, &batch).unwrap();
    assert_eq!(s[0].input_complete_frame(), 10);
    assert!(s[0].advance().is_ok());
    assert_eq!(s[0].stats().stalls, 1);
}

#[test]
fn refuses_inputs_beyond_the_window_and_forgeries() {
    let mut s = sessions(3, p2p());
    // accept_lead = 8 + 2 * 2 + 4 = 16 frames ahead of frame 0.
    let inputs = vec![Move(1); 20];
    assert_eq!(
        s[0].on_remote_inputs(1, 0, &inputs),
        Err(RollbackError::BeyondWindow {
            slot: 1,
            frame: 16,
            limit: 16
        })
    );
    assert_eq!(s[0].stats().rejected_beyond_window, 4);
    // The inputs inside the window were kept.
    assert_eq!(s[0].on_remote_inputs(1, 0, &inputs[..16]), Ok(0));
    assert_eq!(s[0].stats().duplicates, 16);
    // A different input for a known frame is ignored and counted.
    assert_eq!(s[0].on_remote_inputs(1, 3, &[Move(-1)]), Ok(0));
    assert_eq!(s[0].stats().conflicting_inputs, 1);
    // A batch claiming another slot than its connection's.
    let forged = InputBatch {
        slot: 2,
        first_frame: 0,
        sender_frame: 0,
        ack_frame: 0,
        inputs: vec![Move(2)],
    };
    assert_eq!(
        s[0].on_remote_batch(1, &forged),
        Err(RollbackError::Forged {
            from: 1,
            claimed: 2
        })
    );
    assert_eq!(
        s[0].on_remote_batch(0, &forged),
        Err(RollbackError::InvalidSlot { slot: 0 })
    );
    assert_eq!(
        s[0].on_remote_inputs(1, u32::MAX, &[Move(0), Move(0)]),
        Err(RollbackError::BeyondWindow {
            slot: 1,
            frame: u32::MAX,
            limit: 16
        })
    );
}

#[test]
fn redundancy_hides_losses() {
    let mut s = sessions(2, p2p());
    for round in 0..300u32 {
        for session in &mut s {
            add_bot_input(session);
        }
        // Two datagrams out of three are lost, in both directions.
        if round % 3 == 0 {
            let (a, b) = (s[0].outgoing_inputs(), s[1].outgoing_inputs());
            s[1].on_remote_batch(0, &a).unwrap();
            s[0].on_remote_batch(1, &b).unwrap();
        }
        for session in &mut s {
            session.advance().unwrap();
        }
    }
    let reference = reference(2, 2, 300);
    for session in &s {
        assert_eq!(session.stats().stalls, 0);
        assert!(assert_matches_reference(session, &reference) > 250);
    }
}

#[test]
fn acknowledgements_bring_back_older_inputs() {
    let mut s = sessions(2, p2p());
    // B hears nothing from A for 30 rounds and stalls; A keeps hearing B.
    for _ in 0..30 {
        for session in &mut s {
            add_bot_input(session);
        }
        let b = s[1].outgoing_inputs();
        s[0].on_remote_batch(1, &b).unwrap();
        for session in &mut s {
            let _ = session.advance();
        }
    }
    let b_complete = s[1].input_complete_frame();
    assert!(s[1].stats().stalls > 0);
    let a = s[0].outgoing_inputs();
    assert!(
        a.first_frame <= b_complete,
        "{} > {b_complete}",
        a.first_frame
    );
    assert!(a.inputs.len() > 8);
    s[1].on_remote_batch(0, &a).unwrap();
    assert!(s[1].input_complete_frame() > b_complete + 8);
}

#[test]
fn checksum_reports_every_interval() {
    let mut s = sessions(2, p2p());
    for _ in 0..45 {
        for session in &mut s {
            add_bot_input(session);
        }
        let (a, b) = (s[0].outgoing_inputs(), s[1].outgoing_inputs());
        s[1].on_remote_batch(0, &a).unwrap();
        s[0].on_remote_batch(1, &b).unwrap();
        for session in &mut s {
            session.advance().unwrap();
        }
    }
    let reference = reference(2, 2, 45);
    let reports = s[0].take_checksum_reports();
    let frames: Vec<u32> = reports.iter().map(|r| r.frame).collect();
    assert_eq!(frames, vec![10, 20, 30, 40]);
    for r in reports {
        assert_eq!(r.slot, 0);
        assert_eq!(r.checksum, reference[r.frame as usize]);
    }
    assert!(s[0].take_checksum_reports().is_empty());
}

#[test]
fn the_player_ahead_is_told_to_wait() {
    let mut s = sessions(2, p2p());
    // A starts 12 frames before B.
    let mut waits = [0u32; 2];
    for round in 0..200u32 {
        for (i, session) in s.iter_mut().enumerate() {
            if i == 1 && round < 12 {
                continue;
            }
            if waits[i] > 0 {
                waits[i] -= 1;
                continue;
            }
            waits[i] = session.frames_to_wait();
            if waits[i] > 0 {
                continue;
            }
            add_bot_input(session);
            let _ = session.advance();
        }
        let (a, b) = (s[0].outgoing_inputs(), s[1].outgoing_inputs());
        s[1].on_remote_batch(0, &a).unwrap();
        s[0].on_remote_batch(1, &b).unwrap();
    }
    assert!(s[0].stats().frames_waited >= 4, "{:?}", s[0].stats());
    assert_eq!(s[1].stats().frames_waited, 0);
    let gap = i64::from(s[0].current_frame()) - i64::from(s[1].current_frame());
    assert!(gap.abs() <= 2, "still {gap} frames apart");
}

/// Drives two sessions and a referee frame by frame (17 ms per frame); `to_node(frame, slot)`
/// says whether that player's batch reaches the node this frame.
fn run_with_referee(
    sessions: &mut [Rollback<Counter>],
    referee: &mut Referee<Counter>,
    frames: std::ops::Range<u32>,
    to_node: impl Fn(u32, usize) -> bool,
) {
    for round in frames {
        let now_ms = u64::from(round) * 17;
        for session in sessions.iter_mut() {
            add_bot_input(session);
        }
        let batches: Vec<_> = sessions.iter().map(|x| x.outgoing_inputs()).collect();
        for (from, batch) in batches.iter().enumerate() {
            if to_node(round, from) {
                referee.on_inputs(from as Slot, batch, now_ms).unwrap();
            }
            for (to, session) in sessions.iter_mut().enumerate() {
                if to != from {
                    session.on_remote_batch(from as Slot, batch).unwrap();
                }
            }
        }
        referee.tick(now_ms);
        for message in referee.take_broadcasts() {
            for session in sessions.iter_mut() {
                session.on_final_inputs(&message).unwrap();
            }
        }
        for session in sessions.iter_mut() {
            let _ = session.advance();
        }
    }
}

#[test]
fn referee_fills_override_what_peers_said() {
    let players = 2;
    let config = RollbackConfig::default();
    let mut s = sessions(players, config);
    let mut referee =
        Referee::new(Counter::new(players), players, RefereeConfig::default()).unwrap();
    // B's batches do not reach the node for 30 frames: the referee fills B's inputs, which
    // differ from what B sent its peer.
    run_with_referee(&mut s, &mut referee, 0..200, |round, slot| {
        slot == 0 || !(20..50).contains(&round)
    });
    assert!(referee.stats().frames_filled > 0);
    assert!(referee.stats().inputs_late > 0);
    let confirmed = s.iter().map(|x| x.confirmed_frame()).min().unwrap();
    assert!(confirmed > 150, "confirmed {confirmed}");
    for session in &s {
        assert!(session.stats().referee_overrides > 0);
        for frame in 0..=confirmed {
            if let Some(sum) = session.checksum_at(frame) {
                assert_eq!(Some(sum), referee.checksum_at(frame), "frame {frame}");
            }
        }
    }
    // The fill really changed the game: the result is not the peers' version.
    let reference = reference(players, 2, 200);
    assert_ne!(referee.checksum_at(150), Some(reference[150]));
}

#[test]
fn a_desynced_player_adopts_the_referees_state() {
    let players = 2;
    let mut s = sessions(players, RollbackConfig::default());
    // Player 0 starts from an altered state.
    let mut bad = Counter::new(players);
    bad.tamper();
    s[0] = Rollback::new(bad, players, 0, RollbackConfig::default()).unwrap();
    let mut referee =
        Referee::new(Counter::new(players), players, RefereeConfig::default()).unwrap();
    run_with_referee(&mut s, &mut referee, 0..60, |_, _| true);
    let f = s[0].confirmed_frame();
    assert!(f > 30);
    assert_ne!(s[0].checksum_at(f), referee.checksum_at(f));
    assert_eq!(s[1].checksum_at(f), referee.checksum_at(f));

    let (frame, state) = referee.resync_state(0);
    assert_eq!(
        s[0].adopt_state(frame + 1, state.clone()),
        Err(RollbackError::StateFrameMismatch {
            frame: frame + 1,
            state_frame: frame
        })
    );
    s[0].adopt_state(frame, state).unwrap();
    run_with_referee(&mut s, &mut referee, 60..120, |_, _| true);
    let f = s[0].confirmed_frame();
    assert!(f > 90);
    for frame in frame..=f {
        assert_eq!(
            s[0].checksum_at(frame),
            referee.checksum_at(frame),
            "frame {frame}"
        );
    }
    assert_eq!(s[0].stats().resyncs, 1);
}

#[test]
fn referee_messages_must_not_skip() {
    let mut s = sessions(2, RollbackConfig::default());
    let message = FinalInputs {
        first_frame: 5,
        players: 2,
        inputs: vec![Move(0); 2],
        filled: vec![0],
        expelled: 0,
    };
    assert_eq!(
        s[0].on_final_inputs(&message),
        Err(RollbackError::RefereeGap {
            expected: 0,
            found: 5
        })
    );
    let three = FinalInputs {
        players: 3,
        first_frame: 0,
        ..message
    };
    assert!(matches!(
        s[0].on_final_inputs(&three),
        Err(RollbackError::PlayerCount { .. })
    ));
}

#[test]
fn an_expelled_player_is_no_longer_waited_for() {
    let mut s = sessions(2, RollbackConfig::default());
    // Frames 0..4 are final; then player 1 is expelled.
    let message = FinalInputs {
        first_frame: 0,
        players: 2,
        inputs: vec![Move(0); 8],
        filled: vec![0; 4],
        expelled: 0b10,
    };
    s[0].on_final_inputs(&message).unwrap();
    for _ in 0..50 {
        add_bot_input(&mut s[0]);
        s[0].advance().unwrap();
    }
    assert_eq!(s[0].stats().stalls, 0);
    assert_eq!(s[0].on_remote_inputs(1, 50, &[Move(3)]), Ok(0));
}

#[derive(Debug, Clone)]
struct Delivery {
    after_rounds: u32,
    duplicate: bool,
}

fn delivery() -> impl Strategy<Value = Option<Delivery>> {
    prop_oneof![
        1 => Just(None),
        4 => (0u32..6, any::<bool>()).prop_map(|(after_rounds, duplicate)| Some(Delivery {
            after_rounds,
            duplicate
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the network does to batches (delay, loss, duplication, reordering), every
    /// confirmed state equals the reference.
    #[test]
    fn any_delivery_schedule_converges(
        players in 2usize..=4,
        schedule in proptest::collection::vec(delivery(), 160 * 4),
        delay in 0u32..=3,
    ) {
        let config = RollbackConfig { input_delay_frames: delay, ..p2p() };
        let mut s = sessions(players, config);
        let mut in_flight: Vec<(u32, usize, usize, InputBatch<Move>)> = Vec::new();
        let rounds = 160u32;
        // After `rounds`, the network turns perfect and everyone catches up to `rounds`.
        for round in 0..rounds + 40 {
            for session in s.iter_mut() {
                if session.current_frame() < rounds {
                    add_bot_input(session);
                }
            }
            for from in 0..players {
                let batch = s[from].outgoing_inputs();
                let plan = if round < rounds {
                    schedule[(round as usize * players + from) % schedule.len()].clone()
                } else {
                    Some(Delivery { after_rounds: 0, duplicate: false })
                };
                if let Some(plan) = plan {
                    for to in (0..players).filter(|t| *t != from) {
                        in_flight.push((round + plan.after_rounds, from, to, batch.clone()));
                        if plan.duplicate {
                            in_flight.push((round + plan.after_rounds + 1, from, to, batch.clone()));
                        }
                    }
                }
            }
            let (due, later): (Vec<_>, Vec<_>) =
                in_flight.drain(..).partition(|(at, ..)| *at <= round);
            in_flight = later;
            // Newest first: reordering on top of the delays.
            for (_, from, to, batch) in due.iter().rev() {
                // Out-of-window inputs are legal to refuse; everything else must be taken.
                match s[*to].on_remote_batch(*from as Slot, batch) {
                    Ok(_) | Err(RollbackError::BeyondWindow { .. }) => {}
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
            for session in s.iter_mut() {
                if session.current_frame() < rounds {
                    let _ = session.advance();
                }
            }
        }
        let reference = reference(players, delay, rounds + 20);
        for session in &s {
            prop_assert_eq!(session.current_frame(), rounds);
            prop_assert_eq!(session.confirmed_frame(), rounds);
            assert_matches_reference(session, &reference);
            prop_assert!(session.stats().rollback_frames_max <= config.max_prediction_frames);
        }
    }
}
