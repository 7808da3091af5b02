//! Replays the checked-in sync fuzz corpus (`fuzz/corpus-sync/<target>/*`) through the same
//! checks the cargo-fuzz targets run (`fuzz/src/sync_checks.rs`, compiled in here), so every
//! `cargo test` re-tests each input. `seed-*` files are valid encodings written by
//! `VOLLEY_WRITE_FUZZ_SEEDS=1 cargo test -p volley-sync --test fuzz_corpus`.

#[path = "../../../fuzz/src/sync_checks.rs"]
mod sync_checks;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use volley_sync::arena::{Arena, ArenaInput, Bot};
use volley_sync::game::Game;
use volley_sync::netplay::rollback_wire::RollbackStart;
use volley_sync::rollback::{ChecksumReport, InputBatch};
use volley_sync::snapshot::{Encoder, Snapshot, SnapshotConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus-sync")
}

/// Valid encodings per target, to start the fuzzer from and to replay.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut a = Arena::new(4, 3);
    let mut bots: Vec<Bot> = (0..4).map(|s| Bot::new(s, s as u64)).collect();
    let mut enc = Encoder::new(SnapshotConfig::default());
    let mut packets = Vec::new();
    for _ in 0..40 {
        let inputs: Vec<ArenaInput> = bots.iter_mut().map(|b| b.input(&a)).collect();
        a.step(&inputs);
        if let Ok(p) = enc.encode(
            &Snapshot {
                tick: a.frame(),
                entities: a.entities(),
            },
            1100,
        ) {
            packets.push(p);
        }
        enc.on_ack(a.frame());
    }
    let joined: Vec<u8> = packets
        .iter()
        .take(3)
        .flat_map(|p| p.iter().copied().chain([0xff]))
        .collect();
    let batch = InputBatch {
        slot: 1,
        first_frame: 10,
        sender_frame: 12,
        ack_frame: 9,
        inputs: vec![
            ArenaInput {
                move_x: 1,
                move_y: -1,
                aim: 7,
                fire: true
            };
            3
        ],
    };
    let report = ChecksumReport {
        slot: 2,
        frame: 40,
        checksum: a.checksum(),
    };
    let start = RollbackStart {
        slot: 1,
        tick_hz: 60,
        seed: 7,
        players: vec![11, 12, 13],
    };
    vec![
        (
            "snapshot_decode",
            "seed-first",
            packets.first().cloned().unwrap_or_default(),
        ),
        ("snapshot_decode", "seed-sequence", joined),
        ("rollback_wire", "seed-batch", batch.encode::<Arena>()),
        ("rollback_wire", "seed-report", report.encode()),
        ("netplay", "seed-rollback-start", start.encode()),
        ("netplay", "seed-input", {
            let mut p = vec![1u8];
            p.extend_from_slice(&u32::MAX.to_be_bytes());
            p.extend_from_slice(&0u32.to_be_bytes());
            p.push(1);
            p.extend_from_slice(&Arena::encode_input(&ArenaInput::default()));
            p
        }),
        ("arena_state", "seed-state", a.encode_state()),
    ]
}

#[test]
fn seeds_are_current() {
    let write = std::env::var_os("VOLLEY_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let path = root().join(target).join(name);
        if write {
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, &bytes).expect("write seed");
        } else {
            let on_disk = fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; regenerate the seeds", path.display()));
            assert_eq!(
                on_disk,
                bytes,
                "{} is stale; regenerate the seeds",
                path.display()
            );
        }
    }
}

#[test]
fn corpus_replays_through_every_check() {
    let mut replayed = 0;
    let mut failures = Vec::new();
    for (target, check) in sync_checks::SYNC_TARGETS {
        let dir = root().join(target);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus folder {} missing: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus of {target} is empty");
        for f in files {
            let data = fs::read(&f).expect("read");
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(f.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} inputs broke their check: {failures:?}",
        failures.len()
    );
}

#[test]
fn random_bytes_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for _ in 0..3000 {
        let len = rng.gen_range(0..300);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        for (_, check) in sync_checks::SYNC_TARGETS {
            check(&data);
        }
    }
}
