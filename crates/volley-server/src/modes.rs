//! Game modes a node can offer rooms: the demo arena (`volley_sync::arena`) under authoritative
//! snapshots (`snapshot`, and `snapshot-interest` with interest management), and under rollback
//! with the node as referee (`rollback`).
//!
//! [`Modes`] is the [`LogicFactory`] that `volley serve` and `volley demo` pass to
//! [`Node::start_with`](crate::Node::start_with); a program embedding the node can pass it too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::logic::{LogicFactory, Outgoing, RoomLogic, Target};
use volley_proto::PlayerId;
use volley_sync::arena::Arena;
use volley_sync::game::Slot;
use volley_sync::netplay::{SnapshotHost, Start};

/// Simulation rate of the arena on the node.
pub const TICK_HZ: u8 = 60;
/// Frames between snapshots (30 Hz snapshots).
pub const SNAPSHOT_EVERY: u8 = 2;
/// Tick durations kept for percentiles.
const TICK_SAMPLES_MAX: usize = 4096;

/// The arena, authoritative, with delta snapshots.
struct SnapshotRoom {
    host: SnapshotHost<Arena>,
    interest: bool,
    slots: HashMap<PlayerId, Slot>,
    free: Vec<Slot>,
    players: u8,
    tick_us: Vec<u64>,
    tick_pos: usize,
    refused: u64,
}

impl SnapshotRoom {
    fn new(players: u8, interest: Option<volley_sync::netplay::Interest>) -> Self {
        let mut host = SnapshotHost::new(
            Arena::new(usize::from(players), 1),
            usize::from(players),
            u32::from(SNAPSHOT_EVERY),
        );
        host.set_interest(interest);
        // Shots are judged where the shooter saw its targets (up to 12 ticks, 200 ms, back).
        host.set_lag_compensation(Some(volley_sync::lagcomp::LagCompConfig::default()));
        SnapshotRoom {
            host,
            interest: interest.is_some(),
            slots: HashMap::new(),
            free: (0..players).rev().collect(),
            players,
            tick_us: Vec::with_capacity(TICK_SAMPLES_MAX),
            tick_pos: 0,
            refused: 0,
        }
    }

    fn tick_percentile(&self, q: f64) -> Option<u64> {
        let mut v = self.tick_us.clone();
        v.sort_unstable();
        v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
    }
}

impl RoomLogic for SnapshotRoom {
    fn on_join(&mut self, player: PlayerId, _now_ms: u64) -> Vec<Outgoing> {
        let Some(slot) = self.slots.get(&player).copied().or_else(|| self.free.pop()) else {
            return vec![];
        };
        self.slots.insert(player, slot);
        self.host.join(slot);
        let start = Start {
            slot,
            players: self.players,
            tick_hz: TICK_HZ,
            snapshot_every: SNAPSHOT_EVERY,
        };
        vec![Outgoing {
            to: Target::Player(player),
            payload: start.encode(),
            reliable: true,
        }]
    }

    fn on_leave(&mut self, player: PlayerId, _now_ms: u64) -> Vec<Outgoing> {
        if let Some(slot) = self.slots.remove(&player) {
            self.host.leave(slot);
            self.free.push(slot);
        }
        vec![]
    }

    fn on_message(
        &mut self,
        from: PlayerId,
        payload: &[u8],
        reliable: bool,
        _now_ms: u64,
    ) -> Vec<Outgoing> {
        // The slot comes from the connection, never from the packet: nobody can send inputs for
        // another player.
        match self.slots.get(&from) {
            Some(slot) if !reliable => {
                if self.host.on_input_packet(*slot, payload).is_err() {
                    self.refused += 1;
                }
            }
            _ => self.refused += 1,
        }
        vec![]
    }

    fn tick(&mut self, _now_ms: u64) -> Vec<Outgoing> {
        let t = Instant::now();
        let packets = self.host.tick();
        let us = t.elapsed().as_micros() as u64;
        if self.tick_us.len() < TICK_SAMPLES_MAX {
            self.tick_us.push(us);
        } else if let Some(x) = self.tick_us.get_mut(self.tick_pos % TICK_SAMPLES_MAX) {
            *x = us;
        }
        self.tick_pos += 1;
        let by_slot: HashMap<Slot, PlayerId> = self.slots.iter().map(|(p, s)| (*s, *p)).collect();
        packets
            .into_iter()
            .filter_map(|(slot, payload)| {
                by_slot.get(&slot).map(|p| Outgoing {
                    to: Target::Player(*p),
                    payload,
                    reliable: false,
                })
            })
            .collect()
    }

    fn tick_interval(&self) -> Duration {
        Duration::from_secs(1) / u32::from(TICK_HZ)
    }

    fn report(&self) -> serde_json::Value {
        let s = self.host.stats();
        serde_json::json!({
            "mode": if self.interest { "snapshot-interest" } else { "snapshot" },
            "interest_deferred": self.host.interest_deferred(),
            "lag_rewind_ticks_mean": s.lag_rewound_ticks as f64 / s.lag_rewinds.max(1) as f64,
            "lag_rewinds_clamped": s.lag_clamped,
            "frames": s.frames,
            "inputs_late": s.inputs_late,
            "inputs_too_far_ahead": s.inputs_ahead,
            "snapshots": s.snapshots,
            "snapshot_bytes": s.snapshot_bytes,
            "refused_packets": self.refused,
            "tick_us_p50": self.tick_percentile(0.5),
            "tick_us_p99": self.tick_percentile(0.99),
            "players": self.slots.len(),
        })
    }
}

/// The arena modes: `snapshot`, `snapshot-interest` and `rollback` (2-16 players).
#[derive(Debug)]
pub struct Modes;

impl LogicFactory for Modes {
    fn modes(&self) -> Vec<String> {
        vec![
            "snapshot".into(),
            "snapshot-interest".into(),
            "rollback".into(),
        ]
    }

    fn create(&self, mode: &str, max_players: u32) -> Result<Box<dyn RoomLogic>, String> {
        let players = u8::try_from(max_players).map_err(|_| "too many players".to_owned())?;
        match mode {
            "snapshot" => Ok(Box::new(SnapshotRoom::new(players, None))),
            // Entities more than 16 world units (a quarter of the arena) from a player are
            // updated every third snapshot (10 Hz) for that player.
            "snapshot-interest" => Ok(Box::new(SnapshotRoom::new(
                players,
                Some(volley_sync::netplay::Interest {
                    radius: 16 * 256,
                    far_every: 3,
                }),
            ))),
            "rollback" if (2..=16).contains(&players) => Ok(Box::new(RollbackRoom {
                players,
                joined: Vec::new(),
                referee: None,
                started_ms: 0,
                refused: 0,
                tick_us: Vec::new(),
                verdicts_seen: 0,
                resyncs_sent: 0,
            })),
            "rollback" => Err("rollback rooms are for 2-16 players".into()),
            other => Err(format!(
                "unknown mode {other:?}; this node offers: snapshot, rollback"
            )),
        }
    }
}

/// The arena under rollback: inputs travel peer to peer; the node referees.
struct RollbackRoom {
    players: u8,
    joined: Vec<PlayerId>,
    referee: Option<volley_sync::referee::Referee<Arena>>,
    started_ms: u64,
    refused: u64,
    tick_us: Vec<u64>,
    /// Verdicts already acted on.
    verdicts_seen: usize,
    resyncs_sent: u64,
}

const ROLLBACK_SEED: u64 = 7;

impl RollbackRoom {
    fn slot_of(&self, p: PlayerId) -> Option<Slot> {
        self.joined.iter().position(|x| *x == p).map(|s| s as Slot)
    }
}

impl RoomLogic for RollbackRoom {
    fn on_join(&mut self, player: PlayerId, now_ms: u64) -> Vec<Outgoing> {
        if self.referee.is_some() || self.joined.contains(&player) {
            return vec![];
        }
        self.joined.push(player);
        if self.joined.len() < usize::from(self.players) {
            return vec![];
        }
        // Everyone is here: the match starts now, on the node's clock.
        let cfg = volley_sync::referee::RefereeConfig {
            tick_hz: u32::from(TICK_HZ),
            ..Default::default()
        };
        match volley_sync::referee::Referee::new(
            Arena::new(usize::from(self.players), ROLLBACK_SEED),
            usize::from(self.players),
            cfg,
        ) {
            Ok(r) => self.referee = Some(r),
            Err(_) => return vec![],
        }
        self.started_ms = now_ms;
        self.joined
            .iter()
            .enumerate()
            .map(|(slot, p)| Outgoing {
                to: Target::Player(*p),
                payload: volley_sync::netplay::rollback_wire::RollbackStart {
                    slot: slot as u8,
                    tick_hz: TICK_HZ,
                    seed: ROLLBACK_SEED,
                    players: self.joined.clone(),
                }
                .encode(),
                reliable: true,
            })
            .collect()
    }

    fn on_leave(&mut self, player: PlayerId, _now_ms: u64) -> Vec<Outgoing> {
        if let (Some(slot), Some(r)) = (self.slot_of(player), self.referee.as_mut()) {
            // A player who left is expelled: the referee fills its inputs from now on.
            r.expel(slot);
        }
        vec![]
    }

    fn on_message(
        &mut self,
        from: PlayerId,
        payload: &[u8],
        _reliable: bool,
        now_ms: u64,
    ) -> Vec<Outgoing> {
        use volley_sync::netplay::rollback_wire::{CHECKSUM, INPUTS};
        use volley_sync::rollback::{ChecksumReport, InputBatch};
        let (Some(slot), Some(r)) = (self.slot_of(from), self.referee.as_mut()) else {
            self.refused += 1;
            return vec![];
        };
        let now = now_ms.saturating_sub(self.started_ms);
        let ok = match payload.split_first() {
            Some((&INPUTS, rest)) => InputBatch::decode::<Arena>(rest)
                .ok()
                .map(|b| r.on_inputs(slot, &b, now).is_ok()),
            Some((&CHECKSUM, rest)) => ChecksumReport::decode(rest)
                .ok()
                .map(|c| r.on_checksum(slot, c, now).is_ok()),
            _ => None,
        };
        if ok != Some(true) {
            self.refused += 1;
        }
        vec![]
    }

    fn tick(&mut self, now_ms: u64) -> Vec<Outgoing> {
        let Some(r) = self.referee.as_mut() else {
            return vec![];
        };
        let t = Instant::now();
        r.tick(now_ms.saturating_sub(self.started_ms));
        // A client that diverged gets the authoritative state; the verdict stays on record.
        let mut resyncs = Vec::new();
        let fresh: Vec<_> = r
            .verdicts()
            .get(self.verdicts_seen..)
            .unwrap_or(&[])
            .to_vec();
        self.verdicts_seen += fresh.len();
        for v in fresh {
            if v.kind != volley_sync::referee::VerdictKind::Desync {
                continue;
            }
            let (frame, state) = r.resync_state(v.slot);
            if let Some(player) = self.joined.get(usize::from(v.slot)) {
                let mut p = vec![volley_sync::netplay::rollback_wire::RESYNC];
                p.extend_from_slice(&frame.to_be_bytes());
                p.extend_from_slice(&volley_sync::game::Game::encode_state(&state));
                resyncs.push(Outgoing {
                    to: Target::Player(*player),
                    payload: p,
                    reliable: true,
                });
                self.resyncs_sent += 1;
            }
        }
        let mut out: Vec<Outgoing> = r
            .take_broadcasts()
            .into_iter()
            .map(|f| {
                let mut p = vec![volley_sync::netplay::rollback_wire::FINAL];
                p.extend_from_slice(&f.encode::<Arena>());
                Outgoing {
                    to: Target::All,
                    payload: p,
                    reliable: true,
                }
            })
            .collect();
        out.extend(resyncs);
        if self.tick_us.len() < TICK_SAMPLES_MAX {
            self.tick_us.push(t.elapsed().as_micros() as u64);
        }
        out
    }

    fn tick_interval(&self) -> Duration {
        Duration::from_secs(1) / u32::from(TICK_HZ)
    }

    fn report(&self) -> serde_json::Value {
        let mut v = self.tick_us.clone();
        v.sort_unstable();
        let pct = |q: f64| {
            v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
                .copied()
        };
        let Some(r) = self.referee.as_ref() else {
            return serde_json::json!({"mode": "rollback", "started": false, "joined": self.joined.len()});
        };
        let s = r.stats();
        serde_json::json!({
            "mode": "rollback",
            "started": true,
            "frame": r.frame(),
            "frames_filled": s.frames_filled,
            "inputs_filled": s.inputs_filled,
            "reports_matched": s.reports_matched,
            "forged_messages": s.forged_messages,
            "refused_packets": self.refused,
            "resyncs_sent": self.resyncs_sent,
            "verdicts": r.verdicts().iter().map(|v| serde_json::json!({
                "slot": v.slot, "frame": v.frame, "kind": format!("{:?}", v.kind), "node_frame": v.node_frame
            })).collect::<Vec<_>>(),
            "tick_us_p50": pct(0.5),
            "tick_us_p99": pct(0.99),
        })
    }
}
