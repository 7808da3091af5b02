//! Benchmarks. Every number is printed next to a baseline measured in the same run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use volley_client::{Api, Client, ClientConfig, Event, Session};
use volley_net::endpoint::{self, TransportTuning};
use volley_net::tls::{Identity, Pin};
use volley_server::{Node, NodeConfig};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum BenchCmd {
    /// Small-message RTT and one-way rate: raw UDP, raw QUIC (quinn), Volley direct, Volley relayed.
    Transport(TransportArgs),
    /// Node CPU per relayed client packet with N clients at a fixed rate, node in its own process.
    Node(crate::bench_node::NodeArgs),
    /// Snapshot bytes per changed entity for the arena with bots, next to a naive encoding.
    Snapshot(crate::bench_sync::SnapshotArgs),
    /// Register and login requests/s through the API next to the Argon2id floor of this box.
    Auth(crate::bench_platform::AuthArgs),
    /// HTTP requests/s and latency through the node's router next to a bare axum server.
    Http(crate::bench_http::HttpArgs),
    /// Legitimate joins during junk and spoofed-Initial floods, next to a calm run.
    Shield(crate::bench_shield::ShieldArgs),
    /// Matchmaker time for 1k/10k/100k tickets next to a sort of the same tickets.
    Matchmaker(crate::bench_platform::MatchArgs),
    /// Chat fan-out through one node and across two nodes over NATS, next to raw floors.
    Chat(crate::bench_platform::ChatArgs),
    /// Ledger transfers/s with durable commits on SQLite and PostgreSQL, single and linked,
    /// next to the raw database's own INSERT commit rate.
    Ledger(crate::bench_platform::LedgerArgs),
    /// Leaderboard submit and rank ops/s, Volley's index vs Redis sorted sets, at 1M records.
    Leaderboard(crate::bench_platform::BoardArgs),
    /// Chunking speed next to raw BLAKE3; bytes an update moves per chunk size next to fixed
    /// blocks and the ideal.
    Content(crate::bench_content::ContentArgs),
    /// One origin and N peers with every upload capped: Volley's swarm next to aria2 and plain
    /// HTTP, as multiples of the fastest possible time (T_min), origin bytes and wire bytes.
    Swarm(crate::bench_swarm::SwarmArgs),
    /// Installing next to a copy of the previous version that no manifest describes
    /// (`fetch --reuse-from`) next to casync `extract --seed`: time and bytes fetched.
    Reuse(crate::bench_reuse::ReuseArgs),
    /// Withdrawing old versions and collecting their chunks on a node, next to copying the
    /// bytes it moves and the ideal disk footprint.
    Collect(crate::bench_collect::CollectArgs),
    /// Announces/s and latency: the node's tracker in memory and in Redis next to opentracker.
    Tracker(crate::bench_tracker::TrackerArgs),
    /// The baseline forwarder `node` runs in a child process.
    #[command(hide = true)]
    UdpForwarder,
}

#[derive(clap::Args, Debug)]
pub(crate) struct TransportArgs {
    /// Sequential round trips per transport (64-byte messages).
    #[arg(long, default_value_t = 20_000)]
    round_trips: u32,
    /// Seconds of one-way blasting per transport.
    #[arg(long, default_value_t = 2.0)]
    blast_s: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

const MSG_BYTES: usize = 64;

#[derive(Debug, Serialize)]
struct Row {
    transport: &'static str,
    rtt_us_p50: f64,
    rtt_us_p99: f64,
    one_way_msgs_per_s: f64,
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn summarize(name: &'static str, mut rtts: Vec<f64>, rate: f64) -> Row {
    rtts.sort_by(|a, b| a.total_cmp(b));
    Row {
        transport: name,
        rtt_us_p50: pct(&rtts, 0.5),
        rtt_us_p99: pct(&rtts, 0.99),
        one_way_msgs_per_s: rate,
    }
}

/// A transport under test: a sender side that can ping (and be echoed) or blast.
trait Pinger {
    async fn ping(&mut self, msg: &[u8]) -> anyhow::Result<()>;
    async fn blast(&mut self, msg: &[u8], until: Instant) -> anyhow::Result<u64>;
}

async fn measure(
    name: &'static str,
    p: &mut impl Pinger,
    received: Arc<AtomicU64>,
    args: &TransportArgs,
) -> anyhow::Result<Row> {
    let msg = [7u8; MSG_BYTES];
    for _ in 0..200 {
        p.ping(&msg).await?;
    }
    let mut rtts = Vec::with_capacity(args.round_trips as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..args.round_trips {
        let t = Instant::now();
        p.ping(&msg).await?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
        if Instant::now() > deadline {
            break;
        }
    }
    // One-way rate: what arrives, not what was offered.
    let before = received.load(Ordering::Relaxed);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(args.blast_s);
    p.blast(&msg, until).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = received.load(Ordering::Relaxed) - before;
    let rate = got as f64 / args.blast_s;
    Ok(summarize(name, rtts, rate))
}

/// Raw UDP on loopback: the physical limit of this box for this pattern.
struct Udp {
    sock: tokio::net::UdpSocket,
    buf: Vec<u8>,
}

impl Pinger for Udp {
    async fn ping(&mut self, msg: &[u8]) -> anyhow::Result<()> {
        self.sock.send(msg).await?;
        tokio::time::timeout(Duration::from_secs(1), self.sock.recv(&mut self.buf))
            .await
            .context("udp echo timed out")??;
        Ok(())
    }
    async fn blast(&mut self, msg: &[u8], until: Instant) -> anyhow::Result<u64> {
        let mut n = 0;
        while Instant::now() < until {
            for _ in 0..64 {
                // Tag blast packets so the echo side counts them instead of answering.
                let _ = self.sock.send(&[&[0u8][..], &msg[1..]].concat()).await;
                n += 1;
            }
        }
        Ok(n)
    }
}

async fn udp_pair(received: Arc<AtomicU64>) -> anyhow::Result<Udp> {
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    client.connect(server.local_addr()?).await?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            if buf.first() == Some(&0) {
                received.fetch_add(1, Ordering::Relaxed);
            } else {
                let _ = server.send_to(&buf[..n], from).await;
            }
        }
    });
    Ok(Udp {
        sock: client,
        buf: vec![0u8; 2048],
    })
}

/// Raw quinn datagrams between two endpoints: the QUIC baseline Volley is built on.
struct Quic {
    conn: quinn::Connection,
}

impl Pinger for Quic {
    async fn ping(&mut self, msg: &[u8]) -> anyhow::Result<()> {
        self.conn.send_datagram(msg.to_vec().into())?;
        tokio::time::timeout(Duration::from_secs(1), self.conn.read_datagram())
            .await
            .context("quic echo timed out")??;
        Ok(())
    }
    async fn blast(&mut self, msg: &[u8], until: Instant) -> anyhow::Result<u64> {
        let mut n = 0;
        let tagged: bytes::Bytes = [&[0u8][..], &msg[1..]].concat().into();
        while Instant::now() < until {
            for _ in 0..64 {
                // send_datagram_wait applies backpressure instead of dropping the oldest.
                self.conn.send_datagram_wait(tagged.clone()).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

async fn quic_pair(received: Arc<AtomicU64>) -> anyhow::Result<Quic> {
    let server_id = Identity::generate("bench-server")?;
    let client_id = Identity::generate("bench-client")?;
    let sc = endpoint::server_config(&server_id, Pin::AnyVerifiedKey, &TransportTuning::direct())?;
    let server = quinn::Endpoint::server(sc, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    tokio::spawn(async move {
        if let Some(inc) = server.accept().await {
            if let Ok(conn) = inc.await {
                while let Ok(d) = conn.read_datagram().await {
                    if d.first() == Some(&0) {
                        received.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let _ = conn.send_datagram(d);
                    }
                }
            }
        }
    });
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(endpoint::client_config(
        &client_id,
        Pin::One(server_id.fingerprint),
        &TransportTuning::direct(),
    )?);
    let conn = client.connect(addr, "bench")?.await?;
    Ok(Quic { conn })
}

/// A Volley session pair through a node; `direct` picks the path.
struct Volley {
    a: Session,
    peer: u64,
}

impl Pinger for Volley {
    async fn ping(&mut self, msg: &[u8]) -> anyhow::Result<()> {
        self.a.send_unreliable(self.peer, msg.to_vec())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, self.a.next_event()).await {
                Ok(Some(Event::Unreliable { .. })) => return Ok(()),
                Ok(Some(Event::Closed { reason })) => bail!("session closed: {reason}"),
                Ok(Some(_)) => {}
                Ok(None) => bail!("session ended"),
                Err(_) => bail!("volley echo timed out"),
            }
        }
    }
    async fn blast(&mut self, msg: &[u8], until: Instant) -> anyhow::Result<u64> {
        let mut n = 0;
        let tagged = [&[0u8][..], &msg[1..]].concat();
        while Instant::now() < until {
            for _ in 0..64 {
                let _ = self.a.send_unreliable(self.peer, tagged.clone());
                n += 1;
            }
            tokio::task::yield_now().await;
        }
        Ok(n)
    }
}

async fn volley_pair(
    base: &str,
    direct: bool,
    received: Arc<AtomicU64>,
    tag: &str,
) -> anyhow::Result<Volley> {
    let mut host = Api::new(base);
    host.login_device(&format!("bench-{tag}-a-{}", std::process::id()))
        .await?;
    let room = host.create_room(Some(2)).await?.room_id;
    let cfg = ClientConfig {
        bind_addr: "127.0.0.1:0".parse()?,
        direct,
        ..ClientConfig::default()
    };
    let mut sessions = Vec::new();
    for who in ["a", "b"] {
        let mut api = Api::new(base);
        api.login_device(&format!("bench-{tag}-{who}-{}", std::process::id()))
            .await?;
        let c = Client::new(cfg.clone())?;
        let t = api.join(room, c.fingerprint()).await?;
        sessions.push(c.join(&t).await?);
    }
    let mut b = sessions.pop().context("b")?;
    let a = sessions.pop().context("a")?;
    let (ida, idb) = (a.me(), b.me());
    let want = if direct {
        volley_proto::msg::PathKind::Direct
    } else {
        volley_proto::msg::PathKind::Relay
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a
        .peers()
        .iter()
        .any(|p| p.player_id == idb && p.path == want)
        || !b
            .peers()
            .iter()
            .any(|p| p.player_id == ida && p.path == want)
    {
        if Instant::now() > deadline {
            bail!("path {} did not form", want.as_str());
        }
        while b.try_event().is_some() {}
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::spawn(async move {
        while let Some(e) = b.next_event().await {
            if let Event::Unreliable { from, payload } = e {
                if payload.first() == Some(&0) {
                    received.fetch_add(1, Ordering::Relaxed);
                } else {
                    let _ = b.send_unreliable(from, payload);
                }
            }
        }
    });
    Ok(Volley { a, peer: idb })
}

async fn transport(args: TransportArgs) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let node = Node::start(NodeConfig {
        data_dir: data.path().to_owned(),
        http_addr: "127.0.0.1:0".parse()?,
        quic_addr: "127.0.0.1:0".parse()?,
        logins_per_ip_per_s: 10_000.0,
        logins_per_ip_burst: 10_000.0,
        ..NodeConfig::default()
    })
    .await?;
    let base = format!("http://{}", node.http_addr);
    let mut rows = Vec::new();
    let r = Arc::new(AtomicU64::new(0));
    rows.push(measure("raw UDP", &mut udp_pair(r.clone()).await?, r, &args).await?);
    let r = Arc::new(AtomicU64::new(0));
    rows.push(measure("raw quinn", &mut quic_pair(r.clone()).await?, r, &args).await?);
    let r = Arc::new(AtomicU64::new(0));
    rows.push(
        measure(
            "volley direct",
            &mut volley_pair(&base, true, r.clone(), "d").await?,
            r,
            &args,
        )
        .await?,
    );
    let r = Arc::new(AtomicU64::new(0));
    rows.push(
        measure(
            "volley relay",
            &mut volley_pair(&base, false, r.clone(), "r").await?,
            r,
            &args,
        )
        .await?,
    );
    node.shutdown().await;
    let quinn = rows.get(1).map_or(f64::NAN, |r| r.rtt_us_p50);
    // Raw UDP here is one syscall per message, while QUIC packs several datagrams per packet:
    // for rates the QUIC baseline is the fair peer; raw UDP is the RTT floor.
    let quinn_rate = rows.get(1).map_or(f64::NAN, |r| r.one_way_msgs_per_s);
    let direct = rows.get(2).map_or(f64::NAN, |r| r.rtt_us_p50);
    let relay_p50 = rows.get(3).map_or(f64::NAN, |r| r.rtt_us_p50);
    let relay_p99 = rows.get(3).map_or(f64::NAN, |r| r.rtt_us_p99);
    let direct_p99 = rows.get(2).map_or(f64::NAN, |r| r.rtt_us_p99);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "message_bytes": MSG_BYTES,
                "round_trips": args.round_trips,
                "rows": rows,
                "direct_minus_quinn_p50_us": direct - quinn,
                "relay_added_per_traversal_p50_us": (relay_p50 - direct) / 2.0,
                "relay_added_per_traversal_p99_us": (relay_p99 - direct_p99) / 2.0,
            })
        );
        return Ok(());
    }
    println!(
        "{MSG_BYTES}-byte messages on loopback, {} round trips each, {} s one-way blast",
        args.round_trips, args.blast_s
    );
    println!(
        "{:<14} {:>11} {:>11} {:>14} {:>14} {:>10}",
        "transport", "rtt p50 µs", "rtt p99 µs", "p50 - quinn", "one-way msg/s", "÷ quinn"
    );
    for r in &rows {
        println!(
            "{:<14} {:>11.1} {:>11.1} {:>+14.1} {:>14.0} {:>10.3}",
            r.transport,
            r.rtt_us_p50,
            r.rtt_us_p99,
            r.rtt_us_p50 - quinn,
            r.one_way_msgs_per_s,
            r.one_way_msgs_per_s / quinn_rate
        );
    }
    println!(
        "relay adds per traversal (a round trip crosses the relay twice): p50 {:.1} µs, p99 {:.1} µs",
        (relay_p50 - direct) / 2.0,
        (relay_p99 - direct_p99) / 2.0
    );
    Ok(())
}

pub(crate) async fn run(which: BenchCmd) -> anyhow::Result<()> {
    match which {
        BenchCmd::Transport(args) => transport(args).await,
        BenchCmd::Node(args) => crate::bench_node::run(args).await,
        BenchCmd::Snapshot(args) => crate::bench_sync::run(args),
        BenchCmd::Auth(args) => crate::bench_platform::auth(args).await,
        BenchCmd::Http(args) => crate::bench_http::run(args).await,
        BenchCmd::Shield(args) => crate::bench_shield::run(args).await,
        BenchCmd::Matchmaker(args) => crate::bench_platform::matchmaker(args),
        BenchCmd::Chat(args) => crate::bench_platform::chat(args).await,
        BenchCmd::Ledger(args) => crate::bench_platform::ledger(args).await,
        BenchCmd::Leaderboard(args) => crate::bench_platform::leaderboard(args).await,
        BenchCmd::Content(args) => crate::bench_content::run(args),
        BenchCmd::Swarm(args) => crate::bench_swarm::run(args).await,
        BenchCmd::Reuse(args) => crate::bench_reuse::run(args).await,
        BenchCmd::Collect(args) => crate::bench_collect::run(args).await,
        BenchCmd::Tracker(args) => crate::bench_tracker::run(args).await,
        BenchCmd::UdpForwarder => crate::bench_node::udp_forwarder().await,
    }
}
