//! Build manifests: which files a version has, their modes and sizes, and the chunks (BLAKE3
//! hash and size) each is made of, signed with the publisher's ed25519 key.
//!
//! Wire form: `"VLYM"`, format version 1, the body (game, version, average chunk size, files),
//! then the publisher's public key (32 bytes) and an ed25519 signature (64 bytes) over
//! `"volley-manifest-v1" || body`. Decoding checks the signature against the key the player
//! trusts *before* parsing the body, then checks every rule in [`Manifest::validate`].

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use volley_proto::codec::{DecodeError, Reader, Writer};

use crate::cdc::{Params, AVG_MAX, AVG_MIN};
use crate::ContentError;

const MAGIC: &[u8; 4] = b"VLYM";
const FORMAT: u8 = 1;
const DOMAIN: &[u8] = b"volley-manifest-v1";

/// Most files in one build.
pub const MAX_FILES: usize = 1 << 20;
/// Most chunks in one build.
pub const MAX_CHUNKS: usize = 1 << 24;
/// Longest path, bytes.
pub const MAX_PATH: usize = 1024;
/// Largest build (16 TiB).
pub const MAX_BUILD: u64 = 1 << 44;

/// A chunk: its BLAKE3 hash and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    /// BLAKE3 of the bytes.
    pub hash: [u8; 32],
    /// Length in bytes.
    pub size: u32,
}

/// One file of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path, `/`-separated, no `.` or `..` components.
    pub path: String,
    /// Permission bits (`0o755` for executables).
    pub mode: u32,
    /// Length in bytes (the sum of its chunks).
    pub size: u64,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
}

/// A build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The game's id.
    pub game: String,
    /// The version's name.
    pub version: String,
    /// The average chunk size it was cut with.
    pub chunk_avg: u32,
    /// The files, sorted by path.
    pub files: Vec<FileEntry>,
}

/// A checked name: 1-64 characters of `[a-z0-9._-]`, not starting with `.`.
pub fn check_name(what: &'static str, s: &str) -> Result<(), ContentError> {
    if (1..=64).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(ContentError::Invalid(format!(
            "{what} {s:?}: 1-64 characters of [a-z0-9._-], not starting with '.'"
        )))
    }
}

/// Whether `path` is a safe relative path inside an install directory.
pub fn check_path(path: &str) -> Result<(), ContentError> {
    let bad = |why: &str| Err(ContentError::Invalid(format!("path {path:?}: {why}")));
    if path.is_empty() || path.len() > MAX_PATH {
        return bad("empty or too long");
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return bad("must be relative, '/'-separated, without NUL");
    }
    for comp in path.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return bad("empty, '.' or '..' component");
        }
    }
    if path == ".volley" || path.starts_with(".volley/") {
        return bad("'.volley' is reserved for the installer");
    }
    Ok(())
}

impl Manifest {
    /// Total bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Every chunk reference, file by file.
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.files.iter().flat_map(|f| f.chunks.iter())
    }

    /// Checks every rule: names, safe unique paths (no file inside another file's path), modes,
    /// chunk sizes within the chunker's bounds, file sizes equal to their chunks' sum, totals
    /// within limits.
    pub fn validate(&self) -> Result<(), ContentError> {
        check_name("game", &self.game)?;
        check_name("version", &self.version)?;
        let p = Params::new(self.chunk_avg).ok_or_else(|| {
            ContentError::Invalid(format!(
                "chunk average {} is not a power of two in {AVG_MIN}..={AVG_MAX}",
                self.chunk_avg
            ))
        })?;
        if self.files.len() > MAX_FILES {
            return Err(ContentError::Invalid("too many files".into()));
        }
        let (mut total, mut chunks) = (0u64, 0usize);
        for (i, f) in self.files.iter().enumerate() {
            check_path(&f.path)?;
            if let Some(prev) = i.checked_sub(1).map(|j| &self.files[j]) {
                if prev.path >= f.path {
                    return Err(ContentError::Invalid(format!(
                        "paths not sorted or repeated at {:?}",
                        f.path
                    )));
                }
            }
            if f.mode & !0o777 != 0 {
                return Err(ContentError::Invalid(format!(
                    "{}: mode {:o} has bits beyond 0o777",
                    f.path, f.mode
                )));
            }
            let mut sum = 0u64;
            for (k, c) in f.chunks.iter().enumerate() {
                let last = k + 1 == f.chunks.len();
                if c.size == 0 || c.size as usize > p.max || (!last && (c.size as usize) < p.min) {
                    return Err(ContentError::Invalid(format!(
                        "{}: chunk {k} has an impossible size {}",
                        f.path, c.size
                    )));
                }
                sum += u64::from(c.size);
            }
            if sum != f.size {
                return Err(ContentError::Invalid(format!(
                    "{}: size {} but its chunks add up to {sum}",
                    f.path, f.size
                )));
            }
            total = total.saturating_add(f.size);
            chunks += f.chunks.len();
        }
        if total > MAX_BUILD || chunks > MAX_CHUNKS {
            return Err(ContentError::Invalid("build too large".into()));
        }
        // A file may not also be a directory of another ("a" and "a/b").
        let mut sorted: Vec<&str> = self.files.iter().map(|f| f.path.as_str()).collect();
        sorted.sort_unstable();
        for w in sorted.windows(2) {
            if w[1].starts_with(w[0]) && w[1].as_bytes().get(w[0].len()) == Some(&b'/') {
                return Err(ContentError::Invalid(format!(
                    "{:?} is both a file and a directory",
                    w[0]
                )));
            }
        }
        Ok(())
    }

    /// The unsigned body bytes (what the signature covers, after the domain prefix).
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.files.len() * 64);
        w.raw(MAGIC).u8(FORMAT);
        w.string(&self.game)
            .string(&self.version)
            .u32(self.chunk_avg);
        w.varint(self.files.len() as u64);
        for f in &self.files {
            w.string(&f.path).u32(f.mode).u64(f.size);
            w.varint(f.chunks.len() as u64);
            for c in &f.chunks {
                w.raw(&c.hash).u32(c.size);
            }
        }
        w.into_bytes()
    }

    /// Signs the manifest: the bytes to publish.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, ContentError> {
        self.validate()?;
        let mut out = self.body();
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(&out);
        let sig = key.sign(&msg);
        out.extend_from_slice(key.verifying_key().as_bytes());
        out.extend_from_slice(&sig.to_bytes());
        Ok(out)
    }

    /// Decodes signed manifest bytes: the signature must be valid and, when `trusted` is given,
    /// made by that key; then the body must parse and pass [`Manifest::validate`]. Returns the
    /// manifest and the key that signed it.
    pub fn open(
        bytes: &[u8],
        trusted: Option<&VerifyingKey>,
    ) -> Result<(Manifest, VerifyingKey), ContentError> {
        if bytes.len() < 5 + 96 {
            return Err(ContentError::Invalid("manifest truncated".into()));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 96);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&tail[..32]);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&tail[32..]);
        let key = VerifyingKey::from_bytes(&pk)
            .map_err(|_| ContentError::BadSignature("not a valid public key".into()))?;
        if let Some(t) = trusted {
            if t != &key {
                return Err(ContentError::BadSignature(format!(
                    "signed by {}, which is not the trusted publisher {}",
                    hex::encode(key.as_bytes()),
                    hex::encode(t.as_bytes())
                )));
            }
        }
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(body);
        key.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| ContentError::BadSignature("the signature does not match".into()))?;
        let m = Self::decode_body(body).map_err(|e| ContentError::Invalid(e.to_string()))?;
        m.validate()?;
        Ok((m, key))
    }

    /// Parses an unsigned body and validates it. Nothing is verified: players use
    /// [`Manifest::open`]; this is for tools and fuzzing.
    pub fn parse_body(body: &[u8]) -> Result<Manifest, ContentError> {
        let m = Self::decode_body(body).map_err(|e| ContentError::Invalid(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    fn decode_body(body: &[u8]) -> Result<Manifest, DecodeError> {
        let mut r = Reader::new(body);
        if &r.array::<4>()? != MAGIC {
            return Err(DecodeError::Invalid("not a manifest"));
        }
        let v = r.u8()?;
        if v != FORMAT {
            return Err(DecodeError::Version {
                found: v,
                expected: FORMAT,
            });
        }
        let game = r.string("game", 64)?.to_owned();
        let version = r.string("version", 64)?.to_owned();
        let chunk_avg = r.u32()?;
        // Each file takes at least 14 bytes, each chunk 36: counts are bounded by the input.
        let n = r.len("files", MAX_FILES.min(r.remaining() / 14))?;
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            let path = r.string("path", MAX_PATH)?.to_owned();
            let mode = r.u32()?;
            let size = r.u64()?;
            let k = r.len("chunks", MAX_CHUNKS.min(r.remaining() / 36))?;
            let mut chunks = Vec::with_capacity(k);
            for _ in 0..k {
                let hash = r.array::<32>()?;
                let size = r.u32()?;
                chunks.push(ChunkRef { hash, size });
            }
            files.push(FileEntry {
                path,
                mode,
                size,
                chunks,
            });
        }
        r.finish()?;
        Ok(Manifest {
            game,
            version,
            chunk_avg,
            files,
        })
    }
}

/// A new publisher key.
pub fn generate_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// Parses a 64-hex-character public key.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, ContentError> {
    let raw = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ContentError::Invalid("a public key is 64 hex characters".into()))?;
    VerifyingKey::from_bytes(&raw)
        .map_err(|_| ContentError::Invalid("not a valid ed25519 public key".into()))
}

/// Parses a 64-hex-character secret key (what `volley content keygen` writes).
pub fn parse_secret_key(hex_key: &str) -> Result<SigningKey, ContentError> {
    let raw = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ContentError::Invalid("a secret key is 64 hex characters".into()))?;
    Ok(SigningKey::from_bytes(&raw))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let c = |b: u8, size: u32| ChunkRef {
            hash: [b; 32],
            size,
        };
        Manifest {
            game: "arena".into(),
            version: "1.2.0".into(),
            chunk_avg: 1 << 16,
            files: vec![
                FileEntry {
                    path: "bin/game".into(),
                    mode: 0o755,
                    size: 70_000,
                    chunks: vec![c(1, 20_000), c(2, 50_000)],
                },
                FileEntry {
                    path: "empty".into(),
                    mode: 0o644,
                    size: 0,
                    chunks: vec![],
                },
            ],
        }
    }

    #[test]
    fn a_signed_manifest_opens_with_its_key_only() {
        let key = generate_key();
        let bytes = sample().sign(&key).unwrap();
        let (m, k) = Manifest::open(&bytes, Some(&key.verifying_key())).unwrap();
        assert_eq!(m, sample());
        assert_eq!(k, key.verifying_key());
        let other = generate_key();
        let e = Manifest::open(&bytes, Some(&other.verifying_key())).unwrap_err();
        assert!(matches!(e, ContentError::BadSignature(_)), "{e}");
        // Any flipped bit breaks it.
        for i in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(
                Manifest::open(&b, Some(&key.verifying_key())).is_err(),
                "bit {i}"
            );
        }
        assert!(Manifest::open(&bytes[..50], None).is_err());
    }

    #[test]
    fn unsafe_paths_and_impossible_sizes_are_refused_even_when_signed() {
        let key = generate_key();
        type Break = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(&str, Break)> = vec![
            ("..", Box::new(|m| m.files[0].path = "../evil".into())),
            ("abs", Box::new(|m| m.files[0].path = "/etc/passwd".into())),
            ("dot", Box::new(|m| m.files[0].path = "bin/./game".into())),
            (
                "empty comp",
                Box::new(|m| m.files[0].path = "bin//game".into()),
            ),
            (
                "reserved",
                Box::new(|m| m.files[0].path = ".volley/x".into()),
            ),
            ("size", Box::new(|m| m.files[0].size = 70_001)),
            (
                "big chunk",
                Box::new(|m| m.files[0].chunks[1].size = 1 << 20),
            ),
            ("small chunk", Box::new(|m| m.files[0].chunks[0].size = 10)),
            ("mode", Box::new(|m| m.files[0].mode = 0o4755)),
            ("dup", Box::new(|m| m.files[1].path = "bin/game".into())),
            (
                "file and dir",
                Box::new(|m| m.files[1].path = "bin/game/x".into()),
            ),
            ("avg", Box::new(|m| m.chunk_avg = 1000)),
            ("game", Box::new(|m| m.game = "Bad Game".into())),
        ];
        for (name, f) in cases {
            let mut m = sample();
            f(&mut m);
            assert!(m.validate().is_err(), "{name} validates");
            assert!(m.sign(&key).is_err(), "{name} signs");
            // Even a publisher that skips validation cannot get it past a player.
            let mut bytes = m.body();
            let mut msg = DOMAIN.to_vec();
            msg.extend_from_slice(&bytes);
            let sig = key.sign(&msg);
            bytes.extend_from_slice(key.verifying_key().as_bytes());
            bytes.extend_from_slice(&sig.to_bytes());
            assert!(
                matches!(
                    Manifest::open(&bytes, Some(&key.verifying_key())),
                    Err(ContentError::Invalid(_))
                ),
                "{name} opens"
            );
        }
    }

    #[test]
    fn keys_round_trip_through_hex() {
        let k = generate_key();
        let s = parse_secret_key(&hex::encode(k.to_bytes())).unwrap();
        assert_eq!(s.verifying_key(), k.verifying_key());
        let p = parse_public_key(&hex::encode(k.verifying_key().as_bytes())).unwrap();
        assert_eq!(p, k.verifying_key());
        assert!(parse_public_key("zz").is_err());
    }
}
