//! The platform services through the node's real HTTP API and WebSocket, as the SDK uses them:
//! the OpenAPI document against the router, bad input everywhere, auth flows, chat and presence
//! events, matchmaking into reserved rooms with rating updates, and two nodes sharing one
//! PostgreSQL and one NATS.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::start_node;
use volley_client::Api;
use volley_proto::api::{CreateLobby, Event, MatchResult, TicketRequest};

const KEY: &str = "studio-server-key-0123456789";

async fn next_event(ev: &mut volley_client::Events) -> Event {
    tokio::time::timeout(Duration::from_secs(10), ev.next())
        .await
        .expect("an event within 10 s")
        .expect("stream open")
}

/// The next event that is not a presence change.
async fn next_non_presence(ev: &mut volley_client::Events) -> Event {
    loop {
        match next_event(ev).await {
            Event::Presence { .. } => continue,
            e => return e,
        }
    }
}

async fn device(base: &str, id: &str) -> (Api, u64) {
    let mut api = Api::new(base);
    let s = api.login_device(id).await.expect("login");
    (api, s.player_id)
}

fn status_of(e: volley_client::Error) -> (u16, String) {
    match e {
        volley_client::Error::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_exactly_the_routes_that_answer() {
    let n = start_node(|_| {}).await;
    let http = reqwest::Client::new();
    let doc: serde_json::Value = http
        .get(format!("{}/v1/openapi.json", n.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 30, "{} paths", paths.len());
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut ops = 0;
    for (path, methods) in paths {
        for (method, op) in methods.as_object().unwrap() {
            ops += 1;
            // Every referenced schema exists.
            let text = op.to_string();
            for piece in text.split("#/components/schemas/").skip(1) {
                let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
                assert!(
                    schemas.contains_key(&name),
                    "{path} {method}: missing schema {name}"
                );
            }
            // Every listed route answers: not the router's fallback and not 405.
            let url = format!(
                "{}{}",
                n.base,
                path.replace("{id}", "1")
                    .replace("{channel}", "lobby.1")
                    .replace("{pool}", "duel")
                    .replace("{player}", "1")
                    .replace("{season}", "1")
                    .replace("{game}", "arena")
                    .replace("{version}", "1.0.0")
                    .replace(
                        "{hash}",
                        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
                    )
            );
            let req = match method.as_str() {
                "get" => http.get(&url),
                "post" => http.post(&url),
                "put" => http.put(&url),
                "patch" => http.patch(&url),
                "delete" => http.delete(&url),
                m => panic!("method {m}"),
            };
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                !body.contains("no such endpoint"),
                "{method} {path} is listed but not routed"
            );
            assert!(status < 500, "{method} {path}: {status} {body}");
        }
    }
    assert!(ops >= 60, "{ops} operations");
    // And a route that is not listed is not routed.
    let r = http
        .get(format!("{}/v1/nope", n.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_4xx_with_codes_never_5xx() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let (api, _) = device(&n.base, "device-bodies-1").await;
    let token = api.token().unwrap().to_owned();
    // A fresh connection per request: after refusing an oversized body the node closes that
    // connection, and a pooled client could otherwise send the next POST on it as it closes.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let bodies: &[&[u8]] = &[
        b"",
        b"{",
        b"null",
        b"[]",
        b"{\"unknown\": 1}",
        b"{\"kind\": 5}",
        b"\xff\xfe",
        b"{\"pool\": \"\", \"ttl_ms\": -1}",
        b"{\"body\": \"\"}",
        b"{\"email\": \"a@b.c\", \"password\": \"x\"}",
        b"{\"device_id\": \"\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000\"}",
    ];
    let big = vec![b'a'; 64 * 1024];
    let paths = [
        "/v1/auth/device",
        "/v1/auth/email/register",
        "/v1/auth/email",
        "/v1/auth/custom",
        "/v1/auth/refresh",
        "/v1/account/link",
        "/v1/lobbies",
        "/v1/lobbies/1/invite",
        "/v1/chat/lobby.1",
        "/v1/chat/dm.x.y",
        "/v1/matchmaker/tickets",
        "/v1/matches/abc/result",
        "/v1/rooms",
    ];
    for path in paths {
        for body in bodies
            .iter()
            .copied()
            .chain(std::iter::once(big.as_slice()))
        {
            if path == "/v1/rooms" && body.is_empty() {
                continue; // no body means "a room with the defaults"
            }
            let sent = http
                .post(format!("{}{path}", n.base))
                .bearer_auth(&token)
                .header("x-volley-server-key", KEY)
                .body(body.to_vec())
                .send()
                .await;
            let r = match sent {
                Ok(r) => r,
                // An oversized body is refused with 413 as soon as the limit is crossed; the
                // node then closes the connection, which may reset it before the client reads
                // the answer. Either way the request was refused; the node must stay up.
                Err(e) if body.len() > 16 * 1024 => {
                    assert!(e.is_request(), "{e}");
                    continue;
                }
                Err(e) => panic!("{path}: {e}"),
            };
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert!(
                (400..500).contains(&status),
                "{path} {:?}: {status} {text}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
            if status != 413 {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
                assert!(v["code"].is_string(), "{path}: {text}");
            }
        }
    }
    // The node is still up and answering after all that.
    assert!(api.account().await.is_ok());
    // Query junk on GETs.
    for q in [
        "/v1/chat/lobby.1?limit=x",
        "/v1/chat/lobby.1?before=1e999",
        "/v1/lobbies?limit=-3",
        "/v1/presence/abc",
        "/v1/matchmaker/tickets/zzz",
    ] {
        let r = http
            .get(format!("{}{q}", n.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(
            (400..500).contains(&r.status().as_u16()),
            "{q}: {}",
            r.status()
        );
    }
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_flows_over_http() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let mut a = Api::new(&n.base);
    let s = a
        .register_email("pat@example.com", "hunter2hunter2", Some("Pat"))
        .await
        .unwrap();
    assert!(s.created && !s.refresh_token.is_empty() && s.expires_in_ms > 0);
    assert_eq!(a.account().await.unwrap().display_name, "Pat");
    let mut b = Api::new(&n.base);
    assert_eq!(
        status_of(
            b.login_email("pat@example.com", "wrong-password")
                .await
                .unwrap_err()
        ),
        (401, "invalid_credentials".into())
    );
    let s2 = b
        .login_email("pat@example.com", "hunter2hunter2")
        .await
        .unwrap();
    assert_eq!(s2.player_id, s.player_id);
    // Refresh rotates; the old token is then refused (grace covers a retried request only).
    let s3 = b.refresh(&s2.refresh_token).await.unwrap();
    assert_ne!(s3.refresh_token, s2.refresh_token);
    b.account().await.unwrap();
    // Custom id needs the server key.
    let mut c = Api::new(&n.base);
    assert_eq!(
        status_of(
            c.login_custom("wrong-key-wrong-key", "player-77")
                .await
                .unwrap_err()
        )
        .0,
        401
    );
    let cs = c.login_custom(KEY, "player-77").await.unwrap();
    // A ban ends the session at once.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/admin/accounts/{}/ban", n.base, cs.player_id))
        .header("x-volley-server-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(status_of(c.account().await.unwrap_err()).0, 401);
    let r = http
        .post(format!("{}/v1/admin/accounts/1/ban", n.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "admin calls need the key");
    // Logout ends the session.
    a.logout(Some(&s.refresh_token)).await.unwrap();
    let mut again = Api::new(&n.base);
    again.set_token(s.token.clone());
    assert_eq!(status_of(again.account().await.unwrap_err()).0, 401);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_login_limit_answers_429_with_retry_after() {
    let n = start_node(|c| {
        c.logins_per_ip_per_s = 1.0;
        c.logins_per_ip_burst = 3.0;
    })
    .await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = http
            .post(format!("{}/v1/auth/device", n.base))
            .json(&serde_json::json!({"device_id": format!("device-limit-{i}")}))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 429 {
            assert!(r.headers().get("retry-after").is_some());
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_presence_arrive_over_the_websocket() {
    let n = start_node(|_| {}).await;
    let (a, a_id) = device(&n.base, "device-ws-aaaa").await;
    let (b, b_id) = device(&n.base, "device-ws-bbbb").await;
    a.add_friend(b_id).await.unwrap();
    b.add_friend(a_id).await.unwrap();
    let mut b_ev = b.events().await.unwrap();
    assert_eq!(
        next_event(&mut b_ev).await,
        Event::Ready { player_id: b_id }
    );
    let mut a_ev = a.events().await.unwrap();
    assert_eq!(
        next_event(&mut a_ev).await,
        Event::Ready { player_id: a_id }
    );
    match next_event(&mut b_ev).await {
        Event::Presence { presence } => assert!(presence.online && presence.player_id == a_id),
        e => panic!("{e:?}"),
    }
    assert!(b.presence(a_id).await.unwrap().online);
    let dm = format!("dm.{}.{}", a_id.min(b_id), a_id.max(b_id));
    a.send_chat(&dm, "gg").await.unwrap();
    match next_non_presence(&mut b_ev).await {
        Event::Chat { message } => {
            assert_eq!((message.body.as_str(), message.sender), ("gg", a_id))
        }
        e => panic!("{e:?}"),
    }
    // A party channel reaches every member.
    let party = a
        .create_lobby(&CreateLobby {
            kind: "party".into(),
            name: None,
            max_members: 4,
            open: false,
            attrs: Default::default(),
        })
        .await
        .unwrap();
    a.invite(party.lobby_id, b_id).await.unwrap();
    assert!(
        matches!(next_non_presence(&mut b_ev).await, Event::Lobby { what, .. } if what == "invited")
    );
    b.join_lobby(party.lobby_id).await.unwrap();
    a.send_chat(&format!("lobby.{}", party.lobby_id), "ready?")
        .await
        .unwrap();
    loop {
        match next_non_presence(&mut b_ev).await {
            Event::Chat { message } => {
                assert_eq!(message.body, "ready?");
                break;
            }
            Event::Lobby { .. } => continue,
            e => panic!("{e:?}"),
        }
    }
    let page = b.chat_history(&dm, None, 10).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    // Closing the socket takes A offline.
    a_ev.close().await;
    match next_event(&mut b_ev).await {
        Event::Presence { presence } => assert!(!presence.online),
        e => panic!("{e:?}"),
    }
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchmaking_makes_a_reserved_room_and_results_move_ratings() {
    let mut pools = BTreeMap::new();
    let mut squad = volley_match::PoolConfig::new(4, 4);
    squad.fill_wait_ms = 60_000;
    pools.insert("squad".to_owned(), squad);
    let n = start_node(|c| {
        c.server_key = Some(KEY.into());
        c.pools = pools;
    })
    .await;
    let mut players = Vec::new();
    for i in 0..4 {
        players.push(device(&n.base, &format!("device-mm-{i:04}")).await);
    }
    // Players 0 and 1 queue as a party; 2 and 3 solo; 2 wants eu only.
    let party = players[0]
        .0
        .create_lobby(&CreateLobby {
            kind: "party".into(),
            name: None,
            max_members: 2,
            open: true,
            attrs: Default::default(),
        })
        .await
        .unwrap();
    players[1].0.join_lobby(party.lobby_id).await.unwrap();
    let mut events = Vec::new();
    for (api, _) in &players {
        let mut e = api.events().await.unwrap();
        next_event(&mut e).await;
        events.push(e);
    }
    let lat = |ms: u32| BTreeMap::from([("eu".to_owned(), ms), ("us".to_owned(), 140)]);
    let t_party = players[0]
        .0
        .submit_ticket(&TicketRequest {
            pool: "squad".into(),
            party_id: Some(party.lobby_id),
            latencies: lat(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = players[1]
        .0
        .submit_ticket(&TicketRequest {
            pool: "squad".into(),
            party_id: Some(party.lobby_id),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status_of(e),
        (403, "forbidden".into()),
        "only the leader queues a party"
    );
    let e = players[1]
        .0
        .submit_ticket(&TicketRequest {
            pool: "squad".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status_of(e).1,
        "already_queued",
        "a party member is already queued"
    );
    let mut tickets = vec![t_party.ticket_id.clone()];
    for (api, _) in &players[2..] {
        let t = api
            .submit_ticket(&TicketRequest {
                pool: "squad".into(),
                latencies: lat(45),
                ..Default::default()
            })
            .await
            .unwrap();
        tickets.push(t.ticket_id);
    }
    let mut found = Vec::new();
    for e in &mut events {
        match next_non_presence(e).await {
            Event::MatchFound { found: f } => found.push(f),
            e => panic!("{e:?}"),
        }
    }
    let f = &found[0];
    assert!(found.iter().all(|g| g == f), "everyone got the same match");
    let mut want: Vec<u64> = players.iter().map(|p| p.1).collect();
    want.sort();
    let mut got = f.players.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(f.region.as_deref(), Some("eu"));
    assert_eq!(f.max_latency_ms, 45);
    // Polling the ticket tells the same (offline matchmaking).
    let st = players[3].0.ticket(&tickets[2]).await.unwrap();
    assert_eq!((st.state.as_str(), st.found.as_ref()), ("matched", Some(f)));
    assert_eq!(
        status_of(players[3].0.ticket(&tickets[0]).await.unwrap_err()).0,
        404,
        "not your ticket"
    );
    // The room admits the match's players only.
    let client = volley_client::Client::new(common::loopback_config(false)).unwrap();
    players[0]
        .0
        .join(f.room_id, client.fingerprint())
        .await
        .unwrap();
    let (outsider, _) = device(&n.base, "device-mm-outsider").await;
    assert_eq!(
        status_of(
            outsider
                .join(f.room_id, client.fingerprint())
                .await
                .unwrap_err()
        ),
        (403, "not_in_match".into())
    );
    // The node (server key) reports the result once; ratings move.
    let http = reqwest::Client::new();
    let result = MatchResult {
        placements: vec![
            (players[0].1, 0),
            (players[1].1, 0),
            (players[2].1, 1),
            (players[3].1, 1),
        ],
    };
    let url = format!("{}/v1/matches/{}/result", n.base, f.match_id);
    let r = http
        .post(&url)
        .header("x-volley-server-key", KEY)
        .json(&result)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .post(&url)
        .header("x-volley-server-key", KEY)
        .json(&result)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409, "a result counts once");
    let r = http.post(&url).json(&result).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let winner = players[0].0.rating("squad").await.unwrap();
    let loser = players[3].0.rating("squad").await.unwrap();
    assert!(
        winner.rating > 1500.0 && loser.rating < 1500.0,
        "{winner:?} {loser:?}"
    );
    assert_eq!((winner.games, loser.games), (1, 1));
    assert!(winner.deviation < 350.0);
    // A cancelled ticket never matches.
    let t = outsider
        .submit_ticket(&TicketRequest {
            pool: "duel".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    outsider.cancel_ticket(&t.ticket_id).await.unwrap();
    assert_eq!(
        outsider.ticket(&t.ticket_id).await.unwrap().state,
        "cancelled"
    );
    assert_eq!(
        status_of(outsider.cancel_ticket(&t.ticket_id).await.unwrap_err()).1,
        "not_queued"
    );
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_tickets_survive_a_node_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: std::path::PathBuf| async move {
        volley_server::Node::start(volley_server::NodeConfig {
            data_dir: dir,
            http_addr: "127.0.0.1:0".parse().unwrap(),
            quic_addr: "127.0.0.1:0".parse().unwrap(),
            ..volley_server::NodeConfig::default()
        })
        .await
        .unwrap()
    };
    let node = start(dir.path().to_owned()).await;
    let base = format!("http://{}", node.http_addr);
    let (a, _) = device(&base, "device-restart-a").await;
    let t = a
        .submit_ticket(&TicketRequest {
            pool: "duel".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    node.shutdown().await;
    let node = start(dir.path().to_owned()).await;
    let base = format!("http://{}", node.http_addr);
    assert_eq!(node.platform().queued_tickets(), 1);
    let (b, _) = device(&base, "device-restart-b").await;
    let tb = b
        .submit_ticket(&TicketRequest {
            pool: "duel".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut a2 = Api::new(&base);
    a2.login_device("device-restart-a").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = a2.ticket(&t.ticket_id).await.unwrap();
        if st.state == "matched" {
            let other = b.ticket(&tb.ticket_id).await.unwrap();
            assert_eq!(other.found, st.found);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no match after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await;
}

/// Two nodes on one PostgreSQL and one NATS: chat and presence cross between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_postgres_and_nats() {
    let url = volley_store::testing::empty_postgres()
        .await
        .expect("PostgreSQL for tests");
    let nats = volley_store::testing::nats_url();
    // Node a ranks leaderboards in memory, node b in Redis: both must agree.
    let redis = format!(
        "redis://{}/",
        std::env::var("VOLLEY_TEST_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into())
    );
    let n1 = start_node(|c| {
        c.database = Some(url.clone());
        c.nats = Some(nats.clone());
        c.node_id = "node-a".into();
        c.server_key = Some(KEY.into());
    })
    .await;
    let n2 = start_node(|c| {
        c.database = Some(url.clone());
        c.nats = Some(nats.clone());
        c.node_id = "node-b".into();
        c.server_key = Some(KEY.into());
        c.redis = Some(redis.clone());
        c.redis_prefix = format!("volley-test-http:{}:", std::process::id());
    })
    .await;
    // One account, seen from both nodes.
    let (a1, a_id) = device(&n1.base, "device-cluster-a").await;
    let (b2, b_id) = device(&n2.base, "device-cluster-b").await;
    let mut a_on_2 = Api::new(&n2.base);
    assert_eq!(
        a_on_2
            .login_device("device-cluster-a")
            .await
            .unwrap()
            .player_id,
        a_id
    );
    a1.add_friend(b_id).await.unwrap();
    b2.add_friend(a_id).await.unwrap();
    // A listens on node 1; B on node 2.
    let mut a_ev = a1.events().await.unwrap();
    next_event(&mut a_ev).await;
    let mut b_ev = b2.events().await.unwrap();
    next_event(&mut b_ev).await;
    // B's coming online (on node 2) reaches A (on node 1).
    match next_event(&mut a_ev).await {
        Event::Presence { presence } => assert!(presence.online && presence.player_id == b_id),
        e => panic!("{e:?}"),
    }
    // Presence is one answer across the cluster.
    assert!(a1.presence(b_id).await.unwrap().online);
    // Chat sent through node 2 arrives on node 1's socket, and the reverse.
    let dm = format!("dm.{}.{}", a_id.min(b_id), a_id.max(b_id));
    b2.send_chat(&dm, "from node b").await.unwrap();
    match next_non_presence(&mut a_ev).await {
        Event::Chat { message } => assert_eq!(message.body, "from node b"),
        e => panic!("{e:?}"),
    }
    a1.send_chat(&dm, "from node a").await.unwrap();
    // B's own message comes back to B's socket first (other devices see what it sent).
    match next_non_presence(&mut b_ev).await {
        Event::Chat { message } => assert_eq!(
            (message.body.as_str(), message.sender),
            ("from node b", b_id)
        ),
        e => panic!("{e:?}"),
    }
    match next_non_presence(&mut b_ev).await {
        Event::Chat { message } => assert_eq!(
            (message.body.as_str(), message.sender),
            ("from node a", a_id)
        ),
        e => panic!("{e:?}"),
    }
    // History is shared.
    let h = a_on_2.chat_history(&dm, None, 10).await.unwrap();
    assert_eq!(
        h.messages
            .iter()
            .map(|m| m.body.as_str())
            .collect::<Vec<_>>(),
        vec!["from node a", "from node b"]
    );
    // B leaving node 2 is seen on node 1 (after A's own message echoed back to it).
    b_ev.close().await;
    loop {
        match next_event(&mut a_ev).await {
            Event::Presence { presence } => {
                assert!(!presence.online && presence.player_id == b_id);
                break;
            }
            Event::Chat { message } if message.sender == a_id => continue,
            e => panic!("{e:?}"),
        }
    }
    // Leaderboards: scores submitted on either node rank the same on both.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/admin/leaderboards", n1.base))
        .header("x-volley-server-key", KEY)
        .json(&serde_json::json!({"id": "cluster", "descending": true, "operator": "best"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let top = |base: String| {
        let http = http.clone();
        let token = a1.token().unwrap().to_owned();
        async move {
            let v: serde_json::Value = http
                .get(format!("{base}/v1/leaderboards/cluster?count=10"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["player_id"].as_u64().unwrap(),
                        r["score"].as_i64().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    // Both nodes load the empty board first, so each must notice the other's writes.
    assert!(top(n1.base.clone()).await.is_empty());
    assert!(top(n2.base.clone()).await.is_empty());
    for (base, player, score) in [
        (&n1.base, a_id, 10),
        (&n2.base, b_id, 20),
        (&n2.base, a_id, 30),
        (&n1.base, b_id, 25),
    ] {
        let r = http
            .post(format!("{base}/v1/leaderboards/cluster/scores"))
            .header("x-volley-server-key", KEY)
            .json(&serde_json::json!({"player": player, "score": score}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let want = vec![(a_id, 30), (b_id, 25)];
    assert_eq!(top(n1.base.clone()).await, want);
    assert_eq!(top(n2.base.clone()).await, want);
    n1.node.shutdown().await;
    n2.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderboards_over_http_accept_scores_only_from_the_server() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/admin/leaderboards", n.base))
        .header("x-volley-server-key", KEY)
        .json(&serde_json::json!({"id": "season-1", "descending": true, "operator": "best"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let mut players = Vec::new();
    for i in 0..5 {
        players.push(device(&n.base, &format!("device-board-{i:03}")).await);
    }
    for (i, (_, id)) in players.iter().enumerate() {
        for score in [10 * i as i64, 5] {
            let r = http
                .post(format!("{}/v1/leaderboards/season-1/scores", n.base))
                .header("x-volley-server-key", KEY)
                .json(&serde_json::json!({"player": id, "score": score, "metadata": {"map": "docks"}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    }
    // A player cannot submit its own score.
    let token = players[0].0.token().unwrap().to_owned();
    let r = http
        .post(format!("{}/v1/leaderboards/season-1/scores", n.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"player": players[0].1, "score": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let top: serde_json::Value = http
        .get(format!("{}/v1/leaderboards/season-1?count=3", n.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let top = &top["records"];
    let scores: Vec<i64> = top
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_i64().unwrap())
        .collect();
    assert_eq!(
        scores,
        vec![40, 30, 20],
        "best of each player, highest first"
    );
    assert_eq!(top[0]["metadata"], r#"{"map":"docks"}"#);
    let around: serde_json::Value = http
        .get(format!(
            "{}/v1/leaderboards/season-1/around-me?radius=1",
            n.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ranks: Vec<u64> = around
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ranks,
        vec![3, 4],
        "player 0 (score 5, tie broken by id string) is last"
    );
    let rank: serde_json::Value = http
        .get(format!(
            "{}/v1/leaderboards/season-1/rank/{}",
            n.base, players[4].1
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rank["rank"], 0);
    n.node.shutdown().await;
}

/// The economy and leaderboards as a game uses them: only SDK calls, server-key calls included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn economy_and_leaderboards_through_the_sdk() {
    use volley_proto::api::{
        BoardDef, BonusCode, Gift, GrantRequest, Operator, Redemption, ScoreRequest, StoreItem,
    };
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let (alice, a) = device(&n.base, "device-sdk-alice").await;
    let (bob, b) = device(&n.base, "device-sdk-bob").await;
    let admin = Api::new(&n.base);
    admin
        .put_store_item(
            KEY,
            &StoreItem {
                sku: "sword".into(),
                price_currency: "gold".into(),
                price: 40,
                gives_currency: "item:sword".into(),
                gives_amount: 1,
                item_type: Some("sword".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(alice.store().await.unwrap()[0].sku, "sword");
    let grant = GrantRequest {
        id: "match-77-reward".into(),
        player: a,
        currency: "gold".into(),
        amount: 100,
        kind: Some("reward".into()),
    };
    assert!(!admin.grant(KEY, &grant).await.unwrap().replayed);
    assert!(admin.grant(KEY, &grant).await.unwrap().replayed, "a retry");
    // A player cannot grant itself anything.
    assert!(alice.grant("not-the-key-0123456789", &grant).await.is_err());
    let bought = alice.purchase("sword", "buy-1").await.unwrap();
    assert!(!bought.replayed);
    assert!(alice.purchase("sword", "buy-1").await.unwrap().replayed);
    let w = alice.wallet().await.unwrap();
    let gold = |w: &volley_proto::api::WalletView| {
        w.balances
            .iter()
            .find(|x| x.currency == "gold")
            .map_or(0, |x| x.balance)
    };
    assert_eq!(gold(&w), 60, "paid once");
    assert_eq!(w.items.len(), 1, "delivered once");
    let sword = w.items[0].0.clone();
    // The sword and some gold go to Bob; the history shows it.
    alice
        .gift(&Gift::new(
            "give-sword",
            b,
            "item:sword",
            1,
            Some(sword.clone()),
        ))
        .await
        .unwrap();
    alice
        .gift(&Gift::new("give-gold", b, "gold", 25, None))
        .await
        .unwrap();
    let bw = bob.wallet().await.unwrap();
    assert_eq!(bw.items, vec![(sword, "sword".to_owned())]);
    assert_eq!(gold(&bw), 25);
    assert!(alice.wallet().await.unwrap().items.is_empty());
    assert_eq!(gold(&alice.wallet().await.unwrap()), 35);
    let h = alice.wallet_history(None, 10).await.unwrap().transfers;
    assert!(h.len() >= 4, "{h:?}");
    assert!(h.windows(2).all(|p| p[0].seq > p[1].seq), "newest first");
    let older = alice.wallet_history(Some(h[1].seq), 10).await.unwrap();
    assert_eq!(older.transfers[0], h[2]);
    // Pages chain by their cursor and end without one.
    let first = alice.wallet_history(None, 2).await.unwrap();
    assert_eq!(first.transfers.len(), 2);
    let next = first.next_before.expect("more pages");
    let second = alice.wallet_history(Some(next), 100).await.unwrap();
    assert_eq!(second.transfers[0], h[2]);
    assert_eq!(second.next_before, None);
    // Overspending is refused, not wrapped.
    assert!(alice
        .gift(&Gift::new("too-much", b, "gold", 36, None))
        .await
        .is_err());
    // Bonus codes: three accounts on one device; the third redemption is held for review.
    admin
        .create_bonus_code(
            KEY,
            &BonusCode {
                code: "WELCOME-5".into(),
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
    let mut outcomes = Vec::new();
    for i in 0..3 {
        let mut farm = Api::new(&n.base);
        farm.set_device("one-phone-many-accounts");
        farm.login_device(&format!("device-farm-sdk-{i}"))
            .await
            .unwrap();
        outcomes.push(farm.redeem("WELCOME-5", "r").await.unwrap());
    }
    assert!(matches!(outcomes[0], Redemption::Redeemed { .. }));
    assert!(matches!(outcomes[1], Redemption::Redeemed { .. }));
    match &outcomes[2] {
        Redemption::Held { reasons, .. } => {
            assert!(
                reasons.iter().any(|r| r.contains("shared device")),
                "{reasons:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Alice's own device is not part of it; her address (loopback, shared with the three) is.
    match alice.redeem("WELCOME-5", "r").await.unwrap() {
        Redemption::Held { reasons, .. } => {
            assert!(
                reasons.iter().all(|r| !r.contains("shared device")),
                "{reasons:?}"
            );
            assert!(
                reasons.iter().any(|r| r.contains("shared address")),
                "{reasons:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Leaderboards.
    admin
        .create_leaderboard(
            KEY,
            &BoardDef {
                id: "sdk-weekly".into(),
                descending: true,
                operator: Operator::Incr,
                reset_cron: Some("0 0 * * 1".into()),
            },
        )
        .await
        .unwrap();
    for (p, s) in [(a, 10), (b, 7), (a, 5)] {
        admin
            .submit_score(
                KEY,
                "sdk-weekly",
                &ScoreRequest {
                    player: p,
                    score: s,
                    metadata: Some(serde_json::json!({"kills": s})),
                },
            )
            .await
            .unwrap();
    }
    let top = bob.leaderboard("sdk-weekly", 0, 10).await.unwrap();
    assert_eq!(top.next_start, None, "one page holds both");
    let first = bob.leaderboard("sdk-weekly", 0, 1).await.unwrap();
    assert_eq!(first.next_start, Some(1));
    let second = bob.leaderboard("sdk-weekly", 1, 1).await.unwrap();
    assert_eq!((second.records.len(), second.next_start), (1, None));
    let top = top.records;
    assert_eq!(
        top.iter()
            .map(|r| (r.player_id, r.score))
            .collect::<Vec<_>>(),
        vec![(a, 15), (b, 7)]
    );
    assert_eq!(top[0].metadata, r#"{"kills":5}"#);
    assert_eq!(
        bob.leaderboard_rank("sdk-weekly", b).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        bob.leaderboard_around_me("sdk-weekly", 1)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(bob
        .leaderboard_season("sdk-weekly", 1, 0, 10)
        .await
        .unwrap()
        .records
        .is_empty());
    // Players cannot submit scores.
    assert!(bob
        .submit_score(
            "wrong-key-0123456789abc",
            "sdk-weekly",
            &ScoreRequest {
                player: b,
                score: 1000,
                metadata: None
            }
        )
        .await
        .is_err());
    n.node.shutdown().await;
}
