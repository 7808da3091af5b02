// Fuzz checks for `volley-content`'s decoders: signed manifests. Compiled by the fuzz crate and
// by crates/volley-content/tests/fuzz_corpus.rs, which replays corpus-content/ on every
// `cargo test`. Each check must never panic, and whatever decodes must encode back the same.

use volley_content::Manifest;

/// A check: panics on a violated invariant, returns otherwise.
pub type ContentCheck = fn(&[u8]);

/// Every content target and its check.
pub const CONTENT_TARGETS: &[(&str, ContentCheck)] = &[("manifest", manifest)];

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
    if let Ok(m) = Manifest::parse_body(data) {
        let again = Manifest::parse_body(&m.body()).expect("a re-encoded body parses");
        assert_eq!(again, m, "a parsed body re-encodes to the same manifest");
        assert!(m.total_size() <= volley_content::manifest::MAX_BUILD);
    }
}
