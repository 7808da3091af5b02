//! A build directory → a manifest and its chunks.

use std::fs;
use std::path::Path;

use crate::cdc::{chunk_reader, Params};
use crate::manifest::{check_path, ChunkRef, FileEntry, Manifest};
use crate::ContentError;

/// Cuts every regular file under `dir` into chunks (sorted by path; symlinks and special files
/// are refused), calling `sink` with each chunk's hash and bytes, and returns the manifest.
/// Memory stays at a few chunks whatever the build size.
pub fn chunk_dir(
    dir: &Path,
    game: &str,
    version: &str,
    chunk_avg: u32,
    mut sink: impl FnMut(&[u8; 32], &[u8]) -> Result<(), ContentError>,
) -> Result<Manifest, ContentError> {
    let p = Params::new(chunk_avg)
        .ok_or_else(|| ContentError::Invalid(format!("bad chunk average {chunk_avg}")))?;
    let mut paths = Vec::new();
    walk(dir, dir, &mut paths)?;
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for rel in paths {
        check_path(&rel)?;
        let full = dir.join(&rel);
        let f = fs::File::open(&full).map_err(|e| ContentError::io(&full, e))?;
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            f.metadata()
                .map_err(|e| ContentError::io(&full, e))?
                .permissions()
                .mode()
                & 0o777
        };
        let mut chunks = Vec::new();
        let size = chunk_reader(std::io::BufReader::new(f), &p, |c| {
            let hash = *blake3::hash(c).as_bytes();
            sink(&hash, c)?;
            chunks.push(ChunkRef {
                hash,
                size: c.len() as u32,
            });
            Ok::<(), ContentError>(())
        })
        .map_err(|e| match e {
            ContentError::Io { source, .. } => ContentError::io(&full, source),
            other => other,
        })?;
        files.push(FileEntry {
            path: rel,
            mode,
            size,
            chunks,
        });
    }
    let m = Manifest {
        game: game.to_owned(),
        version: version.to_owned(),
        chunk_avg,
        files,
    };
    m.validate()?;
    Ok(m)
}

impl From<std::io::Error> for ContentError {
    fn from(e: std::io::Error) -> Self {
        ContentError::Io {
            path: String::new(),
            source: e,
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), ContentError> {
    for entry in fs::read_dir(dir).map_err(|e| ContentError::io(dir, e))? {
        let entry = entry.map_err(|e| ContentError::io(dir, e))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| ContentError::io(&path, e))?;
        if ft.is_dir() {
            if entry.file_name() == ".volley" {
                continue; // an installer's own state, if publishing from an install
            }
            walk(root, &path, out)?;
        } else if ft.is_file() {
            let rel = path
                .strip_prefix(root)
                .ok()
                .and_then(|r| r.to_str())
                .ok_or_else(|| {
                    ContentError::Invalid(format!("{}: not a UTF-8 path", path.display()))
                })?;
            out.push(rel.to_owned());
        } else {
            return Err(ContentError::Invalid(format!(
                "{}: only regular files and directories can be published",
                path.display()
            )));
        }
    }
    Ok(())
}
