//! The distinct chunks of one version, numbered in the order they first occur in its manifest
//! (the numbering peers use on the wire), with a lookup by hash.
//!
//! One table is built per fetch and shared by the swarm and the staging area. It keeps the
//! signed manifest it was built from (in memory or moved to disk) and reads each chunk's hash
//! and size from there, so it adds 16 bytes per chunk: where the chunk's first reference
//! starts in the signed bytes, and a slot in an index sorted by hash (the chunk's number and
//! the first 8 bytes of its hash, searched by bisection without reading the manifest).

use std::sync::Arc;

use crate::manifest::SignedManifest;
use crate::{chunk_name, ChunkRef, ContentError};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ChunkTable {
    manifest: Arc<SignedManifest>,
    /// Per chunk number: where its first reference starts in the signed bytes (ascending).
    first: Vec<u32>,
    /// Chunk numbers, sorted by hash.
    by_hash: Vec<u32>,
    /// The first 8 bytes of each hash, in `by_hash` order.
    prefix: Vec<u64>,
}

fn prefix_of(hash: &[u8; 32]) -> u64 {
    u64::from_be_bytes([
        hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
    ])
}

impl ChunkTable {
    /// The table of `manifest`. A manifest that lists one hash with two sizes can never be
    /// installed, and is refused.
    pub fn new(manifest: Arc<SignedManifest>) -> Result<ChunkTable, ContentError> {
        let m = &*manifest;
        // Every reference, sorted by (hash, position): the first of each run of equal hashes
        // is where that chunk first occurs.
        // Sorted as integers first (the hash's top 32 bits, then the position: no reads of
        // the manifest while sorting), then each run of equal top bits by its whole hashes.
        let hash_at = |at: u32| -> [u8; 32] { m.chunk_at(at).hash };
        let mut keys: Vec<u64> = m
            .chunks()
            .map(|(_, at, c)| {
                let top = u32::from_be_bytes([c.hash[0], c.hash[1], c.hash[2], c.hash[3]]);
                (u64::from(top) << 32) | u64::from(at)
            })
            .collect();
        keys.sort_unstable();
        let mut from = 0;
        while from < keys.len() {
            let top = keys[from] >> 32;
            let to = from + keys[from..].partition_point(|&k| k >> 32 == top);
            if to - from > 1 {
                keys[from..to].sort_by_cached_key(|&k| (hash_at(k as u32), k as u32));
            }
            from = to;
        }
        let mut refs: Vec<u32> = keys.iter().map(|&k| k as u32).collect();
        drop(keys);
        let mut prev: Option<ChunkRef> = None;
        let mut bad = None;
        refs.retain(|&at| {
            let c = m.chunk_at(at);
            match prev {
                Some(p) if p.hash == c.hash => {
                    if p.size != c.size && bad.is_none() {
                        bad = Some((c.hash, p.size, c.size));
                    }
                    false
                }
                _ => {
                    prev = Some(c);
                    true
                }
            }
        });
        if let Some((hash, a, b)) = bad {
            return Err(ContentError::Invalid(format!(
                "chunk {} is listed with sizes {a} and {b}",
                chunk_name(&hash)
            )));
        }
        refs.shrink_to_fit();
        // Numbered by first position; `refs` (sorted by hash) becomes the numbers in that order.
        let prefix: Vec<u64> = refs.iter().map(|&at| prefix_of(&hash_at(at))).collect();
        let mut first = refs.clone();
        first.sort_unstable();
        for r in &mut refs {
            *r = first.binary_search(r).map_or(u32::MAX, |k| k as u32);
        }
        Ok(ChunkTable {
            manifest,
            first,
            by_hash: refs,
            prefix,
        })
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
        self.first.len()
    }

    /// Whether the version has no chunks (only empty files).
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Chunk `i`.
    pub fn get(&self, i: u32) -> Option<ChunkRef> {
        self.first
            .get(i as usize)
            .map(|&at| self.manifest.chunk_at(at))
    }

    /// Where chunk `i` first occurs: its file (an index into the manifest's files) and where
    /// its reference starts in the signed bytes.
    pub fn first_ref(&self, i: u32) -> Option<(usize, u32)> {
        let at = *self.first.get(i as usize)?;
        Some((self.manifest.file_of(at)?, at))
    }

    /// The number of the chunk with this hash.
    pub fn find(&self, hash: &[u8; 32]) -> Option<u32> {
        let p = prefix_of(hash);
        let from = self.prefix.partition_point(|&x| x < p);
        // Equal prefixes are rare (and sorted by the rest of the hash): each is checked whole.
        self.prefix[from..]
            .iter()
            .zip(&self.by_hash[from..])
            .take_while(|(&x, _)| x == p)
            .map(|(_, &i)| i)
            .find(|&i| self.get(i).is_some_and(|c| c.hash == *hash))
    }

    /// Every chunk, by number.
    pub fn iter(&self) -> impl Iterator<Item = ChunkRef> + '_ {
        self.first.iter().map(|&at| self.manifest.chunk_at(at))
    }

    /// Walks every reference of the manifest in order, each with its file, the offset it has
    /// in that file, and its chunk number.
    pub fn places(&self) -> impl Iterator<Item = Place> + '_ {
        let m = &*self.manifest;
        let mut at_in_file = 0u64;
        let mut file = usize::MAX;
        let mut next_first = 0usize;
        m.chunks().map(move |(fi, at, c)| {
            if fi != file {
                (file, at_in_file) = (fi, 0);
            }
            let offset = at_in_file;
            at_in_file += u64::from(c.size);
            // References come in signed-byte order, as the first ones were numbered.
            let (number, first) = if self.first.get(next_first) == Some(&at) {
                next_first += 1;
                ((next_first - 1) as u32, true)
            } else {
                (self.find(&c.hash).unwrap_or(u32::MAX), false)
            };
            Place {
                file: fi,
                offset,
                number,
                first,
            }
        })
    }

    /// Per chunk number, the offset of its first place in its file (see
    /// [`ChunkTable::first_ref`] for the file).
    pub fn first_offsets(&self) -> Vec<u64> {
        let mut out = vec![0u64; self.len()];
        for p in self.places().filter(|p| p.first) {
            if let Some(o) = out.get_mut(p.number as usize) {
                *o = p.offset;
            }
        }
        out
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
        assert_eq!(t.first_offsets(), [0, 1005, 0, 2006]);
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
    fn one_hash_with_two_sizes_is_refused() {
        let e = table(&[&[(9, 5)], &[(9, 6)]]).unwrap_err();
        assert!(e.to_string().contains("sizes 1005 and 1006"), "{e}");
        let (_, empty) = table(&[&[]]).unwrap();
        assert!(empty.is_empty());
    }
}
