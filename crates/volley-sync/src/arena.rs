//! The demo arena game: a top-down arena where players move, aim and shoot, with bots that play
//! it. It is what the demo, the tests and the benchmarks run.
//!
//! Deterministic by construction: integer fixed-point arithmetic only (1/256 world units), a
//! hard-coded sine table instead of floating-point trigonometry, a seeded xorshift generator in
//! the state, and iteration in slot/id order. The same inputs give bit-identical states on every
//! machine.

use crate::game::{EntityView, Game};

/// Fixed-point units per world unit.
pub const UNIT: i32 = 256;
/// The arena is `WORLD` × `WORLD` fixed-point units (64 × 64 world units).
pub const WORLD: i32 = 64 * UNIT;
/// Most players in one arena.
pub const MAX_PLAYERS: usize = 64;
/// Most bullets alive at once; a shot beyond it is not fired.
pub const MAX_BULLETS: usize = 512;
/// Player collision radius.
pub const PLAYER_RADIUS: i32 = UNIT / 2;
/// Top player speed per frame (a quarter world unit).
pub const PLAYER_SPEED_MAX: i32 = UNIT / 4;
/// Bullet speed per frame (one world unit).
pub const BULLET_SPEED: i32 = UNIT;
const ACCEL: i32 = UNIT / 32;
const BULLET_TTL: u8 = 60;
const FIRE_COOLDOWN: u8 = 10;
const DAMAGE: u8 = 25;
const HEALTH_MAX: u8 = 100;
const RESPAWN_FRAMES: u8 = 60;

/// Entity kind of a player in [`EntityView::kind`].
pub const KIND_PLAYER: u8 = 0;
/// Entity kind of a bullet.
pub const KIND_BULLET: u8 = 1;
/// [`EntityView::flags`] bit: the player fired this frame.
pub const FLAG_FIRED: u8 = 1;

/// sin(i · 2π / 256) · 256 for i in 0..=64 (a quarter wave).
const SIN_QUARTER: [i32; 65] = [
    0, 6, 13, 19, 25, 31, 38, 44, 50, 56, 62, 68, 74, 80, 86, 92, 98, 104, 109, 115, 121, 126, 132,
    137, 142, 147, 152, 157, 162, 167, 172, 177, 181, 185, 190, 194, 198, 202, 206, 209, 213, 216,
    220, 223, 226, 229, 231, 234, 237, 239, 241, 243, 245, 247, 248, 250, 251, 252, 253, 254, 255,
    255, 256, 256, 256,
];

/// sin of an angle in 256ths of a turn, scaled by 256.
pub fn sin256(angle: u8) -> i32 {
    let a = usize::from(angle);
    let q = |i: usize| SIN_QUARTER.get(i).copied().unwrap_or(0);
    match a {
        0..=64 => q(a),
        65..=128 => q(128 - a),
        129..=192 => -q(a - 128),
        _ => -q(256 - a),
    }
}

/// cos of an angle in 256ths of a turn, scaled by 256.
pub fn cos256(angle: u8) -> i32 {
    sin256(angle.wrapping_add(64))
}

/// The angle (256ths of a turn) closest to the direction (dx, dy).
pub fn angle_of(dx: i32, dy: i32) -> u8 {
    // Largest dot product; ties (the table is flat near its peaks) go to the smallest cross
    // product, i.e. the truly closest direction.
    let mut best = 0u8;
    let mut best_key = (i64::MIN, i64::MIN);
    for a in 0..=255u8 {
        let (c, s) = (i64::from(cos256(a)), i64::from(sin256(a)));
        let (x, y) = (i64::from(dx), i64::from(dy));
        let key = (x * c + y * s, -(x * s - y * c).abs());
        if key > best_key {
            best_key = key;
            best = a;
        }
    }
    best
}

/// One player's input for one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ArenaInput {
    /// -1, 0 or 1.
    pub move_x: i8,
    /// -1, 0 or 1.
    pub move_y: i8,
    /// Facing, 256ths of a turn.
    pub aim: u8,
    /// Shoot this frame (if the weapon is ready).
    pub fire: bool,
}

/// A player in the arena.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Player {
    /// Position.
    pub x: i32,
    /// Position.
    pub y: i32,
    /// Velocity per frame.
    pub vx: i32,
    /// Velocity per frame.
    pub vy: i32,
    /// Facing.
    pub angle: u8,
    /// Health; 0 while dead.
    pub health: u8,
    /// Frames until the weapon is ready.
    pub cooldown: u8,
    /// Frames until respawn while dead.
    pub respawn: u8,
    /// Hits that killed another player.
    pub score: u16,
    /// Whether the player fired this frame.
    pub fired: bool,
}

/// A bullet in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bullet {
    /// Entity id (wraps).
    pub id: u16,
    /// Who fired it.
    pub owner: u8,
    /// Position.
    pub x: i32,
    /// Position.
    pub y: i32,
    /// Velocity per frame.
    pub vx: i32,
    /// Velocity per frame.
    pub vy: i32,
    /// Frames left.
    pub ttl: u8,
}

/// The arena state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arena {
    frame: u32,
    rng: u64,
    next_bullet: u16,
    /// Players by slot.
    pub players: Vec<Player>,
    /// Bullets in flight, oldest first.
    pub bullets: Vec<Bullet>,
}

impl Arena {
    /// A new match for `players` (1..=64) players, spawned from `seed`.
    pub fn new(players: usize, seed: u64) -> Self {
        let mut a = Arena {
            frame: 0,
            rng: seed | 1,
            next_bullet: 0,
            players: Vec::new(),
            bullets: Vec::new(),
        };
        for _ in 0..players.clamp(1, MAX_PLAYERS) {
            let (x, y) = a.spawn_point();
            a.players.push(Player {
                x,
                y,
                health: HEALTH_MAX,
                ..Player::default()
            });
        }
        a
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64: deterministic, in the state, so rollbacks replay it exactly.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn spawn_point(&mut self) -> (i32, i32) {
        let span = (WORLD - 4 * UNIT) as u64;
        let x = (self.next_rand() % span) as i32 + 2 * UNIT;
        let y = (self.next_rand() % span) as i32 + 2 * UNIT;
        (x, y)
    }

    fn step_player(&mut self, slot: usize, input: ArenaInput) {
        let spawn = if self
            .players
            .get(slot)
            .is_some_and(|p| p.health == 0 && p.respawn <= 1)
        {
            Some(self.spawn_point())
        } else {
            None
        };
        let Some(p) = self.players.get_mut(slot) else {
            return;
        };
        p.fired = false;
        if p.health == 0 {
            p.respawn = p.respawn.saturating_sub(1);
            if let Some((x, y)) = spawn {
                *p = Player {
                    x,
                    y,
                    health: HEALTH_MAX,
                    score: p.score,
                    ..Player::default()
                };
            }
            return;
        }
        let mx = i32::from(input.move_x.clamp(-1, 1));
        let my = i32::from(input.move_y.clamp(-1, 1));
        // Friction then acceleration; integer division keeps it exact everywhere.
        p.vx = (p.vx - p.vx / 8 + mx * ACCEL).clamp(-PLAYER_SPEED_MAX, PLAYER_SPEED_MAX);
        p.vy = (p.vy - p.vy / 8 + my * ACCEL).clamp(-PLAYER_SPEED_MAX, PLAYER_SPEED_MAX);
        p.x = (p.x + p.vx).clamp(PLAYER_RADIUS, WORLD - PLAYER_RADIUS);
        p.y = (p.y + p.vy).clamp(PLAYER_RADIUS, WORLD - PLAYER_RADIUS);
        p.angle = input.aim;
        p.cooldown = p.cooldown.saturating_sub(1);
        if input.fire && p.cooldown == 0 && self.bullets.len() < MAX_BULLETS {
            p.cooldown = FIRE_COOLDOWN;
            p.fired = true;
            let (c, s) = (cos256(p.angle), sin256(p.angle));
            let id = self.next_bullet;
            self.next_bullet = self.next_bullet.wrapping_add(1);
            self.bullets.push(Bullet {
                id,
                owner: slot as u8,
                x: p.x + c * PLAYER_RADIUS / UNIT,
                y: p.y + s * PLAYER_RADIUS / UNIT,
                vx: c * BULLET_SPEED / UNIT,
                vy: s * BULLET_SPEED / UNIT,
                ttl: BULLET_TTL,
            });
        }
    }

    fn step_bullets(&mut self, views: &[Option<&[EntityView]>]) {
        let players = &mut self.players;
        self.bullets.retain_mut(|b| {
            // Where the bullet's owner saw each player (lag compensation), if the node says.
            let seen = views.get(usize::from(b.owner)).copied().flatten();
            b.x += b.vx;
            b.y += b.vy;
            b.ttl = b.ttl.saturating_sub(1);
            if b.ttl == 0 || !(0..=WORLD).contains(&b.x) || !(0..=WORLD).contains(&b.y) {
                return false;
            }
            let mut killer = None;
            let mut hit = false;
            for (slot, p) in players.iter_mut().enumerate() {
                if slot == usize::from(b.owner) || p.health == 0 {
                    continue;
                }
                let (px, py) = seen
                    .and_then(|v| {
                        // Views are in id order and players are ids 0..n: look there first.
                        v.get(slot)
                            .filter(|e| usize::from(e.id) == slot)
                            .or_else(|| v.iter().find(|e| usize::from(e.id) == slot))
                            .filter(|e| e.kind == KIND_PLAYER)
                    })
                    .map_or((p.x, p.y), |e| (e.x, e.y));
                let (dx, dy) = (
                    i64::from(px) - i64::from(b.x),
                    i64::from(py) - i64::from(b.y),
                );
                let r = i64::from(PLAYER_RADIUS);
                if dx * dx + dy * dy <= r * r {
                    p.health = p.health.saturating_sub(DAMAGE);
                    if p.health == 0 {
                        p.respawn = RESPAWN_FRAMES;
                        killer = Some(usize::from(b.owner));
                    }
                    hit = true;
                    break;
                }
            }
            if let Some(k) = killer.and_then(|k| players.get_mut(k)) {
                k.score = k.score.saturating_add(1);
            }
            !hit
        });
    }
}

/// Reads fixed-size fields from a state encoding, front to back.
struct StateReader<'a>(&'a [u8]);

impl StateReader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// FNV-1a over a sequence of integers: stable across machines and versions of Rust.
struct Fnv(u64);

impl Fnv {
    fn add(&mut self, v: i64) {
        for b in v.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl Game for Arena {
    type Input = ArenaInput;

    fn step(&mut self, inputs: &[ArenaInput]) {
        self.step_compensated(inputs, &[]);
    }

    /// Bullets hit players where the bullet's owner saw them (`views[owner]`), so a player who
    /// aimed at what its screen showed hits; damage lands on the live player.
    fn step_compensated(&mut self, inputs: &[ArenaInput], views: &[Option<&[EntityView]>]) {
        for slot in 0..self.players.len() {
            let input = inputs.get(slot).copied().unwrap_or_default();
            self.step_player(slot, input);
        }
        self.step_bullets(views);
        self.frame = self.frame.wrapping_add(1);
    }

    fn frame(&self) -> u32 {
        self.frame
    }

    fn checksum(&self) -> u64 {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.add(i64::from(self.frame));
        h.add(self.rng as i64);
        h.add(i64::from(self.next_bullet));
        for p in &self.players {
            for v in [p.x, p.y, p.vx, p.vy] {
                h.add(i64::from(v));
            }
            for v in [p.angle, p.health, p.cooldown, p.respawn] {
                h.add(i64::from(v));
            }
            h.add(i64::from(p.score));
        }
        for b in &self.bullets {
            h.add(i64::from(b.id));
            h.add(i64::from(b.owner));
            for v in [b.x, b.y, b.vx, b.vy] {
                h.add(i64::from(v));
            }
            h.add(i64::from(b.ttl));
        }
        h.0
    }

    fn encode_input(input: &ArenaInput) -> [u8; 4] {
        [
            input.move_x as u8,
            input.move_y as u8,
            input.aim,
            u8::from(input.fire),
        ]
    }

    fn decode_input(bytes: [u8; 4]) -> Option<ArenaInput> {
        let [mx, my, aim, fire] = bytes;
        let (mx, my) = (mx as i8, my as i8);
        if !(-1..=1).contains(&mx) || !(-1..=1).contains(&my) || fire > 1 {
            return None;
        }
        Some(ArenaInput {
            move_x: mx,
            move_y: my,
            aim,
            fire: fire == 1,
        })
    }

    fn predict(e: &EntityView, input: &ArenaInput) -> EntityView {
        if e.kind != KIND_PLAYER || e.health == 0 {
            return *e;
        }
        // The same integer movement rules as `step_player`.
        let mx = i32::from(input.move_x.clamp(-1, 1));
        let my = i32::from(input.move_y.clamp(-1, 1));
        let vx = (e.vx - e.vx / 8 + mx * ACCEL).clamp(-PLAYER_SPEED_MAX, PLAYER_SPEED_MAX);
        let vy = (e.vy - e.vy / 8 + my * ACCEL).clamp(-PLAYER_SPEED_MAX, PLAYER_SPEED_MAX);
        EntityView {
            x: (e.x + vx).clamp(PLAYER_RADIUS, WORLD - PLAYER_RADIUS),
            y: (e.y + vy).clamp(PLAYER_RADIUS, WORLD - PLAYER_RADIUS),
            vx,
            vy,
            angle: input.aim,
            ..*e
        }
    }

    fn encode_state(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(16 + self.players.len() * 24 + self.bullets.len() * 20);
        w.extend_from_slice(&self.frame.to_be_bytes());
        w.extend_from_slice(&self.rng.to_be_bytes());
        w.extend_from_slice(&self.next_bullet.to_be_bytes());
        w.push(self.players.len() as u8);
        for p in &self.players {
            for v in [p.x, p.y, p.vx, p.vy] {
                w.extend_from_slice(&v.to_be_bytes());
            }
            w.extend_from_slice(&[p.angle, p.health, p.cooldown, p.respawn, u8::from(p.fired)]);
            w.extend_from_slice(&p.score.to_be_bytes());
        }
        w.extend_from_slice(&(self.bullets.len() as u16).to_be_bytes());
        for b in &self.bullets {
            w.extend_from_slice(&b.id.to_be_bytes());
            w.push(b.owner);
            for v in [b.x, b.y, b.vx, b.vy] {
                w.extend_from_slice(&v.to_be_bytes());
            }
            w.push(b.ttl);
        }
        w
    }

    fn decode_state(bytes: &[u8]) -> Option<Self> {
        let mut r = StateReader(bytes);
        let frame = u32::from_be_bytes(r.take()?);
        let rng = u64::from_be_bytes(r.take()?);
        let next_bullet = u16::from_be_bytes(r.take()?);
        let [n] = r.take::<1>()?;
        if usize::from(n) > MAX_PLAYERS || n == 0 {
            return None;
        }
        let mut players = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let [x, y, vx, vy] = [0; 4].map(|_| r.take().map(i32::from_be_bytes));
            let [angle, health, cooldown, respawn, fired] = r.take::<5>()?;
            if fired > 1 {
                return None;
            }
            players.push(Player {
                x: x?,
                y: y?,
                vx: vx?,
                vy: vy?,
                angle,
                health,
                cooldown,
                respawn,
                score: u16::from_be_bytes(r.take()?),
                fired: fired == 1,
            });
        }
        let nb = usize::from(u16::from_be_bytes(r.take()?));
        if nb > MAX_BULLETS {
            return None;
        }
        let mut bullets = Vec::with_capacity(nb);
        for _ in 0..nb {
            let id = u16::from_be_bytes(r.take()?);
            let [owner] = r.take::<1>()?;
            let [x, y, vx, vy] = [0; 4].map(|_| r.take().map(i32::from_be_bytes));
            let [ttl] = r.take::<1>()?;
            bullets.push(Bullet {
                id,
                owner,
                x: x?,
                y: y?,
                vx: vx?,
                vy: vy?,
                ttl,
            });
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(Arena {
            frame,
            rng,
            next_bullet,
            players,
            bullets,
        })
    }

    fn entities(&self) -> Vec<EntityView> {
        let mut out = Vec::with_capacity(self.players.len() + self.bullets.len());
        for (slot, p) in self.players.iter().enumerate() {
            out.push(EntityView {
                id: slot as u16,
                kind: KIND_PLAYER,
                x: p.x,
                y: p.y,
                vx: p.vx,
                vy: p.vy,
                angle: p.angle,
                health: p.health,
                flags: if p.fired { FLAG_FIRED } else { 0 },
            });
        }
        for b in &self.bullets {
            out.push(EntityView {
                // Bullet ids live above the player range; they wrap within it.
                id: MAX_PLAYERS as u16 + b.id % (u16::MAX - MAX_PLAYERS as u16),
                kind: KIND_BULLET,
                x: b.x,
                y: b.y,
                vx: b.vx,
                vy: b.vy,
                angle: 0,
                health: 0,
                flags: 0,
            });
        }
        out
    }
}

/// A bot that plays the arena: chases the nearest living enemy, strafes, and shoots when its aim
/// is close. Deterministic for a given seed and state.
#[derive(Debug, Clone)]
pub struct Bot {
    slot: usize,
    rng: u64,
    strafe: i8,
}

impl Bot {
    /// A bot playing `slot`.
    pub fn new(slot: usize, seed: u64) -> Self {
        Bot {
            slot,
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            strafe: 1,
        }
    }

    fn rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// The bot's input for the arena's current frame.
    pub fn input(&mut self, arena: &Arena) -> ArenaInput {
        let Some(me) = arena.players.get(self.slot) else {
            return ArenaInput::default();
        };
        if self.rand().is_multiple_of(45) {
            self.strafe = -self.strafe;
        }
        let target = arena
            .players
            .iter()
            .enumerate()
            .filter(|(s, p)| *s != self.slot && p.health > 0)
            .min_by_key(|(_, p)| {
                let (dx, dy) = (i64::from(p.x - me.x), i64::from(p.y - me.y));
                dx * dx + dy * dy
            });
        let Some((_, t)) = target else {
            return ArenaInput::default();
        };
        let (dx, dy) = (t.x - me.x, t.y - me.y);
        let aim = angle_of(dx, dy);
        let far = i64::from(dx).pow(2) + i64::from(dy).pow(2) > i64::from(12 * UNIT).pow(2);
        let (mut mx, mut my) = (dx.signum() as i8, dy.signum() as i8);
        if !far {
            // Close enough: circle the target instead of running into it.
            (mx, my) = (
                -(dy.signum() as i8) * self.strafe,
                (dx.signum() as i8) * self.strafe,
            );
        }
        ArenaInput {
            move_x: mx,
            move_y: my,
            aim,
            fire: !self.rand().is_multiple_of(3),
        }
    }
}

#[cfg(test)]
mod tests {

    /// Lag compensation: a bullet hits a player where its owner saw that player (the view the
    /// node passes), not where the player is now; without the view the same shot misses.
    #[test]
    fn bullets_hit_where_their_owner_saw_the_target() {
        let setup = || {
            let mut a = Arena::new(2, 1);
            a.players[0] = Player {
                x: 10 * UNIT,
                y: 32 * UNIT,
                health: HEALTH_MAX,
                ..Player::default()
            };
            // Now well off the line of fire...
            a.players[1] = Player {
                x: 30 * UNIT,
                y: 40 * UNIT,
                health: HEALTH_MAX,
                ..Player::default()
            };
            a
        };
        // ...but on it in the shooter's (rewound) view.
        let mut seen = setup().entities();
        seen[1].y = 32 * UNIT;
        let fire = ArenaInput {
            aim: 0,
            fire: true,
            ..ArenaInput::default()
        };
        let run = |views: &[Option<&[EntityView]>]| {
            let mut a = setup();
            a.step_compensated(&[fire, ArenaInput::default()], views);
            for _ in 0..40 {
                a.step_compensated(&[ArenaInput::default(); 2], views);
            }
            a
        };
        let plain = run(&[]);
        assert_eq!(
            plain.players[1].health, HEALTH_MAX,
            "the live target was not in the way"
        );
        let compensated = run(&[Some(&seen), None]);
        assert_eq!(
            compensated.players[1].health,
            HEALTH_MAX - DAMAGE,
            "hit where the shooter saw it"
        );
        assert_eq!(
            compensated.players[1].y,
            40 * UNIT,
            "damage lands on the live player"
        );
        // Views belong to the bullet's owner only: the target's own view changes nothing.
        let other = run(&[None, Some(&seen)]);
        assert_eq!(other.players[1].health, HEALTH_MAX);
    }
    use super::*;

    fn run(frames: u32, players: usize, seed: u64) -> Arena {
        let mut a = Arena::new(players, seed);
        let mut bots: Vec<Bot> = (0..players).map(|s| Bot::new(s, seed + s as u64)).collect();
        for _ in 0..frames {
            let inputs: Vec<ArenaInput> = bots.iter_mut().map(|b| b.input(&a)).collect();
            a.step(&inputs);
        }
        a
    }

    #[test]
    fn trig_table_is_consistent() {
        for a in 0..=255u8 {
            let (s, c) = (sin256(a), cos256(a));
            let r2 = s * s + c * c;
            assert!(
                (65536 - 1100..=65536 + 1100).contains(&r2),
                "angle {a}: {s} {c}"
            );
        }
        assert_eq!(angle_of(1, 0), 0);
        assert_eq!(angle_of(0, 1), 64);
        assert_eq!(angle_of(-1, 0), 128);
        assert_eq!(angle_of(0, -1), 192);
    }

    #[test]
    fn same_inputs_same_state() {
        let a = run(1200, 8, 7);
        let b = run(1200, 8, 7);
        assert_eq!(a, b);
        assert_eq!(a.checksum(), b.checksum());
        assert_ne!(run(1200, 8, 8).checksum(), a.checksum());
    }

    #[test]
    fn bots_actually_fight() {
        let a = run(3600, 4, 3);
        let kills: u32 = a.players.iter().map(|p| u32::from(p.score)).sum();
        assert!(kills > 0, "bots scored no kill in a minute of play");
        for p in &a.players {
            assert!((0..=WORLD).contains(&p.x) && (0..=WORLD).contains(&p.y));
            assert!(p.vx.abs() <= PLAYER_SPEED_MAX && p.vy.abs() <= PLAYER_SPEED_MAX);
        }
        assert!(a.bullets.len() <= MAX_BULLETS);
    }

    #[test]
    fn inputs_round_trip_and_bad_bytes_are_refused() {
        for mx in -1..=1i8 {
            for fire in [false, true] {
                let i = ArenaInput {
                    move_x: mx,
                    move_y: -mx,
                    aim: 200,
                    fire,
                };
                assert_eq!(Arena::decode_input(Arena::encode_input(&i)), Some(i));
            }
        }
        assert_eq!(Arena::decode_input([2, 0, 0, 0]), None);
        assert_eq!(Arena::decode_input([0, 0, 0, 7]), None);
    }

    #[test]
    fn entities_list_players_then_bullets() {
        let a = run(100, 4, 1);
        let e = a.entities();
        assert_eq!(e.len(), a.players.len() + a.bullets.len());
        assert!(e.iter().take(4).all(|v| v.kind == KIND_PLAYER));
        assert!(e.iter().skip(4).all(|v| v.kind == KIND_BULLET));
    }

    #[test]
    fn state_round_trips_and_garbage_is_refused() {
        let a = run(300, 6, 9);
        let bytes = a.encode_state();
        assert_eq!(Arena::decode_state(&bytes), Some(a.clone()));
        for n in 0..bytes.len() {
            assert_eq!(Arena::decode_state(&bytes[..n]), None, "truncated at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Arena::decode_state(&longer), None);
    }

    /// A frozen checksum: if this changes, the game's rules changed, and replays and clients of
    /// other versions would desync. Update it only on purpose.
    #[test]
    fn golden_checksum() {
        let a = run(600, 4, 42);
        assert_eq!(a.frame(), 600);
        assert_eq!(format!("{:016x}", a.checksum()), GOLDEN);
    }

    const GOLDEN: &str = "f02a96570f51cce2";
}
