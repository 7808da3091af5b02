//! Chunks uploaded many to a request: the body of `POST /v1/content/{game}/chunks` is a run of
//! frames, each a chunk's 32-byte BLAKE3 hash, its length (4 bytes, big-endian) and its bytes.
//! One request per chunk, each made durable on its own, bound a publish by the disk's flush
//! latency; a batch is checked whole, then appended to the origin's pack store and made durable
//! together (`crate::pack`).

use crate::ContentError;

/// Bytes before each chunk: its hash and length.
pub const FRAME_HEADER: usize = 36;
/// Most chunks in one batch (each is a file and a rename on the node).
pub const CHUNKS_MAX: usize = 1024;
/// Largest batch body a node accepts.
pub const BODY_MAX: usize = 64 << 20;

/// A chunk in a batch: its hash (as sent, not yet checked) and its bytes.
pub type Frame<'a> = ([u8; 32], &'a [u8]);

/// Appends one chunk's frame to `body`.
pub fn push(body: &mut Vec<u8>, hash: &[u8; 32], data: &[u8]) {
    body.extend_from_slice(hash);
    // A chunk is at most a few MiB (the decoder refuses more than `chunk_max`), far below 4 GiB.
    body.extend_from_slice(&(data.len() as u32).to_be_bytes());
    body.extend_from_slice(data);
}

/// The chunks of a batch body, in order, each no longer than `chunk_max`. The hashes are not
/// checked here (the store checks them before it writes anything).
pub fn decode(body: &[u8], chunk_max: usize) -> Result<Vec<Frame<'_>>, ContentError> {
    let bad = |why: String| ContentError::Invalid(format!("chunk batch: {why}"));
    if body.is_empty() {
        return Err(bad("the body holds no chunk".into()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let i = out.len();
        if i == CHUNKS_MAX {
            return Err(bad(format!("more than {CHUNKS_MAX} chunks")));
        }
        let Some((head, tail)) = rest.split_first_chunk::<FRAME_HEADER>() else {
            return Err(bad(format!(
                "chunk {i} is cut short: {} of its {FRAME_HEADER} header bytes",
                rest.len()
            )));
        };
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&head[..32]);
        let len = u32::from_be_bytes([head[32], head[33], head[34], head[35]]) as usize;
        if len > chunk_max {
            return Err(bad(format!(
                "chunk {i} is {len} bytes, over the {chunk_max}-byte limit"
            )));
        }
        if tail.len() < len {
            return Err(bad(format!(
                "chunk {i} is cut short: {} of its {len} bytes",
                tail.len()
            )));
        }
        let (data, next) = tail.split_at(len);
        out.push((hash, data));
        rest = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_bodies_are_named() {
        let a = vec![7u8; 1000];
        let b: Vec<u8> = Vec::new();
        let mut body = Vec::new();
        push(&mut body, &[1; 32], &a);
        push(&mut body, &[2; 32], &b);
        let got = decode(&body, 1000).unwrap();
        assert_eq!(got, vec![([1; 32], &a[..]), ([2; 32], &b[..])]);
        let err = |body: &[u8], max: usize| decode(body, max).unwrap_err().to_string();
        assert!(err(&[], 1000).contains("no chunk"));
        assert!(err(&body, 999).contains("chunk 0 is 1000 bytes, over the 999-byte limit"));
        assert!(err(&body[..body.len() - 1], 1000).contains("chunk 1 is cut short: 35 of its 36"));
        assert!(err(&body[..500], 1000).contains("chunk 0 is cut short: 464 of its 1000 bytes"));
        let mut many = Vec::new();
        for i in 0..=CHUNKS_MAX {
            push(&mut many, &[(i % 251) as u8; 32], b"x");
        }
        assert!(err(&many, 10).contains("more than 1024 chunks"));
        many.truncate(CHUNKS_MAX * (FRAME_HEADER + 1));
        assert_eq!(decode(&many, 10).unwrap().len(), CHUNKS_MAX);
    }
}
