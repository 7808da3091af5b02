//! The game interface: what a game gives Volley's netcode.
//!
//! A game is a deterministic state machine: the same state and the same inputs give a
//! bit-identical next state on every machine. That one property is what rollback (re-simulate
//! with corrected inputs), the node's referee (simulate confirmed inputs and compare checksums)
//! and snapshot prediction all stand on.

/// A player's slot in a match: 0..players.
pub type Slot = u8;

/// A game Volley can run.
pub trait Game: Clone {
    /// One player's input for one frame. `Default` is "no input" (what is predicted for a
    /// player nothing was heard from yet).
    type Input: Copy + Default + PartialEq + Eq + std::fmt::Debug;

    /// Advances one fixed step. `inputs[slot]` is each player's input for this frame; the slice
    /// always has one entry per player.
    fn step(&mut self, inputs: &[Self::Input]);

    /// [`Game::step`] on the authority in snapshot mode, with lag compensation: `views[slot]`
    /// is the world as that player saw it (rewound by its latency and interpolation delay, from
    /// the node's history), `None` where nothing is rewound. A game that judges a player's hits
    /// against where that player saw its targets overrides this; the default ignores the views.
    /// Never used where every machine must simulate the same (rollback): only the node runs it.
    fn step_compensated(&mut self, inputs: &[Self::Input], _views: &[Option<&[EntityView]>]) {
        self.step(inputs);
    }

    /// The frame number of the state (0 before the first step).
    fn frame(&self) -> u32;

    /// A hash of the whole state. Equal states give equal checksums on every machine.
    fn checksum(&self) -> u64;

    /// Encodes an input in a fixed small number of bytes.
    fn encode_input(input: &Self::Input) -> [u8; 4];

    /// Decodes an input; `None` when the bytes cannot be an input (a forged or broken packet).
    fn decode_input(bytes: [u8; 4]) -> Option<Self::Input>;

    /// The entities as the snapshot codec sees them (authoritative mode), in id order.
    fn entities(&self) -> Vec<EntityView>;

    /// Client-side prediction in snapshot mode: where `entity` (the player's own) is one frame
    /// later under `input`, by the same rules the authority applies. The default predicts no
    /// movement, which is always safe and never smooth.
    fn predict(entity: &EntityView, _input: &Self::Input) -> EntityView {
        *entity
    }

    /// The whole state as bytes, for the referee to resync a client that diverged. The
    /// default (empty) means the game cannot be resynced over the wire.
    fn encode_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Decodes [`Game::encode_state`]; `None` for bytes that are not a valid state.
    fn decode_state(_bytes: &[u8]) -> Option<Self> {
        None
    }
}

/// An entity as sent in snapshots: the quantization schema of every Volley snapshot.
///
/// Positions are fixed-point game units (1/256 of a world unit) inside the arena; the codec
/// quantizes them further for the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntityView {
    /// Stable entity id (players first, then projectiles).
    pub id: u16,
    /// Kind (e.g. player, bullet).
    pub kind: u8,
    /// Position, fixed-point 1/256 units.
    pub x: i32,
    /// Position, fixed-point 1/256 units.
    pub y: i32,
    /// Velocity, fixed-point 1/256 units per frame.
    pub vx: i32,
    /// Velocity, fixed-point 1/256 units per frame.
    pub vy: i32,
    /// Facing, 256 steps per turn.
    pub angle: u8,
    /// Health points (0 = dead).
    pub health: u8,
    /// Game-defined flags (firing, respawning...).
    pub flags: u8,
}
