//! Players joining while the gate is flooded: the share of legitimate joins that succeed and
//! their latency during a junk flood and during a spoofed-source Initial flood, next to a calm
//! run in the same process.
//!
//! The floods come from one socket on loopback, at a fixed datagram count and rate, from a
//! thread of their own:
//! - junk: random bytes, a third of them shaped like QUIC Initials;
//! - spoofed Initials: real client Initials (captured from a QUIC client) replayed by a sender
//!   that never answers, as a flood forged in other addresses' names looks to the node.
//!
//! Every player's address is 127.0.0.1 here, so the per-address connect limit is raised to
//! stand for players on addresses of their own; the floods' address is the same one, which is
//! the case the limiter must survive (a spoofed source naming a real player's address).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use volley_client::{Api, Client, ClientConfig};
use volley_server::{Node, NodeConfig};

/// Options of `volley-bench shield`.
#[derive(clap::Args, Debug)]
pub(crate) struct ShieldArgs {
    /// Joins measured per case.
    #[arg(long, default_value_t = 200)]
    joins: usize,
    /// Datagrams each flood sends.
    #[arg(long, default_value_t = 200_000)]
    datagrams: usize,
    /// Flood rate, datagrams per second.
    #[arg(long, default_value_t = 40_000)]
    rate: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    case: &'static str,
    datagrams_sent: usize,
    flood_s: f64,
    joins: usize,
    joined: usize,
    success_percent: f64,
    p50_ms: f64,
    p99_ms: f64,
    p99_vs_calm: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Flood {
    None,
    Junk,
    SpoofedInitials,
}

/// Sends `count` datagrams to `to` at `rate`/s from a thread, stopping early at `stop`.
fn flood(
    kind: Flood,
    initials: Arc<Vec<Vec<u8>>>,
    to: SocketAddr,
    count: usize,
    rate: u32,
    stop: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, f64)> {
    std::thread::spawn(move || {
        let _done = SetOnDrop(finished);
        let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return (0, 0.0);
        };
        let started = Instant::now();
        let per_ms = (f64::from(rate) / 1000.0).max(1.0);
        let mut sent = 0usize;
        let mut refused = 0usize;
        let mut junk = vec![0u8; 1200];
        while sent < count && kind != Flood::None && !stop.load(Ordering::Relaxed) {
            // Pace: never ahead of rate × elapsed.
            let due = (started.elapsed().as_secs_f64() * 1000.0 * per_ms) as usize;
            if sent >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let pkt: &[u8] = match kind {
                Flood::SpoofedInitials => &initials[sent % initials.len()],
                _ => {
                    let len = 1 + (sent * 7919) % 1200;
                    rand::Rng::fill(&mut rand::thread_rng(), &mut junk[..len]);
                    if sent.is_multiple_of(3) && len > 5 {
                        junk[0] = 0xc3;
                        junk[1..5].copy_from_slice(&1u32.to_be_bytes());
                    }
                    &junk[..len]
                }
            };
            // A send refused (full socket buffer) is not counted as sent.
            if sock.send_to(pkt, to).is_ok() {
                sent += 1;
            } else {
                refused += 1;
                if refused > count {
                    break;
                }
            }
        }
        (sent, started.elapsed().as_secs_f64())
    })
}

/// Sets its flag when dropped (the flood thread ends).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Most joins one case makes while waiting for its flood to end.
const JOINS_MAX: usize = 20_000;

/// One measured join: a ticket from the API, then the QUIC connection and Hello.
async fn join_once(api: &Api, room: u64) -> anyhow::Result<(Duration, volley_client::Session)> {
    let client = Client::new(ClientConfig {
        bind_addr: "127.0.0.1:0".parse()?,
        direct: false,
        ..ClientConfig::default()
    })?;
    let ticket = api.join(room, client.fingerprint()).await?;
    let t = Instant::now();
    let session = client.join(&ticket).await?;
    Ok((t.elapsed(), session))
}

async fn run_case(
    base: &str,
    quic: SocketAddr,
    kind: Flood,
    initials: Arc<Vec<Vec<u8>>>,
    args: &ShieldArgs,
) -> anyhow::Result<(usize, f64, usize, usize, Vec<f64>)> {
    let mut owner = Api::new(base);
    owner
        .login_device(&format!("bench-shield-owner-{}", rand::random::<u64>()))
        .await?;
    let mut players = Vec::new();
    // A player is in a room once: one player per join of a batch.
    for i in 0..32 {
        let mut api = Api::new(base);
        api.login_device(&format!(
            "bench-shield-player-{i}-{}",
            rand::random::<u64>()
        ))
        .await?;
        players.push(api);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let flooding = flood(
        kind,
        initials,
        quic,
        args.datagrams,
        args.rate,
        stop.clone(),
        finished.clone(),
    );
    // Let the flood reach its rate before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::new();
    let mut joined = 0;
    let mut done = 0;
    let mut failures: Vec<String> = Vec::new();
    // At least `joins`, and for as long as the flood lasts.
    while (done < args.joins || !finished.load(Ordering::Relaxed)) && done < JOINS_MAX {
        let room = owner.create_room(Some(64)).await?.room_id;
        let batch = players.len();
        let mut tasks = Vec::new();
        for k in 0..batch {
            let api = players[k % players.len()].clone();
            tasks.push(tokio::spawn(async move { join_once(&api, room).await }));
        }
        // Every member stays until the batch is over: a room closes when its last player leaves.
        let mut members = Vec::new();
        for t in tasks {
            match t.await.context("join task")? {
                Ok((d, session)) => {
                    joined += 1;
                    latencies.push(d.as_secs_f64() * 1000.0);
                    members.push(session);
                }
                Err(e) => {
                    if failures.len() < 3 {
                        failures.push(e.to_string());
                    }
                }
            }
        }
        drop(members);
        done += batch;
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, secs) = flooding
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread"))?;
    latencies.sort_by(f64::total_cmp);
    for f in &failures {
        eprintln!("a join failed: {f}");
    }
    Ok((sent, secs, done, joined, latencies))
}

pub(crate) async fn run(args: ShieldArgs) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let node = Node::start(NodeConfig {
        data_dir: data.path().to_owned(),
        http_addr: "127.0.0.1:0".parse()?,
        quic_addr: "127.0.0.1:0".parse()?,
        connects_per_ip_per_s: 100_000.0,
        connects_per_ip_burst: 100_000.0,
        logins_per_ip_per_s: 100_000.0,
        logins_per_ip_burst: 100_000.0,
        rooms_per_player_max: 1_000,
        ..NodeConfig::default()
    })
    .await?;
    let base = format!("http://{}", node.http_addr);
    let id = volley_net::tls::Identity::generate("bench-spoofer")?;
    let cc = volley_net::endpoint::client_config(
        &id,
        volley_net::tls::Pin::AnyVerifiedKey,
        &volley_net::endpoint::TransportTuning::node(),
    )?;
    let initials = Arc::new(volley_testkit::initials::capture(cc, "volley-node", 2_000).await?);
    anyhow::ensure!(!initials.is_empty(), "no Initials captured");
    let mut rows = Vec::new();
    let mut calm_p99 = 0.0;
    for (case, kind) in [
        ("calm", Flood::None),
        ("junk flood", Flood::Junk),
        ("spoofed-source Initial flood", Flood::SpoofedInitials),
    ] {
        let (sent, secs, joins, joined, lat) =
            run_case(&base, node.quic_addr, kind, initials.clone(), &args).await?;
        let pct = |q: f64| {
            lat.get(((lat.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let p99 = pct(0.99);
        if kind == Flood::None {
            calm_p99 = p99;
        }
        rows.push(Row {
            case,
            datagrams_sent: sent,
            flood_s: secs,
            joins,
            joined,
            success_percent: 100.0 * joined as f64 / joins.max(1) as f64,
            p50_ms: pct(0.5),
            p99_ms: p99,
            p99_vs_calm: p99 / calm_p99,
        });
    }
    node.shutdown().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "at least {} joins per case, and joins for as long as the flood lasts (32 players at a time, each into a fresh room); \
         floods of {} datagrams at {}/s",
        args.joins, args.datagrams, args.rate
    );
    println!("| case | datagrams sent | over s | joined | success | join p50 ms | join p99 ms | p99 / calm |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} | {}/{} | {:.1} % | {:.1} | {:.1} | {:.2} |",
            r.case,
            r.datagrams_sent,
            r.flood_s,
            r.joined,
            r.joins,
            r.success_percent,
            r.p50_ms,
            r.p99_ms,
            r.p99_vs_calm
        );
    }
    Ok(())
}
