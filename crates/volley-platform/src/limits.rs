//! Token buckets keyed by address or account, bounded in memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Most keys kept; when full, the table is cleared (an attacker spraying keys then gets fresh
/// buckets, which costs it as much as before, and memory stays bounded).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// Token buckets per key: `per_s` refill, `burst` capacity.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    per_s: f64,
    burst: f64,
    map: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    /// New buckets.
    pub fn new(per_s: f64, burst: f64) -> Self {
        KeyedBuckets {
            per_s: per_s.max(0.0),
            burst: burst.max(1.0),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now_ms`; `Err(retry_after_ms)` when empty.
    pub fn take(&self, key: &K, now_ms: i64) -> Result<(), u64> {
        let Ok(mut map) = self.map.lock() else {
            return Err(1000);
        };
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.clear();
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at_ms: now_ms,
        });
        let elapsed = (now_ms - b.at_ms).max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * self.per_s).min(self.burst);
        b.at_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if self.per_s > 0.0 {
            Err((((1.0 - b.tokens) / self.per_s) * 1000.0).ceil() as u64)
        } else {
            Err(60_000)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let b = KeyedBuckets::new(2.0, 3.0);
        for _ in 0..3 {
            assert!(b.take(&1u8, 0).is_ok());
        }
        let retry = b.take(&1u8, 0).unwrap_err();
        assert_eq!(retry, 500);
        assert!(b.take(&2u8, 0).is_ok(), "keys are independent");
        assert!(b.take(&1u8, 499).is_err());
        assert!(b.take(&1u8, 500).is_ok());
    }
}
