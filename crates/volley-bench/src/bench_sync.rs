//! `volley-bench snapshot`: snapshot bytes for the real arena game with bots, next to a naive
//! full-state encoding of the same world in the same run.

use std::collections::{HashMap, VecDeque};

use anyhow::bail;
use serde::Serialize;
use volley_sync::arena::{Arena, Bot};
use volley_sync::game::{EntityView, Game};
use volley_sync::snapshot::{quantize, Decoder, Encoder, Snapshot, SnapshotConfig};

/// Naive encoding: every field at fixed width (id 2, kind 1, x/y/vx/vy 4 each, angle, health,
/// flags 1 each).
const NAIVE_ENTITY_BYTES: f64 = 22.0;

#[derive(clap::Args, Debug)]
pub(crate) struct SnapshotArgs {
    /// Players (bots) in the arena.
    #[arg(long, default_value_t = 32)]
    players: usize,
    /// Simulation rate.
    #[arg(long, default_value_t = 60)]
    tick_hz: u32,
    /// Snapshot rate (a divisor of the tick rate).
    #[arg(long, default_value_t = 30)]
    snapshot_hz: u32,
    /// Seconds simulated.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Milliseconds before an acknowledgement reaches the node.
    #[arg(long, default_value_t = 100)]
    ack_delay_ms: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    players: usize,
    snapshot_hz: u32,
    snapshots: u64,
    entities_per_snapshot_mean: f64,
    changed_entities: u64,
    bytes_total: u64,
    bytes_per_changed_entity: f64,
    naive_bytes_per_entity: f64,
    ratio_to_naive: f64,
    downstream_bytes_per_s: f64,
    naive_downstream_bytes_per_s: f64,
    idle_downstream_bytes_per_s: f64,
    decode_errors: u64,
    mismatches: u64,
}

fn run_world(args: &SnapshotArgs, idle: bool) -> anyhow::Result<(Report, f64)> {
    let every = (args.tick_hz / args.snapshot_hz).max(1);
    let ack_lag = (args.ack_delay_ms * args.snapshot_hz).div_ceil(1000) as usize;
    let mut arena = Arena::new(args.players, 11);
    let mut bots: Vec<Bot> = (0..args.players)
        .map(|s| Bot::new(s, 100 + s as u64))
        .collect();
    let mut enc = Encoder::new(SnapshotConfig::default());
    let mut dec = Decoder::new(SnapshotConfig::default());
    let mut acks: VecDeque<u32> = VecDeque::new();
    let mut prev: HashMap<u16, EntityView> = HashMap::new();
    let (mut snapshots, mut changed, mut bytes, mut entities) = (0u64, 0u64, 0u64, 0u64);
    let (mut errors, mut mismatches) = (0u64, 0u64);
    let mut naive = 0f64;
    for _ in 0..args.seconds * args.tick_hz {
        let inputs: Vec<_> = if idle {
            vec![Default::default(); args.players]
        } else {
            bots.iter_mut().map(|b| b.input(&arena)).collect()
        };
        arena.step(&inputs);
        if !arena.frame().is_multiple_of(every) {
            continue;
        }
        let snap = Snapshot {
            tick: arena.frame(),
            entities: arena.entities(),
        };
        let q: HashMap<u16, EntityView> =
            snap.entities.iter().map(|e| (e.id, quantize(e))).collect();
        changed += q.iter().filter(|(id, e)| prev.get(id) != Some(e)).count() as u64;
        entities += q.len() as u64;
        naive += q.len() as f64 * NAIVE_ENTITY_BYTES;
        prev = q;
        let packet = enc.encode(&snap, 1200)?;
        bytes += packet.len() as u64;
        snapshots += 1;
        match dec.decode(&packet) {
            Ok(got) => {
                if Some(&got) != enc.sent(snap.tick) {
                    mismatches += 1;
                }
                acks.push_back(got.tick);
            }
            Err(_) => errors += 1,
        }
        while acks.len() > ack_lag {
            if let Some(t) = acks.pop_front() {
                enc.on_ack(t);
            }
        }
    }
    let secs = f64::from(args.seconds);
    let report = Report {
        players: args.players,
        snapshot_hz: args.snapshot_hz,
        snapshots,
        entities_per_snapshot_mean: entities as f64 / snapshots.max(1) as f64,
        changed_entities: changed,
        bytes_total: bytes,
        bytes_per_changed_entity: bytes as f64 / changed.max(1) as f64,
        naive_bytes_per_entity: NAIVE_ENTITY_BYTES,
        ratio_to_naive: bytes as f64 / naive.max(1.0),
        downstream_bytes_per_s: bytes as f64 / secs,
        naive_downstream_bytes_per_s: naive / secs,
        idle_downstream_bytes_per_s: 0.0,
        decode_errors: errors,
        mismatches,
    };
    Ok((report, bytes as f64 / secs))
}

pub(crate) fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    if !(1..=64).contains(&args.players)
        || args.snapshot_hz == 0
        || args.tick_hz < args.snapshot_hz
        || !(1..=3600).contains(&args.seconds)
    {
        bail!("--players 1..=64, --snapshot-hz ≥ 1, --tick-hz ≥ --snapshot-hz, --seconds 1..=3600");
    }
    let (mut report, _) = run_world(&args, false)?;
    let (_, idle_rate) = run_world(&args, true)?;
    report.idle_downstream_bytes_per_s = idle_rate;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "arena, {} bots, {} Hz snapshots, acks {} ms late, {} s",
        args.players, args.snapshot_hz, args.ack_delay_ms, args.seconds
    );
    println!(
        "bytes per changed entity: {:.2} (naive full state: {:.0}; codec/naive bytes: {:.3})",
        report.bytes_per_changed_entity, report.naive_bytes_per_entity, report.ratio_to_naive
    );
    println!(
        "per-client downstream: {:.0} B/s (naive {:.0} B/s); idle world (players standing): {:.0} B/s",
        report.downstream_bytes_per_s, report.naive_downstream_bytes_per_s, report.idle_downstream_bytes_per_s
    );
    println!(
        "entities per snapshot (players + bullets): {:.1}; decode errors {}; mismatches {}",
        report.entities_per_snapshot_mean, report.decode_errors, report.mismatches
    );
    Ok(())
}
