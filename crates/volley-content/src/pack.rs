//! The origin's chunk store: append-only pack files and an append-only index, so storing a
//! batch of chunks is two appends and two flushes, whatever the number of chunks (one file per
//! chunk cost an inode, a directory entry and a rename each).
//!
//! Layout, under the store's directory:
//! - `NNNNNNNN.pack`: records of a chunk's 32-byte hash, its length (4 bytes, big-endian) and
//!   its bytes, appended; a pack is closed for appends once it passes [`PACK_BYTES`].
//! - `index`: one 56-byte entry per chunk: hash, pack number (4 bytes), offset of the bytes (8),
//!   length (4), and the first 8 bytes of the BLAKE3 hash of those 48 bytes.
//!
//! A batch is appended to the newest pack and flushed, then its entries are appended to the
//! index and flushed, and only then do readers see it. A crash can leave a torn tail on either
//! file; opening the store keeps the index up to its first entry that fails its check or points
//! past its pack's end, and cuts the newest pack back to the end of its last indexed chunk. So
//! after a crash the store holds exactly the batches that were acknowledged, plus possibly the
//! one in flight, whole. Chunks of an older one-file-per-chunk store (see [`ChunkStore`]) are
//! still found and served.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::batch::Frame;
use crate::store::ChunkStore;
use crate::{chunk_name, ContentError};

/// A pack takes no more appends once it is this large.
pub const PACK_BYTES: u64 = 1 << 30;
const ENTRY: usize = 56;
const RECORD_HEADER: u64 = 36;

#[derive(Debug, Clone, Copy)]
struct Loc {
    pack: u32,
    at: u64,
    len: u32,
}

#[derive(Debug)]
struct Index {
    map: HashMap<[u8; 32], Loc>,
    packs: Vec<Arc<File>>,
}

#[derive(Debug)]
struct Tail {
    /// Where the next record goes in the newest pack.
    pack_end: u64,
    index: File,
    index_len: u64,
}

/// The store. Readers run concurrently; writers take turns.
#[derive(Debug)]
pub struct PackStore {
    dir: PathBuf,
    pack_bytes: u64,
    legacy: Option<ChunkStore>,
    index: RwLock<Index>,
    tail: Mutex<Tail>,
}

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

impl PackStore {
    /// The store in `dir`, created if `create`; `Ok(None)` when it does not exist and `create`
    /// is false. `legacy` is the directory of an older one-file-per-chunk store, read if present.
    pub fn open(
        dir: &Path,
        legacy: &Path,
        create: bool,
    ) -> Result<Option<PackStore>, ContentError> {
        Self::open_with(dir, legacy, create, PACK_BYTES)
    }

    /// [`PackStore::open`] with packs closed at `pack_bytes` (tests use small packs).
    pub fn open_with(
        dir: &Path,
        legacy: &Path,
        create: bool,
        pack_bytes: u64,
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
        let mut packs = Vec::new();
        loop {
            let path = pack_path(dir, packs.len() as u32);
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => packs.push(Arc::new(f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(ContentError::io(&path, e)),
            }
        }
        if packs.is_empty() {
            let path = pack_path(dir, 0);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io(&path))?;
            sync_dir(dir)?;
            packs.push(Arc::new(f));
        }
        let mut sizes = Vec::with_capacity(packs.len());
        for (i, p) in packs.iter().enumerate() {
            let path = pack_path(dir, i as u32);
            sizes.push(p.metadata().map_err(io(&path))?.len());
        }
        let index_path = dir.join("index");
        let index = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&index_path)
            .map_err(io(&index_path))?;
        let bytes = fs::read(&index_path).map_err(io(&index_path))?;
        let newest = packs.len() as u32 - 1;
        let mut map = HashMap::with_capacity(bytes.len() / ENTRY);
        let mut good = 0u64;
        let mut pack_end = 0u64;
        for e in bytes.chunks_exact(ENTRY) {
            let Some((hash, loc)) = parse_entry(e) else {
                break;
            };
            let fits = sizes
                .get(loc.pack as usize)
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
        let newest_path = pack_path(dir, newest);
        if sizes.last().is_some_and(|&s| s > pack_end) {
            packs[newest as usize]
                .set_len(pack_end)
                .map_err(io(&newest_path))?;
            packs[newest as usize]
                .sync_all()
                .map_err(io(&newest_path))?;
        }
        Ok(Some(PackStore {
            dir: dir.to_owned(),
            pack_bytes,
            legacy,
            index: RwLock::new(Index { map, packs }),
            tail: Mutex::new(Tail {
                pack_end,
                index,
                index_len: good,
            }),
        }))
    }

    fn lookup(&self, hash: &[u8; 32]) -> Option<(Loc, Arc<File>)> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let loc = *index.map.get(hash)?;
        let file = index.packs.get(loc.pack as usize)?.clone();
        Some((loc, file))
    }

    /// Whether the store has the chunk.
    pub fn has(&self, hash: &[u8; 32]) -> bool {
        self.lookup(hash).is_some() || self.legacy.as_ref().is_some_and(|l| l.has(hash))
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
    /// new.
    pub fn put_many(&self, chunks: &[Frame<'_>]) -> Result<usize, ContentError> {
        for (hash, data) in chunks {
            if blake3::hash(data).as_bytes() != hash {
                return Err(ContentError::Corrupt(chunk_name(hash)));
            }
        }
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::HashSet::with_capacity(chunks.len());
        let new: Vec<&Frame<'_>> = chunks
            .iter()
            .filter(|(h, _)| seen.insert(*h) && !self.has(h))
            .collect();
        if new.is_empty() {
            return Ok(0);
        }
        let (mut pack, file) = {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            let n = index.packs.len() - 1;
            (n as u32, index.packs[n].clone())
        };
        let (file, start, opened) = if tail.pack_end >= self.pack_bytes {
            pack += 1;
            let path = pack_path(&self.dir, pack);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io(&path))?;
            (Arc::new(f), 0, true)
        } else {
            (file, tail.pack_end, false)
        };
        let mut records = Vec::with_capacity(
            new.iter()
                .map(|(_, d)| d.len() + RECORD_HEADER as usize)
                .sum(),
        );
        let mut entries = Vec::with_capacity(new.len() * ENTRY);
        let mut locs = Vec::with_capacity(new.len());
        for (hash, data) in &new {
            crate::batch::push(&mut records, hash, data);
            let loc = Loc {
                pack,
                at: start + records.len() as u64 - data.len() as u64,
                len: data.len() as u32,
            };
            entries.extend_from_slice(&entry(hash, loc));
            locs.push((*hash, loc));
        }
        let pack_path = pack_path(&self.dir, pack);
        let index_path = self.dir.join("index");
        let write = || -> Result<(), ContentError> {
            file.write_all_at(&records, start).map_err(io(&pack_path))?;
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
            let _ = file.set_len(start);
            let _ = tail.index.set_len(tail.index_len);
            return Err(e);
        }
        tail.pack_end = start + records.len() as u64;
        tail.index_len += entries.len() as u64;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        if opened {
            index.packs.push(file);
        }
        index.map.extend(locs);
        Ok(new.len())
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
        PackStore::open_with(&dir.join("packs"), &dir.join("chunks"), true, pack_bytes)
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
}
