//! A manifest → an install directory.
//!
//! The new version is built in place in `<dir>.volley-staging` ([`crate::staging`]): every file
//! at its size from the start, chunks of the installed version (located through its manifest,
//! kept in `<dir>/.volley/manifest`, and re-verified when read) copied to their offsets, and
//! chunks fetched from a [`ChunkSource`] written to theirs once verified (and re-verified when a
//! run resumes, so a fetch interrupted at any point never downloads a whole chunk twice). Then
//! two renames swap it in: `<dir>` → `<dir>.volley-old`,
//! staging → `<dir>`. Every state in between holds one whole version, and [`recover`] (run first
//! by every install) finishes or rolls back a swap a crash interrupted.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::mpsc;

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

    /// Delivers every chunk of `wanted` (numbers in `table`) on `out`, in any order, each
    /// verified. Stops early when `out` is closed. The default fetches `concurrency`
    /// chunks at a time through [`ChunkSource::fetch`], at most `max_bytes_per_s`, retrying a
    /// chunk that fails or comes back corrupt up to `attempts` times.
    fn download<'a>(
        &'a self,
        table: std::sync::Arc<ChunkTable>,
        wanted: Vec<u32>,
        opts: InstallOptions,
        out: mpsc::Sender<Delivered>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let pace = Pace::new(opts.max_bytes_per_s);
            let pace = &pace;
            let mut fetches = futures_util::stream::iter(wanted)
                .filter_map(|i| std::future::ready(table.get(i)))
                .map(|c| async move {
                    let mut corrupt = 0;
                    let mut last = None;
                    for _ in 0..opts.attempts.max(1) {
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
#[derive(Debug, Clone, Copy)]
pub struct InstallOptions {
    /// Chunk requests in flight.
    pub concurrency: usize,
    /// Attempts per chunk before the install fails (a corrupt or failed fetch is retried).
    pub attempts: usize,
    /// fsync every file of the new version before the swap.
    pub sync: bool,
    /// Download rate cap, bytes per second (0: none).
    pub max_bytes_per_s: u64,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            concurrency: 8,
            attempts: 3,
            sync: true,
            max_bytes_per_s: 0,
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
    /// Chunks (and bytes) taken from the installed version.
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
/// bytes move to disk, and per chunk only a few bytes of state ([`ChunkTable`], [`Staging`],
/// the source's own) are kept in memory.
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
    let old = dir.join(MANIFEST_FILE);
    let has_old = old.is_file();
    if !has_old {
        let empty = match fs::read_dir(dir) {
            Ok(mut d) => d.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(ContentError::io(dir, e)),
        };
        if !empty {
            return Err(ContentError::Invalid(format!(
                "{} is not empty and holds no Volley install; choose a new or empty directory",
                dir.display()
            )));
        }
    }
    let staging = std::sync::Arc::new(Staging::open(&staging_dir(dir), table.clone())?);
    // From here the signed bytes are read from disk: nothing per chunk of the manifest stays
    // in memory but the table's index.
    table
        .manifest()
        .move_to_disk(&staging.root().join(".volley"))?;
    let mut report = InstallReport {
        files: manifest.files().len(),
        total_bytes: manifest.total_size(),
        chunks: staging.chunks(),
        ..Default::default()
    };
    drop(manifest);
    // Chunks of the installed version go into place from there (unless a resumed run already
    // put them), read in its order, each only if its bytes there still hash right: a damaged
    // copy is downloaded instead.
    let mut in_old = Bits::new(table.len());
    if has_old {
        let mut open_old: Option<(PathBuf, fs::File)> = None;
        walk_installed(&old, |path, offset, c| {
            let Some(i) = table.find(&c.hash) else {
                return Ok(());
            };
            if table.get(i).is_none_or(|n| n.size != c.size) {
                return Ok(());
            }
            in_old.set(i as usize);
            if !staging.has_chunk(i) {
                if let Some(v) = read_local(&mut open_old, &dir.join(path), offset, &c)? {
                    staging.put(&v)?;
                }
            }
            Ok(())
        })?;
    }
    let mut wanted = Vec::new();
    let mut p = Progress::default();
    for (i, c) in table.iter().enumerate() {
        let held = staging.has_chunk(i as u32);
        if held && in_old.get(i) {
            report.reused_chunks += 1;
            report.reused_bytes += u64::from(c.size);
            continue;
        }
        p.need_bytes += u64::from(c.size);
        if held {
            report.resumed_chunks += 1;
            p.have_bytes += u64::from(c.size);
        } else {
            wanted.push(i as u32);
        }
    }
    drop(in_old);
    source.attach_staging(staging.clone());
    progress(&p);
    // Download what is missing, verifying each chunk before it is written in place.
    let (tx, mut rx) = mpsc::channel::<Delivered>(16);
    let downloading = source.download(table.clone(), wanted, opts, tx);
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

fn sync_parent(dir: &Path) {
    if let Some(parent) = dir.parent() {
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
}

/// Walks the chunk references of the installed version's manifest at `path` straight from the
/// file, never holding it whole: `each(file path, offset in that file, chunk)` in order. The
/// manifest was checked when it was installed, and nothing read here is trusted: every chunk
/// is re-verified against the new version's hash when read, and paths must still be safe. A
/// file that does not parse is an error.
fn walk_installed(
    path: &Path,
    mut each: impl FnMut(&str, u64, ChunkRef) -> Result<(), ContentError>,
) -> Result<(), ContentError> {
    use std::io::BufRead;
    let file = fs::File::open(path).map_err(|e| ContentError::io(path, e))?;
    let mut r = std::io::BufReader::with_capacity(1 << 16, file);
    let bad = |why: &str| {
        ContentError::Invalid(format!(
            "the installed manifest {} is unreadable: {why}",
            path.display()
        ))
    };
    let mut take = |r: &mut std::io::BufReader<fs::File>, buf: &mut [u8]| {
        r.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => bad("truncated"),
            _ => ContentError::io(path, e),
        })
    };
    fn varint(
        r: &mut std::io::BufReader<fs::File>,
        take: &mut impl FnMut(&mut std::io::BufReader<fs::File>, &mut [u8]) -> Result<(), ContentError>,
    ) -> Result<u64, ContentError> {
        let mut first = [0u8; 1];
        take(r, &mut first)?;
        let len = 1usize << (first[0] >> 6);
        let mut v = u64::from(first[0] & 0x3f);
        let mut rest = [0u8; 7];
        take(r, &mut rest[..len - 1])?;
        for b in &rest[..len - 1] {
            v = (v << 8) | u64::from(*b);
        }
        Ok(v)
    }
    let mut head = [0u8; 5];
    take(&mut r, &mut head)?;
    if &head[..4] != crate::manifest::MAGIC || head[4] != crate::manifest::FORMAT {
        return Err(bad("not a version 1 manifest"));
    }
    let skip = |r: &mut std::io::BufReader<fs::File>, n: u64| -> Result<(), ContentError> {
        let mut left = n;
        while left > 0 {
            let got = r.fill_buf().map_err(|e| ContentError::io(path, e))?.len();
            if got == 0 {
                return Err(bad("truncated"));
            }
            let k = (got as u64).min(left) as usize;
            r.consume(k);
            left -= k as u64;
        }
        Ok(())
    };
    for _ in 0..2 {
        let n = varint(&mut r, &mut take)?;
        if n > 64 {
            return Err(bad("name too long"));
        }
        skip(&mut r, n)?;
    }
    skip(&mut r, 4)?;
    let files = varint(&mut r, &mut take)?;
    if files > crate::manifest::MAX_FILES as u64 {
        return Err(bad("too many files"));
    }
    let mut name = Vec::new();
    let mut chunk = [0u8; 36];
    for _ in 0..files {
        let n = varint(&mut r, &mut take)?;
        if n > crate::manifest::MAX_PATH as u64 {
            return Err(bad("path too long"));
        }
        name.resize(n as usize, 0);
        take(&mut r, &mut name)?;
        let file_path = std::str::from_utf8(&name).map_err(|_| bad("path is not UTF-8"))?;
        crate::manifest::check_path(file_path)?;
        skip(&mut r, 12)?;
        let k = varint(&mut r, &mut take)?;
        if k > crate::manifest::MAX_CHUNKS as u64 {
            return Err(bad("too many chunks"));
        }
        let mut offset = 0u64;
        for _ in 0..k {
            take(&mut r, &mut chunk)?;
            let mut c = ChunkRef {
                hash: [0; 32],
                size: u32::from_be_bytes([chunk[32], chunk[33], chunk[34], chunk[35]]),
            };
            c.hash.copy_from_slice(&chunk[..32]);
            each(file_path, offset, c)?;
            offset = offset.saturating_add(u64::from(c.size));
        }
    }
    Ok(())
}

/// A chunk of the installed version, if its bytes still hash right.
fn read_local(
    open: &mut Option<(PathBuf, fs::File)>,
    path: &Path,
    at: u64,
    chunk: &ChunkRef,
) -> Result<Option<Verified>, ContentError> {
    if open.as_ref().map(|(p, _)| p.as_path()) != Some(path) {
        match fs::File::open(path) {
            Ok(f) => *open = Some((path.to_owned(), f)),
            Err(_) => return Ok(None),
        }
    }
    let Some((_, f)) = open.as_mut() else {
        return Ok(None);
    };
    let mut buf = vec![0u8; chunk.size as usize];
    if f.seek(SeekFrom::Start(at)).is_err() || f.read_exact(&mut buf).is_err() {
        return Ok(None);
    }
    Ok(Verified::check(*chunk, buf).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::manifest::{generate_key, Manifest};
    use crate::FileEntry;

    #[test]
    fn the_installed_manifest_is_walked_from_its_file_as_the_signed_walk_reads_it() {
        let c = |b: u8, size: u32| ChunkRef {
            hash: [b; 32],
            size,
        };
        let m = Manifest {
            game: "g".into(),
            version: "1".into(),
            chunk_avg: crate::cdc::AVG_MIN,
            files: vec![
                FileEntry {
                    path: "a/b".into(),
                    mode: 0o644,
                    size: 2300,
                    chunks: vec![c(1, 1000), c(2, 1000), c(1, 300)],
                },
                FileEntry {
                    path: "e".into(),
                    mode: 0o644,
                    size: 0,
                    chunks: vec![],
                },
                FileEntry {
                    path: "z".into(),
                    mode: 0o755,
                    size: 900,
                    chunks: vec![c(3, 900)],
                },
            ],
        };
        let signed = m.sign(&generate_key()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest");
        fs::write(&path, &signed).unwrap();
        let mut walked = Vec::new();
        walk_installed(&path, |p, at, c| {
            walked.push((p.to_owned(), at, c));
            Ok(())
        })
        .unwrap();
        let s = SignedManifest::open(signed.clone(), None).unwrap();
        let mut expected = Vec::new();
        for (fi, f) in s.files().iter().enumerate() {
            let mut at = 0;
            for (_, c) in s.file_chunks(fi) {
                expected.push((f.path.clone(), at, c));
                at += u64::from(c.size);
            }
        }
        assert_eq!(walked.len(), 4);
        assert_eq!(walked, expected);
        // Cut anywhere inside the body: a clear error, never a panic.
        for cut in [0, 3, 5, 20, signed.len() - 150, signed.len() - 97] {
            fs::write(&path, &signed[..cut]).unwrap();
            let e = walk_installed(&path, |_, _, _| Ok(())).unwrap_err();
            assert!(e.to_string().contains("unreadable"), "{cut}: {e}");
        }
        // An unsafe path is refused even here.
        let mut evil = m.clone();
        evil.files[0].path = "../x".into();
        fs::write(&path, evil.body()).unwrap();
        assert!(walk_installed(&path, |_, _, _| Ok(())).is_err());
    }
}
