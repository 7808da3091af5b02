//! Game builds as content-defined chunks.
//!
//! - [`cdc`]: FastCDC chunking; [`manifest`]: signed build manifests.
//! - [`publish`]: a build directory → manifest + chunks.
//! - [`pack`]: the origin's chunk store (append-only packs and index); [`store`]: a directory
//!   of chunks named by their BLAKE3 hash (the older origin store, still read); [`batch`]: many
//!   chunks to one upload.
//! - [`staging`]: the version being installed, each verified chunk written in place.
//! - [`tracker`]: which players hold which version (the node answers announces with peers).
//! - [`install`]: a manifest → an install directory, reusing every chunk already on disk
//!   (the installed version's, or any found by re-cutting local files),
//!   fetching the rest from a [`install::ChunkSource`], verifying each, writing the new version
//!   beside the old and swapping it in with renames, so a crash leaves one whole version.
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod batch;
pub mod cdc;
pub mod install;
mod local;
pub mod manifest;
pub mod pace;
pub mod pack;
pub mod picker;
pub mod publish;
pub mod staging;
pub mod store;
pub mod table;
pub mod tracker;
pub mod wire;

pub use manifest::{ChunkRef, FileEntry, Manifest};

/// What can go wrong with content.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A file system operation failed (disk full, permissions...).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The manifest's signature is wrong or not from the trusted publisher.
    #[error("manifest signature: {0}")]
    BadSignature(String),
    /// A manifest, name or path breaks a rule.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A chunk's bytes do not hash to its name.
    #[error("chunk {0} failed verification")]
    Corrupt(String),
    /// A source could not deliver a chunk.
    #[error("fetch: {0}")]
    Fetch(String),
}

impl ContentError {
    /// An I/O error with the path it concerns.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ContentError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A chunk's bytes, checked against its reference: only [`Verified::check`] makes one, so
/// whoever holds one need not hash the bytes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    chunk: ChunkRef,
    data: bytes::Bytes,
}

impl Verified {
    /// The bytes, if they have the chunk's size and hash; otherwise they come back.
    pub fn check(chunk: ChunkRef, data: impl Into<bytes::Bytes>) -> Result<Verified, bytes::Bytes> {
        let data = data.into();
        if data.len() == chunk.size as usize && blake3::hash(&data).as_bytes() == &chunk.hash {
            Ok(Verified { chunk, data })
        } else {
            Err(data)
        }
    }

    /// Which chunk.
    pub fn chunk(&self) -> ChunkRef {
        self.chunk
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Its bytes, shared (cloning them does not copy).
    pub fn shared(&self) -> bytes::Bytes {
        self.data.clone()
    }
}

/// Runs `work` on `threads` threads (this one included, at least one, at most `tasks`), each
/// taking tasks from a shared queue until it is empty.
pub(crate) fn on_threads(threads: usize, tasks: usize, work: impl Fn() + Sync) {
    let threads = threads.clamp(1, tasks.max(1));
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(&work);
        }
        work();
    });
}

/// Threads for work spread over every core.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A chunk's name: its BLAKE3 hash in hex.
pub fn chunk_name(hash: &[u8; 32]) -> String {
    hex::encode(hash)
}

/// Parses a chunk name.
pub fn parse_chunk_name(s: &str) -> Option<[u8; 32]> {
    let raw = hex::decode(s).ok()?;
    <[u8; 32]>::try_from(raw).ok()
}
