//! The checks behind every fuzz target, as plain functions of the fuzzer's input bytes.
//!
//! This one file is compiled twice: by the fuzz crate, whose `fuzz_targets/*.rs` each call one
//! function here, and by `crates/volley-proto/tests/fuzz_corpus.rs` (through `#[path]`), so
//! `cargo test` replays the checked-in corpus through exactly the code the fuzzer ran. A check
//! returns when the input was handled correctly (accepted or refused with an error) and panics
//! when an invariant breaks; libFuzzer reports the panic as a crash.
//!
//! The invariants, beyond "never panics":
//! - every decoder: a value it accepts survives encode → decode unchanged;
//! - fixed-layout encodings (`NodeDatagram`, `Probe`, tickets): an accepted input is
//!   byte-for-byte the encoding of what it decoded to, so there is one wire form per value;
//! - tickets: only the untouched seal of a live ticket opens, and it opens to the same claims.

use arbitrary::Unstructured;
use volley_proto::codec::{Reader, Writer};
use volley_proto::msg::{frame_len, Down, NodeDatagram, PeerDatagram, PeerFrame, Probe, Up};
use volley_proto::ticket::{Opened, Ticket, TicketError, TicketKey, NONCE_BYTES};
use volley_proto::{from_hex, to_hex, DecodeError, Fingerprint};

/// A check: panics if `data` breaks an invariant of the code under test.
pub type Check = fn(&[u8]);

/// Every target: its name (the binary in `fuzz/fuzz_targets/` and the folder in `fuzz/corpus/`)
/// and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("up", up),
    ("down", down),
    ("peer_frame", peer_frame),
    ("peer_datagram", peer_datagram),
    ("node_datagram", node_datagram),
    ("probe", probe),
    ("ticket_open", ticket_open),
    ("ticket_seal_corrupt", ticket_seal_corrupt),
    ("msg_roundtrip", msg_roundtrip),
    ("hex", hex),
    ("codec", codec),
    ("api_json", api_json),
];

/// The key every ticket target seals and opens with. Fixed so a corpus file means the same thing
/// on every run and every machine.
pub const TICKET_KEY: [u8; 32] = *b"volley-fuzz-ticket-key-32-bytes!";
/// The nonce `ticket_seal_corrupt` seals with (fixed for the same reason).
pub const TICKET_NONCE: [u8; NONCE_BYTES] = *b"volley-fuzz-nonce-24byte";
/// The clock every ticket target opens at, Unix milliseconds (2023-11-14).
pub const NOW_MS: u64 = 1_700_000_000_000;

/// Most frames `msg_roundtrip` reads from one input, most edits `ticket_seal_corrupt` applies,
/// most operations `codec` runs: bounds that keep one execution short.
const MAX_STEPS: usize = 64;
/// Most bytes one `ticket_seal_corrupt` extension appends.
const MAX_EXTEND_BYTES: usize = 32;

/// `Up::decode` on a frame body.
pub fn up(data: &[u8]) {
    if let Ok(msg) = Up::decode(data) {
        let again = Up::decode(framed_body(&msg.encode()));
        assert_eq!(again, Ok(msg), "Up changed across encode/decode");
    }
}

/// `Down::decode` on a frame body.
pub fn down(data: &[u8]) {
    if let Ok(msg) = Down::decode(data) {
        let again = Down::decode(framed_body(&msg.encode()));
        assert_eq!(again, Ok(msg), "Down changed across encode/decode");
    }
}

/// `PeerFrame::decode`; its two encodings must carry the same body.
pub fn peer_frame(data: &[u8]) {
    if let Ok(frame) = PeerFrame::decode(data) {
        let bytes = frame.encode();
        assert_eq!(
            framed_body(&frame.encode_framed()),
            &bytes[..],
            "encode_framed and encode disagree"
        );
        assert_eq!(
            PeerFrame::decode(&bytes),
            Ok(frame),
            "PeerFrame changed across encode/decode"
        );
    }
}

/// `PeerDatagram::decode`.
pub fn peer_datagram(data: &[u8]) {
    if let Ok(dgram) = PeerDatagram::decode(data) {
        let again = PeerDatagram::decode(&dgram.encode());
        assert_eq!(
            again,
            Ok(dgram),
            "PeerDatagram changed across encode/decode"
        );
    }
}

/// `NodeDatagram::decode`; fixed layout, so accepted bytes must re-encode exactly.
pub fn node_datagram(data: &[u8]) {
    if let Ok(dgram) = NodeDatagram::decode(data) {
        assert_eq!(dgram.encode(), data, "NodeDatagram has two wire forms");
    }
}

/// `Probe::decode`; fixed layout, and nothing `is_probe` rejects may decode.
pub fn probe(data: &[u8]) {
    if let Ok(p) = Probe::decode(data) {
        assert!(
            Probe::is_probe(data),
            "decoded a probe that is_probe rejects"
        );
        assert_eq!(p.encode(), data, "Probe has two wire forms");
    }
}

/// Raw bytes into `Ticket::open`. An opened ticket is live, is the exact seal of its claims
/// under its nonce, and opens under no other key.
pub fn ticket_open(data: &[u8]) {
    let key = TicketKey::from_bytes(TICKET_KEY);
    match Ticket::open(data, &key, NOW_MS) {
        Ok(Opened { ticket, nonce }) => {
            assert!(ticket.expires_at_ms > NOW_MS, "opened an expired ticket");
            assert_eq!(
                ticket.seal(&key, nonce),
                data,
                "opened bytes that are not the seal of their claims"
            );
            let mut other = TICKET_KEY;
            other[0] ^= 1;
            assert_eq!(
                Ticket::open(data, &TicketKey::from_bytes(other), NOW_MS),
                Err(TicketError::Forged),
                "ticket opened under a foreign key"
            );
        }
        Err(TicketError::Expired { ago_ms }) => {
            let expires_at_ms = data
                .get(1..9)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            assert_eq!(
                expires_at_ms.map(|e| NOW_MS - e),
                Some(ago_ms),
                "Expired reports the wrong age"
            );
        }
        Err(_) => {}
    }
}

/// Builds a ticket from the input, seals it with the fixed key and nonce, edits the sealed bytes
/// as the rest of the input says (flip, truncate, extend, remove), then opens. Changed bytes
/// must never open; unchanged bytes must open to the very same ticket, or be `Expired`.
pub fn ticket_seal_corrupt(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(ticket) = arbitrary_ticket(&mut u) else {
        return;
    };
    let key = TicketKey::from_bytes(TICKET_KEY);
    let sealed = ticket.seal(&key, TICKET_NONCE);
    let mut bytes = sealed.clone();
    // Running out of input just ends the edits early.
    let _ = corrupt(&mut u, &mut bytes);
    let opened = Ticket::open(&bytes, &key, NOW_MS);
    if bytes != sealed {
        assert!(
            opened.is_err(),
            "an altered ticket opened: {opened:?} from {}",
            to_hex(&bytes)
        );
    } else if ticket.expires_at_ms > NOW_MS {
        let want = Opened {
            ticket,
            nonce: TICKET_NONCE,
        };
        assert_eq!(opened, Ok(want), "seal → open changed the ticket");
    } else {
        let ago_ms = NOW_MS - ticket.expires_at_ms;
        assert_eq!(opened, Err(TicketError::Expired { ago_ms }));
    }
}

/// Every claim straight from `arbitrary`, including IPv6 flow info and scope id: a ticket must
/// carry whatever address the node was given.
fn arbitrary_ticket(u: &mut Unstructured<'_>) -> arbitrary::Result<Ticket> {
    Ok(Ticket {
        player_id: u.arbitrary()?,
        room_id: u.arbitrary()?,
        node_addr: u.arbitrary()?,
        fingerprint: Fingerprint(u.arbitrary()?),
        expires_at_ms: u.arbitrary()?,
    })
}

fn corrupt(u: &mut Unstructured<'_>, bytes: &mut Vec<u8>) -> arbitrary::Result<()> {
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        match u.choose_index(4)? {
            0 => {
                if !bytes.is_empty() {
                    let i = u.choose_index(bytes.len())?;
                    let mask: u8 = u.arbitrary()?;
                    if let Some(b) = bytes.get_mut(i) {
                        *b ^= mask;
                    }
                }
            }
            1 => {
                let len = u.int_in_range(0..=bytes.len())?;
                bytes.truncate(len);
            }
            2 => {
                let mut extra = vec![0u8; u.int_in_range(1..=MAX_EXTEND_BYTES)?];
                u.fill_buffer(&mut extra)?;
                bytes.extend_from_slice(&extra);
            }
            _ => {
                if !bytes.is_empty() {
                    let i = u.choose_index(bytes.len())?;
                    bytes.remove(i);
                }
            }
        }
    }
    Ok(())
}

/// A control stream: the input as a whole as one `Up` and one `Down` body, then split into
/// length-prefixed frames with `frame_len` the way a node or client reads its stream, each body
/// decoded as both. Anything accepted must survive encode → decode, and its encoding must be
/// stable (encoding the decoded re-encoding gives the same bytes).
pub fn msg_roundtrip(data: &[u8]) {
    round_trip_body(data);
    let mut rest = data;
    for _ in 0..MAX_STEPS {
        let Some((prefix, tail)) = rest.split_first_chunk::<4>() else {
            return;
        };
        // A reader that meets an oversized or cut-off frame drops the connection; so do we.
        let Ok(len) = frame_len(*prefix) else {
            return;
        };
        let Some((body, tail)) = tail.split_at_checked(len) else {
            return;
        };
        round_trip_body(body);
        rest = tail;
    }
}

fn round_trip_body(body: &[u8]) {
    if let Ok(msg) = Up::decode(body) {
        let bytes = msg.encode();
        let again = Up::decode(framed_body(&bytes));
        assert_eq!(again.as_ref(), Ok(&msg), "Up changed across encode/decode");
        if let Ok(again) = again {
            assert_eq!(again.encode(), bytes, "Up encoding is not stable");
        }
    }
    if let Ok(msg) = Down::decode(body) {
        let bytes = msg.encode();
        let again = Down::decode(framed_body(&bytes));
        assert_eq!(
            again.as_ref(),
            Ok(&msg),
            "Down changed across encode/decode"
        );
        if let Ok(again) = again {
            assert_eq!(again.encode(), bytes, "Down encoding is not stable");
        }
    }
}

/// The body of a frame our own encoder wrote; its length prefix must pass `frame_len`.
fn framed_body(framed: &[u8]) -> &[u8] {
    let Some((prefix, body)) = framed.split_first_chunk::<4>() else {
        panic!("encoder wrote no length prefix: {}", to_hex(framed));
    };
    assert_eq!(
        frame_len(*prefix),
        Ok(body.len()),
        "length prefix disagrees with the body, or frame_len refuses our own frame"
    );
    body
}

/// `Fingerprint::from_hex` and `from_hex` on the input as text. Accepted text re-encodes to its
/// lower-case self, and the length bound is exact.
pub fn hex(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lower = text.to_ascii_lowercase();
    if let Ok(fp) = Fingerprint::from_hex(&text) {
        assert_eq!(fp.to_hex(), lower, "fingerprint hex round trip");
    }
    let max_len = usize::from(data.first().copied().unwrap_or(0) % 64);
    match from_hex(&text, max_len) {
        Ok(bytes) => {
            assert!(bytes.len() <= max_len, "from_hex ignored its bound");
            assert_eq!(to_hex(&bytes), lower, "hex round trip");
        }
        Err(DecodeError::TooLong { len, max, .. }) => {
            assert!(len > max, "TooLong for a length within the bound");
        }
        Err(_) => {}
    }
}

/// `codec::Reader` driven by the input itself: each step reads an operation byte, then that
/// field from the same reader. Whatever a step reads must survive `Writer` → `Reader`, and its
/// re-encoding can only be shorter (varints may arrive over-long, never leave that way).
pub fn codec(data: &[u8]) {
    let mut r = Reader::new(data);
    for _ in 0..MAX_STEPS {
        let Ok(op) = r.u8() else {
            return;
        };
        // The high bits pick a length bound, so limits are exercised and not just the happy path.
        let max = usize::from(op >> 3) * 8;
        let before = r.remaining();
        // A failed read may have consumed part of the field; a decoder gives up there too.
        let Ok(field) = Field::read(op, max, &mut r) else {
            return;
        };
        let consumed = before - r.remaining();
        let mut w = Writer::new();
        field.write(&mut w);
        let written = w.into_bytes();
        assert!(
            written.len() <= consumed,
            "{field:?} re-encoded longer than read: {} > {consumed}",
            written.len()
        );
        let mut again = Reader::new(&written);
        assert_eq!(
            Field::read(op, max, &mut again),
            Ok(field),
            "field changed across Writer → Reader"
        );
        assert_eq!(again.finish(), Ok(()), "Writer wrote more than one field");
    }
}

/// One field of each kind `Reader` reads, for [`codec`].
#[derive(Debug, PartialEq, Eq)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Str(&'a str),
    Addr(std::net::SocketAddr),
    U16(u16),
    U32(u32),
    U64(u64),
    Len(usize),
}

impl<'a> Field<'a> {
    fn read(op: u8, max: usize, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(match op & 7 {
            0 => Field::Varint(r.varint()?),
            1 => Field::Bytes(r.bytes("bytes", max)?),
            2 => Field::Str(r.string("string", max)?),
            3 => Field::Addr(r.socket_addr()?),
            4 => Field::U16(r.u16()?),
            5 => Field::U32(r.u32()?),
            6 => Field::U64(r.u64()?),
            _ => {
                let len = r.len("len", max)?;
                assert!(len <= max, "len ignored its bound: {len} > {max}");
                Field::Len(len)
            }
        })
    }

    fn write(&self, w: &mut Writer) {
        match self {
            Field::Varint(v) => w.varint(*v),
            Field::Bytes(b) => w.bytes(b),
            Field::Str(s) => w.string(s),
            Field::Addr(a) => w.socket_addr(a),
            Field::U16(v) => w.u16(*v),
            Field::U32(v) => w.u32(*v),
            Field::U64(v) => w.u64(*v),
            Field::Len(n) => w.varint(*n as u64),
        };
    }
}

/// The JSON bodies the node's HTTP API parses, and chat channel names. Any accepted body must
/// serialize and parse again; an accepted channel name is the canonical name of what it parsed to.
pub fn api_json(data: &[u8]) {
    use volley_proto::api;
    fn again<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8]) {
        if let Ok(v) = serde_json::from_slice::<T>(data) {
            let text = serde_json::to_vec(&v).expect("an accepted body serializes");
            serde_json::from_slice::<T>(&text).expect("what we serialize parses");
        }
    }
    again::<api::DeviceLogin>(data);
    again::<api::EmailRegister>(data);
    again::<api::EmailLogin>(data);
    again::<api::CustomLogin>(data);
    again::<api::RefreshRequest>(data);
    again::<api::LinkRequest>(data);
    again::<api::CreateLobby>(data);
    again::<api::UpdateLobby>(data);
    again::<api::MemberRequest>(data);
    again::<api::SendChat>(data);
    again::<api::TicketRequest>(data);
    again::<api::MatchResult>(data);
    again::<api::CreateRoom>(data);
    again::<api::JoinRoom>(data);
    again::<api::Event>(data);
    again::<api::Gift>(data);
    again::<api::RedeemRequest>(data);
    again::<api::PurchaseRequest>(data);
    again::<api::GrantRequest>(data);
    again::<api::MintItemRequest>(data);
    again::<api::ScoreRequest>(data);
    again::<api::BonusCode>(data);
    again::<api::BoardDef>(data);
    again::<api::StoreItem>(data);
    again::<api::Redemption>(data);
    again::<api::PeerAnnounce>(data);
    again::<api::ClientEvent>(data);
    again::<api::ChunkList>(data);
    again::<api::LoginList>(data);
    let text = String::from_utf8_lossy(data);
    if let Some(ch) = api::Channel::parse(&text) {
        assert_eq!(ch.name(), text, "channel names are canonical");
    }
}
