//! The node as the origin of game builds: chunks named by their BLAKE3 hash and signed
//! manifests, under `<data_dir>/content/<game>/`. Uploads need the server key; downloads are
//! public (every chunk is verified by the player against the signed manifest anyway).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use volley_content::manifest::{check_name, Manifest};
use volley_content::pack::PackStore;
use volley_content::{chunk_name, parse_chunk_name, ContentError};
use volley_proto::api::{
    ChunkBatchReply, ChunkList, ContentCollected, ContentVersion, ContentVersions, PeerAnnounce,
    SwarmPeer, SwarmPeers,
};

use crate::http::{bad, parse, Api, Error};

/// Largest chunk accepted: four times the largest average an upload may use.
pub(crate) const CHUNK_BODY_MAX: usize = 4 * volley_content::cdc::AVG_UPLOAD_MAX as usize;
/// Largest chunk list accepted (10,000 names and then some).
pub(crate) const LIST_BODY_MAX: usize = 1 << 20;
/// Largest manifest accepted.
pub(crate) const MANIFEST_BODY_MAX: usize = 64 << 20;

fn content_err(e: ContentError) -> Error {
    match e {
        ContentError::Io { .. } => {
            tracing::error!(error = %e, "content storage");
            Error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                "content storage failed".into(),
                None,
            )
        }
        ContentError::Corrupt(_) => Error(
            StatusCode::BAD_REQUEST,
            "hash_mismatch",
            e.to_string(),
            None,
        ),
        other => Error(
            StatusCode::BAD_REQUEST,
            "bad_content",
            other.to_string(),
            None,
        ),
    }
}

fn game_dir(api: &Api, game: &str) -> Result<PathBuf, Error> {
    check_name("game", game).map_err(content_err)?;
    Ok(api.cfg.data_dir.join("content").join(game))
}

/// The game's chunk store: `<game>/packs` (and `<game>/chunks`, the one-file-per-chunk layout
/// of earlier nodes, still read). `create` for uploads; otherwise `None` for a game with no
/// content, so requests for unknown games create nothing. Opening reads the index and trims
/// what a crash left half written; stores are opened under one lock so that never races a
/// writer.
async fn store(api: &Api, game: &str, create: bool) -> Result<Option<Arc<PackStore>>, Error> {
    let dir = game_dir(api, game)?;
    let api = api.clone();
    let game = game.to_owned();
    blocking(move || {
        let mut stores = api.content_stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(&game) {
            return Ok(Some(s.clone()));
        }
        let opened = PackStore::open_with(
            &dir.join("packs"),
            &dir.join("chunks"),
            create,
            volley_content::pack::PACK_BYTES,
            std::time::Duration::from_millis(api.cfg.content_grace_ms),
        )
        .map_err(content_err)?;
        Ok(opened.map(|s| {
            let s = Arc::new(s);
            stores.insert(game, s.clone());
            s
        }))
    })
    .await
}

/// Marks a request one node makes of another to pull content: it is answered from the local
/// store only, so nodes that list each other never pull in a loop.
const PULL_HEADER: &str = "x-volley-content-pull";

/// Asks the cluster's other nodes (`content_peers`) for `path`, in order, unless this request
/// is itself a pull: the first body of at most `limit` bytes that `accept` takes.
async fn pull(
    api: &Api,
    headers: &HeaderMap,
    path: &str,
    limit: usize,
    accept: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    if headers.contains_key(PULL_HEADER) {
        return None;
    }
    'peers: for peer in &api.cfg.content_peers {
        let url = format!("{}{path}", peer.trim_end_matches('/'));
        let mut resp = match api
            .content_http
            .get(&url)
            .header(PULL_HEADER, "1")
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(peer = %peer, error = %e, "content pull failed");
                continue;
            }
        };
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            continue;
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) if body.len() + c.len() <= limit => body.extend_from_slice(&c),
                Ok(Some(_)) | Err(_) => continue 'peers,
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

/// A chunk's hash and bytes.
type OwnedFrame = ([u8; 32], Vec<u8>);

/// A chunk pulled from another node: game, hash, bytes (verified).
pub(crate) type Pulled = (String, [u8; 32], Vec<u8>);

/// Pulled chunks waiting to be stored; when the queue is full a pulled chunk is served but not
/// kept (it is pulled again when next asked for).
pub(crate) const KEEP_QUEUE: usize = 256;

/// Stores pulled chunks behind the requests that pulled them, many to a batch, so a pull costs
/// the serving node no flush per chunk. Ends with the node.
pub(crate) async fn keep_pulled(
    api: std::sync::Weak<crate::Shared>,
    mut rx: tokio::sync::mpsc::Receiver<Pulled>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut bytes = batch[0].2.len();
        while bytes < (8 << 20) {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.2.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let Some(api) = api.upgrade() else { return };
        let mut by_game: HashMap<String, Vec<OwnedFrame>> = HashMap::new();
        for (game, hash, data) in batch {
            by_game.entry(game).or_default().push((hash, data));
        }
        for (game, frames) in by_game {
            let Ok(s) = writable_store(&api, &game).await else {
                continue;
            };
            let kept = blocking(move || {
                let refs: Vec<volley_content::batch::Frame<'_>> =
                    frames.iter().map(|(h, d)| (*h, &d[..])).collect();
                s.put_many(&refs).map_err(content_err)
            })
            .await;
            match kept {
                Ok(stored) => {
                    api.metrics
                        .content_chunks_pulled
                        .fetch_add(stored as u64, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(game, error = %e.2, "could not keep pulled chunks"),
            }
        }
    }
}

/// Chunks a prefetch asks the cluster for at once.
const PREFETCH_DEPTH: usize = 4;

/// Pulls every chunk of a pulled version this node lacks (a few at a time, each verified) into
/// the write-behind queue, waiting when it is full.
async fn prefetch(api: Api, game: String, key: String, m: Manifest) {
    use futures_util::StreamExt;
    let mut seen = std::collections::HashSet::new();
    let hashes: Vec<[u8; 32]> = m
        .chunks()
        .map(|c| c.hash)
        .filter(|h| seen.insert(*h))
        .collect();
    drop((m, seen));
    let s = writable_store(&api, &game).await.ok();
    let none = HeaderMap::new();
    let mut pulls = futures_util::stream::iter(hashes)
        .map(|hash| {
            let (api, game, none, s) = (&api, &game, &none, s.clone());
            async move {
                if s.is_some_and(|s| s.hold([&hash]).is_empty()) {
                    return None;
                }
                let path = format!("/v1/content/{game}/chunks/{}", chunk_name(&hash));
                let verified = |b: &[u8]| blake3::hash(b).as_bytes() == &hash;
                let data = pull(api, none, &path, CHUNK_BODY_MAX, verified).await?;
                Some((hash, data))
            }
        })
        .buffer_unordered(PREFETCH_DEPTH);
    let mut missed = 0usize;
    while let Some(got) = pulls.next().await {
        match got {
            Some((hash, data)) => {
                if api
                    .content_keep
                    .send((game.clone(), hash, data))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            None => missed += 1,
        }
    }
    if missed > 0 {
        tracing::debug!(version = %key, missed, "prefetch: chunks held or not found");
    }
    if let Ok(mut p) = api.content_prefetching.lock() {
        p.remove(&key);
    }
}

/// The game's chunk store for writing (created if missing).
async fn writable_store(api: &Api, game: &str) -> Result<Arc<PackStore>, Error> {
    store(api, game, true)
        .await?
        .ok_or_else(|| bad("no such game"))
}

fn no_chunk(hash: &[u8; 32]) -> Error {
    Error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no chunk {}", chunk_name(hash)),
        None,
    )
}

fn hash_param(s: &str) -> Result<[u8; 32], Error> {
    parse_chunk_name(s).ok_or_else(|| bad("a chunk is named by its 64-hex-digit BLAKE3 hash"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|_| {
        Error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "worker failed".into(),
            None,
        )
    })?
}

/// `PUT /v1/content/{game}/chunks/{hash}` (server key).
pub(crate) async fn put_chunk(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((game, hash)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, Error> {
    crate::api::require_server_key(&api, &headers)?;
    let hash = hash_param(&hash)?;
    let s = writable_store(&api, &game).await?;
    blocking(move || s.put_many(&[(hash, &body)]).map_err(content_err)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/content/{game}/chunks` (server key): many chunks, one flush to disk. The batch is
/// refused whole, before anything is written, when a frame is malformed or a chunk does not
/// hash to its name.
pub(crate) async fn put_chunks(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(game): Path<String>,
    body: Bytes,
) -> Result<Json<ChunkBatchReply>, Error> {
    crate::api::require_server_key(&api, &headers)?;
    let s = writable_store(&api, &game).await?;
    blocking(move || {
        let chunks = volley_content::batch::decode(&body, CHUNK_BODY_MAX).map_err(content_err)?;
        let stored = s.put_many(&chunks).map_err(content_err)?;
        Ok(Json(ChunkBatchReply {
            chunks: chunks.len() as u64,
            stored: stored as u64,
        }))
    })
    .await
}

/// `GET /v1/content/{game}/chunks/{hash}`.
pub(crate) async fn get_chunk(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((game, hash)): Path<(String, String)>,
) -> Result<Response, Error> {
    let hash = hash_param(&hash)?;
    let local = match store(&api, &game, false).await? {
        Some(s) => blocking(move || s.read_raw(&hash).map_err(content_err)).await?,
        None => None,
    };
    let data = match local {
        Some(data) => data,
        None => {
            // Pulled from another node of the cluster, checked against its name, kept.
            let path = format!("/v1/content/{game}/chunks/{}", chunk_name(&hash));
            let verified = |b: &[u8]| blake3::hash(b).as_bytes() == &hash;
            let data = pull(&api, &headers, &path, CHUNK_BODY_MAX, verified)
                .await
                .ok_or_else(|| no_chunk(&hash))?;
            let _ = api.content_keep.try_send((game, hash, data.clone()));
            data
        }
    };
    api.content_pace.wait(data.len() as u64).await;
    api.metrics
        .content_chunks_served
        .fetch_add(1, Ordering::Relaxed);
    api.metrics
        .content_bytes_served
        .fetch_add(data.len() as u64, Ordering::Relaxed);
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

/// `POST /v1/content/{game}/missing` (server key): which of these chunks the origin lacks.
pub(crate) async fn missing(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(game): Path<String>,
    body: Bytes,
) -> Result<Json<ChunkList>, Error> {
    crate::api::require_server_key(&api, &headers)?;
    let req: ChunkList = parse(&body)?;
    let mut hashes = Vec::with_capacity(req.chunks.len());
    for c in &req.chunks {
        hashes.push(hash_param(c)?);
    }
    let s = writable_store(&api, &game).await?;
    // Those present are held: the publisher will not upload them, so a collection must not
    // drop them before its manifest arrives.
    let missing =
        blocking(move || Ok(s.hold(&hashes).into_iter().map(chunk_name).collect())).await?;
    Ok(Json(ChunkList { chunks: missing }))
}

/// `PUT /v1/content/{game}/versions/{version}` (server key): a signed manifest whose chunks are
/// all here.
pub(crate) async fn put_manifest(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((game, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, Error> {
    crate::api::require_server_key(&api, &headers)?;
    check_name("version", &version).map_err(content_err)?;
    let dir = game_dir(&api, &game)?;
    let s = writable_store(&api, &game).await?;
    let (g, v) = (game.clone(), version.clone());
    blocking(move || {
        let (game, version) = (g, v);
        let (m, _) = Manifest::open(&body, None).map_err(content_err)?;
        if m.game != game || m.version != version {
            return Err(bad(format!(
                "the manifest is for {} {}, not {game} {version}",
                m.game, m.version
            )));
        }
        let absent = s.hold(m.chunks().map(|c| &c.hash)).len();
        if absent > 0 {
            return Err(Error(
                StatusCode::CONFLICT,
                "missing_chunks",
                format!("{absent} chunks of this version are not uploaded yet"),
                None,
            ));
        }
        write_version(&dir, &version, &body)
    })
    .await?;
    let api2 = api.clone();
    tokio::spawn(async move { announce_version(&api2, &game, &version).await });
    Ok(StatusCode::NO_CONTENT)
}

/// Stores a version's signed manifest atomically (temporary file, flush, rename).
fn write_version(dir: &std::path::Path, version: &str, body: &[u8]) -> Result<(), Error> {
    let versions = dir.join("versions");
    std::fs::create_dir_all(&versions).map_err(|e| content_err(ContentError::io(&versions, e)))?;
    let path = versions.join(version);
    let tmp = versions.join(format!(".{version}.tmp-{}", rand::random::<u64>()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        content_err(ContentError::io(&path, e))
    })
}

/// A version this node lacks, pulled from another node of the cluster: a well-formed,
/// self-consistently signed manifest of this very version (players check the publisher),
/// kept; then every chunk of it is pulled in the background, so the cluster's other origin is
/// not needed once a version has been asked for (or announced) here. `None` when no node
/// has it.
async fn pull_version(
    api: &Api,
    headers: &HeaderMap,
    game: &str,
    version: &str,
) -> Result<Option<Vec<u8>>, Error> {
    let dir = game_dir(api, game)?;
    let url_path = format!("/v1/content/{game}/versions/{version}");
    let this_version = |b: &[u8]| {
        Manifest::open(b, None).is_ok_and(|(m, _)| m.game == game && m.version == version)
    };
    let Some(data) = pull(api, headers, &url_path, MANIFEST_BODY_MAX, this_version).await else {
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
        let fresh = api
            .content_prefetching
            .lock()
            .map(|mut p| p.insert(key.clone()))
            .unwrap_or(false);
        if fresh {
            tokio::spawn(prefetch(api.clone(), game.to_owned(), key, m));
        }
    }
    Ok(Some(data))
}

/// Bus subject on which a node tells the cluster it stored a new version (payload: JSON
/// `{"game": .., "version": ..}`).
pub(crate) const PUBLISHED_SUBJECT: &str = "volley.content.published";

#[derive(serde::Serialize, serde::Deserialize)]
struct Published {
    game: String,
    version: String,
    /// The version was withdrawn, not published: nodes holding it remove its manifest.
    #[serde(default)]
    withdrawn: bool,
}

/// Tells the cluster that `game` `version` is stored here. Best effort: a node that misses it
/// still pulls the version when first asked for it.
async fn announce_version(api: &Api, game: &str, version: &str) {
    tell_cluster(api, game, version, false).await
}

async fn tell_cluster(api: &Api, game: &str, version: &str, withdrawn: bool) {
    let Ok(body) = serde_json::to_vec(&Published {
        game: game.to_owned(),
        version: version.to_owned(),
        withdrawn,
    }) else {
        return;
    };
    if let Err(e) = api.platform.bus().publish(PUBLISHED_SUBJECT, body).await {
        tracing::warn!(error = %e, game, version, "could not announce a new version");
    }
}

/// Runs while the node does (with cluster peers configured): every version another node
/// announces and this node lacks is pulled with all its chunks, so a player can be sent to
/// any node the moment a build is out. Malformed announcements are ignored.
pub(crate) async fn follow_announcements(
    api: std::sync::Weak<crate::Shared>,
    mut sub: volley_store::Subscription,
) {
    // At most four announced versions are pulled at once; more wait (a flood of announcements
    // cannot make the node open unbounded requests to its peers).
    let pulls = Arc::new(tokio::sync::Semaphore::new(4));
    while let Some(msg) = sub.next().await {
        let Some(api) = api.upgrade() else {
            return;
        };
        let Ok(p) = serde_json::from_slice::<Published>(&msg.payload) else {
            continue;
        };
        if check_name("game", &p.game).is_err() || check_name("version", &p.version).is_err() {
            continue;
        }
        let Ok(dir) = game_dir(&api, &p.game) else {
            continue;
        };
        if p.withdrawn {
            match remove_version(&dir, &p.version).await {
                Ok(true) => {
                    tracing::info!(game = %p.game, version = %p.version, "withdrawn by another node")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(game = %p.game, version = %p.version, error = %e.2, "could not withdraw a version")
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
            match pull_version(&api, &HeaderMap::new(), game, version).await {
                Ok(Some(_)) => tracing::info!(game, version, "pulling an announced version"),
                Ok(None) => {
                    tracing::warn!(game, version, "no content peer serves an announced version")
                }
                Err(e) => {
                    tracing::warn!(game, version, error = %e.2, "pulling an announced version failed")
                }
            }
        });
    }
}

/// `GET /v1/content/{game}/versions/{version}`: the signed manifest.
pub(crate) async fn get_manifest(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((game, version)): Path<(String, String)>,
) -> Result<Response, Error> {
    check_name("version", &version).map_err(content_err)?;
    let dir = game_dir(&api, &game)?;
    let path = dir.join("versions").join(&version);
    let data = match tokio::fs::read(&path).await {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(data) = pull_version(&api, &headers, &game, &version).await? else {
                return Err(Error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no version {version} of {game}"),
                    None,
                ));
            };
            data
        }
        Err(e) => return Err(content_err(ContentError::io(&path, e))),
    };
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

/// Removes a version's manifest; whether there was one.
async fn remove_version(dir: &std::path::Path, version: &str) -> Result<bool, Error> {
    let versions = dir.join("versions");
    let path = versions.join(version);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(content_err(ContentError::io(&path, e))),
    }
    let sync = tokio::fs::File::open(&versions).await;
    if let Err(e) = match sync {
        Ok(d) => d.sync_all().await,
        Err(e) => Err(e),
    } {
        return Err(content_err(ContentError::io(&versions, e)));
    }
    Ok(true)
}

/// `DELETE /v1/content/{game}/versions/{version}` (server key): withdraws a version. Its
/// manifest is removed here, and on the cluster's other nodes that follow announcements; its
/// chunks stay until a collection finds no other version referencing them. Players already
/// holding it keep it; new fetches of it fail with `not_found`.
pub(crate) async fn delete_version(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((game, version)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    crate::api::require_server_key(&api, &headers)?;
    check_name("version", &version).map_err(content_err)?;
    let dir = game_dir(&api, &game)?;
    if !remove_version(&dir, &version).await? {
        return Err(Error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no version {version} of {game}"),
            None,
        ));
    }
    tracing::info!(game, version, "version withdrawn");
    tell_cluster(&api, &game, &version, true).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Calls `each` with every version stored under `dir` (name, when stored, its parsed
/// manifest), oldest first, one manifest in memory at a time; returns how many. A manifest
/// that no longer parses is an error: what it references is unknown.
fn stored_versions(
    dir: &std::path::Path,
    mut each: impl FnMut(String, u64, Manifest),
) -> Result<usize, Error> {
    let versions = dir.join("versions");
    let entries = match std::fs::read_dir(&versions) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(content_err(ContentError::io(&versions, e))),
    };
    let mut found = Vec::new();
    for e in entries {
        let e = e.map_err(|e| content_err(ContentError::io(&versions, e)))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || check_name("version", &name).is_err() {
            continue; // a manifest being written, or not ours
        }
        let stored_ms = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        found.push((stored_ms, name, e.path()));
    }
    found.sort();
    let mut n = 0;
    for (stored_ms, name, path) in found {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            // Withdrawn meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(content_err(ContentError::io(&path, e))),
        };
        let (m, _) = Manifest::open(&bytes, None).map_err(|e| {
            tracing::error!(path = %path.display(), error = %e, "a stored manifest does not parse");
            Error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bad_stored_manifest",
                format!("the stored manifest of version {name} does not parse: {e}"),
                None,
            )
        })?;
        each(name, stored_ms, m);
        n += 1;
    }
    Ok(n)
}

/// `GET /v1/content/{game}/versions`: the versions this node holds, oldest first.
pub(crate) async fn list_versions(
    State(api): State<Api>,
    Path(game): Path<String>,
) -> Result<Json<ContentVersions>, Error> {
    let dir = game_dir(&api, &game)?;
    let versions = blocking(move || {
        let mut out = Vec::new();
        stored_versions(&dir, |version, stored_ms, m| {
            let distinct: std::collections::HashSet<&[u8; 32]> =
                m.chunks().map(|c| &c.hash).collect();
            out.push(ContentVersion {
                version,
                files: m.files.len() as u64,
                bytes: m.total_size(),
                chunks: distinct.len() as u64,
                stored_ms,
            });
        })?;
        Ok(out)
    })
    .await?;
    Ok(Json(ContentVersions { versions }))
}

/// `POST /v1/content/{game}/collect` (server key): drops the chunks no stored version
/// references (see `PackStore::collect`). Refuses, dropping nothing, when a stored manifest
/// cannot be read.
pub(crate) async fn collect(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(game): Path<String>,
) -> Result<Json<ContentCollected>, Error> {
    crate::api::require_server_key(&api, &headers)?;
    Ok(Json(collect_game(&api, &game).await?))
}

/// Collects one game's unreferenced chunks (see [`collect`]).
async fn collect_game(api: &Api, game: &str) -> Result<ContentCollected, Error> {
    let dir = game_dir(api, game)?;
    let Some(s) = store(api, game, false).await? else {
        return Ok(ContentCollected::default());
    };
    let r = blocking(move || {
        let mut referenced = std::collections::HashSet::new();
        let n = stored_versions(&dir, |_, _, m| {
            referenced.extend(m.chunks().map(|c| c.hash));
        })? as u64;
        let mut c = s.collect(&referenced).map_err(content_err)?;
        c.versions = n;
        Ok(c)
    })
    .await?;
    tracing::info!(
        game,
        dropped = r.dropped,
        dropped_bytes = r.dropped_bytes,
        freed = r.disk_bytes_before.saturating_sub(r.disk_bytes_after),
        "content collected"
    );
    api.metrics
        .content_chunks_collected
        .fetch_add(r.dropped, Ordering::Relaxed);
    Ok(r)
}

/// Runs while the node does (with `content_collect_every_ms`): every interval, collects every
/// game that has content here, one after another. A failure is logged and tried again at the
/// next interval.
pub(crate) async fn collect_periodically(
    api: std::sync::Weak<crate::Shared>,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(api) = api.upgrade() else { return };
        let root = api.cfg.data_dir.join("content");
        let games: Vec<String> = match std::fs::read_dir(&root) {
            Ok(entries) => entries
                .flatten()
                .filter(|e| e.path().join("packs").is_dir() || e.path().join("chunks").is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|g| check_name("game", g).is_ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        for game in games {
            if let Err(e) = collect_game(&api, &game).await {
                tracing::warn!(game, error = %e.2, "scheduled content collection failed");
            }
        }
    }
}

/// `POST /v1/content/{game}/versions/{version}/peers` (session): announce and get peers. The
/// address is the one the node sees the request from, with the announced port.
pub(crate) async fn announce(
    State(api): State<Api>,
    ConnectInfo(from): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path((game, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<SwarmPeers>, Error> {
    let me = crate::http::authed(&api, &headers).await?;
    check_name("game", &game).map_err(content_err)?;
    check_name("version", &version).map_err(content_err)?;
    let req: PeerAnnounce = parse(&body)?;
    if req.port == 0 {
        return Err(bad("port must be 1-65535"));
    }
    let peer = volley_content::tracker::Peer {
        id: me,
        addr: std::net::SocketAddr::new(from.ip(), req.port),
        have_chunks: req.have_chunks,
        total_chunks: req.total_chunks,
        seen_ms: 0,
    };
    let now = crate::unix_ms();
    let peers = api
        .tracker
        .announce(&game, &version, peer, now)
        .await
        .map_err(tracker_err)?;
    Ok(Json(SwarmPeers {
        peers: peers
            .into_iter()
            .map(|p| SwarmPeer {
                player_id: p.id,
                addr: p.addr.to_string(),
                have_chunks: p.have_chunks,
                total_chunks: p.total_chunks,
            })
            .collect(),
    }))
}

/// `DELETE /v1/content/{game}/versions/{version}/peers` (session): leave the swarm.
pub(crate) async fn leave(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((game, version)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let me = crate::http::authed(&api, &headers).await?;
    check_name("game", &game).map_err(content_err)?;
    check_name("version", &version).map_err(content_err)?;
    api.tracker
        .leave(&game, &version, me)
        .await
        .map_err(tracker_err)?;
    Ok(StatusCode::NO_CONTENT)
}

fn tracker_err(e: crate::swarm_tracker::AnnounceError) -> Error {
    use crate::swarm_tracker::AnnounceError;
    use volley_content::tracker::TrackerError;
    match e {
        AnnounceError::Refused(TrackerError::Full) => Error(
            StatusCode::SERVICE_UNAVAILABLE,
            "tracker_full",
            e.to_string(),
            Some(30),
        ),
        AnnounceError::Refused(other) => bad(other.to_string()),
        AnnounceError::Unavailable(why) => {
            tracing::error!(error = %why, "tracker unavailable");
            Error(
                StatusCode::SERVICE_UNAVAILABLE,
                "tracker_unavailable",
                "the tracker is unavailable".into(),
                Some(5),
            )
        }
    }
}
