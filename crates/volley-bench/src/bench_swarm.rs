//! `volley-bench swarm`: one origin and N peers, every upload capped, delivering one build.
//!
//! Side by side in one run, with the same caps and the same build:
//! - Volley's swarm: a node (the origin, capped) and N `volley content fetch --swarm`
//!   processes (each upload capped), simultaneous or staggered arrivals;
//! - plain HTTP: N `volley content fetch` processes against the same capped origin;
//! - BitTorrent: opentracker, a torrent made by mktorrent, an aria2 seed (the origin) and N
//!   aria2 leechers, every aria2 upload capped the same (skipped when the tools are missing).
//!
//! T_min = max(F / u_origin, N·F / (u_origin + N·u_peer)) is the fastest any swarm could
//! deliver F bytes to N peers under those caps; each system's time until every peer holds the
//! build is reported as a multiple of it. Origin bytes are the node's (or seed's) own counter;
//! wire bytes are chunk payload sent by the origin and all peers, duplicates included.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{RngCore, SeedableRng};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub(crate) struct SwarmArgs {
    /// Build size in MiB (random bytes in four files).
    #[arg(long, default_value_t = 512)]
    mib: u64,
    /// Peers in the simultaneous runs: one Volley run and one aria2 run per value
    /// (comma-separated); the plain-HTTP run uses the first.
    #[arg(long, value_delimiter = ',', default_values_t = [8usize, 16])]
    peers: Vec<usize>,
    /// Peers in the staggered run (0: skip it).
    #[arg(long, default_value_t = 16)]
    staggered_peers: usize,
    /// Seconds between arrivals in the staggered run.
    #[arg(long, default_value_t = 2.0)]
    stagger_s: f64,
    /// Upload cap of the origin and of every peer, Mbit/s.
    #[arg(long, default_value_t = 100)]
    cap_mbit: u64,
    /// Skip the plain-HTTP run (it takes N times the origin-bound time).
    #[arg(long)]
    skip_http: bool,
    /// Skip the aria2 run.
    #[arg(long)]
    skip_aria2: bool,
    /// Instead of the swarm runs: peak memory of one `fetch --swarm` for a build of this many
    /// MiB next to one of `--mib` MiB.
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Working directory (default: a temporary one, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize, Default)]
struct Row {
    system: String,
    peers: usize,
    arrivals: String,
    seconds: f64,
    t_min_seconds: f64,
    /// None for staggered arrivals (T_min assumes everyone starts together).
    ratio_to_t_min: Option<f64>,
    origin_bytes_over_f: f64,
    offload: f64,
    wire_bytes_over_nf: Option<f64>,
    peer_seconds_p50: f64,
    peer_seconds_max: f64,
    /// Where the slowest peer's time went (Volley only): before the install began (login,
    /// manifest, swarm start), downloading, and building + syncing + swapping the new version.
    slowest_phases_s: Option<[f64; 3]>,
    /// When the bench read the last report line (an upper bound on `seconds` that also
    /// counts process start-up).
    last_report_read_s: Option<f64>,
}

pub(crate) const KEY: &str = "bench-swarm-server-key-0123456789";

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn term(p: &Proc) {
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
}

/// Lines of a child's stdout, on a channel.
fn lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

fn make_build(dir: &Path, mib: u64) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let per = (mib << 20) / 4;
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..4 {
        use std::io::Write;
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("pack{i}.bin")))?);
        let mut left = per;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill_bytes(&mut buf[..n]);
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.flush()?;
    }
    Ok(per * 4)
}

async fn origin_bytes(base: &str) -> anyhow::Result<u64> {
    let text = volley_client::Api::raw_get(&format!("{base}/metrics")).await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("volley_content_bytes_served_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

fn t_min(f: f64, n: usize, cap: f64) -> f64 {
    (f / cap).max(n as f64 * f / (cap + n as f64 * cap))
}

pub(crate) fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

pub(crate) struct Node {
    pub(crate) _proc: Proc,
    pub(crate) base: String,
}

pub(crate) async fn start_node(exe: &Path, dir: &Path, cap_kib: u64) -> anyhow::Result<Node> {
    start_node_with(exe, dir, cap_kib, &[]).await
}

/// [`start_node`] with more `serve` arguments.
pub(crate) async fn start_node_with(
    exe: &Path,
    dir: &Path,
    cap_kib: u64,
    extra: &[&str],
) -> anyhow::Result<Node> {
    let http = free_port()?;
    let quic = free_udp_port()?;
    let child = Command::new(exe)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args([
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--quic-addr",
            &format!("127.0.0.1:{quic}"),
            "--content-max-kib-per-s",
            &cap_kib.to_string(),
            "--logins-per-ip-per-s",
            "1000",
            "--logins-per-ip-burst",
            "1000",
        ])
        .args(extra)
        .env("VOLLEY_SERVER_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the node")?;
    let node = Node {
        _proc: Proc(child),
        base: format!("http://127.0.0.1:{http}"),
    };
    for _ in 0..100 {
        if origin_bytes(&node.base).await.is_ok() {
            return Ok(node);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the node did not come up")
}

/// N `volley content fetch` processes (swarm or plain HTTP), arrivals `stagger` apart.
#[allow(clippy::too_many_arguments)]
async fn volley_run(
    exe: &Path,
    work: &Path,
    build: &Path,
    f: u64,
    n: usize,
    stagger: Duration,
    cap_kib: u64,
    swarm: bool,
) -> anyhow::Result<Row> {
    let tag = format!(
        "{}-{n}-{}",
        if swarm { "swarm" } else { "http" },
        stagger.as_millis()
    );
    let dir = work.join(&tag);
    let node = start_node(exe, &dir.join("node"), cap_kib).await?;
    let key = volley_content::manifest::generate_key();
    let publisher = hex::encode(key.verifying_key().as_bytes());
    volley_client::content::publish(&node.base, KEY, build, "bench", "1", &key, 65_536).await?;
    let origin0 = origin_bytes(&node.base).await?;
    let start = Instant::now();
    let mut procs = Vec::new();
    for i in 0..n {
        if i > 0 && !stagger.is_zero() {
            tokio::time::sleep_until((start + stagger * i as u32).into()).await;
        }
        let mut cmd = Command::new(exe);
        cmd.args(["content", "fetch", "--node", &node.base, "--game", "bench"])
            .args(["--version", "1", "--trust", &publisher, "--json", "--to"])
            .arg(dir.join(format!("peer{i}")));
        if swarm {
            cmd.args(["--swarm", "--seed-secs", "3600", "--listen", "127.0.0.1:0"])
                .args(["--max-up-kib-per-s", &cap_kib.to_string()]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let rx = lines(&mut child);
        procs.push((Proc(child), rx, start.elapsed()));
    }
    let mut done = Vec::new();
    let mut last = 0.0f64;
    let mut slowest: Option<[f64; 3]> = None;
    let mut read_last = 0.0f64;
    for (p, rx, began) in &procs {
        let line = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(3600)))
            .context("a peer did not finish")?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        if v["total_bytes"].as_u64() != Some(f) {
            bail!("a peer reported {line}");
        }
        let at = start.elapsed().as_secs_f64();
        read_last = read_last.max(at);
        // Each peer's own time (arrival to completion); the report line arrives in order of
        // spawning, so the time it is read is an upper bound for a peer that finished earlier.
        let own = v["seconds"].as_f64().unwrap_or(at - began.as_secs_f64());
        done.push(own);
        if began.as_secs_f64() + own >= last {
            let dl = v["download_seconds"].as_f64().unwrap_or(0.0);
            let build = v["build_seconds"].as_f64().unwrap_or(0.0);
            slowest = Some([own - dl - build, dl, build]);
        }
        last = last.max(began.as_secs_f64() + own);
        let _ = p;
    }
    let origin = origin_bytes(&node.base).await? - origin0;
    let mut uploaded = 0u64;
    if swarm {
        for (p, _, _) in &procs {
            term(p);
        }
        for (_, rx, _) in &procs {
            let line = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(30)))
                .unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            uploaded += v["seeded"]["uploaded_bytes"].as_u64().unwrap_or(0);
        }
    }
    drop(procs);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
    let cap = cap_kib as f64 * 1024.0;
    let tm = t_min(f as f64, n, cap);
    let nf = n as f64 * f as f64;
    Ok(Row {
        system: if swarm { "volley swarm" } else { "plain HTTP" }.into(),
        peers: n,
        arrivals: if stagger.is_zero() {
            "together".into()
        } else {
            format!("every {:.1} s", stagger.as_secs_f64())
        },
        seconds: last,
        t_min_seconds: tm,
        ratio_to_t_min: stagger.is_zero().then_some(last / tm),
        origin_bytes_over_f: origin as f64 / f as f64,
        offload: 1.0 - origin as f64 / nf,
        wire_bytes_over_nf: swarm.then(|| (origin + uploaded) as f64 / nf),
        peer_seconds_p50: percentile(&mut done.clone(), 0.5),
        peer_seconds_max: percentile(&mut done, 1.0),
        slowest_phases_s: slowest,
        last_report_read_s: Some(read_last),
    })
}

pub(crate) fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn aria2_upload(port: u16) -> u64 {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": "b", "method": "aria2.tellActive", "params": [["uploadLength"]]
    });
    let Ok(r) = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/jsonrpc"))
        .json(&body)
        .send()
        .await
    else {
        return 0;
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["uploadLength"].as_str()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

fn aria2_cmd(dir: &Path, cap_kib: u64, listen: u16, rpc: u16) -> Command {
    let mut c = Command::new("aria2c");
    c.arg(format!("--dir={}", dir.display()))
        .args([
            "--seed-ratio=0.0",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=true",
            "--file-allocation=none",
            "--console-log-level=error",
            "--summary-interval=0",
            "--bt-tracker-interval=5",
            "--enable-rpc=true",
            "--rpc-listen-all=false",
            "--disable-ipv6=true",
        ])
        .arg(format!("--max-overall-upload-limit={cap_kib}K"))
        .arg(format!("--listen-port={listen}"))
        .arg(format!("--rpc-listen-port={rpc}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

async fn aria2_run(
    work: &Path,
    build: &Path,
    f: u64,
    n: usize,
    cap_kib: u64,
) -> anyhow::Result<Row> {
    let dir = work.join(format!("aria2-{n}"));
    std::fs::create_dir_all(&dir)?;
    let tracker_port = free_port()?;
    let torrent = dir.join("build.torrent");
    let st = Command::new("mktorrent")
        .args(["-a", &format!("http://127.0.0.1:{tracker_port}/announce")])
        .arg("-o")
        .arg(&torrent)
        .arg(build)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("mktorrent failed");
    }
    // Debian's opentracker serves only whitelisted torrents: whitelist ours by info hash. It
    // chroots into its directory and drops to `nobody`, so the list must be readable there.
    let shown = Command::new("aria2c").arg("-S").arg(&torrent).output()?;
    let info_hash = String::from_utf8_lossy(&shown.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Info Hash: ").map(str::to_owned))
        .context("aria2c -S shows no info hash")?;
    std::fs::write(dir.join("whitelist"), format!("{info_hash}\n"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(
            dir.join("whitelist"),
            std::fs::Permissions::from_mode(0o644),
        )?;
    }
    let _tracker = Proc(
        Command::new("opentracker")
            .args(["-i", "127.0.0.1", "-p", &tracker_port.to_string()])
            .args(["-P", &tracker_port.to_string(), "-w", "/whitelist", "-d"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting opentracker")?,
    );
    let seed_rpc = free_port()?;
    let seed_dir = build.parent().context("build dir")?;
    let seed = Proc(
        aria2_cmd(seed_dir, cap_kib, free_port()?, seed_rpc)
            .args(["--bt-seed-unverified=true", "--check-integrity=false"])
            .arg(&torrent)
            .spawn()
            .context("starting aria2c")?,
    );
    // The seed is up once its RPC answers.
    for _ in 0..100 {
        if reqwest::get(format!("http://127.0.0.1:{seed_rpc}/jsonrpc"))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hook = dir.join("done.sh");
    std::fs::write(&hook, "#!/bin/sh\ntouch \"$3.bench-done\"\n")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    }
    let start = Instant::now();
    let mut leechers = Vec::new();
    let first = {
        let mut names: Vec<String> = std::fs::read_dir(build)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names.first().cloned().context("empty build")?
    };
    let build_name = build
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for i in 0..n {
        let pdir = dir.join(format!("peer{i}"));
        std::fs::create_dir_all(&pdir)?;
        let rpc = free_port()?;
        let p = Proc(
            aria2_cmd(&pdir, cap_kib, free_port()?, rpc)
                .arg(format!("--on-bt-download-complete={}", hook.display()))
                .arg(&torrent)
                .spawn()?,
        );
        let marker = pdir.join(&build_name).join(format!("{first}.bench-done"));
        leechers.push((p, rpc, marker));
    }
    let mut done: Vec<Option<f64>> = vec![None; n];
    let deadline = Instant::now() + Duration::from_secs(3600);
    while done.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            bail!("aria2 peers did not finish");
        }
        for (k, (_, _, marker)) in leechers.iter().enumerate() {
            if done[k].is_none() && marker.exists() {
                done[k] = Some(start.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let origin = aria2_upload(seed_rpc).await;
    let mut uploaded = 0;
    for (_, rpc, _) in &leechers {
        uploaded += aria2_upload(*rpc).await;
    }
    drop(leechers);
    drop(seed);
    let _ = std::fs::remove_dir_all(&dir);
    let mut times: Vec<f64> = done.into_iter().flatten().collect();
    let last = percentile(&mut times, 1.0);
    let cap = cap_kib as f64 * 1024.0;
    let tm = t_min(f as f64, n, cap);
    let nf = n as f64 * f as f64;
    Ok(Row {
        system: "aria2 + opentracker".into(),
        peers: n,
        arrivals: "together".into(),
        seconds: last,
        t_min_seconds: tm,
        ratio_to_t_min: Some(last / tm),
        origin_bytes_over_f: origin as f64 / f as f64,
        offload: 1.0 - origin as f64 / nf,
        wire_bytes_over_nf: Some((origin + uploaded) as f64 / nf),
        peer_seconds_p50: percentile(&mut times, 0.5),
        peer_seconds_max: last,
        slowest_phases_s: None,
        last_report_read_s: None,
    })
}

/// Peak resident memory (VmHWM) of one `fetch --swarm` process installing a `mib` MiB build
/// from an uncapped origin.
async fn fetch_peak_kib(exe: &Path, work: &Path, mib: u64) -> anyhow::Result<(u64, f64)> {
    let dir = work.join(format!("memory-{mib}"));
    let build = dir.join("build");
    make_build(&build, mib)?;
    let node = start_node(exe, &dir.join("node"), 0).await?;
    let key = volley_content::manifest::generate_key();
    let publisher = hex::encode(key.verifying_key().as_bytes());
    volley_client::content::publish(&node.base, KEY, &build, "bench", "1", &key, 65_536).await?;
    let start = Instant::now();
    let mut child = Command::new(exe)
        .args(["content", "fetch", "--node", &node.base, "--game", "bench"])
        .args(["--version", "1", "--trust", &publisher, "--json", "--swarm"])
        .args(["--listen", "127.0.0.1:0", "--to"])
        .arg(dir.join("install"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("fetch.stderr"))?)
        .spawn()?;
    let rx = lines(&mut child);
    let status = format!("/proc/{}/status", child.id());
    let mut p = Proc(child);
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if rx.try_recv().is_ok() {
            break;
        }
        if let Some(code) = p.0.try_wait()? {
            // The report may still be in the pipe.
            if rx.recv_timeout(Duration::from_secs(2)).is_ok() {
                break;
            }
            let err = std::fs::read_to_string(dir.join("fetch.stderr")).unwrap_or_default();
            bail!("the fetch exited ({code}) without its report: {err}");
        }
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("the fetch did not finish");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(p);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((peak, secs))
}

/// A row of the results table (also the progress line after each run).
fn table_row(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {:.1} | {:.1} | {} | {:.3} | {:.1} % | {} |",
        r.system,
        r.peers,
        r.arrivals,
        r.seconds,
        r.t_min_seconds,
        r.ratio_to_t_min
            .map_or("-".to_owned(), |x| format!("{x:.2}")),
        r.origin_bytes_over_f,
        r.offload * 100.0,
        r.wire_bytes_over_nf
            .map_or("-".to_owned(), |w| format!("{w:.3}"))
    )
}

pub(crate) async fn run(args: SwarmArgs) -> anyhow::Result<()> {
    if let Some(big) = args.memory_mib {
        let exe = crate::volley_exe()?;
        let tmp = tempfile::tempdir()?;
        let work = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
        let (small_kib, small_s) = fetch_peak_kib(&exe, &work, args.mib).await?;
        let (big_kib, big_s) = fetch_peak_kib(&exe, &work, big).await?;
        println!(
            "peak memory of fetch --swarm: {} MiB build {:.1} MiB ({small_s:.1} s), {big} MiB build {:.1} MiB ({big_s:.1} s); ratio {:.2} for {:.0}x the size",
            args.mib,
            small_kib as f64 / 1024.0,
            big_kib as f64 / 1024.0,
            big_kib as f64 / small_kib.max(1) as f64,
            big as f64 / args.mib as f64
        );
        return Ok(());
    }
    let exe = crate::volley_exe()?;
    let tmp;
    let work = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    let build = work.join("build");
    let f = make_build(&build, args.mib)?;
    // Mbit/s → KiB/s.
    let cap_kib = args.cap_mbit * 1_000_000 / 8 / 1024;
    let mut rows = Vec::new();
    let report = |r: &Row| {
        eprintln!("{}", table_row(r));
        if let (Some([setup, dl, build]), Some(read)) = (r.slowest_phases_s, r.last_report_read_s) {
            eprintln!(
                "  slowest peer: {setup:.2} s before the install, {dl:.2} s downloading, {build:.2} s completing the version; last report read at {read:.2} s"
            );
        }
    };
    let aria2 = !args.skip_aria2
        && ["aria2c", "opentracker", "mktorrent"]
            .iter()
            .all(|t| have(t));
    if !args.skip_aria2 && !aria2 {
        eprintln!("aria2c, opentracker or mktorrent missing: scripts/bench-deps.sh installs them");
    }
    for &n in &args.peers {
        let r = volley_run(&exe, &work, &build, f, n, Duration::ZERO, cap_kib, true).await?;
        report(&r);
        rows.push(r);
        if aria2 {
            let r = aria2_run(&work, &build, f, n, cap_kib).await?;
            report(&r);
            rows.push(r);
        }
    }
    if args.staggered_peers > 0 {
        let stagger = Duration::from_secs_f64(args.stagger_s);
        let r = volley_run(
            &exe,
            &work,
            &build,
            f,
            args.staggered_peers,
            stagger,
            cap_kib,
            true,
        )
        .await?;
        report(&r);
        rows.push(r);
    }
    if !args.skip_http {
        let r = volley_run(
            &exe,
            &work,
            &build,
            f,
            args.peers.first().copied().unwrap_or(8),
            Duration::ZERO,
            cap_kib,
            false,
        )
        .await?;
        report(&r);
        rows.push(r);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "build_bytes": f, "cap_mbit": args.cap_mbit, "rows": rows })
        );
    } else {
        println!(
            "| system | peers | arrivals | seconds | T_min | ratio | origin / F | offload | wire / N·F |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!("{}", table_row(r));
        }
    }
    Ok(())
}
