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
