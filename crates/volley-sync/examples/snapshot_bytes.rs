//! Prints the snapshot codec's bytes on the wire next to a naive fixed-width encoding.
//!
//! `cargo run --release -p volley-sync --example snapshot_bytes -- [players] [ticks] [seed]`
//! (defaults 32, 900, 1): the realistic (steering) world, the same with 5% loss, and the
//! worst case (white-noise motion).

use volley_sync::snapshot::{bench_snapshot_bytes, BenchMotion, SnapshotBenchConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut next = |default: u64| {
        args.next()
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let base = SnapshotBenchConfig {
        players: next(32) as usize,
        ticks: next(900) as u32,
        seed: next(1),
        ..SnapshotBenchConfig::default()
    };
    for config in [
        base,
        SnapshotBenchConfig {
            loss_percent: 5,
            ..base
        },
        SnapshotBenchConfig {
            motion: BenchMotion::WhiteNoise,
            ..base
        },
    ] {
        println!("{}", bench_snapshot_bytes(&config));
    }
}
