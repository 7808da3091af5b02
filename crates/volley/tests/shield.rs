//! Holes found by probing the node, each closed and held closed through the real interface
//! (issue: shield). Each test failed before its fix.

use std::time::Duration;

use volley_client::{Api, Client};
use volley_net::endpoint::{client_config, TransportTuning};
use volley_net::tls::{Identity, Pin};
use volley_proto::api::{Gift, MintItemRequest};
use volley_server::RetryPolicy;

mod common;
use common::{loopback_config, metric, start_node};

const KEY: &str = "shield-server-key-0123456789";

/// A unique item's units cannot be gifted apart from the item: the wallet would show none
/// while the player still owned the item's row, which could then never be traded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_item_units_move_only_with_their_item() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let admin = Api::new(&n.base);
    let mut alice = Api::new(&n.base);
    let a = alice
        .login_device("shield-alice-001")
        .await
        .unwrap()
        .player_id;
    let mut bob = Api::new(&n.base);
    let b = bob
        .login_device("shield-bob-00001")
        .await
        .unwrap()
        .player_id;
    let sword = admin
        .mint_item(
            KEY,
            &MintItemRequest {
                id: "mint-sword".into(),
                player: a,
                item_type: "sword".into(),
            },
        )
        .await
        .unwrap();
    let e = alice
        .gift(&Gift::new("units-only", b, "item:sword", 1, None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bad_item_transfer"), "{e}");
    let units = |w: &volley_proto::api::WalletView| {
        w.balances
            .iter()
            .find(|x| x.currency == "item:sword")
            .map_or(0, |x| x.balance)
    };
    let aw = alice.wallet().await.unwrap();
    assert_eq!(aw.items, vec![(sword.clone(), "sword".to_owned())]);
    assert_eq!(units(&aw), 1, "the unit stayed with the item");
    // The item itself still trades, unit and row together.
    alice
        .gift(&Gift::new("trade", b, "item:sword", 1, Some(sword.clone())))
        .await
        .unwrap();
    let bw = bob.wallet().await.unwrap();
    assert_eq!(bw.items, vec![(sword, "sword".to_owned())]);
    assert_eq!(units(&bw), 1);
    // Stackable items (no rows of their own) still move as plain units.
    admin
        .grant(
            KEY,
            &volley_proto::api::GrantRequest {
                id: "wood".into(),
                player: a,
                currency: "item:wood".into(),
                amount: 5,
                kind: None,
            },
        )
        .await
        .unwrap();
    alice
        .gift(&Gift::new("planks", b, "item:wood", 2, None))
        .await
        .unwrap();
    n.node.shutdown().await;
}

/// One player cannot fill the node's rooms: each holds a few, players share what the matchmaker
/// does not keep for itself, and matches are still placed when players have taken their share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_player_cannot_fill_the_rooms_and_the_matchmaker_keeps_its_share() {
    let n = start_node(|c| {
        c.rooms_max = 10;
        c.rooms_reserved_for_matches_percent = 20;
        c.rooms_per_player_max = 3;
    })
    .await;
    let login = |i: usize| {
        let base = n.base.clone();
        async move {
            let mut api = Api::new(&base);
            api.login_device(&format!("shield-rooms-{i:04}"))
                .await
                .unwrap();
            api
        }
    };
    let greedy = login(0).await;
    for _ in 0..3 {
        greedy.create_room(Some(2)).await.unwrap();
    }
    let e = greedy.create_room(Some(2)).await.unwrap_err().to_string();
    assert!(e.contains("too_many_rooms") && e.contains("429"), "{e}");
    // Others still create rooms, up to the players' share (8 of 10).
    for i in 1..=2 {
        let p = login(i).await;
        let wanted = if i == 1 { 3 } else { 2 };
        for _ in 0..wanted {
            p.create_room(Some(2)).await.unwrap();
        }
    }
    let late = login(3).await;
    let e = late.create_room(Some(2)).await.unwrap_err().to_string();
    assert!(e.contains("room_limit"), "{e}");
    // The matchmaker still places a match in the rooms it keeps.
    let a = login(4).await;
    let b = login(5).await;
    let mut tickets = Vec::new();
    for p in [&a, &b] {
        let t = p
            .submit_ticket(&volley_proto::api::TicketRequest {
                pool: "duel".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        tickets.push(t.ticket_id);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let found = loop {
        let st = a.ticket(&tickets[0]).await.unwrap();
        if let Some(f) = st.found {
            break f;
        }
        assert!(std::time::Instant::now() < deadline, "no match: {st:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let room = a.room(found.room_id).await.unwrap();
    assert_eq!(room.max_players, 2);
    n.node.shutdown().await;
}

/// Logging out with another player's refresh token ends nothing of theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_only_the_callers_own_refresh_family() {
    let n = start_node(|_| {}).await;
    let mut alice = Api::new(&n.base);
    let a = alice.login_device("shield-logout-a1").await.unwrap();
    let mut bob = Api::new(&n.base);
    let b = bob.login_device("shield-logout-b1").await.unwrap();
    let e = alice
        .logout(Some(&b.refresh_token))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("403"), "{e}");
    // Bob's refresh token still works, and the refused call ended nothing of Alice's.
    let mut again = Api::new(&n.base);
    again.refresh(&b.refresh_token).await.unwrap();
    alice.account().await.unwrap();
    // Her own family she may end: her refresh token stops working.
    alice.logout(Some(&a.refresh_token)).await.unwrap();
    let mut later = Api::new(&n.base);
    assert!(later.refresh(&a.refresh_token).await.is_err());
    n.node.shutdown().await;
}

/// Replays `initials` at `to` from one socket of 127.0.0.1 at about `per_s` datagrams a
/// second until `stop` is set or `most` are sent; never answers anything. Returns how many.
async fn flood_initials(
    initials: Vec<Vec<u8>>,
    to: std::net::SocketAddr,
    per_s: u32,
    most: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (per_s / 100).max(1) as usize;
    let mut sent = 0;
    while sent < most && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        for _ in 0..per_tick {
            // dropped: a full socket buffer loses a flood datagram, as on a real network.
            let _ = sock.send_to(&initials[sent % initials.len()], to).await;
            sent += 1;
        }
    }
    sent
}

/// Initials forged in a victim's name (its address, another port; the sender never answers)
/// no longer drain the victim's connect bucket: only validated sources are charged, so the
/// victim, from the same address, joins while the flood runs (issue 21, defect 3). Before the
/// fix every Initial was charged before Retry and the victim's own attempts were ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_initials_do_not_lock_out_the_address_they_name() {
    for policy in [RetryPolicy::Always, RetryPolicy::UnderLoad] {
        let n = start_node(|c| {
            c.retry = policy;
            c.connects_per_ip_per_s = 5.0;
            c.connects_per_ip_burst = 10.0;
            c.handshakes_before_retry = 8;
        })
        .await;
        let id = Identity::generate("spoofer").unwrap();
        let cc = client_config(&id, Pin::AnyVerifiedKey, &TransportTuning::node()).unwrap();
        let initials = volley_testkit::initials::capture(cc, "volley-node", 300)
            .await
            .unwrap();
        assert_eq!(initials.len(), 300);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood = tokio::spawn(flood_initials(
            initials,
            n.node.quic_addr,
            2_000,
            40_000,
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let owner = common::login(&n.base, "shield-spoof-owner").await;
        let room = owner.create_room(Some(2)).await.unwrap().room_id;
        let mut victim = Api::new(&n.base);
        victim.login_device("shield-spoof-victim").await.unwrap();
        let client = Client::new(loopback_config(false)).unwrap();
        let ticket = victim.join(room, client.fingerprint()).await.unwrap();
        let joined = client.join(&ticket).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = flood.await.unwrap();
        assert!(sent >= 1_000, "the flood ran ({sent} Initials)");
        let session = joined.unwrap_or_else(|e| panic!("{policy:?}: victim kept out: {e}"));
        assert_eq!(session.room_id(), room);
        // The flood was answered with Retry (Always), or handshakes it never finished.
        if policy == RetryPolicy::Always {
            assert!(metric(&n.base, "volley_quic_retry_total").await >= 1_000);
        }
        n.node.shutdown().await;
    }
}

/// Validated sources are still limited: a real client opening connection after connection
/// from one address is cut off once its bucket is empty, under either Retry policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_source_is_still_rate_limited_after_validation() {
    for policy in [RetryPolicy::Always, RetryPolicy::UnderLoad] {
        let n = start_node(|c| {
            c.retry = policy;
            c.connects_per_ip_per_s = 0.05;
            c.connects_per_ip_burst = 3.0;
        })
        .await;
        let id = Identity::generate("eager").unwrap();
        let cc = client_config(&id, Pin::AnyVerifiedKey, &TransportTuning::node()).unwrap();
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(cc);
        let mut lasted = 0;
        for _ in 0..6 {
            let c = ep.connect(n.node.quic_addr, "volley-node").unwrap();
            let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(2), c).await else {
                continue;
            };
            // A connection refused after its handshake is closed at once.
            let closed = tokio::time::timeout(Duration::from_millis(300), conn.closed()).await;
            if closed.is_err() {
                lasted += 1;
            }
        }
        assert_eq!(lasted, 3, "{policy:?}: the burst, then nothing");
        assert!(metric(&n.base, "volley_quic_ignored_total").await >= 3);
        n.node.shutdown().await;
    }
}

/// Runs the `volley` binary and returns its stdout, failing the test with its stderr.
fn volley_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "volley {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The swarm tracker can no longer be filled by one player: announces name published
/// versions only (a made-up one is 404 and stores nothing), and one player is in at most
/// `swarms_per_player_max` swarms (429 `too_many_swarms`), while others still get in
/// (issue 21, defect 5). Before the fix 1,000 made-up announces made the tracker answer
/// `tracker_full` to everyone for 90 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_player_cannot_fill_the_swarm_tracker() {
    let n = start_node(|c| {
        c.server_key = Some(KEY.into());
        c.swarms_per_player_max = 2;
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("publisher.key");
    volley_cli(&["content", "keygen", "--out", key.to_str().unwrap()]);
    let build = work.path().join("build");
    std::fs::create_dir(&build).unwrap();
    std::fs::write(build.join("game.bin"), vec![7u8; 100_000]).unwrap();
    for v in ["1.0.0", "1.0.1", "1.0.2"] {
        volley_cli(&[
            "content",
            "publish",
            build.to_str().unwrap(),
            "--game",
            "arena",
            "--version",
            v,
            "--key",
            key.to_str().unwrap(),
            "--node",
            &n.base,
            "--server-key",
            KEY,
            "--json",
        ]);
    }
    let have = volley_proto::api::PeerAnnounce {
        port: 7000,
        have_chunks: 0,
        total_chunks: 1,
    };
    let status = |e: volley_client::Error| match e {
        volley_client::Error::Api { status, code, .. } => (status, code),
        other => panic!("{other}"),
    };
    let greedy = common::login(&n.base, "shield-greedy-tracker").await;
    for i in 0..300 {
        let e = greedy
            .announce_peer("arena", &format!("9.9.{i}"), &have)
            .await
            .unwrap_err();
        assert_eq!(status(e), (404, "not_found".to_owned()));
    }
    for v in ["1.0.0", "1.0.1"] {
        greedy.announce_peer("arena", v, &have).await.unwrap();
    }
    let e = greedy
        .announce_peer("arena", "1.0.2", &have)
        .await
        .unwrap_err();
    assert_eq!(status(e), (429, "too_many_swarms".to_owned()));
    // A refresh of a swarm it is in still works, and every other player gets in.
    greedy.announce_peer("arena", "1.0.0", &have).await.unwrap();
    let other = common::login(&n.base, "shield-other-tracker").await;
    for v in ["1.0.0", "1.0.2"] {
        let seen = other.announce_peer("arena", v, &have).await.unwrap();
        assert_eq!(seen.peers.len(), usize::from(v == "1.0.0"), "{v}");
    }
    // Leaving frees a place.
    greedy.leave_swarm("arena", "1.0.1").await.unwrap();
    greedy.announce_peer("arena", "1.0.2", &have).await.unwrap();
    n.node.shutdown().await;
}

/// The body of the next chat event within `ms`, skipping other events.
async fn chat_within(events: &mut volley_client::Events, ms: u64) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(volley_proto::api::Event::Chat { message })) => return Some(message.body),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

/// Two separate deployments on one NATS server no longer hear each other: each has its own
/// `cluster` name, and player 1's private message on one is not delivered to the other's
/// player 1 (issue 21, defect 6). Before the fix both used `volley.user.1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_sharing_nats_do_not_hear_each_other() {
    let nats = volley_store::testing::nats_url();
    let deployment = |name: &'static str| {
        let nats = nats.clone();
        start_node(move |c| {
            c.nats = Some(nats);
            c.cluster = format!("{name}-{}", std::process::id());
        })
    };
    let (a, b) = (deployment("shield-a").await, deployment("shield-b").await);
    // The same ids on both: each node's first two accounts.
    let mut players = Vec::new();
    for n in [&a, &b] {
        let mut one = Api::new(&n.base);
        let one_id = one.login_device("shield-nats-one").await.unwrap().player_id;
        let mut two = Api::new(&n.base);
        let two_id = two.login_device("shield-nats-two").await.unwrap().player_id;
        one.add_friend(two_id).await.unwrap();
        two.add_friend(one_id).await.unwrap();
        let mut events = one.events().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        players.push((one_id, two_id, two, events));
    }
    assert_eq!(
        (players[0].0, players[0].1),
        (players[1].0, players[1].1),
        "both deployments gave out the same ids"
    );
    let (one_id, two_id) = (players[0].0, players[0].1);
    let dm = format!("dm.{}.{}", one_id.min(two_id), one_id.max(two_id));
    players[0]
        .2
        .send_chat(&dm, "for deployment a only")
        .await
        .unwrap();
    let (_, _, _, events_a) = &mut players[0];
    assert_eq!(
        chat_within(events_a, 10_000).await.as_deref(),
        Some("for deployment a only")
    );
    let (_, _, _, events_b) = &mut players[1];
    assert_eq!(chat_within(events_b, 1_000).await, None, "leaked");
    a.node.shutdown().await;
    b.node.shutdown().await;
}
