//! `volley-bench tracker`: announces per second and their latency through the node's tracker
//! (in memory, and in Redis as a cluster runs it) next to opentracker, a BitTorrent tracker in
//! C, each answering the same load in the same run: a swarm of `--peers` entries, `--clients`
//! announcing in a loop, each answer up to 50 peers.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use volley_proto::api::PeerAnnounce;

use crate::bench_swarm::{free_port, percentile, Proc};

#[derive(clap::Args, Debug)]
pub(crate) struct TrackerArgs {
    /// Entries in the swarm before the timing starts.
    #[arg(long, default_value_t = 1000)]
    peers: usize,
    /// Clients announcing concurrently, each in a loop.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds measured per tracker.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Redis for the cluster row.
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    tracker: String,
    announces: u64,
    announces_per_s: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    peers_per_answer: f64,
}

/// Runs `clients` loops of `one(client, round)` for `secs`; returns the row.
async fn drive<F, Fut>(name: &str, clients: usize, secs: f64, one: F) -> anyhow::Result<Row>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send,
{
    let one = Arc::new(one);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (one, stop) = (one.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut got = 0usize;
            let mut round = 0u64;
            // Bounded in count as well as time.
            while !stop.load(Ordering::Relaxed) && round < 1_000_000 {
                let t = Instant::now();
                got += one(c, round).await?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                round += 1;
            }
            Ok::<_, anyhow::Error>((lat, got))
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut got = 0usize;
    for t in tasks {
        let (l, g) = t.await??;
        lat.extend(l);
        got += g;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = lat.len() as u64;
    Ok(Row {
        tracker: name.into(),
        announces: n,
        announces_per_s: n as f64 / elapsed,
        latency_ms_p50: percentile(&mut lat, 0.5),
        latency_ms_p99: percentile(&mut lat, 0.99),
        peers_per_answer: got as f64 / n.max(1) as f64,
    })
}

async fn volley_row(args: &TrackerArgs, redis: Option<&str>) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let http = free_port()?;
    let quic = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new(crate::volley_exe()?);
    cmd.args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--quic-addr", &format!("127.0.0.1:{quic}")])
        .args([
            "--logins-per-ip-per-s",
            "100000",
            "--logins-per-ip-burst",
            "100000",
        ]);
    if let Some(url) = redis {
        let prefix = format!("volley-bench-tracker:{}:", rand::random::<u64>());
        cmd.args(["--redis", url, "--redis-prefix", &prefix]);
    }
    let _node = Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the node")?,
    );
    let base = format!("http://127.0.0.1:{http}");
    let mut up = false;
    for _ in 0..100 {
        if volley_client::Api::raw_get(&format!("{base}/metrics"))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !up {
        bail!("the node did not come up");
    }
    let total = 10_000u32;
    let announce = move |port: u16, have: u32| PeerAnnounce {
        port,
        have_chunks: have,
        total_chunks: total,
    };
    // The swarm: `peers` players announce once.
    let mut fill = tokio::task::JoinSet::new();
    for i in 0..args.peers {
        let base = base.clone();
        fill.spawn(async move {
            let api = login(&base, &format!("bench-tracker-fill-{i}")).await?;
            let a = announce(10_000 + i as u16, (i as u32 * 7) % total);
            api.announce_peer("bench", "1", &a).await?;
            Ok::<_, anyhow::Error>(())
        });
        while fill.len() >= 32 {
            if let Some(r) = fill.join_next().await {
                r??;
            }
        }
    }
    while let Some(r) = fill.join_next().await {
        r??;
    }
    let mut apis = Vec::new();
    for c in 0..args.clients {
        apis.push(login(&base, &format!("bench-tracker-client-{c}")).await?);
    }
    let apis = Arc::new(apis);
    let name = if redis.is_some() {
        "Volley node, tracker in Redis"
    } else {
        "Volley node, tracker in memory"
    };
    drive(name, args.clients, args.duration_s, move |c, round| {
        let apis = apis.clone();
        async move {
            let r = apis[c]
                .announce_peer(
                    "bench",
                    "1",
                    &announce(30_000 + c as u16, (round as u32).min(total)),
                )
                .await?;
            Ok(r.peers.len())
        }
    })
    .await
}

async fn login(base: &str, device: &str) -> anyhow::Result<volley_client::Api> {
    let mut api = volley_client::Api::new(base);
    api.login_device(device).await?;
    Ok(api)
}

fn urlencode(b: &[u8]) -> String {
    b.iter().map(|x| format!("%{x:02X}")).collect()
}

/// Peers in a compact opentracker answer (`5:peers<len>:` then 6 bytes each).
fn compact_peers(body: &[u8]) -> usize {
    let key = b"5:peers";
    let Some(at) = body.windows(key.len()).position(|w| w == key) else {
        return 0;
    };
    let rest = &body[at + key.len()..];
    let colon = rest.iter().position(|&c| c == b':').unwrap_or(0);
    std::str::from_utf8(&rest[..colon])
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(0, |n| n / 6)
}

async fn opentracker_row(args: &TrackerArgs) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let info_hash = [0x5au8; 20];
    // Debian's opentracker serves whitelisted torrents only; it chroots into its directory.
    std::fs::write(
        dir.path().join("whitelist"),
        format!("{}\n", hex::encode(info_hash)),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(
            dir.path().join("whitelist"),
            std::fs::Permissions::from_mode(0o644),
        )?;
    }
    let port = free_port()?;
    let _t = Proc(
        Command::new("opentracker")
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-P", &port.to_string(), "-w", "/whitelist", "-d"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting opentracker")?,
    );
    // opentracker closes every connection after its answer (as BitTorrent clients expect):
    // one connection per announce.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let base = format!("http://127.0.0.1:{port}/announce");
    let make = move |peer: u64, pport: u16, left: u64| {
        let mut id = [b'-'; 20];
        id[..8].copy_from_slice(b"-VB0001-");
        id[8..16].copy_from_slice(&peer.to_be_bytes());
        format!(
            "{base}?info_hash={}&peer_id={}&port={pport}&uploaded=0&downloaded=0&left={left}&compact=1&numwant=50",
            urlencode(&info_hash),
            urlencode(&id)
        )
    };
    let make = Arc::new(make);
    let mut ok = false;
    for _ in 0..50 {
        if http.get(make(0, 9999, 1)).send().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ok {
        bail!("opentracker did not come up");
    }
    for i in 0..args.peers {
        let r = http
            .get(make(
                i as u64 + 1,
                10_000 + i as u16,
                (i as u64 * 7) % 10_000,
            ))
            .send()
            .await?;
        r.bytes().await?;
    }
    let clients = args.clients;
    drive(
        "opentracker (C, no auth)",
        clients,
        args.duration_s,
        move |c, round| {
            let (http, make) = (http.clone(), make.clone());
            async move {
                let body = http
                    .get(make(
                        1_000_000 + c as u64,
                        30_000 + c as u16,
                        10_000u64.saturating_sub(round),
                    ))
                    .send()
                    .await?
                    .bytes()
                    .await?;
                Ok(compact_peers(&body))
            }
        },
    )
    .await
}

pub(crate) async fn run(args: TrackerArgs) -> anyhow::Result<()> {
    let mut rows = vec![volley_row(&args, None).await?];
    eprintln!("{:?}", rows[0]);
    match volley_row(&args, Some(&args.redis)).await {
        Ok(r) => {
            eprintln!("{r:?}");
            rows.push(r);
        }
        Err(e) => eprintln!("Redis row skipped: {e:#}"),
    }
    let have_ot = Command::new("sh")
        .args(["-c", "command -v opentracker"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if have_ot {
        let r = opentracker_row(&args).await?;
        eprintln!("{r:?}");
        rows.push(r);
    } else {
        eprintln!("opentracker missing: scripts/bench-deps.sh installs it");
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "peers": args.peers, "clients": args.clients, "rows": rows })
        );
        return Ok(());
    }
    let base = rows
        .iter()
        .find(|r| r.tracker.starts_with("opentracker"))
        .map_or(f64::NAN, |r| r.announces_per_s.max(1e-9));
    println!("| tracker | announces/s | × opentracker | p50 ms | p99 ms | peers per answer |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} |",
            r.tracker,
            r.announces_per_s,
            r.announces_per_s / base,
            r.latency_ms_p50,
            r.latency_ms_p99,
            r.peers_per_answer
        );
    }
    Ok(())
}
