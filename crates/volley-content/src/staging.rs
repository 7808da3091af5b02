//! The version being installed, built in place beside the installed one.
//!
//! `<dir>.volley-staging` holds every file of the new version at its final size from the start
//! (space reserved up front, so a full disk is reported before anything is downloaded), and each
//! chunk is written at its offsets in those files as soon as it is verified: no second copy of
//! the download, nothing to assemble at the end but an fsync, and writeback is started as data
//! arrives so that fsync finds little left to do. `.volley/target` names the version being
//! built (its signed manifest); reopening a staging area for the same version re-verifies every
//! chunk at every offset, so a fetch killed at any point resumes with exactly the chunks that
//! are whole on disk. A staging area of another version is discarded.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::table::ChunkTable;
use crate::{chunk_name, ContentError, Verified};

const TARGET_FILE: &str = ".volley/target";
/// Where an install keeps its version's signed manifest.
pub(crate) const MANIFEST_FILE: &str = ".volley/manifest";
/// Open files kept for writing and serving (a build may have thousands of files).
const OPEN_MAX: usize = 64;
/// Writeback of written data is started every this many bytes.
const WRITEBACK_EVERY: u64 = 8 << 20;

#[derive(Default)]
struct Dirty {
    bytes: u64,
    files: Vec<u32>,
}

/// A staging area (see the module docs).
pub struct Staging {
    root: PathBuf,
    paths: Vec<PathBuf>,
    modes: Vec<u32>,
    table: Arc<ChunkTable>,
    /// The further places of the few chunks that occur more than once.
    more: HashMap<u32, Vec<(u32, u64)>>,
    /// Per chunk, a bit: whole at all its places.
    have: Vec<AtomicU64>,
    held: AtomicUsize,
    open: Mutex<HashMap<u32, Arc<File>>>,
    dirty: Mutex<Dirty>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("root", &self.root)
            .field("chunks", &self.table.len())
            .field("held", &self.count())
            .finish()
    }
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The version a staging area at `root` is building, if any.
pub fn target(root: &Path) -> Option<Vec<u8>> {
    fs::read(root.join(TARGET_FILE)).ok()
}

impl Staging {
    /// Opens the staging area at `root` for the version of `table` (its signed manifest and
    /// numbered chunks): reuses one already building that version, verifying what it holds, or
    /// starts a new one with every file created at its size.
    pub fn open(root: &Path, table: Arc<ChunkTable>) -> Result<Staging, ContentError> {
        let manifest = table.manifest().clone();
        // Building this version, or finished building it (a crash before the swap).
        let id = Some(*manifest.id());
        let resume =
            file_id(&root.join(TARGET_FILE)) == id || file_id(&root.join(MANIFEST_FILE)) == id;
        if !resume && root.exists() {
            fs::remove_dir_all(root).map_err(|e| ContentError::io(root, e))?;
        }
        let state = root.join(".volley");
        fs::create_dir_all(&state).map_err(|e| ContentError::io(&state, e))?;
        let n = table.len();
        let mut paths = Vec::with_capacity(manifest.files().len());
        let mut modes = Vec::with_capacity(manifest.files().len());
        for f in manifest.files() {
            let path = root.join(&f.path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| ContentError::io(parent, e))?;
            }
            let file = open_rw(&path, true)?;
            let len = file
                .metadata()
                .map_err(|e| ContentError::io(&path, e))?
                .len();
            if len != f.size {
                file.set_len(f.size)
                    .map_err(|e| ContentError::io(&path, e))?;
            }
            reserve(&file, f.size).map_err(|e| ContentError::io(&path, e))?;
            paths.push(path);
            modes.push(f.mode);
        }
        let mut more: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
        for p in table.places() {
            if !p.first && (p.number as usize) < n {
                more.entry(p.number)
                    .or_default()
                    .push((p.file as u32, p.offset));
            }
        }
        if !resume {
            let t = root.join(TARGET_FILE);
            File::create(&t)
                .and_then(|mut f| manifest.write_to(&mut f))
                .map_err(|e| ContentError::io(&t, e))?;
        }
        let s = Staging {
            root: root.to_owned(),
            paths,
            modes,
            table,
            more,
            have: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            held: AtomicUsize::new(0),
            open: Mutex::new(HashMap::new()),
            dirty: Mutex::new(Dirty::default()),
        };
        if resume {
            s.verify_all()?;
        }
        Ok(s)
    }

    /// Every place chunk `i` occurs: (file index, offset).
    fn places(&self, i: u32) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.table
            .first_place(i)
            .map(|(fi, at)| (fi as u32, at))
            .into_iter()
            .chain(self.more.get(&i).into_iter().flatten().copied())
    }

    /// Sets chunk `i`'s bit to `whole`; returns its old value.
    fn set_have(&self, i: u32, whole: bool) -> bool {
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        let Some(w) = self.have.get(word) else {
            return false;
        };
        let old = if whole {
            w.fetch_or(bit, Ordering::AcqRel)
        } else {
            w.fetch_and(!bit, Ordering::AcqRel)
        };
        old & bit != 0
    }

    /// Marks every chunk that is whole at all its offsets.
    fn verify_all(&self) -> Result<(), ContentError> {
        let mut buf = Vec::new();
        let mut held = 0;
        for (i, c) in self.table.iter().enumerate() {
            buf.resize(c.size as usize, 0);
            let mut whole = true;
            for (fi, at) in self.places(i as u32) {
                let f = self.file(fi)?;
                if f.read_exact_at(&mut buf, at).is_err()
                    || blake3::hash(&buf).as_bytes() != &c.hash
                {
                    whole = false;
                    break;
                }
            }
            self.set_have(i as u32, whole);
            held += usize::from(whole);
        }
        self.held.store(held, Ordering::Relaxed);
        Ok(())
    }

    /// The open file `fi`.
    fn file(&self, fi: u32) -> Result<Arc<File>, ContentError> {
        let mut open = guard(&self.open);
        if let Some(f) = open.get(&fi) {
            return Ok(f.clone());
        }
        let path = &self.paths[fi as usize];
        let f = Arc::new(open_rw(path, false)?);
        if open.len() >= OPEN_MAX {
            if let Some(k) = open.keys().next().copied() {
                open.remove(&k);
            }
        }
        open.insert(fi, f.clone());
        Ok(f)
    }

    /// Where the staging area is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the chunk is whole in the staging area.
    pub fn has(&self, hash: &[u8; 32]) -> bool {
        self.table.find(hash).is_some_and(|i| self.has_chunk(i))
    }

    /// Whether chunk number `i` (of [`Staging::table`]) is whole in the staging area.
    pub fn has_chunk(&self, i: u32) -> bool {
        self.have
            .get((i / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1u64 << (i % 64)) != 0)
    }

    /// Where the version's files will be once the staging area is renamed to `dir` (each
    /// chunk's first place in them is [`ChunkTable::first_place`]).
    pub fn layout(&self, dir: &Path) -> Vec<PathBuf> {
        self.paths
            .iter()
            .map(|p| dir.join(p.strip_prefix(&self.root).unwrap_or(p)))
            .collect()
    }

    /// The version's chunks.
    pub fn table(&self) -> &Arc<ChunkTable> {
        &self.table
    }

    /// Distinct chunks whole in the staging area.
    pub fn count(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Distinct chunks of the version.
    pub fn chunks(&self) -> usize {
        self.table.len()
    }

    /// Writes the chunk at every offset it has in the version.
    pub fn put(&self, v: &Verified) -> Result<(), ContentError> {
        self.put_hashed(&v.chunk().hash, v.bytes())
    }

    /// [`Staging::put`] for bytes the caller has just hashed to `hash`.
    pub(crate) fn put_hashed(&self, hash: &[u8; 32], data: &[u8]) -> Result<(), ContentError> {
        debug_assert_eq!(blake3::hash(data).as_bytes(), hash);
        let Some(i) = self.table.find(hash) else {
            return Err(ContentError::Invalid(format!(
                "chunk {} is not part of this version",
                chunk_name(hash)
            )));
        };
        if self.has_chunk(i) {
            return Ok(());
        }
        for (fi, at) in self.places(i) {
            self.file(fi)?
                .write_all_at(data, at)
                .map_err(|e| ContentError::io(&self.paths[fi as usize], e))?;
        }
        if !self.set_have(i, true) {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        self.written(i, data.len() as u64);
        Ok(())
    }

    /// Starts writeback once enough has been written since the last time.
    fn written(&self, i: u32, bytes: u64) {
        let files = {
            let mut d = guard(&self.dirty);
            for (fi, _) in self.places(i) {
                d.bytes += bytes;
                if !d.files.contains(&fi) {
                    d.files.push(fi);
                }
            }
            if d.bytes < WRITEBACK_EVERY {
                return;
            }
            d.bytes = 0;
            std::mem::take(&mut d.files)
        };
        for fi in files {
            if let Ok(f) = self.file(fi) {
                start_writeback(&f);
            }
        }
    }

    /// A chunk's bytes, verified; `Ok(None)` when it is not whole here (the bytes on disk no
    /// longer matching included: the chunk is then forgotten, to be fetched again).
    pub fn get(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, ContentError> {
        let Some(i) = self.table.find(hash) else {
            return Ok(None);
        };
        if !self.has_chunk(i) {
            return Ok(None);
        }
        let Some((fi, at)) = self.places(i).next() else {
            return Ok(None);
        };
        let mut buf = vec![0u8; self.table.get(i).map_or(0, |c| c.size as usize)];
        self.file(fi)?
            .read_exact_at(&mut buf, at)
            .map_err(|e| ContentError::io(&self.paths[fi as usize], e))?;
        if blake3::hash(&buf).as_bytes() == hash {
            Ok(Some(buf))
        } else {
            if self.set_have(i, false) {
                self.held.fetch_sub(1, Ordering::Relaxed);
            }
            Ok(None)
        }
    }

    /// Completes the version once every chunk is whole: sets each file's mode, syncs every
    /// file (with `sync`), and records the version's signed manifest (kept on disk since
    /// [`Staging::open`], not in memory) in `.volley/manifest`. The area is then ready to be
    /// renamed into place.
    pub fn finish(&self, sync: bool) -> Result<(), ContentError> {
        if self.count() != self.table.len() {
            return Err(ContentError::Fetch(format!(
                "{} of {} chunks are in place",
                self.count(),
                self.table.len()
            )));
        }
        use std::os::unix::fs::PermissionsExt;
        for (fi, (path, mode)) in self.paths.iter().zip(&self.modes).enumerate() {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(|e| ContentError::io(path, e))?;
            if sync {
                self.file(fi as u32)?
                    .sync_all()
                    .map_err(|e| ContentError::io(path, e))?;
            }
        }
        let mpath = self.root.join(MANIFEST_FILE);
        let t = self.root.join(TARGET_FILE);
        // The manifest goes into place (copied by the kernel, never held in memory), and what
        // is in place is hashed, piece by piece, against the table's id.
        let from = match fs::copy(&t, &mpath) {
            Ok(_) => t.clone(),
            // Finished once already (a crash before the swap): the manifest is in place.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !t.exists() => mpath.clone(),
            Err(e) => return Err(ContentError::io(&t, e)),
        };
        let mut h = blake3::Hasher::new();
        File::open(&mpath)
            .and_then(|f| h.update_reader(f).map(|_| ()))
            .map_err(|e| ContentError::io(&mpath, e))?;
        if h.finalize().as_bytes() != self.table.id() {
            return Err(ContentError::Invalid(format!(
                "{} no longer holds the manifest of the version being installed",
                from.display()
            )));
        }
        if sync {
            File::open(&mpath)
                .and_then(|f| f.sync_all())
                .map_err(|e| ContentError::io(&mpath, e))?;
        }
        match fs::remove_file(&t) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ContentError::io(&t, e));
            }
            _ => {}
        }
        guard(&self.open).clear();
        Ok(())
    }
}

/// BLAKE3 of a file's bytes, read piece by piece; `None` when it cannot be read.
fn file_id(path: &Path) -> Option<[u8; 32]> {
    let f = File::open(path).ok()?;
    let mut h = blake3::Hasher::new();
    h.update_reader(f).ok()?;
    Some(*h.finalize().as_bytes())
}

/// Opens a staged file for reading and writing. A file that already got its final read-only
/// mode (a crash after the modes were set, before the swap) is made writable again first.
pub(crate) fn open_rw(path: &Path, create: bool) -> Result<File, ContentError> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .and_then(|()| open())
                .map_err(|e| ContentError::io(path, e))
        }
        r => r.map_err(|e| ContentError::io(path, e)),
    }
}

/// Reserves the file's blocks, so that a full disk shows now rather than mid-download. A file
/// system that cannot reserve is left sparse.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let Ok(len) = libc::off_t::try_from(len) else {
            return Ok(());
        };
        if len == 0 {
            return Ok(());
        }
        // SAFETY: a valid open descriptor; KEEP_SIZE-free mode 0 only allocates.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
                _ => Err(e),
            };
        }
    }
    Ok(())
}

/// Asks the kernel to start writing the file's dirty pages now, without waiting for them.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the call only schedules I/O. Its result is a hint's:
        // on failure the pages are written back later, as without the call.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::manifest::{generate_key, Manifest, SignedManifest};
    use crate::{ChunkRef, FileEntry};

    fn open(root: &Path, signed: &[u8]) -> Result<Staging, ContentError> {
        let m = SignedManifest::open(signed.to_vec(), None)?;
        Staging::open(root, Arc::new(ChunkTable::new(Arc::new(m))?))
    }

    fn version(files: &[(&str, &[&[u8]])]) -> (Manifest, Vec<u8>) {
        let m = Manifest {
            game: "g".into(),
            version: "1".into(),
            chunk_avg: crate::cdc::AVG_MIN,
            files: files
                .iter()
                .map(|(path, chunks)| FileEntry {
                    path: (*path).into(),
                    mode: 0o644,
                    size: chunks.iter().map(|c| c.len() as u64).sum(),
                    chunks: chunks
                        .iter()
                        .map(|c| ChunkRef {
                            hash: *blake3::hash(c).as_bytes(),
                            size: c.len() as u32,
                        })
                        .collect(),
                })
                .collect(),
        };
        let signed = m.sign(&generate_key()).unwrap();
        (m, signed)
    }

    #[test]
    fn chunks_land_at_every_offset_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        let a: &[u8] = &[b'a'; 300];
        let b: &[u8] = &[b'b'; 260];
        let (m, signed) = version(&[("d/y", &[b]), ("x", &[a, b, a])]);
        let s = open(&root, &signed).unwrap();
        assert_eq!(s.chunks(), 2);
        assert_eq!(fs::metadata(root.join("x")).unwrap().len(), 860);
        let (ca, cb) = (m.files[1].chunks[0], m.files[1].chunks[1]);
        let (ha, hb) = (ca.hash, cb.hash);
        let va = Verified::check(ca, a.to_vec()).unwrap();
        let vb = Verified::check(cb, b.to_vec()).unwrap();
        assert!(Verified::check(ca, b.to_vec()).is_err());
        s.put(&va).unwrap();
        assert!(s.has(&ha) && !s.has(&hb));
        assert_eq!(s.get(&ha).unwrap().as_deref(), Some(a));
        assert_eq!(s.get(&hb).unwrap(), None);
        drop(s);
        // Reopened: what is whole is kept; a chunk damaged at one of its offsets is not.
        let s = open(&root, &signed).unwrap();
        assert_eq!(s.count(), 1);
        s.put(&vb).unwrap();
        assert_eq!(fs::read(root.join("x")).unwrap(), [a, b, a].concat());
        assert_eq!(fs::read(root.join("d/y")).unwrap(), b);
        let paths = s.layout(Path::new("/there"));
        assert_eq!(paths, [Path::new("/there/d/y"), Path::new("/there/x")]);
        // Files in path order: chunk 0 (b) first occurs in d/y, chunk 1 (a) in x.
        assert_eq!(s.table().first_place(0), Some((0, 0)));
        assert_eq!(s.table().first_place(1), Some((1, 0)));
        let f = OpenOptions::new().write(true).open(root.join("x")).unwrap();
        f.write_all_at(b"z", 568).unwrap();
        drop(s);
        let s = open(&root, &signed).unwrap();
        assert!(!s.has(&ha) && s.has(&hb));
        assert!(s.has_chunk(0) && !s.has_chunk(1) && !s.has_chunk(2));
        // A staging area of another version is discarded.
        let (_, signed2) = version(&[("x", &[a])]);
        let s2 = open(&root, &signed2).unwrap();
        assert_eq!(s2.count(), 0);
        assert!(!root.join("d/y").exists());
        drop(s);
        s2.put(&va).unwrap();
        // The signed manifest is kept on disk, not in memory: finishing checks it is still
        // the one the area was opened for.
        fs::write(root.join(TARGET_FILE), &signed).unwrap();
        let err = s2.finish(true).unwrap_err().to_string();
        assert!(err.contains("no longer holds the manifest"), "{err}");
        fs::write(root.join(TARGET_FILE), &signed2).unwrap();
        s2.finish(true).unwrap();
        assert_eq!(fs::read(root.join(".volley/manifest")).unwrap(), signed2);
        assert!(target(&root).is_none());
        // Finished but not swapped in (a crash just before the rename): reopened whole.
        drop(s2);
        let s3 = open(&root, &signed2).unwrap();
        assert_eq!(s3.count(), 1);
        s3.finish(true).unwrap();
        assert_eq!(fs::read(root.join(".volley/manifest")).unwrap(), signed2);
    }
}
