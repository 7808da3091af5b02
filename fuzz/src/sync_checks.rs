// Fuzz checks for `volley-sync`'s decoders: snapshots, rollback messages, netplay packets and
// game states. Compiled by the fuzz crate and by crates/volley-sync/tests/fuzz_corpus.rs, which
// replays corpus-sync/ through them on every `cargo test`. Each check must never panic on any
// input, and whatever decodes must encode back to the same value.

use volley_sync::arena::Arena;
use volley_sync::game::Game;
use volley_sync::netplay::rollback_wire::RollbackStart;
use volley_sync::netplay::{SnapshotClient, SnapshotHost, Start};
use volley_sync::rollback::{ChecksumReport, FinalInputs, InputBatch};
use volley_sync::snapshot::{Decoder, SnapshotConfig};

/// A check: panics on a violated invariant, returns otherwise.
pub type Check = fn(&[u8]);

/// Every sync target and its check.
pub const SYNC_TARGETS: &[(&str, Check)] = &[
    ("snapshot_decode", snapshot_decode),
    ("rollback_wire", rollback_wire),
    ("netplay", netplay),
    ("arena_state", arena_state),
];

/// Snapshot packets: split the input into packets at 0xff bytes and decode them in sequence, so
/// baselines built by earlier packets are exercised.
pub fn snapshot_decode(data: &[u8]) {
    let mut d = Decoder::new(SnapshotConfig::default());
    for packet in data.split(|b| *b == 0xff) {
        if let Ok(s) = d.decode(packet) {
            assert!(s.entities.len() <= SnapshotConfig::default().max_entities);
        }
    }
}

/// Rollback messages decode to values that encode back to something decoding to the same.
pub fn rollback_wire(data: &[u8]) {
    if let Ok(b) = InputBatch::<<Arena as Game>::Input>::decode::<Arena>(data) {
        let again = InputBatch::decode::<Arena>(&b.encode::<Arena>());
        assert_eq!(again.ok(), Some(b));
    }
    if let Ok(c) = ChecksumReport::decode(data) {
        assert_eq!(ChecksumReport::decode(&c.encode()).ok(), Some(c));
    }
    if let Ok(f) = FinalInputs::<<Arena as Game>::Input>::decode::<Arena>(data) {
        let again = FinalInputs::decode::<Arena>(&f.encode::<Arena>());
        assert_eq!(again.ok(), Some(f));
    }
}

/// Netplay packets into a live host and client.
pub fn netplay(data: &[u8]) {
    let mut host = SnapshotHost::new(Arena::new(2, 1), 2, 2);
    host.join(0);
    let _ = host.on_input_packet(0, data);
    let _ = host.on_input_packet(1, data);
    let _ = host.tick();
    let _ = host.tick();
    let mut client = SnapshotClient::<Arena>::new(Start {
        slot: 0,
        players: 2,
        tick_hz: 60,
        snapshot_every: 2,
    });
    let _ = client.on_packet(data, 0.0);
    let _ = client.frame(Default::default());
    let _ = client.render(50.0);
    if let Ok(s) = Start::decode(data) {
        assert_eq!(Start::decode(&s.encode()).ok(), Some(s));
    }
    if let Ok(s) = RollbackStart::decode(data) {
        assert_eq!(RollbackStart::decode(&s.encode()).ok(), Some(s));
    }
}

/// Arena states (what a resync carries): a decoded state encodes to exactly the input.
pub fn arena_state(data: &[u8]) {
    if let Some(a) = Arena::decode_state(data) {
        assert_eq!(a.encode_state(), data);
        let _ = a.checksum();
    }
}
