//! A directory of chunks, each stored as `<first two hex digits>/<hash hex>`, written to a
//! temporary name and renamed into place only after its hash was checked, so the store never
//! holds a chunk whose bytes differ from its name (unless the disk itself rots; readers verify).
//! Nodes used it as their chunk store before [`crate::pack`]; a node still reads one it finds.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{chunk_name, ContentError};

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
            remove_or_warn(&tmp, "a temporary file of a failed write");
            ContentError::io(&path, e)
        })
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
                    remove_or_warn(&path, "a corrupt chunk");
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

    /// The hashes of every chunk stored (files with other names are skipped).
    pub fn hashes(&self) -> Vec<[u8; 32]> {
        let Some(dirs) = self.read_root() else {
            return Vec::new();
        };
        dirs.flatten()
            .filter_map(|d| fs::read_dir(d.path()).ok())
            .flat_map(|files| {
                files
                    .flatten()
                    .filter_map(|f| crate::parse_chunk_name(&f.file_name().to_string_lossy()))
            })
            .collect()
    }

    /// Removes a chunk; returns the bytes it held (0 when it was not there).
    pub fn remove(&self, hash: &[u8; 32]) -> Result<u64, ContentError> {
        let path = self.path(hash);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(ContentError::io(&path, e)),
        };
        match fs::remove_file(&path) {
            Ok(()) => Ok(len),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(ContentError::io(&path, e)),
        }
    }

    /// The store's folder listing; `None` (logged unless the folder is gone) when it cannot be
    /// read, which the callers take as an empty store.
    fn read_root(&self) -> Option<fs::ReadDir> {
        match fs::read_dir(&self.root) {
            Ok(dirs) => Some(dirs),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(
                    folder = %self.root.display(),
                    %error,
                    "could not list the chunk store; taken as empty"
                );
                None
            }
        }
    }

    /// Chunks stored.
    pub fn count(&self) -> usize {
        let Some(dirs) = self.read_root() else {
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

/// Removes `path` (`what` names it in the log); a failure is logged, since the caller already
/// has an error or a verdict to return and the file only takes space until removed by hand.
fn remove_or_warn(path: &Path, what: &str) {
    if let Err(error) = fs::remove_file(path) {
        tracing::warn!(file = %path.display(), %error, "could not remove {what}");
    }
}
