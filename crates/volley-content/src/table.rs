//! The distinct chunks of one version, numbered in the order they first occur in its manifest
//! (the numbering peers use on the wire), with each one's hash and size and a lookup by hash.
//!
//! One table is built per fetch and shared by the swarm and the staging area: 40 bytes per
//! chunk (hash, size, and a slot in an index sorted by hash, searched by bisection), where a
//! hash map per user cost several times that.

use crate::manifest::Manifest;
use crate::{chunk_name, ChunkRef, ContentError};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ChunkTable {
    id: [u8; 32],
    hashes: Vec<[u8; 32]>,
    sizes: Vec<u32>,
    /// Chunk numbers, sorted by hash.
    by_hash: Vec<u32>,
}

impl ChunkTable {
    /// The table of `manifest`, whose signed bytes are `signed`. A manifest that lists one hash
    /// with two sizes can never be installed, and is refused.
    pub fn new(manifest: &Manifest, signed: &[u8]) -> Result<ChunkTable, ContentError> {
        let all: Vec<&ChunkRef> = manifest.chunks().collect();
        // Sorted by (hash, position): the first of each run of equal hashes is where that
        // chunk first occurs.
        let mut order: Vec<u32> = (0..all.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            all[a as usize]
                .hash
                .cmp(&all[b as usize].hash)
                .then(a.cmp(&b))
        });
        let mut first = vec![false; all.len()];
        let mut prev: Option<&ChunkRef> = None;
        for &k in &order {
            let c = all[k as usize];
            match prev {
                Some(p) if p.hash == c.hash => {
                    if p.size != c.size {
                        return Err(ContentError::Invalid(format!(
                            "chunk {} is listed with sizes {} and {}",
                            chunk_name(&c.hash),
                            p.size,
                            c.size
                        )));
                    }
                }
                _ => {
                    first[k as usize] = true;
                    prev = Some(c);
                }
            }
        }
        drop(order);
        let n = first.iter().filter(|&&f| f).count();
        let mut hashes = Vec::with_capacity(n);
        let mut sizes = Vec::with_capacity(n);
        for (c, _) in all.iter().zip(&first).filter(|(_, &f)| f) {
            hashes.push(c.hash);
            sizes.push(c.size);
        }
        let mut by_hash: Vec<u32> = (0..n as u32).collect();
        by_hash.sort_unstable_by(|&a, &b| hashes[a as usize].cmp(&hashes[b as usize]));
        Ok(ChunkTable {
            id: *blake3::hash(signed).as_bytes(),
            hashes,
            sizes,
            by_hash,
        })
    }

    /// BLAKE3 of the signed manifest the table was built from.
    pub fn id(&self) -> &[u8; 32] {
        &self.id
    }

    /// Distinct chunks.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the version has no chunks (only empty files).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Chunk `i`.
    pub fn get(&self, i: u32) -> Option<ChunkRef> {
        let i = i as usize;
        Some(ChunkRef {
            hash: *self.hashes.get(i)?,
            size: *self.sizes.get(i)?,
        })
    }

    /// The number of the chunk with this hash.
    pub fn find(&self, hash: &[u8; 32]) -> Option<u32> {
        self.by_hash
            .binary_search_by(|&i| self.hashes[i as usize].cmp(hash))
            .ok()
            .map(|k| self.by_hash[k])
    }

    /// Every chunk, by number.
    pub fn iter(&self) -> impl Iterator<Item = ChunkRef> + '_ {
        self.hashes
            .iter()
            .zip(&self.sizes)
            .map(|(&hash, &size)| ChunkRef { hash, size })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::FileEntry;

    fn manifest(files: &[&[(u8, u32)]]) -> Manifest {
        Manifest {
            game: "g".into(),
            version: "1".into(),
            chunk_avg: 1 << 16,
            files: files
                .iter()
                .enumerate()
                .map(|(k, chunks)| FileEntry {
                    path: format!("f{k}"),
                    mode: 0o644,
                    size: chunks.iter().map(|c| u64::from(c.1)).sum(),
                    chunks: chunks
                        .iter()
                        .map(|&(h, size)| ChunkRef {
                            hash: [h; 32],
                            size,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn numbers_distinct_chunks_in_first_occurrence_order() {
        let m = manifest(&[&[(9, 5), (3, 4), (9, 5)], &[(1, 2), (3, 4), (7, 1)]]);
        let t = ChunkTable::new(&m, b"signed").unwrap();
        assert_eq!(t.id(), blake3::hash(b"signed").as_bytes());
        let order: Vec<u8> = t.iter().map(|c| c.hash[0]).collect();
        assert_eq!(order, [9, 3, 1, 7]);
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
        assert_eq!(t.get(1).unwrap().size, 4);
    }

    #[test]
    fn one_hash_with_two_sizes_is_refused() {
        let m = manifest(&[&[(9, 5)], &[(9, 6)]]);
        let e = ChunkTable::new(&m, b"s").unwrap_err();
        assert!(e.to_string().contains("sizes 5 and 6"), "{e}");
        let empty = ChunkTable::new(&manifest(&[&[]]), b"s").unwrap();
        assert!(empty.is_empty());
    }
}
