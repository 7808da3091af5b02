//! Game builds: publish a build directory to a node (the origin) and install a version from it.
//!
//! ```no_run
//! # async fn f() -> Result<(), volley_client::Error> {
//! use volley_client::content;
//! let trusted = volley_content::manifest::parse_public_key(
//!     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
//! )?;
//! let report = content::fetch(
//!     "http://127.0.0.1:7350",
//!     "arena",
//!     "1.2.0",
//!     std::path::Path::new("arena-install"),
//!     &trusted,
//!     |p| eprintln!("{} of {} bytes", p.have_bytes, p.need_bytes),
//! )
//! .await?;
//! println!("downloaded {} bytes", report.downloaded_bytes);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use volley_content::install::{ChunkSource, InstallOptions, InstallReport, Progress};
use volley_content::manifest::SignedManifest;
use volley_content::{chunk_name, ChunkRef, ContentError};
use volley_proto::api::{ApiError, ChunkList};

use crate::Error;

/// The node as a chunk source.
#[derive(Debug, Clone)]
pub struct Origin {
    http: reqwest::Client,
    base: String,
    game: String,
}

impl Origin {
    /// The origin of `game` at `base` (e.g. `http://127.0.0.1:7350`).
    pub fn new(base: &str, game: &str) -> Origin {
        Origin {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            game: game.to_owned(),
        }
    }

    fn version_url(&self, version: &str) -> String {
        format!("{}/v1/content/{}/versions/{version}", self.base, self.game)
    }

    /// A version's signed manifest bytes.
    pub async fn manifest(&self, version: &str) -> Result<Vec<u8>, Error> {
        let url = self.version_url(version);
        // Kept without a copy: a manifest may be large, and its buffer is exactly its size.
        Ok(Vec::from(send_raw(self.http.get(url)).await?))
    }

    /// A version's signed manifest, checked against `trusted` and against the game and
    /// version asked for. The bytes go straight to an unnamed file of the process's own as
    /// they arrive and are checked from there ([`SignedManifest::open_file`]), so a manifest
    /// of any size is fetched and opened in the same memory.
    pub async fn open_version(
        &self,
        version: &str,
        trusted: &VerifyingKey,
    ) -> Result<Arc<SignedManifest>, Error> {
        let file = self.manifest_to_file(version).await?;
        let trusted = *trusted;
        let m =
            tokio::task::spawn_blocking(move || SignedManifest::open_file(file, Some(&trusted)))
                .await
                .map_err(|e| Error::Http(format!("opening the manifest: {e}")))??;
        if m.game() != self.game || m.version() != version {
            return Err(ContentError::Invalid(format!(
                "the node served {} {} for {} {version}",
                m.game(),
                m.version(),
                self.game
            ))
            .into());
        }
        Ok(Arc::new(m))
    }

    /// A version's signed manifest bytes, written to an unnamed file (in the temp directory)
    /// as they arrive. More than a manifest can hold (4 GiB) is refused.
    async fn manifest_to_file(&self, version: &str) -> Result<std::fs::File, Error> {
        use std::io::Write;
        let mut resp = self
            .http
            .get(self.version_url(version))
            .send()
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.map_err(|e| Error::Http(e.to_string()))?;
            return Err(api_error(status.as_u16(), &body));
        }
        let io = |e: std::io::Error| Error::Http(format!("spooling the manifest: {e}"));
        let mut out = std::io::BufWriter::with_capacity(1 << 16, tempfile::tempfile().map_err(io)?);
        let mut len = 0u64;
        while let Some(piece) = resp.chunk().await.map_err(|e| Error::Http(e.to_string()))? {
            len += piece.len() as u64;
            if len > u64::from(u32::MAX) {
                return Err(ContentError::Invalid("manifest larger than 4 GiB".into()).into());
            }
            out.write_all(&piece).map_err(io)?;
        }
        out.into_inner().map_err(|e| io(e.into_error()))
    }
}

async fn get_bytes(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, Error> {
    send(http.get(url)).await
}

/// Sends a request; the body on success, the node's error otherwise.
async fn send(req: reqwest::RequestBuilder) -> Result<Vec<u8>, Error> {
    // A copy of exactly the body's length: the buffer it was read into may be larger.
    Ok(send_raw(req).await?.to_vec())
}

/// [`send`] returning the body as received.
async fn send_raw(req: reqwest::RequestBuilder) -> Result<bytes::Bytes, Error> {
    let resp = req.send().await.map_err(|e| Error::Http(e.to_string()))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| Error::Http(e.to_string()))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(api_error(status.as_u16(), &body))
    }
}

fn api_error(status: u16, body: &[u8]) -> Error {
    let e: ApiError = serde_json::from_slice(body).unwrap_or(ApiError {
        code: "http".into(),
        message: String::from_utf8_lossy(body).into_owned(),
        request_id: None,
    });
    Error::Api {
        status,
        code: e.code,
        message: e.message,
    }
}

impl ChunkSource for Origin {
    fn fetch(&self, chunk: ChunkRef) -> BoxFuture<'_, Result<Vec<u8>, ContentError>> {
        Box::pin(async move {
            let url = format!(
                "{}/v1/content/{}/chunks/{}",
                self.base,
                self.game,
                chunk_name(&chunk.hash)
            );
            get_bytes(&self.http, &url)
                .await
                .map_err(|e| ContentError::Fetch(format!("origin: {e}")))
        })
    }
}

/// Downloads and verifies `version` of `game` from the node at `base` and installs it into
/// `to`, reusing every chunk of the version installed there and resuming an interrupted run.
/// The manifest must be signed by `trusted`.
pub async fn fetch(
    base: &str,
    game: &str,
    version: &str,
    to: &Path,
    trusted: &VerifyingKey,
    progress: impl FnMut(&Progress) + Send,
) -> Result<InstallReport, Error> {
    fetch_with(
        base,
        game,
        version,
        to,
        trusted,
        InstallOptions::default(),
        progress,
    )
    .await
}

/// [`fetch`] with explicit options: concurrency, rate cap, and directories to re-cut for
/// chunks before downloading (`opts.reuse_from`).
///
/// ```no_run
/// # async fn f(key: &ed25519_dalek::VerifyingKey) -> Result<(), volley_client::Error> {
/// let opts = volley_content::install::InstallOptions {
///     reuse_from: vec!["/mnt/old-copy/arena".into()],
///     ..Default::default()
/// };
/// let r = volley_client::content::fetch_with(
///     "http://127.0.0.1:7350", "arena", "2.0.0", "/games/arena".as_ref(), key, opts, |_| {},
/// )
/// .await?;
/// println!("{} bytes found locally, {} downloaded", r.reused_bytes, r.downloaded_bytes);
/// # Ok(()) }
/// ```
pub async fn fetch_with(
    base: &str,
    game: &str,
    version: &str,
    to: &Path,
    trusted: &VerifyingKey,
    opts: InstallOptions,
    progress: impl FnMut(&Progress) + Send,
) -> Result<InstallReport, Error> {
    let origin = Origin::new(base, game);
    let m = origin.open_version(version, trusted).await?;
    Ok(volley_content::install::install(m, to, &origin, opts, progress).await?)
}

/// A publish gathers chunks into upload batches of about this many bytes.
const BATCH_BYTES: usize = 8 << 20;
/// Batches a publish keeps in flight: one being flushed on the node while the next arrives.
const BATCHES_IN_FLIGHT: usize = 3;

/// What a publish did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Files in the build.
    pub files: usize,
    /// Its size.
    pub total_bytes: u64,
    /// Distinct chunks.
    pub chunks: usize,
    /// Chunks (and bytes) the origin did not have, uploaded now.
    pub uploaded_chunks: usize,
    /// See `uploaded_chunks`.
    pub uploaded_bytes: u64,
}

/// How far a publish is, for a progress display: read it from another task or thread while
/// [`publish_with`] runs.
#[derive(Debug, Default)]
pub struct PublishProgress {
    /// 0 chunking the build, 1 asking the node what it lacks, 2 uploading, 3 storing the
    /// manifest.
    pub phase: std::sync::atomic::AtomicU8,
    /// Bytes of chunks the node lacks (known from phase 2).
    pub upload_bytes: std::sync::atomic::AtomicU64,
    /// Of those, bytes uploaded so far.
    pub uploaded_bytes: std::sync::atomic::AtomicU64,
}

/// Chunks the build in `dir`, signs its manifest with `key`, uploads the chunks the node lacks
/// and then the manifest. The build is chunked on every core, then only the missing chunks are
/// read back (by offset) and uploaded in batches; memory stays at a few batches.
#[allow(clippy::too_many_arguments)]
pub async fn publish(
    base: &str,
    server_key: &str,
    dir: &Path,
    game: &str,
    version: &str,
    key: &SigningKey,
    chunk_avg: u32,
) -> Result<PublishReport, Error> {
    let progress = PublishProgress::default();
    publish_with(
        base, server_key, dir, game, version, key, chunk_avg, &progress,
    )
    .await
}

/// [`publish`], reporting how far it is in `progress`.
#[allow(clippy::too_many_arguments)]
pub async fn publish_with(
    base: &str,
    server_key: &str,
    dir: &Path,
    game: &str,
    version: &str,
    key: &SigningKey,
    chunk_avg: u32,
    progress: &PublishProgress,
) -> Result<PublishReport, Error> {
    use std::sync::atomic::Ordering;
    if chunk_avg > volley_content::cdc::AVG_UPLOAD_MAX {
        return Err(ContentError::Invalid(format!(
            "nodes accept chunk averages up to {} bytes, not {chunk_avg}",
            volley_content::cdc::AVG_UPLOAD_MAX
        ))
        .into());
    }
    let base = base.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    let (d, g, v) = (dir.to_owned(), game.to_owned(), version.to_owned());
    let m = blocking(move || volley_content::publish::chunk_dir(&d, &g, &v, chunk_avg)).await?;
    let signed = m.sign(key)?;
    let mut names: Vec<String> = m.chunks().map(|c| chunk_name(&c.hash)).collect();
    names.sort();
    names.dedup();
    let mut report = PublishReport {
        files: m.files.len(),
        total_bytes: m.total_size(),
        chunks: names.len(),
        ..Default::default()
    };
    progress.phase.store(1, Ordering::Relaxed);
    let mut missing = std::collections::HashSet::new();
    for batch in names.chunks(10_000) {
        let body = send(
            http.post(format!("{base}/v1/content/{game}/missing"))
                .header("x-volley-server-key", server_key)
                .json(&ChunkList {
                    chunks: batch.to_vec(),
                }),
        )
        .await?;
        let l: ChunkList = serde_json::from_slice(&body)
            .map_err(|e| Error::Http(format!("bad response body: {e}")))?;
        missing.extend(l.chunks);
    }
    let mut counted = std::collections::HashSet::new();
    let upload_bytes: u64 = m
        .chunks()
        .filter(|c| missing.contains(&chunk_name(&c.hash)) && counted.insert(c.hash))
        .map(|c| u64::from(c.size))
        .sum();
    drop(counted);
    progress.upload_bytes.store(upload_bytes, Ordering::Relaxed);
    progress.phase.store(2, Ordering::Relaxed);
    // Then the missing chunks, read by their offsets (checked against the manifest as they are
    // read), gathered into batches the node makes durable with one flush each, a few batches
    // in flight.
    let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Vec<u8>)>(1);
    let d: PathBuf = dir.to_owned();
    let reader = tokio::task::spawn_blocking(move || {
        let mut sent = std::collections::HashSet::new();
        let (mut body, mut count) = (Vec::new(), 0usize);
        let stopped = || ContentError::Fetch("upload stopped".into());
        volley_content::publish::read_chunks(
            &d,
            &m,
            |c| missing.contains(&chunk_name(&c.hash)) && sent.insert(c.hash),
            |c, data| {
                volley_content::batch::push(&mut body, &c.hash, &data);
                count += 1;
                if body.len() >= BATCH_BYTES || count == volley_content::batch::CHUNKS_MAX {
                    tx.blocking_send((count, std::mem::take(&mut body)))
                        .map_err(|_| stopped())?;
                    count = 0;
                }
                Ok(())
            },
        )?;
        if count > 0 {
            tx.blocking_send((count, body)).map_err(|_| stopped())?;
        }
        Ok::<(), ContentError>(())
    });
    let url = format!("{base}/v1/content/{game}/chunks");
    let uploads = tokio_stream_from(rx)
        .map(|(count, body)| {
            let req = http
                .post(&url)
                .header("x-volley-server-key", server_key)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
            async move {
                let bytes = (body.len() - count * volley_content::batch::FRAME_HEADER) as u64;
                let reply = send(req.body(body)).await?;
                let reply: volley_proto::api::ChunkBatchReply = serde_json::from_slice(&reply)
                    .map_err(|e| Error::Http(format!("bad response body: {e}")))?;
                if reply.chunks != count as u64 {
                    return Err(Error::Http(format!(
                        "the node took {} chunks of a batch of {count}",
                        reply.chunks
                    )));
                }
                Ok::<(usize, u64), Error>((count, bytes))
            }
        })
        .buffer_unordered(BATCHES_IN_FLIGHT);
    futures_util::pin_mut!(uploads);
    while let Some(r) = uploads.next().await {
        let (chunks, bytes) = r?;
        report.uploaded_chunks += chunks;
        report.uploaded_bytes += bytes;
        progress.uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    progress.phase.store(3, Ordering::Relaxed);
    reader
        .await
        .map_err(|_| Error::Http("reading the build stopped".into()))??;
    send(
        http.put(format!("{base}/v1/content/{game}/versions/{version}"))
            .header("x-volley-server-key", server_key)
            .body(signed),
    )
    .await?;
    Ok(report)
}

/// The versions of `game` the node at `base` holds, oldest first.
pub async fn versions(
    base: &str,
    game: &str,
) -> Result<Vec<volley_proto::api::ContentVersion>, Error> {
    let base = base.trim_end_matches('/');
    let body = get_bytes(
        &reqwest::Client::new(),
        &format!("{base}/v1/content/{game}/versions"),
    )
    .await?;
    let l: volley_proto::api::ContentVersions = serde_json::from_slice(&body)
        .map_err(|e| Error::Http(format!("bad response body: {e}")))?;
    Ok(l.versions)
}

/// Withdraws a version from the node (and the cluster's nodes that follow it): new fetches of
/// it fail; its chunks go at the next [`collect`] unless another version references them.
pub async fn delete_version(
    base: &str,
    server_key: &str,
    game: &str,
    version: &str,
) -> Result<(), Error> {
    let base = base.trim_end_matches('/');
    send(
        reqwest::Client::new()
            .delete(format!("{base}/v1/content/{game}/versions/{version}"))
            .header("x-volley-server-key", server_key),
    )
    .await?;
    Ok(())
}

/// Has the node drop the chunks of `game` that no version it holds references (but those
/// uploaded or reported present within its grace period) and give their disk space back.
pub async fn collect(
    base: &str,
    server_key: &str,
    game: &str,
) -> Result<volley_proto::api::ContentCollected, Error> {
    let base = base.trim_end_matches('/');
    let body = send(
        reqwest::Client::new()
            .post(format!("{base}/v1/content/{game}/collect"))
            .header("x-volley-server-key", server_key),
    )
    .await?;
    serde_json::from_slice(&body).map_err(|e| Error::Http(format!("bad response body: {e}")))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ContentError> + Send + 'static,
) -> Result<T, Error> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Http("worker failed".into()))??)
}
