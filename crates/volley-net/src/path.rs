//! Path liveness and quality, sans-IO.
//!
//! A [`PathMonitor`] watches one path to one peer. It asks for a ping every
//! `ping_interval`, takes RTT samples from pongs, and declares the path dead when nothing was
//! heard for `dead_after`. Time is a `Duration` since any fixed origin, passed in by the caller.

use std::collections::VecDeque;
use std::time::Duration;

/// Path monitor settings.
#[derive(Debug, Clone, Copy)]
pub struct PathConfig {
    /// How often to ping.
    pub ping_interval: Duration,
    /// Silence after which the path counts as dead. With pings every 50 ms, 400 ms of silence
    /// is eight lost pings in a row: on any link worth playing on, that is a dead path, and it
    /// leaves room under the 1 s failover budget.
    pub dead_after: Duration,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig {
            ping_interval: Duration::from_millis(50),
            dead_after: Duration::from_millis(400),
        }
    }
}

/// How many recent pings the loss estimate looks at.
const LOSS_WINDOW: usize = 64;

/// Liveness, RTT, jitter and loss of one path.
#[derive(Debug)]
pub struct PathMonitor {
    cfg: PathConfig,
    last_heard: Option<Duration>,
    last_ping: Option<Duration>,
    next_id: u32,
    srtt_us: Option<f64>,
    jitter_us: f64,
    last_rtt_us: Option<f64>,
    recent: VecDeque<(u32, Duration, bool)>,
    samples: u64,
}

impl PathMonitor {
    /// A monitor that has heard nothing yet.
    pub fn new(cfg: PathConfig) -> Self {
        PathMonitor {
            cfg,
            last_heard: None,
            last_ping: None,
            next_id: 0,
            srtt_us: None,
            jitter_us: 0.0,
            last_rtt_us: None,
            recent: VecDeque::with_capacity(LOSS_WINDOW),
            samples: 0,
        }
    }

    /// Records that something arrived on this path.
    pub fn on_heard(&mut self, now: Duration) {
        self.last_heard = Some(self.last_heard.map_or(now, |t| t.max(now)));
    }

    /// Returns a ping id if a ping is due now; the caller sends `Ping { id, sent_us: now }`.
    pub fn poll_ping(&mut self, now: Duration) -> Option<u32> {
        if let Some(last) = self.last_ping {
            if now < last + self.cfg.ping_interval {
                return None;
            }
        }
        self.last_ping = Some(now);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        if self.recent.len() == LOSS_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back((id, now, false));
        Some(id)
    }

    /// A pong arrived for ping `id` sent at `sent` (as echoed back).
    pub fn on_pong(&mut self, now: Duration, id: u32, sent: Duration) {
        self.on_heard(now);
        // Pings carry their send time in whole microseconds, so compare at that precision.
        let sent_us = sent.as_micros();
        let Some(entry) = self
            .recent
            .iter_mut()
            .find(|e| e.0 == id && e.1.as_micros() == sent_us)
        else {
            return; // unknown or forged pong: no sample
        };
        if entry.2 {
            return;
        }
        entry.2 = true;
        let rtt = now.saturating_sub(sent).as_secs_f64() * 1e6;
        self.samples += 1;
        match self.srtt_us {
            None => self.srtt_us = Some(rtt),
            Some(s) => self.srtt_us = Some(s + (rtt - s) / 8.0),
        }
        if let Some(last) = self.last_rtt_us {
            self.jitter_us += ((rtt - last).abs() - self.jitter_us) / 16.0;
        }
        self.last_rtt_us = Some(rtt);
    }

    /// Whether something was heard within `dead_after`.
    pub fn is_alive(&self, now: Duration) -> bool {
        self.last_heard
            .is_some_and(|t| now.saturating_sub(t) < self.cfg.dead_after)
    }

    /// Smoothed RTT, if any sample was taken.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt_us.map(|us| Duration::from_micros(us as u64))
    }

    /// The last RTT sample.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt_us.map(|us| Duration::from_micros(us as u64))
    }

    /// RTT variation (RFC 3550 style), microseconds.
    pub fn jitter(&self) -> Duration {
        Duration::from_micros(self.jitter_us as u64)
    }

    /// Fraction of recent pings (old enough to have been answered) that got no pong.
    pub fn loss(&self, now: Duration) -> f64 {
        let grace =
            self.rtt().unwrap_or(Duration::from_millis(200)) * 2 + Duration::from_millis(50);
        let settled: Vec<_> = self
            .recent
            .iter()
            .filter(|e| now.saturating_sub(e.1) > grace)
            .collect();
        if settled.is_empty() {
            return 0.0;
        }
        settled.iter().filter(|e| !e.2).count() as f64 / settled.len() as f64
    }

    /// RTT samples taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn dies_after_silence_and_measures_rtt() {
        let mut m = PathMonitor::new(PathConfig::default());
        assert!(!m.is_alive(ms(0)));
        let id = m.poll_ping(ms(0)).unwrap_or(u32::MAX);
        assert_eq!(m.poll_ping(ms(10)), None);
        m.on_pong(ms(30), id, ms(0));
        assert_eq!(m.rtt(), Some(ms(30)));
        assert!(m.is_alive(ms(400)));
        assert!(!m.is_alive(ms(430)));
    }

    #[test]
    fn forged_pongs_give_no_sample() {
        let mut m = PathMonitor::new(PathConfig::default());
        let _ = m.poll_ping(ms(0));
        m.on_pong(ms(5), 99, ms(0));
        assert_eq!(m.samples(), 0);
    }

    #[test]
    fn loss_counts_unanswered_pings() {
        let mut m = PathMonitor::new(PathConfig::default());
        for i in 0..10u64 {
            let now = ms(i * 50);
            if let Some(id) = m.poll_ping(now) {
                if i % 2 == 0 {
                    m.on_pong(now + ms(10), id, now);
                }
            }
        }
        let loss = m.loss(ms(2000));
        assert!((loss - 0.5).abs() < 1e-9, "loss {loss}");
    }
}
