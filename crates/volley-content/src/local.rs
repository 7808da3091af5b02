//! Chunks already on this machine, found before anything is downloaded.
//!
//! Two ways:
//! - the installed version's manifest says where each of its chunks lies
//!   ([`walk_installed`]), so an update reads only what it can use;
//! - any directory can be re-cut with the new version's rule ([`recut`]): every regular file
//!   is chunked exactly as the publisher chunked the build (same rule, same average size), and
//!   each chunk whose hash the version has is taken. This finds the chunks of a directory with
//!   no readable manifest: an install whose `.volley` was lost or damaged, an install cut at
//!   another average chunk size, or a copy of the game from anywhere (`--reuse-from`).
//!
//! Nothing found here is trusted: every chunk is hashed as it is read, and only a chunk whose
//! bytes hash to a reference of the new version is written.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::cdc::{chunk_reader, Params};
use crate::staging::{Staging, MANIFEST_FILE};
use crate::table::ChunkTable;
use crate::{ChunkRef, ContentError, Verified};

/// The installer's own state directory inside an install.
pub(crate) const STATE_DIR: &str = ".volley";

/// Chunk numbers found on this machine (set from many threads).
pub(crate) struct Found {
    words: Vec<AtomicU64>,
}

impl Found {
    pub(crate) fn new(len: usize) -> Found {
        Found {
            words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Marks chunk `i`.
    pub(crate) fn set(&self, i: u32) {
        if let Some(w) = self.words.get((i / 64) as usize) {
            w.fetch_or(1 << (i % 64), Ordering::Relaxed);
        }
    }

    /// Whether chunk `i` was found.
    pub(crate) fn get(&self, i: u32) -> bool {
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (i % 64)) != 0)
    }
}

/// What [`gather`] did.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    /// Bytes of local files re-cut.
    pub(crate) recut_bytes: u64,
    /// Why it re-cut what it did (for the report).
    pub(crate) notes: Vec<String>,
}

/// Puts into `staging` every chunk of the new version found on this machine, marking it in
/// `found`: first the installed version in `dir` through its manifest (if `dir` holds an
/// install), re-cutting each installed file where a chunk the version needs no longer hashes
/// right; then by re-cutting all the install's own files if its manifest is missing,
/// unreadable or cut at another average size; then by re-cutting each of `reuse_from`,
/// stopping once every chunk is held. `read(n)` is told the bytes re-cut so far.
pub(crate) fn gather(
    staging: &Staging,
    dir: &Path,
    is_install: bool,
    reuse_from: &[PathBuf],
    found: &Found,
    read: &(dyn Fn(u64) + Sync),
) -> Result<Gathered, ContentError> {
    let table = staging.table();
    let avg = table.manifest().chunk_avg();
    let params = Params::new(avg)
        .ok_or_else(|| ContentError::Invalid(format!("bad chunk average {avg}")))?;
    let mut out = Gathered::default();
    let mut to_recut = Vec::new();
    let skip = fs::canonicalize(staging.root()).unwrap_or_else(|_| staging.root().to_owned());
    let total = AtomicU64::new(0);
    let recut_with = Recut {
        table,
        staging,
        params,
        found,
        skip: &skip,
        total: &total,
        read,
    };
    let old = dir.join(MANIFEST_FILE);
    if is_install {
        if old.is_file() {
            let mut open_old: Option<(PathBuf, fs::File)> = None;
            // Installed files holding a chunk the version needs whose bytes no longer hash
            // right (modified or damaged since): re-cut afterwards, so a file changed in one
            // place costs the chunks around that place, not everything after it.
            let mut changed: Vec<(PathBuf, u64)> = Vec::new();
            let walked = walk_installed(&old, |path, offset, c| {
                let Some(i) = table.find(&c.hash) else {
                    return Ok(());
                };
                if table.get(i).is_none_or(|n| n.size != c.size) {
                    return Ok(());
                }
                found.set(i);
                if !staging.has_chunk(i) {
                    let full = dir.join(path);
                    match read_local(&mut open_old, &full, offset, &c)? {
                        Some(v) => staging.put(&v)?,
                        None => {
                            if changed.last().is_none_or(|(p, _)| *p != full) {
                                if let Ok(m) = fs::metadata(&full) {
                                    changed.push((full, m.len()));
                                }
                            }
                        }
                    }
                }
                Ok(())
            });
            match walked {
                Ok(old_avg) if old_avg == avg => {
                    if !changed.is_empty() {
                        out.notes.push(format!(
                            "{} installed file(s) changed since they were installed and were re-cut",
                            changed.len()
                        ));
                        recut_files(changed, &recut_with)?;
                    }
                }
                Ok(old_avg) => {
                    out.notes.push(format!(
                        "the installed version was cut at {old_avg}-byte average chunks and this one at {avg}: the installed files were re-cut at {avg}"
                    ));
                    to_recut.push(dir.to_owned());
                }
                Err(ContentError::Invalid(why)) => {
                    out.notes
                        .push(format!("{why}; the installed files were re-cut instead"));
                    to_recut.push(dir.to_owned());
                }
                Err(e) => return Err(e),
            }
        } else {
            out.notes.push(format!(
                "{} holds no manifest of its version: the installed files were re-cut instead",
                dir.display()
            ));
            to_recut.push(dir.to_owned());
        }
    }
    to_recut.extend(reuse_from.iter().cloned());
    for root in &to_recut {
        if staging.count() >= table.len() {
            break;
        }
        recut(root, &recut_with)?;
    }
    out.recut_bytes = total.load(Ordering::Relaxed);
    Ok(out)
}

/// What [`recut`] needs.
struct Recut<'a> {
    table: &'a ChunkTable,
    staging: &'a Staging,
    params: Params,
    found: &'a Found,
    /// A directory never entered (the staging area itself).
    skip: &'a Path,
    /// Bytes re-cut so far.
    total: &'a AtomicU64,
    read: &'a (dyn Fn(u64) + Sync),
}

/// Why a file's cutting stopped early.
enum Halt {
    /// Every chunk of the version is held.
    Done,
    /// The file could not be read (it is skipped).
    Read,
    /// The staging area could not be written (the install fails).
    Put(ContentError),
}

impl From<std::io::Error> for Halt {
    fn from(_: std::io::Error) -> Self {
        Halt::Read
    }
}

/// How often (bytes) a cutting thread reports what it has read.
const TELL_EVERY: u64 = 8 << 20;

/// Cuts every regular file under `root` (symlinks are not followed, `.volley` and the staging
/// area are not entered, unreadable entries are skipped) with the version's rule on every
/// core, and writes each chunk the version lacks into the staging area. A root that is not a
/// readable directory is an error.
fn recut(root: &Path, r: &Recut<'_>) -> Result<(), ContentError> {
    let root = fs::canonicalize(root).map_err(|e| ContentError::io(root, e))?;
    fs::read_dir(&root).map_err(|e| ContentError::io(&root, e))?;
    let mut files = Vec::new();
    list_files(&root, r.skip, &mut files);
    recut_files(files, r)
}

/// Cuts each of `files` (path, length) as [`recut`] does, on every core.
fn recut_files(mut files: Vec<(PathBuf, u64)>, r: &Recut<'_>) -> Result<(), ContentError> {
    // Largest first, so the threads finish together.
    files.sort_by_key(|f| std::cmp::Reverse(f.1));
    let next = AtomicUsize::new(0);
    let failed: std::sync::Mutex<Option<ContentError>> = std::sync::Mutex::new(None);
    let work = || loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some((path, _)) = files.get(k) else {
            return;
        };
        match recut_file(path, r) {
            Ok(()) | Err(Halt::Read) => {}
            Err(Halt::Done) => {
                next.store(files.len(), Ordering::Relaxed);
                return;
            }
            Err(Halt::Put(e)) => {
                next.store(files.len(), Ordering::Relaxed);
                let mut f = failed.lock().unwrap_or_else(|e| e.into_inner());
                f.get_or_insert(e);
                return;
            }
        }
    };
    crate::on_threads(crate::cores(), files.len(), work);
    (r.read)(r.total.load(Ordering::Relaxed));
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn recut_file(path: &Path, r: &Recut<'_>) -> Result<(), Halt> {
    if r.staging.count() >= r.table.len() {
        return Err(Halt::Done);
    }
    let file = fs::File::open(path)?;
    let mut untold = 0u64;
    let cut = chunk_reader(
        std::io::BufReader::with_capacity(1 << 20, file),
        &r.params,
        |data| {
            let hash = *blake3::hash(data).as_bytes();
            untold += data.len() as u64;
            if untold >= TELL_EVERY {
                let all = r.total.fetch_add(untold, Ordering::Relaxed) + untold;
                untold = 0;
                (r.read)(all);
            }
            let Some(i) = r.table.find(&hash) else {
                return Ok(());
            };
            let chunk = ChunkRef {
                hash,
                size: data.len() as u32,
            };
            if r.table.get(i) != Some(chunk) {
                return Ok(());
            }
            r.found.set(i);
            if r.staging.has_chunk(i) {
                return Ok(());
            }
            r.staging.put_hashed(&hash, data).map_err(Halt::Put)?;
            if r.staging.count() >= r.table.len() {
                return Err(Halt::Done);
            }
            Ok(())
        },
    );
    r.total.fetch_add(untold, Ordering::Relaxed);
    cut.map(|_| ())
}

/// Every regular file under `dir` with its length, skipping what cannot be read.
fn list_files(dir: &Path, skip: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() {
            if entry.file_name() != STATE_DIR && path != skip {
                list_files(&path, skip, out);
            }
        } else if ft.is_file() {
            if let Ok(m) = entry.metadata() {
                out.push((path, m.len()));
            }
        }
    }
}

/// Walks the chunk references of the installed version's manifest at `path` straight from the
/// file, never holding it whole: `each(file path, offset in that file, chunk)` in order. The
/// manifest was checked when it was installed, and nothing read here is trusted: every chunk
/// is re-verified against the new version's hash when read, and paths must still be safe. A
/// file that does not parse is an error. Returns the average chunk size it was cut at.
pub(crate) fn walk_installed(
    path: &Path,
    mut each: impl FnMut(&str, u64, ChunkRef) -> Result<(), ContentError>,
) -> Result<u32, ContentError> {
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
    let mut avg = [0u8; 4];
    take(&mut r, &mut avg)?;
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
    Ok(u32::from_be_bytes(avg))
}

/// A chunk of the installed version, if its bytes still hash right.
pub(crate) fn read_local(
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
    use crate::manifest::SignedManifest;
    use crate::manifest::{generate_key, Manifest};
    use crate::FileEntry;

    #[test]
    fn a_recut_lists_regular_files_only_and_never_enters_state_or_staging() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("old/data")).unwrap();
        fs::write(r.join("old/data/pack"), b"pack").unwrap();
        fs::write(r.join("top"), b"top").unwrap();
        fs::create_dir_all(r.join("old/.volley")).unwrap();
        fs::write(r.join("old/.volley/manifest"), b"state").unwrap();
        let staging = r.join("new.volley-staging");
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join("half-written"), b"x").unwrap();
        std::os::unix::fs::symlink(r.join("top"), r.join("link")).unwrap();
        std::os::unix::fs::symlink(r.join("old"), r.join("dirlink")).unwrap();
        let fifo = std::ffi::CString::new(r.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let mut files = Vec::new();
        list_files(r, &staging, &mut files);
        files.sort();
        assert_eq!(
            files,
            vec![(r.join("old/data/pack"), 4), (r.join("top"), 3)],
            "no state, no staging, no symlinks, no FIFO (which would block)"
        );
    }

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
