// Fuzz checks for `volley-content`'s decoders: signed manifests, peer-protocol messages and chunk batches; and a differential check of the chunker's SIMD kernels. Compiled by the fuzz crate and
// by crates/volley-content/tests/fuzz_corpus.rs, which replays corpus-content/ on every
// `cargo test`. Each check must never panic, and whatever decodes must encode back the same.

use volley_content::Manifest;

/// A check: panics on a violated invariant, returns otherwise.
pub type ContentCheck = fn(&[u8]);

/// Every content target and its check.
pub const CONTENT_TARGETS: &[(&str, ContentCheck)] = &[
    ("manifest", manifest),
    ("peer_wire", peer_wire),
    ("chunk_batch", chunk_batch),
    ("cdc_kernels", cdc_kernels),
];

/// The input as chunker input: the first byte picks the prefilter's bits, the next two where
/// the searched range starts and ends (the end may pass the data's). Every SIMD prefilter
/// kernel must find the scalar kernel's candidate (and, under the sanitizer, read nothing
/// outside the data), and the chunker must cut where its one-position definition does.
pub fn cdc_kernels(data: &[u8]) {
    let [a, f, t, rest @ ..] = data else {
        return;
    };
    let n = rest.len();
    let from = usize::from(*f) * n / 255;
    let to = usize::from(*t) * (n + 16) / 255;
    volley_content::cdc::check_kernels(rest, from, to, u32::from(*a) % 31 + 1);
}

/// The input as a chunk batch upload body (with a small per-chunk limit, so lengths near it are
/// reachable): what decodes re-encodes to the same bytes, within the limits.
pub fn chunk_batch(data: &[u8]) {
    use volley_content::batch::{decode, push, CHUNKS_MAX};
    const MAX: usize = 4096;
    if let Ok(chunks) = decode(data, MAX) {
        assert!(!chunks.is_empty() && chunks.len() <= CHUNKS_MAX);
        let mut again = Vec::new();
        for (hash, bytes) in &chunks {
            assert!(bytes.len() <= MAX);
            push(&mut again, hash, bytes);
        }
        assert_eq!(again, data, "a decoded batch re-encodes to its bytes");
    }
}

/// The input as a peer control message body, and (after a 2-byte length) as a bitfield: what
/// decodes must encode back byte for byte (the wire has one spelling per message).
pub fn peer_wire(data: &[u8]) {
    use volley_content::wire::{Bits, Msg};
    if let Ok(m) = Msg::decode(data) {
        assert_eq!(
            m.encode(),
            data,
            "a decoded message re-encodes to its bytes"
        );
        let f = m.frame();
        let n = Msg::frame_len([f[0], f[1], f[2], f[3]]);
        assert_eq!(
            n.ok(),
            Some(data.len()).filter(|&l| l <= volley_content::wire::FRAME_MAX)
        );
    }
    if let [a, b, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if let Ok(bits) = Bits::from_bytes(rest, len) {
            assert_eq!(bits.len(), len);
            assert_eq!(bits.to_bytes(), rest, "a bitfield re-encodes to its bytes");
            assert!(bits.count() <= len);
        }
    }
}

/// The input as a signed manifest (signature path) and as an unsigned body (parser path, which
/// mutations reach: any change breaks a signature).
pub fn manifest(data: &[u8]) {
    // Lengths are varints, which have longer spellings of the same value; the signature
    // covers the bytes as sent, so what must hold is that the value survives a re-encoding.
    if let Ok((m, _key)) = Manifest::open(data, None) {
        assert!(m.validate().is_ok());
        let again = Manifest::parse_body(&m.body()).expect("a re-encoded manifest parses");
        assert_eq!(again, m);
    }
    if let Err(e) = volley_content::manifest::SignedManifest::check_against_parser(data) {
        panic!("{e}");
    }
    if let Ok(m) = Manifest::parse_body(data) {
        let again = Manifest::parse_body(&m.body()).expect("a re-encoded body parses");
        assert_eq!(again, m, "a parsed body re-encodes to the same manifest");
        assert!(m.total_size() <= volley_content::manifest::MAX_BUILD);
    }
}
