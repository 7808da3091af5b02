//! A build directory → a manifest and its chunks.

use std::fs;
use std::path::Path;

use crate::cdc::{chunk_files, Params};
use crate::manifest::{check_path, ChunkRef, FileEntry, Manifest};
use crate::ContentError;

/// Files chunked at once (each open while its group is chunked).
const GROUP: usize = 256;

/// Cuts every regular file under `dir` into chunks (sorted by path; symlinks and special files
/// are refused) on every core ([`crate::cdc::chunk_files`]: the same chunks as one pass) and
/// returns the manifest. Memory stays at a few chunks per core plus the chunk list.
pub fn chunk_dir(
    dir: &Path,
    game: &str,
    version: &str,
    chunk_avg: u32,
) -> Result<Manifest, ContentError> {
    let p = Params::new(chunk_avg)
        .ok_or_else(|| ContentError::Invalid(format!("bad chunk average {chunk_avg}")))?;
    let threads = crate::cores();
    let mut paths = Vec::new();
    walk(dir, dir, &mut paths)?;
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for group in paths.chunks(GROUP) {
        let mut open = Vec::with_capacity(group.len());
        let mut modes = Vec::with_capacity(group.len());
        for rel in group {
            check_path(rel)?;
            let full = dir.join(rel);
            let f = fs::File::open(&full).map_err(|e| ContentError::io(&full, e))?;
            let meta = f.metadata().map_err(|e| ContentError::io(&full, e))?;
            use std::os::unix::fs::PermissionsExt;
            modes.push(meta.permissions().mode() & 0o777);
            open.push((f, meta.len()));
        }
        let cuts = chunk_files(&open, &p, threads).map_err(|(k, e)| {
            let at = group.get(k).map_or_else(String::new, |r| r.clone());
            ContentError::io(&dir.join(at), e)
        })?;
        for ((rel, mode), cuts) in group.iter().zip(modes).zip(cuts) {
            files.push(FileEntry {
                path: rel.clone(),
                mode,
                size: cuts.iter().map(|c| u64::from(c.len)).sum(),
                chunks: cuts
                    .iter()
                    .map(|c| ChunkRef {
                        hash: c.hash,
                        size: c.len,
                    })
                    .collect(),
            });
        }
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

/// Reads the chunks of `m` (published from `dir`) that `wanted` selects, each once, file by
/// file in order, and hands each to `sink` after checking it still hashes to what the manifest
/// says: a build changed since it was chunked is an error, never a mismatched upload.
pub fn read_chunks(
    dir: &Path,
    m: &Manifest,
    mut wanted: impl FnMut(&ChunkRef) -> bool,
    mut sink: impl FnMut(ChunkRef, Vec<u8>) -> Result<(), ContentError>,
) -> Result<(), ContentError> {
    use std::os::unix::fs::FileExt;
    for f in &m.files {
        let full = dir.join(&f.path);
        let mut file: Option<fs::File> = None;
        let mut at = 0u64;
        for c in &f.chunks {
            if wanted(c) {
                let h = match &file {
                    Some(h) => h,
                    None => {
                        file.insert(fs::File::open(&full).map_err(|e| ContentError::io(&full, e))?)
                    }
                };
                let mut buf = vec![0u8; c.size as usize];
                let same = h.read_exact_at(&mut buf, at).is_ok()
                    && blake3::hash(&buf).as_bytes() == &c.hash;
                if !same {
                    return Err(ContentError::Invalid(format!(
                        "the build changed while it was being published: {} at offset {at}",
                        full.display()
                    )));
                }
                sink(*c, buf)?;
            }
            at += u64::from(c.size);
        }
    }
    Ok(())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    #[test]
    fn chunks_are_read_back_by_offset_and_a_changed_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut big = vec![0u8; 300_000];
        rng.fill_bytes(&mut big);
        fs::create_dir_all(dir.path().join("data")).unwrap();
        fs::write(dir.path().join("data/big.bin"), &big).unwrap();
        fs::write(dir.path().join("a.txt"), b"hello").unwrap();
        fs::write(dir.path().join("empty"), b"").unwrap();
        let m = chunk_dir(dir.path(), "g", "1", 4096).unwrap();
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "data/big.bin", "empty"]);
        assert!(m.files[1].chunks.len() > 20);
        // Every chunk read back by its offset is the bytes it names, in file order.
        let mut back = Vec::new();
        read_chunks(
            dir.path(),
            &m,
            |_| true,
            |c, data| {
                assert_eq!(blake3::hash(&data).as_bytes(), &c.hash);
                back.extend_from_slice(&data);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(&back[..5], b"hello");
        assert_eq!(&back[5..], &big[..]);
        // One byte of the build changes after it was chunked: refused, naming the file.
        big[200_000] ^= 1;
        fs::write(dir.path().join("data/big.bin"), &big).unwrap();
        let e = read_chunks(dir.path(), &m, |_| true, |_, _| Ok(())).unwrap_err();
        assert!(
            e.to_string()
                .contains("changed while it was being published"),
            "{e}"
        );
        assert!(e.to_string().contains("big.bin"), "{e}");
        // A truncated file too.
        fs::write(dir.path().join("data/big.bin"), &big[..1000]).unwrap();
        assert!(read_chunks(dir.path(), &m, |_| true, |_, _| Ok(())).is_err());
    }
}
