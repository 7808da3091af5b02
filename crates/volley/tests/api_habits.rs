//! One API, one set of habits, through the real HTTP API: every failure is the JSON error
//! shape (bad query and path parameters, wrong methods, a plain GET of the WebSocket), errors
//! show no internal ids and do not echo long inputs, list routes page with a cursor and `next`,
//! a player over a bonus code's limit hears that rather than being held, and the event
//! WebSocket takes what players send.

use volley_client::Api;
use volley_proto::api::{BonusCode, ClientEvent, Event, Gift, GrantRequest, Redemption};

mod common;
use common::start_node;

const KEY: &str = "habits-server-key-0123456789";

/// Sends a request and returns (status, JSON body), asserting the body is the error shape when
/// the status is not a success.
async fn call(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body: serde_json::Value = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
    };
    if status >= 400 {
        assert!(
            body["code"].is_string() && body["message"].is_string(),
            "{status}: not the error shape: {body}"
        );
        assert!(status < 500, "{status}: {body}");
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_is_the_json_error_shape() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let mut api = Api::new(&n.base);
    api.login_device("habits-device-0001").await.unwrap();
    let token = api.token().unwrap().to_owned();
    let http = reqwest::Client::new();
    let b = &n.base;
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth(&token);
    for (what, req, status) in [
        (
            "a query parameter of the wrong type",
            auth(http.get(format!("{b}/v1/chat/lobby.1?limit=lots"))),
            400,
        ),
        (
            "an unknown query parameter",
            auth(http.get(format!("{b}/v1/wallet/history?colour=red"))),
            400,
        ),
        (
            "a path id that is not a number",
            auth(http.get(format!("{b}/v1/rooms/abc"))),
            400,
        ),
        (
            "a method the path does not take",
            auth(http.delete(format!("{b}/v1/wallet"))),
            405,
        ),
        (
            "the WebSocket opened as a plain GET",
            http.get(format!("{b}/v1/events?token={token}")),
            400,
        ),
        ("an unknown path", http.get(format!("{b}/v1/nope")), 404),
        (
            "a body that is not JSON",
            http.post(format!("{b}/v1/auth/device")).body("{oops"),
            400,
        ),
        (
            "a body over the limit",
            http.post(format!("{b}/v1/auth/device"))
                .body(format!("{{\"device_id\": \"{}\"}}", "d".repeat(64 << 10))),
            413,
        ),
    ] {
        let (got, body) = call(req).await;
        assert_eq!(got, status, "{what}: {body}");
    }
    // A long input is not echoed back whole.
    let long = "é".repeat(5000);
    let (status, body) = call(
        http.post(format!("{b}/v1/auth/device"))
            .json(&serde_json::json!({"device_id": long})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.to_string().chars().count() < 600, "{body}");
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_no_internal_ids_and_bonus_limits_beat_fraud_holds() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let admin = Api::new(&n.base);
    let mut alice = Api::new(&n.base);
    let a = alice
        .login_device("habits-alice-0001")
        .await
        .unwrap()
        .player_id;
    let mut bob = Api::new(&n.base);
    let b = bob
        .login_device("habits-bob-00001")
        .await
        .unwrap()
        .player_id;
    admin
        .grant(
            KEY,
            &GrantRequest {
                id: "seed".into(),
                player: a,
                currency: "gold".into(),
                amount: 10,
                kind: None,
            },
        )
        .await
        .unwrap();
    // Overspending names no ledger account.
    let e = alice
        .gift(&Gift::new("too-much", b, "gold", 11, None))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("insufficient_funds"), "{text}");
    assert!(!text.contains("account"), "an internal id in {text}");

    // Accounts on one device redeem a code allowed once per player: the third is held.
    admin
        .create_bonus_code(
            KEY,
            &BonusCode {
                code: "ONCE-EACH".into(),
                currency: "gems".into(),
                amount: 5,
                global_limit: 100,
                per_player_limit: 1,
                expires_ms: volley_platform::now_ms() + 3_600_000,
                min_account_age_ms: 0,
            },
        )
        .await
        .unwrap();
    let mut farm = Vec::new();
    let mut farm_ids = Vec::new();
    for i in 0..3 {
        let mut p = Api::new(&n.base);
        p.set_device("habits-one-phone");
        farm_ids.push(
            p.login_device(&format!("habits-farm-{i:04}"))
                .await
                .unwrap()
                .player_id,
        );
        let r = p.redeem("ONCE-EACH", "r1").await.unwrap();
        assert_eq!(matches!(r, Redemption::Held { .. }), i == 2, "{i}: {r:?}");
        farm.push(p);
    }
    // The first now scores high too, but is over the code's limit: it is told so, not held.
    let e = farm[0].redeem("ONCE-EACH", "r2").await.unwrap_err();
    assert!(e.to_string().contains("already_redeemed"), "{e}");
    // The held list pages: one page of one, then the end.
    let page = admin.held(KEY, None, 1).await.unwrap();
    assert_eq!(page.held.len(), 1, "{page:?}");
    assert_eq!(page.next_after, None);
    assert_eq!(page.held[0].player_id, farm_ids[2]);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_transfers_page_past_one_hundred() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let admin = Api::new(&n.base);
    admin
        .create_bonus_code(
            KEY,
            &BonusCode {
                code: "MANY-HELD".into(),
                currency: "gems".into(),
                amount: 1,
                global_limit: 1000,
                per_player_limit: 1,
                expires_ms: volley_platform::now_ms() + 3_600_000,
                min_account_age_ms: 0,
            },
        )
        .await
        .unwrap();
    // Every account shares one device: all but the first two are held.
    let players = 105;
    for i in 0..players {
        let mut p = Api::new(&n.base);
        p.set_device("habits-many-held");
        p.login_device(&format!("habits-held-{i:04}"))
            .await
            .unwrap();
        p.redeem("MANY-HELD", "r").await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = admin.held(KEY, after.as_deref(), 40).await.unwrap();
        seen.extend(page.held.iter().map(|h| h.id.clone()));
        match page.next_after {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no transfer on two pages");
    assert_eq!(seen.len(), players - 2);
    // A cursor that is not one is refused with the error shape.
    let (status, body) = call(
        reqwest::Client::new()
            .get(format!("{}/v1/admin/held?after=nonsense", n.base))
            .header("x-volley-server-key", KEY),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_cursor")));
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_send_chat_and_presence_on_the_event_socket() {
    let n = start_node(|_| {}).await;
    let mut alice = Api::new(&n.base);
    let a = alice
        .login_device("habits-ws-alice1")
        .await
        .unwrap()
        .player_id;
    let mut bob = Api::new(&n.base);
    let b = bob
        .login_device("habits-ws-bob001")
        .await
        .unwrap()
        .player_id;
    let mut a_events = alice.events().await.unwrap();
    let mut b_events = bob.events().await.unwrap();
    for ev in [&mut a_events, &mut b_events] {
        assert!(matches!(ev.next().await, Some(Event::Ready { .. })));
    }
    let channel = format!("dm.{}.{}", a.min(b), a.max(b));
    a_events
        .send(&ClientEvent::Chat {
            channel: channel.clone(),
            body: "sent on the socket".into(),
        })
        .await
        .unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match b_events.next().await {
                Some(Event::Chat { message }) => return message,
                Some(_) => continue,
                None => panic!("bob's socket closed"),
            }
        }
    })
    .await
    .expect("bob got the message");
    assert_eq!((got.sender, got.body.as_str()), (a, "sent on the socket"));
    // It is in the channel's history like any other message.
    let page = bob.chat_history(&channel, None, 10).await.unwrap();
    assert_eq!(page.messages[0].body, "sent on the socket");
    // Presence set on the socket is what others read.
    a_events
        .send(&ClientEvent::Presence {
            status: "in_match".into(),
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if bob.presence(a).await.unwrap().status.as_deref() == Some("in_match") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "presence never changed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // What the node refuses comes back as an error event, and the socket stays open.
    a_events
        .send(&ClientEvent::Chat {
            channel: "lobby.999999".into(),
            body: "nobody here".into(),
        })
        .await
        .unwrap();
    let refused = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if let Some(Event::Error { code, .. }) = a_events.next().await {
                return code;
            }
        }
    })
    .await
    .expect("an error event");
    assert!(!refused.is_empty());
    a_events
        .send(&ClientEvent::Presence {
            status: "online".into(),
        })
        .await
        .unwrap();
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_page_past_one_hundred() {
    let n = start_node(|_| {}).await;
    let mut star = Api::new(&n.base);
    let s = star
        .login_device("habits-star-0001")
        .await
        .unwrap()
        .player_id;
    let fans = 105;
    for i in 0..fans {
        let mut fan = Api::new(&n.base);
        fan.login_device(&format!("habits-fan-{i:04}"))
            .await
            .unwrap();
        fan.add_friend(s).await.unwrap();
    }
    let http = reqwest::Client::new();
    let token = star.token().unwrap().to_owned();
    let (status, first) = call(
        http.get(format!("{}/v1/friends", n.base))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(first["friends"].as_array().unwrap().len(), 100);
    let after = first["next_after"].as_u64().expect("a next page");
    let (_, second) = call(
        http.get(format!("{}/v1/friends?after={after}", n.base))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(second["friends"].as_array().unwrap().len(), fans - 100);
    assert!(second["next_after"].is_null());
    // The SDK walks every page.
    let all = star.friends().await.unwrap();
    assert_eq!(all.len(), fans);
    assert!(all.iter().all(|f| f.state == "invite_received"));
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_searches_page_newest_first() {
    let n = start_node(|_| {}).await;
    let mut owners = Vec::new();
    for i in 0..7 {
        let mut o = Api::new(&n.base);
        o.login_device(&format!("habits-lobby-{i:04}"))
            .await
            .unwrap();
        let mut attrs = serde_json::Map::new();
        attrs.insert(
            "map".into(),
            if i % 2 == 0 { "docks" } else { "city" }.into(),
        );
        o.create_lobby(&volley_proto::api::CreateLobby {
            kind: "lobby".into(),
            name: None,
            max_members: 4,
            open: true,
            attrs,
        })
        .await
        .unwrap();
        owners.push(o);
    }
    // Four lobbies on the docks, two a page.
    let first = owners[0]
        .search_lobbies("lobby", &[("map", "docks")], None, 2)
        .await
        .unwrap();
    assert_eq!(first.lobbies.len(), 2);
    let next = first.next_before.expect("more to search");
    let second = owners[0]
        .search_lobbies("lobby", &[("map", "docks")], Some(next), 2)
        .await
        .unwrap();
    assert_eq!(second.lobbies.len(), 2);
    let mut ids: Vec<u64> = first
        .lobbies
        .iter()
        .chain(&second.lobbies)
        .map(|l| l.lobby_id)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    ids.dedup();
    assert_eq!(ids.len(), 4);
    let rest = owners[0]
        .search_lobbies("lobby", &[("map", "docks")], second.next_before, 2)
        .await
        .unwrap();
    assert!(
        rest.lobbies.is_empty() && rest.next_before.is_none(),
        "{rest:?}"
    );
    n.node.shutdown().await;
}
