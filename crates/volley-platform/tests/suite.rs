//! The backend-generic suite: every test here runs once on SQLite and once on PostgreSQL (a
//! fresh database each), through the services' real interface and a real bus.

use std::time::Duration;

use volley_platform::{ErrorKind, Platform, PlatformConfig};
use volley_proto::api::{CreateLobby, Event, UpdateLobby};
use volley_store::testing::TestDb;
use volley_store::{Backend, Bus};

async fn platform(backend: Backend, cfg: PlatformConfig) -> (Platform, TestDb) {
    let t = TestDb::new(backend).await.expect("test database");
    (
        Platform::new(t.db.clone(), Bus::local(), cfg).expect("platform"),
        t,
    )
}

fn cfg() -> PlatformConfig {
    PlatformConfig {
        server_key: "studio-secret".into(),
        ..PlatformConfig::default()
    }
}

async fn next_event(s: &mut volley_platform::events::EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("an event within 5 s")
        .expect("stream open")
}

async fn device_login_and_tokens(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let s1 = p.login_device("device-aaaa-1").await.unwrap();
    assert!(s1.created);
    let s2 = p.login_device("device-aaaa-1").await.unwrap();
    assert!(!s2.created);
    assert_eq!(s1.player_id, s2.player_id);
    assert_ne!(s1.token, s2.token);
    assert_eq!(p.authenticate(&s1.token).await.unwrap(), s1.player_id);
    assert_eq!(p.authenticate(&s2.token).await.unwrap(), s1.player_id);
    let other = p.login_device("device-bbbb-2").await.unwrap();
    assert_ne!(other.player_id, s1.player_id);
    for bad in ["", "x", &"f".repeat(64), &format!("{}0", s1.token)] {
        assert_eq!(
            p.authenticate(bad).await.unwrap_err().kind,
            ErrorKind::Unauthorized
        );
    }
    assert_eq!(
        p.login_device("short").await.unwrap_err().code,
        "bad_device_id"
    );
    // The database never holds a token in the clear.
    let row: (String,) = sqlx::query_as("SELECT token_hash FROM sessions LIMIT 1")
        .fetch_one(p.db().reader())
        .await
        .unwrap();
    assert_ne!(row.0, s1.token);
    p.logout(&s1.token, Some(&s1.refresh_token)).await.unwrap();
    assert!(p.authenticate(&s1.token).await.is_err());
    assert!(p.authenticate(&s2.token).await.is_ok());
    assert!(p.refresh(&s1.refresh_token).await.is_err());
}

async fn email_register_and_login(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let s = p
        .register_email("Ann@Example.com", "correct horse", Some("Ann"))
        .await
        .unwrap();
    let again = p
        .register_email("ann@example.com", "whatever123", None)
        .await;
    assert_eq!(again.unwrap_err().kind, ErrorKind::Conflict);
    let l = p
        .login_email("ANN@example.com", "correct horse")
        .await
        .unwrap();
    assert_eq!(l.player_id, s.player_id);
    let e = p
        .login_email("ann@example.com", "wrong horse")
        .await
        .unwrap_err();
    assert_eq!(e.code, "invalid_credentials");
    let e = p
        .login_email("nobody@example.com", "correct horse")
        .await
        .unwrap_err();
    assert_eq!(
        e.code, "invalid_credentials",
        "unknown email looks the same"
    );
    assert_eq!(
        p.register_email("not-an-email", "correct horse", None)
            .await
            .unwrap_err()
            .code,
        "bad_email"
    );
    assert_eq!(
        p.register_email("b@example.com", "short", None)
            .await
            .unwrap_err()
            .code,
        "bad_password"
    );
    let info = p.account(s.player_id).await.unwrap();
    assert_eq!(info.display_name, "Ann");
    assert_eq!(
        info.links,
        vec![("email".to_owned(), "ann@example.com".to_owned())]
    );
    // The stored secret is an Argon2id PHC string with the configured cost.
    let (secret,): (String,) = sqlx::query_as("SELECT secret FROM auth_ids WHERE kind = 'email'")
        .fetch_one(p.db().reader())
        .await
        .unwrap();
    assert!(
        secret.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{secret}"
    );
}

async fn refresh_rotates_and_reuse_revokes_the_family(b: Backend) {
    let (p, _t) = platform(
        b,
        PlatformConfig {
            refresh_grace_ms: 0,
            ..cfg()
        },
    )
    .await;
    let s0 = p.login_device("device-refresh-1").await.unwrap();
    let other_login = p.login_device("device-refresh-1").await.unwrap();
    let s1 = p.refresh(&s0.refresh_token).await.unwrap();
    assert_eq!(s1.player_id, s0.player_id);
    assert_ne!(s1.refresh_token, s0.refresh_token);
    let s2 = p.refresh(&s1.refresh_token).await.unwrap();
    assert!(p.authenticate(&s2.token).await.is_ok());
    tokio::time::sleep(Duration::from_millis(5)).await;
    // s0's refresh token was stolen and is replayed: the family dies.
    let e = p.refresh(&s0.refresh_token).await.unwrap_err();
    assert_eq!(e.code, "refresh_reused");
    assert!(
        p.refresh(&s2.refresh_token).await.is_err(),
        "the newest token of the family is dead too"
    );
    assert!(
        p.authenticate(&s2.token).await.is_err(),
        "and so are the sessions"
    );
    // Another login's family is a different family, but its sessions were ended as well.
    assert!(p.authenticate(&other_login.token).await.is_err());
    assert!(
        p.refresh(&other_login.refresh_token).await.is_ok(),
        "other family survives"
    );
    assert!(p.refresh("junk").await.is_err());
}

async fn refresh_race_within_grace_is_benign(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let s0 = p.login_device("device-grace-1").await.unwrap();
    let a = p.refresh(&s0.refresh_token).await.unwrap();
    let b2 = p.refresh(&s0.refresh_token).await.unwrap();
    // Not refused (a client retrying its refresh), but one live session per login: the
    // newest.
    assert!(p.authenticate(&a.token).await.is_err());
    assert!(p.authenticate(&b2.token).await.is_ok());
    // Either refresh token of the pair still carries the login on.
    let c = p.refresh(&a.refresh_token).await.unwrap();
    assert!(p.authenticate(&c.token).await.is_ok());
    assert!(p.authenticate(&b2.token).await.is_err());
}

async fn brute_force_is_slowed_then_capped(b: Backend) {
    let (p, _t) = platform(
        b,
        PlatformConfig {
            login_free_failures: 2,
            login_max_failures: 5,
            login_window_ms: 3_600_000,
            ..cfg()
        },
    )
    .await;
    p.register_email("victim@example.com", "right password", None)
        .await
        .unwrap();
    for _ in 0..2 {
        let e = p
            .login_email("victim@example.com", "guess")
            .await
            .unwrap_err();
        assert_eq!(e.code, "invalid_credentials");
    }
    // Third failure locks for 1 s.
    assert_eq!(
        p.login_email("victim@example.com", "guess")
            .await
            .unwrap_err()
            .code,
        "invalid_credentials"
    );
    let e = p
        .login_email("victim@example.com", "right password")
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::TooMany(ms) if ms <= 1000),
        "{e:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Fourth failure locks for 2 s.
    assert_eq!(
        p.login_email("victim@example.com", "guess")
            .await
            .unwrap_err()
            .code,
        "invalid_credentials"
    );
    let e = p
        .login_email("victim@example.com", "guess")
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::TooMany(ms) if ms > 1000 && ms <= 2000),
        "{e:?}"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Fifth failure reaches the cap: locked for the rest of the hour, even the right password.
    assert_eq!(
        p.login_email("victim@example.com", "guess")
            .await
            .unwrap_err()
            .code,
        "invalid_credentials"
    );
    let e = p
        .login_email("victim@example.com", "right password")
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::TooMany(ms) if ms > 3_000_000),
        "{e:?}"
    );
    // Another account is unaffected.
    p.register_email("bystander@example.com", "right password", None)
        .await
        .unwrap();
    assert!(p
        .login_email("bystander@example.com", "right password")
        .await
        .is_ok());
}

async fn ban_and_delete_end_sessions_at_once(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let s = p.login_device("device-ban-0001").await.unwrap();
    assert!(p.authenticate(&s.token).await.is_ok());
    p.set_banned(s.player_id, true).await.unwrap();
    assert_eq!(
        p.authenticate(&s.token).await.unwrap_err().kind,
        ErrorKind::Unauthorized
    );
    assert_eq!(
        p.login_device("device-ban-0001").await.unwrap_err().kind,
        ErrorKind::Forbidden
    );
    assert!(p.refresh(&s.refresh_token).await.is_err());
    p.set_banned(s.player_id, false).await.unwrap();
    let s2 = p.login_device("device-ban-0001").await.unwrap();
    assert_eq!(s2.player_id, s.player_id);
    assert!(
        p.authenticate(&s.token).await.is_err(),
        "a ban's revocation outlives the unban"
    );

    p.delete_account(s2.player_id).await.unwrap();
    assert!(p.authenticate(&s2.token).await.is_err());
    let fresh = p.login_device("device-ban-0001").await.unwrap();
    assert!(fresh.created);
    assert_ne!(fresh.player_id, s2.player_id);
    assert_eq!(p.account(s2.player_id).await.unwrap().status, "deleted");
}

async fn link_and_unlink(b: Backend) {
    use volley_platform::accounts::AuthKind;
    let (p, _t) = platform(b, cfg()).await;
    let s = p.login_device("device-link-001").await.unwrap();
    p.link(
        s.player_id,
        AuthKind::Email,
        "linked@example.com",
        Some("a password"),
    )
    .await
    .unwrap();
    let via_email = p
        .login_email("linked@example.com", "a password")
        .await
        .unwrap();
    assert_eq!(via_email.player_id, s.player_id);
    let other = p.login_device("device-link-002").await.unwrap();
    let e = p
        .link(other.player_id, AuthKind::Device, "device-link-001", None)
        .await
        .unwrap_err();
    assert_eq!(e.code, "already_linked");
    p.unlink(s.player_id, AuthKind::Device, "device-link-001")
        .await
        .unwrap();
    let e = p
        .unlink(s.player_id, AuthKind::Email, "linked@example.com")
        .await
        .unwrap_err();
    assert_eq!(e.code, "last_link");
    assert!(
        p.login_email("linked@example.com", "a password")
            .await
            .is_ok(),
        "refused unlink kept the link"
    );
    let c = p.login_custom("studio-player-9").await.unwrap();
    assert!(c.created);
    assert_eq!(
        p.login_custom("studio-player-9").await.unwrap().player_id,
        c.player_id
    );
    assert!(p.check_server_key("studio-secret"));
    assert!(!p.check_server_key("studio-secreT"));
    assert!(!p.check_server_key(""));
}

async fn friends_requests_and_blocks(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let a = p.login_device("device-friend-a").await.unwrap().player_id;
    let c = p.login_device("device-friend-c").await.unwrap().player_id;
    let d = p.login_device("device-friend-d").await.unwrap().player_id;
    let mut c_events = p.events(c).await.unwrap();
    assert_eq!(p.add_friend(a, c).await.unwrap().state, "invite_sent");
    assert_eq!(
        next_event(&mut c_events).await,
        Event::Friend {
            player_id: a,
            state: "invite_received".into()
        }
    );
    assert_eq!(p.friends(c).await.unwrap()[0].state, "invite_received");
    assert_eq!(p.add_friend(c, a).await.unwrap().state, "friend");
    assert_eq!(p.friend_ids(a).await.unwrap(), vec![c]);
    assert_eq!(p.friend_ids(c).await.unwrap(), vec![a]);
    // d is blocked by c: d's request looks sent but c never sees it.
    p.block(c, d).await.unwrap();
    assert_eq!(p.add_friend(d, c).await.unwrap().state, "invite_sent");
    assert!(p.friends(d).await.unwrap().is_empty());
    assert!(p.blocks(c, d).await.unwrap());
    assert_eq!(p.add_friend(a, a).await.unwrap_err().code, "self");
    assert_eq!(
        p.add_friend(a, 999_999).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    p.remove_friend(a, c).await.unwrap();
    assert!(p.friend_ids(c).await.unwrap().is_empty());
}

async fn parties_and_lobbies(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            p.login_device(&format!("device-lobby-{i:02}"))
                .await
                .unwrap()
                .player_id,
        );
    }
    let party = p
        .create_lobby(
            ids[0],
            &CreateLobby {
                kind: "party".into(),
                name: None,
                max_members: 3,
                open: false,
                attrs: Default::default(),
            },
        )
        .await
        .unwrap();
    assert_eq!(party.leader, ids[0]);
    let pid = party.lobby_id;
    assert_eq!(
        p.join_lobby(ids[1], pid).await.unwrap_err().kind,
        ErrorKind::Forbidden,
        "closed party needs an invite"
    );
    let mut ev1 = p.events(ids[1]).await.unwrap();
    p.invite(ids[0], pid, ids[1]).await.unwrap();
    assert!(matches!(next_event(&mut ev1).await, Event::Lobby { what, .. } if what == "invited"));
    p.join_lobby(ids[1], pid).await.unwrap();
    p.invite(ids[1], pid, ids[2]).await.unwrap();
    p.invite(ids[1], pid, ids[3]).await.unwrap();
    p.join_lobby(ids[2], pid).await.unwrap();
    assert_eq!(
        p.join_lobby(ids[3], pid).await.unwrap_err().code,
        "lobby_full"
    );
    // A player is in one party at a time.
    let e = p
        .create_lobby(
            ids[1],
            &CreateLobby {
                kind: "party".into(),
                name: None,
                max_members: 2,
                open: true,
                attrs: Default::default(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "already_in_party");
    assert_eq!(
        p.kick(ids[1], pid, ids[2]).await.unwrap_err().kind,
        ErrorKind::Forbidden,
        "only the leader kicks"
    );
    p.kick(ids[0], pid, ids[2]).await.unwrap();
    p.promote(ids[0], pid, ids[1]).await.unwrap();
    assert_eq!(p.lobby(pid).await.unwrap().leader, ids[1]);
    p.leave_lobby(ids[1], pid).await.unwrap();
    let l = p.lobby(pid).await.unwrap();
    assert_eq!(
        (l.leader, l.members.clone()),
        (ids[0], vec![ids[0]]),
        "leadership passes on"
    );
    p.leave_lobby(ids[0], pid).await.unwrap();
    assert_eq!(
        p.lobby(pid).await.unwrap_err().kind,
        ErrorKind::NotFound,
        "empty party closes"
    );

    // An open lobby with attributes: search, and capacity under concurrent joins.
    let mut attrs = serde_json::Map::new();
    attrs.insert("map".into(), "docks".into());
    attrs.insert("ranked".into(), true.into());
    let lobby = p
        .create_lobby(
            ids[0],
            &CreateLobby {
                kind: "lobby".into(),
                name: Some("Docks".into()),
                max_members: 4,
                open: true,
                attrs,
            },
        )
        .await
        .unwrap();
    let found = p
        .search_lobbies(
            "lobby",
            &[
                ("map".into(), "docks".into()),
                ("ranked".into(), "true".into()),
            ],
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|l| l.lobby_id).collect::<Vec<_>>(),
        vec![lobby.lobby_id]
    );
    assert!(p
        .search_lobbies("lobby", &[("map".into(), "pier".into())], 10)
        .await
        .unwrap()
        .is_empty());
    let joins = ids[1..].iter().map(|id| {
        let p = p.clone();
        let id = *id;
        tokio::spawn(async move { p.join_lobby(id, lobby.lobby_id).await })
    });
    let results = futures_join(joins).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3, "exactly the free seats were taken");
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| e.code == "lobby_full"));
    let l = p.lobby(lobby.lobby_id).await.unwrap();
    assert_eq!(l.members.len(), 4);
    assert!(
        p.search_lobbies("lobby", &[("map".into(), "docks".into())], 10)
            .await
            .unwrap()
            .is_empty(),
        "full lobbies are not listed"
    );
    let upd = p
        .update_lobby(
            ids[0],
            lobby.lobby_id,
            &UpdateLobby {
                attrs: None,
                open: Some(false),
            },
        )
        .await
        .unwrap();
    assert!(!upd.open);
    let mut bad = serde_json::Map::new();
    bad.insert("nested".into(), serde_json::json!({"a": 1}));
    let e = p
        .create_lobby(
            ids[7],
            &CreateLobby {
                kind: "lobby".into(),
                name: None,
                max_members: 4,
                open: true,
                attrs: bad,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "bad_attrs");
    // Groups: larger, searchable by kind, never mixed with lobbies.
    let g = p
        .create_lobby(
            ids[7],
            &CreateLobby {
                kind: "group".into(),
                name: Some("Clan".into()),
                max_members: 1000,
                open: true,
                attrs: Default::default(),
            },
        )
        .await
        .unwrap();
    let groups = p.search_lobbies("group", &[], 10).await.unwrap();
    assert_eq!(
        groups.iter().map(|l| l.lobby_id).collect::<Vec<_>>(),
        vec![g.lobby_id]
    );
    assert!(p
        .search_lobbies("lobby", &[], 10)
        .await
        .unwrap()
        .iter()
        .all(|l| l.kind == "lobby"));
    assert_eq!(
        p.search_lobbies("party", &[], 10).await.unwrap_err().code,
        "bad_kind"
    );
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.expect("task"));
    }
    out
}

async fn chat_history_limits_and_delivery(b: Backend) {
    let (p, _t) = platform(
        b,
        PlatformConfig {
            chat_per_s: 1000.0,
            chat_burst: 1000.0,
            ..cfg()
        },
    )
    .await;
    let a = p.login_device("device-chat-aa").await.unwrap().player_id;
    let c = p.login_device("device-chat-cc").await.unwrap().player_id;
    let outsider = p.login_device("device-chat-zz").await.unwrap().player_id;
    let dm = volley_platform::chat::Channel::direct(a, c).name();
    let mut c_events = p.events(c).await.unwrap();
    for i in 0..25 {
        p.send_chat(a, &dm, &format!("msg {i}")).await.unwrap();
    }
    for i in 0..25 {
        match next_event(&mut c_events).await {
            Event::Chat { message } => assert_eq!(message.body, format!("msg {i}")),
            other => panic!("{other:?}"),
        }
    }
    // Paging: newest first, 10 at a time, nothing lost or repeated.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = p.chat_history(c, &dm, before, 10).await.unwrap();
        seen.extend(page.messages.iter().map(|m| m.body.clone()));
        match page.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).rev().map(|i| format!("msg {i}")).collect();
    assert_eq!(seen, want);
    assert_eq!(
        p.chat_history(outsider, &dm, None, 10)
            .await
            .unwrap_err()
            .kind,
        ErrorKind::Forbidden
    );
    assert_eq!(
        p.send_chat(outsider, &dm, "hi").await.unwrap_err().kind,
        ErrorKind::Forbidden
    );
    assert_eq!(
        p.send_chat(a, &dm, &"x".repeat(2049))
            .await
            .unwrap_err()
            .code,
        "bad_body"
    );
    assert_eq!(p.send_chat(a, &dm, "").await.unwrap_err().code, "bad_body");
    assert_eq!(
        p.send_chat(a, "dm.5.3", "hi").await.unwrap_err().code,
        "bad_channel"
    );
    p.block(c, a).await.unwrap();
    assert_eq!(
        p.send_chat(a, &dm, "hello?").await.unwrap_err().kind,
        ErrorKind::Forbidden
    );
}

async fn chat_rate_limit(b: Backend) {
    let (p, _t) = platform(
        b,
        PlatformConfig {
            chat_per_s: 1.0,
            chat_burst: 3.0,
            ..cfg()
        },
    )
    .await;
    let a = p.login_device("device-rate-aa").await.unwrap().player_id;
    let party = p
        .create_lobby(
            a,
            &CreateLobby {
                kind: "party".into(),
                name: None,
                max_members: 2,
                open: false,
                attrs: Default::default(),
            },
        )
        .await
        .unwrap();
    let ch = format!("lobby.{}", party.lobby_id);
    for _ in 0..3 {
        p.send_chat(a, &ch, "spam").await.unwrap();
    }
    let e = p.send_chat(a, &ch, "spam").await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::TooMany(_)), "{e:?}");
    assert_eq!(
        p.chat_history(a, &ch, None, 100)
            .await
            .unwrap()
            .messages
            .len(),
        3
    );
}

async fn presence_reaches_friends(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let a = p.login_device("device-pres-aa").await.unwrap().player_id;
    let c = p.login_device("device-pres-cc").await.unwrap().player_id;
    p.add_friend(a, c).await.unwrap();
    p.add_friend(c, a).await.unwrap();
    let mut c_events = p.events(c).await.unwrap();
    p.set_online(a, "in menu").await.unwrap();
    match next_event(&mut c_events).await {
        Event::Presence { presence } => {
            assert_eq!((presence.player_id, presence.online), (a, true));
            assert_eq!(presence.status.as_deref(), Some("in menu"));
        }
        other => panic!("{other:?}"),
    }
    assert!(p.presence(a).await.unwrap().online);
    p.set_offline(a).await.unwrap();
    match next_event(&mut c_events).await {
        Event::Presence { presence } => assert!(!presence.online),
        other => panic!("{other:?}"),
    }
    assert!(!p.presence(a).await.unwrap().online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_pool_sheds_load_instead_of_queueing_without_bound() {
    let h = std::sync::Arc::new(volley_platform::hasher::Hasher::new(19_456, 2, 1, 2));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move { h.hash(format!("password {i}")).await })
        })
        .collect();
    let mut ok = 0;
    let mut shed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(phc) => {
                assert!(h.verify("password 0".into(), phc.clone()).await.is_ok());
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Overloaded);
                shed += 1;
            }
        }
    }
    // One worker and two waiting: at most three of the twenty were accepted at once.
    assert!((1..=3).contains(&ok), "ok {ok}");
    assert_eq!(ok + shed, 20);
    assert_eq!(h.shed(), shed as u64);
    // Once idle, it accepts again.
    assert!(h.hash("later".into()).await.is_ok());
}

use volley_platform::economy::{BonusCode, FraudRules, Gift, Origin, Redemption};
use volley_platform::ledger::{AccountRef, Transfer};

fn gift(id: &str, from: u64, to: u64, amount: u64) -> Transfer {
    Transfer {
        id: id.into(),
        debit: AccountRef::wallet(from),
        credit: AccountRef::wallet(to),
        currency: "gold".into(),
        amount,
        kind: "gift".into(),
        item_id: None,
    }
}

async fn players(p: &Platform, tag: &str, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            p.login_device(&format!("device-{tag}-{i:05}"))
                .await
                .unwrap()
                .player_id,
        );
    }
    out
}

async fn ledger_bounds_idempotency_and_limits(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let ids = players(&p, "ledger", 3).await;
    let (a, c, d) = (ids[0], ids[1], ids[2]);
    p.grant("g-a", a, "gold", 100, "grant").await.unwrap();
    let r = p
        .gift(a, &Gift::new("t1", c, "gold", 30, None), &Origin::default())
        .await
        .unwrap();
    assert!(!r.replayed);
    let again = p
        .gift(a, &Gift::new("t1", c, "gold", 30, None), &Origin::default())
        .await
        .unwrap();
    assert!(again.replayed, "a retry returns the first result");
    assert_eq!(again.transfers[0].seq, r.transfers[0].seq);
    let e = p
        .gift(a, &Gift::new("t1", c, "gold", 31, None), &Origin::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, "id_reused");
    assert_eq!(p.balance(&AccountRef::wallet(a), "gold").await.unwrap(), 70);
    assert_eq!(p.balance(&AccountRef::wallet(c), "gold").await.unwrap(), 30);
    assert_eq!(
        p.gift(a, &Gift::new("t2", c, "gold", 71, None), &Origin::default())
            .await
            .unwrap_err()
            .code,
        "insufficient_funds"
    );
    assert_eq!(
        p.balance(&AccountRef::wallet(a), "gold").await.unwrap(),
        70,
        "a refused transfer moves nothing"
    );
    // The failed id was never applied, so it may be used again.
    assert!(p
        .gift(a, &Gift::new("t2", c, "gold", 70, None), &Origin::default())
        .await
        .is_ok());
    // Amounts near the integer limits: refused, never wrapped.
    assert_eq!(
        p.grant("big0", d, "gold", 0, "grant")
            .await
            .unwrap_err()
            .code,
        "bad_amount"
    );
    assert_eq!(
        p.grant("big1", d, "gold", u64::MAX, "grant")
            .await
            .unwrap_err()
            .code,
        "bad_amount"
    );
    assert_eq!(
        p.grant("big2", d, "gold", i64::MAX as u64 + 1, "grant")
            .await
            .unwrap_err()
            .code,
        "bad_amount"
    );
    // The mint already gave out 100 gold, so i64::MAX more would take it past its own bound.
    assert_eq!(
        p.grant("big3", d, "gold", i64::MAX as u64, "grant")
            .await
            .unwrap_err()
            .code,
        "insufficient_funds"
    );
    p.grant("big4", d, "silver", i64::MAX as u64, "grant")
        .await
        .unwrap();
    assert_eq!(
        p.grant("big5", d, "silver", 1, "grant")
            .await
            .unwrap_err()
            .code,
        "over_limit"
    );
    assert_eq!(
        p.balance(&AccountRef::wallet(d), "silver").await.unwrap(),
        i64::MAX
    );
    assert_eq!(
        p.balance(&AccountRef::mint(), "silver").await.unwrap(),
        -i64::MAX
    );
    // The mint went to i64::MIN + 100 + ... and the currency still sums to zero.
    let audit = p.audit().await.unwrap();
    assert!(audit.ok(), "{audit:?}");
    // Linked chain: the second transfer fails, so the first is undone.
    let chain = [gift("c1", c, a, 10), gift("c2", a, d, 1_000_000)];
    assert_eq!(
        p.transfer_chain(&c.to_string(), &chain)
            .await
            .unwrap_err()
            .code,
        "insufficient_funds"
    );
    assert_eq!(
        p.balance(&AccountRef::wallet(c), "gold").await.unwrap(),
        100
    );
    assert_eq!(p.balance(&AccountRef::wallet(a), "gold").await.unwrap(), 0);
    assert!(!p.transfer_exists(&format!("{c}:c1")).await.unwrap());
    assert_eq!(
        p.gift(
            a,
            &Gift::new("bad id with spaces", c, "gold", 1, None),
            &Origin::default()
        )
        .await
        .unwrap_err()
        .code,
        "bad_transfer_id"
    );
    assert_eq!(
        p.gift(a, &Gift::new("x", c, "Gold!", 1, None), &Origin::default())
            .await
            .unwrap_err()
            .code,
        "bad_currency"
    );
    assert_eq!(
        p.gift(a, &Gift::new("x", a, "gold", 1, None), &Origin::default())
            .await
            .unwrap_err()
            .code,
        "same_account"
    );
    let h = p.ledger_history(a, None, 10).await.unwrap();
    assert!(h.len() >= 3 && h.windows(2).all(|w| w[0].seq > w[1].seq));
    // The audit catches money created behind the ledger's back.
    sqlx::query("UPDATE ledger_accounts SET balance = balance + 1 WHERE owner_id = $1 AND currency = 'gold'")
        .bind(c as i64)
        .execute(p.db().writer())
        .await
        .unwrap();
    let bad = p.audit().await.unwrap();
    assert!(!bad.ok());
    assert_eq!(bad.mismatched.len(), 1);
    assert_eq!(bad.unbalanced_currencies, vec![("gold".to_owned(), 1)]);
}

async fn retry_storm_takes_effect_once(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let ids = players(&p, "storm", 2).await;
    p.grant("fund", ids[0], "gold", 10_000, "grant")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..40u64 {
        let copies = 1 + (t % 5);
        for _ in 0..copies {
            let p = p.clone();
            let (a, c) = (ids[0], ids[1]);
            tasks.push(tokio::spawn(async move {
                p.gift(
                    a,
                    &Gift::new(&format!("storm-{t}"), c, "gold", t + 1, None),
                    &Origin::default(),
                )
                .await
            }));
        }
    }
    let mut first = std::collections::HashMap::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        let rec = &r.transfers[0];
        let seq = *first.entry(rec.id.clone()).or_insert(rec.seq);
        assert_eq!(seq, rec.seq, "every copy answers with the same transfer");
    }
    assert_eq!(first.len(), 40);
    let moved: i64 = (1..=40).sum();
    assert_eq!(
        p.balance(&AccountRef::wallet(ids[1]), "gold")
            .await
            .unwrap(),
        moved
    );
    assert_eq!(
        p.balance(&AccountRef::wallet(ids[0]), "gold")
            .await
            .unwrap(),
        10_000 - moved
    );
    let audit = p.audit().await.unwrap();
    assert!(audit.ok(), "{audit:?}");
    assert_eq!(audit.transfers, 41);
}

async fn bonus_code_storm_gives_exactly_the_limit(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let ids = players(&p, "bonus", 1000).await;
    p.create_bonus_code(&BonusCode {
        code: "LAUNCH-100".into(),
        currency: "gems".into(),
        amount: 50,
        global_limit: 100,
        per_player_limit: 1,
        expires_ms: volley_platform::now_ms() + 3_600_000,
        min_account_age_ms: 0,
    })
    .await
    .unwrap();
    let rules = FraudRules {
        velocity_per_min: 1000,
        accounts_per_address: 100_000,
        accounts_per_device: 100_000,
        hold_at: 0.5,
    };
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let p = p.clone();
            let id = *id;
            tokio::spawn(async move {
                p.redeem(id, "LAUNCH-100", "r1", &Origin::default(), &rules)
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Redemption::Redeemed { .. }) => ok += 1,
            Ok(Redemption::Held { .. }) => panic!("nothing should be held"),
            Err(e) => assert_eq!(e.code, "code_exhausted", "{e:?}"),
        }
    }
    assert_eq!(ok, 100);
    let mut paid = 0;
    for id in &ids {
        paid += p.balance(&AccountRef::wallet(*id), "gems").await.unwrap();
    }
    assert_eq!(paid, 100 * 50);
    // A winner cannot redeem twice (per-player limit), even with a new id.
    let winner = {
        let mut w = 0;
        for id in &ids {
            if p.balance(&AccountRef::wallet(*id), "gems").await.unwrap() > 0 {
                w = *id;
                break;
            }
        }
        w
    };
    let e = p
        .redeem(winner, "LAUNCH-100", "r2", &Origin::default(), &rules)
        .await
        .unwrap_err();
    assert!(
        ["code_exhausted", "already_redeemed"].contains(&e.code),
        "{e:?}"
    );
    assert!(
        matches!(p.redeem(winner, "LAUNCH-100", "r1", &Origin::default(), &rules).await.unwrap(), Redemption::Redeemed { chain } if chain.replayed)
    );
    assert_eq!(
        p.redeem(winner, "NOPE-1", "r3", &Origin::default(), &rules)
            .await
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    let audit = p.audit().await.unwrap();
    assert!(audit.ok(), "{audit:?}");
}

async fn per_player_limit_and_fraud_hold(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let ids = players(&p, "fraud", 5).await;
    p.create_bonus_code(&BonusCode {
        code: "TWICE".into(),
        currency: "gems".into(),
        amount: 5,
        global_limit: 1000,
        per_player_limit: 2,
        expires_ms: volley_platform::now_ms() + 3_600_000,
        min_account_age_ms: 0,
    })
    .await
    .unwrap();
    let lax = FraudRules {
        velocity_per_min: 1000,
        accounts_per_address: 1000,
        accounts_per_device: 1000,
        hold_at: 0.5,
    };
    for r in ["a", "b"] {
        assert!(matches!(
            p.redeem(ids[0], "TWICE", r, &Origin::default(), &lax)
                .await
                .unwrap(),
            Redemption::Redeemed { .. }
        ));
    }
    assert_eq!(
        p.redeem(ids[0], "TWICE", "c", &Origin::default(), &lax)
            .await
            .unwrap_err()
            .code,
        "already_redeemed"
    );
    // Many accounts from one address: the fourth is held for review.
    let rules = FraudRules {
        velocity_per_min: 1000,
        accounts_per_address: 3,
        accounts_per_device: 1000,
        hold_at: 0.5,
    };
    let addr: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    for id in &ids[1..4] {
        assert!(matches!(
            p.redeem(*id, "TWICE", "x", &Origin::address(addr), &rules)
                .await
                .unwrap(),
            Redemption::Redeemed { .. }
        ));
    }
    match p
        .redeem(ids[4], "TWICE", "x", &Origin::address(addr), &rules)
        .await
        .unwrap()
    {
        Redemption::Held { score, reasons } => {
            assert!(score >= 0.5);
            assert!(reasons[0].contains("shared address"), "{reasons:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        p.balance(&AccountRef::wallet(ids[4]), "gems")
            .await
            .unwrap(),
        0,
        "held means nothing moved"
    );
    // Accounts sharing one device (from different addresses): the third is held.
    let rules = FraudRules {
        velocity_per_min: 1000,
        accounts_per_address: 1000,
        accounts_per_device: 2,
        hold_at: 0.5,
    };
    let mut device_ids = Vec::new();
    for i in 0..3 {
        device_ids.push(
            p.login_device(&format!("device-farm-{i:03}"))
                .await
                .unwrap()
                .player_id,
        );
    }
    for (i, id) in device_ids.iter().enumerate() {
        let from = Origin::new(
            Some(std::net::IpAddr::from([198, 51, 100, i as u8 + 1])),
            Some("hw-fingerprint-1234"),
        );
        let r = p.redeem(*id, "TWICE", "d", &from, &rules).await.unwrap();
        match (i, r) {
            (0 | 1, Redemption::Redeemed { .. }) => {}
            (2, Redemption::Held { reasons, .. }) => {
                assert_eq!(reasons.len(), 1, "{reasons:?}");
                assert!(reasons[0].contains("shared device"), "{reasons:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Another device from the same addresses is not held.
    let other = p.login_device("device-farm-other").await.unwrap().player_id;
    let from = Origin::new(
        Some(std::net::IpAddr::from([198, 51, 100, 1])),
        Some("hw-fingerprint-9999"),
    );
    assert!(matches!(
        p.redeem(other, "TWICE", "d", &from, &rules).await.unwrap(),
        Redemption::Redeemed { .. }
    ));
    let held = p.held().await.unwrap();
    assert_eq!(held.len(), 2);
    let held: Vec<_> = held
        .into_iter()
        .filter(|h| h.0 == format!("{}:x", ids[4]))
        .collect();
    assert_eq!(held.len(), 1);
    let applied = p.review(&held[0].0, true).await.unwrap().unwrap();
    assert_eq!(applied.transfers.len(), 2);
    assert_eq!(
        p.balance(&AccountRef::wallet(ids[4]), "gems")
            .await
            .unwrap(),
        5
    );
    // The device-farm hold is rejected: nothing moves for it.
    let farm = p.held().await.unwrap();
    assert_eq!(farm.len(), 1);
    assert_eq!(farm[0].1, device_ids[2]);
    assert!(p.review(&farm[0].0, false).await.unwrap().is_none());
    assert_eq!(
        p.balance(&AccountRef::wallet(device_ids[2]), "gems")
            .await
            .unwrap(),
        0
    );
    assert!(p.held().await.unwrap().is_empty());
    assert!(p.audit().await.unwrap().ok());
}

async fn unique_items_cannot_duplicate(b: Backend) {
    let (p, _t) = platform(b, cfg()).await;
    let ids = players(&p, "items", 3).await;
    let (a, c, d) = (ids[0], ids[1], ids[2]);
    let sword = p.mint_item("sys", "drop-1", a, "sword").await.unwrap();
    assert_eq!(
        p.mint_item("sys", "drop-1", a, "sword").await.unwrap(),
        sword,
        "a retried drop is the same item"
    );
    assert_eq!(
        p.items_of(a).await.unwrap(),
        vec![(sword.clone(), "sword".to_owned())]
    );
    // Two concurrent trades of the same sword to different players: exactly one wins.
    let give = |to: u64, id: &'static str| {
        let p = p.clone();
        let sword = sword.clone();
        tokio::spawn(async move {
            p.gift(
                a,
                &Gift::new(id, to, "item:sword", 1, Some(sword)),
                &Origin::default(),
            )
            .await
        })
    };
    let (r1, r2) = (give(c, "trade-c"), give(d, "trade-d"));
    let (r1, r2) = (r1.await.unwrap(), r2.await.unwrap());
    assert!(r1.is_ok() != r2.is_ok(), "{r1:?} {r2:?}");
    let e = r1.as_ref().err().or(r2.as_ref().err()).unwrap();
    assert!(
        ["not_owner", "insufficient_funds"].contains(&e.code),
        "{e:?}"
    );
    let mut owners = Vec::new();
    for o in [a, c, d] {
        if p.items_of(o)
            .await
            .unwrap()
            .iter()
            .any(|(i, _)| *i == sword)
        {
            owners.push(o);
        }
    }
    assert_eq!(owners.len(), 1);
    assert_ne!(owners[0], a);
    let audit = p.audit().await.unwrap();
    assert!(audit.ok(), "{audit:?}");
}

async fn purchases_pay_and_deliver_together(b: Backend) {
    use volley_platform::economy::StoreItem;
    let (p, _t) = platform(b, cfg()).await;
    let ids = players(&p, "shop", 2).await;
    p.put_store_item(&StoreItem {
        sku: "gem-pack".into(),
        price_currency: "gold".into(),
        price: 40,
        gives_currency: "gems".into(),
        gives_amount: 100,
        item_type: None,
    })
    .await
    .unwrap();
    p.put_store_item(&StoreItem {
        sku: "crown".into(),
        price_currency: "gold".into(),
        price: 50,
        gives_currency: "item:crown".into(),
        gives_amount: 1,
        item_type: Some("crown".into()),
    })
    .await
    .unwrap();
    assert_eq!(p.store_items().await.unwrap().len(), 2);
    p.grant("g", ids[0], "gold", 100, "grant").await.unwrap();
    p.purchase(ids[0], "gem-pack", "buy-1").await.unwrap();
    assert!(
        p.purchase(ids[0], "gem-pack", "buy-1")
            .await
            .unwrap()
            .replayed
    );
    assert_eq!(
        p.balance(&AccountRef::wallet(ids[0]), "gems")
            .await
            .unwrap(),
        100
    );
    assert_eq!(
        p.balance(&AccountRef::wallet(ids[0]), "gold")
            .await
            .unwrap(),
        60
    );
    // Concurrent first attempts of one purchase id deliver one crown.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let p = p.clone();
            let me = ids[0];
            tokio::spawn(async move { p.purchase(me, "crown", "buy-2").await })
        })
        .collect();
    let mut items = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        items.insert(r.transfers[1].item_id.clone().unwrap());
    }
    assert_eq!(items.len(), 1, "every answer names the one crown delivered");
    assert_eq!(p.items_of(ids[0]).await.unwrap().len(), 1);
    assert_eq!(
        p.balance(&AccountRef::wallet(ids[0]), "gold")
            .await
            .unwrap(),
        10
    );
    // Not enough gold: neither paid nor delivered, and no stray item is left.
    assert_eq!(
        p.purchase(ids[0], "crown", "buy-3").await.unwrap_err().code,
        "insufficient_funds"
    );
    assert_eq!(p.items_of(ids[0]).await.unwrap().len(), 1);
    assert_eq!(
        p.purchase(ids[1], "nothing", "x").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    let audit = p.audit().await.unwrap();
    assert!(audit.ok(), "{audit:?}");
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(volley_store::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(volley_store::Backend::Postgres).await })*
        }
    };
}

on_both_backends!(
    device_login_and_tokens,
    email_register_and_login,
    refresh_rotates_and_reuse_revokes_the_family,
    refresh_race_within_grace_is_benign,
    brute_force_is_slowed_then_capped,
    ban_and_delete_end_sessions_at_once,
    link_and_unlink,
    friends_requests_and_blocks,
    parties_and_lobbies,
    chat_history_limits_and_delivery,
    chat_rate_limit,
    presence_reaches_friends,
    ledger_bounds_idempotency_and_limits,
    retry_storm_takes_effect_once,
    bonus_code_storm_gives_exactly_the_limit,
    per_player_limit_and_fraud_hold,
    unique_items_cannot_duplicate,
    purchases_pay_and_deliver_together,
);
