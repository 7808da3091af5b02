//! A shared rate cap: each transfer reserves its bytes' share of time on one schedule, so any
//! number of concurrent transfers together stay under the rate.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate cap in bytes per second (0: none).
#[derive(Debug)]
pub struct Pace {
    rate: u64,
    next: Mutex<Instant>,
}

impl Pace {
    /// A cap of `rate` bytes per second; 0 means unlimited.
    pub fn new(rate: u64) -> Pace {
        Pace {
            rate,
            next: Mutex::new(Instant::now()),
        }
    }

    /// The cap (0: none).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Waits until `bytes` may go. A burst of at most 50 ms of credit builds up while idle.
    pub async fn wait(&self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        let delay = {
            let Ok(mut next) = self.next.lock() else {
                return;
            };
            let now = Instant::now();
            let floor = now.checked_sub(Duration::from_millis(50)).unwrap_or(now);
            let start = (*next).max(floor);
            *next = start + Duration::from_secs_f64(bytes as f64 / self.rate as f64);
            start.saturating_duration_since(now)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_transfers_share_the_rate() {
        let pace = std::sync::Arc::new(Pace::new(1_000_000));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let p = pace.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    p.wait(10_000).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap_or(());
        }
        // 200 kB at 1 MB/s: 200 ms less the 50 ms burst allowance.
        assert!(
            start.elapsed() >= Duration::from_millis(140),
            "{:?}",
            start.elapsed()
        );
    }
}
