//! `volley demo`: an embedded node and bot players in one room, over real sockets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use volley_client::{Api, Client, ClientConfig, PeerStatus, Session};

use crate::bot::{self, Outcome, Plan};
use volley_server::{Node, NodeConfig};

/// Options of `volley demo`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DemoArgs {
    /// Bot players in the room (2-16 in p2p mode, up to 64 in snapshot mode); `--players` is
    /// the same.
    #[arg(long, visible_alias = "players", default_value_t = 4)]
    bots: usize,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Unreliable state updates per second each bot sends to every peer.
    #[arg(long, default_value_t = 30)]
    rate_hz: u32,
    /// Print one JSON document at the end instead of the live table.
    #[arg(long)]
    json: bool,
    /// Never punch: every pair goes through the node's relay.
    #[arg(long)]
    relay_only: bool,
    /// `p2p`: bots exchange messages over direct paths and the relay. `snapshot`: the arena
    /// game, authoritative on the node, with delta snapshots, prediction and interpolation;
    /// `snapshot-interest` the same with interest management (entities more than 16 units away
    /// from a player updated every third snapshot for that player). `rollback`: the arena with inputs peer to peer, rollback on every client, the node as
    /// referee.
    #[arg(long, default_value = "p2p")]
    mode: String,
    /// Link profile between each bot and the node (snapshot and rollback modes): perfect, lan,
    /// wifi, weak-4g, bad-cellular. In rollback mode an impaired profile sends peer inputs
    /// through the relay so the impairment applies to them too.
    #[arg(long, default_value = "perfect")]
    profile: String,
    /// Rollback mode: the first bot alters its game state 1.5 s in, to show the referee naming
    /// and resyncing it.
    #[arg(long)]
    cheat: bool,
}

/// One direction of one peer pair.
#[derive(Debug, Serialize)]
struct PairReport {
    from: u64,
    to: u64,
    path: &'static str,
    rtt_ms_p50: Option<f64>,
    rtt_ms_p99: Option<f64>,
    loss: f64,
    sent: u64,
    received: u64,
    reliable_sent: u64,
    reliable_received: u64,
    unreliable_sent: u64,
    unreliable_received: u64,
    bytes_sent: u64,
    bytes_received: u64,
    path_changes: u64,
    direct_after_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct NodeReport {
    admitted: u64,
    relay_datagrams: u64,
    relay_frames: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    bots: usize,
    duration_s: f64,
    room_id: u64,
    peers: Vec<PairReport>,
    /// Reliable events that arrived out of order or after a gap, summed over all bots (must be 0).
    reliable_faults: u64,
    node: NodeReport,
}

type Snapshots = Arc<Mutex<HashMap<u64, Vec<PeerStatus>>>>;

fn pairs(snaps: &HashMap<u64, Vec<PeerStatus>>) -> Vec<PairReport> {
    let mut out = Vec::new();
    let mut ids: Vec<_> = snaps.keys().copied().collect();
    ids.sort_unstable();
    for from in &ids {
        for s in snaps.get(from).into_iter().flatten() {
            let back = snaps
                .get(&s.player_id)
                .and_then(|v| v.iter().find(|p| p.player_id == *from));
            let (rel_recv, unrel_recv, bytes_recv) = back.map_or((0, 0, 0), |b| {
                (b.reliable_received, b.unreliable_received, b.bytes_received)
            });
            let loss = if s.unreliable_sent == 0 {
                0.0
            } else {
                1.0 - (unrel_recv as f64 / s.unreliable_sent as f64).min(1.0)
            };
            out.push(PairReport {
                from: *from,
                to: s.player_id,
                path: s.path.as_str(),
                rtt_ms_p50: s.rtt_ms_p50,
                rtt_ms_p99: s.rtt_ms_p99,
                loss,
                sent: s.reliable_sent + s.unreliable_sent,
                received: rel_recv + unrel_recv,
                reliable_sent: s.reliable_sent,
                reliable_received: rel_recv,
                unreliable_sent: s.unreliable_sent,
                unreliable_received: unrel_recv,
                bytes_sent: s.bytes_sent,
                bytes_received: bytes_recv,
                path_changes: s.path_changes,
                direct_after_ms: s.direct_after_ms,
            });
        }
    }
    out
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn print_table(t: f64, rows: &[PairReport]) {
    println!("t={t:.1}s");
    println!(
        "  {:>9}  {:<6}  {:>17}  {:>6}  {:>7}  {:>7}  {:>10}",
        "pair", "path", "rtt p50/p99 ms", "loss", "sent", "recv", "bytes out"
    );
    for r in rows {
        println!(
            "  {:>9}  {:<6}  {:>17}  {:>5.1}%  {:>7}  {:>7}  {:>10}",
            format!("{}→{}", r.from, r.to),
            r.path,
            format!("{}/{}", fmt_ms(r.rtt_ms_p50), fmt_ms(r.rtt_ms_p99)),
            r.loss * 100.0,
            r.sent,
            r.received,
            r.bytes_sent
        );
    }
}

async fn bot(
    mut session: Session,
    snaps: Snapshots,
    plan: Plan,
    all_done: Arc<tokio::sync::Barrier>,
) -> anyhow::Result<Outcome> {
    let me = session.me();
    let out = bot::drive(&mut session, &plan, |peers| {
        if let Ok(mut s) = snaps.lock() {
            s.insert(me, peers);
        }
    })
    .await;
    // Nobody leaves before everyone took its final snapshot: a peer that left is no longer in
    // the others' peer lists.
    all_done.wait().await;
    session.leave().await;
    if let Some(reason) = &out.closed {
        bail!("bot {me}: session closed: {reason}");
    }
    Ok(out)
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    match args.mode.as_str() {
        "p2p" => {}
        "snapshot" | "snapshot-interest" => {
            return crate::demo_netcode::run_snapshot(
                args.bots,
                args.duration_s,
                &args.profile,
                args.json,
                args.mode == "snapshot-interest",
            )
            .await
        }
        "rollback" => {
            return crate::demo_netcode::run_rollback(
                args.bots,
                args.duration_s,
                &args.profile,
                args.json,
                args.cheat,
            )
            .await
        }
        other => {
            bail!("--mode must be p2p, snapshot, snapshot-interest or rollback, not {other:?}")
        }
    }
    if !(2..=16).contains(&args.bots) {
        bail!("--bots must be 2..=16");
    }
    if !(0.5..=600.0).contains(&args.duration_s) {
        bail!("--duration-s must be 0.5..=600");
    }
    if !(1..=240).contains(&args.rate_hz) {
        bail!("--rate-hz must be 1..=240");
    }
    let data = tempfile::tempdir().context("temporary data directory")?;
    let cfg = NodeConfig {
        data_dir: data.path().to_owned(),
        http_addr: "127.0.0.1:0".parse()?,
        quic_addr: "127.0.0.1:0".parse()?,
        logins_per_ip_per_s: 10_000.0,
        logins_per_ip_burst: 10_000.0,
        connects_per_ip_burst: 100.0,
        ..NodeConfig::default()
    };
    let node = Node::start(cfg).await?;
    let base = format!("http://{}", node.http_addr);
    if !args.json {
        println!(
            "node: http {} quic {} ({} bots, {}, {} s)",
            node.http_addr,
            node.quic_addr,
            args.bots,
            if args.relay_only {
                "relay only"
            } else {
                "direct where possible"
            },
            args.duration_s
        );
    }
    let mut creator = Api::new(&base);
    creator
        .login_device(&format!("demo-bot-0-{}", std::process::id()))
        .await?;
    let room = creator.create_room(Some(args.bots as u32)).await?;
    let mut sessions = Vec::new();
    for i in 0..args.bots {
        let mut api = Api::new(&base);
        api.login_device(&format!("demo-bot-{i}-{}", std::process::id()))
            .await?;
        let client = Client::new(ClientConfig {
            bind_addr: "127.0.0.1:0".parse()?,
            direct: !args.relay_only,
            ..ClientConfig::default()
        })?;
        let ticket = api.join(room.room_id, client.fingerprint()).await?;
        sessions.push(client.join(&ticket).await?);
    }
    let snaps: Snapshots = Arc::new(Mutex::new(HashMap::new()));
    let start = Instant::now();
    let plan = Plan {
        rate_hz: args.rate_hz,
        send_for: Duration::from_secs_f64(args.duration_s),
        // After sending stops, bots keep reading so every reliable message can be acknowledged.
        drain: Duration::from_millis(700),
        peers_min: args.bots - 1,
        wait_max: Duration::from_secs(5),
    };
    let stop_at = start + plan.send_for + plan.drain;
    let barrier = Arc::new(tokio::sync::Barrier::new(sessions.len()));
    let handles: Vec<_> = sessions
        .into_iter()
        .map(|s| tokio::spawn(bot(s, snaps.clone(), plan.clone(), barrier.clone())))
        .collect();
    if !args.json {
        let mut t = tokio::time::interval(Duration::from_secs(1));
        t.tick().await;
        while Instant::now() + Duration::from_millis(500) < stop_at {
            t.tick().await;
            let rows = snaps.lock().map(|s| pairs(&s)).unwrap_or_default();
            print_table(start.elapsed().as_secs_f64(), &rows);
        }
    }
    let mut faults = 0;
    for h in handles {
        let out = h.await.context("bot task")??;
        faults += out
            .tracks
            .values()
            .map(|t| t.missing + t.out_of_order)
            .sum::<u64>();
    }
    let rows = snaps.lock().map(|s| pairs(&s)).unwrap_or_default();
    let m = node.metrics();
    let report = Report {
        bots: args.bots,
        duration_s: args.duration_s,
        room_id: room.room_id,
        peers: rows,
        reliable_faults: faults,
        node: NodeReport {
            admitted: m.admitted.load(std::sync::atomic::Ordering::Relaxed),
            relay_datagrams: m.relay_datagrams.load(std::sync::atomic::Ordering::Relaxed),
            relay_frames: m.relay_frames.load(std::sync::atomic::Ordering::Relaxed),
        },
    };
    node.shutdown().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("\nfinal:");
        print_table(start.elapsed().as_secs_f64(), &report.peers);
        let lost: u64 = report
            .peers
            .iter()
            .map(|p| p.reliable_sent.saturating_sub(p.reliable_received))
            .sum();
        println!(
            "reliable messages lost: {lost}; out of order or skipped: {faults}; node relayed {} datagrams and {} reliable frames",
            report.node.relay_datagrams, report.node.relay_frames
        );
    }
    Ok(())
}
