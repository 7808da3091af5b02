//! `volley demo --mode snapshot`: the arena, authoritative on a real node, with bot players
//! behind emulated links.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use volley_client::netplay::SnapshotPlayer;
use volley_client::{Api, Client, ClientConfig};
use volley_link::impair::LinkProfile;
use volley_link::udp_link::UdpLinkEmulator;
use volley_server::modes::{Modes, SNAPSHOT_EVERY, TICK_HZ};
use volley_server::{Node, NodeConfig};
use volley_sync::arena::{angle_of, Arena, ArenaInput, KIND_PLAYER};
use volley_sync::game::EntityView;

/// An embedded node offering the arena modes, with one room of `mode` and its owner's login.
struct DemoRoom {
    node: volley_server::NodeHandle,
    base: String,
    owner: Api,
    room: u64,
    _data: tempfile::TempDir,
}

impl DemoRoom {
    async fn start(mode: &str, players: usize) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let cfg = NodeConfig {
            data_dir: data.path().to_owned(),
            http_addr: "127.0.0.1:0".parse()?,
            quic_addr: "127.0.0.1:0".parse()?,
            logins_per_ip_per_s: 10_000.0,
            logins_per_ip_burst: 10_000.0,
            connects_per_ip_burst: 1000.0,
            ..NodeConfig::default()
        };
        let node = Node::start_with(cfg, Some(std::sync::Arc::new(Modes))).await?;
        let base = format!("http://{}", node.http_addr);
        let mut owner = Api::new(&base);
        owner
            .login_device(&format!("{mode}-demo-owner-{}", std::process::id()))
            .await?;
        let room = owner
            .create_room_with_mode(Some(players as u32), Some(mode))
            .await?
            .room_id;
        Ok(DemoRoom {
            node,
            base,
            owner,
            room,
            _data: data,
        })
    }

    /// Bot `i` logs in and joins, through `link` when given (the ticket still names the node).
    async fn join(
        &self,
        i: usize,
        direct: bool,
        link: Option<&UdpLinkEmulator>,
    ) -> anyhow::Result<volley_client::Session> {
        let mut api = Api::new(&self.base);
        api.login_device(&format!("demo-bot-{i}-{}", std::process::id()))
            .await?;
        let client = Client::new(ClientConfig {
            bind_addr: "127.0.0.1:0".parse()?,
            direct,
            ..ClientConfig::default()
        })?;
        let mut ticket = api.join(self.room, client.fingerprint()).await?;
        if let Some(link) = link {
            ticket.node_addr = link.local_addr().to_string();
        }
        Ok(client.join(&ticket).await?)
    }
}

#[derive(Debug, Serialize)]
struct ClientReport {
    slot: usize,
    rtt_ms: f64,
    snapshots: u64,
    snapshot_delivery: f64,
    refused: u64,
    corrections: u64,
    correction_mean_units: f64,
    interp_underruns: u64,
    up_bytes_per_s: f64,
    down_bytes_per_s: f64,
    disconnected: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    players: usize,
    profile: String,
    duration_s: f64,
    clients: Vec<ClientReport>,
    node: serde_json::Value,
}

/// Input from what the bot sees: run at the nearest other player, aim at it, shoot often.
fn view_bot(me: u16, view: &[EntityView], n: u64) -> ArenaInput {
    let Some(mine) = view.iter().find(|e| e.id == me) else {
        return ArenaInput::default();
    };
    let target = view
        .iter()
        .filter(|e| e.kind == KIND_PLAYER && e.id != me && e.health > 0)
        .min_by_key(|e| i64::from(e.x - mine.x).pow(2) + i64::from(e.y - mine.y).pow(2));
    let Some(t) = target else {
        return ArenaInput::default();
    };
    let (dx, dy) = (t.x - mine.x, t.y - mine.y);
    ArenaInput {
        move_x: dx.signum() as i8,
        move_y: dy.signum() as i8,
        aim: angle_of(dx, dy),
        fire: !n.is_multiple_of(3),
    }
}

pub(crate) async fn run_snapshot(
    players: usize,
    duration_s: f64,
    profile_name: &str,
    json: bool,
    interest: bool,
) -> anyhow::Result<()> {
    let mode = if interest {
        "snapshot-interest"
    } else {
        "snapshot"
    };
    if !(1..=64).contains(&players) || !(0.5..=600.0).contains(&duration_s) {
        bail!("--bots must be 1..=64 and --duration-s 0.5..=600");
    }
    let profile = LinkProfile::by_name(profile_name).with_context(|| {
        format!(
            "unknown profile {profile_name:?}; one of {:?}",
            LinkProfile::names()
        )
    })?;
    let demo = DemoRoom::start(mode, players).await?;
    let (node, owner, room) = (&demo.node, &demo.owner, demo.room);
    let mut links = Vec::new();
    let mut bots = Vec::new();
    for i in 0..players {
        let link = UdpLinkEmulator::start(
            "127.0.0.1:0".parse()?,
            node.quic_addr,
            profile,
            profile,
            1000 + i as u64,
        )
        .await?;
        let mut p = SnapshotPlayer::<Arena>::new(demo.join(i, false, Some(&link)).await?);
        p.wait_start(Duration::from_secs(10)).await?;
        bots.push(p);
        links.push(link);
    }
    // Take in what queued up while the later bots joined, so counting starts clean.
    for b in bots.iter_mut() {
        b.poll()?;
    }
    let start = Instant::now();
    let q0: Vec<_> = bots.iter().map(|b| b.session().node_quality()).collect();
    let snaps0: Vec<u64> = bots
        .iter()
        .map(|b| b.stats().map_or(0, |(c, _)| c.snapshots))
        .collect();
    let mut frame = tokio::time::interval(Duration::from_secs(1) / u32::from(TICK_HZ));
    let mut n: u64 = 0;
    let mut disconnected = vec![false; players];
    let mut next_print = Duration::from_secs(1);
    while start.elapsed().as_secs_f64() < duration_s {
        frame.tick().await;
        n += 1;
        for (i, b) in bots.iter_mut().enumerate() {
            if b.poll().is_err() {
                disconnected[i] = true;
                continue;
            }
            let view = b.render();
            let me = view
                .iter()
                .find(|e| e.kind == KIND_PLAYER)
                .map(|_| i as u16);
            let input = view_bot(me.unwrap_or(i as u16), &view, n + i as u64);
            if b.frame(input).is_err() {
                disconnected[i] = true;
            }
        }
        if !json && start.elapsed() >= next_print {
            next_print += Duration::from_secs(1);
            let s: Vec<String> = bots
                .iter()
                .map(|b| {
                    b.stats().map_or("-".into(), |(c, _)| {
                        format!("{}/{}", c.snapshots, c.corrections)
                    })
                })
                .collect();
            println!(
                "t={:.0}s snapshots/corrections per bot: {}",
                start.elapsed().as_secs_f64(),
                s.join(" ")
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let expected = secs * f64::from(TICK_HZ) / f64::from(SNAPSHOT_EVERY);
    let mut clients = Vec::new();
    for (i, b) in bots.iter().enumerate() {
        let q = b.session().node_quality();
        let (c, interp) = b.stats().unwrap_or_default();
        clients.push(ClientReport {
            slot: i,
            rtt_ms: q.rtt_ms,
            snapshots: c.snapshots,
            snapshot_delivery: (c.snapshots - snaps0[i]) as f64 / expected,
            refused: c.refused,
            corrections: c.corrections,
            correction_mean_units: if c.corrections == 0 {
                0.0
            } else {
                c.correction_sum / c.corrections as f64 / 256.0
            },
            interp_underruns: interp.underruns,
            up_bytes_per_s: (q.sent_bytes - q0[i].sent_bytes) as f64 / secs,
            down_bytes_per_s: (q.received_bytes - q0[i].received_bytes) as f64 / secs,
            disconnected: disconnected[i],
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node_report = owner.room(room).await?.logic.unwrap_or_default();
    let report = Report {
        mode,
        players,
        profile: profile_name.to_owned(),
        duration_s: secs,
        clients,
        node: node_report,
    };
    for b in bots {
        b.leave().await;
    }
    demo.node.shutdown().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "\n{:>4} {:>8} {:>9} {:>9} {:>11} {:>10} {:>9} {:>9} {:>9}",
            "slot",
            "rtt ms",
            "delivery",
            "corrects",
            "mean err u",
            "underruns",
            "up B/s",
            "down B/s",
            "dropped"
        );
        for c in &report.clients {
            println!(
                "{:>4} {:>8.1} {:>8.1}% {:>9} {:>11.3} {:>10} {:>9.0} {:>9.0} {:>9}",
                c.slot,
                c.rtt_ms,
                c.snapshot_delivery * 100.0,
                c.corrections,
                c.correction_mean_units,
                c.interp_underruns,
                c.up_bytes_per_s,
                c.down_bytes_per_s,
                c.disconnected
            );
        }
        println!("node: {}", report.node);
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct RollbackClientReport {
    slot: u8,
    rtt_ms: f64,
    path_to_peers: Vec<&'static str>,
    frames: u32,
    confirmed_frame: u32,
    rollbacks: u64,
    rollback_frames_mean: f64,
    rollback_frames_max: u32,
    mispredictions: u64,
    stalls: u64,
    waits: u64,
    referee_overrides: u64,
    refused: u64,
    up_bytes_per_s: f64,
    down_bytes_per_s: f64,
    disconnected: bool,
}

#[derive(Debug, Serialize)]
struct RollbackReport {
    mode: &'static str,
    players: usize,
    profile: String,
    duration_s: f64,
    /// Every client's checksum equals every other's at a frame all had confirmed.
    checksums_agree: bool,
    clients: Vec<RollbackClientReport>,
    node: serde_json::Value,
}

/// `volley demo --mode rollback`: inputs peer to peer (direct on a perfect link; through the
/// relay over emulated links, so the impairment applies to every path), the node referees.
pub(crate) async fn run_rollback(
    players: usize,
    duration_s: f64,
    profile_name: &str,
    json: bool,
    cheat: bool,
) -> anyhow::Result<()> {
    use volley_client::netplay::RollbackPlayer;
    use volley_sync::arena::Bot;
    use volley_sync::game::Game;
    if !(2..=8).contains(&players) || !(0.5..=600.0).contains(&duration_s) {
        bail!("rollback: --bots must be 2..=8 and --duration-s 0.5..=600");
    }
    let profile = LinkProfile::by_name(profile_name).with_context(|| {
        format!(
            "unknown profile {profile_name:?}; one of {:?}",
            LinkProfile::names()
        )
    })?;
    let impaired = profile_name != "perfect";
    let demo = DemoRoom::start("rollback", players).await?;
    let (node, owner, room) = (&demo.node, &demo.owner, demo.room);
    let mut links = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..players {
        let link = if impaired {
            Some(
                UdpLinkEmulator::start(
                    "127.0.0.1:0".parse()?,
                    node.quic_addr,
                    profile,
                    profile,
                    2000 + i as u64,
                )
                .await?,
            )
        } else {
            None
        };
        sessions.push(demo.join(i, !impaired, link.as_ref()).await?);
        links.extend(link);
    }
    let mut bots: Vec<RollbackPlayer<Arena>> = sessions
        .into_iter()
        .map(|s| RollbackPlayer::new(s, Arena::new))
        .collect();
    for b in bots.iter_mut() {
        b.wait_start(Duration::from_secs(10)).await?;
    }
    let mut brains: Vec<Bot> = bots
        .iter()
        .map(|b| {
            let slot = usize::from(b.slot().unwrap_or(0));
            Bot::new(slot, 50 + slot as u64)
        })
        .collect();
    let start = Instant::now();
    let q0: Vec<_> = bots.iter().map(|b| b.session().node_quality()).collect();
    let mut frame = tokio::time::interval(Duration::from_secs(1) / u32::from(TICK_HZ));
    let mut disconnected = vec![false; players];
    let mut next_print = Duration::from_secs(1);
    let mut cheated = !cheat;
    while start.elapsed().as_secs_f64() < duration_s {
        frame.tick().await;
        if !cheated && start.elapsed() >= Duration::from_millis(1500) {
            // The first bot gives itself 50 kills nobody else saw.
            if let Some(b) = bots.first_mut() {
                cheated = b.cheat_alter_state(|g| {
                    if let Some(p) = g.players.first_mut() {
                        p.score += 50;
                    }
                });
            }
        }
        for (i, b) in bots.iter_mut().enumerate() {
            if b.poll().is_err() {
                disconnected[i] = true;
                continue;
            }
            let brain = &mut brains[i];
            if b.frame(|g| brain.input(g)).is_err() {
                disconnected[i] = true;
            }
        }
        if !json && start.elapsed() >= next_print {
            next_print += Duration::from_secs(1);
            let s: Vec<String> = bots
                .iter()
                .map(|b| {
                    b.stats().map_or("-".into(), |st| {
                        format!(
                            "f{} rb{} mp{}",
                            b.state().map_or(0, |g| g.frame()),
                            st.rollbacks,
                            st.mispredictions
                        )
                    })
                })
                .collect();
            println!("t={:.0}s {}", start.elapsed().as_secs_f64(), s.join(" | "));
        }
    }
    // Let the last inputs and final inputs arrive, then compare checksums at a frame everyone
    // confirmed.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(600) {
        frame.tick().await;
        for (i, b) in bots.iter_mut().enumerate() {
            let brain = &mut brains[i];
            if b.poll().is_err() || b.frame(|g| brain.input(g)).is_err() {
                disconnected[i] = true;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let common = bots
        .iter()
        .filter_map(|b| b.confirmed_frame())
        .min()
        .unwrap_or(0);
    let mut agree = true;
    let mut probe = common;
    // The newest common frame may have dropped out of someone's window: look back a little.
    let mut compared = false;
    for _ in 0..64 {
        let sums: Vec<Option<u64>> = bots.iter().map(|b| b.checksum_at(probe)).collect();
        if sums.iter().all(Option::is_some) {
            agree = sums.windows(2).all(|w| w[0] == w[1]);
            compared = true;
            break;
        }
        probe = probe.saturating_sub(1);
    }
    let agree = agree && compared;
    let mut clients = Vec::new();
    for (i, b) in bots.iter().enumerate() {
        let q = b.session().node_quality();
        let st = b.stats().cloned().unwrap_or_default();
        clients.push(RollbackClientReport {
            slot: b.slot().unwrap_or(0),
            rtt_ms: q.rtt_ms,
            path_to_peers: b
                .session()
                .peers()
                .iter()
                .map(|p| p.path.as_str())
                .collect(),
            frames: b.state().map_or(0, |g| g.frame()),
            confirmed_frame: b.confirmed_frame().unwrap_or(0),
            rollbacks: st.rollbacks,
            rollback_frames_mean: st.rollback_frames_mean(),
            rollback_frames_max: st.rollback_frames_max,
            mispredictions: st.mispredictions,
            stalls: b.stalls,
            waits: b.waits,
            referee_overrides: st.referee_overrides,
            refused: b.refused,
            up_bytes_per_s: (q.sent_bytes - q0[i].sent_bytes) as f64 / secs,
            down_bytes_per_s: (q.received_bytes - q0[i].received_bytes) as f64 / secs,
            disconnected: disconnected[i],
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node_report = owner.room(room).await?.logic.unwrap_or_default();
    let report = RollbackReport {
        mode: "rollback",
        players,
        profile: profile_name.to_owned(),
        duration_s: secs,
        checksums_agree: agree,
        clients,
        node: node_report,
    };
    for b in bots {
        b.leave().await;
    }
    demo.node.shutdown().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("\n{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
