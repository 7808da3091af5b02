//! The TUN link between two fresh namespaces (root only): UDP echo through `weak-4g`.
//! Without root/ip/nft the tests print `SKIPPED: <reason>`, or fail when `CI` is set.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use volley_testkit::netlab::{enter_namespace, lab_required, Lab};
use volley_testkit::tun_link::TunLink;
use volley_testkit::LinkProfile;

type AnyError = Box<dyn Error + Send + Sync>;

const ECHO_PORT: u16 = 7000;

fn bind_in(namespace: &str, addr: SocketAddr) -> Result<UdpSocket, AnyError> {
    let socket = enter_namespace(namespace, || std::net::UdpSocket::bind(addr))??;
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket)?)
}

/// Echoes every datagram back to its sender until the socket is dropped with its task.
fn spawn_echo(socket: UdpSocket) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        for _ in 0..100_000 {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let _ = socket.send_to(&buf[..len], from).await;
        }
    })
}

/// Sends `count` numbered pings `gap` apart, collects echoes until `linger` after the last send,
/// and returns the round-trip times of those that came back.
async fn ping(
    socket: &UdpSocket,
    to: SocketAddr,
    count: u32,
    gap: Duration,
    linger: Duration,
) -> Result<Vec<Duration>, AnyError> {
    let start = tokio::time::Instant::now();
    let mut sent_at = Vec::new();
    let mut rtts = Vec::new();
    let mut ticker = tokio::time::interval(gap);
    let deadline = start + gap * count + linger;
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            _ = ticker.tick(), if sent_at.len() < count as usize => {
                let seq = sent_at.len() as u32;
                socket.send_to(&seq.to_be_bytes(), to).await?;
                sent_at.push(start.elapsed());
            }
            received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)) => {
                let Ok(received) = received else { break };
                let (len, _) = received?;
                let Ok(bytes) = <[u8; 4]>::try_from(&buf[..len]) else { continue };
                if let Some(at) = sent_at.get(u32::from_be_bytes(bytes) as usize) {
                    rtts.push(start.elapsed() - *at);
                }
            }
        }
    }
    Ok(rtts)
}

#[test]
fn weak_4g_round_trip_through_tun() -> Result<(), AnyError> {
    if !lab_required("weak_4g_round_trip_through_tun")? {
        return Ok(());
    }
    let mut lab = Lab::new("vtktun")?;
    let (ns_a, ns_b) = (lab.add_namespace()?, lab.add_namespace()?);
    let weak = LinkProfile::by_name("weak-4g").ok_or("no weak-4g profile")?;
    let link = TunLink::start(&ns_a, &ns_b, weak, weak, 2024)?;
    let echo_addr = SocketAddr::from((link.addr_b(), ECHO_PORT));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _echo = spawn_echo(bind_in(&ns_b, echo_addr)?);
        let client = bind_in(&ns_a, SocketAddr::from((link.addr_a(), 0)))?;

        // 20 ms apart: wider than most jitter differences, so the no-reorder clamp rarely adds
        // delay and the median stays close to 2 x 45 ms.
        let n = 400;
        let mut rtts = ping(
            &client,
            echo_addr,
            n,
            Duration::from_millis(20),
            Duration::from_millis(500),
        )
        .await?;
        rtts.sort();
        let median = *rtts.get(rtts.len() / 2).ok_or("no echo came back")?;
        let p10 = rtts[rtts.len() / 10];
        let p90 = rtts[rtts.len() * 9 / 10];
        let loss = 1.0 - rtts.len() as f64 / f64::from(n);
        let expected_loss = 1.0 - (1.0 - weak.mean_loss()).powi(2);
        let stats = link.stats();
        println!(
            "weak-4g via TUN: rtt p10 {p10:?} p50 {median:?} p90 {p90:?}; round-trip loss {:.2} % \
             (profile {:.2} %); {stats:?}",
            loss * 100.0,
            expected_loss * 100.0
        );
        assert!(
            median >= Duration::from_millis(82) && median <= Duration::from_millis(105),
            "median rtt {median:?} not near 90 ms"
        );
        assert!(
            (loss - expected_loss).abs() < 0.04,
            "loss {loss} far from {expected_loss}"
        );

        // A dead path drops everything, and comes back.
        link.set_blackhole(true);
        let dead = ping(
            &client,
            echo_addr,
            10,
            Duration::from_millis(10),
            Duration::from_millis(300),
        )
        .await?;
        assert!(dead.is_empty(), "{} echoes crossed a blackhole", dead.len());
        link.set_profiles(LinkProfile::perfect(), LinkProfile::perfect())?;
        link.set_blackhole(false);
        let alive = ping(
            &client,
            echo_addr,
            10,
            Duration::from_millis(10),
            Duration::from_millis(300),
        )
        .await?;
        assert_eq!(alive.len(), 10);
        assert!(
            alive.iter().all(|rtt| *rtt < Duration::from_millis(40)),
            "{alive:?}"
        );
        Ok::<_, AnyError>(())
    })?;
    drop(link);
    drop(lab);
    Ok(())
}
