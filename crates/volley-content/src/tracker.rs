//! The tracker: which players hold (how much of) which version, so fetchers can find peers.
//! Sans-IO: time is an argument. Entries expire unless re-announced; every table is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// An entry not re-announced for this long is dropped.
    pub ttl_ms: u64,
    /// Most peers per version (new ones are refused beyond it).
    pub max_peers_per_version: usize,
    /// Most versions tracked at once.
    pub max_versions: usize,
    /// Most peers in one answer.
    pub answer_max: usize,
    /// Most swarms one player is in at once (so one player cannot fill `max_versions`).
    pub max_swarms_per_peer: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            ttl_ms: 90_000,
            max_peers_per_version: 10_000,
            max_versions: 1_000,
            answer_max: 50,
            max_swarms_per_peer: 16,
        }
    }
}

/// A peer as the tracker tells others about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The player.
    pub id: u64,
    /// Where it serves chunks.
    pub addr: SocketAddr,
    /// Chunks of the version it holds.
    pub have_chunks: u32,
    /// Chunks the version has.
    pub total_chunks: u32,
    /// When it last announced, ms.
    pub seen_ms: u64,
}

/// Why an announce was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// The version's swarm (or the number of versions) is at its limit.
    #[error("the tracker is full")]
    Full,
    /// `have_chunks` exceeds `total_chunks`.
    #[error("have_chunks exceeds total_chunks")]
    Inconsistent,
    /// The player is already in `max_swarms_per_peer` swarms.
    #[error("this player is in too many swarms at once; leave one first")]
    TooManySwarms,
}

/// The tracker.
#[derive(Debug, Default)]
pub struct Tracker {
    config: TrackerConfig,
    swarms: HashMap<(String, String), HashMap<u64, Peer>>,
    /// How many swarms each player is in.
    per_peer: HashMap<u64, usize>,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(config: TrackerConfig) -> Self {
        Tracker {
            config,
            swarms: HashMap::new(),
            per_peer: HashMap::new(),
        }
    }

    /// Records (or refreshes) `peer` in the swarm of `game` `version` and answers with up to
    /// `answer_max` other live peers, those holding the most first.
    pub fn announce(
        &mut self,
        game: &str,
        version: &str,
        peer: Peer,
        now_ms: u64,
    ) -> Result<Vec<Peer>, TrackerError> {
        if peer.have_chunks > peer.total_chunks {
            return Err(TrackerError::Inconsistent);
        }
        self.expire(now_ms);
        let key = (game.to_owned(), version.to_owned());
        if !self.swarms.contains_key(&key) && self.swarms.len() >= self.config.max_versions {
            return Err(TrackerError::Full);
        }
        let joined = self
            .swarms
            .get(&key)
            .is_some_and(|s| s.contains_key(&peer.id));
        if !joined
            && self.per_peer.get(&peer.id).copied().unwrap_or(0) >= self.config.max_swarms_per_peer
        {
            return Err(TrackerError::TooManySwarms);
        }
        let swarm = self.swarms.entry(key.clone()).or_default();
        if !joined && swarm.len() >= self.config.max_peers_per_version {
            if swarm.is_empty() {
                self.swarms.remove(&key);
            }
            return Err(TrackerError::Full);
        }
        if !joined {
            *self.per_peer.entry(peer.id).or_default() += 1;
        }
        swarm.insert(
            peer.id,
            Peer {
                seen_ms: now_ms,
                ..peer
            },
        );
        let mut others: Vec<Peer> = swarm
            .values()
            .filter(|p| p.id != peer.id)
            .copied()
            .collect();
        others.sort_by(|a, b| {
            b.have_chunks
                .cmp(&a.have_chunks)
                .then(b.seen_ms.cmp(&a.seen_ms))
                .then(a.id.cmp(&b.id))
        });
        others.truncate(self.config.answer_max);
        Ok(others)
    }

    /// Removes `peer` from the swarm of `game` `version`.
    pub fn leave(&mut self, game: &str, version: &str, peer: u64) {
        let key = (game.to_owned(), version.to_owned());
        if let Some(swarm) = self.swarms.get_mut(&key) {
            if swarm.remove(&peer).is_some() {
                Self::forget_one(&mut self.per_peer, peer);
            }
            if swarm.is_empty() {
                self.swarms.remove(&key);
            }
        }
    }

    /// Drops every entry older than the TTL.
    pub fn expire(&mut self, now_ms: u64) {
        let ttl = self.config.ttl_ms;
        let per_peer = &mut self.per_peer;
        self.swarms.retain(|_, swarm| {
            swarm.retain(|_, p| {
                let live = now_ms.saturating_sub(p.seen_ms) < ttl;
                if !live {
                    Self::forget_one(per_peer, p.id);
                }
                live
            });
            !swarm.is_empty()
        });
    }

    fn forget_one(per_peer: &mut HashMap<u64, usize>, id: u64) {
        if let Some(n) = per_peer.get_mut(&id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_peer.remove(&id);
            }
        }
    }

    /// Live peers in a swarm.
    pub fn swarm_size(&self, game: &str, version: &str) -> usize {
        self.swarms
            .get(&(game.to_owned(), version.to_owned()))
            .map_or(0, HashMap::len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn peer(id: u64, have: u32) -> Peer {
        Peer {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], 9000 + id as u16)),
            have_chunks: have,
            total_chunks: 100,
            seen_ms: 0,
        }
    }

    #[test]
    fn peers_see_each_other_most_complete_first_and_expire() {
        let mut t = Tracker::new(TrackerConfig {
            ttl_ms: 1000,
            answer_max: 2,
            ..TrackerConfig::default()
        });
        assert!(t
            .announce("arena", "1.0", peer(1, 10), 0)
            .unwrap()
            .is_empty());
        t.announce("arena", "1.0", peer(2, 100), 100).unwrap();
        let seen = t.announce("arena", "1.0", peer(3, 50), 200).unwrap();
        assert_eq!(seen.iter().map(|p| p.id).collect::<Vec<_>>(), vec![2, 1]);
        // Capped at answer_max, never the asker itself.
        let seen = t.announce("arena", "1.0", peer(1, 20), 300).unwrap();
        assert_eq!(seen.iter().map(|p| p.id).collect::<Vec<_>>(), vec![2, 3]);
        // Other versions are other swarms.
        assert!(t
            .announce("arena", "2.0", peer(9, 0), 300)
            .unwrap()
            .is_empty());
        // Peer 2 stops announcing; after the TTL it is gone.
        t.announce("arena", "1.0", peer(3, 60), 1050).unwrap();
        let seen = t.announce("arena", "1.0", peer(1, 30), 1150).unwrap();
        assert_eq!(seen.iter().map(|p| p.id).collect::<Vec<_>>(), vec![3]);
        t.leave("arena", "1.0", 3);
        assert_eq!(t.swarm_size("arena", "1.0"), 1);
        t.expire(10_000);
        assert_eq!(t.swarm_size("arena", "1.0"), 0);
    }

    #[test]
    fn tables_are_bounded_and_lies_refused() {
        let mut t = Tracker::new(TrackerConfig {
            max_peers_per_version: 2,
            max_versions: 1,
            ..TrackerConfig::default()
        });
        t.announce("a", "1", peer(1, 0), 0).unwrap();
        t.announce("a", "1", peer(2, 0), 0).unwrap();
        assert_eq!(t.announce("a", "1", peer(3, 0), 0), Err(TrackerError::Full));
        t.announce("a", "1", peer(2, 5), 1).unwrap(); // a refresh is not a new peer
        assert_eq!(t.announce("a", "2", peer(1, 0), 0), Err(TrackerError::Full));
        assert_eq!(
            t.per_peer.get(&1),
            Some(&1),
            "a refused announce counts nothing"
        );
        let mut liar = peer(4, 0);
        liar.have_chunks = 101;
        assert_eq!(
            t.announce("b", "1", liar, 0),
            Err(TrackerError::Inconsistent)
        );
    }

    #[test]
    fn one_player_is_in_a_bounded_number_of_swarms() {
        let mut t = Tracker::new(TrackerConfig {
            max_swarms_per_peer: 3,
            ttl_ms: 1000,
            ..TrackerConfig::default()
        });
        for v in ["1", "2", "3"] {
            t.announce("a", v, peer(1, 0), 0).unwrap();
        }
        assert_eq!(
            t.announce("a", "4", peer(1, 0), 0),
            Err(TrackerError::TooManySwarms)
        );
        // Others are not held back, and a refresh of a swarm it is in still works.
        t.announce("a", "4", peer(2, 0), 0).unwrap();
        t.announce("a", "3", peer(1, 9), 10).unwrap();
        // Leaving one, or its entries expiring, frees room.
        t.leave("a", "1", 1);
        t.announce("a", "4", peer(1, 0), 20).unwrap();
        t.expire(1025);
        assert!(!t.per_peer.contains_key(&1));
        t.announce("a", "5", peer(1, 0), 1025).unwrap();
        assert_eq!(t.swarm_size("a", "5"), 1);
    }
}
