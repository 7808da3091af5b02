//! Matchmaking (in progress).

/// The node's matchmaker state.
#[derive(Debug, Default)]
pub(crate) struct Engine {}
