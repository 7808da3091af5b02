//! Replays the checked-in content fuzz corpus (`fuzz/corpus-content/<target>/*`) through the same
//! checks the cargo-fuzz targets run (`fuzz/src/content_checks.rs`, compiled in here). `seed-*`
//! files are valid manifests written by
//! `VOLLEY_WRITE_FUZZ_SEEDS=1 cargo test -p volley-content --test fuzz_corpus`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../fuzz/src/content_checks.rs"]
mod content_checks;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use volley_content::{ChunkRef, FileEntry, Manifest};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus-content")
}

/// Valid inputs: signed manifests and their unsigned bodies, made with a fixed key.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let key = ed25519_dalek::SigningKey::from_bytes(b"volley-fuzz-publisher-key-32byte");
    let c = |b: u8, size: u32| ChunkRef {
        hash: [b; 32],
        size,
    };
    let m = Manifest {
        game: "arena".into(),
        version: "2.0.1".into(),
        chunk_avg: 1 << 16,
        files: vec![
            FileEntry {
                path: "bin/game".into(),
                mode: 0o755,
                size: 90_000,
                chunks: vec![c(1, 40_000), c(2, 50_000)],
            },
            FileEntry {
                path: "data/empty".into(),
                mode: 0o644,
                size: 0,
                chunks: vec![],
            },
            FileEntry {
                path: "data/levels/one.pak".into(),
                mode: 0o644,
                size: 17,
                chunks: vec![c(3, 17)],
            },
        ],
    };
    use volley_content::wire::{Bits, Hello, Msg};
    let mut bits = Bits::new(13);
    bits.set(0);
    bits.set(12);
    let mut bitfield = 13u16.to_be_bytes().to_vec();
    bitfield.extend_from_slice(&bits.to_bytes());
    vec![
        ("manifest", "seed-signed", m.sign(&key).unwrap()),
        ("manifest", "seed-body", m.body()),
        (
            "peer_wire",
            "seed-hello",
            Msg::Hello(Hello {
                peer_id: 7,
                manifest_id: [3; 32],
                chunks: 13,
            })
            .encode(),
        ),
        ("peer_wire", "seed-bitfield", bitfield),
        ("peer_wire", "seed-have", Msg::Have(12).encode()),
        ("peer_wire", "seed-claim", Msg::Claim(4).encode()),
        ("peer_wire", "seed-choke", Msg::Choke.encode()),
        ("chunk_batch", "seed-two", {
            let mut body = Vec::new();
            volley_content::batch::push(&mut body, &[5; 32], b"first chunk");
            volley_content::batch::push(&mut body, &[6; 32], b"");
            body
        }),
    ]
}

#[test]
fn seed_corpus_is_current() {
    let write = std::env::var_os("VOLLEY_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let path = root().join(target).join(name);
        if write {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &bytes).unwrap();
        } else {
            let on_disk = fs::read(&path).unwrap_or_default();
            assert_eq!(
                on_disk,
                bytes,
                "{} is stale; rerun with VOLLEY_WRITE_FUZZ_SEEDS=1",
                path.display()
            );
        }
    }
}

#[test]
fn corpus_replays_without_panics() {
    let mut n = 0;
    for (target, check) in content_checks::CONTENT_TARGETS {
        let dir = root().join(target);
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let data = fs::read(&f).unwrap();
            let r = catch_unwind(AssertUnwindSafe(|| check(&data)));
            assert!(r.is_ok(), "{} panics", f.display());
            n += 1;
        }
    }
    assert!(n >= 2, "corpus missing");
}
