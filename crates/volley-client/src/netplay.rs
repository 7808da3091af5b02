//! Netcode modes as library calls a game drives from its frame loop.
//!
//! [`SnapshotPlayer`]: authoritative snapshots. Each frame the game calls
//! [`SnapshotPlayer::poll`] (takes in what arrived), [`SnapshotPlayer::frame`] with its input
//! (predicts and sends), and [`SnapshotPlayer::render`] (what to draw).

use std::time::{Duration, Instant};

use volley_sync::game::{EntityView, Game};
use volley_sync::interp::InterpStats;
use volley_sync::netplay::{ClientStats, SnapshotClient, Start};

use crate::{Error, Event, Session};

/// A player in a room running the node's `snapshot` mode.
#[derive(Debug)]
pub struct SnapshotPlayer<G: Game> {
    session: Session,
    client: Option<SnapshotClient<G>>,
    epoch: Instant,
    closed: Option<String>,
    /// Snapshot packets that arrived (including refused ones).
    pub packets: u64,
}

impl<G: Game> SnapshotPlayer<G> {
    /// Wraps a joined session.
    pub fn new(session: Session) -> Self {
        SnapshotPlayer {
            session,
            client: None,
            epoch: Instant::now(),
            closed: None,
            packets: 0,
        }
    }

    fn now_ms(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1000.0
    }

    /// The session underneath (peers, quality, node RTT).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The match description, once the node sent it.
    pub fn started(&self) -> bool {
        self.client.is_some()
    }

    /// Takes in everything that arrived. Call once per frame.
    pub fn poll(&mut self) -> Result<(), Error> {
        while let Some(e) = self.session.try_event() {
            match e {
                Event::FromNode {
                    payload,
                    reliable: true,
                } => {
                    if let Ok(start) = Start::decode(&payload) {
                        self.client = Some(SnapshotClient::new(start));
                    }
                }
                Event::FromNode {
                    payload,
                    reliable: false,
                } => {
                    self.packets += 1;
                    let now = self.now_ms();
                    if let Some(c) = &mut self.client {
                        // A refused snapshot (stale, unknown baseline) is counted by the client;
                        // the next one repairs the state.
                        let _ = c.on_packet(&payload, now);
                    }
                }
                Event::Closed { reason } => self.closed = Some(reason),
                _ => {}
            }
        }
        match &self.closed {
            Some(r) => Err(Error::Connection(r.clone())),
            None => Ok(()),
        }
    }

    /// Waits until the node has assigned this player its slot.
    pub async fn wait_start(&mut self, within: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        while self.client.is_none() {
            self.poll()?;
            if Instant::now() > deadline {
                return Err(Error::Connection("the node sent no start".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// One frame with the local input: predicts the own entity and sends the input (with the
    /// previous ones, so single losses cost nothing).
    pub fn frame(&mut self, input: G::Input) -> Result<(), Error> {
        let Some(c) = &mut self.client else {
            return Ok(());
        };
        if let Some(packet) = c.frame(input) {
            self.session.send_to_node(packet, false)?;
        }
        Ok(())
    }

    /// What to draw now: others interpolated, the own entity predicted.
    pub fn render(&mut self) -> Vec<EntityView> {
        let now = self.now_ms();
        self.client
            .as_mut()
            .map(|c| c.render(now))
            .unwrap_or_default()
    }

    /// Prediction and snapshot counters.
    pub fn stats(&self) -> Option<(ClientStats, InterpStats)> {
        self.client
            .as_ref()
            .map(|c| (c.stats().clone(), c.interp_stats()))
    }

    /// Leaves the room.
    pub async fn leave(self) {
        self.session.leave().await;
    }
}
