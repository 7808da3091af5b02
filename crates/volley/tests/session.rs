//! Hybrid sessions on loopback: direct paths, the relay, reliability across path changes, and a
//! weak-4g link through the userspace emulator. Everything goes through the real HTTP API, the
//! real QUIC gate and real sockets.

mod common;

use std::time::Duration;

use common::*;
use volley_client::Event;
use volley_proto::msg::PathKind;
use volley_testkit::impair::LinkProfile;
use volley_testkit::udp_link::UdpLinkEmulator;

#[tokio::test]
async fn two_players_go_direct_and_exchange_both_channels() {
    let t = start_node(|_| {}).await;
    let host = login(&t.base, "device-direct-a").await;
    let room = host.create_room(Some(2)).await.expect("room").room_id;
    let mut a = join(&t.base, "device-direct-a", room, loopback_config(true)).await;
    let mut b = join(&t.base, "device-direct-b", room, loopback_config(true)).await;
    let (ida, idb) = (a.me(), b.me());
    assert!(
        wait_path(
            &mut a,
            idb,
            PathKind::Direct,
            Duration::from_secs(5),
            |_| {}
        )
        .await
    );
    assert!(
        wait_path(
            &mut b,
            ida,
            PathKind::Direct,
            Duration::from_secs(5),
            |_| {}
        )
        .await
    );

    for i in 0..2000u64 {
        a.send_reliable(idb, numbered(i)).expect("send");
    }
    let got = recv_reliable(&mut b, ida, 2000, Duration::from_secs(10)).await;
    let numbers: Vec<u64> = got.iter().map(|p| number_of(p)).collect();
    assert_eq!(
        numbers,
        (0..2000).collect::<Vec<_>>(),
        "in order, exactly once"
    );

    for i in 0..200u64 {
        b.send_unreliable(ida, numbered(i)).expect("send");
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut unreliable = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, a.next_event()).await {
        if let Event::Unreliable { from, .. } = e {
            assert_eq!(from, idb);
            unreliable += 1;
            if unreliable == 200 {
                break;
            }
        }
    }
    assert!(
        unreliable >= 190,
        "loopback lost too much: {unreliable}/200"
    );

    // Direct traffic does not touch the relay; the node knows both paths are direct.
    let relayed = t
        .node
        .metrics()
        .relay_frames
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        relayed < 10,
        "reliable frames went through the relay: {relayed}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let info = host.room(room).await.expect("room info");
        let direct = info.paths.iter().filter(|p| p.path == "direct").count();
        if direct == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node did not learn the paths: {:?}",
            info.paths
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.leave().await;
    let left = recv_until(&mut b, |e| matches!(e, Event::PeerLeft(p) if *p == ida)).await;
    assert!(left, "peer-left event");
    t.node.shutdown().await;
}

async fn recv_until(s: &mut volley_client::Session, f: impl Fn(&Event) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, s.next_event()).await {
        if f(&e) {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn relay_only_delivers_everything_through_the_node() {
    let t = start_node(|_| {}).await;
    let host = login(&t.base, "device-relay-a").await;
    let room = host.create_room(Some(3)).await.expect("room").room_id;
    let mut a = join(&t.base, "device-relay-a", room, loopback_config(false)).await;
    let mut b = join(&t.base, "device-relay-b", room, loopback_config(false)).await;
    let (ida, idb) = (a.me(), b.me());
    assert!(recv_until(&mut a, |e| matches!(e, Event::PeerJoined(p) if *p == idb)).await);
    for i in 0..1500u64 {
        a.send_reliable(idb, numbered(i)).expect("send");
        b.send_reliable(ida, numbered(i)).expect("send");
    }
    let got_b = recv_reliable(&mut b, ida, 1500, Duration::from_secs(10)).await;
    let got_a = recv_reliable(&mut a, idb, 1500, Duration::from_secs(10)).await;
    assert_eq!(
        got_b.iter().map(|p| number_of(p)).collect::<Vec<_>>(),
        (0..1500).collect::<Vec<_>>()
    );
    assert_eq!(
        got_a.iter().map(|p| number_of(p)).collect::<Vec<_>>(),
        (0..1500).collect::<Vec<_>>()
    );
    assert!(a.peers().iter().all(|p| p.path == PathKind::Relay));
    let m = t.node.metrics();
    assert!(m.relay_frames.load(std::sync::atomic::Ordering::Relaxed) >= 3000);
    t.node.shutdown().await;
}

#[tokio::test]
async fn direct_path_closed_mid_stream_fails_over_without_losing_a_message() {
    let t = start_node(|_| {}).await;
    let host = login(&t.base, "device-cut-a").await;
    let room = host.create_room(Some(2)).await.expect("room").room_id;
    let mut a = join(&t.base, "device-cut-a", room, loopback_config(true)).await;
    let mut b = join(&t.base, "device-cut-b", room, loopback_config(true)).await;
    let (ida, idb) = (a.me(), b.me());
    assert!(
        wait_path(
            &mut a,
            idb,
            PathKind::Direct,
            Duration::from_secs(5),
            |_| {}
        )
        .await
    );

    // Stream messages while the direct path is torn down under them.
    let sender = tokio::spawn(async move {
        for i in 0..600u64 {
            a.send_reliable(idb, numbered(i)).expect("send");
            if i == 200 {
                assert!(a.cut_direct_for_test(idb), "there was a direct path to cut");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        a
    });
    let got = recv_reliable(&mut b, ida, 600, Duration::from_secs(15)).await;
    let numbers: Vec<u64> = got.iter().map(|p| number_of(p)).collect();
    assert_eq!(numbers, (0..600).collect::<Vec<_>>());
    let a = sender.await.expect("sender");
    let st = a.peers();
    assert!(st[0].path_changes >= 2, "direct → relay happened: {st:?}");
    // The lost path is punched again and the link goes back to direct.
    let mut a = a;
    assert!(
        wait_path(
            &mut a,
            idb,
            PathKind::Direct,
            Duration::from_secs(10),
            |_| {}
        )
        .await,
        "relay → direct upgrade after the re-punch"
    );
    t.node.shutdown().await;
}

#[tokio::test]
async fn weak_4g_links_lose_no_reliable_message_and_never_disconnect() {
    let t = start_node(|_| {}).await;
    let profile = LinkProfile::by_name("weak-4g").expect("profile");
    let mut links = Vec::new();
    for seed in [1u64, 2] {
        links.push(
            UdpLinkEmulator::start(
                "127.0.0.1:0".parse().expect("addr"),
                t.node.quic_addr,
                profile,
                profile,
                seed,
            )
            .await
            .expect("emulator"),
        );
    }
    let host = login(&t.base, "device-4g-a").await;
    let room = host.create_room(Some(2)).await.expect("room").room_id;
    let mut sessions = Vec::new();
    for (i, link) in links.iter().enumerate() {
        // The player reaches the node only through its impaired link.
        let api = login(&t.base, &format!("device-4g-{i}")).await;
        let client = volley_client::Client::new(loopback_config(false)).expect("client");
        let mut ticket = api.join(room, client.fingerprint()).await.expect("ticket");
        // Connect through the emulator. The sealed ticket still names the node's own address,
        // which is what the gate checks; the emulator only forwards.
        ticket.node_addr = link.local_addr().to_string();
        sessions.push(client.join(&ticket).await);
    }
    assert!(
        sessions.iter().all(|s| s.is_ok()),
        "joined through the emulator"
    );
    let mut b = sessions.pop().expect("b").expect("b");
    let mut a = sessions.pop().expect("a").expect("a");
    let (_ida, idb) = (a.me(), b.me());
    assert!(recv_until(&mut a, |e| matches!(e, Event::PeerJoined(p) if *p == idb)).await);
    let sender = tokio::spawn(async move {
        // 60 Hz for 5 s.
        for i in 0..300u64 {
            a.send_reliable(idb, numbered(i)).expect("send");
            let _ = a.send_unreliable(idb, numbered(i));
            tokio::time::sleep(Duration::from_millis(16)).await;
        }
        a
    });
    let mut closed = false;
    let got = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while got.len() < 300 {
            match tokio::time::timeout_at(deadline, b.next_event()).await {
                Ok(Some(Event::Reliable { payload, .. })) => got.push(number_of(&payload)),
                Ok(Some(Event::Closed { .. })) => {
                    closed = true;
                    break;
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        got
    };
    let a = sender.await.expect("sender");
    assert!(!closed, "no disconnect on weak-4g");
    assert_eq!(
        got,
        (0..300).collect::<Vec<_>>(),
        "every reliable message, in order"
    );
    let st = a.peers();
    let rtt = st[0].rtt_ms_p50.expect("rtt samples");
    // Two impaired legs (player→node→player), each 90 ms RTT: about 180 ms.
    assert!(
        (120.0..400.0).contains(&rtt),
        "relay RTT over two weak-4g legs: {rtt} ms"
    );
    assert!(
        st[0].send_bytes_per_s > 500.0,
        "send rate measured: {:?}",
        st[0]
    );
    let q = a.node_quality();
    assert!(q.rtt_ms > 50.0 && q.sent_packets > 0, "node quality: {q:?}");
    let stats = links[0].stats();
    assert!(
        stats.up.dropped_loss + stats.down.dropped_loss > 0,
        "the emulator did drop packets: {stats:?}"
    );
    t.node.shutdown().await;
}
