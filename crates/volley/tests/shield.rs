//! Holes found by probing the node, each closed and held closed through the real interface
//! (issue: shield). Each test failed before its fix.

use volley_client::Api;
use volley_proto::api::{Gift, MintItemRequest};

mod common;
use common::start_node;

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
