//! The NAT lab (root only): UDP hole punching across every pair of NAT kinds.
//!
//! For each ordered pair of NAT kinds, a fresh lab with a public rendezvous server and two hosts
//! behind NATs: each host registers with the server, learns the reflexive address the server saw
//! for the other, then both punch at once. The outcome must match the matrix in the netlab notes.
//! Without root/ip/nft the tests print `SKIPPED: <reason>`, or fail when `CI` is set.

use std::collections::HashMap;
use std::error::Error;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use volley_testkit::netlab::{lab_required, HostHandle, Lab, NatKind};

type AnyError = Box<dyn Error + Send + Sync>;

const SERVER_PORT: u16 = 3478;
const HOST_A_PORT: u16 = 41_000;
const HOST_B_PORT: u16 = 42_000;
const REGISTER_INTERVAL: Duration = Duration::from_millis(100);
const REGISTER_TRIES_MAX: u32 = 30;
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
const PUNCH_WINDOW: Duration = Duration::from_secs(2);
/// Probes a side keeps sending after its first receive, so the peer's NAT sees traffic too.
const PROBES_AFTER_RECEIVE: u32 = 5;

/// Binds a UDP socket to an exact address inside the host's namespace. Exact, not 0.0.0.0: a
/// wildcard socket on a multi-homed namespace may answer from the wrong address.
fn bind_in(host: &HostHandle, port: u16) -> Result<UdpSocket, AnyError> {
    let addr = SocketAddrV4::new(host.ip(), port);
    let socket = host.enter(|| std::net::UdpSocket::bind(addr))??;
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket)?)
}

/// The rendezvous server: records the source address of each `register NAME` and, once both
/// names are known, answers each registration with the other's address.
async fn rendezvous_server(socket: UdpSocket) -> Result<HashMap<String, SocketAddr>, AnyError> {
    let mut seen: HashMap<String, SocketAddr> = HashMap::new();
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + REGISTER_INTERVAL * (REGISTER_TRIES_MAX + 5);
    let mut answered = HashMap::new();
    while answered.len() < 2 {
        let (len, from) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await??;
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        let Some(name) = text.strip_prefix("register ") else {
            continue;
        };
        seen.insert(name.to_owned(), from);
        let other = if name == "a" { "b" } else { "a" };
        if let Some(peer) = seen.get(other) {
            socket
                .send_to(format!("peer {peer}").as_bytes(), from)
                .await?;
            answered.insert(name.to_owned(), ());
        }
    }
    // Linger briefly so a lost answer to a retry still gets a reply.
    let linger = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Ok((len, from))) =
        tokio::time::timeout_at(linger, socket.recv_from(&mut buf)).await
    {
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        if let Some(name) = text.strip_prefix("register ") {
            let other = if name == "a" { "b" } else { "a" };
            if let Some(peer) = seen.get(other) {
                socket
                    .send_to(format!("peer {peer}").as_bytes(), from)
                    .await?;
            }
        }
    }
    Ok(seen)
}

/// Registers with the server until it names the peer's reflexive address.
async fn register(
    socket: &UdpSocket,
    name: &str,
    server: SocketAddr,
) -> Result<SocketAddr, AnyError> {
    let mut buf = [0u8; 512];
    for _ in 0..REGISTER_TRIES_MAX {
        socket
            .send_to(format!("register {name}").as_bytes(), server)
            .await?;
        let Ok(received) =
            tokio::time::timeout(REGISTER_INTERVAL, socket.recv_from(&mut buf)).await
        else {
            continue;
        };
        let (len, from) = received?;
        if from != server {
            continue;
        }
        if let Some(peer) = std::str::from_utf8(&buf[..len])?.strip_prefix("peer ") {
            return Ok(peer.parse()?);
        }
    }
    Err(format!("{name}: no answer from the rendezvous server").into())
}

/// What one side saw while punching.
#[derive(Debug, Clone, Copy)]
struct PunchSide {
    /// Time from the start of punching to the first packet from the peer.
    first_receive: Option<Duration>,
    /// Where that packet came from (may differ from the reflexive address behind symmetric NAT).
    peer_seen: Option<SocketAddr>,
}

/// Sends probes every 20 ms for up to 2 s to the peer's reflexive address, switches to the
/// source it actually sees once something arrives, and sends a few more after that.
async fn punch(
    socket: &UdpSocket,
    peer: SocketAddr,
    server: SocketAddr,
) -> Result<PunchSide, AnyError> {
    let start = tokio::time::Instant::now();
    let end = start + PUNCH_WINDOW;
    let mut target = peer;
    let mut side = PunchSide {
        first_receive: None,
        peer_seen: None,
    };
    let mut sent_after_receive = 0;
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    let mut buf = [0u8; 512];
    while tokio::time::Instant::now() < end {
        tokio::select! {
            _ = ticker.tick() => {
                if side.first_receive.is_some() {
                    if sent_after_receive >= PROBES_AFTER_RECEIVE {
                        break;
                    }
                    sent_after_receive += 1;
                }
                socket.send_to(b"probe", target).await?;
            }
            received = tokio::time::timeout_at(end, socket.recv_from(&mut buf)) => {
                let Ok(received) = received else { break };
                let (_, from) = received?;
                if from == server {
                    continue; // a late rendezvous answer
                }
                if side.first_receive.is_none() {
                    side.first_receive = Some(start.elapsed());
                    side.peer_seen = Some(from);
                    // Answer the source we actually see: behind a symmetric NAT it is not the
                    // address the server reported.
                    target = from;
                    socket.send_to(b"probe", target).await?;
                }
            }
        }
    }
    Ok(side)
}

#[derive(Debug)]
struct PairOutcome {
    a: NatKind,
    b: NatKind,
    reflexive_a: SocketAddr,
    reflexive_b: SocketAddr,
    side_a: PunchSide,
    side_b: PunchSide,
}

impl PairOutcome {
    fn direct(&self) -> bool {
        self.side_a.first_receive.is_some() && self.side_b.first_receive.is_some()
    }

    /// Time until both sides had heard from each other.
    fn time_to_direct(&self) -> Option<Duration> {
        Some(self.side_a.first_receive?.max(self.side_b.first_receive?))
    }
}

fn expected_direct(a: NatKind, b: NatKind) -> bool {
    use NatKind::*;
    !matches!(
        (a, b),
        (Symmetric, PortRestricted) | (PortRestricted, Symmetric) | (Symmetric, Symmetric)
    )
}

fn run_pair(a_kind: NatKind, b_kind: NatKind) -> Result<PairOutcome, AnyError> {
    let mut lab = Lab::new("vtknat")?;
    let server = lab.add_public_host()?;
    let host_a = lab.add_nat_host(a_kind)?;
    let host_b = lab.add_nat_host(b_kind)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let server_sock = bind_in(&server, SERVER_PORT)?;
        let sock_a = bind_in(&host_a, HOST_A_PORT)?;
        let sock_b = bind_in(&host_b, HOST_B_PORT)?;
        let server_addr = SocketAddr::from((server.ip(), SERVER_PORT));

        let server_task = tokio::spawn(rendezvous_server(server_sock));
        let (peer_of_a, peer_of_b) = tokio::try_join!(
            register(&sock_a, "a", server_addr),
            register(&sock_b, "b", server_addr)
        )?;
        let seen = server_task.await??;
        // The server saw each host's NAT's public address, not the private one.
        assert_eq!(peer_of_b.ip(), host_a.public_ip());
        assert_eq!(peer_of_a.ip(), host_b.public_ip());
        assert_eq!(seen.get("a"), Some(&peer_of_b));

        let (side_a, side_b) = tokio::try_join!(
            punch(&sock_a, peer_of_a, server_addr),
            punch(&sock_b, peer_of_b, server_addr)
        )?;
        Ok::<_, AnyError>(PairOutcome {
            a: a_kind,
            b: b_kind,
            reflexive_a: peer_of_b,
            reflexive_b: peer_of_a,
            side_a,
            side_b,
        })
    })?;
    drop(lab);
    Ok(outcome)
}

#[test]
fn nat_punch_matrix() -> Result<(), AnyError> {
    if !lab_required("nat_punch_matrix")? {
        return Ok(());
    }
    let started = Instant::now();
    let pairs: Vec<(NatKind, NatKind)> = NatKind::TRANSLATING
        .iter()
        .flat_map(|a| NatKind::TRANSLATING.iter().map(move |b| (*a, *b)))
        .collect();
    // Every pair in its own lab and thread, at the same time: also checks that labs in one
    // process do not collide.
    let outcomes: Vec<Result<PairOutcome, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = pairs
            .iter()
            .map(|&(a, b)| {
                scope.spawn(move || run_pair(a, b).map_err(|e| format!("{a:?} x {b:?}: {e}")))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("pair thread panicked".into()))
            })
            .collect()
    });

    let mut failures = Vec::new();
    println!("\nNAT punch matrix ({:?} total):", started.elapsed());
    println!(
        "{:<16} {:<16} {:<8} {:<10} {:<22} {:<22} expected",
        "A", "B", "direct", "time", "A reflexive", "B reflexive"
    );
    for outcome in outcomes {
        let outcome = outcome?;
        let expected = expected_direct(outcome.a, outcome.b);
        let time = outcome.time_to_direct().map_or_else(
            || "-".to_owned(),
            |t| format!("{:.1} ms", t.as_secs_f64() * 1e3),
        );
        println!(
            "{:<16} {:<16} {:<8} {:<10} {:<22} {:<22} {}",
            outcome.a.name(),
            outcome.b.name(),
            outcome.direct(),
            time,
            outcome.reflexive_a.to_string(),
            outcome.reflexive_b.to_string(),
            if expected { "direct" } else { "relay" }
        );
        if outcome.direct() != expected {
            failures.push(format!("{outcome:?}"));
        }
    }
    assert!(failures.is_empty(), "unexpected outcomes: {failures:#?}");
    Ok(())
}

#[test]
fn nat_kinds_map_ports_as_documented() -> Result<(), AnyError> {
    if !lab_required("nat_kinds_map_ports_as_documented")? {
        return Ok(());
    }
    let mut lab = Lab::new("vtkmap")?;
    let servers = [lab.add_public_host()?, lab.add_public_host()?];
    let hosts = [
        lab.add_nat_host(NatKind::FullCone)?,
        lab.add_nat_host(NatKind::PortRestricted)?,
        lab.add_nat_host(NatKind::Symmetric)?,
        lab.add_nat_host(NatKind::None)?,
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server_socks = [
            bind_in(&servers[0], SERVER_PORT)?,
            bind_in(&servers[1], SERVER_PORT)?,
        ];
        for host in &hosts {
            let sock = bind_in(host, HOST_A_PORT)?;
            let mut mapped = Vec::new();
            for server in &server_socks {
                sock.send_to(b"hello", server.local_addr()?).await?;
                let mut buf = [0u8; 64];
                let (_, from) =
                    tokio::time::timeout(Duration::from_secs(2), server.recv_from(&mut buf))
                        .await??;
                mapped.push(from);
            }
            assert!(mapped.iter().all(|m| m.ip() == host.public_ip()));
            let same_port = mapped[0].port() == mapped[1].port();
            match host.nat() {
                // Endpoint-independent mapping with the port preserved.
                NatKind::FullCone | NatKind::PortRestricted | NatKind::None => {
                    assert!(
                        same_port && mapped[0].port() == HOST_A_PORT,
                        "{:?}: {mapped:?}",
                        host.nat()
                    );
                }
                // Endpoint-dependent mapping: one public port per remote.
                NatKind::Symmetric => assert!(!same_port, "symmetric kept its port: {mapped:?}"),
            }
        }
        Ok::<_, AnyError>(())
    })?;

    let name = hosts[0].namespace().to_owned();
    let addrs = hosts[0].run("ip", &["-4", "-o", "addr"])?;
    assert!(addrs.contains(&hosts[0].ip().to_string()), "{addrs}");
    drop(lab);
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains(&name),
        "namespace {name} survived the lab"
    );
    Ok(())
}

#[test]
fn stale_namespaces_of_dead_processes_are_removed() -> Result<(), AnyError> {
    if !lab_required("stale_namespaces_of_dead_processes_are_removed")? {
        return Ok(());
    }
    // A pid far above any live process on a test machine stands for a killed run.
    let dead_pid = 4_194_000;
    if std::path::Path::new(&format!("/proc/{dead_pid}")).exists() {
        eprintln!("pid {dead_pid} is alive; cannot stage a stale namespace");
        return Ok(());
    }
    // Our own pid in the tail keeps parallel runs of this test from staging the same name.
    let stale = format!("vtkstale-{dead_pid}-{}-inet", std::process::id());
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &stale])
        .status()?;
    assert!(status.success());
    // A parallel run may remove ours first, so only the end state is asserted.
    let removed = Lab::cleanup_stale("vtkstale")?;
    println!("cleanup_stale removed {removed} namespace(s)");
    assert!(!std::path::Path::new("/run/netns").join(&stale).exists());
    Ok(())
}
