//! `volley-bench reuse`: installing a version next to a copy of the previous one that no
//! manifest describes (`fetch --reuse-from`), side by side with casync (`extract --seed`, the
//! same job: re-chunk a seed directory, fetch only the chunks it lacks over HTTP), against the
//! physical limits: reading and hashing every seed byte once on every core, and the changed
//! bytes plus two average chunks per edit.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

use crate::bench_swarm::{free_port, have, percentile, start_node, Proc, KEY};

#[derive(clap::Args, Debug)]
pub(crate) struct ReuseArgs {
    /// Build size in MiB (random, incompressible bytes).
    #[arg(long, default_value_t = 512)]
    mib: u64,
    /// Files the build is split into.
    #[arg(long, default_value_t = 8)]
    files: u64,
    /// Scattered small edits (half insertions, half overwrites, 1-100 bytes each).
    #[arg(long, default_value_t = 40)]
    edits: usize,
    /// Timed rounds of each system (interleaved).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Leave casync out (it is installed by `scripts/bench-deps.sh`).
    #[arg(long)]
    skip_casync: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    system: String,
    /// Wall time of each round: start of the process to the version in place.
    seconds: Vec<f64>,
    /// Bytes fetched over the network (chunk bodies; casync's as stored, compressed).
    fetched_bytes: u64,
    fetched_fraction_of_build: f64,
    fetched_over_ideal: f64,
    /// Seed bytes read and cut (Volley reports it; casync does not).
    recut_bytes: Option<u64>,
    /// Volley's own time re-cutting the seed and writing what it found into place, each round.
    local_seconds: Vec<f64>,
}

impl Row {
    fn new(system: &str) -> Row {
        Row {
            system: system.into(),
            seconds: Vec::new(),
            fetched_bytes: 0,
            fetched_fraction_of_build: 0.0,
            fetched_over_ideal: 0.0,
            recut_bytes: None,
            local_seconds: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    build_bytes: u64,
    files: u64,
    edits: usize,
    changed_bytes: u64,
    ideal_fetch_bytes: u64,
    threads: usize,
    /// Reading every seed byte and hashing it with BLAKE3, files spread over every core.
    read_and_hash_seconds: Vec<f64>,
    /// A plain copy of the seed that also hashes it: read, BLAKE3, `write` 1 MiB at a time into
    /// new files reserved at their size (page cache, no fsync).
    plain_copy_seconds: Vec<f64>,
    rows: Vec<Row>,
    /// `volley content verify` of the new install, each round.
    verify_seconds: Vec<f64>,
    /// Reading and hashing the install's files on every core, each round.
    verify_read_and_hash_seconds: Vec<f64>,
    /// Median verify time over the median read + BLAKE3 of the same files.
    verify_over_read_and_hash: f64,
    /// casync's median time over Volley's.
    casync_over_volley: Option<f64>,
    /// Volley's median time over reading and hashing the seed once.
    volley_over_read_and_hash: f64,
    /// Volley's median time re-cutting the seed (and writing what it found) over reading and
    /// hashing it once.
    volley_local_over_read_and_hash: f64,
    /// The same over the plain copy.
    volley_local_over_plain_copy: f64,
}

pub(crate) fn random_file(path: &Path, bytes: u64, rng: &mut impl RngCore) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        std::io::Write::write_all(&mut f, &buf[..n])?;
        left -= n as u64;
    }
    std::io::Write::flush(&mut f)?;
    Ok(())
}

/// Every file under `dir` (relative path → BLAKE3 of its bytes).
fn digest(dir: &Path) -> anyhow::Result<BTreeMap<String, [u8; 32]>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            if e.file_name() == ".volley" {
                continue;
            }
            if e.file_type()?.is_dir() {
                stack.push(p);
            } else {
                let mut h = blake3::Hasher::new();
                h.update_reader(std::fs::File::open(&p)?)?;
                let rel = p.strip_prefix(dir)?.to_string_lossy().into_owned();
                out.insert(rel, *h.finalize().as_bytes());
            }
        }
    }
    Ok(out)
}

/// Reads and hashes every file of `paths`, the files spread over `threads` threads; with `to`,
/// also writes each into a new file there (no fsync).
fn read_and_hash(paths: &[PathBuf], threads: usize, to: Option<&Path>) -> anyhow::Result<f64> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    settle();
    let t = Instant::now();
    let work = || -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(p) = paths.get(k) else {
                return Ok(());
            };
            let mut f = std::fs::File::open(p)?;
            let mut out = match (to, p.file_name()) {
                (Some(d), Some(name)) => {
                    let o = std::fs::File::create(d.join(name))?;
                    // Reserved up front, as the installer reserves its files.
                    let len = libc::off_t::try_from(f.metadata()?.len()).unwrap_or(0);
                    if len > 0 {
                        use std::os::fd::AsRawFd;
                        // SAFETY: a valid open descriptor; mode 0 only allocates.
                        unsafe { libc::fallocate(o.as_raw_fd(), 0, 0, len) };
                    }
                    Some(o)
                }
                _ => None,
            };
            let mut h = blake3::Hasher::new();
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                if let Some(o) = &mut out {
                    std::io::Write::write_all(o, &buf[..n])?;
                }
            }
            std::hint::black_box(h.finalize());
        }
    };
    let results: Vec<std::io::Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a hashing thread panicked")))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Writes back every dirty page, so no timed step pays for an earlier one's writes.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Bytes of the store's files that the HTTP server's log says were sent.
fn served_from_log(log: &Path, store: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(log)?;
    let mut total = 0;
    for l in text.lines() {
        let Some(rest) = l.split("\"GET /").nth(1) else {
            continue;
        };
        let Some(path) = rest.split(' ').next() else {
            continue;
        };
        if !rest.contains("\" 200 ") {
            continue;
        }
        total += std::fs::metadata(store.join(path))
            .with_context(|| format!("{path} in the store"))?
            .len();
    }
    Ok(total)
}

pub(crate) async fn run(args: ReuseArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=4096).contains(&args.mib), "--mib must be 1..=4096");
    anyhow::ensure!(
        (1..=64).contains(&args.files) && args.rounds >= 1,
        "--files 1..=64, --rounds ≥ 1"
    );
    let casync = !args.skip_casync;
    if casync && !(have("casync") && have("python3")) {
        bail!("casync and python3 are needed (scripts/bench-deps.sh), or pass --skip-casync");
    }
    let exe = crate::volley_exe()?;
    let tmp = tempfile::tempdir()?;
    let work = tmp.path();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Version 1 (the seed: a plain directory, no manifest) and version 2 (scattered edits).
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (v1, v2) = (work.join("v1"), work.join("v2"));
    std::fs::create_dir_all(v1.join("data"))?;
    std::fs::create_dir_all(v2.join("data"))?;
    let per = (args.mib << 20) / args.files;
    let names: Vec<String> = (0..args.files)
        .map(|i| format!("data/pack{i:02}.bin"))
        .collect();
    for n in &names {
        random_file(&v1.join(n), per, &mut rng)?;
    }
    let mut edits: Vec<Vec<(usize, bool, Vec<u8>)>> = vec![Vec::new(); names.len()];
    let mut changed = 0u64;
    for i in 0..args.edits {
        let len = rng.gen_range(1..=100);
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        let f = rng.gen_range(0..names.len());
        let at = rng.gen_range(0..per as usize - 200);
        edits[f].push((at, i % 2 == 0, bytes));
        changed += len as u64;
    }
    for (n, mut e) in names.iter().zip(edits) {
        let mut data = std::fs::read(v1.join(n))?;
        e.sort_by_key(|x| std::cmp::Reverse(x.0)); // back to front: offsets stay valid
        for (at, insert, bytes) in e {
            if insert {
                data.splice(at..at, bytes);
            } else {
                data[at..at + bytes.len()].copy_from_slice(&bytes);
            }
        }
        std::fs::write(v2.join(n), data)?;
    }
    let build: u64 = names
        .iter()
        .map(|n| std::fs::metadata(v2.join(n)).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    let want = digest(&v2)?;
    let ideal = changed + 2 * (64 << 10) * args.edits as u64;
    // The origin: a node holding version 2; casync's store and its HTTP server.
    let node = start_node(&exe, &work.join("node"), 0).await?;
    let key = volley_content::manifest::generate_key();
    let publisher = hex::encode(key.verifying_key().as_bytes());
    volley_client::content::publish(&node.base, KEY, &v2, "bench", "2", &key, 65_536).await?;
    let (store, index, log) = (
        work.join("store"),
        work.join("v2.caidx"),
        work.join("http.log"),
    );
    let mut server = None;
    let mut port = 0;
    if casync {
        let st = Command::new("casync")
            .args(["make", "--store"])
            .arg(&store)
            .arg(&index)
            .arg(&v2)
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(st.success(), "casync make failed");
        port = free_port()?;
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        server = Some(Proc(child));
        let up = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if up.elapsed() > Duration::from_secs(10) {
                bail!("the HTTP server for casync did not come up");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let seed_paths: Vec<PathBuf> = names.iter().map(|n| v1.join(n)).collect();
    let mut limit = Vec::new();
    let mut limit_write = Vec::new();
    let (mut verify_seconds, mut verify_limit) = (Vec::new(), Vec::new());
    let copy = work.join("copy");
    let mut volley_row = Row::new("volley fetch --reuse-from");
    let mut casync_row = Row::new("casync extract --seed");
    for round in 0..args.rounds {
        // Each round starts with the seed in the page cache for everyone.
        limit.push(read_and_hash(&seed_paths, threads, None)?);
        std::fs::create_dir_all(&copy)?;
        limit_write.push(read_and_hash(&seed_paths, threads, Some(&copy))?);
        std::fs::remove_dir_all(&copy)?;
        let out = work.join(format!("volley-{round}"));
        settle();
        let t = Instant::now();
        let o = Command::new(&exe)
            .args(["content", "fetch", "--node", &node.base, "--game", "bench"])
            .args(["--version", "2", "--trust", &publisher, "--json", "--to"])
            .arg(&out)
            .arg("--reuse-from")
            .arg(&v1)
            .stderr(Stdio::piped())
            .output()?;
        let secs = t.elapsed().as_secs_f64();
        if !o.status.success() {
            bail!("volley fetch: {}", String::from_utf8_lossy(&o.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        anyhow::ensure!(
            digest(&out)? == want,
            "volley's install differs from the build"
        );
        volley_row.seconds.push(secs);
        // `volley content verify` over the new install, next to reading and hashing its files.
        let installed: Vec<PathBuf> = names.iter().map(|n| out.join(n)).collect();
        verify_limit.push(read_and_hash(&installed, threads, None)?);
        settle();
        let t = Instant::now();
        let o = Command::new(&exe)
            .args(["content", "verify", "--json", "--to"])
            .arg(&out)
            .stderr(Stdio::piped())
            .output()?;
        verify_seconds.push(t.elapsed().as_secs_f64());
        if !o.status.success() {
            bail!("volley verify: {}", String::from_utf8_lossy(&o.stderr));
        }
        volley_row.fetched_bytes = v["downloaded_bytes"].as_u64().unwrap_or(0);
        volley_row.recut_bytes = v["recut_bytes"].as_u64();
        volley_row
            .local_seconds
            .push(v["local_seconds"].as_f64().unwrap_or(0.0));
        std::fs::remove_dir_all(&out)?;
        if casync {
            let out = work.join(format!("casync-{round}"));
            std::fs::write(&log, b"")?;
            settle();
            let t = Instant::now();
            let o = Command::new("casync")
                .arg("extract")
                .arg(format!("--store=http://127.0.0.1:{port}/"))
                .arg("--seed")
                .arg(&v1)
                .arg(&index)
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()?;
            let secs = t.elapsed().as_secs_f64();
            if !o.status.success() {
                bail!("casync extract: {}", String::from_utf8_lossy(&o.stderr));
            }
            anyhow::ensure!(
                digest(&out)? == want,
                "casync's extract differs from the build"
            );
            // The server logs a request once answered; give it a moment.
            std::thread::sleep(Duration::from_millis(200));
            casync_row.seconds.push(secs);
            casync_row.fetched_bytes = served_from_log(&log, &store)?;
            std::fs::remove_dir_all(&out)?;
        }
    }
    drop(server);
    drop(node);
    let mut rows = vec![volley_row];
    if casync {
        rows.push(casync_row);
    }
    for r in &mut rows {
        r.fetched_fraction_of_build = r.fetched_bytes as f64 / build as f64;
        r.fetched_over_ideal = r.fetched_bytes as f64 / ideal as f64;
    }
    let med = |v: &[f64]| percentile(&mut v.to_vec(), 0.5);
    let report = Report {
        build_bytes: build,
        files: args.files,
        edits: args.edits,
        changed_bytes: changed,
        ideal_fetch_bytes: ideal,
        threads,
        casync_over_volley: casync.then(|| med(&rows[1].seconds) / med(&rows[0].seconds)),
        volley_over_read_and_hash: med(&rows[0].seconds) / med(&limit),
        volley_local_over_read_and_hash: med(&rows[0].local_seconds) / med(&limit),
        volley_local_over_plain_copy: med(&rows[0].local_seconds) / med(&limit_write),
        verify_over_read_and_hash: med(&verify_seconds) / med(&verify_limit),
        verify_seconds,
        verify_read_and_hash_seconds: verify_limit,
        read_and_hash_seconds: limit,
        plain_copy_seconds: limit_write,
        rows,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} MiB in {} files, {} edits ({} changed bytes; ideal fetch {} B); on {} threads, seed read + BLAKE3 {:.2} s, plain copy with BLAKE3 {:.2} s (medians)",
        build >> 20,
        args.files,
        args.edits,
        changed,
        ideal,
        threads,
        med(&report.read_and_hash_seconds),
        med(&report.plain_copy_seconds)
    );
    for r in &report.rows {
        let mut s = r.seconds.clone();
        println!(
            "  {:<28} {:>6.2} s median ({:.2}-{:.2})  fetched {:>9} B = {:.3} % of the build, {:.2} × ideal",
            r.system,
            percentile(&mut s, 0.5),
            percentile(&mut s, 0.0),
            percentile(&mut s, 1.0),
            r.fetched_bytes,
            r.fetched_fraction_of_build * 100.0,
            r.fetched_over_ideal
        );
    }
    if let Some(x) = report.casync_over_volley {
        println!("  casync time / volley time: {x:.2}");
    }
    println!(
        "  volley: re-cutting the seed and writing what it found {:.2} s median = {:.2} × (seed read + BLAKE3), {:.2} × plain copy; whole fetch {:.2} × (seed read + BLAKE3)",
        med(&report.rows[0].local_seconds),
        report.volley_local_over_read_and_hash,
        report.volley_local_over_plain_copy,
        report.volley_over_read_and_hash
    );
    println!(
        "  volley content verify of the install: {:.2} s median = {:.2} × (read + BLAKE3 of its files, {:.2} s)",
        med(&report.verify_seconds),
        report.verify_over_read_and_hash,
        med(&report.verify_read_and_hash_seconds)
    );
    Ok(())
}
