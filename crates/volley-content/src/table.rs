//! The distinct chunks of one version, numbered in the order they first occur in its manifest
//! (the numbering peers use on the wire), with a lookup by hash.
//!
//! One table is built per fetch and shared by the swarm and the staging area. It keeps the
//! signed manifest it was built from (in memory or moved to disk) and reads each chunk's hash
//! and size from there. Its own state is on disk too, in two unnamed files of the process's
//! own (in the temp directory, gone with the process), read with positioned reads:
//!
//! - per chunk number, 12 bytes: where the chunk's first reference starts in the signed bytes
//!   and the offset of that place in its file;
//! - an open-addressed hash index (twice as many 16-byte slots as references, linear probing):
//!   the first 8 bytes of a hash, its chunk number and where its first reference starts.
//!
//! The table is built in one pass over the references, in order (a reference whose hash the
//! index does not hold yet is a new chunk and takes the next number), so building it and
//! holding it take the same memory for a build of any size. A lookup by hash reads about one
//! slot group and one reference.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::manifest::SignedManifest;
use crate::{chunk_name, ChunkRef, ContentError};

/// Bytes per chunk-number record: first reference (u32), offset in its file (u64).
const RECORD: u64 = 12;
/// Bytes per index slot: hash prefix (u64), chunk number + 1 (u32, 0 = empty), first
/// reference (u32).
const SLOT: u64 = 16;
/// Slots read per positioned read while probing.
const GROUP: u64 = 4;

/// See the module docs.
#[derive(Debug)]
pub struct ChunkTable {
    manifest: Arc<SignedManifest>,
    len: usize,
    records: File,
    index: File,
    /// Slots in the index (a power of two).
    slots: u64,
}

fn prefix_of(hash: &[u8; 32]) -> u64 {
    u64::from_be_bytes([
        hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
    ])
}

/// A probe's answer: the chunk's number and first reference, or the empty slot where it
/// would go.
enum Probe {
    Found { number: u32, first: u32 },
    Empty(u64),
}

/// Looks `hash` up in an index of `slots` slots over manifest `m`.
fn probe(index: &File, slots: u64, m: &SignedManifest, hash: &[u8; 32]) -> std::io::Result<Probe> {
    let p = prefix_of(hash);
    let mask = slots - 1;
    let mut s = p & mask;
    let mut buf = [0u8; (GROUP * SLOT) as usize];
    for _ in 0..slots.div_ceil(GROUP) + 1 {
        let k = GROUP.min(slots - s);
        let got = &mut buf[..(k * SLOT) as usize];
        index.read_exact_at(got, s * SLOT)?;
        for (j, slot) in got.chunks_exact(SLOT as usize).enumerate() {
            let word = |r: std::ops::Range<usize>| -> [u8; 4] {
                let mut w = [0u8; 4];
                w.copy_from_slice(&slot[r]);
                w
            };
            let number = u32::from_be_bytes(word(8..12));
            if number == 0 {
                return Ok(Probe::Empty(s + j as u64));
            }
            let mut pre = [0u8; 8];
            pre.copy_from_slice(&slot[..8]);
            if u64::from_be_bytes(pre) == p {
                let first = u32::from_be_bytes(word(12..16));
                // Equal prefixes are rare: each is checked whole.
                if m.chunk_at(first).hash == *hash {
                    return Ok(Probe::Found {
                        number: number - 1,
                        first,
                    });
                }
            }
        }
        s = (s + k) & mask;
    }
    // Never full: twice as many slots as references.
    Err(std::io::Error::other("the chunk index is full"))
}

fn temp_io(e: std::io::Error) -> ContentError {
    ContentError::io(&std::env::temp_dir(), e)
}

impl ChunkTable {
    /// The table of `manifest`. A manifest that lists one hash with two sizes can never be
    /// installed, and is refused. The table's files go to the temp directory.
    pub fn new(manifest: Arc<SignedManifest>) -> Result<ChunkTable, ContentError> {
        let m = &*manifest;
        let slots = (m.refs().max(1) as u64 * 2).next_power_of_two().max(GROUP);
        let index = tempfile::tempfile().map_err(temp_io)?;
        index.set_len(slots * SLOT).map_err(temp_io)?;
        let mut records = BufWriter::with_capacity(1 << 16, tempfile::tempfile().map_err(temp_io)?);
        let mut len = 0usize;
        let mut file = usize::MAX;
        let mut offset = 0u64;
        for (fi, at, c) in m.chunks() {
            if fi != file {
                (file, offset) = (fi, 0);
            }
            let here = offset;
            offset += u64::from(c.size);
            match probe(&index, slots, m, &c.hash).map_err(temp_io)? {
                Probe::Found { first, .. } => {
                    let f = m.chunk_at(first);
                    if f.size != c.size {
                        return Err(ContentError::Invalid(format!(
                            "chunk {} is listed with sizes {} and {}",
                            chunk_name(&c.hash),
                            f.size,
                            c.size
                        )));
                    }
                }
                Probe::Empty(slot) => {
                    let number = u32::try_from(len)
                        .map_err(|_| ContentError::Invalid("more than 2^32 chunks".into()))?;
                    let mut s = [0u8; SLOT as usize];
                    s[..8].copy_from_slice(&prefix_of(&c.hash).to_be_bytes());
                    s[8..12].copy_from_slice(&(number + 1).to_be_bytes());
                    s[12..].copy_from_slice(&at.to_be_bytes());
                    index.write_all_at(&s, slot * SLOT).map_err(temp_io)?;
                    records.write_all(&at.to_be_bytes()).map_err(temp_io)?;
                    records.write_all(&here.to_be_bytes()).map_err(temp_io)?;
                    len += 1;
                }
            }
        }
        let records = records.into_inner().map_err(|e| temp_io(e.into_error()))?;
        Ok(ChunkTable {
            manifest,
            len,
            records,
            index,
            slots,
        })
    }

    /// Looks `hash` up in the index.
    fn probe(&self, hash: &[u8; 32]) -> std::io::Result<Probe> {
        probe(&self.index, self.slots, &self.manifest, hash)
    }

    /// Chunk `i`'s record: where its first reference starts, and that place's offset.
    fn record(&self, i: u32) -> Option<(u32, u64)> {
        if i as usize >= self.len {
            return None;
        }
        let mut b = [0u8; RECORD as usize];
        // A failed read of the table's own file gives no chunk, so whatever would use it is
        // refused rather than trusted.
        self.records
            .read_exact_at(&mut b, u64::from(i) * RECORD)
            .ok()?;
        let mut at = [0u8; 4];
        at.copy_from_slice(&b[..4]);
        let mut off = [0u8; 8];
        off.copy_from_slice(&b[4..]);
        Some((u32::from_be_bytes(at), u64::from_be_bytes(off)))
    }

    /// BLAKE3 of the signed manifest the table was built from.
    pub fn id(&self) -> &[u8; 32] {
        self.manifest.id()
    }

    /// The signed manifest the table was built from.
    pub fn manifest(&self) -> &Arc<SignedManifest> {
        &self.manifest
    }

    /// Distinct chunks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the version has no chunks (only empty files).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunk `i`.
    pub fn get(&self, i: u32) -> Option<ChunkRef> {
        self.record(i).map(|(at, _)| self.manifest.chunk_at(at))
    }

    /// Where chunk `i` first occurs: its file (an index into the manifest's files) and where
    /// its reference starts in the signed bytes.
    pub fn first_ref(&self, i: u32) -> Option<(usize, u32)> {
        let (at, _) = self.record(i)?;
        Some((self.manifest.file_of(at)?, at))
    }

    /// Where chunk `i` first occurs: its file and the offset in that file.
    pub fn first_place(&self, i: u32) -> Option<(usize, u64)> {
        let (at, offset) = self.record(i)?;
        Some((self.manifest.file_of(at)?, offset))
    }

    /// The number of the chunk with this hash.
    pub fn find(&self, hash: &[u8; 32]) -> Option<u32> {
        match self.probe(hash) {
            Ok(Probe::Found { number, .. }) => Some(number),
            _ => None,
        }
    }

    /// Every chunk, by number.
    pub fn iter(&self) -> impl Iterator<Item = ChunkRef> + '_ {
        (0..self.len as u32).map(|i| {
            self.get(i).unwrap_or(ChunkRef {
                hash: [0; 32],
                size: 0,
            })
        })
    }

    /// Walks every reference of the manifest in order, each with its file, the offset it has
    /// in that file, and its chunk number.
    pub fn places(&self) -> impl Iterator<Item = Place> + '_ {
        let m = &*self.manifest;
        let mut at_in_file = 0u64;
        let mut file = usize::MAX;
        let mut next = 0u32;
        m.chunks().map(move |(fi, at, c)| {
            if fi != file {
                (file, at_in_file) = (fi, 0);
            }
            let offset = at_in_file;
            at_in_file += u64::from(c.size);
            // References come in signed-byte order, as the first ones were numbered: the next
            // number's record says whether this is its first place; only repeats are looked up.
            let (number, first) = if self.record(next).is_some_and(|(a, _)| a == at) {
                next += 1;
                (next - 1, true)
            } else {
                match self.probe(&c.hash) {
                    Ok(Probe::Found { number, .. }) => (number, false),
                    _ => (u32::MAX, false),
                }
            };
            Place {
                file: fi,
                offset,
                number,
                first,
            }
        })
    }
}

/// One reference of a manifest, placed (see [`ChunkTable::places`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The file (an index into the manifest's files).
    pub file: usize,
    /// Where in the file.
    pub offset: u64,
    /// The chunk's number.
    pub number: u32,
    /// Whether this is the chunk's first place.
    pub first: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::manifest::{generate_key, Manifest};
    use crate::FileEntry;

    /// Chunk sizes are 1000 + the given number, valid at the smallest average.
    fn manifest(files: &[&[(u8, u32)]]) -> Manifest {
        Manifest {
            game: "g".into(),
            version: "1".into(),
            chunk_avg: crate::cdc::AVG_MIN,
            files: files
                .iter()
                .enumerate()
                .map(|(k, chunks)| FileEntry {
                    path: format!("f{k}"),
                    mode: 0o644,
                    size: chunks.iter().map(|c| u64::from(1000 + c.1)).sum(),
                    chunks: chunks
                        .iter()
                        .map(|&(h, size)| ChunkRef {
                            hash: [h; 32],
                            size: 1000 + size,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn table(files: &[&[(u8, u32)]]) -> Result<(Manifest, ChunkTable), ContentError> {
        let m = manifest(files);
        let key = generate_key();
        // Signed without the checks `sign` makes, as a careless publisher could.
        let mut bytes = m.body();
        let mut msg = b"volley-manifest-v1".to_vec();
        msg.extend_from_slice(&bytes);
        use ed25519_dalek::Signer;
        bytes.extend_from_slice(key.verifying_key().as_bytes());
        bytes.extend_from_slice(&key.sign(&msg).to_bytes());
        let s = SignedManifest::open(bytes, Some(&key.verifying_key()))?;
        assert_eq!(s.to_manifest(), m);
        Ok((m, ChunkTable::new(Arc::new(s))?))
    }

    #[test]
    fn numbers_distinct_chunks_in_first_occurrence_order() {
        let (m, t) = table(&[&[(9, 5), (3, 4), (9, 5)], &[(1, 2), (3, 4), (7, 1)], &[]]).unwrap();
        let order: Vec<u8> = t.iter().map(|c| c.hash[0]).collect();
        assert_eq!(order, [9, 3, 1, 7]);
        assert_eq!(t.len(), 4);
        // The same numbering as a first-seen walk of the manifest.
        let mut seen = std::collections::HashMap::new();
        for c in m.chunks() {
            let n = seen.len() as u32;
            seen.entry(c.hash).or_insert(n);
        }
        for (h, i) in seen {
            assert_eq!(t.find(&h), Some(i));
            assert_eq!(t.get(i).unwrap().hash, h);
        }
        assert_eq!(t.find(&[4; 32]), None);
        assert_eq!(t.get(4), None);
        assert_eq!(t.get(1).unwrap().size, 1004);
        assert_eq!(t.first_ref(2).map(|r| r.0), Some(1));
        assert_eq!(t.first_ref(4), None);
        // Every place: file, offset in it, number, first or not.
        let places: Vec<(usize, u64, u32, bool)> = t
            .places()
            .map(|p| (p.file, p.offset, p.number, p.first))
            .collect();
        assert_eq!(
            places,
            [
                (0, 0, 0, true),
                (0, 1005, 1, true),
                (0, 2009, 0, false),
                (1, 0, 2, true),
                (1, 1002, 1, false),
                (1, 2006, 3, true),
            ]
        );
        let firsts: Vec<_> = (0..5).map(|i| t.first_place(i)).collect();
        assert_eq!(
            firsts,
            [
                Some((0, 0)),
                Some((0, 1005)),
                Some((1, 0)),
                Some((1, 2006)),
                None
            ]
        );
    }

    #[test]
    fn the_table_reads_the_same_once_the_manifest_is_on_disk() {
        let (_, t) = table(&[&[(9, 5), (3, 4), (9, 5)], &[(1, 2), (3, 4), (7, 1)]]).unwrap();
        let chunks: Vec<ChunkRef> = t.iter().collect();
        let places: Vec<Place> = t.places().collect();
        let dir = tempfile::tempdir().unwrap();
        let bytes = t.manifest().to_bytes().unwrap();
        t.manifest().move_to_disk(dir.path()).unwrap();
        assert!(t.manifest().on_disk());
        // An unnamed file: nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(t.manifest().to_bytes().unwrap(), bytes);
        assert_eq!(t.iter().collect::<Vec<_>>(), chunks);
        assert_eq!(t.places().collect::<Vec<_>>(), places);
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(t.find(&c.hash), Some(i as u32));
        }
        assert_eq!(t.find(&[4; 32]), None);
    }

    #[test]
    fn hashes_sharing_their_first_bytes_are_told_apart() {
        let h = |last: u8| {
            let mut h = [1u8; 32];
            h[31] = last;
            h
        };
        let m = Manifest {
            game: "g".into(),
            version: "1".into(),
            chunk_avg: crate::cdc::AVG_MIN,
            files: vec![FileEntry {
                path: "f".into(),
                mode: 0o644,
                size: 3000,
                chunks: [5, 0, 2]
                    .iter()
                    .map(|&l| ChunkRef {
                        hash: h(l),
                        size: 1000,
                    })
                    .collect(),
            }],
        };
        let s = SignedManifest::open(m.sign(&generate_key()).unwrap(), None).unwrap();
        let t = ChunkTable::new(Arc::new(s)).unwrap();
        assert_eq!(t.find(&h(5)), Some(0));
        assert_eq!(t.find(&h(0)), Some(1));
        assert_eq!(t.find(&h(2)), Some(2));
        assert_eq!(t.find(&h(3)), None);
        assert_eq!(t.find(&h(1)), None);
    }

    #[test]
    fn the_index_probes_past_collisions_and_wraps_around() {
        // 600 distinct chunks (1,200 references: each twice) in a 4,096-slot index; 40 of them
        // aimed at the last slot, so their probes run on and wrap to the first.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let hashes: Vec<[u8; 32]> = (0..600)
            .map(|k| {
                let mut h = [0u8; 32];
                for w in h.chunks_mut(8) {
                    w.copy_from_slice(&next().to_le_bytes());
                }
                if k % 15 == 0 {
                    h[6] |= 0x0f;
                    h[7] = 0xff;
                }
                h
            })
            .collect();
        let chunk = |h: &[u8; 32]| ChunkRef {
            hash: *h,
            size: 1000,
        };
        let files: Vec<FileEntry> = (0..2)
            .map(|f| FileEntry {
                path: format!("f{f}"),
                mode: 0o644,
                size: 600 * 1000,
                chunks: if f == 0 {
                    hashes.iter().map(chunk).collect()
                } else {
                    hashes.iter().rev().map(chunk).collect()
                },
            })
            .collect();
        let m = Manifest {
            game: "g".into(),
            version: "1".into(),
            chunk_avg: crate::cdc::AVG_MIN,
            files,
        };
        let s = SignedManifest::open(m.sign(&generate_key()).unwrap(), None).unwrap();
        let t = ChunkTable::new(Arc::new(s)).unwrap();
        assert_eq!(t.len(), 600);
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(t.find(h), Some(i as u32));
            assert_eq!(t.get(i as u32).unwrap().hash, *h);
            assert_eq!(t.first_place(i as u32), Some((0, i as u64 * 1000)));
        }
        let mut absent = hashes[0];
        absent[31] ^= 1;
        assert_eq!(t.find(&absent), None);
        let firsts = t.places().filter(|p| p.first).count();
        assert_eq!(firsts, 600);
        assert!(t.places().all(|p| p.number < 600));
    }

    #[test]
    fn one_hash_with_two_sizes_is_refused() {
        let e = table(&[&[(9, 5)], &[(9, 6)]]).unwrap_err();
        assert!(e.to_string().contains("sizes 1005 and 1006"), "{e}");
        let (_, empty) = table(&[&[]]).unwrap();
        assert!(empty.is_empty());
    }
}
