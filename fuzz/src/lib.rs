//! Fuzz checks for `volley-proto`'s decoders; see `checks.rs`. The targets in `fuzz_targets/`
//! are one line each, calling a function re-exported here.

mod checks;
mod content_checks;
mod sync_checks;

pub use checks::*;
pub use content_checks::*;
pub use sync_checks::*;
