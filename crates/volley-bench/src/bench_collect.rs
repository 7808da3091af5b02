//! `volley-bench collect`: withdrawing old versions from a node and collecting their chunks,
//! next to the physical limit of the rewrite (copying the bytes the collection kept and moved,
//! with one flush) and the ideal disk footprint (the bytes the kept versions reference).
//!
//! The history: version 1 is `--files` files of random bytes; each later version rewrites
//! `--rewrite` of them (the next ones in turn), as a patch replacing whole assets does. All are
//! published to one node (grace period 0), every version but the newest is withdrawn, and the
//! collection is timed through the node's HTTP API.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use rand::SeedableRng;
use serde::Serialize;

use crate::bench_reuse::random_file;
use crate::bench_swarm::{start_node_with, KEY};

#[derive(clap::Args, Debug)]
pub(crate) struct CollectArgs {
    /// Size of one version in MiB (random, incompressible bytes).
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Files a version is split into.
    #[arg(long, default_value_t = 16)]
    files: u64,
    /// Versions published.
    #[arg(long, default_value_t = 4)]
    versions: u64,
    /// Files each later version rewrites.
    #[arg(long, default_value_t = 4)]
    rewrite: u64,
    /// Rounds (each publishes the history to a fresh node).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Drop the page cache before the collection and before the floor (needs root), so both
    /// read from the disk.
    #[arg(long)]
    cold: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Writes dirty pages out and, when `cold`, drops the page cache.
fn settle(cold: bool) -> anyhow::Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    if cold {
        std::fs::write("/proc/sys/vm/drop_caches", b"3")
            .context("dropping the page cache (--cold needs root)")?;
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct Round {
    /// The `POST /collect` call, end to end.
    collect_seconds: f64,
    /// Copying the records the collection moved (its new packs) to one file, 1 MiB at a time,
    /// flushing it, and removing files as large as the packs the collection removed: the
    /// least a rewrite of those bytes costs here.
    copy_seconds: f64,
    collect_over_copy: f64,
    dropped_bytes: u64,
    moved_bytes: u64,
    disk_bytes_before: u64,
    disk_bytes_after: u64,
    /// Bytes the kept version references (distinct chunks), with each record's 36-byte header.
    ideal_bytes_after: u64,
    after_over_ideal: f64,
    packs_removed: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    version_bytes: u64,
    files: u64,
    versions: u64,
    rewrite: u64,
    rounds: Vec<Round>,
}

fn packs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    v.sort();
    Ok(v)
}

/// Copies `from` into one new file in `to_dir`, 1 MiB at a time, flushes it and removes
/// `old`: seconds.
fn copy_and_flush(from: &[PathBuf], to_dir: &Path, old: &[PathBuf]) -> anyhow::Result<f64> {
    let out = to_dir.join("copy.bin");
    let start = Instant::now();
    let mut w = std::fs::File::create(&out)?;
    let mut buf = vec![0u8; 1 << 20];
    for p in from {
        let mut r = std::fs::File::open(p)?;
        loop {
            let n = std::io::Read::read(&mut r, &mut buf)?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut w, &buf[..n])?;
        }
    }
    w.sync_all()?;
    for p in old {
        std::fs::remove_file(p)?;
    }
    let s = start.elapsed().as_secs_f64();
    std::fs::remove_file(&out)?;
    Ok(s)
}

pub(crate) async fn run(args: CollectArgs) -> anyhow::Result<()> {
    anyhow::ensure!((16..=8192).contains(&args.mib), "--mib must be 16..=8192");
    anyhow::ensure!(
        (1..=256).contains(&args.files)
            && (2..=32).contains(&args.versions)
            && (1..=args.files).contains(&args.rewrite)
            && (1..=10).contains(&args.rounds),
        "--files 1..=256, --versions 2..=32, --rewrite 1..=files, --rounds 1..=10"
    );
    let exe = crate::volley_exe()?;
    let tmp = tempfile::tempdir()?;
    let work = tmp.path();
    let per = (args.mib << 20) / args.files;
    // The history, written once: v1's files, then the rewrites of each later version.
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let build = work.join("build");
    std::fs::create_dir_all(&build)?;
    let file = |i: u64| build.join(format!("asset{i:03}.bin"));
    for i in 0..args.files {
        random_file(&file(i), per, &mut rng)?;
    }
    let key = volley_content::manifest::generate_key();
    let mut report = Report {
        version_bytes: per * args.files,
        files: args.files,
        versions: args.versions,
        rewrite: args.rewrite,
        rounds: Vec::new(),
    };
    for round in 0..args.rounds {
        let dir = work.join(format!("node{round}"));
        let node = start_node_with(&exe, &dir, 0, &["--content-grace-secs", "0"]).await?;
        let mut next = 0u64;
        let mut manifest = None;
        for v in 1..=args.versions {
            if v > 1 {
                // Fresh bytes for the next `rewrite` files (same seed stream every round).
                let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + v);
                for _ in 0..args.rewrite {
                    random_file(&file(next % args.files), per, &mut rng)?;
                    next += 1;
                }
            }
            volley_client::content::publish(
                &node.base,
                KEY,
                &build,
                "bench",
                &v.to_string(),
                &key,
                65_536,
            )
            .await
            .with_context(|| format!("publishing version {v}"))?;
            if v == args.versions {
                manifest = Some(volley_content::publish::chunk_dir(
                    &build,
                    "bench",
                    &v.to_string(),
                    65_536,
                )?);
            }
        }
        for v in 1..args.versions {
            volley_client::content::delete_version(&node.base, KEY, "bench", &v.to_string())
                .await?;
        }
        let pack_dir = dir.join("content/bench/packs");
        let before = packs(&pack_dir)?;
        // Copies of the packs as they are (untimed), for the floor to remove those the
        // collection removes.
        let olds = work.join("old-packs");
        std::fs::create_dir_all(&olds)?;
        let mut old_copies = Vec::new();
        for p in &before {
            let to = olds.join(p.file_name().context("pack name")?);
            std::fs::copy(p, &to)?;
            old_copies.push(to);
        }
        settle(args.cold)?;
        let start = Instant::now();
        let r = volley_client::content::collect(&node.base, KEY, "bench").await?;
        let collect_seconds = start.elapsed().as_secs_f64();
        let new: Vec<PathBuf> = packs(&pack_dir)?
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        let removed: Vec<PathBuf> = before
            .iter()
            .zip(&old_copies)
            .filter(|(p, _)| !p.exists())
            .map(|(_, c)| c.clone())
            .collect();
        settle(args.cold)?;
        let copy_seconds = copy_and_flush(&new, work, &removed)?;
        std::fs::remove_dir_all(&olds)?;
        let mut distinct = std::collections::HashMap::new();
        if let Some(m) = &manifest {
            for c in m.chunks() {
                distinct.insert(c.hash, u64::from(c.size) + 36);
            }
        }
        let ideal: u64 = distinct.values().sum();
        report.rounds.push(Round {
            collect_seconds,
            copy_seconds,
            collect_over_copy: collect_seconds / copy_seconds.max(1e-9),
            dropped_bytes: r.dropped_bytes,
            moved_bytes: r.moved_bytes,
            disk_bytes_before: r.disk_bytes_before,
            disk_bytes_after: r.disk_bytes_after,
            ideal_bytes_after: ideal,
            after_over_ideal: r.disk_bytes_after as f64 / ideal.max(1) as f64,
            packs_removed: r.packs_removed,
        });
        drop(node);
        std::fs::remove_dir_all(&dir)?;
        // Back to version 1 for the next round.
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        for i in 0..args.files {
            random_file(&file(i), per, &mut rng)?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "{} versions of {:.0} MiB in {} files, {} rewritten per version; all but the newest withdrawn{}",
        args.versions,
        mib(report.version_bytes),
        args.files,
        args.rewrite,
        if args.cold { "; page cache dropped" } else { "" }
    );
    println!(
        "{:>6} {:>10} {:>9} {:>7} {:>11} {:>10} {:>16} {:>11} {:>8}",
        "round",
        "collect s",
        "copy s",
        "ratio",
        "dropped MiB",
        "moved MiB",
        "disk MiB",
        "ideal MiB",
        "/ ideal"
    );
    for (i, r) in report.rounds.iter().enumerate() {
        println!(
            "{:>6} {:>10.2} {:>9.2} {:>7.2} {:>11.0} {:>10.0} {:>7.0} -> {:>6.0} {:>11.0} {:>8.3}",
            i + 1,
            r.collect_seconds,
            r.copy_seconds,
            r.collect_over_copy,
            mib(r.dropped_bytes),
            mib(r.moved_bytes),
            mib(r.disk_bytes_before),
            mib(r.disk_bytes_after),
            mib(r.ideal_bytes_after),
            r.after_over_ideal
        );
    }
    Ok(())
}
