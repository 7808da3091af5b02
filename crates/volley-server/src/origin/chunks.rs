//! Chunks: uploads (one or a batch, each flushed once), reads (pulled from a peer node when
//! missing here), and the "which of these do you lack" question a publisher asks.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use volley_content::{chunk_name, parse_chunk_name};
use volley_proto::api::{ChunkBatchReply, ChunkList};

use super::{blocking, Origin, OriginError, CHUNK_BODY_MAX};

/// Parses a chunk's name (its hash in hex).
pub(crate) fn hash_param(s: &str) -> Result<[u8; 32], OriginError> {
    parse_chunk_name(s)
        .ok_or_else(|| OriginError::bad("a chunk is named by its 64-hex-digit BLAKE3 hash"))
}

fn no_chunk(hash: &[u8; 32]) -> OriginError {
    OriginError::NotFound(format!("no chunk {}", chunk_name(hash)))
}

impl Origin {
    /// Stores one chunk, checked against its name.
    pub(crate) async fn put_chunk(
        self: &Arc<Self>,
        game: &str,
        hash: &str,
        body: bytes::Bytes,
    ) -> Result<(), OriginError> {
        let hash = hash_param(hash)?;
        let s = self.writable_store(game).await?;
        blocking(move || Ok(s.put_many(&[(hash, &body)]).map(|_| ())?)).await
    }

    /// Stores many chunks with one flush to disk. The batch is refused whole, before anything
    /// is written, when a frame is malformed or a chunk does not hash to its name.
    pub(crate) async fn put_chunks(
        self: &Arc<Self>,
        game: &str,
        body: bytes::Bytes,
    ) -> Result<ChunkBatchReply, OriginError> {
        let s = self.writable_store(game).await?;
        blocking(move || {
            let chunks = volley_content::batch::decode(&body, CHUNK_BODY_MAX)?;
            let stored = s.put_many(&chunks)?;
            Ok(ChunkBatchReply {
                chunks: chunks.len() as u64,
                stored: stored as u64,
            })
        })
        .await
    }

    /// A chunk's bytes, at the origin's upload pace. A chunk this node lacks is pulled from
    /// another node of the cluster (unless this request is itself a pull), checked against its
    /// name, served and kept.
    pub(crate) async fn get_chunk(
        self: &Arc<Self>,
        game: &str,
        hash: &str,
        is_pull: bool,
    ) -> Result<Vec<u8>, OriginError> {
        let hash = hash_param(hash)?;
        let local = match self.store(game, false).await? {
            Some(s) => blocking(move || Ok(s.read_raw(&hash)?)).await?,
            None => None,
        };
        let data = match local {
            Some(data) => data,
            None => {
                let path = format!("/v1/content/{game}/chunks/{}", chunk_name(&hash));
                let verified = |b: &[u8]| blake3::hash(b).as_bytes() == &hash;
                let data = self
                    .pull(is_pull, &path, CHUNK_BODY_MAX, verified)
                    .await
                    .ok_or_else(|| no_chunk(&hash))?;
                self.keep_later(game, hash, data.clone());
                data
            }
        };
        self.pace.wait(data.len() as u64).await;
        self.metrics
            .content_chunks_served
            .fetch_add(1, Ordering::Relaxed);
        self.metrics
            .content_bytes_served
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }

    /// Which of `chunks` this origin lacks. Those present are held: the publisher will not
    /// upload them, so a collection must not drop them before its manifest arrives.
    pub(crate) async fn missing(
        self: &Arc<Self>,
        game: &str,
        chunks: &[String],
    ) -> Result<ChunkList, OriginError> {
        let hashes = chunks
            .iter()
            .map(|c| hash_param(c))
            .collect::<Result<Vec<_>, _>>()?;
        let s = self.writable_store(game).await?;
        let missing =
            blocking(move || Ok(s.hold(&hashes).into_iter().map(chunk_name).collect())).await?;
        Ok(ChunkList { chunks: missing })
    }
}
