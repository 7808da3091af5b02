//! The origin's chunk store: append-only pack files and an append-only index, so storing a
//! batch of chunks is two appends and two flushes, whatever the number of chunks (one file per
//! chunk cost an inode, a directory entry and a rename each).
//!
//! Layout, under the store's directory:
//! - `NNNNNNNN.pack`: records of a chunk's 32-byte hash, its length (4 bytes, big-endian) and
//!   its bytes, appended; a pack is closed for appends once it passes [`PACK_BYTES`]. The
//!   numbers only grow; collection removes packs, so there may be gaps.
//! - `index`: one 56-byte entry per chunk: hash, pack number (4 bytes), offset of the bytes (8),
//!   length (4), and the first 8 bytes of the BLAKE3 hash of those 48 bytes. When a hash has
//!   more than one entry the last one counts.
//!
//! A batch is appended to the newest pack and flushed, then its entries are appended to the
//! index and flushed, and only then do readers see it. A crash can leave a torn tail on either
//! file; opening the store keeps the index up to its first entry that fails its check or points
//! past its pack's end, and cuts the newest pack back to the end of its last indexed chunk. So
//! after a crash the store holds exactly the batches that were acknowledged, plus possibly the
//! one in flight, whole. Chunks of an older one-file-per-chunk store (see [`ChunkStore`]) are
//! still found and served.
//!
//! [`PackStore::collect`] drops the chunks no version references: see there for how it stays
//! safe against a crash and against a publish running at the same time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::batch::Frame;
use crate::staging::open_rw;
use crate::store::ChunkStore;
use crate::{chunk_name, ContentError};

/// A pack takes no more appends once it is this large.
pub const PACK_BYTES: u64 = 1 << 30;
/// How long a chunk that was uploaded, or found present by a publisher, is kept by collection
/// although no version references it yet: a publish uploads its chunks before its manifest.
pub const GRACE: Duration = Duration::from_secs(3600);
/// Collection rewrites a pack when at least this fraction of it (1 / N) is unreferenced.
const REWRITE_WASTE_DIV: u64 = 10;
/// Bytes collection copies per flush.
const MOVE_BATCH: usize = 8 << 20;
const ENTRY: usize = 56;
const RECORD_HEADER: u64 = 36;

#[derive(Debug, Clone, Copy)]
struct Loc {
    pack: u32,
    at: u64,
    len: u32,
}

impl Loc {
    /// The whole record's bytes in its pack: header and chunk.
    fn record_bytes(&self) -> u64 {
        RECORD_HEADER + u64::from(self.len)
    }
}

#[derive(Debug)]
struct Index {
    map: HashMap<[u8; 32], Loc>,
    packs: BTreeMap<u32, Arc<File>>,
}

#[derive(Debug)]
struct Tail {
    /// The newest pack: appends go there.
    pack: u32,
    /// Where the next record goes in it.
    pack_end: u64,
    index: File,
    index_len: u64,
}

/// Chunks pinned against collection: every hash held in the current window or the one
/// before, so each stays pinned at least [`GRACE`] (at most twice that) and the sets hold only
/// recent hashes.
#[derive(Debug)]
struct Held {
    since: Instant,
    now: HashSet<[u8; 32]>,
    before: HashSet<[u8; 32]>,
}

impl Held {
    fn age(&mut self, grace: Duration) {
        let elapsed = self.since.elapsed();
        if elapsed >= grace.saturating_mul(2) {
            self.now.clear();
            self.before.clear();
            self.since = Instant::now();
        } else if elapsed >= grace {
            self.before = std::mem::take(&mut self.now);
            self.since = Instant::now();
        }
    }

    fn has(&self, hash: &[u8; 32]) -> bool {
        self.now.contains(hash) || self.before.contains(hash)
    }
}

/// The store. Readers run concurrently; writers take turns.
#[derive(Debug)]
pub struct PackStore {
    dir: PathBuf,
    pack_bytes: u64,
    grace: Duration,
    legacy: Option<ChunkStore>,
    index: RwLock<Index>,
    tail: Mutex<Tail>,
    held: Mutex<Held>,
}

/// What a collection found and did (its `versions` is left to the caller, which knows which
/// versions it read).
pub type Collected = volley_proto::api::ContentCollected;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
    move |e| ContentError::io(path, e)
}

fn entry(hash: &[u8; 32], loc: Loc) -> [u8; ENTRY] {
    let mut e = [0u8; ENTRY];
    e[..32].copy_from_slice(hash);
    e[32..36].copy_from_slice(&loc.pack.to_be_bytes());
    e[36..44].copy_from_slice(&loc.at.to_be_bytes());
    e[44..48].copy_from_slice(&loc.len.to_be_bytes());
    let check = blake3::hash(&e[..48]);
    e[48..].copy_from_slice(&check.as_bytes()[..8]);
    e
}

fn parse_entry(e: &[u8]) -> Option<([u8; 32], Loc)> {
    let (body, check) = e.split_at_checked(48)?;
    if check != &blake3::hash(body).as_bytes()[..8] {
        return None;
    }
    let hash: [u8; 32] = body.get(..32)?.try_into().ok()?;
    let pack = u32::from_be_bytes(body.get(32..36)?.try_into().ok()?);
    let at = u64::from_be_bytes(body.get(36..44)?.try_into().ok()?);
    let len = u32::from_be_bytes(body.get(44..48)?.try_into().ok()?);
    Some((hash, Loc { pack, at, len }))
}

/// The number of a pack file's name (`NNNNNNNN.pack`).
fn pack_number(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".pack")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl PackStore {
    /// The store in `dir`, created if `create`; `Ok(None)` when it does not exist and `create`
    /// is false. `legacy` is the directory of an older one-file-per-chunk store, read if present.
    pub fn open(
        dir: &Path,
        legacy: &Path,
        create: bool,
    ) -> Result<Option<PackStore>, ContentError> {
        Self::open_with(dir, legacy, create, PACK_BYTES, GRACE)
    }

    /// [`PackStore::open`] with packs closed at `pack_bytes` and chunks held for `grace` (tests
    /// use small packs and no grace).
    pub fn open_with(
        dir: &Path,
        legacy: &Path,
        create: bool,
        pack_bytes: u64,
        grace: Duration,
    ) -> Result<Option<PackStore>, ContentError> {
        let legacy = legacy
            .is_dir()
            .then(|| ChunkStore::open(legacy))
            .transpose()?;
        if !dir.is_dir() {
            if !create && legacy.is_none() {
                return Ok(None);
            }
            fs::create_dir_all(dir).map_err(io(dir))?;
            sync_dir(dir.parent().unwrap_or(dir))?;
        }
        let mut packs = BTreeMap::new();
        for e in fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = pack_number(&name) {
                packs.insert(n, Arc::new(open_rw(&e.path(), false)?));
            } else if name.starts_with("index.tmp") {
                // A collection's index that never replaced the real one.
                if let Err(error) = fs::remove_file(e.path()) {
                    tracing::warn!(
                        file = %e.path().display(),
                        %error,
                        "could not remove an abandoned index; the next open tries again"
                    );
                }
            }
        }
        if packs.is_empty() {
            packs.insert(0, Arc::new(open_rw(&pack_path(dir, 0), true)?));
            sync_dir(dir)?;
        }
        let mut sizes = HashMap::with_capacity(packs.len());
        for (&n, p) in &packs {
            let path = pack_path(dir, n);
            sizes.insert(n, p.metadata().map_err(io(&path))?.len());
        }
        let index_path = dir.join("index");
        let index = open_rw(&index_path, true)?;
        let bytes = fs::read(&index_path).map_err(io(&index_path))?;
        let newest = packs.keys().next_back().copied().unwrap_or(0);
        let mut map = HashMap::with_capacity(bytes.len() / ENTRY);
        let mut good = 0u64;
        let mut pack_end = 0u64;
        for e in bytes.chunks_exact(ENTRY) {
            let Some((hash, loc)) = parse_entry(e) else {
                break;
            };
            let fits = sizes
                .get(&loc.pack)
                .is_some_and(|&size| loc.at.saturating_add(u64::from(loc.len)) <= size);
            if !fits {
                break;
            }
            if loc.pack == newest {
                pack_end = pack_end.max(loc.at + u64::from(loc.len));
            }
            map.insert(hash, loc);
            good += ENTRY as u64;
        }
        // Torn tails: entries that were never acknowledged, records no entry names.
        if good < bytes.len() as u64 {
            index.set_len(good).map_err(io(&index_path))?;
            index.sync_all().map_err(io(&index_path))?;
        }
        if sizes.get(&newest).is_some_and(|&s| s > pack_end) {
            let newest_path = pack_path(dir, newest);
            let f = &packs[&newest];
            f.set_len(pack_end).map_err(io(&newest_path))?;
            f.sync_all().map_err(io(&newest_path))?;
        }
        Ok(Some(PackStore {
            dir: dir.to_owned(),
            pack_bytes,
            grace,
            legacy,
            index: RwLock::new(Index { map, packs }),
            tail: Mutex::new(Tail {
                pack: newest,
                pack_end,
                index,
                index_len: good,
            }),
            held: Mutex::new(Held {
                since: Instant::now(),
                now: HashSet::new(),
                before: HashSet::new(),
            }),
        }))
    }

    fn lookup(&self, hash: &[u8; 32]) -> Option<(Loc, Arc<File>)> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let loc = *index.map.get(hash)?;
        let file = index.packs.get(&loc.pack)?.clone();
        Some((loc, file))
    }

    /// Whether the store has the chunk.
    pub fn has(&self, hash: &[u8; 32]) -> bool {
        self.lookup(hash).is_some() || self.legacy.as_ref().is_some_and(|l| l.has(hash))
    }

    /// Pins the chunks the store has against collection for the grace period, and returns
    /// those of `hashes` it lacks. A publisher's chunk query and manifest upload go through
    /// here, so a collection running at the same time never drops a chunk a publish was told
    /// is present; it is atomic with a collection's final step.
    pub fn hold<'a>(&self, hashes: impl IntoIterator<Item = &'a [u8; 32]>) -> Vec<&'a [u8; 32]> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.age(self.grace);
        let mut absent = Vec::new();
        for h in hashes {
            if self.has(h) {
                // Into the current window even when the last one has it: that one goes next.
                held.now.insert(*h);
            } else {
                absent.push(h);
            }
        }
        absent
    }

    /// Chunks stored.
    pub fn count(&self) -> usize {
        let n = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len();
        n + self.legacy.as_ref().map_or(0, |l| l.count())
    }

    /// The unverified bytes (for serving: the receiver verifies).
    pub fn read_raw(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, ContentError> {
        let Some((loc, file)) = self.lookup(hash) else {
            return match &self.legacy {
                Some(l) => l.read_raw(hash),
                None => Ok(None),
            };
        };
        let mut data = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut data, loc.at)
            .map_err(io(&pack_path(&self.dir, loc.pack)))?;
        Ok(Some(data))
    }

    /// A chunk's bytes, verified; `Ok(None)` when absent, `Corrupt` when the bytes on disk no
    /// longer match their name.
    pub fn get(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, ContentError> {
        match self.read_raw(hash)? {
            Some(d) if blake3::hash(&d).as_bytes() != hash => {
                Err(ContentError::Corrupt(chunk_name(hash)))
            }
            other => Ok(other),
        }
    }

    /// Stores a batch: every hash is checked before anything is written (a batch with one bad
    /// chunk stores none); the new chunks are durable when this returns. Returns how many were
    /// new. Every chunk of the batch is then held (see [`PackStore::hold`]).
    pub fn put_many(&self, chunks: &[Frame<'_>]) -> Result<usize, ContentError> {
        for (hash, data) in chunks {
            if blake3::hash(data).as_bytes() != hash {
                return Err(ContentError::Corrupt(chunk_name(hash)));
            }
        }
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashSet::with_capacity(chunks.len());
        let new: Vec<&Frame<'_>> = chunks
            .iter()
            .filter(|(h, _)| seen.insert(*h) && !self.has(h))
            .collect();
        if !new.is_empty() {
            let mut records = Vec::with_capacity(
                new.iter()
                    .map(|(_, d)| d.len() + RECORD_HEADER as usize)
                    .sum(),
            );
            for (hash, data) in &new {
                crate::batch::push(&mut records, hash, data);
            }
            let hashes: Vec<[u8; 32]> = new.iter().map(|(h, _)| *h).collect();
            self.append(&mut tail, &records, &hashes, None)?;
        }
        self.hold(seen.iter());
        Ok(new.len())
    }

    /// Appends whole records (`records` holds one per hash of `hashes`, in order) to the newest
    /// pack, opening the next one first when the newest is full, flushes them, then their
    /// index entries, then shows them to readers.
    ///
    /// `staged` (collection's copies): neither flushed nor indexed on disk; the pack's number
    /// is noted there for [`PackStore::flush_staged`], and the rewritten index names them.
    fn append(
        &self,
        tail: &mut Tail,
        records: &[u8],
        hashes: &[[u8; 32]],
        mut staged: Option<&mut HashSet<u32>>,
    ) -> Result<(), ContentError> {
        let opened = tail.pack_end >= self.pack_bytes;
        let pack = if opened { tail.pack + 1 } else { tail.pack };
        let pack_path = pack_path(&self.dir, pack);
        let (file, start) = if opened {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&pack_path)
                .map_err(io(&pack_path))?;
            (Arc::new(f), 0)
        } else {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            let Some(f) = index.packs.get(&pack) else {
                return Err(ContentError::io(
                    &pack_path,
                    std::io::Error::other("the newest pack is not open"),
                ));
            };
            (f.clone(), tail.pack_end)
        };
        let mut entries = Vec::with_capacity(hashes.len() * ENTRY);
        let mut locs = Vec::with_capacity(hashes.len());
        let mut at = 0usize;
        for hash in hashes {
            let len = records
                .get(at + 32..at + 36)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .unwrap_or(0);
            let loc = Loc {
                pack,
                at: start + (at as u64) + RECORD_HEADER,
                len,
            };
            at += loc.record_bytes() as usize;
            entries.extend_from_slice(&entry(hash, loc));
            locs.push((*hash, loc));
        }
        let index_path = self.dir.join("index");
        if let Some(staged) = staged.as_deref_mut() {
            staged.insert(pack);
            entries.clear();
        }
        let durable = staged.is_none();
        let write = || -> Result<(), ContentError> {
            file.write_all_at(records, start).map_err(io(&pack_path))?;
            if !durable {
                return Ok(());
            }
            file.sync_data().map_err(io(&pack_path))?;
            if opened {
                sync_dir(&self.dir)?;
            }
            tail.index
                .write_all_at(&entries, tail.index_len)
                .map_err(io(&index_path))?;
            tail.index.sync_data().map_err(io(&index_path))
        };
        if let Err(e) = write() {
            // Cut both files back, so the next batch appends where this one began (opening
            // the store would do the same after a crash).
            for (path, cut) in [
                (&pack_path, file.set_len(start)),
                (&index_path, tail.index.set_len(tail.index_len)),
            ] {
                if let Err(error) = cut {
                    tracing::warn!(
                        file = %path.display(),
                        %error,
                        "could not cut a file back after a failed write; opening the store again does"
                    );
                }
            }
            return Err(e);
        }
        tail.pack = pack;
        tail.pack_end = start + records.len() as u64;
        tail.index_len += entries.len() as u64;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        if opened {
            index.packs.insert(pack, file);
        }
        index.map.extend(locs);
        Ok(())
    }

    /// Drops every chunk that no version references (`referenced`) and that was not held in
    /// the grace period, and gives its disk space back: a pack at least a tenth unreferenced
    /// is rewritten (its kept chunks copied to a new pack, each checked against its name on
    /// the way) and removed. Uploads wait while it runs; readers do not.
    ///
    /// Crash safety: copies are appended to the newest pack (or fresh ones) without index
    /// entries, and flushed once at the end. Then a fresh index of the kept chunks is written
    /// beside the old, flushed and renamed over it, and only then are the rewritten packs
    /// removed. A crash before the rename leaves the old index, naming every chunk where it
    /// was; opening the store cuts the unindexed copies off the newest pack like any torn
    /// tail (copies in an older fresh pack are unreferenced, and the next collection removes
    /// that pack). A crash after it leaves the new index, and the old packs unreferenced.
    ///
    /// Against a publish running at the same time: a chunk a publisher was told is present, or
    /// uploaded, or named by a manifest as it was stored, is held ([`PackStore::hold`]); the
    /// final step looks at the holds again, under the same lock, before it drops anything.
    pub fn collect(&self, referenced: &HashSet<[u8; 32]>) -> Result<Collected, ContentError> {
        self.collect_with(referenced, || {})
    }

    /// [`PackStore::collect`], calling `between` after the copying and before the final step
    /// (tests hold chunks there).
    fn collect_with(
        &self,
        referenced: &HashSet<[u8; 32]>,
        between: impl FnOnce(),
    ) -> Result<Collected, ContentError> {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = Collected::default();
        // Which packs are worth rewriting: those at least a tenth unreferenced.
        let (sizes, victims) = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.age(self.grace);
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            report.chunks = index.map.len() as u64;
            let mut kept_in: HashMap<u32, u64> = HashMap::new();
            for (h, loc) in &index.map {
                if referenced.contains(h) || held.has(h) {
                    *kept_in.entry(loc.pack).or_default() += loc.record_bytes();
                }
            }
            let mut sizes = BTreeMap::new();
            for (&n, f) in &index.packs {
                let path = pack_path(&self.dir, n);
                sizes.insert(n, f.metadata().map_err(io(&path))?.len());
            }
            let victims: HashSet<u32> = sizes
                .iter()
                .filter(|&(&n, &size)| {
                    let waste = size.saturating_sub(kept_in.get(&n).copied().unwrap_or(0));
                    let empty_old = size == 0 && n != tail.pack;
                    empty_old || (waste > 0 && waste >= size / REWRITE_WASTE_DIV)
                })
                .map(|(&n, _)| n)
                .collect();
            (sizes, victims)
        };
        report.disk_bytes_before = sizes.values().sum();
        // When the newest pack is rewritten too, copies go to a fresh one.
        if victims.contains(&tail.pack) {
            tail.pack_end = tail.pack_end.max(self.pack_bytes);
            self.append(&mut tail, &[], &[], None)?;
        }
        let mut staged = HashSet::new();
        // Copy out what is kept (held since counts too: looked at again below).
        let moving: Vec<([u8; 32], Loc)> = {
            let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            index
                .map
                .iter()
                .filter(|(h, loc)| {
                    victims.contains(&loc.pack) && (referenced.contains(*h) || held.has(h))
                })
                .map(|(h, loc)| (*h, *loc))
                .collect()
        };
        self.move_out(&mut tail, &moving, &mut staged, &mut report)?;
        between();
        // The final step: drop, under the hold lock, what is still unreferenced and unheld;
        // copy what was held since the copying above; write the new index.
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.age(self.grace);
        let late: Vec<([u8; 32], Loc)> = {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            index
                .map
                .iter()
                .filter(|(h, loc)| victims.contains(&loc.pack) && held.has(h))
                .map(|(h, loc)| (*h, *loc))
                .collect()
        };
        self.move_out(&mut tail, &late, &mut staged, &mut report)?;
        self.flush_staged(&staged)?;
        {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            let mut dropped_bytes = 0u64;
            let before = index.map.len();
            index.map.retain(|h, loc| {
                if referenced.contains(h) {
                    report.referenced += 1;
                    true
                } else if held.has(h) {
                    report.held += 1;
                    true
                } else {
                    dropped_bytes += u64::from(loc.len);
                    false
                }
            });
            report.dropped += (before - index.map.len()) as u64;
            report.dropped_bytes += dropped_bytes;
        }
        self.rewrite_index(&mut tail)?;
        // The rewritten packs are referenced by nothing now.
        let removed: Vec<u32> = {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            let removed: Vec<u32> = victims
                .iter()
                .copied()
                .filter(|n| *n != tail.pack)
                .collect();
            for n in &removed {
                index.packs.remove(n);
            }
            removed
        };
        report.packs_removed = removed.len() as u64;
        // Chunks of an older one-file-per-chunk store: removed one by one.
        if let Some(legacy) = &self.legacy {
            for h in legacy.hashes() {
                if referenced.contains(&h) || held.has(&h) {
                    continue;
                }
                report.dropped_bytes += legacy.remove(&h)?;
                report.dropped += 1;
            }
        }
        drop(held);
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            let mut after = 0u64;
            let mut kept_total = 0u64;
            for (&n, f) in &index.packs {
                let path = pack_path(&self.dir, n);
                after += f.metadata().map_err(io(&path))?.len();
            }
            for loc in index.map.values() {
                kept_total += loc.record_bytes();
            }
            report.disk_bytes_after = after;
            report.waste_left_bytes = after.saturating_sub(kept_total);
        }
        // Uploads go on while the file system frees the old packs (a large one takes a
        // while); nothing names them any more.
        drop(tail);
        for n in &removed {
            let path = pack_path(&self.dir, *n);
            fs::remove_file(&path).map_err(io(&path))?;
        }
        if !removed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(report)
    }

    /// Copies the records of `moving` to the newest pack in flushed batches (see
    /// [`PackStore::append`]); a record whose bytes no longer match its name is not copied
    /// (and so is dropped with its pack).
    fn move_out(
        &self,
        tail: &mut Tail,
        moving: &[([u8; 32], Loc)],
        staged: &mut HashSet<u32>,
        report: &mut Collected,
    ) -> Result<(), ContentError> {
        // In the order they lie on disk: one pass through each pack. Batches are read and
        // checked here while a second thread writes the one before.
        let mut moving = moving.to_vec();
        moving.sort_unstable_by_key(|(_, loc)| (loc.pack, loc.at));
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, Vec<[u8; 32]>)>(1);
        std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                for (records, hashes) in rx {
                    self.append(tail, &records, &hashes, Some(staged))?;
                }
                Ok::<(), ContentError>(())
            });
            let read = (|| {
                let mut records = Vec::with_capacity(MOVE_BATCH + (1 << 20));
                let mut hashes = Vec::new();
                for (h, loc) in &moving {
                    let file = {
                        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
                        index.packs.get(&loc.pack).cloned()
                    };
                    let Some(file) = file else { continue };
                    let start = records.len();
                    records.resize(start + loc.record_bytes() as usize, 0);
                    let Some(record_at) = loc.at.checked_sub(RECORD_HEADER) else {
                        continue; // cannot be: every record has its header
                    };
                    file.read_exact_at(&mut records[start..], record_at)
                        .map_err(io(&pack_path(&self.dir, loc.pack)))?;
                    let whole = records[start..start + 32] == h[..]
                        && records[start + 32..start + 36] == loc.len.to_be_bytes()
                        && blake3::hash(&records[start + RECORD_HEADER as usize..]).as_bytes() == h;
                    if !whole {
                        records.truncate(start);
                        report.corrupt += 1;
                        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
                        index.map.remove(h);
                        continue;
                    }
                    hashes.push(*h);
                    report.moved_bytes += u64::from(loc.len);
                    if records.len() >= MOVE_BATCH {
                        let full = std::mem::replace(
                            &mut records,
                            Vec::with_capacity(MOVE_BATCH + (1 << 20)),
                        );
                        if tx.send((full, std::mem::take(&mut hashes))).is_err() {
                            break; // the writer failed: its error is returned below
                        }
                    }
                }
                if !hashes.is_empty() {
                    // A refused send means the writer stopped on an error.
                    // dropped: the writer's join below returns that error
                    let _ = tx.send((records, hashes));
                }
                Ok::<(), ContentError>(())
            })();
            drop(tx);
            let written = writer.join().unwrap_or_else(|_| {
                Err(ContentError::io(
                    &self.dir,
                    std::io::Error::other("the pack writer stopped"),
                ))
            });
            read.and(written)
        })
    }

    /// Flushes the packs collection copied into, and the directory (for new packs).
    fn flush_staged(&self, staged: &HashSet<u32>) -> Result<(), ContentError> {
        for n in staged {
            let file = {
                let index = self.index.read().unwrap_or_else(|p| p.into_inner());
                index.packs.get(n).cloned()
            };
            if let Some(f) = file {
                let path = pack_path(&self.dir, *n);
                f.sync_data().map_err(io(&path))?;
            }
        }
        if !staged.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Replaces the index by one entry per chunk held now: written beside it, flushed,
    /// renamed over it.
    fn rewrite_index(&self, tail: &mut Tail) -> Result<(), ContentError> {
        let path = self.dir.join("index");
        let tmp = self
            .dir
            .join(format!("index.tmp-{}", rand::random::<u64>()));
        let len = {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            let mut out =
                std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io(&tmp))?);
            for (h, loc) in &index.map {
                std::io::Write::write_all(&mut out, &entry(h, *loc)).map_err(io(&tmp))?;
            }
            let f = out
                .into_inner()
                .map_err(|e| ContentError::io(&tmp, e.into_error()))?;
            f.sync_all().map_err(io(&tmp))?;
            (index.map.len() * ENTRY) as u64
        };
        if let Err(e) = fs::rename(&tmp, &path) {
            if let Err(error) = fs::remove_file(&tmp) {
                tracing::warn!(
                    file = %tmp.display(),
                    %error,
                    "could not remove the unused new index; the next open does"
                );
            }
            return Err(ContentError::io(&path, e));
        }
        sync_dir(&self.dir)?;
        tail.index = open_rw(&path, false)?;
        tail.index_len = len;
        Ok(())
    }
}

fn pack_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.pack"))
}

fn sync_dir(dir: &Path) -> Result<(), ContentError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ContentError::io(dir, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn chunk(i: u32, len: usize) -> ([u8; 32], Vec<u8>) {
        let data: Vec<u8> = (0..len)
            .map(|j| (j as u32 ^ i.wrapping_mul(2_654_435_761)) as u8)
            .collect();
        (*blake3::hash(&data).as_bytes(), data)
    }

    fn put(s: &PackStore, chunks: &[([u8; 32], Vec<u8>)]) -> usize {
        let frames: Vec<Frame<'_>> = chunks.iter().map(|(h, d)| (*h, &d[..])).collect();
        s.put_many(&frames).unwrap()
    }

    fn open(dir: &Path, pack_bytes: u64) -> PackStore {
        PackStore::open_with(
            &dir.join("packs"),
            &dir.join("chunks"),
            true,
            pack_bytes,
            GRACE,
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn batches_are_stored_found_and_kept_across_reopens_and_pack_rollover() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            PackStore::open(&dir.path().join("packs"), &dir.path().join("chunks"), false)
                .unwrap()
                .is_none(),
            "nothing is created for a read"
        );
        assert!(!dir.path().join("packs").exists());
        let s = open(dir.path(), 10_000);
        let a: Vec<_> = (0..5).map(|i| chunk(i, 3000 + i as usize)).collect();
        let b: Vec<_> = (5..12).map(|i| chunk(i, 2000)).collect();
        let mut with_repeats = a.clone();
        with_repeats.push(a[0].clone());
        assert_eq!(put(&s, &with_repeats), 5);
        assert_eq!(put(&s, &a), 0, "nothing new");
        assert_eq!(put(&s, &b), 7);
        let empty = chunk(99, 0);
        assert_eq!(put(&s, std::slice::from_ref(&empty)), 1);
        let all: Vec<_> = a.iter().chain(&b).chain([&empty]).collect();
        for (h, d) in &all {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(&d[..]));
        }
        assert_eq!(s.count(), 13);
        assert!(!s.has(&chunk(1000, 10).0));
        assert_eq!(s.read_raw(&chunk(1000, 10).0).unwrap(), None);
        // Rolled over: 15 KB went into the first pack before it passed 10 KB.
        assert!(pack_path(&dir.path().join("packs"), 1).exists());
        drop(s);
        let s = open(dir.path(), 10_000);
        assert_eq!(s.count(), 13);
        for (h, d) in &all {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(&d[..]));
        }
        let c: Vec<_> = (20..23).map(|i| chunk(i, 500)).collect();
        assert_eq!(put(&s, &c), 3);
        drop(s);
        assert_eq!(open(dir.path(), 10_000).count(), 16);
    }

    #[test]
    fn a_bad_chunk_refuses_the_batch_and_rot_on_disk_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), PACK_BYTES);
        let good = chunk(1, 1000);
        let (other, _) = chunk(2, 1000);
        let frames: Vec<Frame<'_>> = vec![(good.0, &good.1), (other, &good.1)];
        match s.put_many(&frames) {
            Err(ContentError::Corrupt(name)) => assert_eq!(name, chunk_name(&other)),
            r => panic!("{r:?}"),
        }
        assert!(!s.has(&good.0), "none of a refused batch is stored");
        assert_eq!(
            fs::metadata(pack_path(&dir.path().join("packs"), 0))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(put(&s, std::slice::from_ref(&good)), 1);
        // A byte flipped on disk: served raw, refused by `get`.
        let path = pack_path(&dir.path().join("packs"), 0);
        let mut bytes = fs::read(&path).unwrap();
        bytes[100] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(s.get(&good.0), Err(ContentError::Corrupt(_))));
        assert_eq!(s.read_raw(&good.0).unwrap().unwrap().len(), 1000);
    }

    #[test]
    fn torn_tails_from_a_crash_are_trimmed_and_acknowledged_batches_kept() {
        let dir = tempfile::tempdir().unwrap();
        let packs = dir.path().join("packs");
        let s = open(dir.path(), PACK_BYTES);
        let kept: Vec<_> = (0..4).map(|i| chunk(i, 777)).collect();
        put(&s, &kept);
        drop(s);
        let pack_len = fs::metadata(pack_path(&packs, 0)).unwrap().len();
        let index_len = fs::metadata(packs.join("index")).unwrap().len();
        // A crash mid-batch: a record half written to the pack, and in the index one whole
        // entry that fails its check and a torn one.
        let torn = chunk(50, 5000);
        let mut record = Vec::new();
        crate::batch::push(&mut record, &torn.0, &torn.1);
        let mut f = OpenOptions::new()
            .append(true)
            .open(pack_path(&packs, 0))
            .unwrap();
        std::io::Write::write_all(&mut f, &record[..3000]).unwrap();
        let mut e = entry(
            &torn.0,
            Loc {
                pack: 0,
                at: pack_len + 36,
                len: 5000,
            },
        );
        e[40] ^= 1;
        let mut f = OpenOptions::new()
            .append(true)
            .open(packs.join("index"))
            .unwrap();
        std::io::Write::write_all(&mut f, &e).unwrap();
        std::io::Write::write_all(&mut f, &e[..20]).unwrap();
        let s = open(dir.path(), PACK_BYTES);
        assert_eq!(s.count(), 4);
        assert!(!s.has(&torn.0));
        assert_eq!(fs::metadata(pack_path(&packs, 0)).unwrap().len(), pack_len);
        assert_eq!(fs::metadata(packs.join("index")).unwrap().len(), index_len);
        // The next batch lands where the torn one began and survives a reopen.
        assert_eq!(put(&s, std::slice::from_ref(&torn)), 1);
        drop(s);
        let s = open(dir.path(), PACK_BYTES);
        for (h, d) in kept.iter().chain([&torn]) {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(&d[..]));
        }
        // An index entry pointing past its pack's end (the pack lost its tail) ends the index
        // there: what it names cannot be served.
        drop(s);
        let f = OpenOptions::new()
            .write(true)
            .open(pack_path(&packs, 0))
            .unwrap();
        f.set_len(pack_len).unwrap();
        let s = open(dir.path(), PACK_BYTES);
        assert_eq!(s.count(), 4);
        assert!(!s.has(&torn.0));
    }

    #[test]
    fn concurrent_writers_and_readers_agree_and_the_result_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(open(dir.path(), 200_000));
        // Four writers, overlapping halves: every chunk is sent by two of them.
        let sets: Vec<Vec<_>> = (0..4u32)
            .map(|w| {
                (w * 50..w * 50 + 100)
                    .map(|i| chunk(i % 200, 900 + (i % 200) as usize))
                    .collect()
            })
            .collect();
        let stored: usize = std::thread::scope(|scope| {
            let writers: Vec<_> = sets
                .iter()
                .map(|set| {
                    let s = s.clone();
                    scope.spawn(move || set.chunks(7).map(|b| put(&s, b)).sum::<usize>())
                })
                .collect();
            // A reader meanwhile: whatever it finds is whole and right.
            let reader = {
                let s = s.clone();
                let all: Vec<_> = (0..200).map(|i| chunk(i, 900 + i as usize)).collect();
                scope.spawn(move || {
                    for _ in 0..20 {
                        for (h, d) in &all {
                            if let Some(got) = s.get(h).unwrap() {
                                assert_eq!(&got, d);
                            }
                        }
                    }
                })
            };
            reader.join().unwrap();
            writers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(stored, 200, "each chunk stored exactly once");
        assert_eq!(s.count(), 200);
        drop(s);
        let s = open(dir.path(), 200_000);
        assert_eq!(s.count(), 200);
        for i in 0..200 {
            let (h, d) = chunk(i, 900 + i as usize);
            assert_eq!(s.get(&h).unwrap(), Some(d));
        }
    }

    #[test]
    fn chunks_of_an_older_file_per_chunk_store_are_still_served() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = ChunkStore::open(&dir.path().join("chunks")).unwrap();
        let old = chunk(7, 1234);
        legacy.put(&old.0, &old.1, true).unwrap();
        let s = PackStore::open(&dir.path().join("packs"), &dir.path().join("chunks"), false)
            .unwrap()
            .expect("an old store is a store");
        assert!(s.has(&old.0));
        assert_eq!(s.get(&old.0).unwrap(), Some(old.1.clone()));
        assert_eq!(
            put(&s, &[old.clone(), chunk(8, 10)]),
            1,
            "the old chunk is not copied"
        );
        assert_eq!(s.count(), 2);
    }

    fn open_graced(dir: &Path, pack_bytes: u64, grace: Duration) -> PackStore {
        PackStore::open_with(
            &dir.join("packs"),
            &dir.join("chunks"),
            true,
            pack_bytes,
            grace,
        )
        .unwrap()
        .unwrap()
    }

    fn pack_files(dir: &Path) -> Vec<u32> {
        let mut v: Vec<u32> = fs::read_dir(dir.join("packs"))
            .unwrap()
            .filter_map(|e| pack_number(&e.unwrap().file_name().to_string_lossy()))
            .collect();
        v.sort();
        v
    }

    fn disk(dir: &Path) -> u64 {
        pack_files(dir)
            .iter()
            .map(|n| {
                fs::metadata(pack_path(&dir.join("packs"), *n))
                    .unwrap()
                    .len()
            })
            .sum()
    }

    fn set(chunks: &[([u8; 32], Vec<u8>)]) -> HashSet<[u8; 32]> {
        chunks.iter().map(|(h, _)| *h).collect()
    }

    #[test]
    fn collection_drops_what_no_version_references_and_gives_the_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = open_graced(dir.path(), 40_000, Duration::ZERO);
        // Version one: chunks 0-29; version two shares 0-9 and adds 30-49.
        let one: Vec<_> = (0..30).map(|i| chunk(i, 4000)).collect();
        let two: Vec<_> = (0..10).chain(30..50).map(|i| chunk(i, 4000)).collect();
        put(&s, &one);
        put(&s, &two);
        assert_eq!(s.count(), 50);
        let before = disk(dir.path());
        let r = s.collect(&set(&two)).unwrap();
        assert_eq!(r.chunks, 50);
        assert_eq!((r.referenced, r.held, r.dropped), (30, 0, 20));
        assert_eq!(r.dropped_bytes, 20 * 4000);
        assert_eq!(r.disk_bytes_before, before);
        assert_eq!(r.disk_bytes_after, disk(dir.path()));
        assert!(r.packs_removed >= 1, "{r:?}");
        // What is left on disk: the kept chunks and the waste the report names.
        assert_eq!(
            r.disk_bytes_after,
            30 * (4000 + RECORD_HEADER) + r.waste_left_bytes
        );
        assert!(r.disk_bytes_after < before - 15 * 4000, "{r:?}");
        for (h, d) in &two {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(&d[..]));
        }
        for (h, _) in &one[10..] {
            assert!(!s.has(h));
        }
        // Uploads go on after it, and all of it survives a reopen.
        let three: Vec<_> = (50..55).map(|i| chunk(i, 4000)).collect();
        assert_eq!(put(&s, &three), 5);
        drop(s);
        let s = open_graced(dir.path(), 40_000, Duration::ZERO);
        assert_eq!(s.count(), 35);
        for (h, d) in two.iter().chain(&three) {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(&d[..]));
        }
        // Nothing unreferenced: a second collection has nothing to drop.
        let mut keep = set(&two);
        keep.extend(set(&three));
        let r = s.collect(&keep).unwrap();
        assert_eq!((r.dropped, r.dropped_bytes), (0, 0));
        // Everything unreferenced: every pack but an empty newest goes.
        let r = s.collect(&HashSet::new()).unwrap();
        assert_eq!(r.dropped, 35);
        assert_eq!(r.disk_bytes_after, 0);
        assert_eq!(s.count(), 0);
        assert_eq!(pack_files(dir.path()).len(), 1);
        drop(s);
        assert_eq!(open_graced(dir.path(), 40_000, Duration::ZERO).count(), 0);
    }

    #[test]
    fn chunks_uploaded_or_held_in_the_grace_period_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = open_graced(dir.path(), PACK_BYTES, Duration::from_secs(600));
        let a: Vec<_> = (0..8).map(|i| chunk(i, 1000)).collect();
        put(&s, &a);
        // Uploaded just now, referenced by nothing yet (its manifest comes last): kept.
        let r = s.collect(&HashSet::new()).unwrap();
        assert_eq!((r.held, r.dropped), (8, 0));
        assert_eq!(s.count(), 8);
        // A reopened store has forgotten its holds; `hold` pins what a publisher was told
        // is present and counts what is absent.
        drop(s);
        let s = open_graced(dir.path(), PACK_BYTES, Duration::from_secs(600));
        let absent = chunk(100, 10).0;
        assert_eq!(
            s.hold(a[..3].iter().map(|(h, _)| h).chain([&absent])),
            vec![&absent]
        );
        let r = s.collect(&set(&a[6..])).unwrap();
        assert_eq!((r.referenced, r.held, r.dropped), (2, 3, 3));
        for (i, (h, _)) in a.iter().enumerate() {
            assert_eq!(s.has(h), !(3..6).contains(&i), "chunk {i}");
        }
    }

    #[test]
    fn a_chunk_held_again_stays_held_a_whole_grace_period_from_then() {
        let dir = tempfile::tempdir().unwrap();
        let grace = Duration::from_secs(1);
        let s = open_graced(dir.path(), PACK_BYTES, grace);
        let a = chunk(1, 500);
        put(&s, std::slice::from_ref(&a));
        drop(s);
        let s = open_graced(dir.path(), PACK_BYTES, grace);
        assert!(s.hold([&a.0]).is_empty());
        // One window later (the hold moves to the last window) it is held again ...
        std::thread::sleep(grace + Duration::from_millis(100));
        assert!(s.hold([&a.0]).is_empty());
        // ... so one more window later it is still held.
        std::thread::sleep(grace + Duration::from_millis(100));
        let r = s.collect(&HashSet::new()).unwrap();
        assert_eq!((r.held, r.dropped), (1, 0), "{r:?}");
    }

    #[test]
    fn a_collection_cut_short_by_a_crash_loses_nothing_and_the_next_one_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let packs = dir.path().join("packs");
        let s = open_graced(dir.path(), 30_000, Duration::ZERO);
        let all: Vec<_> = (0..24).map(|i| chunk(i, 3000)).collect();
        put(&s, &all);
        let keep: Vec<_> = all.iter().step_by(3).cloned().collect();
        // Crash after the kept chunks were copied (and flushed), before the index was
        // replaced: the old index names every chunk where it was, and the unindexed copies
        // are cut off the newest pack.
        let packs_before = pack_files(dir.path());
        {
            let mut tail = s.tail.lock().unwrap();
            let moving: Vec<_> = {
                let index = s.index.read().unwrap();
                keep.iter().map(|(h, _)| (*h, index.map[h])).collect()
            };
            tail.pack_end = tail.pack_end.max(s.pack_bytes);
            let mut staged = HashSet::new();
            s.move_out(&mut tail, &moving, &mut staged, &mut Collected::default())
                .unwrap();
            s.flush_staged(&staged).unwrap();
            assert_eq!(staged.len(), 1);
        }
        let fresh = *pack_files(dir.path()).last().unwrap();
        assert!(!packs_before.contains(&fresh));
        assert!(fs::metadata(pack_path(&packs, fresh)).unwrap().len() >= 8 * 3000);
        drop(s);
        let s = open_graced(dir.path(), 30_000, Duration::ZERO);
        assert_eq!(s.count(), 24, "nothing lost");
        assert_ne!(s.lookup(&keep[0].0).unwrap().0.pack, fresh);
        assert_eq!(fs::metadata(pack_path(&packs, fresh)).unwrap().len(), 0);
        for (h, d) in &all {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(&d[..]));
        }
        // A whole collection; then a crash between replacing the index and removing the old
        // packs is played by putting one removed pack back, as a leftover index.tmp.
        let old_pack = pack_files(dir.path())[0];
        let saved = fs::read(pack_path(&packs, old_pack)).unwrap();
        let r = s.collect(&set(&keep)).unwrap();
        assert_eq!((r.referenced, r.dropped), (8, 16));
        assert!(!pack_path(&packs, old_pack).exists());
        drop(s);
        fs::write(pack_path(&packs, old_pack), &saved).unwrap();
        fs::write(packs.join("index.tmp-7"), b"half an index").unwrap();
        let s = open_graced(dir.path(), 30_000, Duration::ZERO);
        assert!(!packs.join("index.tmp-7").exists());
        assert_eq!(s.count(), 8);
        for (h, d) in &keep {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(&d[..]));
        }
        let r = s.collect(&set(&keep)).unwrap();
        assert_eq!(r.dropped, 0);
        assert_eq!(r.packs_removed, 1, "the leftover pack: {r:?}");
        assert!(!pack_path(&packs, old_pack).exists());
    }

    #[test]
    fn a_chunk_rotten_on_disk_is_not_copied_by_a_collection() {
        let dir = tempfile::tempdir().unwrap();
        let packs = dir.path().join("packs");
        let s = open_graced(dir.path(), PACK_BYTES, Duration::ZERO);
        let all: Vec<_> = (0..10).map(|i| chunk(i, 2000)).collect();
        put(&s, &all);
        // Flip a byte inside chunk 4's bytes.
        let at = s.lookup(&all[4].0).unwrap().0.at;
        let f = OpenOptions::new()
            .write(true)
            .read(true)
            .open(pack_path(&packs, 0))
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at + 10).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], at + 10).unwrap();
        // Half unreferenced, so the pack is rewritten and every kept chunk checked.
        let r = s.collect(&set(&all[..5])).unwrap();
        assert_eq!((r.corrupt, r.dropped), (1, 5));
        assert!(!s.has(&all[4].0), "a publish uploads it again");
        for (h, d) in &all[..4] {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(&d[..]));
        }
    }

    #[test]
    fn uploads_and_holds_racing_a_collection_are_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(open_graced(dir.path(), 100_000, Duration::from_secs(600)));
        let old: Vec<_> = (0..200).map(|i| chunk(i, 1500)).collect();
        put(&s, &old);
        drop(s);
        // Reopened, so nothing is held; chunks 0-99 are referenced.
        let s = Arc::new(open_graced(dir.path(), 100_000, Duration::from_secs(600)));
        let referenced = set(&old[..100]);
        let new: Vec<_> = (1000..1300).map(|i| chunk(i, 1500)).collect();
        std::thread::scope(|scope| {
            let writer = {
                let s = s.clone();
                let new = &new;
                let old = &old;
                scope.spawn(move || {
                    for (k, b) in new.chunks(10).enumerate() {
                        put(&s, b);
                        // A publisher asks about two old chunks: those said to be
                        // present are held; those said to be absent it uploads again.
                        let k = 100 + (k % 10) * 10;
                        if !s.hold(old[k..k + 2].iter().map(|(h, _)| h)).is_empty() {
                            put(&s, &old[k..k + 2]);
                        }
                    }
                })
            };
            for _ in 0..5 {
                s.collect(&referenced).unwrap();
            }
            writer.join().unwrap();
        });
        for (h, d) in new.iter().chain(&old[..100]) {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(&d[..]));
        }
        let held_old = (0..10).flat_map(|k| [100 + k * 10, 101 + k * 10]);
        for i in held_old {
            assert!(s.has(&old[i].0), "old chunk {i} was held");
        }
        drop(s);
        let s = open_graced(dir.path(), 100_000, Duration::from_secs(600));
        for (h, d) in new.iter().chain(&old[..100]) {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(&d[..]));
        }
    }

    #[test]
    fn a_chunk_held_while_its_pack_is_being_rewritten_is_copied_in_the_final_step() {
        let dir = tempfile::tempdir().unwrap();
        let s = open_graced(dir.path(), PACK_BYTES, Duration::from_secs(600));
        let all: Vec<_> = (0..12).map(|i| chunk(i, 2500)).collect();
        put(&s, &all);
        drop(s);
        let s = open_graced(dir.path(), PACK_BYTES, Duration::from_secs(600));
        // Chunk 11 is unreferenced when the copying starts; a publisher is told it is
        // present before the final step.
        let r = s
            .collect_with(&set(&all[..4]), || {
                assert!(s.hold([&all[11].0]).is_empty());
            })
            .unwrap();
        assert_eq!((r.referenced, r.held, r.dropped), (4, 1, 7));
        assert_eq!(r.packs_removed, 1, "{r:?}");
        assert!(!pack_path(&dir.path().join("packs"), 0).exists());
        for (h, d) in all[..4].iter().chain([&all[11]]) {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(&d[..]));
        }
    }

    #[test]
    fn unreferenced_chunks_of_an_older_file_per_chunk_store_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = ChunkStore::open(&dir.path().join("chunks")).unwrap();
        let (a, b) = (chunk(1, 700), chunk(2, 900));
        legacy.put(&a.0, &a.1, true).unwrap();
        legacy.put(&b.0, &b.1, true).unwrap();
        let s = open_graced(dir.path(), PACK_BYTES, Duration::ZERO);
        let r = s.collect(&set(std::slice::from_ref(&a))).unwrap();
        assert_eq!((r.dropped, r.dropped_bytes), (1, 900));
        assert!(s.has(&a.0) && !s.has(&b.0));
        assert_eq!(legacy.hashes(), vec![a.0]);
    }
}
