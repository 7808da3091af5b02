//! An in-memory rank index with the ordering of a Redis sorted set: records are ordered by
//! `(score, member)` ascending, members compared as bytes; the descending view (`ZREVRANGE`,
//! `ZREVRANK`) is the exact reverse. Scores are integers within ±2^53, so they mean the same as
//! Redis's doubles.
//!
//! The index is a list of sorted chunks (at most [`CHUNK_MAX`] records each) plus a map from
//! member to score: insert and remove are a binary search and a bounded `memmove`, rank is a sum
//! over chunk lengths plus a binary search. At a million records that is about a thousand
//! chunks: a few microseconds per operation, no allocation per record beyond the member string.

use std::collections::HashMap;

/// Largest chunk before it splits.
pub const CHUNK_MAX: usize = 2048;
/// Largest score magnitude (exactly representable as a double, like Redis).
pub const SCORE_MAX: i64 = 1 << 53;

type Key = (i64, String);

/// The index.
#[derive(Debug, Default, Clone)]
pub struct RankIndex {
    chunks: Vec<Vec<Key>>,
    scores: HashMap<String, i64>,
}

impl RankIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// A member's score.
    pub fn score(&self, member: &str) -> Option<i64> {
        self.scores.get(member).copied()
    }

    /// The chunk that holds (or would hold) `key`.
    fn chunk_for(&self, key: &Key) -> usize {
        // First chunk whose last key is >= key; the last chunk if none.
        let i = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|last| last < key));
        i.min(self.chunks.len().saturating_sub(1))
    }

    /// Sets `member`'s score (insert or move).
    pub fn set(&mut self, member: &str, score: i64) {
        if let Some(old) = self.scores.get(member).copied() {
            if old == score {
                return;
            }
            self.remove_key(&(old, member.to_owned()));
        }
        self.scores.insert(member.to_owned(), score);
        let key = (score, member.to_owned());
        if self.chunks.is_empty() {
            self.chunks.push(vec![key]);
            return;
        }
        let ci = self.chunk_for(&key);
        let chunk = &mut self.chunks[ci];
        let pos = chunk.partition_point(|k| k < &key);
        chunk.insert(pos, key);
        if chunk.len() > CHUNK_MAX {
            let tail = chunk.split_off(chunk.len() / 2);
            self.chunks.insert(ci + 1, tail);
        }
    }

    fn remove_key(&mut self, key: &Key) {
        if self.chunks.is_empty() {
            return;
        }
        let ci = self.chunk_for(key);
        let chunk = &mut self.chunks[ci];
        if let Ok(pos) = chunk.binary_search(key) {
            chunk.remove(pos);
            if chunk.is_empty() {
                self.chunks.remove(ci);
            }
        }
    }

    /// Removes `member`; its score if it was there.
    pub fn remove(&mut self, member: &str) -> Option<i64> {
        let old = self.scores.remove(member)?;
        self.remove_key(&(old, member.to_owned()));
        Some(old)
    }

    /// 0-based ascending rank (`ZRANK`).
    pub fn rank(&self, member: &str) -> Option<usize> {
        let score = self.score(member)?;
        let key = (score, member.to_owned());
        let ci = self.chunk_for(&key);
        let before: usize = self.chunks[..ci].iter().map(Vec::len).sum();
        let pos = self.chunks[ci].binary_search(&key).ok()?;
        Some(before + pos)
    }

    /// 0-based descending rank (`ZREVRANK`).
    pub fn rev_rank(&self, member: &str) -> Option<usize> {
        self.rank(member).map(|r| self.len() - 1 - r)
    }

    /// Records with ascending ranks `start..=stop` (`ZRANGE start stop WITHSCORES`, non-negative
    /// indexes), clamped to the index.
    pub fn range(&self, start: usize, stop: usize) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        if start > stop || start >= self.len() {
            return out;
        }
        let mut skip = start;
        let mut want = stop.min(self.len() - 1) - start + 1;
        for c in &self.chunks {
            if skip >= c.len() {
                skip -= c.len();
                continue;
            }
            for (s, m) in &c[skip..] {
                out.push((m.clone(), *s));
                want -= 1;
                if want == 0 {
                    return out;
                }
            }
            skip = 0;
        }
        out
    }

    /// Records with descending ranks `start..=stop` (`ZREVRANGE start stop WITHSCORES`).
    pub fn rev_range(&self, start: usize, stop: usize) -> Vec<(String, i64)> {
        let n = self.len();
        if start > stop || start >= n {
            return Vec::new();
        }
        let stop = stop.min(n - 1);
        let mut v = self.range(n - 1 - stop, n - 1 - start);
        v.reverse();
        v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The index against a plain ordered set over many random operations, across chunk splits.
    #[test]
    fn matches_an_ordered_set_across_splits() {
        let mut idx = RankIndex::new();
        let mut model: BTreeSet<(i64, String)> = BTreeSet::new();
        let mut scores: HashMap<String, i64> = HashMap::new();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..60_000 {
            let member = format!("m{}", next() % 9000);
            let op = next() % 10;
            if op < 7 {
                let score = (next() % 200) as i64 - 100;
                if let Some(old) = scores.insert(member.clone(), score) {
                    model.remove(&(old, member.clone()));
                }
                model.insert((score, member.clone()));
                idx.set(&member, score);
            } else if let Some(old) = scores.remove(&member) {
                model.remove(&(old, member.clone()));
                assert_eq!(idx.remove(&member), Some(old));
            } else {
                assert_eq!(idx.remove(&member), None);
            }
            if step % 997 == 0 {
                let all: Vec<(String, i64)> = model.iter().map(|(s, m)| (m.clone(), *s)).collect();
                assert_eq!(idx.range(0, usize::MAX - 1), all);
                for (i, (m, _)) in all.iter().enumerate().step_by(37) {
                    assert_eq!(idx.rank(m), Some(i));
                    assert_eq!(idx.rev_rank(m), Some(all.len() - 1 - i));
                }
                let mut rev = all.clone();
                rev.reverse();
                assert_eq!(
                    idx.rev_range(5, 40),
                    rev.iter().skip(5).take(36).cloned().collect::<Vec<_>>()
                );
            }
        }
        assert!(idx.chunks.len() > 1, "the test crossed chunk splits");
        assert_eq!(idx.len(), model.len());
    }
}
