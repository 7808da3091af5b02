//! A bot player: sends numbered state updates and game events to every peer and checks what it
//! receives (order, gaps, losses). Used by `volley demo` in-process and by `volley bot` as a
//! separate process (e.g. inside a NAT lab namespace).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use volley_client::{Event, PeerStatus, Session};
use volley_proto::PlayerId;

/// What a bot does and for how long.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Unreliable updates per second to each peer; every third tick also sends a reliable event.
    pub(crate) rate_hz: u32,
    /// How long to send.
    pub(crate) send_for: Duration,
    /// How long to keep reading after sending stops, so every reliable message gets acknowledged.
    pub(crate) drain: Duration,
    /// Peers to wait for before sending (so every peer sees every event from the first).
    pub(crate) peers_min: usize,
    /// Longest wait for them.
    pub(crate) wait_max: Duration,
}

/// What a bot saw from one peer.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Track {
    /// Reliable events received.
    pub(crate) reliable: u64,
    /// Reliable events whose number skipped ahead (must stay 0: the channel is ordered and lossless).
    pub(crate) missing: u64,
    /// Reliable events that arrived behind a later one (must stay 0).
    pub(crate) out_of_order: u64,
    /// Longest silence between two reliable events, milliseconds.
    pub(crate) max_gap_ms: f64,
    #[serde(skip)]
    next: u64,
    #[serde(skip)]
    last_at: Option<Instant>,
}

/// A path or membership change the bot saw, with its time since the bot started.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Seen {
    pub(crate) t_ms: f64,
    pub(crate) what: String,
    pub(crate) peer: PlayerId,
}

/// How a run ended.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) tracks: HashMap<PlayerId, Track>,
    pub(crate) seen: Vec<Seen>,
    pub(crate) closed: Option<String>,
    /// Unreliable broadcasts the session refused (no path yet, or closing): reported, not
    /// hidden.
    pub(crate) unreliable_refused: u64,
}

/// A reliable event carries its number first, so the receiver can check order and gaps.
fn event_payload(n: u64) -> Vec<u8> {
    let mut p = n.to_be_bytes().to_vec();
    p.extend_from_slice(b" game event");
    p
}

fn event_number(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(..8)?.try_into().ok()?))
}

impl Outcome {
    fn on_event(&mut self, start: Instant, e: Event) {
        let t_ms = start.elapsed().as_secs_f64() * 1000.0;
        match e {
            Event::Reliable { from, payload } => {
                let now = Instant::now();
                let tr = self.tracks.entry(from).or_default();
                tr.reliable += 1;
                if let Some(last) = tr.last_at {
                    tr.max_gap_ms = tr
                        .max_gap_ms
                        .max(now.duration_since(last).as_secs_f64() * 1000.0);
                }
                tr.last_at = Some(now);
                match event_number(&payload) {
                    Some(n) if n == tr.next => tr.next += 1,
                    Some(n) if n > tr.next => {
                        tr.missing += n - tr.next;
                        tr.next = n + 1;
                    }
                    _ => tr.out_of_order += 1,
                }
            }
            Event::PathChanged { peer, path } => self.seen.push(Seen {
                t_ms,
                what: format!("path {}", path.as_str()),
                peer,
            }),
            Event::PeerJoined(peer) => self.seen.push(Seen {
                t_ms,
                what: "joined".into(),
                peer,
            }),
            Event::PeerLeft(peer) => self.seen.push(Seen {
                t_ms,
                what: "left".into(),
                peer,
            }),
            Event::Closed { reason } => self.closed = Some(reason),
            Event::Unreliable { .. } | Event::FromNode { .. } => {}
        }
    }
}

/// Runs the plan on `session`. `snapshot` is called about four times a second and once at the
/// end with the session's peer statuses.
pub(crate) async fn drive(
    session: &mut Session,
    plan: &Plan,
    mut snapshot: impl FnMut(Vec<PeerStatus>),
) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome::default();
    let wait_until = start + plan.wait_max;
    while session.peer_ids().len() < plan.peers_min && out.closed.is_none() {
        let left = wait_until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, session.next_event()).await {
            Ok(Some(e)) => out.on_event(start, e),
            Ok(None) => out.closed = Some("session ended".into()),
            Err(_) => break,
        }
    }
    let send_until = Instant::now() + plan.send_for;
    let stop_at = send_until + plan.drain;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(plan.rate_hz.max(1)),
    ));
    let mut n: u64 = 0;
    let mut events_sent: u64 = 0;
    let mut last_snap = start;
    while out.closed.is_none() {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                if now >= stop_at { break; }
                if now < send_until {
                    n += 1;
                    let mut state = vec![0u8; 48];
                    state[..8].copy_from_slice(&n.to_be_bytes());
                    if session.broadcast_unreliable(&state).is_err() {
                        out.unreliable_refused += 1;
                    }
                    if n.is_multiple_of(3) && session.broadcast_reliable(&event_payload(events_sent)).is_ok() {
                        events_sent += 1;
                    }
                }
                if now.duration_since(last_snap) >= Duration::from_millis(250) {
                    last_snap = now;
                    snapshot(session.peers());
                }
            }
            ev = session.next_event() => match ev {
                Some(e) => out.on_event(start, e),
                None => out.closed = Some("session ended".into()),
            }
        }
    }
    snapshot(session.peers());
    out
}

/// Options of `volley bot`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct BotArgs {
    /// The node's HTTP address, e.g. `http://127.0.0.1:7350`.
    #[arg(long)]
    node: String,
    /// Room to join.
    #[arg(long, conflicts_with = "create_room")]
    room: Option<u64>,
    /// Create a room for this many players, print `room <id>` on stdout, and join it.
    #[arg(long)]
    create_room: Option<u32>,
    /// Device id to log in with (default: derived from the process id).
    #[arg(long)]
    device_id: Option<String>,
    /// Local UDP address for QUIC and punching.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: std::net::SocketAddr,
    /// Peers to wait for before sending.
    #[arg(long, default_value_t = 1)]
    peers: usize,
    /// Seconds of traffic after the peers are there.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Unreliable updates per second to each peer.
    #[arg(long, default_value_t = 30)]
    rate_hz: u32,
    /// Never punch; use the relay for every peer.
    #[arg(long)]
    relay_only: bool,
}

#[derive(Debug, Serialize)]
struct BotPeer {
    player_id: PlayerId,
    path: &'static str,
    rtt_ms_p50: Option<f64>,
    rtt_ms_p99: Option<f64>,
    loss: f64,
    reliable_sent: u64,
    reliable_received: u64,
    unreliable_sent: u64,
    unreliable_received: u64,
    path_changes: u64,
    direct_after_ms: Option<f64>,
    track: Track,
}

#[derive(Debug, Serialize)]
struct BotReport {
    me: PlayerId,
    room_id: u64,
    peers: Vec<BotPeer>,
    seen: Vec<Seen>,
    closed: Option<String>,
    unreliable_refused: u64,
}

/// `volley bot`: joins a room on a node and prints a JSON report when done.
pub(crate) async fn run(args: BotArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    if !(0.1..=3600.0).contains(&args.duration_s) || !(1..=240).contains(&args.rate_hz) {
        anyhow::bail!("--duration-s must be 0.1..=3600 and --rate-hz 1..=240");
    }
    let mut api = volley_client::Api::new(&args.node);
    let device = args
        .device_id
        .clone()
        .unwrap_or_else(|| format!("volley-bot-{}", std::process::id()));
    api.login_device(&device).await.context("login")?;
    let room_id = match (args.room, args.create_room) {
        (Some(r), _) => r,
        (None, Some(n)) => {
            let r = api
                .create_room(Some(n))
                .await
                .context("create room")?
                .room_id;
            println!("room {r}");
            r
        }
        (None, None) => anyhow::bail!("give --room ID or --create-room N"),
    };
    let client = volley_client::Client::new(volley_client::ClientConfig {
        bind_addr: args.bind,
        direct: !args.relay_only,
        ..Default::default()
    })?;
    let ticket = api
        .join(room_id, client.fingerprint())
        .await
        .context("join")?;
    let mut session = client.join(&ticket).await.context("connect")?;
    let plan = Plan {
        rate_hz: args.rate_hz,
        send_for: Duration::from_secs_f64(args.duration_s),
        drain: Duration::from_millis(700),
        peers_min: args.peers,
        wait_max: Duration::from_secs(15),
    };
    // Latest status per peer: a peer that leaves first disappears from later snapshots, and its
    // counters must not disappear from the report with it.
    let mut last = std::collections::BTreeMap::new();
    let out = drive(&mut session, &plan, |peers| {
        for s in peers {
            last.insert(s.player_id, s);
        }
    })
    .await;
    let me = session.me();
    session.leave().await;
    let peers = last
        .into_values()
        .map(|s| BotPeer {
            player_id: s.player_id,
            path: s.path.as_str(),
            rtt_ms_p50: s.rtt_ms_p50,
            rtt_ms_p99: s.rtt_ms_p99,
            loss: s.loss,
            reliable_sent: s.reliable_sent,
            reliable_received: s.reliable_received,
            unreliable_sent: s.unreliable_sent,
            unreliable_received: s.unreliable_received,
            path_changes: s.path_changes,
            direct_after_ms: s.direct_after_ms,
            track: out.tracks.get(&s.player_id).cloned().unwrap_or_default(),
        })
        .collect();
    let report = BotReport {
        me,
        room_id,
        peers,
        seen: out.seen,
        closed: out.closed,
        unreliable_refused: out.unreliable_refused,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
