//! What rollback costs: the time a game takes to re-simulate, and the latency a prediction
//! window hides. The measurement takes the clock as an argument, so this crate still reads no
//! clock itself; the bench binary passes `Instant`.
#![deny(clippy::indexing_slicing)]

use std::hint::black_box;

use crate::game::{Game, Slot};

/// Re-simulation cost of one game, measured by [`resimulation_cost`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResimCost {
    /// Frames per rollback measured (the prediction window).
    pub window_frames: u32,
    /// Rollbacks timed.
    pub rounds: u32,
    /// Mean time of one [`Game::step`], without saving.
    pub step_ns_mean: u64,
    /// Mean time of saving one state (a clone).
    pub save_ns_mean: u64,
    /// Mean time of one whole rollback: restore a state, then step and save `window_frames`
    /// frames.
    pub rollback_ns_mean: u64,
    /// The slowest rollback seen.
    pub rollback_ns_max: u64,
    /// Re-simulation cost per frame (step + save), from the rollbacks.
    pub resim_ns_per_frame: u64,
    /// One tick at the given rate.
    pub frame_budget_ns: u64,
    /// How much of a tick the slowest full-window rollback takes (1.0 = all of it).
    pub worst_rollback_budget_share: f64,
}

/// Measures what rollback costs for a game: restores a saved state and re-simulates
/// `window_frames` frames, `rounds` times, with inputs from `input_for(slot, frame)`.
///
/// `now_ns` is the caller's monotonic clock in nanoseconds (for example
/// `|| start.elapsed().as_nanos() as u64`).
pub fn resimulation_cost<G: Game>(
    game: &G,
    players: usize,
    window_frames: u32,
    rounds: u32,
    tick_hz: u32,
    mut input_for: impl FnMut(Slot, u32) -> G::Input,
    mut now_ns: impl FnMut() -> u64,
) -> ResimCost {
    let window_frames = window_frames.max(1);
    let rounds = rounds.max(1);
    let mut inputs_at = |frame: u32| -> Vec<G::Input> {
        (0..players)
            .map(|slot| input_for(slot as Slot, frame))
            .collect()
    };
    // Plain stepping, for the step cost alone.
    let mut plain = game.clone();
    let steps = window_frames.saturating_mul(rounds).min(100_000);
    let rows: Vec<Vec<G::Input>> = (0..steps).map(|f| inputs_at(plain.frame() + f)).collect();
    let t0 = now_ns();
    for row in &rows {
        plain.step(row);
    }
    let step_total = now_ns().saturating_sub(t0);
    black_box(plain.checksum());
    // Saving alone.
    let t0 = now_ns();
    for _ in 0..steps {
        black_box(plain.clone());
    }
    let save_total = now_ns().saturating_sub(t0);

    // Rollbacks: the base moves a frame each round so no two rounds redo the same work.
    let mut base = game.clone();
    let mut total = 0u64;
    let mut max = 0u64;
    for _ in 0..rounds {
        let first = base.frame();
        let rows: Vec<Vec<G::Input>> = (0..window_frames).map(|f| inputs_at(first + f)).collect();
        let t0 = now_ns();
        let mut state = base.clone();
        let mut saved = None;
        for row in &rows {
            state.step(row);
            saved = Some(state.clone());
        }
        let took = now_ns().saturating_sub(t0);
        black_box(saved.map(|s| s.checksum()));
        total = total.saturating_add(took);
        max = max.max(took);
        base.step(&inputs_at(first));
    }
    let frame_budget_ns = 1_000_000_000 / u64::from(tick_hz.max(1));
    let rollback_ns_mean = total / u64::from(rounds);
    ResimCost {
        window_frames,
        rounds,
        step_ns_mean: step_total / u64::from(steps.max(1)),
        save_ns_mean: save_total / u64::from(steps.max(1)),
        rollback_ns_mean,
        rollback_ns_max: max,
        resim_ns_per_frame: rollback_ns_mean / u64::from(window_frames),
        frame_budget_ns,
        worst_rollback_budget_share: max as f64 / frame_budget_ns as f64,
    }
}

/// The highest one-way latency (ms) between two players at which neither stalls, for a
/// prediction window, an input delay, a tick rate and the link's jitter (its worst excess over
/// the mean).
///
/// With both players in step (time sync), the input a peer adds at its frame `f` is for frame
/// `f + delay` and arrives `one_way` later, when we are at frame `f + one_way / tick`. We stall
/// when we are `max_prediction` frames past the newest input we have, so the game runs without
/// stalls while `one_way + jitter ≤ (max_prediction + delay) × tick`. The simulation harness
/// checks this bound (`sim` tests).
pub fn max_one_way_ms_without_stall(
    max_prediction_frames: u32,
    input_delay_frames: u32,
    tick_hz: u32,
    jitter_ms: u32,
) -> u32 {
    let frames = u64::from(max_prediction_frames) + u64::from(input_delay_frames);
    let window_ms = frames * 1000 / u64::from(tick_hz.max(1));
    u32::try_from(window_ms)
        .unwrap_or(u32::MAX)
        .saturating_sub(jitter_ms)
}

/// The highest RTT (ms) a prediction window hides with no input delay and no jitter: twice
/// [`max_one_way_ms_without_stall`]. At 60 Hz, 8 frames of prediction hide 266 ms.
pub fn max_rtt_ms_without_input_delay(max_prediction_frames: u32, tick_hz: u32) -> u32 {
    2 * max_one_way_ms_without_stall(max_prediction_frames, 0, tick_hz, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollback::test_game::{Counter, Move};

    #[test]
    fn latency_bounds() {
        assert_eq!(max_rtt_ms_without_input_delay(8, 60), 266);
        assert_eq!(max_one_way_ms_without_stall(8, 2, 60, 40), 126);
        assert_eq!(max_one_way_ms_without_stall(0, 0, 0, 10), 0);
    }

    #[test]
    fn measures_with_a_fake_clock() {
        // A clock that advances 100 ns per reading makes the numbers exact.
        let mut t = 0u64;
        let cost = resimulation_cost(
            &Counter::new(4),
            4,
            8,
            10,
            60,
            |_, _| Move(1),
            || {
                t += 100;
                t
            },
        );
        assert_eq!(cost.rollback_ns_max, 100);
        assert_eq!(cost.window_frames, 8);
        assert_eq!(cost.frame_budget_ns, 16_666_666);
        assert!(cost.worst_rollback_budget_share < 0.001);
    }
}
