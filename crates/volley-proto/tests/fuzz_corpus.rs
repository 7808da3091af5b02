//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/*`) through the same checks the
//! cargo-fuzz targets run, so every `cargo test` re-tests each input the fuzzer ever found
//! interesting, on stable and without libFuzzer.
//!
//! The checks are `fuzz/src/checks.rs`, compiled into this test as a module: one source for both,
//! so a corpus file cannot mean one thing to the fuzzer and another here. The `seed-*` files are
//! valid encodings built by [`seeds`]; `seed_corpus_is_current` fails when the wire format moves
//! on without them. Regenerate with
//! `VOLLEY_WRITE_FUZZ_SEEDS=1 cargo test -p volley-proto --test fuzz_corpus`.

#[path = "../../../fuzz/src/checks.rs"]
mod checks;

use std::fs;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use volley_proto::msg::{
    Down, NodeDatagram, PathKind, PeerDatagram, PeerFrame, PeerInfo, Probe, RejectCode, Up,
};
use volley_proto::ticket::{Ticket, TicketKey};
use volley_proto::{to_hex, Fingerprint};

/// Set to write the `seed-*` files instead of comparing them.
const WRITE_SEEDS_ENV: &str = "VOLLEY_WRITE_FUZZ_SEEDS";

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

/// The files of one target's corpus folder, sorted so failures always list in the same order.
fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read corpus folder {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_through_every_check() {
    let root = corpus_root();
    let entries = fs::read_dir(&root).unwrap_or_else(|e| {
        panic!(
            "fuzz corpus missing at {}: {e}; it is checked in, restore it",
            root.display()
        )
    });
    let mut dirs: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", root.display()))
                .path()
        })
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    // Every folder must belong to a target, or its inputs would silently go unreplayed.
    for dir in &dirs {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            checks::TARGETS.iter().any(|(t, _)| *t == name),
            "corpus folder {} matches no fuzz target",
            dir.display()
        );
    }

    let mut failures = Vec::new();
    let mut replayed = 0usize;
    for (target, check) in checks::TARGETS {
        let dir = root.join(target);
        assert!(
            dir.is_dir(),
            "fuzz target {target} has no corpus folder {}",
            dir.display()
        );
        let files = corpus_files(&dir);
        assert!(!files.is_empty(), "corpus of fuzz target {target} is empty");
        for path in files {
            let data =
                fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(format!("{}: {}", path.display(), to_hex(&data)));
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} corpus inputs broke their check (panic messages above):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn seed_corpus_is_current() {
    let root = corpus_root();
    let write = std::env::var_os(WRITE_SEEDS_ENV).is_some();
    let mut stale = Vec::new();
    for (target, name, bytes) in seeds() {
        let path = root.join(target).join(format!("seed-{name}"));
        if write {
            let dir = root.join(target);
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        } else if fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "seed corpus files missing or stale (the wire format changed?); regenerate with \
         `{WRITE_SEEDS_ENV}=1 cargo test -p volley-proto --test fuzz_corpus`:\n{}",
        stale.join("\n")
    );
}

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
}

fn peer(id: u64, candidates: &[&str]) -> PeerInfo {
    PeerInfo {
        player_id: id,
        fingerprint: Fingerprint([id as u8; 32]),
        candidates: candidates.iter().map(|s| addr(s)).collect(),
    }
}

/// A control frame body: what `Up::decode` / `Down::decode` take.
fn body(framed: Vec<u8>) -> Vec<u8> {
    framed.get(4..).map(<[u8]>::to_vec).unwrap_or_default()
}

fn sample_ticket(node_addr: &str, expires_at_ms: u64) -> Ticket {
    Ticket {
        player_id: 42,
        room_id: 7,
        node_addr: addr(node_addr),
        fingerprint: Fingerprint([0xab; 32]),
        expires_at_ms,
    }
}

fn sealed(node_addr: &str, expires_at_ms: u64) -> Vec<u8> {
    sample_ticket(node_addr, expires_at_ms).seal(
        &TicketKey::from_bytes(checks::TICKET_KEY),
        *b"seed-corpus-nonce-24byte",
    )
}

/// Input for `ticket_seal_corrupt`: the claims in the order `arbitrary` reads them (two u64s, the
/// address-family bool, the address, the fingerprint, the expiry), then the edit script. The
/// v6 seeds carry zero flow info and scope id: the ticket encoding drops both.
fn seal_corrupt_input(v4: bool, expires_at_ms: u64, edits: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&42u64.to_le_bytes());
    out.extend_from_slice(&7u64.to_le_bytes());
    if v4 {
        out.push(1);
        out.extend_from_slice(&[203, 0, 113, 7, 0x11, 0x51]);
    } else {
        out.push(0);
        out.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        out.extend_from_slice(&[0x11, 0x51, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
    out.extend_from_slice(&[0xab; 32]);
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    out.extend_from_slice(edits);
    out
}

/// Small valid encodings of every message kind, one folder per target.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let live_ms = checks::NOW_MS + 60_000;
    let ups = [
        (
            "hello",
            Up::Hello {
                ticket: sealed("198.51.100.1:4433", live_ms),
                local_addrs: vec![addr("192.168.1.20:50000"), addr("[fe80::1]:50000")],
            },
        ),
        (
            "relay",
            Up::Relay {
                to: 9,
                frame: PeerFrame {
                    seq: 3,
                    payload: b"move e2e4".to_vec(),
                }
                .encode(),
            },
        ),
        ("punch-request", Up::PunchRequest { peer: 4 }),
        (
            "path-report-direct",
            Up::PathReport {
                peer: 4,
                path: PathKind::Direct,
                rtt_us: 12_345,
            },
        ),
        (
            "path-report-relay",
            Up::PathReport {
                peer: 5,
                path: PathKind::Relay,
                rtt_us: 1 << 40,
            },
        ),
        ("leave", Up::Leave),
    ];
    let downs = [
        (
            "welcome",
            Down::Welcome {
                player_id: 1,
                room_id: 2,
                observed_addr: addr("198.51.100.1:9"),
                peers: vec![
                    peer(3, &["203.0.113.9:5000", "[::1]:77"]),
                    peer(4, &["10.0.0.4:6000"]),
                ],
            },
        ),
        (
            "welcome-empty-v6",
            Down::Welcome {
                player_id: 1,
                room_id: 2,
                observed_addr: addr("[2001:db8::7]:4433"),
                peers: vec![],
            },
        ),
        (
            "reject",
            Down::Reject {
                code: RejectCode::Replayed,
                detail: "ticket already used from another address".into(),
            },
        ),
        (
            "peer-joined",
            Down::PeerJoined(peer(5, &["203.0.113.5:1234"])),
        ),
        ("peer-left", Down::PeerLeft { player_id: 5 }),
        (
            "relayed",
            Down::Relayed {
                from: 5,
                frame: PeerFrame {
                    seq: 70,
                    payload: vec![0; 10],
                }
                .encode(),
            },
        ),
        ("punch", Down::Punch(peer(6, &["[2001:db8::6]:7000"]))),
    ];
    let frames = [
        (
            "seq0-empty",
            PeerFrame {
                seq: 0,
                payload: vec![],
            },
        ),
        (
            "seq63",
            PeerFrame {
                seq: 63,
                payload: b"x".to_vec(),
            },
        ),
        (
            "seq64",
            PeerFrame {
                seq: 64,
                payload: b"hello".to_vec(),
            },
        ),
        (
            "seq2pow40",
            PeerFrame {
                seq: 1 << 40,
                payload: vec![5; 40],
            },
        ),
    ];
    let dgrams = [
        ("unreliable", PeerDatagram::Unreliable(b"pos 1 2".to_vec())),
        ("unreliable-empty", PeerDatagram::Unreliable(vec![])),
        ("ack", PeerDatagram::Ack { next_seq: 77 }),
        ("ack-big", PeerDatagram::Ack { next_seq: 1 << 31 }),
        ("ping", PeerDatagram::Ping { id: 1, sent_us: 2 }),
        ("pong", PeerDatagram::Pong { id: 1, sent_us: 2 }),
    ];
    let node_dgrams = [
        (
            "to-peer",
            NodeDatagram::ToPeer {
                peer: 3,
                payload: PeerDatagram::Ack { next_seq: 9 }.encode(),
            },
        ),
        (
            "from-peer",
            NodeDatagram::FromPeer {
                peer: 4,
                payload: PeerDatagram::Unreliable(b"state".to_vec()).encode(),
            },
        ),
    ];
    let probes = [
        (
            "request",
            Probe {
                is_reply: false,
                room_id: 1,
                from: 2,
                to: 3,
                observed: None,
            },
        ),
        (
            "reply-v4",
            Probe {
                is_reply: true,
                room_id: 1,
                from: 3,
                to: 2,
                observed: Some(addr("192.0.2.1:4000")),
            },
        ),
        (
            "reply-v6",
            Probe {
                is_reply: true,
                room_id: 1,
                from: 3,
                to: 2,
                observed: Some(addr("[2001:db8::2]:4000")),
            },
        ),
    ];

    let mut out: Vec<(&'static str, &'static str, Vec<u8>)> = Vec::new();
    for (name, m) in &ups {
        out.push(("up", name, body(m.encode())));
    }
    for (name, m) in &downs {
        out.push(("down", name, body(m.encode())));
    }
    for (name, f) in &frames {
        out.push(("peer_frame", name, f.encode()));
    }
    for (name, d) in &dgrams {
        out.push(("peer_datagram", name, d.encode()));
    }
    for (name, d) in &node_dgrams {
        out.push(("node_datagram", name, d.encode()));
    }
    for (name, p) in &probes {
        out.push(("probe", name, p.encode()));
    }
    out.push((
        "ticket_open",
        "live-v4",
        sealed("198.51.100.1:4433", live_ms),
    ));
    out.push((
        "ticket_open",
        "live-v6",
        sealed("[2001:db8::1]:4433", live_ms),
    ));
    out.push((
        "ticket_open",
        "expired",
        sealed("198.51.100.1:4433", checks::NOW_MS),
    ));
    out.push(("ticket_seal_corrupt", "empty", vec![]));
    out.push((
        "ticket_seal_corrupt",
        "v4-untouched",
        seal_corrupt_input(true, live_ms, &[]),
    ));
    out.push((
        "ticket_seal_corrupt",
        "v6-untouched",
        seal_corrupt_input(false, live_ms, &[]),
    ));
    out.push((
        "ticket_seal_corrupt",
        "v4-edited",
        seal_corrupt_input(true, live_ms, &[0, 20, 0x80, 1, 40, 2, 3, 1, 2, 3]),
    ));
    out.push((
        "ticket_seal_corrupt",
        "v4-expired",
        seal_corrupt_input(true, 1, &[]),
    ));
    // Streams: several frames back to back, as a node or a client reads them.
    let up_stream: Vec<u8> = ups.iter().flat_map(|(_, m)| m.encode()).collect();
    let down_stream: Vec<u8> = downs.iter().flat_map(|(_, m)| m.encode()).collect();
    out.push(("msg_roundtrip", "up-stream", up_stream));
    out.push(("msg_roundtrip", "down-stream", down_stream));
    out.push(("msg_roundtrip", "leave-body", body(Up::Leave.encode())));
    let fp = Fingerprint::of_der(b"seed certificate");
    out.push(("hex", "fingerprint", fp.to_hex().into_bytes()));
    out.push((
        "hex",
        "fingerprint-upper",
        fp.to_hex().to_ascii_uppercase().into_bytes(),
    ));
    out.push(("hex", "short", b"\x3f00ff10".to_vec()));
    out.push((
        "hex",
        "ticket",
        to_hex(&sealed("198.51.100.1:4433", live_ms)).into_bytes(),
    ));
    // Operation byte (low 3 bits: field kind; high bits: length bound / 8), then the field.
    out.push((
        "codec",
        "each-field",
        vec![
            0x00, 0x25, // varint 37
            0x41, 0x03, b'a', b'b', b'c', // bytes, bound 64
            0x42, 0x02, 0xc3, 0xa9, // string "é", bound 64
            0x03, 4, 127, 0, 0, 1, 0x11, 0x51, // socket address
            0x04, 1, 2, // u16
            0x05, 1, 2, 3, 4, // u32
            0x06, 1, 2, 3, 4, 5, 6, 7, 8, // u64
            0x47, 0x40, 0x10, // len 16 as a 2-byte varint, bound 64
        ],
    ));
    out.push((
        "codec",
        "long-varints",
        vec![
            0x00, 0xc0, 0, 0, 0, 0, 0, 0, 1, // 1 as an 8-byte varint
            0x00, 0x80, 0, 0, 1, // 1 as a 4-byte varint
            0x03, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 9, // [::1]:9
        ],
    ));
    out
}
