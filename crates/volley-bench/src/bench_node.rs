//! `volley-bench node`: node CPU per relayed client packet, the node in its own process, next to
//! a minimal userspace UDP forwarder (no crypto, no rooms) handling the same packet rate in the
//! same run.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use volley_client::{Api, Client, ClientConfig, Session};

/// Players per room in the benchmark (every packet goes to one peer in the room).
const ROOM_PLAYERS: usize = 8;
const PACKET_BYTES: usize = 64;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11).context("utime")?.parse()?;
    let stime: f64 = f.get(12).context("stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / hz.max(1.0))
}

fn spawn_child(exe: &std::path::Path, args: &[&str]) -> anyhow::Result<(Killed, String)> {
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().context("stdout")?;
    let child = Killed(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    Ok((child, line))
}

async fn metric(base: &str, name: &str) -> anyhow::Result<u64> {
    let text = reqwest_get(&format!("{base}/metrics")).await?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .context("metric missing")
}

async fn reqwest_get(url: &str) -> anyhow::Result<String> {
    // The SDK's HTTP client is reqwest; reuse it rather than pulling another.
    Ok(volley_client::Api::raw_get(url).await?)
}

#[derive(Debug, Serialize)]
struct NodeRow {
    clients: usize,
    hz: u32,
    packets: u64,
    node_cpu_us_per_packet: f64,
    forwarder_cpu_us_per_packet: f64,
    ratio: f64,
    node_cpu_share_of_one_core: f64,
}

async fn volley_run(clients: usize, hz: u32, secs: f64) -> anyhow::Result<(u64, f64)> {
    let data = tempfile::tempdir()?;
    let dir = data.path().to_string_lossy().into_owned();
    let (child, line) = spawn_child(
        &crate::volley_exe()?,
        &[
            "serve",
            "--data-dir",
            &dir,
            "--http-addr",
            "127.0.0.1:0",
            "--quic-addr",
            "127.0.0.1:0",
            "--connects-per-ip-burst",
            "100000",
            // One owner makes every room of the run.
            "--rooms-per-player-max",
            "100000",
            "--connects-per-ip-per-s",
            "100000",
            "--logins-per-ip-per-s",
            "100000",
            "--logins-per-ip-burst",
            "100000",
        ],
    )?;
    let http = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .context("node did not print its address")?
        .to_owned();
    let pid = child.0.id();
    let mut sessions: Vec<Session> = Vec::with_capacity(clients);
    let mut owner = Api::new(&http);
    owner
        .login_device(&format!("bench-node-owner-{}", std::process::id()))
        .await?;
    let mut room = 0;
    for i in 0..clients {
        if i % ROOM_PLAYERS == 0 {
            room = owner.create_room(Some(ROOM_PLAYERS as u32)).await?.room_id;
        }
        let mut api = Api::new(&http);
        api.login_device(&format!("bench-node-{i}-{}", std::process::id()))
            .await?;
        let c = Client::new(ClientConfig {
            bind_addr: "127.0.0.1:0".parse()?,
            direct: false,
            ..ClientConfig::default()
        })?;
        let t = api.join(room, c.fingerprint()).await?;
        sessions.push(c.join(&t).await?);
    }
    // Each player sends to the next one in its room.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sessions
        .iter()
        .any(|s| s.peer_ids().len() + 1 < ROOM_PLAYERS.min(clients))
    {
        if Instant::now() > deadline {
            bail!("rooms did not fill");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = Arc::new(AtomicU64::new(0));
    let mut targets = Vec::new();
    for s in &sessions {
        let peers = s.peer_ids();
        targets.push(
            *peers
                .iter()
                .find(|p| **p > s.me())
                .or(peers.first())
                .context("peer")?,
        );
    }
    let mut drains = Vec::new();
    let shared: Vec<Arc<tokio::sync::Mutex<Session>>> = sessions
        .into_iter()
        .map(|s| Arc::new(tokio::sync::Mutex::new(s)))
        .collect();
    for s in &shared {
        let s = s.clone();
        let r = received.clone();
        drains.push(tokio::spawn(async move {
            loop {
                let mut g = s.lock().await;
                while let Some(e) = g.try_event() {
                    if matches!(e, volley_client::Event::Unreliable { .. }) {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(g);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let payload = vec![1u8; PACKET_BYTES];
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(hz)));
    let warmup_end = Instant::now() + Duration::from_secs(1);
    let end = warmup_end + Duration::from_secs_f64(secs);
    let mut start_cpu = None;
    let mut start_pkts = 0;
    while Instant::now() < end {
        tick.tick().await;
        for (s, to) in shared.iter().zip(&targets) {
            let _ = s.lock().await.send_unreliable(*to, payload.clone());
        }
        if start_cpu.is_none() && Instant::now() >= warmup_end {
            start_cpu = Some(cpu_seconds(pid)?);
            start_pkts = metric(&http, "volley_relay_datagrams_total").await?;
        }
    }
    let cpu = cpu_seconds(pid)? - start_cpu.context("warm-up never ended")?;
    let pkts = metric(&http, "volley_relay_datagrams_total").await? - start_pkts;
    for d in drains {
        d.abort();
    }
    drop(child);
    Ok((pkts, cpu))
}

async fn forwarder_run(clients: usize, hz: u32, secs: f64) -> anyhow::Result<(u64, f64)> {
    let (child, line) = spawn_child(&std::env::current_exe()?, &["udp-forwarder"])?;
    let addr: std::net::SocketAddr = line.trim().parse().context("forwarder address")?;
    let pid = child.0.id();
    let mut socks = Vec::new();
    for _ in 0..clients {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        socks.push(Arc::new(s));
    }
    let ports: Vec<u16> = socks
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    for s in &socks {
        let s = s.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while s.recv(&mut buf).await.is_ok() {}
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(hz)));
    let warmup_end = Instant::now() + Duration::from_secs(1);
    let end = warmup_end + Duration::from_secs_f64(secs);
    let mut start_cpu = None;
    let mut sent = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        for (i, s) in socks.iter().enumerate() {
            let to = ports[(i + 1) % ports.len()];
            let mut pkt = vec![1u8; PACKET_BYTES];
            pkt[..2].copy_from_slice(&to.to_be_bytes());
            let _ = s.send_to(&pkt, addr).await;
            if start_cpu.is_some() {
                sent += 1;
            }
        }
        if start_cpu.is_none() && Instant::now() >= warmup_end {
            start_cpu = Some(cpu_seconds(pid)?);
        }
    }
    let cpu = cpu_seconds(pid)? - start_cpu.context("warm-up never ended")?;
    drop(child);
    Ok((sent, cpu))
}

/// `volley-bench udp-forwarder`: the baseline. Forwards each datagram to the loopback port in its
/// first two bytes. Prints its address, runs until killed.
pub(crate) async fn udp_forwarder() -> anyhow::Result<()> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    println!("{}", sock.local_addr()?);
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = sock.recv_from(&mut buf).await?;
        if n >= 2 {
            let port = u16::from_be_bytes([buf[0], buf[1]]);
            let _ = sock
                .send_to(
                    &buf[..n],
                    std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                )
                .await;
        }
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct NodeArgs {
    /// Client counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    pub(crate) clients: Vec<usize>,
    /// Packets per second each client sends.
    #[arg(long, default_value_t = 60)]
    pub(crate) hz: u32,
    /// Seconds measured per client count.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) duration_s: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn run(args: NodeArgs) -> anyhow::Result<()> {
    if args.hz == 0 || args.hz > 1000 || !(0.5..=120.0).contains(&args.duration_s) {
        bail!("--hz must be 1..=1000 and --duration-s 0.5..=120");
    }
    let mut rows = Vec::new();
    for &n in &args.clients {
        if !(2..=1024).contains(&n) {
            bail!("client counts must be 2..=1024");
        }
        let (pkts, cpu) = volley_run(n, args.hz, args.duration_s).await?;
        let (fpkts, fcpu) = forwarder_run(n, args.hz, args.duration_s).await?;
        let node_us = cpu * 1e6 / pkts.max(1) as f64;
        let fwd_us = fcpu * 1e6 / fpkts.max(1) as f64;
        rows.push(NodeRow {
            clients: n,
            hz: args.hz,
            packets: pkts,
            node_cpu_us_per_packet: node_us,
            forwarder_cpu_us_per_packet: fwd_us,
            ratio: node_us / fwd_us,
            node_cpu_share_of_one_core: cpu / args.duration_s,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("node CPU per relayed client packet ({PACKET_BYTES} B, rooms of {ROOM_PLAYERS}, relay for every packet)");
    println!(
        "{:>8} {:>5} {:>9} {:>16} {:>18} {:>7} {:>12}",
        "clients", "hz", "packets", "node µs/packet", "forwarder µs/pkt", "ratio", "node cores"
    );
    for r in &rows {
        println!(
            "{:>8} {:>5} {:>9} {:>16.2} {:>18.2} {:>7.1} {:>12.2}",
            r.clients,
            r.hz,
            r.packets,
            r.node_cpu_us_per_packet,
            r.forwarder_cpu_us_per_packet,
            r.ratio,
            r.node_cpu_share_of_one_core
        );
    }
    Ok(())
}
