//! The origin in a cluster: pulling what this node lacks from its peers (checked, then kept in
//! batches behind the request), prefetching a pulled version's chunks, and telling the other
//! nodes over the bus when a version is published or withdrawn.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use volley_content::chunk_name;
use volley_content::manifest::{check_name, Manifest};

use crate::metrics::DropReason;

use super::versions::{remove_version, write_version};
use super::{blocking, Origin, OriginError, CHUNK_BODY_MAX, MANIFEST_BODY_MAX};

/// Marks a request one node makes of another to pull content: it is answered from the local
/// store only, so nodes that list each other never pull in a loop.
pub(crate) const PULL_HEADER: &str = "x-volley-content-pull";

/// A chunk's hash and bytes.
type OwnedFrame = ([u8; 32], Vec<u8>);

/// A chunk pulled from another node: game, hash, bytes (verified).
pub(crate) type Pulled = (String, [u8; 32], Vec<u8>);

/// Pulled chunks waiting to be stored; when the queue is full a pulled chunk is served but not
/// kept (it is pulled again when next asked for), and counted.
pub(crate) const KEEP_QUEUE: usize = 256;

/// Chunks a prefetch asks the cluster for at once.
const PREFETCH_DEPTH: usize = 4;

/// Bytes of pulled chunks stored in one batch.
const KEEP_BATCH_BYTES: usize = 8 << 20;

/// Bus subject on which a node tells the cluster it stored a new version (payload: JSON
/// `{"game": .., "version": ..}`).
pub(crate) const PUBLISHED_SUBJECT: &str = "content.published";

#[derive(serde::Serialize, serde::Deserialize)]
struct Published {
    game: String,
    version: String,
    /// The version was withdrawn, not published: nodes holding it remove its manifest.
    #[serde(default)]
    withdrawn: bool,
}

impl Origin {
    /// Asks the cluster's other nodes, in order, for `path`, unless this request is itself a
    /// pull: the first body of at most `limit` bytes that `accept` takes.
    pub(crate) async fn pull(
        &self,
        is_pull: bool,
        path: &str,
        limit: usize,
        accept: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        if is_pull {
            return None;
        }
        'peers: for peer in &self.cfg.peers {
            let url = format!("{}{path}", peer.trim_end_matches('/'));
            let mut resp = match self.http.get(&url).header(PULL_HEADER, "1").send().await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    tracing::debug!(peer = %peer, path, status = %r.status(), "content peer lacks it");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "content pull failed");
                    continue;
                }
            };
            if resp.content_length().is_some_and(|n| n > limit as u64) {
                tracing::warn!(peer = %peer, path, limit, "a content peer offered too large a body");
                continue;
            }
            let mut body = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) if body.len() + c.len() <= limit => body.extend_from_slice(&c),
                    Ok(Some(_)) => {
                        tracing::warn!(peer = %peer, path, limit, "a content peer sent too large a body");
                        continue 'peers;
                    }
                    Err(e) => {
                        tracing::warn!(peer = %peer, path, error = %e, "a content pull broke off");
                        continue 'peers;
                    }
                    Ok(None) => break,
                }
            }
            if accept(&body) {
                return Some(body);
            }
            tracing::warn!(peer = %peer, path, "a content peer served bytes that failed their check");
        }
        None
    }

    /// Queues a pulled chunk to be kept; when the queue is full it is not kept, and counted.
    pub(crate) fn keep_later(&self, game: &str, hash: [u8; 32], data: Vec<u8>) {
        if self.keep.try_send((game.to_owned(), hash, data)).is_err() {
            self.metrics.note_drop(DropReason::PulledChunkNotKept);
        }
    }

    /// A version this node lacks, pulled from another node of the cluster: a well-formed,
    /// self-consistently signed manifest of this very version (players check the publisher),
    /// kept; then every chunk of it is pulled in the background, so the cluster's other origin
    /// is not needed once a version has been asked for (or announced) here. `None` when no
    /// node has it.
    pub(crate) async fn pull_version(
        self: &Arc<Self>,
        is_pull: bool,
        game: &str,
        version: &str,
    ) -> Result<Option<Vec<u8>>, OriginError> {
        let dir = self.game_dir(game)?;
        let url_path = format!("/v1/content/{game}/versions/{version}");
        let this_version = |b: &[u8]| {
            Manifest::open(b, None).is_ok_and(|(m, _)| m.game == game && m.version == version)
        };
        let Some(data) = self
            .pull(is_pull, &url_path, MANIFEST_BODY_MAX, this_version)
            .await
        else {
            return Ok(None);
        };
        let v = version.to_owned();
        let data = blocking(move || {
            write_version(&dir, &v, &data)?;
            Ok(data)
        })
        .await?;
        if let Ok((m, _)) = Manifest::open(&data, None) {
            let key = format!("{game}/{version}");
            let fresh = self
                .prefetching
                .lock()
                .map(|mut p| p.insert(key.clone()))
                .unwrap_or(false);
            if fresh {
                tokio::spawn(prefetch(self.clone(), game.to_owned(), key, m));
            }
        }
        Ok(Some(data))
    }

    /// Tells the cluster that `game` `version` was stored (or withdrawn) here. Best effort: a
    /// node that misses it still pulls the version when first asked for it.
    pub(crate) async fn tell_cluster(&self, game: &str, version: &str, withdrawn: bool) {
        let msg = Published {
            game: game.to_owned(),
            version: version.to_owned(),
            withdrawn,
        };
        let body = match serde_json::to_vec(&msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, game, version, "could not encode an announcement");
                return;
            }
        };
        if let Err(e) = self.bus.publish(PUBLISHED_SUBJECT, body).await {
            tracing::warn!(error = %e, game, version, withdrawn, "could not announce a version");
        }
    }
}

/// Stores pulled chunks behind the requests that pulled them, many to a batch, so a pull costs
/// the serving node no flush per chunk. Ends with the origin.
pub(crate) async fn keep_pulled(origin: Weak<Origin>, mut rx: tokio::sync::mpsc::Receiver<Pulled>) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.2.len();
        let mut batch = vec![first];
        while bytes < KEEP_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.2.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let Some(origin) = origin.upgrade() else {
            return;
        };
        let mut by_game: HashMap<String, Vec<OwnedFrame>> = HashMap::new();
        for (game, hash, data) in batch {
            by_game.entry(game).or_default().push((hash, data));
        }
        for (game, frames) in by_game {
            let n = frames.len();
            let kept = match origin.writable_store(&game).await {
                Ok(s) => {
                    blocking(move || {
                        let refs: Vec<volley_content::batch::Frame<'_>> =
                            frames.iter().map(|(h, d)| (*h, &d[..])).collect();
                        Ok(s.put_many(&refs)?)
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match kept {
                Ok(stored) => {
                    origin
                        .metrics
                        .content_chunks_pulled
                        .fetch_add(stored as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    origin
                        .metrics
                        .note_drops(DropReason::PulledChunkNotKept, n as u64);
                    tracing::warn!(game, chunks = n, error = %e, "could not keep pulled chunks");
                }
            }
        }
    }
}

/// Pulls every chunk of a pulled version this node lacks (a few at a time, each verified) into
/// the write-behind queue, waiting when it is full.
async fn prefetch(origin: Arc<Origin>, game: String, key: String, m: Manifest) {
    use futures_util::StreamExt;
    let mut seen = HashSet::new();
    let hashes: Vec<[u8; 32]> = m
        .chunks()
        .map(|c| c.hash)
        .filter(|h| seen.insert(*h))
        .collect();
    drop((m, seen));
    // Without the local store every chunk is simply asked for (and kept if it can be).
    let s = match origin.writable_store(&game).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(game, error = %e, "prefetch: cannot open the local store");
            None
        }
    };
    let mut pulls = futures_util::stream::iter(hashes)
        .map(|hash| {
            let (origin, game, s) = (&origin, &game, s.clone());
            async move {
                if s.is_some_and(|s| s.hold([&hash]).is_empty()) {
                    return None;
                }
                let path = format!("/v1/content/{game}/chunks/{}", chunk_name(&hash));
                let verified = |b: &[u8]| blake3::hash(b).as_bytes() == &hash;
                let data = origin.pull(false, &path, CHUNK_BODY_MAX, verified).await?;
                Some((hash, data))
            }
        })
        .buffer_unordered(PREFETCH_DEPTH);
    let mut missed = 0usize;
    while let Some(got) = pulls.next().await {
        match got {
            Some((hash, data)) => {
                if origin.keep.send((game.clone(), hash, data)).await.is_err() {
                    break;
                }
            }
            None => missed += 1,
        }
    }
    if missed > 0 {
        tracing::debug!(version = %key, missed, "prefetch: chunks held or not found");
    }
    if let Ok(mut p) = origin.prefetching.lock() {
        p.remove(&key);
    }
}

/// Runs while the node does (with cluster peers configured): every version another node
/// announces and this node lacks is pulled with all its chunks, so a player can be sent to
/// any node the moment a build is out. Malformed announcements are counted and ignored.
pub(crate) async fn follow_announcements(
    origin: Weak<Origin>,
    mut sub: volley_store::Subscription,
) {
    // At most four announced versions are pulled at once; more wait (a flood of announcements
    // cannot make the node open unbounded requests to its peers).
    let pulls = Arc::new(tokio::sync::Semaphore::new(4));
    while let Some(msg) = sub.next().await {
        let Some(origin) = origin.upgrade() else {
            return;
        };
        let p = match serde_json::from_slice::<Published>(&msg.payload) {
            Ok(p)
                if check_name("game", &p.game).is_ok()
                    && check_name("version", &p.version).is_ok() =>
            {
                p
            }
            _ => {
                origin.metrics.note_drop(DropReason::AnnouncementMalformed);
                continue;
            }
        };
        let Ok(dir) = origin.game_dir(&p.game) else {
            continue;
        };
        if p.withdrawn {
            match remove_version(&dir, &p.version).await {
                Ok(true) => {
                    tracing::info!(game = %p.game, version = %p.version, "withdrawn by another node")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(game = %p.game, version = %p.version, error = %e, "could not withdraw a version")
                }
            }
            continue;
        }
        if tokio::fs::try_exists(dir.join("versions").join(&p.version))
            .await
            .unwrap_or(true)
        {
            continue; // held already (or this node's own announcement)
        }
        let Ok(permit) = pulls.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let (game, version) = (&p.game, &p.version);
            match origin.pull_version(false, game, version).await {
                Ok(Some(_)) => tracing::info!(game, version, "pulling an announced version"),
                Ok(None) => {
                    tracing::warn!(game, version, "no content peer serves an announced version")
                }
                Err(e) => {
                    tracing::warn!(game, version, error = %e, "pulling an announced version failed")
                }
            }
        });
    }
}
