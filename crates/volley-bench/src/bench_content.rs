//! `volley-bench content`: chunking speed next to raw BLAKE3, and the bytes an update moves for
//! several average chunk sizes next to fixed-size chunks and the ideal.

use std::collections::HashSet;
use std::time::Instant;

use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub(crate) struct ContentArgs {
    /// Build size in MiB (random, incompressible bytes).
    #[arg(long, default_value_t = 512)]
    mib: usize,
    /// Scattered small edits (half insertions, half overwrites, 1-100 bytes each).
    #[arg(long, default_value_t = 40)]
    edits: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Instead of the random build, chunk every file under these directories (repeatable)
    /// with Volley's cut rule and with plain FastCDC, and compare chunk statistics.
    #[arg(long)]
    tree: Vec<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct TreeRow<'a> {
    rule: &'a str,
    files: usize,
    bytes: u64,
    /// Chunks that end before their file does (a file's last chunk is cut by its end).
    inner_chunks: u64,
    mean_inner_bytes: f64,
    sd_inner_bytes: f64,
    /// Share of inner chunks cut at the maximum size (no content-defined cut found).
    at_max_share: f64,
    /// Bytes of distinct chunks over all bytes: what a store of all these files holds.
    distinct_share: f64,
    cut_mib_s: f64,
}

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            walk(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

/// `--tree`: both cut rules over the same real files, each file read once into memory.
fn run_tree(args: &ContentArgs) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for d in &args.tree {
        walk(d, &mut files).map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))?;
    }
    files.sort();
    let p = volley_content::cdc::Params::new(64 << 10).ok_or_else(|| anyhow::anyhow!("params"))?;
    type Rule = fn(&volley_content::cdc::Params, &[u8]) -> usize;
    let rules: [(&str, Rule); 2] = [
        ("volley (prefilter + gear)", |p, d| p.cut(d)),
        ("plain FastCDC", volley_content::cdc::plain_cut),
    ];
    let mut rows = Vec::new();
    for (rule, cut) in rules {
        let (mut bytes, mut inner, mut inner_bytes, mut sq, mut at_max) =
            (0u64, 0u64, 0u64, 0f64, 0u64);
        let mut seen = HashSet::new();
        let mut distinct = 0u64;
        let mut cutting = std::time::Duration::ZERO;
        let mut read = 0usize;
        for f in &files {
            let Ok(data) = std::fs::read(f) else {
                continue; // unreadable (a socket, a permission): skipped by both rules
            };
            read += 1;
            bytes += data.len() as u64;
            let mut at = 0;
            while at < data.len() {
                let t = Instant::now();
                let len = cut(&p, &data[at..]);
                cutting += t.elapsed();
                if at + len < data.len() {
                    inner += 1;
                    inner_bytes += len as u64;
                    sq += (len as f64) * (len as f64);
                    at_max += u64::from(len == p.max);
                }
                if seen.insert(*blake3::hash(&data[at..at + len]).as_bytes()) {
                    distinct += len as u64;
                }
                at += len;
            }
        }
        let mean = inner_bytes as f64 / inner.max(1) as f64;
        rows.push(TreeRow {
            rule,
            files: read,
            bytes,
            inner_chunks: inner,
            mean_inner_bytes: mean,
            sd_inner_bytes: (sq / inner.max(1) as f64 - mean * mean).max(0.0).sqrt(),
            at_max_share: at_max as f64 / inner.max(1) as f64,
            distinct_share: distinct as f64 / bytes.max(1) as f64,
            cut_mib_s: bytes as f64 / cutting.as_secs_f64().max(1e-9) / (1 << 20) as f64,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            println!(
                "{:<26} {} files, {:.0} MiB: {} inner chunks, mean {:.0} B, sd {:.0} B, {:.2} % at the maximum, distinct {:.2} % of the bytes, cutting {:.0} MiB/s",
                r.rule,
                r.files,
                r.bytes as f64 / (1 << 20) as f64,
                r.inner_chunks,
                r.mean_inner_bytes,
                r.sd_inner_bytes,
                r.at_max_share * 100.0,
                r.distinct_share * 100.0,
                r.cut_mib_s
            );
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct UpdateRow {
    chunking: String,
    transferred_bytes: u64,
    fraction_of_build: f64,
    ideal_bytes: u64,
    ratio_to_ideal: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    build_bytes: u64,
    raw_blake3_mib_s: f64,
    chunk_and_hash_mib_s: f64,
    chunk_hash_ratio: f64,
    /// FastCDC cutting alone (no hashing), same bytes.
    cut_only_mib_s: f64,
    /// The chunker's prefilter kernel (`VOLLEY_CDC_KERNEL` picks a narrower one).
    kernel: String,
    /// Threads of the all-core rows.
    threads: usize,
    /// BLAKE3 over the same bytes on every core (one stretch per thread).
    raw_blake3_all_cores_mib_s: f64,
    /// The publisher's parallel chunker (cut + hash) on every core.
    chunk_and_hash_all_cores_mib_s: f64,
    /// The two above, divided.
    all_cores_ratio: f64,
    mean_chunk_bytes_at_64k: u64,
    edits: usize,
    changed_bytes: u64,
    updates: Vec<UpdateRow>,
}

fn chunk_hashes(data: &[u8], cut: impl Fn(&[u8]) -> usize) -> Vec<([u8; 32], usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let len = cut(&data[at..]);
        out.push((*blake3::hash(&data[at..at + len]).as_bytes(), len));
        at += len;
    }
    out
}

fn moved(old: &[([u8; 32], usize)], new: &[([u8; 32], usize)]) -> u64 {
    let have: HashSet<[u8; 32]> = old.iter().map(|c| c.0).collect();
    let mut sent = HashSet::new();
    new.iter()
        .filter(|c| !have.contains(&c.0) && sent.insert(c.0))
        .map(|c| c.1 as u64)
        .sum()
}

pub(crate) fn run(args: ContentArgs) -> anyhow::Result<()> {
    if !args.tree.is_empty() {
        return run_tree(&args);
    }
    anyhow::ensure!((1..=4096).contains(&args.mib), "--mib must be 1..=4096");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut old = vec![0u8; args.mib << 20];
    rng.fill_bytes(&mut old);
    // Raw BLAKE3 over the whole build (one thread), then chunking plus a hash per chunk.
    let t = Instant::now();
    let whole = blake3::hash(&old);
    let raw = old.len() as f64 / t.elapsed().as_secs_f64() / (1 << 20) as f64;
    let p64 =
        volley_content::cdc::Params::new(64 << 10).ok_or_else(|| anyhow::anyhow!("params"))?;
    let t = Instant::now();
    let c64 = chunk_hashes(&old, |d| p64.cut(d));
    let cdc = old.len() as f64 / t.elapsed().as_secs_f64() / (1 << 20) as f64;
    let t = Instant::now();
    let cuts = volley_content::cdc::chunk_lengths(&old, &p64);
    let cut_only = old.len() as f64 / t.elapsed().as_secs_f64() / (1 << 20) as f64;
    anyhow::ensure!(whole.as_bytes() != &[0u8; 32] && !c64.is_empty() && cuts.len() == c64.len());
    // The same on every core: BLAKE3 over one stretch per thread, and the publisher's parallel
    // chunker (which must cut exactly where the one-pass chunker did).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    let per = old.len().div_ceil(threads);
    let parts: Vec<[u8; 32]> = std::thread::scope(|s| {
        let hs: Vec<_> = old
            .chunks(per)
            .map(|part| s.spawn(move || *blake3::hash(part).as_bytes()))
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let raw_all = old.len() as f64 / t.elapsed().as_secs_f64() / (1 << 20) as f64;
    anyhow::ensure!(parts.len() == old.len().div_ceil(per));
    let t = Instant::now();
    let par =
        volley_content::cdc::chunk_files(&[old.as_slice()], &p64, threads).map_err(|(_, e)| e)?;
    let cdc_all = old.len() as f64 / t.elapsed().as_secs_f64() / (1 << 20) as f64;
    anyhow::ensure!(
        par.len() == 1
            && par[0].len() == c64.len()
            && par[0]
                .iter()
                .zip(&c64)
                .all(|(a, b)| a.hash == b.0 && a.len as usize == b.1),
        "the parallel chunker cut differently from the one-pass chunker"
    );
    // The update: scattered small insertions and overwrites.
    let mut new = old.clone();
    let mut changed = 0u64;
    let mut spots: Vec<usize> = (0..args.edits)
        .map(|_| rng.gen_range(0..new.len() - 200))
        .collect();
    spots.sort_unstable_by(|a, b| b.cmp(a)); // back to front, so offsets stay valid
    for (i, at) in spots.iter().enumerate() {
        let len = rng.gen_range(1..=100);
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        if i % 2 == 0 {
            new.splice(*at..*at, bytes);
        } else {
            new[*at..*at + len].copy_from_slice(&bytes);
        }
        changed += len as u64;
    }
    let mut updates = Vec::new();
    for avg in [16u32 << 10, 64 << 10, 256 << 10, 1 << 20] {
        let p = volley_content::cdc::Params::new(avg).ok_or_else(|| anyhow::anyhow!("params"))?;
        let a = if avg == 64 << 10 {
            c64.clone()
        } else {
            chunk_hashes(&old, |d| p.cut(d))
        };
        let b = chunk_hashes(&new, |d| p.cut(d));
        let m = moved(&a, &b);
        let ideal = changed + 2 * u64::from(avg) * args.edits as u64;
        updates.push(UpdateRow {
            chunking: format!("FastCDC avg {} KiB", avg >> 10),
            transferred_bytes: m,
            fraction_of_build: m as f64 / new.len() as f64,
            ideal_bytes: ideal,
            ratio_to_ideal: m as f64 / ideal as f64,
        });
    }
    let fixed = |d: &[u8]| d.len().min(64 << 10);
    let m = moved(&chunk_hashes(&old, fixed), &chunk_hashes(&new, fixed));
    let ideal = changed + 2 * (64 << 10) * args.edits as u64;
    updates.push(UpdateRow {
        chunking: "fixed 64 KiB blocks".into(),
        transferred_bytes: m,
        fraction_of_build: m as f64 / new.len() as f64,
        ideal_bytes: ideal,
        ratio_to_ideal: m as f64 / ideal as f64,
    });
    let report = Report {
        build_bytes: old.len() as u64,
        raw_blake3_mib_s: raw,
        chunk_and_hash_mib_s: cdc,
        chunk_hash_ratio: cdc / raw,
        cut_only_mib_s: cut_only,
        kernel: format!("{:?}", volley_content::cdc::kernel()),
        threads,
        raw_blake3_all_cores_mib_s: raw_all,
        chunk_and_hash_all_cores_mib_s: cdc_all,
        all_cores_ratio: cdc_all / raw_all,
        mean_chunk_bytes_at_64k: (old.len() / c64.len()) as u64,
        edits: args.edits,
        changed_bytes: changed,
        updates,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} MiB: raw BLAKE3 {:.0} MiB/s, FastCDC 64 KiB + BLAKE3 per chunk {:.0} MiB/s (ratio {:.2}), cutting alone {:.0} MiB/s ({} kernel); mean chunk {} B",
            args.mib, raw, cdc, report.chunk_hash_ratio, cut_only, report.kernel, report.mean_chunk_bytes_at_64k
        );
        println!(
            "on {threads} threads: raw BLAKE3 {raw_all:.0} MiB/s, parallel FastCDC + BLAKE3 {cdc_all:.0} MiB/s (ratio {:.2}; {:.2} of one-thread raw BLAKE3)",
            report.all_cores_ratio,
            cdc_all / raw
        );
        println!(
            "update of {} edits ({} changed bytes):",
            args.edits, changed
        );
        for u in &report.updates {
            println!(
                "  {:<22} {:>12} B  {:>7.3} % of the build  {:>6.2} × ideal ({} B)",
                u.chunking,
                u.transferred_bytes,
                u.fraction_of_build * 100.0,
                u.ratio_to_ideal,
                u.ideal_bytes
            );
        }
    }
    Ok(())
}
