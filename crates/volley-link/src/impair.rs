//! A sans-IO, seeded model of an impaired network link.
//!
//! [`Impairment`] takes `now` and a packet length and answers with a [`Verdict`]: drop the
//! packet, deliver it at one time, or deliver it twice. It never reads a clock and never touches
//! a socket, so the same seed and the same inputs always give the same verdicts; the emulators in
//! [`crate::udp_link`] and `volley_testkit::tun_link` wrap it with real time and real packets.
//!
//! A [`LinkProfile`] describes ONE direction of a link. A round trip through an emulator crosses
//! two independent impairments, so a profile with `delay_ms = 45` gives a 90 ms round trip.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest accepted one-way delay or jitter, in milliseconds. Anything longer is a typo, not a
/// network, and would make timer queues hold packets for absurd times.
pub const DELAY_MS_MAX: f64 = 60_000.0;

/// Smallest extra hold, in milliseconds, for a packet picked for reordering.
///
/// Why: with zero jitter a reordered packet must still be late enough that a packet sent right
/// after it can overtake it.
pub const REORDER_HOLD_MS_MIN: f64 = 1.0;

/// One direction of a link: delay, jitter, loss, reordering, duplication and a rate cap.
///
/// All probabilities are per packet and in `[0, 1]`. Loss has two independent parts: `loss` is
/// uniform random loss, and the `ge_*` fields drive a Gilbert-Elliott two-state chain whose
/// "bad" state loses packets in bursts. [`LinkProfile::mean_loss`] combines both.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinkProfile {
    /// Base one-way delay in milliseconds.
    pub delay_ms: f64,
    /// Jitter in milliseconds: each packet's delay is `delay_ms` plus a value drawn uniformly from
    /// `[-jitter_ms, +jitter_ms]` (clamped at zero). Keep `jitter_ms <= delay_ms` so the mean delay
    /// stays at `delay_ms`.
    pub jitter_ms: f64,
    /// Probability that a packet is lost at random, independent of the burst model.
    pub loss: f64,
    /// Gilbert-Elliott: probability, per packet, of moving from the good to the bad state.
    pub ge_p_good_to_bad: f64,
    /// Gilbert-Elliott: probability, per packet, of moving from the bad back to the good state.
    pub ge_p_bad_to_good: f64,
    /// Gilbert-Elliott: probability that a packet is lost while the chain is in the bad state.
    pub ge_loss_in_bad: f64,
    /// Probability that a packet is held back so that later packets overtake it.
    pub reorder: f64,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
    /// Serialization rate of the link in bytes per second; `0` means unlimited.
    pub rate_bytes_per_s: u64,
    /// Most bytes that may wait in the serialization queue (only used when `rate_bytes_per_s > 0`);
    /// a packet that would push the queue past this is dropped (tail drop).
    pub queue_bytes_max: usize,
}

/// Why a profile was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    /// A probability field is NaN or outside `[0, 1]`.
    #[error("link profile field `{field}` = {value} is not a probability in [0, 1]")]
    NotAProbability {
        /// Name of the field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A delay field is NaN, negative or above [`DELAY_MS_MAX`].
    #[error("link profile field `{field}` = {value} ms is not in [0, {DELAY_MS_MAX}] ms")]
    BadDelay {
        /// Name of the field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A rate cap without any queue would drop every packet.
    #[error(
        "link profile has rate_bytes_per_s > 0 but queue_bytes_max = 0, which drops everything"
    )]
    ZeroQueue,
}

/// Names accepted by [`LinkProfile::by_name`], mildest first.
const PROFILE_NAMES: [&str; 5] = ["perfect", "lan", "wifi", "weak-4g", "bad-cellular"];

impl Default for LinkProfile {
    fn default() -> Self {
        Self::perfect()
    }
}

impl LinkProfile {
    /// A link that delivers every packet at once, in order.
    pub const fn perfect() -> Self {
        Self {
            delay_ms: 0.0,
            jitter_ms: 0.0,
            loss: 0.0,
            ge_p_good_to_bad: 0.0,
            ge_p_bad_to_good: 0.0,
            ge_loss_in_bad: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
            rate_bytes_per_s: 0,
            queue_bytes_max: 0,
        }
    }

    /// Returns the named profile, or `None` for an unknown name. See [`LinkProfile::names`].
    ///
    /// ```
    /// use volley_link::impair::LinkProfile;
    /// let p = LinkProfile::by_name("weak-4g").unwrap();
    /// assert_eq!(p.delay_ms, 45.0); // one way: 90 ms round trip
    /// ```
    pub fn by_name(name: &str) -> Option<Self> {
        let perfect = Self::perfect();
        let profile = match name {
            "perfect" => perfect,
            "lan" => Self {
                delay_ms: 0.5,
                jitter_ms: 0.1,
                ..perfect
            },
            "wifi" => Self {
                delay_ms: 5.0,
                jitter_ms: 3.0,
                loss: 0.005,
                ..perfect
            },
            // Bursty loss averaging 2 %: the chain is bad 0.01 / (0.01 + 0.4) = 2.44 % of the
            // time, bursts last 1 / 0.4 = 2.5 packets, and 82 % of bad-state packets are lost.
            "weak-4g" => Self {
                delay_ms: 45.0,
                jitter_ms: 15.0,
                ge_p_good_to_bad: 0.01,
                ge_p_bad_to_good: 0.4,
                ge_loss_in_bad: 0.82,
                ..perfect
            },
            // Bursty loss averaging 5 %: bad 0.025 / 0.275 = 9.1 % of the time, bursts of 4
            // packets, 55 % lost in them. 1 Mbit/s with a 64 KiB (~0.5 s) queue, like a congested
            // cell with a deep buffer.
            "bad-cellular" => Self {
                delay_ms: 150.0,
                jitter_ms: 40.0,
                ge_p_good_to_bad: 0.025,
                ge_p_bad_to_good: 0.25,
                ge_loss_in_bad: 0.55,
                reorder: 0.01,
                duplicate: 0.005,
                rate_bytes_per_s: 125_000,
                queue_bytes_max: 64 * 1024,
                ..perfect
            },
            _ => return None,
        };
        Some(profile)
    }

    /// Names of the built-in profiles, mildest first.
    pub fn names() -> &'static [&'static str] {
        &PROFILE_NAMES
    }

    /// Long-run fraction of packets lost, from random and burst loss together (queue overflow
    /// not included: it depends on the offered load).
    pub fn mean_loss(&self) -> f64 {
        let ge_sum = self.ge_p_good_to_bad + self.ge_p_bad_to_good;
        let share_bad = if ge_sum > 0.0 {
            self.ge_p_good_to_bad / ge_sum
        } else {
            0.0
        };
        let burst = share_bad * self.ge_loss_in_bad;
        1.0 - (1.0 - self.loss) * (1.0 - burst)
    }

    /// Checks every field; [`Impairment::new`] calls this so that a bad profile is an error, not
    /// a panic or a silent NaN.
    pub fn validate(&self) -> Result<(), ProfileError> {
        for (field, value) in [("delay_ms", self.delay_ms), ("jitter_ms", self.jitter_ms)] {
            if !(0.0..=DELAY_MS_MAX).contains(&value) {
                return Err(ProfileError::BadDelay { field, value });
            }
        }
        for (field, value) in [
            ("loss", self.loss),
            ("ge_p_good_to_bad", self.ge_p_good_to_bad),
            ("ge_p_bad_to_good", self.ge_p_bad_to_good),
            ("ge_loss_in_bad", self.ge_loss_in_bad),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
        ] {
            // `contains` is false for NaN, which is what we want.
            if !(0.0..=1.0).contains(&value) {
                return Err(ProfileError::NotAProbability { field, value });
            }
        }
        if self.rate_bytes_per_s > 0 && self.queue_bytes_max == 0 {
            return Err(ProfileError::ZeroQueue);
        }
        Ok(())
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Uniform random loss (`LinkProfile::loss`).
    RandomLoss,
    /// Loss in the Gilbert-Elliott bad state.
    BurstLoss,
    /// The serialization queue was full (`LinkProfile::queue_bytes_max`).
    QueueFull,
}

/// What happens to one packet. Times are on the same clock as the `now` passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The packet is lost.
    Drop(DropReason),
    /// The packet arrives once, at this time.
    Deliver(Duration),
    /// The packet arrives twice, at these times.
    Duplicate(Duration, Duration),
}

impl Verdict {
    /// The delivery times: none, one or two.
    pub fn delivery_times(&self) -> impl Iterator<Item = Duration> {
        let (first, second) = match *self {
            Verdict::Drop(_) => (None, None),
            Verdict::Deliver(at) => (Some(at), None),
            Verdict::Duplicate(a, b) => (Some(a), Some(b)),
        };
        first.into_iter().chain(second)
    }

    /// The drop reason, if the packet is lost.
    pub fn drop_reason(&self) -> Option<DropReason> {
        match *self {
            Verdict::Drop(reason) => Some(reason),
            _ => None,
        }
    }
}

/// The state of one impaired link direction: an RNG, the burst-loss chain, the serialization
/// queue and the last in-order delivery time.
#[derive(Debug, Clone)]
pub struct Impairment {
    profile: LinkProfile,
    rng: ChaCha8Rng,
    in_bad_state: bool,
    /// Latest `now` seen; time is never allowed to go backwards.
    last_now: Duration,
    /// Delivery time of the last packet that was not reordered. Later packets are never delivered
    /// before it, so jitter alone does not reorder.
    last_delivery: Duration,
    /// When the serializer has sent every queued byte.
    link_free_at: Duration,
}

impl Impairment {
    /// Builds the impairment for one direction. The same `(profile, seed)` and the same calls to
    /// [`Impairment::on_packet`] always give the same verdicts.
    pub fn new(profile: LinkProfile, seed: u64) -> Result<Self, ProfileError> {
        profile.validate()?;
        Ok(Self {
            profile,
            rng: ChaCha8Rng::seed_from_u64(seed),
            in_bad_state: false,
            last_now: Duration::ZERO,
            last_delivery: Duration::ZERO,
            link_free_at: Duration::ZERO,
        })
    }

    /// The profile in force.
    pub fn profile(&self) -> &LinkProfile {
        &self.profile
    }

    /// Switches to another profile, keeping the RNG, the queue and the ordering state so that
    /// packets already in flight stay ordered.
    pub fn set_profile(&mut self, profile: LinkProfile) -> Result<(), ProfileError> {
        profile.validate()?;
        self.profile = profile;
        Ok(())
    }

    /// Decides the fate of a packet of `len` bytes entering the link at `now`.
    ///
    /// `now` is any monotonic offset (virtual time in simulations, time since start in the
    /// emulators). A `now` earlier than a previous one is treated as the previous one.
    pub fn on_packet(&mut self, now: Duration, len: usize) -> Verdict {
        let now = now.max(self.last_now);
        self.last_now = now;
        let p = self.profile;

        // Draw a fixed number of values per packet, whatever the branch, so that changing one
        // probability does not shift the random stream of every other decision.
        let u_transition: f64 = self.rng.gen();
        let u_burst: f64 = self.rng.gen();
        let u_random: f64 = self.rng.gen();
        let u_jitter: f64 = self.rng.gen();
        let u_reorder: f64 = self.rng.gen();
        let u_hold: f64 = self.rng.gen();
        let u_duplicate: f64 = self.rng.gen();

        // The bottleneck comes first: a packet lost on the air still used its slot on the link.
        let departure = match self.serialize(now, len) {
            Some(departure) => departure,
            None => return Verdict::Drop(DropReason::QueueFull),
        };

        self.in_bad_state = if self.in_bad_state {
            u_transition >= p.ge_p_bad_to_good
        } else {
            u_transition < p.ge_p_good_to_bad
        };
        if self.in_bad_state && u_burst < p.ge_loss_in_bad {
            return Verdict::Drop(DropReason::BurstLoss);
        }
        if u_random < p.loss {
            return Verdict::Drop(DropReason::RandomLoss);
        }

        let jitter_ms = (2.0 * u_jitter - 1.0) * p.jitter_ms;
        let arrival = departure.saturating_add(millis((p.delay_ms + jitter_ms).max(0.0)));
        let delivery = if u_reorder < p.reorder {
            // Held back and left out of `last_delivery`, so packets sent during the hold overtake
            // it.
            let hold_ms = REORDER_HOLD_MS_MIN + u_hold * 2.0 * p.jitter_ms;
            arrival.saturating_add(millis(hold_ms))
        } else {
            let in_order = arrival.max(self.last_delivery);
            self.last_delivery = in_order;
            in_order
        };

        if u_duplicate < p.duplicate {
            // The copy appears after the bottleneck (e.g. a link-layer retransmission whose ack
            // was lost), so it takes no extra link time and arrives together with the original.
            Verdict::Duplicate(delivery, delivery)
        } else {
            Verdict::Deliver(delivery)
        }
    }

    /// Runs the packet through the serialization queue: returns when its last bit leaves, or
    /// `None` when the queue is full.
    fn serialize(&mut self, now: Duration, len: usize) -> Option<Duration> {
        let rate = self.profile.rate_bytes_per_s;
        if rate == 0 {
            return Some(now);
        }
        let rate = rate as f64;
        let backlog_bytes = self.link_free_at.saturating_sub(now).as_secs_f64() * rate;
        if backlog_bytes + len as f64 > self.profile.queue_bytes_max as f64 {
            return None;
        }
        let transmit = Duration::try_from_secs_f64(len as f64 / rate).unwrap_or(Duration::MAX);
        let departure = self.link_free_at.max(now).saturating_add(transmit);
        self.link_free_at = departure;
        Some(departure)
    }
}

/// Milliseconds as a `Duration`, saturating instead of panicking on odd values.
fn millis(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(if ms > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn profile(name: &str) -> LinkProfile {
        LinkProfile::by_name(name).unwrap()
    }

    fn trace(profile: LinkProfile, seed: u64, n: u64, gap: Duration) -> Vec<Verdict> {
        let mut imp = Impairment::new(profile, seed).unwrap();
        (0..n).map(|i| imp.on_packet(gap * i as u32, 100)).collect()
    }

    #[test]
    fn all_named_profiles_are_valid() {
        for name in LinkProfile::names() {
            let p = profile(name);
            p.validate().unwrap();
            assert!(
                p.jitter_ms <= p.delay_ms,
                "{name}: jitter above delay skews the mean"
            );
        }
        assert!(LinkProfile::by_name("dial-up").is_none());
    }

    #[test]
    fn profile_means_match_their_descriptions() {
        assert_eq!(profile("perfect").mean_loss(), 0.0);
        assert!((profile("wifi").mean_loss() - 0.005).abs() < 1e-9);
        assert!((profile("weak-4g").mean_loss() - 0.02).abs() < 1e-3);
        assert!((profile("bad-cellular").mean_loss() - 0.05).abs() < 1e-3);
        assert_eq!(profile("weak-4g").delay_ms * 2.0, 90.0);
    }

    #[test]
    fn bad_profiles_are_errors() {
        let nan = LinkProfile {
            loss: f64::NAN,
            ..LinkProfile::perfect()
        };
        assert!(matches!(
            Impairment::new(nan, 1),
            Err(ProfileError::NotAProbability { field: "loss", .. })
        ));
        let negative = LinkProfile {
            delay_ms: -1.0,
            ..LinkProfile::perfect()
        };
        assert!(negative.validate().is_err());
        let no_queue = LinkProfile {
            rate_bytes_per_s: 1000,
            ..LinkProfile::perfect()
        };
        assert_eq!(no_queue.validate(), Err(ProfileError::ZeroQueue));
    }

    #[test]
    fn perfect_delivers_everything_at_once() {
        let mut imp = Impairment::new(profile("perfect"), 7).unwrap();
        for i in 0..1000u64 {
            assert_eq!(imp.on_packet(ms(i), 1200), Verdict::Deliver(ms(i)));
        }
    }

    #[test]
    fn loss_rate_matches_the_mean_over_100k_packets() {
        for name in ["wifi", "weak-4g", "bad-cellular"] {
            // Disable the rate cap so queue drops do not mix with link loss.
            let p = LinkProfile {
                rate_bytes_per_s: 0,
                ..profile(name)
            };
            let n = 100_000;
            let lost = trace(p, 11, n, ms(1))
                .iter()
                .filter(|v| matches!(v, Verdict::Drop(_)))
                .count();
            let rate = lost as f64 / n as f64;
            let mean = p.mean_loss();
            // Bursts make the variance larger than binomial; 15 % relative is still tight enough
            // to catch a wrong formula.
            assert!(
                (rate - mean).abs() < 0.15 * mean + 0.001,
                "{name}: measured {rate}, configured {mean}"
            );
        }
    }

    #[test]
    fn losses_come_in_bursts() {
        let p = profile("weak-4g");
        let drops: Vec<bool> = trace(p, 3, 100_000, ms(1))
            .iter()
            .map(|v| matches!(v, Verdict::Drop(_)))
            .collect();
        let losses = drops.iter().filter(|d| **d).count() as f64;
        let pairs = drops.windows(2).filter(|w| w[0] && w[1]).count() as f64;
        // Independent loss at 2 % would give P(next lost | lost) = 2 %; bursts give far more.
        assert!(pairs / losses > 0.2, "conditional loss {}", pairs / losses);
    }

    #[test]
    fn mean_delay_holds() {
        for name in LinkProfile::names() {
            let p = profile(name);
            // Space packets wider than the jitter window so the in-order clamp never applies.
            let gap = millis(2.0 * p.jitter_ms + 1.0);
            let len = 100;
            let mut imp = Impairment::new(p, 5).unwrap();
            let (mut sum, mut count) = (0.0, 0u32);
            for i in 0..20_000u32 {
                let now = gap * i;
                for at in imp.on_packet(now, len).delivery_times() {
                    sum += (at - now).as_secs_f64() * 1000.0;
                    count += 1;
                }
            }
            let mean = sum / f64::from(count);
            let serialization_ms = if p.rate_bytes_per_s > 0 {
                len as f64 / p.rate_bytes_per_s as f64 * 1000.0
            } else {
                0.0
            };
            // Reordered packets add up to 2 * jitter of hold.
            let hold_ms = p.reorder * (REORDER_HOLD_MS_MIN + p.jitter_ms);
            let expected = p.delay_ms + serialization_ms + hold_ms;
            assert!(
                (mean - expected).abs() < 0.02 * expected + 0.05,
                "{name}: mean {mean} ms, expected {expected} ms"
            );
        }
    }

    #[test]
    fn reorder_and_duplicate_happen_when_configured() {
        let p = profile("bad-cellular");
        let verdicts = trace(
            LinkProfile {
                rate_bytes_per_s: 0,
                ..p
            },
            9,
            50_000,
            ms(5),
        );
        let dups = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Duplicate(..)))
            .count() as f64;
        assert!((dups / 50_000.0 - p.duplicate).abs() < 0.002);
        let times: Vec<Duration> = verdicts
            .iter()
            .filter_map(|v| v.delivery_times().next())
            .collect();
        let inversions = times.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(inversions > 0, "reorder = 1 % never reordered");
    }

    #[test]
    fn rate_cap_serializes_and_tail_drops() {
        let p = LinkProfile {
            rate_bytes_per_s: 1000,
            queue_bytes_max: 3000,
            ..LinkProfile::perfect()
        };
        let mut imp = Impairment::new(p, 1).unwrap();
        // Five 1000-byte packets at t = 0: one second each on the wire; the queue holds three
        // seconds of data, so the fourth and fifth do not fit.
        let v: Vec<Verdict> = (0..5).map(|_| imp.on_packet(ms(0), 1000)).collect();
        assert_eq!(v[0], Verdict::Deliver(ms(1000)));
        assert_eq!(v[1], Verdict::Deliver(ms(2000)));
        assert_eq!(v[2], Verdict::Deliver(ms(3000)));
        assert_eq!(v[3], Verdict::Drop(DropReason::QueueFull));
        assert_eq!(v[4], Verdict::Drop(DropReason::QueueFull));
        // Once the queue drained, the link is free again.
        assert_eq!(imp.on_packet(ms(5000), 500), Verdict::Deliver(ms(5500)));
    }

    #[test]
    fn time_going_backwards_is_tolerated() {
        let mut imp = Impairment::new(profile("wifi"), 1).unwrap();
        let a = imp.on_packet(ms(100), 10);
        let b = imp.on_packet(ms(50), 10);
        for (x, y) in a.delivery_times().zip(b.delivery_times()) {
            assert!(y >= x);
        }
    }

    fn arb_profile() -> impl Strategy<Value = LinkProfile> {
        (
            0.0..200.0f64,
            0.0..50.0f64,
            0.0..0.3f64,
            (0.0..0.1f64, 0.0..1.0f64, 0.0..1.0f64),
            0.0..0.1f64,
            prop_oneof![Just(0u64), 1_000u64..10_000_000],
            1_000usize..1_000_000,
        )
            .prop_map(|(delay_ms, jitter_ms, loss, ge, duplicate, rate, queue)| {
                LinkProfile {
                    delay_ms,
                    jitter_ms,
                    loss,
                    ge_p_good_to_bad: ge.0,
                    ge_p_bad_to_good: ge.1,
                    ge_loss_in_bad: ge.2,
                    reorder: 0.0,
                    duplicate,
                    rate_bytes_per_s: rate,
                    queue_bytes_max: queue,
                }
            })
    }

    fn arb_packets() -> impl Strategy<Value = Vec<(u64, usize)>> {
        // (gap since previous packet in µs, length)
        proptest::collection::vec((0u64..50_000, 1usize..1500), 1..400)
    }

    fn run(profile: LinkProfile, seed: u64, packets: &[(u64, usize)]) -> Vec<Verdict> {
        let mut imp = Impairment::new(profile, seed).unwrap();
        let mut now = Duration::ZERO;
        packets
            .iter()
            .map(|&(gap_us, len)| {
                now += Duration::from_micros(gap_us);
                imp.on_packet(now, len)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn same_seed_same_trace(p in arb_profile(), seed: u64, packets in arb_packets()) {
            prop_assert_eq!(run(p, seed, &packets), run(p, seed, &packets));
        }

        #[test]
        fn no_reordering_without_reorder(p in arb_profile(), seed: u64, packets in arb_packets()) {
            let mut last = Duration::ZERO;
            let mut now = Duration::ZERO;
            for (v, &(gap_us, _)) in run(p, seed, &packets).iter().zip(&packets) {
                now += Duration::from_micros(gap_us);
                for at in v.delivery_times() {
                    prop_assert!(at >= last, "delivered at {:?} after {:?}", at, last);
                    prop_assert!(at >= now, "delivered before it was sent");
                    last = at;
                }
            }
        }

        #[test]
        fn never_panics_on_any_valid_profile(
            p in arb_profile(),
            reorder in 0.0..=1.0f64,
            seed: u64,
            packets in arb_packets(),
        ) {
            let p = LinkProfile { reorder, ..p };
            let _ = run(p, seed, &packets);
        }
    }
}
