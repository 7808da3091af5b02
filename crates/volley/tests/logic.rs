//! Room logic on the node: players' messages reach it on both channels, its answers reach the
//! players, joins and leaves are reported, and unknown modes are refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use volley_client::Event;
use volley_server::logic::{LogicFactory, Outgoing, RoomLogic, Target};

/// Set when an `Echo` is dropped: a closed room must not keep its logic alive.
static ECHO_DROPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Echoes reliable messages to their sender, broadcasts unreliable ones, counts what it saw.
struct Echo {
    joined: Vec<u64>,
    left: Vec<u64>,
    ticks: u64,
    messages: u64,
}

impl Drop for Echo {
    fn drop(&mut self) {
        ECHO_DROPPED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl RoomLogic for Echo {
    fn on_join(&mut self, p: u64, _: u64) -> Vec<Outgoing> {
        self.joined.push(p);
        vec![]
    }
    fn on_leave(&mut self, p: u64, _: u64) -> Vec<Outgoing> {
        self.left.push(p);
        vec![]
    }
    fn on_message(&mut self, from: u64, payload: &[u8], reliable: bool, _: u64) -> Vec<Outgoing> {
        self.messages += 1;
        let mut echoed = b"echo:".to_vec();
        echoed.extend_from_slice(payload);
        vec![Outgoing {
            to: if reliable {
                Target::Player(from)
            } else {
                Target::All
            },
            payload: echoed,
            reliable,
        }]
    }
    fn tick(&mut self, _: u64) -> Vec<Outgoing> {
        self.ticks += 1;
        vec![]
    }
    fn tick_interval(&self) -> Duration {
        Duration::from_millis(10)
    }
    fn report(&self) -> serde_json::Value {
        serde_json::json!({"joined": self.joined, "left": self.left, "ticks": self.ticks, "messages": self.messages})
    }
}

struct Factory;

impl LogicFactory for Factory {
    fn modes(&self) -> Vec<String> {
        vec!["echo".into()]
    }
    fn create(&self, mode: &str, _: u32) -> Result<Box<dyn RoomLogic>, String> {
        match mode {
            "echo" => Ok(Box::new(Echo {
                joined: vec![],
                left: vec![],
                ticks: 0,
                messages: 0,
            })),
            _ => Err("unknown mode".into()),
        }
    }
}

async fn from_node(s: &mut volley_client::Session) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, s.next_event()).await {
            Ok(Some(Event::FromNode { payload, reliable })) => return (payload, reliable),
            Ok(Some(_)) => {}
            other => panic!("no message from the node: {other:?}"),
        }
    }
}

#[tokio::test]
async fn room_logic_hears_players_and_answers_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = volley_server::NodeConfig {
        data_dir: dir.path().to_owned(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        quic_addr: "127.0.0.1:0".parse().expect("addr"),
        logins_per_ip_per_s: 10_000.0,
        logins_per_ip_burst: 10_000.0,
        ..Default::default()
    };
    let node = volley_server::Node::start_with(cfg, Some(Arc::new(Factory)))
        .await
        .expect("node");
    let base = format!("http://{}", node.http_addr);
    let api = login(&base, "device-logic-owner").await;
    match api.create_room_with_mode(Some(2), Some("chess")).await {
        Err(volley_client::Error::Api { status: 400, .. }) => {}
        other => panic!("unknown mode accepted: {other:?}"),
    }
    let room = api
        .create_room_with_mode(Some(2), Some("echo"))
        .await
        .expect("room");
    assert_eq!(room.mode.as_deref(), Some("echo"));
    let mut a = join(
        &base,
        "device-logic-a",
        room.room_id,
        loopback_config(false),
    )
    .await;
    let mut b = join(
        &base,
        "device-logic-b",
        room.room_id,
        loopback_config(false),
    )
    .await;

    a.send_to_node(b"hello".to_vec(), true).expect("send");
    assert_eq!(from_node(&mut a).await, (b"echo:hello".to_vec(), true));
    b.send_to_node(b"state".to_vec(), false).expect("send");
    assert_eq!(from_node(&mut a).await, (b"echo:state".to_vec(), false));
    assert_eq!(from_node(&mut b).await, (b"echo:state".to_vec(), false));

    let (ida, idb) = (a.me(), b.me());
    a.leave().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let info = api.room(room.room_id).await.expect("room info");
    let report = info.logic.expect("logic report");
    assert_eq!(report["joined"], serde_json::json!([ida, idb]));
    assert_eq!(report["left"], serde_json::json!([ida]));
    assert!(report["ticks"].as_u64().expect("ticks") > 10);
    assert_eq!(report["messages"], 2);
    // The last player leaves: the room closes and its logic goes with it.
    b.leave().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !ECHO_DROPPED.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "room logic outlived its room"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match api.room(room.room_id).await {
        Err(volley_client::Error::Api { status: 404, .. }) => {}
        other => panic!("closed room still listed: {other:?}"),
    }
    node.shutdown().await;
}
