//! The content tracker behind the node's announce routes: in memory for one node, or in Redis
//! when the cluster has one, so that players fetching one version through different nodes
//! find each other. Both apply the same rules (`volley_content::tracker`): entries expire
//! after the TTL, swarms and versions are bounded, answers put the most complete peers first
//! and never include the asker.

use std::net::SocketAddr;
use std::sync::Mutex;

use volley_content::tracker::{Peer, Tracker, TrackerConfig, TrackerError};

/// Why an announce failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnnounceError {
    #[error(transparent)]
    Refused(#[from] TrackerError),
    #[error("tracker unavailable: {0}")]
    Unavailable(String),
}

pub(crate) enum SwarmTracker {
    Memory(Mutex<Tracker>),
    Redis(Box<RedisTracker>),
}

pub(crate) struct RedisTracker {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    config: TrackerConfig,
    announce: redis::Script,
}

/// KEYS: peers (hash id → entry), seen (zset id → last announce ms), have (zset id → chunks
/// held), swarms (zset swarm → last announce ms), the player's swarms (zset swarm → last
/// announce ms).
/// ARGV: id, entry, now, ttl, max peers, max versions, answer max, have, swarm name, max
/// swarms per player.
/// Returns {'full'}, {'busy'} or {'ok', entry...}.
const ANNOUNCE: &str = r"
local now = tonumber(ARGV[3])
local cutoff = now - tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', cutoff)
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
for i = 1, #stale, 1000 do
  local part = {}
  for j = i, math.min(i + 999, #stale) do part[#part + 1] = stale[j] end
  redis.call('HDEL', KEYS[1], unpack(part))
  redis.call('ZREM', KEYS[3], unpack(part))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', cutoff)
if not redis.call('ZSCORE', KEYS[5], ARGV[9])
   and redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[10]) then
  return {'busy'}
end
if not redis.call('ZSCORE', KEYS[4], ARGV[9])
   and redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[6]) then
  return {'full'}
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1])
   and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return {'full'}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZADD', KEYS[3], tonumber(ARGV[8]), ARGV[1])
redis.call('ZADD', KEYS[4], now, ARGV[9])
redis.call('ZADD', KEYS[5], now, ARGV[9])
redis.call('PEXPIRE', KEYS[5], ARGV[4])
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[4]) end
local ids = redis.call('ZREVRANGE', KEYS[3], 0, tonumber(ARGV[7]))
local out = {'ok'}
for _, id in ipairs(ids) do
  if id ~= ARGV[1] then
    local e = redis.call('HGET', KEYS[1], id)
    if e and #out <= tonumber(ARGV[7]) then out[#out + 1] = e end
  end
end
return out
";

fn encode(p: &Peer, now_ms: u64) -> String {
    format!(
        "{} {} {} {} {now_ms}",
        p.id, p.addr, p.have_chunks, p.total_chunks
    )
}

fn decode(s: &str) -> Option<Peer> {
    let mut it = s.split(' ');
    let p = Peer {
        id: it.next()?.parse().ok()?,
        addr: it.next()?.parse::<SocketAddr>().ok()?,
        have_chunks: it.next()?.parse().ok()?,
        total_chunks: it.next()?.parse().ok()?,
        seen_ms: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(p)
}

impl SwarmTracker {
    pub(crate) fn memory(config: TrackerConfig) -> Self {
        SwarmTracker::Memory(Mutex::new(Tracker::new(config)))
    }

    /// A tracker in the Redis at `url`, its keys under `prefix`.
    pub(crate) async fn redis(
        url: &str,
        prefix: &str,
        config: TrackerConfig,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let conn = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|e| e.to_string())?;
        Ok(SwarmTracker::Redis(Box::new(RedisTracker {
            conn,
            prefix: prefix.to_owned(),
            config,
            announce: redis::Script::new(ANNOUNCE),
        })))
    }

    fn keys(prefix: &str, game: &str, version: &str, peer: u64) -> [String; 5] {
        // Names are checked ([a-z0-9._-]), so ':' cannot appear in them.
        let base = format!("{prefix}swarm:{game}:{version}");
        [
            format!("{base}:peers"),
            format!("{base}:seen"),
            format!("{base}:have"),
            format!("{prefix}swarms"),
            format!("{prefix}peer:{peer}:swarms"),
        ]
    }

    /// Records `peer` in the swarm of `game` `version` and answers with other live peers.
    pub(crate) async fn announce(
        &self,
        game: &str,
        version: &str,
        peer: Peer,
        now_ms: u64,
    ) -> Result<Vec<Peer>, AnnounceError> {
        match self {
            SwarmTracker::Memory(t) => Ok(t
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .announce(game, version, peer, now_ms)?),
            SwarmTracker::Redis(r) => {
                if peer.have_chunks > peer.total_chunks {
                    return Err(TrackerError::Inconsistent.into());
                }
                let keys = Self::keys(&r.prefix, game, version, peer.id);
                let mut conn = r.conn.clone();
                let c = r.config;
                let out: Vec<String> = r
                    .announce
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .key(&keys[3])
                    .key(&keys[4])
                    .arg(peer.id)
                    .arg(encode(&peer, now_ms))
                    .arg(now_ms)
                    .arg(c.ttl_ms)
                    .arg(c.max_peers_per_version)
                    .arg(c.max_versions)
                    .arg(c.answer_max)
                    .arg(peer.have_chunks)
                    .arg(format!("{game}:{version}"))
                    .arg(c.max_swarms_per_peer)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| AnnounceError::Unavailable(e.to_string()))?;
                match out.split_first() {
                    Some((status, rest)) if status == "ok" => {
                        Ok(rest.iter().filter_map(|e| decode(e)).collect())
                    }
                    Some((status, _)) if status == "full" => Err(TrackerError::Full.into()),
                    Some((status, _)) if status == "busy" => {
                        Err(TrackerError::TooManySwarms.into())
                    }
                    _ => Err(AnnounceError::Unavailable(
                        "unexpected tracker answer".into(),
                    )),
                }
            }
        }
    }

    /// Removes `peer` from the swarm of `game` `version`.
    pub(crate) async fn leave(
        &self,
        game: &str,
        version: &str,
        peer: u64,
    ) -> Result<(), AnnounceError> {
        match self {
            SwarmTracker::Memory(t) => {
                t.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .leave(game, version, peer);
                Ok(())
            }
            SwarmTracker::Redis(r) => {
                let keys = Self::keys(&r.prefix, game, version, peer);
                let mut conn = r.conn.clone();
                redis::pipe()
                    .atomic()
                    .hdel(&keys[0], peer)
                    .ignore()
                    .zrem(&keys[1], peer)
                    .ignore()
                    .zrem(&keys[2], peer)
                    .ignore()
                    .zrem(&keys[4], format!("{game}:{version}"))
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| AnnounceError::Unavailable(e.to_string()))
            }
        }
    }
}

impl From<AnnounceError> for super::OriginError {
    fn from(e: AnnounceError) -> Self {
        match e {
            AnnounceError::Refused(TrackerError::Full) => super::OriginError::Unavailable {
                code: "tracker_full",
                message: e.to_string(),
                ms: 30_000,
            },
            AnnounceError::Refused(TrackerError::TooManySwarms) => super::OriginError::TooMany {
                code: "too_many_swarms",
                message: e.to_string(),
                ms: 10_000,
            },
            AnnounceError::Refused(other) => super::OriginError::bad(other.to_string()),
            AnnounceError::Unavailable(why) => {
                tracing::error!(error = %why, "tracker unavailable");
                super::OriginError::Unavailable {
                    code: "tracker_unavailable",
                    message: "the tracker is unavailable".into(),
                    ms: 5_000,
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_junk_is_skipped() {
        let p = Peer {
            id: 7,
            addr: "[::1]:9000".parse().unwrap(),
            have_chunks: 3,
            total_chunks: 9,
            seen_ms: 0,
        };
        let back = decode(&encode(&p, 42)).unwrap();
        assert_eq!(back, Peer { seen_ms: 42, ..p });
        for junk in [
            "",
            "7",
            "7 x 3 9 1",
            "7 1.2.3.4:5 3 9 1 extra",
            "7 1.2.3.4:5 3 9",
        ] {
            assert!(decode(junk).is_none(), "{junk:?}");
        }
    }
}
