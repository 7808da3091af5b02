//! Build manifests: which files a version has, their modes and sizes, and the chunks (BLAKE3
//! hash and size) each is made of, signed with the publisher's ed25519 key.
//!
//! Wire form: `"VLYM"`, format version 1, the body (game, version, average chunk size, files),
//! then the publisher's public key (32 bytes) and an ed25519 signature (64 bytes) over
//! `"volley-manifest-v1" || body`. Decoding checks the signature against the key the player
//! trusts *before* parsing the body, then checks every rule in [`Manifest::validate`].

use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use volley_proto::codec::{DecodeError, Reader, Writer};

use crate::cdc::{Params, AVG_MAX, AVG_MIN};
use crate::ContentError;

pub(crate) const MAGIC: &[u8; 4] = b"VLYM";
pub(crate) const FORMAT: u8 = 1;
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
        check_rules(&self.game, &self.version, self.chunk_avg, &self.files[..])
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
        let (body, key) = verify_signed(bytes, trusted)?;
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
        let (game, version, chunk_avg) = read_head(&mut r)?;
        // Each file takes at least 14 bytes, each chunk 36: counts are bounded by the input.
        let n = r.len("files", MAX_FILES.min(r.remaining() / 14))?;
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            let (path, mode, size) = read_file_head(&mut r)?;
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

/// The body's head: magic, format, game, version, average chunk size.
fn read_head(r: &mut Reader<'_>) -> Result<(String, String, u32), DecodeError> {
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
    Ok((game, version, r.u32()?))
}

/// A file's head: path, mode, size (its chunk count follows).
fn read_file_head(r: &mut Reader<'_>) -> Result<(String, u32, u64), DecodeError> {
    let path = r.string("path", MAX_PATH)?.to_owned();
    Ok((path, r.u32()?, r.u64()?))
}

/// What [`check_rules`] reads of a manifest's files: a parsed [`Manifest`]'s, or a
/// [`SignedManifest`]'s read from its bytes.
trait Files {
    fn count(&self) -> usize;
    fn path(&self, i: usize) -> &str;
    fn mode(&self, i: usize) -> u32;
    fn size(&self, i: usize) -> u64;
    fn chunk_sizes(&self, i: usize) -> impl Iterator<Item = u32> + '_;
}

impl Files for [FileEntry] {
    fn count(&self) -> usize {
        self.len()
    }
    fn path(&self, i: usize) -> &str {
        &self[i].path
    }
    fn mode(&self, i: usize) -> u32 {
        self[i].mode
    }
    fn size(&self, i: usize) -> u64 {
        self[i].size
    }
    fn chunk_sizes(&self, i: usize) -> impl Iterator<Item = u32> + '_ {
        self[i].chunks.iter().map(|c| c.size)
    }
}

/// The rules of [`Manifest::validate`].
fn check_rules<F: Files + ?Sized>(
    game: &str,
    version: &str,
    chunk_avg: u32,
    files: &F,
) -> Result<(), ContentError> {
    check_name("game", game)?;
    check_name("version", version)?;
    let p = Params::new(chunk_avg).ok_or_else(|| {
        ContentError::Invalid(format!(
            "chunk average {chunk_avg} is not a power of two in {AVG_MIN}..={AVG_MAX}"
        ))
    })?;
    let n = files.count();
    if n > MAX_FILES {
        return Err(ContentError::Invalid("too many files".into()));
    }
    let (mut total, mut chunks) = (0u64, 0usize);
    for i in 0..n {
        let path = files.path(i);
        check_path(path)?;
        if i > 0 && files.path(i - 1) >= path {
            return Err(ContentError::Invalid(format!(
                "paths not sorted or repeated at {path:?}"
            )));
        }
        let mode = files.mode(i);
        if mode & !0o777 != 0 {
            return Err(ContentError::Invalid(format!(
                "{path}: mode {mode:o} has bits beyond 0o777"
            )));
        }
        let mut sum = 0u64;
        let mut sizes = files.chunk_sizes(i).enumerate().peekable();
        while let Some((k, size)) = sizes.next() {
            let last = sizes.peek().is_none();
            if size == 0 || size as usize > p.max || (!last && (size as usize) < p.min) {
                return Err(ContentError::Invalid(format!(
                    "{path}: chunk {k} has an impossible size {size}"
                )));
            }
            sum += u64::from(size);
            chunks += 1;
        }
        if sum != files.size(i) {
            return Err(ContentError::Invalid(format!(
                "{path}: size {} but its chunks add up to {sum}",
                files.size(i)
            )));
        }
        total = total.saturating_add(sum);
    }
    if total > MAX_BUILD || chunks > MAX_CHUNKS {
        return Err(ContentError::Invalid("build too large".into()));
    }
    // A file may not also be a directory of another ("a" and "a/b").
    let mut sorted: Vec<&str> = (0..n).map(|i| files.path(i)).collect();
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

/// Splits signed manifest bytes into the body and the signer's key, after checking the
/// signature over `DOMAIN || body` (as strictly as ed25519-dalek's `verify_strict`, without
/// copying the body) and, when `trusted` is given, that it is that key.
fn verify_signed<'a>(
    bytes: &'a [u8],
    trusted: Option<&VerifyingKey>,
) -> Result<(&'a [u8], VerifyingKey), ContentError> {
    if bytes.len() < 5 + 96 {
        return Err(ContentError::Invalid("manifest truncated".into()));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 96);
    let (key, mut v) = start_verify(tail, trusted)?;
    v.update(body);
    v.finalize_and_verify().map_err(|_| bad_signature())?;
    Ok((body, key))
}

fn bad_signature() -> ContentError {
    ContentError::BadSignature("the signature does not match".into())
}

/// Checks the key and signature in a signed manifest's last 96 bytes (the key against
/// `trusted`) and starts the streamed check: the body goes to the verifier next.
fn start_verify(
    tail: &[u8],
    trusted: Option<&VerifyingKey>,
) -> Result<(VerifyingKey, ed25519_dalek::StreamVerifier), ContentError> {
    let mut pk = [0u8; 32];
    pk.copy_from_slice(&tail[..32]);
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&tail[32..96]);
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
    let sig = ed25519_dalek::Signature::from_bytes(&sig);
    // verify_strict's rules beyond the equation: neither the key nor R of small order.
    let r = curve25519_dalek::edwards::CompressedEdwardsY(*sig.r_bytes());
    if key.is_weak() || r.decompress().is_none_or(|r| r.is_small_order()) {
        return Err(bad_signature());
    }
    let mut v = key.verify_stream(&sig).map_err(|_| bad_signature())?;
    v.update(DOMAIN);
    Ok((key, v))
}

/// One file of a [`SignedManifest`]: its chunk list stays in the signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Relative path, `/`-separated, no `.` or `..` components.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Length in bytes.
    pub size: u64,
    /// Where its first chunk reference starts in the signed bytes.
    chunks_at: u32,
    /// Its chunk references.
    chunk_count: u32,
}

impl FileInfo {
    /// The number of chunk references (repeats included).
    pub fn chunk_count(&self) -> usize {
        self.chunk_count as usize
    }
}

/// Bytes of one chunk reference in the signed form: hash and size.
pub const CHUNK_REF_BYTES: usize = 36;

/// Where a [`SignedManifest`]'s bytes are.
#[derive(Debug)]
enum Storage {
    Memory(Vec<u8>),
    /// A file of the process's own (unlinked), read with positioned reads.
    Disk(std::fs::File),
}

/// A checked signed manifest that stays in its signed form: the files are parsed, each chunk
/// reference (36 bytes) is read from the bytes when asked for. The bytes can move to a
/// private file ([`SignedManifest::move_to_disk`]), after which a fetch holds nothing per
/// chunk of the manifest in memory.
#[derive(Debug)]
pub struct SignedManifest {
    storage: std::sync::RwLock<Storage>,
    len: usize,
    id: [u8; 32],
    key: VerifyingKey,
    game: String,
    version: String,
    chunk_avg: u32,
    files: Vec<FileInfo>,
    refs: usize,
}

impl Files for SignedManifest {
    fn count(&self) -> usize {
        self.files.len()
    }
    fn path(&self, i: usize) -> &str {
        &self.files[i].path
    }
    fn mode(&self, i: usize) -> u32 {
        self.files[i].mode
    }
    fn size(&self, i: usize) -> u64 {
        self.files[i].size
    }
    fn chunk_sizes(&self, i: usize) -> impl Iterator<Item = u32> + '_ {
        self.file_chunks(i).map(|(_, c)| c.size)
    }
}

impl SignedManifest {
    /// Checks signed manifest bytes as [`Manifest::open`] does (signature first, then every
    /// rule of [`Manifest::validate`]) and keeps them.
    pub fn open(bytes: Vec<u8>, trusted: Option<&VerifyingKey>) -> Result<Self, ContentError> {
        if u32::try_from(bytes.len()).is_err() {
            return Err(ContentError::Invalid("manifest larger than 4 GiB".into()));
        }
        let (body, key) = verify_signed(&bytes, trusted)?;
        let outline = Self::outline(body);
        let id = *blake3::hash(&bytes).as_bytes();
        Self::checked(id, key, outline, bytes.len(), Storage::Memory(bytes))
    }

    /// The manifest of a checked signature and a body's outline, once every rule holds.
    #[allow(clippy::type_complexity)]
    fn checked(
        id: [u8; 32],
        key: VerifyingKey,
        outline: Result<((String, String, u32), Vec<FileInfo>, usize), DecodeError>,
        len: usize,
        storage: Storage,
    ) -> Result<Self, ContentError> {
        let (head, files, refs) = outline.map_err(|e| ContentError::Invalid(e.to_string()))?;
        let m = SignedManifest {
            id,
            key,
            game: head.0,
            version: head.1,
            chunk_avg: head.2,
            files,
            refs,
            len,
            storage: std::sync::RwLock::new(storage),
        };
        check_rules(&m.game, &m.version, m.chunk_avg, &m)?;
        Ok(m)
    }

    /// Parses everything but the chunk references, which are only skipped over.
    #[allow(clippy::type_complexity)]
    fn outline(body: &[u8]) -> Result<((String, String, u32), Vec<FileInfo>, usize), DecodeError> {
        Self::outline_with(body.len(), |at, n| {
            Ok(std::borrow::Cow::Borrowed(
                &body[at..(at + n).min(body.len())],
            ))
        })
    }

    /// [`SignedManifest::outline`] over a body of `len` bytes read in windows:
    /// `window(at, n)` gives the body's bytes from `at`, `n` of them or up to its end. Every
    /// head (the manifest's, each file's) fits in one window, and chunk references are never
    /// read, so the whole body is never in memory at once.
    #[allow(clippy::type_complexity)]
    fn outline_with<'w>(
        len: usize,
        mut window: impl FnMut(usize, usize) -> Result<std::borrow::Cow<'w, [u8]>, DecodeError>,
    ) -> Result<((String, String, u32), Vec<FileInfo>, usize), DecodeError> {
        // The longest head: a file's (path of MAX_PATH bytes, four numbers), well under this.
        const WINDOW: usize = 4096;
        let w = window(0, WINDOW)?;
        let mut r = Reader::new(&w);
        let (game, version, chunk_avg) = read_head(&mut r)?;
        // As in `decode_body`: counts are bounded by the (whole) input left.
        let mut at = w.len() - r.remaining();
        let n = r.len("files", MAX_FILES.min((len - at) / 14))?;
        at = w.len() - r.remaining();
        let mut files = Vec::with_capacity(n);
        let mut refs = 0usize;
        for _ in 0..n {
            let w = window(at, WINDOW)?;
            let mut r = Reader::new(&w);
            let (path, mode, size) = read_file_head(&mut r)?;
            let used = w.len() - r.remaining();
            let k = r.len(
                "chunks",
                MAX_CHUNKS.min((len - at - used) / CHUNK_REF_BYTES),
            )?;
            let chunks_at = at + w.len() - r.remaining();
            // The bound above was taken before the count itself was read.
            at = chunks_at + k * CHUNK_REF_BYTES;
            if at > len {
                return Err(DecodeError::Truncated);
            }
            refs += k;
            files.push(FileInfo {
                path,
                mode,
                size,
                chunks_at: chunks_at as u32,
                chunk_count: k as u32,
            });
        }
        if at != len {
            return Err(DecodeError::Trailing(len - at));
        }
        Ok(((game, version, chunk_avg), files, refs))
    }

    /// Checks signed manifest bytes held in `file` (from its start to its end) as
    /// [`SignedManifest::open`] does, reading them in pieces: the signature is checked and the
    /// id hashed as the bytes stream by, the files' heads are read in small windows, and the
    /// bytes stay in the file (chunk references are read from it 36 bytes at a time). So a
    /// manifest of any size is opened in the same memory.
    pub fn open_file(
        file: std::fs::File,
        trusted: Option<&VerifyingKey>,
    ) -> Result<Self, ContentError> {
        use std::os::unix::fs::FileExt;
        let io = |e: std::io::Error| ContentError::Fetch(format!("reading the manifest: {e}"));
        let len64 = file.metadata().map_err(io)?.len();
        let len = usize::try_from(len64)
            .ok()
            .filter(|&l| u32::try_from(l).is_ok())
            .ok_or_else(|| ContentError::Invalid("manifest larger than 4 GiB".into()))?;
        if len < 5 + 96 {
            return Err(ContentError::Invalid("manifest truncated".into()));
        }
        let body_len = len - 96;
        let mut tail = [0u8; 96];
        file.read_exact_at(&mut tail, body_len as u64).map_err(io)?;
        let (key, mut v) = start_verify(&tail, trusted)?;
        let mut id = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut at = 0usize;
        while at < body_len {
            let n = (body_len - at).min(buf.len());
            file.read_exact_at(&mut buf[..n], at as u64).map_err(io)?;
            v.update(&buf[..n]);
            id.update(&buf[..n]);
            at += n;
        }
        id.update(&tail);
        v.finalize_and_verify().map_err(|_| bad_signature())?;
        drop(buf);
        let outline = Self::outline_with(body_len, |at, n| {
            let mut w = vec![0u8; n.min(body_len - at)];
            file.read_exact_at(&mut w, at as u64)
                .map_err(|_| DecodeError::Invalid("the manifest's file could not be read"))?;
            Ok(std::borrow::Cow::Owned(w))
        });
        let id = *id.finalize().as_bytes();
        Self::checked(id, key, outline, len, Storage::Disk(file))
    }

    /// For fuzzing: reads `body` as [`SignedManifest::open`] reads a body after its signature
    /// check, and as [`Manifest::parse_body`] reads it; the two must agree (both refuse it,
    /// or both give the same manifest, with every chunk reference where the walk says).
    #[doc(hidden)]
    pub fn check_against_parser(body: &[u8]) -> Result<(), String> {
        let parsed = Manifest::parse_body(body);
        let walked = Self::outline(body)
            .map_err(|e| ContentError::Invalid(e.to_string()))
            .and_then(|(head, files, refs)| {
                let mut bytes = body.to_vec();
                bytes.extend_from_slice(&[0; 96]);
                let m = SignedManifest {
                    id: [0; 32],
                    key: SigningKey::from_bytes(&[7; 32]).verifying_key(),
                    game: head.0,
                    version: head.1,
                    chunk_avg: head.2,
                    files,
                    refs,
                    len: bytes.len(),
                    storage: std::sync::RwLock::new(Storage::Memory(bytes)),
                };
                check_rules(&m.game, &m.version, m.chunk_avg, &m).map(|()| m)
            });
        match (parsed, walked) {
            (Err(_), Err(_)) => Ok(()),
            (Ok(p), Ok(w)) => {
                if w.to_manifest() != p || w.refs() != p.chunks().count() {
                    return Err("the walk and the parser read different manifests".into());
                }
                for (fi, at, c) in w.chunks() {
                    if w.file_of(at) != Some(fi)
                        || body.get(at as usize..at as usize + 32) != Some(&c.hash[..])
                    {
                        return Err(format!("reference at {at} misplaced"));
                    }
                }
                Ok(())
            }
            (p, w) => Err(format!(
                "the parser says {:?}, the walk {:?}",
                p.err(),
                w.err()
            )),
        }
    }

    fn storage(&self) -> std::sync::RwLockReadGuard<'_, Storage> {
        self.storage.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `buf.len()` signed bytes from `at`.
    fn read_at(&self, at: usize, buf: &mut [u8]) -> std::io::Result<()> {
        match &*self.storage() {
            Storage::Memory(b) => {
                let src = b.get(at..at + buf.len()).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the end")
                })?;
                buf.copy_from_slice(src);
                Ok(())
            }
            Storage::Disk(f) => {
                use std::os::unix::fs::FileExt;
                f.read_exact_at(buf, at as u64)
            }
        }
    }

    /// Length of the signed bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no signed bytes (never, for a checked manifest).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes have moved to disk.
    pub fn on_disk(&self) -> bool {
        matches!(&*self.storage(), Storage::Disk(_))
    }

    /// Writes the signed bytes to `w`.
    pub fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        let mut at = 0;
        while at < self.len {
            let n = (self.len - at).min(buf.len());
            self.read_at(at, &mut buf[..n])?;
            w.write_all(&buf[..n])?;
            at += n;
        }
        Ok(())
    }

    /// The signed bytes, copied.
    pub fn to_bytes(&self) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(self.len);
        self.write_to(&mut v)?;
        Ok(v)
    }

    /// Moves the signed bytes out of memory into an unnamed file in `dir` (gone when the
    /// process is), checking what was written against the manifest's id. Chunk references are
    /// then read from there, 36 bytes at a time.
    pub fn move_to_disk(&self, dir: &Path) -> Result<(), ContentError> {
        if self.on_disk() {
            return Ok(());
        }
        let io = |e| ContentError::io(dir, e);
        let mut f = tempfile::tempfile_in(dir).map_err(io)?;
        self.write_to(&mut f).map_err(io)?;
        // What reads come back with is what was checked: hashed from the file.
        use std::io::Seek;
        f.rewind().map_err(io)?;
        let mut h = blake3::Hasher::new();
        h.update_reader(&f).map_err(io)?;
        if h.finalize().as_bytes() != &self.id {
            return Err(ContentError::Invalid(format!(
                "the manifest written to {} reads back different",
                dir.display()
            )));
        }
        *self.storage.write().unwrap_or_else(|p| p.into_inner()) = Storage::Disk(f);
        Ok(())
    }

    /// BLAKE3 of the signed bytes: the version's identity in the swarm.
    pub fn id(&self) -> &[u8; 32] {
        &self.id
    }

    /// The key that signed it.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The game's id.
    pub fn game(&self) -> &str {
        &self.game
    }

    /// The version's name.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The average chunk size it was cut with.
    pub fn chunk_avg(&self) -> u32 {
        self.chunk_avg
    }

    /// The files, sorted by path.
    pub fn files(&self) -> &[FileInfo] {
        &self.files
    }

    /// Total bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Chunk references, repeats included.
    pub fn refs(&self) -> usize {
        self.refs
    }

    /// The chunk reference starting at byte `at` of the signed bytes (one that
    /// [`SignedManifest::file_chunks`] gave).
    pub fn chunk_at(&self, at: u32) -> ChunkRef {
        let at = at as usize;
        let mut c = ChunkRef {
            hash: [0; 32],
            size: 0,
        };
        // Offsets come from the walk of a checked manifest, so the range is always there; a
        // failed read of the manifest's own file gives a chunk no data matches (size 0), so
        // whatever would use it is refused rather than trusted.
        let mut b = [0u8; CHUNK_REF_BYTES];
        if self.read_at(at, &mut b).is_ok() {
            c.hash.copy_from_slice(&b[..32]);
            c.size = u32::from_be_bytes([b[32], b[33], b[34], b[35]]);
        }
        c
    }

    /// File `i`'s chunk references in order, each with where it starts in the signed bytes.
    /// They are read 1,820 at a time (64 KiB), so a walk of a manifest on disk costs one read
    /// per block rather than per reference.
    pub fn file_chunks(&self, i: usize) -> impl Iterator<Item = (u32, ChunkRef)> + '_ {
        const BLOCK: u32 = 1820;
        let (at, k) = self
            .files
            .get(i)
            .map_or((0, 0), |f| (f.chunks_at, f.chunk_count));
        let mut buf = Vec::new();
        let mut from = 0u32;
        (0..k).map(move |j| {
            let a = at + j * CHUNK_REF_BYTES as u32;
            if j == 0 || j - from >= BLOCK {
                from = j;
                let n = (k - j).min(BLOCK) as usize * CHUNK_REF_BYTES;
                buf.resize(n, 0);
                // As in `chunk_at`: a failed read gives chunks no data matches.
                if self.read_at(a as usize, &mut buf).is_err() {
                    buf.fill(0);
                }
            }
            let o = (j - from) as usize * CHUNK_REF_BYTES;
            let mut c = ChunkRef {
                hash: [0; 32],
                size: 0,
            };
            if let Some(b) = buf.get(o..o + CHUNK_REF_BYTES) {
                c.hash.copy_from_slice(&b[..32]);
                c.size = u32::from_be_bytes([b[32], b[33], b[34], b[35]]);
            }
            (a, c)
        })
    }

    /// Every chunk reference, file by file, with its file and where it starts in the bytes.
    pub fn chunks(&self) -> impl Iterator<Item = (usize, u32, ChunkRef)> + '_ {
        (0..self.files.len()).flat_map(move |i| self.file_chunks(i).map(move |(a, c)| (i, a, c)))
    }

    /// The file whose chunk references include byte `at`.
    pub fn file_of(&self, at: u32) -> Option<usize> {
        let k = self.files.partition_point(|f| f.chunks_at <= at);
        let i = k.checked_sub(1)?;
        let f = &self.files[i];
        (at < f.chunks_at + f.chunk_count * CHUNK_REF_BYTES as u32).then_some(i)
    }

    /// The whole manifest, parsed.
    pub fn to_manifest(&self) -> Manifest {
        Manifest {
            game: self.game.clone(),
            version: self.version.clone(),
            chunk_avg: self.chunk_avg,
            files: (0..self.files.len())
                .map(|i| {
                    let f = &self.files[i];
                    FileEntry {
                        path: f.path.clone(),
                        mode: f.mode,
                        size: f.size,
                        chunks: self.file_chunks(i).map(|(_, c)| c).collect(),
                    }
                })
                .collect(),
        }
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
        // Kept signed: the same files, each chunk read from the bytes where the walk says.
        let s = SignedManifest::open(bytes.clone(), Some(&key.verifying_key())).unwrap();
        assert_eq!(s.to_manifest(), sample());
        assert_eq!((s.game(), s.version(), s.refs()), ("arena", "1.2.0", 2));
        assert_eq!(s.id(), blake3::hash(&bytes).as_bytes());
        assert_eq!(s.total_size(), 70_000);
        for (fi, at, c) in s.chunks() {
            assert_eq!(s.chunk_at(at), c);
            assert_eq!(s.file_of(at), Some(fi));
            assert_eq!(&bytes[at as usize..at as usize + 32], &c.hash);
        }
        assert_eq!(s.file_of(0), None);
        let strict = |b: &[u8]| {
            let (body, sig) = b.split_at(b.len() - 64);
            let mut msg = DOMAIN.to_vec();
            msg.extend_from_slice(&body[..body.len() - 32]);
            k.verify_strict(
                &msg,
                &ed25519_dalek::Signature::from_bytes(sig.try_into().unwrap()),
            )
            .is_ok()
        };
        assert!(strict(&bytes));
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
            assert!(SignedManifest::open(b.clone(), None).is_err(), "bit {i}");
            assert!(!strict(&b), "bit {i}");
        }
        assert!(Manifest::open(&bytes[..50], None).is_err());
        assert!(SignedManifest::open(bytes[..50].to_vec(), None).is_err());
        // The identity as both key and R, with s = 0, satisfies the plain verification
        // equation for every message: the strict checks must refuse it.
        let mut b = bytes[..bytes.len() - 96].to_vec();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        b.extend_from_slice(&identity);
        b.extend_from_slice(&identity);
        b.extend_from_slice(&[0u8; 32]);
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(b[b.len() - 64..].try_into().unwrap());
        let mut plain = weak.verify_stream(&sig).unwrap();
        plain.update(DOMAIN);
        plain.update(&b[..b.len() - 96]);
        assert!(plain.finalize_and_verify().is_ok());
        assert!(matches!(
            SignedManifest::open(b.clone(), None),
            Err(ContentError::BadSignature(_))
        ));
        assert!(Manifest::open(&b, None).is_err());
    }

    /// Opens `bytes` from a file as a fetch does.
    fn open_file(
        bytes: &[u8],
        trusted: Option<&VerifyingKey>,
    ) -> Result<SignedManifest, ContentError> {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        SignedManifest::open_file(f, trusted)
    }

    #[test]
    fn a_manifest_opened_from_its_file_is_the_one_opened_in_memory() {
        let key = generate_key();
        let trusted = key.verifying_key();
        // Many files (heads read in windows), one with a path of the longest length.
        let mut m = sample();
        for k in 0..300u32 {
            let path = if k == 7 {
                "p".repeat(MAX_PATH)
            } else {
                format!("dir{}/file{k}", k % 13)
            };
            m.files.push(FileEntry {
                path,
                mode: 0o644,
                size: 60_000,
                chunks: vec![ChunkRef {
                    hash: [(k % 251) as u8; 32],
                    size: 60_000,
                }],
            });
        }
        m.files.sort_by(|a, b| a.path.cmp(&b.path));
        let bytes = m.sign(&key).unwrap();
        let mem = SignedManifest::open(bytes.clone(), Some(&trusted)).unwrap();
        let disk = open_file(&bytes, Some(&trusted)).unwrap();
        assert!(disk.on_disk());
        assert_eq!(disk.id(), mem.id());
        assert_eq!(disk.files(), mem.files());
        assert_eq!(disk.to_manifest(), m);
        assert!(disk.chunks().eq(mem.chunks()));
        assert_eq!(disk.to_bytes().unwrap(), bytes);
        // Refused alike: another key, any flipped bit, any cut, bytes added.
        let other = generate_key().verifying_key();
        assert!(matches!(
            open_file(&bytes, Some(&other)),
            Err(ContentError::BadSignature(_))
        ));
        for i in (0..bytes.len()).step_by(997).chain([bytes.len() - 1]) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(open_file(&b, None).is_err(), "bit at {i}");
        }
        for cut in [0, 1, 50, 100, 101, bytes.len() / 2, bytes.len() - 1] {
            let e = open_file(&bytes[..cut], None).unwrap_err().to_string();
            let e2 = SignedManifest::open(bytes[..cut].to_vec(), None)
                .unwrap_err()
                .to_string();
            assert_eq!(e, e2, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(open_file(&longer, None).is_err());
        // Signed but malformed: a body with bytes after its last file.
        let mut body = m.body();
        body.extend_from_slice(&[0; 5]);
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(&body);
        body.extend_from_slice(trusted.as_bytes());
        body.extend_from_slice(&key.sign(&msg).to_bytes());
        let e = open_file(&body, Some(&trusted)).unwrap_err().to_string();
        let e2 = SignedManifest::open(body, Some(&trusted))
            .unwrap_err()
            .to_string();
        assert_eq!(e, e2);
        assert!(e.contains("trailing"), "{e}");
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
            assert!(
                matches!(
                    SignedManifest::open(bytes, Some(&key.verifying_key())),
                    Err(ContentError::Invalid(_))
                ),
                "{name} opens signed"
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
