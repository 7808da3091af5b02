//! Game logic on the node: a room can run a [`RoomLogic`] (a referee, an authoritative
//! simulation) that receives the players' messages to the node and answers them.
//!
//! Each room with logic has one task that owns it: events (join, leave, messages) arrive on a
//! bounded queue, the task calls `tick` at the logic's own interval, and what the logic returns
//! is written to the players (reliable on their control stream, unreliable as datagrams).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use volley_proto::msg::{Down, NodeDatagram};
use volley_proto::PlayerId;

use crate::metrics::Metrics;
use crate::room::{LogicEvent, Report, Room};

/// Events queued for one room's logic. Past this, a player's messages to the node are dropped
/// and counted (the logic is not keeping up).
pub const LOGIC_QUEUE_MAX: usize = 16_384;

/// How often the logic's report is refreshed for the HTTP API.
const REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// Who a message from the logic goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every player in the room.
    All,
    /// One player.
    Player(PlayerId),
}

/// A message from the logic to players.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Recipients.
    pub to: Target,
    /// The game's bytes.
    pub payload: Vec<u8>,
    /// Reliable (control stream) or unreliable (datagram).
    pub reliable: bool,
}

/// Game logic hosted by a room. Time comes in as milliseconds since the room started, so the
/// logic stays sans-IO.
pub trait RoomLogic: Send + 'static {
    /// A player entered.
    fn on_join(&mut self, player: PlayerId, now_ms: u64) -> Vec<Outgoing>;
    /// A player left.
    fn on_leave(&mut self, player: PlayerId, now_ms: u64) -> Vec<Outgoing>;
    /// A player sent the node a message.
    fn on_message(
        &mut self,
        from: PlayerId,
        payload: &[u8],
        reliable: bool,
        now_ms: u64,
    ) -> Vec<Outgoing>;
    /// Called every [`RoomLogic::tick_interval`].
    fn tick(&mut self, now_ms: u64) -> Vec<Outgoing>;
    /// How often to call `tick`.
    fn tick_interval(&self) -> Duration;
    /// A JSON report for `GET /v1/rooms/{id}` (stats, verdicts).
    fn report(&self) -> serde_json::Value;
}

/// Makes the logic for a room from the mode named at room creation.
pub trait LogicFactory: Send + Sync + 'static {
    /// The modes this node offers.
    fn modes(&self) -> Vec<String>;
    /// Logic for a new room; `Err` explains why the mode or size is refused.
    fn create(&self, mode: &str, max_players: u32) -> Result<Box<dyn RoomLogic>, String>;
}

pub(crate) fn spawn(
    room: &Arc<Room>,
    mut logic: Box<dyn RoomLogic>,
    metrics: Arc<Metrics>,
) -> (mpsc::Sender<LogicEvent>, Report) {
    let (tx, mut rx) = mpsc::channel::<LogicEvent>(LOGIC_QUEUE_MAX);
    let report: Report = Arc::new(std::sync::Mutex::new(logic.report()));
    let out_report = report.clone();
    // The task holds the room weakly: the room owns the task's queue, and a strong reference
    // here would keep a closed room (and its task) alive forever.
    let room = Arc::downgrade(room);
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(logic.tick_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut last_report = Instant::now();
        loop {
            let out = tokio::select! {
                ev = rx.recv() => {
                    let now_ms = start.elapsed().as_millis() as u64;
                    match ev {
                        Some(LogicEvent::Join(p)) => logic.on_join(p, now_ms),
                        Some(LogicEvent::Leave(p)) => logic.on_leave(p, now_ms),
                        Some(LogicEvent::Message { from, payload, reliable }) => {
                            logic.on_message(from, &payload, reliable, now_ms)
                        }
                        None => break,
                    }
                }
                _ = tick.tick() => {
                    let out = logic.tick(start.elapsed().as_millis() as u64);
                    if last_report.elapsed() >= REPORT_INTERVAL {
                        last_report = Instant::now();
                        if let Ok(mut r) = report.lock() {
                            *r = logic.report();
                        }
                    }
                    out
                }
            };
            let Some(room) = room.upgrade() else {
                break;
            };
            deliver(&room, &metrics, out);
        }
    });
    (tx, out_report)
}

fn deliver(room: &Room, metrics: &Metrics, out: Vec<Outgoing>) {
    for o in out {
        let members = match o.to {
            Target::All => room.others(PlayerId::MAX),
            Target::Player(p) => room.member(p).into_iter().collect(),
        };
        if o.reliable {
            let frame = Down::FromNode { payload: o.payload }.encode();
            for m in members {
                if m.tx.try_send(frame.clone()).is_err() {
                    metrics.logic_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            let dgram: bytes::Bytes = NodeDatagram::FromNode { payload: o.payload }
                .encode()
                .into();
            for m in members {
                if m.conn.send_datagram(dgram.clone()).is_err() {
                    metrics.logic_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
