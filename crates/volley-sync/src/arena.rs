//! The demo arena game (being written).
