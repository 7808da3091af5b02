//! The installer's download cache: one append-only file of records
//! `[BLAKE3 hash 32][length u32 LE][bytes]`.
//!
//! A chunk is appended only after its hash was checked, and reopening the pack re-verifies
//! every record and cuts the file after the last whole, correct one, so a fetch killed at any
//! point (mid-record included) resumes with exactly the chunks it had verified. One file
//! instead of one per chunk: no create, rename and unlink per chunk on the download path.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::{chunk_name, ContentError};

const HEADER: u64 = 36;
/// Largest record accepted when reopening (a chunk is at most 4× the largest average).
const RECORD_MAX: u32 = 64 << 20;

#[derive(Debug)]
struct State {
    index: HashMap<[u8; 32], (u64, u32)>,
    end: u64,
}

/// The pack.
#[derive(Debug)]
pub struct PackCache {
    path: PathBuf,
    file: File,
    state: Mutex<State>,
}

impl PackCache {
    /// Opens (or creates) the pack in directory `dir`, keeping every whole record whose bytes
    /// hash to its name and cutting the file after the last one.
    pub fn open(dir: &Path) -> Result<PackCache, ContentError> {
        fs::create_dir_all(dir).map_err(|e| ContentError::io(dir, e))?;
        let path = dir.join("pack");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| ContentError::io(&path, e))?;
        let mut index = HashMap::new();
        let mut end = 0u64;
        {
            let mut r = BufReader::with_capacity(1 << 20, &file);
            let mut head = [0u8; HEADER as usize];
            let mut buf = Vec::new();
            while r.read_exact(&mut head).is_ok() {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&head[..32]);
                let len = u32::from_le_bytes([head[32], head[33], head[34], head[35]]);
                if len > RECORD_MAX {
                    break;
                }
                buf.resize(len as usize, 0);
                if r.read_exact(&mut buf).is_err() || blake3::hash(&buf).as_bytes() != &hash {
                    break;
                }
                index.entry(hash).or_insert((end + HEADER, len));
                end += HEADER + u64::from(len);
            }
        }
        file.set_len(end).map_err(|e| ContentError::io(&path, e))?;
        Ok(PackCache {
            path,
            file,
            state: Mutex::new(State { index, end }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the pack holds the chunk.
    pub fn has(&self, hash: &[u8; 32]) -> bool {
        self.state().index.contains_key(hash)
    }

    /// Chunks held.
    pub fn count(&self) -> usize {
        self.state().index.len()
    }

    /// Appends `data` under `hash` after checking it.
    pub fn put(&self, hash: &[u8; 32], data: &[u8]) -> Result<(), ContentError> {
        if blake3::hash(data).as_bytes() != hash {
            return Err(ContentError::Corrupt(chunk_name(hash)));
        }
        let len = u32::try_from(data.len())
            .ok()
            .filter(|&l| l <= RECORD_MAX)
            .ok_or_else(|| ContentError::Invalid("chunk too large for the cache".into()))?;
        let mut st = self.state();
        if st.index.contains_key(hash) {
            return Ok(());
        }
        let mut rec = Vec::with_capacity(HEADER as usize + data.len());
        rec.extend_from_slice(hash);
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(data);
        let at = st.end;
        if let Err(e) = self.file.write_all_at(&rec, at) {
            // Leave no partial record behind (a full disk, say).
            let _ = self.file.set_len(at);
            return Err(ContentError::io(&self.path, e));
        }
        st.end = at + rec.len() as u64;
        st.index.insert(*hash, (at + HEADER, len));
        Ok(())
    }

    /// A chunk's bytes, verified; `Ok(None)` when absent or when the bytes on disk no longer
    /// match (the record is forgotten, so the chunk is fetched again).
    pub fn get(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, ContentError> {
        let Some((at, len)) = self.state().index.get(hash).copied() else {
            return Ok(None);
        };
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, at)
            .map_err(|e| ContentError::io(&self.path, e))?;
        if blake3::hash(&buf).as_bytes() == hash {
            Ok(Some(buf))
        } else {
            self.state().index.remove(hash);
            Ok(None)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn records_survive_reopening_and_a_torn_or_rotten_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let chunks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let hashes: Vec<[u8; 32]> = chunks.iter().map(|c| *blake3::hash(c).as_bytes()).collect();
        {
            let p = PackCache::open(dir.path()).unwrap();
            for (c, h) in chunks.iter().zip(&hashes).take(3) {
                p.put(h, c).unwrap();
            }
            p.put(&hashes[0], &chunks[0]).unwrap(); // once only
            assert!(matches!(
                p.put(&hashes[3], &chunks[0]),
                Err(ContentError::Corrupt(_))
            ));
            assert_eq!(p.count(), 3);
            assert_eq!(p.get(&hashes[1]).unwrap().unwrap(), chunks[1]);
            assert_eq!(p.get(&hashes[3]).unwrap(), None);
        }
        // A torn record at the end (a kill mid-write).
        let path = dir.path().join("pack");
        let whole = fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&hashes[3]).unwrap();
        f.write_all(&5000u32.to_le_bytes()).unwrap();
        f.write_all(&[3; 100]).unwrap();
        drop(f);
        let p = PackCache::open(dir.path()).unwrap();
        assert_eq!(p.count(), 3);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            whole,
            "the torn tail is cut"
        );
        p.put(&hashes[3], &chunks[3]).unwrap();
        drop(p);
        // A flipped byte in the second record: it and everything after are dropped.
        let mut bytes = fs::read(&path).unwrap();
        let second = (HEADER as usize + 1000) + HEADER as usize + 10;
        bytes[second] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let p = PackCache::open(dir.path()).unwrap();
        assert_eq!(p.count(), 1);
        assert!(p.has(&hashes[0]) && !p.has(&hashes[1]));
    }
}
