//! A manifest → an install directory.
//!
//! The new version is built in place in `<dir>.volley-staging` ([`crate::staging`]): every file
//! at its size from the start, chunks already on this machine ([`crate::local`]: the installed
//! version's, located through its manifest in `<dir>/.volley/manifest`, or found by re-cutting
//! local files with the version's rule; each re-verified when read) copied to their offsets, and
//! chunks fetched from a [`ChunkSource`] written to theirs once verified (and re-verified when a
//! run resumes, so a fetch interrupted at any point never downloads a whole chunk twice). Then
//! two renames swap it in: `<dir>` → `<dir>.volley-old`,
//! staging → `<dir>`. Every state in between holds one whole version, and [`recover`] (run first
//! by every install) finishes or rolls back a swap a crash interrupted.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::local::{gather, Found, STATE_DIR};
use crate::manifest::SignedManifest;
use crate::pace::Pace;
use crate::staging::{Staging, MANIFEST_FILE};
use crate::table::ChunkTable;
use crate::wire::Bits;
use crate::{chunk_name, ChunkRef, ContentError, Verified};

/// A chunk the source delivered, with the number of corrupt copies it threw away on the way.
pub type Delivered = Result<(Verified, usize), ContentError>;

/// Where chunks come from: the origin over HTTP, or a swarm of peers plus the origin.
pub trait ChunkSource: Send + Sync {
    /// One chunk's bytes (verified by the caller).
    fn fetch(&self, chunk: ChunkRef) -> BoxFuture<'_, Result<Vec<u8>, ContentError>>;

    /// Delivers every chunk of `wanted` (a bit per chunk number in `table`) on `out`, in any
    /// order, each verified. Stops early when `out` is closed. The default fetches
    /// `concurrency` chunks at a time through [`ChunkSource::fetch`], at most
    /// `max_bytes_per_s`, retrying a chunk that fails or comes back corrupt up to `attempts`
    /// times.
    fn download<'a>(
        &'a self,
        table: std::sync::Arc<ChunkTable>,
        wanted: Bits,
        opts: InstallOptions,
        out: mpsc::Sender<Delivered>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let pace = Pace::new(opts.max_bytes_per_s);
            let pace = &pace;
            let attempts = opts.attempts.max(1);
            let mut fetches = futures_util::stream::iter(wanted.ones())
                .filter_map(|i| std::future::ready(table.get(i as u32)))
                .map(|c| async move {
                    let mut corrupt = 0;
                    let mut last = None;
                    for _ in 0..attempts {
                        pace.wait(u64::from(c.size)).await;
                        match self.fetch(c).await.map(|d| Verified::check(c, d)) {
                            Ok(Ok(v)) => return Ok((v, corrupt)),
                            Ok(Err(_)) => {
                                corrupt += 1;
                                last = Some(ContentError::Corrupt(chunk_name(&c.hash)));
                            }
                            Err(e) => last = Some(e),
                        }
                    }
                    Err(last.unwrap_or_else(|| ContentError::Fetch("no attempt made".into())))
                })
                .buffer_unordered(opts.concurrency.max(1));
            while let Some(r) = fetches.next().await {
                let failed = r.is_err();
                if out.send(r).await.is_err() || failed {
                    return;
                }
            }
        })
    }

    /// The numbered chunks of the version, if the source has them already (a swarm does):
    /// the installer then shares them rather than building its own.
    fn chunk_table(&self) -> Option<std::sync::Arc<ChunkTable>> {
        None
    }

    /// The staging area the installer writes chunks into (a swarm serves from it). Called
    /// once, before [`ChunkSource::download`].
    fn attach_staging(&self, _staging: std::sync::Arc<Staging>) {}

    /// Called after a delivered chunk is written into the staging area (a swarm starts serving
    /// it to others).
    fn stored(&self, _chunk: &ChunkRef) {}

    /// Where delivered bytes came from so far: (peers connected, bytes from peers, bytes from
    /// the origin). The default counts nothing.
    fn sources(&self) -> (usize, u64, u64) {
        (0, 0, 0)
    }
}

/// The staging area of the install directory `dir`: the version being installed, kept across
/// interrupted runs ([`crate::staging`]).
pub fn staging_dir(dir: &Path) -> PathBuf {
    sibling(dir, "volley-staging")
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Chunk requests in flight.
    pub concurrency: usize,
    /// Attempts per chunk before the install fails (a corrupt or failed fetch is retried).
    pub attempts: usize,
    /// fsync every file of the new version before the swap.
    pub sync: bool,
    /// Download rate cap, bytes per second (0: none).
    pub max_bytes_per_s: u64,
    /// Directories whose files are re-cut with the version's rule before anything is
    /// downloaded: every chunk of the version found there is taken (verified) instead of
    /// fetched. For a copy of the game from elsewhere, or an install moved aside.
    pub reuse_from: Vec<PathBuf>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            concurrency: 8,
            attempts: 3,
            sync: true,
            max_bytes_per_s: 0,
            reuse_from: Vec::new(),
        }
    }
}

/// Progress so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Bytes the new version needs from anywhere but the installed version.
    pub need_bytes: u64,
    /// Of those, bytes now in the cache (downloaded in this run or an interrupted one).
    pub have_bytes: u64,
    /// Bytes downloaded in this run.
    pub downloaded_bytes: u64,
    /// Time since the install began.
    pub elapsed: Duration,
    /// Peers connected (a swarm source; 0 for the origin alone).
    pub peers: usize,
    /// Bytes received from peers in this run (a swarm source).
    pub peer_bytes: u64,
    /// Bytes received from the origin in this run (a swarm source).
    pub origin_bytes: u64,
    /// Whether local files are being re-cut to find chunks (before any download).
    pub scanning: bool,
    /// Bytes of local files re-cut so far.
    pub recut_bytes: u64,
}

impl Progress {
    /// Download rate in bytes per second.
    pub fn rate(&self) -> f64 {
        self.downloaded_bytes as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }

    /// The origin's share of the bytes received, 0..=1 (1 when only the origin is used).
    pub fn origin_share(&self) -> f64 {
        let all = self.peer_bytes + self.origin_bytes;
        if all == 0 {
            1.0
        } else {
            self.origin_bytes as f64 / all as f64
        }
    }

    /// Estimated time left at the current rate.
    pub fn eta(&self) -> Option<Duration> {
        let left = self.need_bytes.saturating_sub(self.have_bytes);
        let r = self.rate();
        (r > 0.0).then(|| Duration::from_secs_f64(left as f64 / r))
    }
}

/// What an install did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallReport {
    /// Files in the new version.
    pub files: usize,
    /// Its size.
    pub total_bytes: u64,
    /// Distinct chunks it has.
    pub chunks: usize,
    /// Chunks (and bytes) taken from this machine: the installed version, or files re-cut.
    pub reused_chunks: usize,
    /// See `reused_chunks`.
    pub reused_bytes: u64,
    /// Chunks already in the cache from an interrupted run.
    pub resumed_chunks: usize,
    /// Chunks (and bytes) downloaded.
    pub downloaded_chunks: usize,
    /// See `downloaded_chunks`.
    pub downloaded_bytes: u64,
    /// Fetches that failed verification (and were fetched again).
    pub corrupt_chunks: usize,
    /// Time from the start until the last missing chunk was stored.
    pub download_time: Duration,
    /// Time spent after that: setting modes, syncing the staged version and swapping it into
    /// place.
    pub build_time: Duration,
    /// Time from the start until the chunks found on this machine were in place: opening the
    /// staging area, then finding them and writing them (part of `download_time`).
    pub local_time: Duration,
    /// Bytes of local files re-cut to find chunks ([`InstallOptions::reuse_from`], or an
    /// install whose manifest was missing, unreadable or cut at another size).
    pub recut_bytes: u64,
    /// Why the installer re-cut the install's own files, if it did.
    pub notes: Vec<String>,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "install".into());
    dir.with_file_name(format!("{name}.{suffix}"))
}

/// Finishes or rolls back a swap that a crash interrupted: afterwards `dir` holds one whole
/// version (or nothing, if nothing was ever installed).
pub fn recover(dir: &Path) -> Result<(), ContentError> {
    let old = sibling(dir, "volley-old");
    if old.exists() {
        if dir.exists() {
            // The new version is in place; the old one was not yet removed.
            fs::remove_dir_all(&old).map_err(|e| ContentError::io(&old, e))?;
        } else {
            // Crashed between the two renames: the old version goes back.
            fs::rename(&old, dir).map_err(|e| ContentError::io(dir, e))?;
        }
    }
    Ok(())
}

/// The installed version's signed manifest, if `dir` holds one.
pub fn installed(dir: &Path) -> Result<Option<SignedManifest>, ContentError> {
    let path = dir.join(MANIFEST_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(SignedManifest::open(bytes, None)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ContentError::io(&path, e)),
    }
}

/// BLAKE3 of the installed version's signed manifest (its id in the swarm), if `dir` holds
/// one; read piece by piece, not parsed.
pub fn installed_id(dir: &Path) -> Result<Option<[u8; 32]>, ContentError> {
    let path = dir.join(MANIFEST_FILE);
    match fs::File::open(&path) {
        Ok(f) => {
            let mut h = blake3::Hasher::new();
            h.update_reader(f).map_err(|e| ContentError::io(&path, e))?;
            Ok(Some(*h.finalize().as_bytes()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ContentError::io(&path, e)),
    }
}

/// Installs the version `manifest` into `dir`. Once the staging area is open the manifest's
/// bytes are on disk (if they were not already), the chunk table always is, and per chunk
/// only a few bits of state ([`Staging`], the source's own) are kept in memory.
pub async fn install(
    manifest: std::sync::Arc<SignedManifest>,
    dir: &Path,
    source: &dyn ChunkSource,
    opts: InstallOptions,
    mut progress: impl FnMut(&Progress) + Send,
) -> Result<InstallReport, ContentError> {
    let start = Instant::now();
    recover(dir)?;
    let table = match source.chunk_table() {
        Some(t) if t.id() == manifest.id() => t,
        _ => std::sync::Arc::new(ChunkTable::new(manifest.clone())?),
    };
    // A directory that never held an install is refused unless empty: the swap replaces it
    // whole. (Its files can still be reused: move it aside and name it in `reuse_from`.)
    let is_install = dir.join(STATE_DIR).is_dir();
    if !is_install {
        let empty = match fs::read_dir(dir) {
            Ok(mut d) => d.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(ContentError::io(dir, e)),
        };
        if !empty {
            return Err(ContentError::Invalid(format!(
                "{} is not empty and holds no Volley install; choose a new or empty directory (to reuse its files, move it aside and name it with --reuse-from)",
                dir.display()
            )));
        }
    }
    for d in &opts.reuse_from {
        if !d.is_dir() {
            return Err(ContentError::Invalid(format!(
                "reuse from {}: not a directory",
                d.display()
            )));
        }
    }
    let staging = std::sync::Arc::new(Staging::open(&staging_dir(dir), table.clone())?);
    // From here the signed bytes are read from disk: nothing per chunk of the manifest stays
    // in memory but the table's index.
    table
        .manifest()
        .move_to_disk(&staging.root().join(STATE_DIR))?;
    let mut report = InstallReport {
        files: manifest.files().len(),
        total_bytes: manifest.total_size(),
        chunks: staging.chunks(),
        ..Default::default()
    };
    drop(manifest);
    let mut p = Progress::default();
    // Chunks already on this machine go into place (unless a resumed run already put them):
    // the installed version's, each only if its bytes still hash right (a damaged copy is
    // downloaded instead), and those found by re-cutting local files ([`crate::local`]).
    let found = std::sync::Arc::new(Found::new(table.len()));
    {
        let (tell, mut told) = tokio::sync::watch::channel(0u64);
        let (staging, dir, found) = (staging.clone(), dir.to_owned(), found.clone());
        let reuse_from = opts.reuse_from.clone();
        let mut job = tokio::task::spawn_blocking(move || {
            gather(&staging, &dir, is_install, &reuse_from, &found, &|n| {
                tell.send_replace(n);
            })
        });
        let gathered = loop {
            tokio::select! {
                r = &mut job => break r,
                Ok(()) = told.changed() => {
                    p.scanning = true;
                    p.recut_bytes = *told.borrow_and_update();
                    p.elapsed = start.elapsed();
                    progress(&p);
                }
            }
        };
        let g =
            gathered.map_err(|e| ContentError::Fetch(format!("finding local chunks: {e}")))??;
        report.recut_bytes = g.recut_bytes;
        report.local_time = start.elapsed();
        report.notes = g.notes;
        p.scanning = false;
        p.recut_bytes = report.recut_bytes;
    }
    let mut wanted = Bits::new(table.len());
    for (i, c) in table.iter().enumerate() {
        let held = staging.has_chunk(i as u32);
        if held && found.get(i as u32) {
            report.reused_chunks += 1;
            report.reused_bytes += u64::from(c.size);
            continue;
        }
        p.need_bytes += u64::from(c.size);
        if held {
            report.resumed_chunks += 1;
            p.have_bytes += u64::from(c.size);
        } else {
            wanted.set(i);
        }
    }
    drop(found);
    source.attach_staging(staging.clone());
    progress(&p);
    // Download what is missing, verifying each chunk before it is written in place.
    let (tx, mut rx) = mpsc::channel::<Delivered>(16);
    let downloading = source.download(table.clone(), wanted, opts.clone(), tx);
    let storing = async {
        while let Some(r) = rx.recv().await {
            let (v, corrupt) = r?;
            let c = v.chunk();
            staging.put(&v)?;
            source.stored(&c);
            report.downloaded_chunks += 1;
            report.downloaded_bytes += u64::from(c.size);
            report.corrupt_chunks += corrupt;
            p.have_bytes += u64::from(c.size);
            p.downloaded_bytes += u64::from(c.size);
            p.elapsed = start.elapsed();
            (p.peers, p.peer_bytes, p.origin_bytes) = source.sources();
            progress(&p);
        }
        Ok::<(), ContentError>(())
    };
    let ((), stored) = futures_util::join!(downloading, storing);
    stored?;
    if p.have_bytes < p.need_bytes {
        return Err(ContentError::Fetch(format!(
            "the source stopped with {} of {} bytes delivered",
            p.have_bytes, p.need_bytes
        )));
    }
    report.download_time = start.elapsed();
    // Every chunk is in place: modes, fsync, the manifest; then the swap.
    staging.finish(opts.sync)?;
    let old = sibling(dir, "volley-old");
    if dir.exists() {
        fs::rename(dir, &old).map_err(|e| ContentError::io(dir, e))?;
    }
    fs::rename(staging.root(), dir).map_err(|e| ContentError::io(dir, e))?;
    sync_parent(dir);
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| ContentError::io(&old, e))?;
    }
    p.elapsed = start.elapsed();
    report.build_time = p.elapsed.saturating_sub(report.download_time);
    progress(&p);
    Ok(report)
}

/// What [`verify`] found wrong with one file of an install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The file, relative to the install.
    pub path: String,
    /// What is wrong, in words.
    pub what: String,
}

/// What [`verify`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The installed game.
    pub game: String,
    /// The installed version.
    pub version: String,
    /// Files of the version.
    pub files: usize,
    /// Bytes of those files read and hashed.
    pub checked_bytes: u64,
    /// Chunks (and bytes) that no longer hash right, or are missing.
    pub damaged_chunks: usize,
    /// See `damaged_chunks`.
    pub damaged_bytes: u64,
    /// Every file that is missing, of the wrong size or mode, or holds damaged chunks, in
    /// the manifest's order.
    pub problems: Vec<FileProblem>,
}

/// Checks the version installed in `dir` against its manifest, as a launcher's "verify game
/// files" does: the manifest's signature (against `trusted`, when given), then every file's
/// presence, size and mode, and every chunk's BLAKE3 hash, reading files on every core. Changes
/// nothing; fetching the same version again repairs what it reports, downloading only the
/// damaged chunks.
pub fn verify(
    dir: &Path,
    trusted: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<VerifyReport, ContentError> {
    verify_with(dir, trusted, &VerifyProgress::default())
}

/// How far a [`verify_with`] is, for a progress display read from another thread.
#[derive(Debug, Default)]
pub struct VerifyProgress {
    /// Bytes the version's files hold (set once the manifest is open).
    pub total_bytes: std::sync::atomic::AtomicU64,
    /// Bytes checked so far.
    pub checked_bytes: std::sync::atomic::AtomicU64,
}

/// [`verify`], reporting how far it is in `progress`.
pub fn verify_with(
    dir: &Path,
    trusted: Option<&ed25519_dalek::VerifyingKey>,
    progress: &VerifyProgress,
) -> Result<VerifyReport, ContentError> {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    let path = dir.join(MANIFEST_FILE);
    let file = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ContentError::Invalid(format!(
                "{} holds no Volley install (no {MANIFEST_FILE})",
                dir.display()
            )))
        }
        Err(e) => return Err(ContentError::io(&path, e)),
    };
    let m = SignedManifest::open_file(file, trusted)?;
    let files = m.files();
    progress
        .total_bytes
        .store(files.iter().map(|f| f.size).sum(), Ordering::Relaxed);
    let next = AtomicUsize::new(0);
    let (checked, bad_chunks, bad_bytes) =
        (AtomicU64::new(0), AtomicUsize::new(0), AtomicU64::new(0));
    let found: std::sync::Mutex<Vec<(usize, FileProblem)>> = std::sync::Mutex::new(Vec::new());
    let work = || {
        let mut buf = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(f) = files.get(i) else {
                return;
            };
            let mut what = Vec::new();
            let (mut damaged, mut damaged_bytes, mut first_bad) = (0usize, 0u64, None);
            let full = dir.join(&f.path);
            match fs::File::open(&full).and_then(|h| h.metadata().map(|md| (h, md))) {
                Err(e) => {
                    what.push(if e.kind() == std::io::ErrorKind::NotFound {
                        "missing".to_owned()
                    } else {
                        format!("unreadable: {e}")
                    });
                    for (_, c) in m.file_chunks(i) {
                        damaged += 1;
                        damaged_bytes += u64::from(c.size);
                    }
                }
                Ok((h, md)) => {
                    use std::os::unix::fs::{FileExt, PermissionsExt};
                    if md.len() != f.size {
                        what.push(format!("{} bytes, the version has {}", md.len(), f.size));
                    }
                    let mode = md.permissions().mode() & 0o777;
                    if mode != f.mode {
                        what.push(format!("mode {mode:o}, the version has {:o}", f.mode));
                    }
                    let mut at = 0u64;
                    for (_, c) in m.file_chunks(i) {
                        buf.resize(c.size as usize, 0);
                        let ok = h.read_exact_at(&mut buf, at).is_ok()
                            && blake3::hash(&buf).as_bytes() == &c.hash;
                        checked.fetch_add(u64::from(c.size), Ordering::Relaxed);
                        progress
                            .checked_bytes
                            .fetch_add(u64::from(c.size), Ordering::Relaxed);
                        if !ok {
                            damaged += 1;
                            damaged_bytes += u64::from(c.size);
                            first_bad.get_or_insert(at);
                        }
                        at += u64::from(c.size);
                    }
                }
            }
            if let Some(at) = first_bad {
                what.push(format!(
                    "{damaged} damaged chunk(s) ({damaged_bytes} bytes), the first at offset {at}"
                ));
            }
            bad_chunks.fetch_add(damaged, Ordering::Relaxed);
            bad_bytes.fetch_add(damaged_bytes, Ordering::Relaxed);
            if !what.is_empty() {
                let p = FileProblem {
                    path: f.path.clone(),
                    what: what.join("; "),
                };
                found.lock().unwrap_or_else(|e| e.into_inner()).push((i, p));
            }
        }
    };
    crate::on_threads(crate::cores(), files.len(), work);
    let mut problems = found.into_inner().unwrap_or_else(|e| e.into_inner());
    problems.sort_by_key(|(i, _)| *i);
    Ok(VerifyReport {
        game: m.game().to_owned(),
        version: m.version().to_owned(),
        files: files.len(),
        checked_bytes: checked.load(Ordering::Relaxed),
        damaged_chunks: bad_chunks.load(Ordering::Relaxed),
        damaged_bytes: bad_bytes.load(Ordering::Relaxed),
        problems: problems.into_iter().map(|(_, p)| p).collect(),
    })
}

/// Flushes the folder holding `dir`, so the swap survives a crash. A failure is logged, not
/// returned: the install itself is complete, only its durability is in doubt.
fn sync_parent(dir: &Path) {
    if let Some(parent) = dir.parent() {
        if let Err(error) = fs::File::open(parent).and_then(|d| d.sync_all()) {
            tracing::warn!(
                folder = %parent.display(),
                %error,
                "could not flush the folder after the install's swap; a crash now may undo it"
            );
        }
    }
}
