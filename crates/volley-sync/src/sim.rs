//! Deterministic simulation of a rollback match: players ([`Rollback`]) and the node's
//! [`Referee`] exchanging real encoded messages over a seeded virtual network, on a virtual
//! clock.
//!
//! Everything that varies (latency, jitter, loss, duplication, reordering, the bots' inputs, the
//! start signal's travel time) comes from [`SimConfig::seed`], so a run is a pure function of
//! its configuration: a failing seed replays exactly. Cheaters ([`Cheat`]) run beside honest
//! players to check that the referee names them and that honest players do not notice.
//!
//! The network model: every player has a link to every peer ([`SimConfig::peer_link`]) and to
//! the node ([`SimConfig::node_link`]). Input batches and checksum reports are datagrams (lost,
//! duplicated, reordered per packet); the node's [`FinalInputs`] and resync states travel on a
//! reliable ordered stream whose lost packets arrive a retransmission (an RTT) late. A player's
//! frame clock starts when the node's start signal reaches it and wakes at the tick rate; each
//! wake asks time sync whether to wait, simulates the frames its clock is due (at most
//! [`MAX_CATCHUP_FRAMES`]), then sends one batch and its checksum reports. A wake whose
//! `advance` stalls loses its frame, as in GGPO: the clock shifts back rather than building a
//! debt the player would rush through at the edge of its prediction window.
#![deny(clippy::indexing_slicing)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::game::{EntityView, Game, Slot};
use crate::referee::{Referee, RefereeConfig, RefereeStats, Verdict, VerdictKind};
use crate::rollback::{
    ChecksumReport, ConfigError, FinalInputs, InputBatch, Rollback, RollbackConfig, RollbackStats,
    MAX_BATCH_INPUTS,
};

/// Most frames a player's loop simulates on one wake (only a wake after a gap in wakes is due
/// more than one).
pub const MAX_CATCHUP_FRAMES: u32 = 4;
/// Wakes in a player's first this many clock frames (1 s at 60 Hz) do not count as steady
/// stalls: until a peer's first batch arrives, a player can predict only
/// `max_prediction_frames` whatever its input delay, so a long link stalls once at the start.
pub const WARMUP_FRAMES: u64 = 60;
/// Most packets in flight in the virtual network; more are dropped and counted.
pub const MAX_IN_FLIGHT: usize = 1 << 16;
/// Longest simulated run (1 h of virtual time).
pub const MAX_DURATION_MS: u64 = 3_600_000;
/// Most retransmissions of one reliable packet before it gets through.
const MAX_RETRANSMITS: u32 = 16;

/// One direction of a link: per-packet latency, jitter, loss, duplication and reordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkProfile {
    /// Mean one-way latency.
    pub one_way_ms: u32,
    /// Each packet's latency is uniform in `one_way ± jitter`.
    pub jitter_ms: u32,
    /// Chance a datagram is lost, in parts per million.
    pub loss_ppm: u32,
    /// Chance a datagram arrives twice, in parts per million.
    pub duplicate_ppm: u32,
    /// Chance a datagram is held back up to three frames (overtaken by later ones), in parts
    /// per million.
    pub reorder_ppm: u32,
}

impl LinkProfile {
    /// No latency, no loss.
    pub const PERFECT: LinkProfile = LinkProfile {
        one_way_ms: 0,
        jitter_ms: 0,
        loss_ppm: 0,
        duplicate_ppm: 0,
        reorder_ppm: 0,
    };
    /// Same city: 15 ms ± 3 ms, 0.1 % loss.
    pub const LAN_LIKE: LinkProfile = LinkProfile {
        one_way_ms: 15,
        jitter_ms: 3,
        loss_ppm: 1_000,
        duplicate_ppm: 0,
        reorder_ppm: 0,
    };
    /// Same continent: 50 ms ± 10 ms, 1 % loss, some duplication and reordering.
    pub const REGIONAL: LinkProfile = LinkProfile {
        one_way_ms: 50,
        jitter_ms: 10,
        loss_ppm: 10_000,
        duplicate_ppm: 5_000,
        reorder_ppm: 10_000,
    };
    /// A bad link: 150 ms ± 40 ms, 5 % loss, 1 % duplication, 2 % reordering.
    pub const BAD: LinkProfile = LinkProfile {
        one_way_ms: 150,
        jitter_ms: 40,
        loss_ppm: 50_000,
        duplicate_ppm: 10_000,
        reorder_ppm: 20_000,
    };

    /// A clean link of fixed latency.
    pub const fn fixed(one_way_ms: u32) -> LinkProfile {
        LinkProfile {
            one_way_ms,
            ..LinkProfile::PERFECT
        }
    }
}

/// A dishonest player's behavior.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cheat {
    /// From `from_frame` on, also sends batches claiming `victim`'s slot (with made-up
    /// inputs) to the node and every peer, on its own connections.
    ForgeInputs {
        /// The slot it pretends to be.
        victim: Slot,
        /// When it starts.
        from_frame: u32,
    },
    /// Alters its own state when it simulates `at_frame` (a memory editor), so its checksums
    /// go wrong.
    TamperState {
        /// The frame whose step is followed by the alteration.
        at_frame: u32,
    },
    /// From `from_ms` on, its frame clock runs at `rate_percent` of real time and it sends
    /// inputs for the frames of that clock, without waiting for anyone (a patched client).
    SpeedHack {
        /// Clock rate, percent (e.g. 150).
        rate_percent: u32,
        /// When it starts, ms of match time.
        from_ms: u64,
    },
}

/// The game-specific parts of a simulation.
#[derive(Debug)]
pub struct SimHooks<G: Game> {
    /// A bot's input for a slot at a frame; the `u64` is the player's fixed seed.
    pub bot_input: fn(Slot, u32, u64) -> G::Input,
    /// What a [`Cheat::TamperState`] cheater does to its state.
    pub tamper: fn(&mut G),
}

// Manual impls: a derive would demand `G: Clone`/`G: Copy` though only fn pointers are held.
impl<G: Game> Clone for SimHooks<G> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<G: Game> Copy for SimHooks<G> {}

/// One simulation run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Players (the referee plays no slot).
    pub players: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Virtual match time to simulate (at most [`MAX_DURATION_MS`]).
    pub duration_ms: u64,
    /// Every player-to-player link.
    pub peer_link: LinkProfile,
    /// Every player-to-node link.
    pub node_link: LinkProfile,
    /// Every player's session.
    pub rollback: RollbackConfig,
    /// The node's referee.
    pub referee: RefereeConfig,
    /// Dishonest players.
    pub cheats: Vec<(Slot, Cheat)>,
    /// Players whose clock starts this many ms later than the start signal's arrival (a slow
    /// loading screen), to exercise time sync.
    pub late_starts_ms: Vec<(Slot, u64)>,
    /// The room resyncs a player named in a desync verdict (default policy: yes).
    pub resync_on_desync: bool,
    /// The room expels a player named in a speed-hack verdict (default policy: yes).
    pub expel_speed_hackers: bool,
}

impl SimConfig {
    /// An honest match of `players` on `link` (both peer and node links), with defaults.
    pub fn honest(players: usize, link: LinkProfile, seed: u64, duration_ms: u64) -> Self {
        SimConfig {
            players,
            seed,
            duration_ms,
            peer_link: link,
            node_link: link,
            rollback: RollbackConfig::default(),
            referee: RefereeConfig::default(),
            cheats: Vec::new(),
            late_starts_ms: Vec::new(),
            resync_on_desync: true,
            expel_speed_hackers: true,
        }
    }
}

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// A session or referee configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A cheat names a slot that is not a player.
    #[error("cheat for slot {slot}, which is not a player")]
    CheatSlot {
        /// The slot.
        slot: Slot,
    },
    /// The duration exceeds [`MAX_DURATION_MS`].
    #[error("duration {duration_ms} ms exceeds {MAX_DURATION_MS} ms")]
    Duration {
        /// The duration asked for.
        duration_ms: u64,
    },
}

/// What one player saw.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayerReport {
    /// The slot.
    pub slot: Slot,
    /// Its cheat, if any.
    pub cheat: Option<Cheat>,
    /// The frame of its current state at the end.
    pub current_frame: u32,
    /// Its confirmed frame at the end.
    pub confirmed_frame: u32,
    /// Confirmed checksums compared with the referee's for the same frame.
    pub checksums_compared: u64,
    /// Of those, how many differed.
    pub checksum_mismatches: u64,
    /// The first frame whose checksum differed.
    pub first_mismatch_frame: Option<u32>,
    /// The last frame whose checksum differed.
    pub last_mismatch_frame: Option<u32>,
    /// Wakes on which its session stalled.
    pub stall_wakes: u64,
    /// Of those, the wakes after its first [`WARMUP_FRAMES`].
    pub steady_stall_wakes: u64,
    /// Messages it refused (forged, beyond the window, undecodable...).
    pub refused_messages: u64,
    /// Its session's counters.
    pub stats: RollbackStats,
}

/// How quickly a cheat was caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    /// The cheater.
    pub slot: Slot,
    /// The cheat.
    pub cheat: Cheat,
    /// The verdict kind that names it.
    pub expected: VerdictKind,
    /// The node's clock frame when the cheat began (`None`: it never began).
    pub started_node_frame: Option<u32>,
    /// How far the cheater's own frame was behind the node's clock then. A speed hacker first
    /// uses up this slack (plus the speed limit) before its inputs run ahead of the clock.
    pub lag_at_start_frames: i64,
    /// The first verdict of the expected kind naming the cheater.
    pub verdict: Option<Verdict>,
    /// Node clock frames between the start and the verdict.
    pub frames_to_detect: Option<u32>,
}

/// Counters of the virtual network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams and stream packets handed to the network.
    pub sent: u64,
    /// Datagrams lost (stream packets are retransmitted instead).
    pub lost: u64,
    /// Datagrams duplicated.
    pub duplicated: u64,
    /// Datagrams held back (reordered).
    pub reordered: u64,
    /// Packets dropped because [`MAX_IN_FLIGHT`] were in flight.
    pub overflow: u64,
    /// Packets delivered.
    pub delivered: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    /// The referee's frame at the end.
    pub referee_frame: u32,
    /// Every verdict, oldest first.
    pub verdicts: Vec<Verdict>,
    /// Each player, by slot.
    pub players: Vec<PlayerReport>,
    /// Each cheat and when it was caught.
    pub detections: Vec<Detection>,
    /// The referee's counters.
    pub referee_stats: RefereeStats,
    /// The network's counters.
    pub net: NetStats,
    /// Messages to the node that did not decode or that the referee refused (its counters say
    /// why for those it refused).
    pub node_refused_messages: u64,
    /// A hash of the run (verdicts, checksums, counters): equal seeds give equal hashes.
    pub trace_hash: u64,
}

impl SimReport {
    /// Verdicts naming players that do not cheat.
    pub fn verdicts_against_honest(&self) -> Vec<Verdict> {
        self.verdicts
            .iter()
            .filter(|v| {
                self.players
                    .get(usize::from(v.slot))
                    .is_some_and(|p| p.cheat.is_none())
            })
            .copied()
            .collect()
    }

    /// The honest players.
    pub fn honest(&self) -> impl Iterator<Item = &PlayerReport> {
        self.players.iter().filter(|p| p.cheat.is_none())
    }
}

/// A game wrapped so a cheater's copy can be altered deterministically at one frame, and a
/// resync (the referee's copy, never altered) undoes it.
#[derive(Clone)]
struct Tampered<G> {
    game: G,
    tamper_at: Option<u32>,
    tamper: fn(&mut G),
}

impl<G: Game> Game for Tampered<G> {
    type Input = G::Input;

    fn step(&mut self, inputs: &[Self::Input]) {
        self.game.step(inputs);
        if self.tamper_at == Some(self.game.frame()) {
            (self.tamper)(&mut self.game);
        }
    }

    fn frame(&self) -> u32 {
        self.game.frame()
    }

    fn checksum(&self) -> u64 {
        self.game.checksum()
    }

    fn encode_input(input: &Self::Input) -> [u8; 4] {
        G::encode_input(input)
    }

    fn decode_input(bytes: [u8; 4]) -> Option<Self::Input> {
        G::decode_input(bytes)
    }

    fn entities(&self) -> Vec<EntityView> {
        self.game.entities()
    }
}

/// SplitMix64: small, fast, and the same on every machine.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `ppm` parts per million.
    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.next() % 1_000_000 < u64::from(ppm)
    }

    /// Uniform in `0..=n`.
    fn upto(&mut self, n: u64) -> u64 {
        self.next() % (n + 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    Node,
    Player(Slot),
}

enum Payload<G> {
    Bytes(Vec<u8>),
    Resync(u32, G),
}

struct Packet<G> {
    from: Endpoint,
    to: Endpoint,
    payload: Payload<G>,
}

/// The virtual network: a time-ordered queue of packets.
struct Network<G> {
    rng: Rng,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    packets: std::collections::HashMap<u64, Packet<G>>,
    seq: u64,
    /// Per player, when its reliable stream from the node last delivered (in order).
    stream_next_ms: Vec<u64>,
    stats: NetStats,
}

impl<G: Clone> Network<G> {
    fn new(seed: u64, players: usize) -> Self {
        Network {
            rng: Rng(seed),
            queue: BinaryHeap::new(),
            packets: std::collections::HashMap::new(),
            seq: 0,
            stream_next_ms: vec![0; players],
            stats: NetStats::default(),
        }
    }

    fn latency(&mut self, link: &LinkProfile) -> u64 {
        let jitter = u64::from(link.jitter_ms);
        let offset = self.rng.upto(2 * jitter);
        (u64::from(link.one_way_ms) + offset).saturating_sub(jitter)
    }

    fn enqueue(&mut self, at_ms: u64, packet: Packet<G>) {
        if self.packets.len() >= MAX_IN_FLIGHT {
            self.stats.overflow += 1;
            return;
        }
        self.seq += 1;
        self.queue.push(Reverse((at_ms, self.seq)));
        self.packets.insert(self.seq, packet);
    }

    /// A datagram: may be lost, duplicated or held back.
    fn datagram(
        &mut self,
        now_ms: u64,
        link: &LinkProfile,
        from: Endpoint,
        to: Endpoint,
        bytes: Vec<u8>,
    ) {
        self.stats.sent += 1;
        if self.rng.chance(link.loss_ppm) {
            self.stats.lost += 1;
            return;
        }
        if self.rng.chance(link.duplicate_ppm) {
            self.stats.duplicated += 1;
            let at = now_ms + self.latency(link);
            let copy = Packet {
                from,
                to,
                payload: Payload::Bytes(bytes.clone()),
            };
            self.enqueue(at, copy);
        }
        let mut at = now_ms + self.latency(link);
        if self.rng.chance(link.reorder_ppm) {
            self.stats.reordered += 1;
            at += 1 + self.rng.upto(50);
        }
        self.enqueue(
            at,
            Packet {
                from,
                to,
                payload: Payload::Bytes(bytes),
            },
        );
    }

    /// A packet on the node's reliable stream to `slot`: each loss costs a retransmission
    /// timeout of about an RTT, and packets never overtake each other.
    fn stream(&mut self, now_ms: u64, link: &LinkProfile, slot: Slot, payload: Payload<G>) {
        self.stats.sent += 1;
        let mut at = now_ms + self.latency(link);
        let rto_ms = 2 * u64::from(link.one_way_ms) + 4 * u64::from(link.jitter_ms) + 10;
        let mut tries = 0;
        while tries < MAX_RETRANSMITS && self.rng.chance(link.loss_ppm) {
            at += rto_ms;
            tries += 1;
        }
        if let Some(next) = self.stream_next_ms.get_mut(usize::from(slot)) {
            at = at.max(*next);
            *next = at;
        }
        self.enqueue(
            at,
            Packet {
                from: Endpoint::Node,
                to: Endpoint::Player(slot),
                payload,
            },
        );
    }

    fn pop_due(&mut self, now_ms: u64) -> Option<Packet<G>> {
        let Reverse((at, seq)) = *self.queue.peek()?;
        if at > now_ms {
            return None;
        }
        self.queue.pop();
        self.stats.delivered += 1;
        self.packets.remove(&seq)
    }
}

/// A speed hacker's own input stream once it stops waiting for anyone.
struct Speeder<I> {
    origin_ms: u64,
    origin_frame: u32,
    rate_percent: u32,
    next_frame: u32,
    recent: VecDeque<I>,
}

struct Player<G: Game> {
    slot: Slot,
    cheat: Option<Cheat>,
    session: Rollback<Tampered<G>>,
    seed: u64,
    start_ms: u64,
    waited_frames: u64,
    last_clock_frame: Option<u64>,
    checked_frame: u32,
    compared: u64,
    mismatches: u64,
    first_mismatch: Option<u32>,
    last_mismatch: Option<u32>,
    stall_wakes: u64,
    steady_stall_wakes: u64,
    refused: u64,
    speeder: Option<Speeder<G::Input>>,
}

/// Runs one simulated match.
pub fn run<G: Game>(
    game: G,
    hooks: SimHooks<G>,
    config: &SimConfig,
) -> Result<SimReport, SimError> {
    if config.duration_ms > MAX_DURATION_MS {
        return Err(SimError::Duration {
            duration_ms: config.duration_ms,
        });
    }
    for (slot, _) in &config.cheats {
        if usize::from(*slot) >= config.players {
            return Err(SimError::CheatSlot { slot: *slot });
        }
    }
    let mut world = World::new(game, hooks, config)?;
    for now_ms in 0..=config.duration_ms {
        world.step(now_ms);
    }
    Ok(world.report())
}

struct World<'c, G: Game> {
    config: &'c SimConfig,
    hooks: SimHooks<G>,
    net: Network<Tampered<G>>,
    referee: Referee<Tampered<G>>,
    players: Vec<Player<G>>,
    verdicts_seen: usize,
    detections: Vec<Detection>,
    /// Messages to the node that did not decode or that the referee refused.
    node_refused: u64,
}

impl<'c, G: Game> World<'c, G> {
    fn new(game: G, hooks: SimHooks<G>, config: &'c SimConfig) -> Result<Self, SimError> {
        let honest_game = Tampered {
            game,
            tamper_at: None,
            tamper: hooks.tamper,
        };
        let referee = Referee::new(honest_game.clone(), config.players, config.referee)?;
        let mut net = Network::new(config.seed, config.players);
        let mut players = Vec::with_capacity(config.players);
        let mut detections = Vec::new();
        for slot in 0..config.players {
            let slot = slot as Slot;
            let cheat = config
                .cheats
                .iter()
                .find(|(s, _)| *s == slot)
                .map(|(_, c)| *c);
            let mut own_game = honest_game.clone();
            if let Some(Cheat::TamperState { at_frame }) = cheat {
                own_game.tamper_at = Some(at_frame);
            }
            let mut session = Rollback::new(own_game, config.players, slot, config.rollback)?;
            for peer in 0..config.players {
                if peer != usize::from(slot) {
                    session.set_peer_rtt_ms(peer as Slot, 2 * config.peer_link.one_way_ms);
                }
            }
            if let Some(cheat) = cheat {
                let expected = match cheat {
                    Cheat::ForgeInputs { .. } => VerdictKind::ForgedInput,
                    Cheat::TamperState { .. } => VerdictKind::Desync,
                    Cheat::SpeedHack { .. } => VerdictKind::SpeedHack,
                };
                detections.push(Detection {
                    slot,
                    cheat,
                    expected,
                    started_node_frame: None,
                    lag_at_start_frames: 0,
                    verdict: None,
                    frames_to_detect: None,
                });
            }
            // The start signal travels from the node like any datagram.
            let late_ms = config
                .late_starts_ms
                .iter()
                .filter(|(s, _)| *s == slot)
                .map(|(_, ms)| *ms)
                .sum::<u64>();
            let start_ms = net.latency(&config.node_link) + late_ms;
            players.push(Player {
                slot,
                cheat,
                session,
                seed: net.rng.next(),
                start_ms,
                waited_frames: 0,
                last_clock_frame: None,
                checked_frame: 0,
                compared: 0,
                mismatches: 0,
                first_mismatch: None,
                last_mismatch: None,
                stall_wakes: 0,
                steady_stall_wakes: 0,
                refused: 0,
                speeder: None,
            });
        }
        Ok(World {
            config,
            hooks,
            net,
            referee,
            players,
            verdicts_seen: 0,
            detections,
            node_refused: 0,
        })
    }

    fn step(&mut self, now_ms: u64) {
        while let Some(packet) = self.net.pop_due(now_ms) {
            self.deliver(now_ms, packet);
        }
        self.referee.tick(now_ms);
        self.act_on_verdicts(now_ms);
        for message in self.referee.take_broadcasts() {
            let bytes = message.encode::<Tampered<G>>();
            for slot in 0..self.config.players {
                let link = self.config.node_link;
                self.net
                    .stream(now_ms, &link, slot as Slot, Payload::Bytes(bytes.clone()));
            }
        }
        for index in 0..self.players.len() {
            self.wake(index, now_ms);
        }
    }

    fn deliver(&mut self, now_ms: u64, packet: Packet<Tampered<G>>) {
        let Endpoint::Player(from) = packet.from else {
            // From the node: final inputs or a resync state.
            if let Endpoint::Player(to) = packet.to {
                self.deliver_from_node(to, packet.payload);
            }
            return;
        };
        let Payload::Bytes(bytes) = packet.payload else {
            return;
        };
        match packet.to {
            Endpoint::Node => {
                let accepted = if let Ok(batch) = InputBatch::decode::<Tampered<G>>(&bytes) {
                    self.referee.on_inputs(from, &batch, now_ms).is_ok()
                } else if let Ok(report) = ChecksumReport::decode(&bytes) {
                    self.referee.on_checksum(from, report, now_ms).is_ok()
                } else {
                    false
                };
                if !accepted {
                    self.node_refused += 1;
                }
            }
            Endpoint::Player(to) => {
                let Some(player) = self.players.get_mut(usize::from(to)) else {
                    return;
                };
                let ok = InputBatch::decode::<Tampered<G>>(&bytes)
                    .ok()
                    .is_some_and(|batch| player.session.on_remote_batch(from, &batch).is_ok());
                if !ok {
                    player.refused += 1;
                }
            }
        }
    }

    fn deliver_from_node(&mut self, to: Slot, payload: Payload<Tampered<G>>) {
        let Some(player) = self.players.get_mut(usize::from(to)) else {
            return;
        };
        let result = match payload {
            Payload::Bytes(bytes) => match FinalInputs::decode::<Tampered<G>>(&bytes) {
                Ok(message) => player.session.on_final_inputs(&message).is_ok(),
                Err(_) => false,
            },
            Payload::Resync(frame, state) => {
                // Checksums confirmed before the resync were compared already; frames from the
                // resync on are compared again.
                let ok = player.session.adopt_state(frame, state).is_ok();
                player.checked_frame = player.checked_frame.min(frame);
                ok
            }
        };
        if !result {
            player.refused += 1;
        }
    }

    fn act_on_verdicts(&mut self, now_ms: u64) {
        let fresh: Vec<Verdict> = self
            .referee
            .verdicts()
            .get(self.verdicts_seen..)
            .unwrap_or_default()
            .to_vec();
        self.verdicts_seen += fresh.len();
        for verdict in fresh {
            for detection in &mut self.detections {
                if detection.slot == verdict.slot
                    && detection.expected == verdict.kind
                    && detection.verdict.is_none()
                {
                    detection.verdict = Some(verdict);
                    detection.frames_to_detect = detection
                        .started_node_frame
                        .map(|s| verdict.node_frame.saturating_sub(s));
                }
            }
            match verdict.kind {
                VerdictKind::Desync if self.config.resync_on_desync => {
                    let (frame, state) = self.referee.resync_state(verdict.slot);
                    let link = self.config.node_link;
                    self.net
                        .stream(now_ms, &link, verdict.slot, Payload::Resync(frame, state));
                }
                VerdictKind::SpeedHack if self.config.expel_speed_hackers => {
                    self.referee.expel(verdict.slot);
                }
                _ => {}
            }
        }
    }

    fn mark_started(&mut self, slot: Slot) {
        let node_frame = self.referee.clock_frame();
        let own_frame = self
            .players
            .get(usize::from(slot))
            .map_or(0, |p| p.session.current_frame());
        for detection in &mut self.detections {
            if detection.slot == slot && detection.started_node_frame.is_none() {
                detection.started_node_frame = Some(node_frame);
                detection.lag_at_start_frames = i64::from(node_frame) - i64::from(own_frame);
            }
        }
    }

    /// One player's game loop, if its frame clock ticked.
    fn wake(&mut self, index: usize, now_ms: u64) {
        let tick_hz = u64::from(self.config.rollback.tick_hz);
        let Some(player) = self.players.get_mut(index) else {
            return;
        };
        if now_ms < player.start_ms {
            return;
        }
        let clock_frame = (now_ms - player.start_ms) * tick_hz / 1000;
        if player.last_clock_frame == Some(clock_frame) {
            return;
        }
        player.last_clock_frame = Some(clock_frame);
        let slot = player.slot;
        if let Some(Cheat::SpeedHack {
            rate_percent,
            from_ms,
        }) = player.cheat
        {
            if now_ms >= from_ms {
                self.wake_speeder(index, now_ms, rate_percent);
                return;
            }
        }
        let Some(player) = self.players.get_mut(index) else {
            return;
        };
        let wait = player.session.frames_to_wait();
        player.waited_frames += u64::from(wait);
        let target = clock_frame.saturating_sub(player.waited_frames);
        let before = player.session.current_frame();
        for _ in 0..MAX_CATCHUP_FRAMES {
            if u64::from(player.session.current_frame()) >= target {
                break;
            }
            if player.session.needs_local_input() {
                let frame = player.session.current_frame();
                let input = (self.hooks.bot_input)(slot, frame, player.seed);
                // dropped: counted in `RollbackStats::local_inputs_refused` (in the report)
                let _ = player.session.add_local_input(input);
            }
            if player.session.advance().is_err() {
                player.stall_wakes += 1;
                if clock_frame >= WARMUP_FRAMES {
                    player.steady_stall_wakes += 1;
                }
                // A stalled wake loses its frame (as in GGPO): the player's clock shifts back
                // instead of building a debt it would rush through at the edge of the window.
                let debt = target.saturating_sub(u64::from(player.session.current_frame()));
                player.waited_frames += debt;
                break;
            }
        }
        let after = player.session.current_frame();
        let tampered_now = matches!(player.cheat, Some(Cheat::TamperState { at_frame }) if before < at_frame && after >= at_frame);
        self.check_confirmed(index);
        self.send_from(index, now_ms);
        if tampered_now {
            self.mark_started(slot);
        }
    }

    /// Compares newly confirmed checksums with the referee's.
    fn check_confirmed(&mut self, index: usize) {
        let Some(player) = self.players.get_mut(index) else {
            return;
        };
        let confirmed = player.session.confirmed_frame();
        while player.checked_frame < confirmed {
            player.checked_frame += 1;
            let frame = player.checked_frame;
            let (Some(own), Some(theirs)) = (
                player.session.checksum_at(frame),
                self.referee.checksum_at(frame),
            ) else {
                continue;
            };
            player.compared += 1;
            if own != theirs {
                player.mismatches += 1;
                player.first_mismatch.get_or_insert(frame);
                player.last_mismatch = Some(frame);
            }
        }
    }

    fn send_from(&mut self, index: usize, now_ms: u64) {
        let Some(player) = self.players.get_mut(index) else {
            return;
        };
        let slot = player.slot;
        let batch = player.session.outgoing_inputs().encode::<Tampered<G>>();
        let reports = player.session.take_checksum_reports();
        let forged = match player.cheat {
            Some(Cheat::ForgeInputs { victim, from_frame })
                if player.session.current_frame() >= from_frame =>
            {
                let first_frame = player.session.current_frame();
                let inputs = (0..8)
                    .map(|i| (self.hooks.bot_input)(victim, first_frame + i, !player.seed))
                    .collect();
                let forged = InputBatch {
                    slot: victim,
                    first_frame,
                    sender_frame: first_frame,
                    ack_frame: 0,
                    inputs,
                };
                Some(forged.encode::<Tampered<G>>())
            }
            _ => None,
        };
        let (peer_link, node_link) = (self.config.peer_link, self.config.node_link);
        let me = Endpoint::Player(slot);
        for peer in 0..self.config.players {
            if peer != usize::from(slot) {
                let to = Endpoint::Player(peer as Slot);
                self.net.datagram(now_ms, &peer_link, me, to, batch.clone());
                if let Some(forged) = &forged {
                    self.net
                        .datagram(now_ms, &peer_link, me, to, forged.clone());
                }
            }
        }
        self.net
            .datagram(now_ms, &node_link, me, Endpoint::Node, batch);
        for report in reports {
            self.net
                .datagram(now_ms, &node_link, me, Endpoint::Node, report.encode());
        }
        if let Some(forged) = forged {
            self.net
                .datagram(now_ms, &node_link, me, Endpoint::Node, forged);
            let already = self
                .detections
                .iter()
                .any(|d| d.slot == slot && d.started_node_frame.is_some());
            if !already {
                self.mark_started(slot);
            }
        }
    }

    /// A speed hacker: sends inputs for the frames of its fast clock, waiting for nobody.
    fn wake_speeder(&mut self, index: usize, now_ms: u64, rate_percent: u32) {
        let tick_hz = u64::from(self.config.rollback.tick_hz);
        let redundancy = self.config.rollback.redundancy as usize;
        let delay = self.config.rollback.input_delay_frames;
        let Some(player) = self.players.get_mut(index) else {
            return;
        };
        let started = player.speeder.is_some();
        let speeder = player.speeder.get_or_insert_with(|| {
            let next_frame = player.session.outgoing_inputs().end_frame();
            Speeder {
                origin_ms: now_ms,
                origin_frame: player.session.current_frame(),
                rate_percent,
                next_frame,
                recent: VecDeque::new(),
            }
        });
        let elapsed = now_ms - speeder.origin_ms;
        let fast_frame = u64::from(speeder.origin_frame)
            + elapsed * tick_hz * u64::from(speeder.rate_percent) / 100_000;
        let newest = u32::try_from(fast_frame + u64::from(delay)).unwrap_or(u32::MAX);
        while speeder.next_frame <= newest {
            let input = (self.hooks.bot_input)(player.slot, speeder.next_frame, player.seed);
            speeder.recent.push_back(input);
            if speeder.recent.len() > redundancy.min(MAX_BATCH_INPUTS) {
                speeder.recent.pop_front();
            }
            speeder.next_frame += 1;
        }
        let count = speeder.recent.len() as u32;
        let batch = InputBatch {
            slot: player.slot,
            first_frame: speeder.next_frame - count,
            sender_frame: u32::try_from(fast_frame).unwrap_or(u32::MAX),
            ack_frame: 0,
            inputs: speeder.recent.iter().copied().collect(),
        }
        .encode::<Tampered<G>>();
        let slot = player.slot;
        let (peer_link, node_link) = (self.config.peer_link, self.config.node_link);
        let me = Endpoint::Player(slot);
        for peer in 0..self.config.players {
            if peer != usize::from(slot) {
                let to = Endpoint::Player(peer as Slot);
                self.net.datagram(now_ms, &peer_link, me, to, batch.clone());
            }
        }
        self.net
            .datagram(now_ms, &node_link, me, Endpoint::Node, batch);
        if !started {
            self.mark_started(slot);
        }
    }

    fn report(mut self) -> SimReport {
        for index in 0..self.players.len() {
            self.check_confirmed(index);
        }
        let players: Vec<PlayerReport> = self
            .players
            .iter()
            .map(|p| PlayerReport {
                slot: p.slot,
                cheat: p.cheat,
                current_frame: p.session.current_frame(),
                confirmed_frame: p.session.confirmed_frame(),
                checksums_compared: p.compared,
                checksum_mismatches: p.mismatches,
                first_mismatch_frame: p.first_mismatch,
                last_mismatch_frame: p.last_mismatch,
                stall_wakes: p.stall_wakes,
                steady_stall_wakes: p.steady_stall_wakes,
                refused_messages: p.refused,
                stats: *p.session.stats(),
            })
            .collect();
        let mut hash = Fnv::default();
        for v in self.referee.verdicts() {
            hash.eat(u64::from(v.slot));
            hash.eat(u64::from(v.frame));
            hash.eat(v.kind as u64);
            hash.eat(u64::from(v.node_frame));
        }
        let referee_frame = self.referee.frame();
        hash.eat(u64::from(referee_frame));
        hash.eat(self.referee.state().checksum());
        for p in &players {
            hash.eat(u64::from(p.current_frame));
            hash.eat(u64::from(p.confirmed_frame));
            hash.eat(p.checksums_compared);
            hash.eat(p.checksum_mismatches);
            hash.eat(p.stats.rollbacks);
            hash.eat(p.stats.rollback_frames_total);
            hash.eat(p.stats.stalls);
        }
        hash.eat(self.net.stats.delivered);
        SimReport {
            referee_frame,
            verdicts: self.referee.verdicts().to_vec(),
            players,
            detections: self.detections,
            referee_stats: *self.referee.stats(),
            net: self.net.stats,
            node_refused_messages: self.node_refused,
            trace_hash: hash.0,
        }
    }
}

/// FNV-1a, for the trace hash: stable across runs, machines and Rust versions.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn eat(&mut self, value: u64) {
        for byte in value.to_le_bytes() {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// The smallest one-way latency (ms, both peer and node links, no jitter or loss) in
/// `from_ms..=to_ms` (by `step_ms`) at which an honest player of a two-player match stalls
/// after its first second (see [`WARMUP_FRAMES`]) in a `duration_ms` run, with `rollback` as
/// each player's configuration. `None` when nobody stalls in the range. Compare with
/// [`crate::rollback::max_one_way_ms_without_stall`].
pub fn stall_onset_one_way_ms<G: Game>(
    game: &G,
    hooks: SimHooks<G>,
    rollback: RollbackConfig,
    (from_ms, to_ms, step_ms): (u32, u32, u32),
    duration_ms: u64,
) -> Result<Option<u32>, SimError> {
    let mut one_way_ms = from_ms;
    while one_way_ms <= to_ms {
        let mut config = SimConfig::honest(2, LinkProfile::fixed(one_way_ms), 1, duration_ms);
        config.rollback = rollback;
        let report = run(game.clone(), hooks, &config)?;
        if report.players.iter().any(|p| p.steady_stall_wakes > 0) {
            return Ok(Some(one_way_ms));
        }
        one_way_ms = one_way_ms.saturating_add(step_ms.max(1));
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
