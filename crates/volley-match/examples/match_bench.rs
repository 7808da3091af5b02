//! Runs the matchmaker benchmark ([`volley_match::bench::run_bench`]):
//!
//! ```text
//! cargo run --release -p volley-match --example match_bench -- [tickets] [unmatchable] [seed] [k]
//! ```
//!
//! Defaults: 100000 tickets, 0 unmatchable fraction, seed 1, the default K (candidates per
//! seed).

use volley_match::bench::{bench_config, run_bench_with};

fn main() {
    let mut args = std::env::args().skip(1);
    let tickets = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let unmatchable = args.next().and_then(|a| a.parse().ok()).unwrap_or(0.0);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut config = bench_config();
    if let Some(k) = args.next().and_then(|a| a.parse().ok()) {
        config.max_candidates = k;
    }
    println!("{}", run_bench_with(config, tickets, unmatchable, seed));
}
