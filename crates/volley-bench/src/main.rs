//! `volley-bench`: Volley's benchmarks. Every number is printed next to a baseline measured in
//! the same run.
//!
//! `volley-bench <which> [args]`, `<which>` one of transport, node, snapshot, auth, matchmaker,
//! chat, ledger, leaderboard, content, swarm, reuse, collect, tracker, http, shield
//! (`cargo run --release -p volley-bench -- <which>`).
//!
//! The benches that run nodes or `volley content` as processes (node, swarm, reuse, collect,
//! tracker) start the `volley` binary: `VOLLEY_BIN` if set, else the `volley` next to this
//! binary, so build both in the same profile (`cargo build --release -p volley -p volley-bench`).

mod bench;
mod bench_collect;
mod bench_content;
mod bench_http;
mod bench_node;
mod bench_platform;
mod bench_reuse;
mod bench_shield;
mod bench_swarm;
mod bench_sync;
mod bench_tracker;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "volley-bench",
    version,
    about = "Volley benchmarks (results are ratios against a baseline measured in the same run)"
)]
struct Cli {
    #[command(subcommand)]
    which: bench::BenchCmd,
}

/// The `volley` binary the benches start as a process: `VOLLEY_BIN` if set, else `volley` in the
/// directory of this binary (where cargo puts both).
pub(crate) fn volley_exe() -> anyhow::Result<PathBuf> {
    let exe = match std::env::var_os("VOLLEY_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .context("locating volley-bench")?
            .with_file_name(format!("volley{}", std::env::consts::EXE_SUFFIX)),
    };
    anyhow::ensure!(
        exe.is_file(),
        "this bench runs the volley binary and there is none at {}: build it in the same profile \
         (cargo build --release -p volley) or set VOLLEY_BIN",
        exe.display()
    );
    Ok(exe)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    bench::run(cli.which).await
}
