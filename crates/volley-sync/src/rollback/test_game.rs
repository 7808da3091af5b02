//! A tiny deterministic game for tests: each player moves a counter left or right, and a mix of
//! all counters makes every state depend on every input ever applied.
#![allow(clippy::indexing_slicing)]

use crate::game::{EntityView, Game, Slot};

/// A move: -3..=3 steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Move(pub(crate) i8);

/// The counters of every player.
#[derive(Debug, Clone)]
pub(crate) struct Counter {
    frame: u32,
    pos: Vec<i32>,
    mix: u64,
}

impl Counter {
    pub(crate) fn new(players: usize) -> Self {
        Counter {
            frame: 0,
            pos: vec![0; players],
            mix: 0,
        }
    }

    /// What a cheater does to its own copy: teleport player 0.
    pub(crate) fn tamper(&mut self) {
        if let Some(p) = self.pos.first_mut() {
            *p += 1000;
        }
    }

    /// A bot: holds each move for 10 frames, as a player holding a stick would. `seed` is
    /// constant per player, so the same frame always gives the same move.
    pub(crate) fn bot_input(slot: Slot, frame: u32, seed: u64) -> Move {
        let mut h = seed ^ u64::from(frame / 10).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= u64::from(slot) << 56;
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        Move((h % 7) as i8 - 3)
    }
}

impl Game for Counter {
    type Input = Move;

    fn step(&mut self, inputs: &[Move]) {
        for (slot, (pos, input)) in self.pos.iter_mut().zip(inputs).enumerate() {
            *pos += i32::from(input.0);
            self.mix = self
                .mix
                .rotate_left(7)
                .wrapping_add((*pos as u64).wrapping_mul(slot as u64 + 0x9e37));
        }
        self.frame += 1;
    }

    fn frame(&self) -> u32 {
        self.frame
    }

    fn checksum(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut eat = |v: u64| {
            for b in v.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        };
        eat(u64::from(self.frame));
        for p in &self.pos {
            eat(*p as u64);
        }
        eat(self.mix);
        h
    }

    fn encode_input(input: &Move) -> [u8; 4] {
        [input.0 as u8, 0, 0, 0]
    }

    fn decode_input(bytes: [u8; 4]) -> Option<Move> {
        let [m, 0, 0, 0] = bytes else { return None };
        let m = m as i8;
        (-3..=3).contains(&m).then_some(Move(m))
    }

    fn entities(&self) -> Vec<EntityView> {
        self.pos
            .iter()
            .enumerate()
            .map(|(i, p)| EntityView {
                id: i as u16,
                x: *p,
                ..EntityView::default()
            })
            .collect()
    }
}
