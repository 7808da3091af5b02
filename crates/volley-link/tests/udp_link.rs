//! The UDP link emulator with real sockets on 127.0.0.1: an echo server behind it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use volley_link::udp_link::UdpLinkEmulator;
use volley_link::LinkProfile;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// An echo server that prefixes each reply with the source address it saw, bounded to a fixed
/// number of packets so it cannot outlive a broken test by much.
async fn echo_server() -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        for _ in 0..100_000 {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let mut reply = format!("{from}|").into_bytes();
            reply.extend_from_slice(&buf[..len]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    Ok((addr, task))
}

fn one_way(delay_ms: f64) -> LinkProfile {
    LinkProfile {
        delay_ms,
        ..LinkProfile::perfect()
    }
}

/// Sends `count` numbered pings `gap` apart and collects replies until `linger` after the last
/// send. Returns the round-trip times of the pings that came back.
async fn ping(
    client: &UdpSocket,
    to: SocketAddr,
    count: u32,
    gap: Duration,
    linger: Duration,
) -> std::io::Result<Vec<Duration>> {
    let start = Instant::now();
    let mut sent_at = Vec::new();
    let mut rtts = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut next_send = tokio::time::Instant::now();
    let mut seq = 0u32;
    let deadline = tokio::time::Instant::now() + gap * count + linger;
    loop {
        let sleep_until = if seq < count { next_send } else { deadline };
        tokio::select! {
            _ = tokio::time::sleep_until(sleep_until) => {
                if seq >= count {
                    break;
                }
                client.send_to(&seq.to_be_bytes(), to).await?;
                sent_at.push(start.elapsed());
                seq += 1;
                next_send += gap;
            }
            received = client.recv_from(&mut buf) => {
                let (len, _) = received?;
                // Reply is "addr|" followed by the 4-byte sequence number.
                let Some(bar) = buf[..len].iter().position(|b| *b == b'|') else { continue };
                let Ok(bytes) = <[u8; 4]>::try_from(&buf[bar + 1..len]) else { continue };
                if let Some(at) = sent_at.get(u32::from_be_bytes(bytes) as usize) {
                    rtts.push(start.elapsed() - *at);
                }
            }
        }
    }
    Ok(rtts)
}

#[tokio::test]
async fn delay_is_applied_in_both_directions() -> TestResult {
    let (server, _echo) = echo_server().await?;
    let link = UdpLinkEmulator::start(
        "127.0.0.1:0".parse()?,
        server,
        one_way(20.0),
        one_way(30.0),
        1,
    )
    .await?;
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    let rtts = ping(
        &client,
        link.local_addr(),
        20,
        Duration::from_millis(10),
        Duration::from_millis(300),
    )
    .await?;
    assert_eq!(rtts.len(), 20, "a lossless link lost packets");
    for rtt in &rtts {
        assert!(
            *rtt >= Duration::from_millis(50) && *rtt < Duration::from_millis(90),
            "rtt {rtt:?} not near 50 ms"
        );
    }
    let stats = link.stats();
    assert_eq!(stats.up.packets_out, 20);
    assert_eq!(stats.down.packets_out, 20);
    assert_eq!(stats.clients, 1);
    link.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn loss_is_roughly_as_configured() -> TestResult {
    let (server, _echo) = echo_server().await?;
    let lossy = LinkProfile {
        loss: 0.2,
        ..LinkProfile::perfect()
    };
    let link =
        UdpLinkEmulator::start("127.0.0.1:0".parse()?, server, lossy, one_way(0.0), 42).await?;
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    let n = 1000;
    let rtts = ping(
        &client,
        link.local_addr(),
        n,
        Duration::from_micros(500),
        Duration::from_millis(200),
    )
    .await?;
    let loss = 1.0 - rtts.len() as f64 / f64::from(n);
    println!("configured loss 20 %, measured {:.1} %", loss * 100.0);
    assert!((0.15..0.25).contains(&loss), "measured loss {loss}");
    let stats = link.stats();
    assert_eq!(
        stats.up.dropped_loss + stats.up.packets_out,
        u64::from(n),
        "{stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn blackhole_kills_and_restores_the_path() -> TestResult {
    let (server, _echo) = echo_server().await?;
    let link = UdpLinkEmulator::start(
        "127.0.0.1:0".parse()?,
        server,
        one_way(5.0),
        one_way(5.0),
        3,
    )
    .await?;
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    let gap = Duration::from_millis(5);
    let linger = Duration::from_millis(100);
    assert_eq!(
        ping(&client, link.local_addr(), 10, gap, linger)
            .await?
            .len(),
        10
    );

    link.set_blackhole(true);
    assert!(ping(&client, link.local_addr(), 10, gap, linger)
        .await?
        .is_empty());
    assert_eq!(link.stats().up.dropped_blackhole, 10);

    link.set_blackhole(false);
    assert_eq!(
        ping(&client, link.local_addr(), 10, gap, linger)
            .await?
            .len(),
        10
    );
    Ok(())
}

#[tokio::test]
async fn profiles_change_at_runtime() -> TestResult {
    let (server, _echo) = echo_server().await?;
    let link = UdpLinkEmulator::start(
        "127.0.0.1:0".parse()?,
        server,
        LinkProfile::perfect(),
        LinkProfile::perfect(),
        4,
    )
    .await?;
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    let gap = Duration::from_millis(2);
    let fast = ping(
        &client,
        link.local_addr(),
        5,
        gap,
        Duration::from_millis(50),
    )
    .await?;
    assert!(fast.iter().all(|rtt| *rtt < Duration::from_millis(30)));

    link.set_profiles(one_way(40.0), one_way(40.0))?;
    let slow = ping(
        &client,
        link.local_addr(),
        5,
        gap,
        Duration::from_millis(300),
    )
    .await?;
    assert_eq!(slow.len(), 5);
    assert!(slow.iter().all(|rtt| *rtt >= Duration::from_millis(80)));

    let bad = LinkProfile {
        loss: 2.0,
        ..LinkProfile::perfect()
    };
    assert!(link.set_profiles(bad, bad).is_err());
    Ok(())
}

#[tokio::test]
async fn each_client_gets_its_own_upstream_address() -> TestResult {
    let (server, _echo) = echo_server().await?;
    let link = UdpLinkEmulator::start(
        "127.0.0.1:0".parse()?,
        server,
        LinkProfile::perfect(),
        LinkProfile::perfect(),
        5,
    )
    .await?;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let client = UdpSocket::bind("127.0.0.1:0").await?;
        client.send_to(b"hi", link.local_addr()).await?;
        let mut buf = [0u8; 256];
        let (len, from) =
            tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf)).await??;
        assert_eq!(from, link.local_addr(), "replies come from the emulator");
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        let upstream = text.split('|').next().unwrap_or_default().to_owned();
        assert_ne!(upstream, client.local_addr()?.to_string());
        seen.push(upstream);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        3,
        "clients shared an upstream address: {seen:?}"
    );
    assert_eq!(link.stats().clients, 3);
    Ok(())
}

#[tokio::test]
async fn named_profile_weak_4g_round_trip() -> TestResult {
    let (server, _echo) = echo_server().await?;
    let weak = LinkProfile::by_name("weak-4g").ok_or("no weak-4g")?;
    let link = UdpLinkEmulator::start("127.0.0.1:0".parse()?, server, weak, weak, 9).await?;
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    let n = 200;
    let mut rtts = ping(
        &client,
        link.local_addr(),
        n,
        Duration::from_millis(20),
        Duration::from_millis(400),
    )
    .await?;
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    let loss = 1.0 - rtts.len() as f64 / f64::from(n);
    println!(
        "weak-4g over loopback: median rtt {median:?}, round-trip loss {:.1} %",
        loss * 100.0
    );
    assert!(
        median >= Duration::from_millis(80) && median <= Duration::from_millis(110),
        "median {median:?}"
    );
    assert!(loss < 0.15, "loss {loss}");
    Ok(())
}
