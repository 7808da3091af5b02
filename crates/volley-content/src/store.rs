//! A directory of chunks, each stored as `<first two hex digits>/<hash hex>`, written to a
//! temporary name and renamed into place only after its hash was checked, so the store never
//! holds a chunk whose bytes differ from its name (unless the disk itself rots; readers verify).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{chunk_name, ContentError};

/// Whether [`ChunkStore::put_many`] can flush the whole file system at once (elsewhere it
/// flushes each file and directory).
const fn flush_all_possible() -> bool {
    cfg!(target_os = "linux")
}

/// The store.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    root: PathBuf,
}

impl ChunkStore {
    /// A store in `root` (created if missing).
    pub fn open(root: &Path) -> Result<ChunkStore, ContentError> {
        fs::create_dir_all(root).map_err(|e| ContentError::io(root, e))?;
        Ok(ChunkStore {
            root: root.to_owned(),
        })
    }

    /// Where a chunk lives.
    pub fn path(&self, hash: &[u8; 32]) -> PathBuf {
        let name = chunk_name(hash);
        self.root.join(&name[..2]).join(name)
    }

    /// Whether the store has the chunk.
    pub fn has(&self, hash: &[u8; 32]) -> bool {
        self.path(hash).is_file()
    }

    /// Stores `data` under `hash` after checking it; `sync` makes it durable before returning.
    pub fn put(&self, hash: &[u8; 32], data: &[u8], sync: bool) -> Result<(), ContentError> {
        if blake3::hash(data).as_bytes() != hash {
            return Err(ContentError::Corrupt(chunk_name(hash)));
        }
        let path = self.path(hash);
        if path.is_file() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| ContentError::io(dir, e))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            chunk_name(hash),
            rand::random::<u64>()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(data)?;
            if sync {
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ContentError::io(&path, e)
        })
    }

    /// Stores many chunks with one flush to disk: every hash is checked before anything is
    /// written (a batch with one bad chunk stores none), the new chunks are written under
    /// temporary names, made durable, renamed into place, and the renames made durable before
    /// this returns. A chunk is never visible under its name before its bytes are on disk, so a
    /// crash at any point leaves only whole chunks (and temporary files, which are not chunks).
    /// Returns the chunks that were new.
    pub fn put_many(&self, chunks: &[crate::batch::Frame<'_>]) -> Result<usize, ContentError> {
        for (hash, data) in chunks {
            if blake3::hash(data).as_bytes() != hash {
                return Err(ContentError::Corrupt(chunk_name(hash)));
            }
        }
        let mut pending: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut renamed = 0;
        let result = self.write_batch(chunks, &mut pending, &mut renamed);
        for (tmp, _) in &pending[renamed..] {
            let _ = fs::remove_file(tmp);
        }
        result.map(|()| pending.len())
    }

    fn write_batch(
        &self,
        chunks: &[crate::batch::Frame<'_>],
        pending: &mut Vec<(PathBuf, PathBuf)>,
        renamed: &mut usize,
    ) -> Result<(), ContentError> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(chunks.len());
        for (hash, data) in chunks {
            if !seen.insert(*hash) {
                continue;
            }
            let path = self.path(hash);
            if path.is_file() {
                continue;
            }
            let dir = path.parent().unwrap_or(&self.root).to_owned();
            fs::create_dir_all(&dir).map_err(|e| ContentError::io(&dir, e))?;
            let tmp = dir.join(format!(
                ".{}.tmp-{}",
                chunk_name(hash),
                rand::random::<u64>()
            ));
            pending.push((tmp.clone(), path));
            let mut f = fs::File::create(&tmp).map_err(|e| ContentError::io(&tmp, e))?;
            f.write_all(data).map_err(|e| ContentError::io(&tmp, e))?;
            if !flush_all_possible() {
                f.sync_all().map_err(|e| ContentError::io(&tmp, e))?;
            }
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        // The bytes first, then the names: a name never points at bytes still in memory.
        self.flush_all()?;
        for (tmp, path) in pending.iter() {
            fs::rename(tmp, path).map_err(|e| ContentError::io(path, e))?;
            *renamed += 1;
        }
        if flush_all_possible() {
            self.flush_all()
        } else {
            for dir in &dirs {
                fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| ContentError::io(dir, e))?;
            }
            Ok(())
        }
    }

    /// Makes everything written to the store's file system durable: one `syncfs` on Linux
    /// (one journal commit for the whole batch, where a flush per file pays one each).
    #[cfg(target_os = "linux")]
    fn flush_all(&self) -> Result<(), ContentError> {
        use std::os::fd::AsRawFd;
        let root = fs::File::open(&self.root).map_err(|e| ContentError::io(&self.root, e))?;
        // SAFETY: `syncfs` only reads the descriptor, which `root` keeps open for the call.
        if unsafe { libc::syncfs(root.as_raw_fd()) } != 0 {
            return Err(ContentError::io(
                &self.root,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn flush_all(&self) -> Result<(), ContentError> {
        Ok(())
    }

    /// A chunk's bytes, verified; `Ok(None)` when absent, `Corrupt` when the bytes on disk no
    /// longer match (the bad copy is removed so it is fetched again).
    pub fn get(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, ContentError> {
        let path = self.path(hash);
        match fs::read(&path) {
            Ok(data) => {
                if blake3::hash(&data).as_bytes() == hash {
                    Ok(Some(data))
                } else {
                    let _ = fs::remove_file(&path);
                    Err(ContentError::Corrupt(chunk_name(hash)))
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ContentError::io(&path, e)),
        }
    }

    /// The unverified bytes (for serving: the receiver verifies).
    pub fn read_raw(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, ContentError> {
        let path = self.path(hash);
        match fs::read(&path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ContentError::io(&path, e)),
        }
    }

    /// Chunks stored.
    pub fn count(&self) -> usize {
        let Ok(dirs) = fs::read_dir(&self.root) else {
            return 0;
        };
        dirs.flatten()
            .filter_map(|d| fs::read_dir(d.path()).ok())
            .map(|files| {
                files
                    .flatten()
                    .filter(|f| !f.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn files_under(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for d in fs::read_dir(dir).unwrap().flatten() {
            for f in fs::read_dir(d.path()).unwrap().flatten() {
                out.push(f.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_batch_stores_whole_chunks_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let data: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 + i as usize]).collect();
        let hash = |d: &[u8]| *blake3::hash(d).as_bytes();
        let mut batch: Vec<([u8; 32], &[u8])> = data.iter().map(|d| (hash(d), &d[..])).collect();
        // A chunk listed twice is stored once.
        batch.push(batch[1]);
        store.put(&batch[0].0, batch[0].1, true).unwrap();
        assert_eq!(store.put_many(&batch).unwrap(), 4);
        for (h, d) in &batch {
            assert_eq!(store.get(h).unwrap().as_deref(), Some(*d));
        }
        assert_eq!(store.count(), 5);
        // Again: nothing new.
        assert_eq!(store.put_many(&batch).unwrap(), 0);

        // One bad chunk among good ones: refused by name, none of them stored.
        let fresh: Vec<Vec<u8>> = (10..13u8).map(|i| vec![i; 700]).collect();
        let mut bad: Vec<([u8; 32], &[u8])> = fresh.iter().map(|d| (hash(d), &d[..])).collect();
        bad[1].1 = &fresh[2];
        match store.put_many(&bad) {
            Err(ContentError::Corrupt(name)) => assert_eq!(name, chunk_name(&bad[1].0)),
            other => panic!("expected a corrupt chunk, got {other:?}"),
        }
        assert!(bad.iter().all(|(h, _)| !store.has(h)));
        assert_eq!(store.count(), 5);
        // No temporary file is left behind, in either case.
        assert!(files_under(dir.path()).iter().all(|f| !f.starts_with('.')));
    }

    #[test]
    fn a_failed_batch_write_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let a = vec![1u8; 100];
        let b = vec![2u8; 100];
        let (ha, hb) = (*blake3::hash(&a).as_bytes(), *blake3::hash(&b).as_bytes());
        // The second chunk's directory is taken by a file: its write fails after the first
        // chunk's temporary file was written.
        let blocker = store.path(&hb).parent().unwrap().to_owned();
        assert_ne!(
            store.path(&ha).parent(),
            Some(blocker.as_path()),
            "two fan-out directories"
        );
        fs::write(&blocker, b"in the way").unwrap();
        let err = store.put_many(&[(ha, &a), (hb, &b)]).unwrap_err();
        assert!(matches!(err, ContentError::Io { .. }), "{err}");
        assert!(!store.has(&ha) && !store.has(&hb));
        let first = store.path(&ha).parent().unwrap().to_owned();
        assert_eq!(
            fs::read_dir(first).unwrap().count(),
            0,
            "temporary file removed"
        );
    }
}
