//! Messages between a player and its node, and between two players.
//!
//! Control frames travel on the node connection's reliable stream as
//! `[length u32][version u8][tag u8][fields]`. Peer frames travel either on a direct QUIC
//! connection's reliable stream or inside [`Up::Relay`] / [`Down::Relayed`]; the encoding is the
//! same on both, which is what lets a peer link move between paths without re-encoding.

use std::net::SocketAddr;

use crate::codec::{DecodeError, Reader, Writer};
use crate::{Fingerprint, PlayerId, RoomId, PROTOCOL_VERSION};

/// Largest control frame body (after the length prefix). Bounds the receive buffer per
/// connection.
pub const MAX_CONTROL_FRAME_BYTES: usize = 72 * 1024;
/// Largest reliable payload a game may send in one message.
pub const MAX_RELIABLE_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest unreliable payload; chosen so a relayed datagram still fits a 1200-byte QUIC packet.
pub const MAX_UNRELIABLE_PAYLOAD_BYTES: usize = 1100;
/// Most peers a room can list. Bounds `Welcome`.
pub const MAX_PEERS: usize = 64;
/// Most candidate addresses per peer.
pub const MAX_CANDIDATES: usize = 8;
/// Largest sealed ticket.
pub const MAX_TICKET_BYTES: usize = 256;
/// Largest human-readable detail in a rejection.
pub const MAX_DETAIL_BYTES: usize = 256;

/// What the node knows of a peer and vouches for: its identity, the certificate it proved it
/// holds, and where it might be reached (reflexive address first, then its local addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub player_id: PlayerId,
    /// Fingerprint of the certificate the peer presented to the node.
    pub fingerprint: Fingerprint,
    /// Candidate addresses, best first.
    pub candidates: Vec<SocketAddr>,
}

impl PeerInfo {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.player_id).raw(&self.fingerprint.0);
        let n = self.candidates.len().min(MAX_CANDIDATES);
        w.varint(n as u64);
        for addr in self.candidates.iter().take(n) {
            w.socket_addr(addr);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let player_id = r.u64()?;
        let fingerprint = Fingerprint(r.array()?);
        let n = r.len("candidates", MAX_CANDIDATES)?;
        let mut candidates = Vec::with_capacity(n);
        for _ in 0..n {
            candidates.push(r.socket_addr()?);
        }
        Ok(PeerInfo {
            player_id,
            fingerprint,
            candidates,
        })
    }
}

/// Why a node refused a player. Stable numbers: they are on the wire and in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RejectCode {
    /// The ticket or the first frame could not be decoded.
    Malformed = 1,
    /// The ticket's lifetime is over.
    Expired = 2,
    /// The ticket was not sealed by this node's key, or was altered.
    Forged = 3,
    /// The ticket names another node address.
    WrongNode = 4,
    /// The ticket is bound to another certificate than the one presented.
    WrongCertificate = 5,
    /// The ticket was already used from another address.
    Replayed = 6,
    /// The room has no free slot.
    RoomFull = 7,
    /// The room no longer exists.
    RoomGone = 8,
    /// The client speaks another protocol version.
    Version = 9,
    /// The client broke the protocol (e.g. its first frame was not `Hello`).
    Protocol = 10,
    /// The source sent too much, too fast.
    RateLimited = 11,
    /// The handshake took too long.
    Timeout = 12,
}

impl RejectCode {
    /// Every code, for metrics that list them all.
    pub const ALL: [RejectCode; 12] = [
        RejectCode::Malformed,
        RejectCode::Expired,
        RejectCode::Forged,
        RejectCode::WrongNode,
        RejectCode::WrongCertificate,
        RejectCode::Replayed,
        RejectCode::RoomFull,
        RejectCode::RoomGone,
        RejectCode::Version,
        RejectCode::Protocol,
        RejectCode::RateLimited,
        RejectCode::Timeout,
    ];

    /// The code's stable name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Malformed => "malformed",
            RejectCode::Expired => "expired",
            RejectCode::Forged => "forged",
            RejectCode::WrongNode => "wrong_node",
            RejectCode::WrongCertificate => "wrong_certificate",
            RejectCode::Replayed => "replayed",
            RejectCode::RoomFull => "room_full",
            RejectCode::RoomGone => "room_gone",
            RejectCode::Version => "version",
            RejectCode::Protocol => "protocol",
            RejectCode::RateLimited => "rate_limited",
            RejectCode::Timeout => "timeout",
        }
    }

    /// The code for a wire number.
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        RejectCode::ALL
            .into_iter()
            .find(|c| *c as u8 == v)
            .ok_or(DecodeError::UnknownTag {
                what: "reject code",
                tag: u64::from(v),
            })
    }
}

/// Path a peer link currently uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// A QUIC connection straight to the peer.
    Direct,
    /// Through the node.
    Relay,
}

impl PathKind {
    /// `"direct"` or `"relay"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
        }
    }
}

/// Control messages from a player to its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Up {
    /// First frame on a new connection: the sealed ticket and the player's local addresses.
    Hello {
        /// Sealed [`crate::ticket::Ticket`] bytes, opaque to the player.
        ticket: Vec<u8>,
        /// Addresses the player's QUIC socket is bound to, for peers on the same network.
        local_addrs: Vec<SocketAddr>,
    },
    /// A peer frame for the node to forward reliably.
    Relay {
        /// The recipient.
        to: PlayerId,
        /// An encoded [`PeerFrame`].
        frame: Vec<u8>,
    },
    /// Ask the node to have this player and `peer` punch towards each other again.
    PunchRequest {
        /// The peer to try again with.
        peer: PlayerId,
    },
    /// The player's view of its path to a peer, for the node's metrics and dashboard.
    PathReport {
        /// The peer.
        peer: PlayerId,
        /// Path in use.
        path: PathKind,
        /// Smoothed round-trip time to that peer, microseconds.
        rtt_us: u64,
    },
    /// The player leaves the room.
    Leave,
    /// A reliable message for the room's game logic on the node (inputs, checksums...).
    ToNode {
        /// The game's bytes.
        payload: Vec<u8>,
    },
}

/// Control messages from a node to a player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// Admission: who you are, where we saw you, who is already here.
    Welcome {
        /// The player's id.
        player_id: PlayerId,
        /// The room joined.
        room_id: RoomId,
        /// The player's address as the node observed it (its reflexive address).
        observed_addr: SocketAddr,
        /// Peers already in the room.
        peers: Vec<PeerInfo>,
    },
    /// Refusal, then the node closes the connection.
    Reject {
        /// Why.
        code: RejectCode,
        /// Human-readable detail.
        detail: String,
    },
    /// A peer entered the room: start punching towards it.
    PeerJoined(PeerInfo),
    /// A peer left the room.
    PeerLeft {
        /// The peer.
        player_id: PlayerId,
    },
    /// A reliable peer frame forwarded by the node.
    Relayed {
        /// The sender.
        from: PlayerId,
        /// An encoded [`PeerFrame`].
        frame: Vec<u8>,
    },
    /// Punch towards this peer now (it was told the same about you).
    Punch(PeerInfo),
    /// A reliable message from the room's game logic on the node.
    FromNode {
        /// The game's bytes.
        payload: Vec<u8>,
    },
}

const UP_HELLO: u8 = 1;
const UP_RELAY: u8 = 2;
const UP_PUNCH_REQUEST: u8 = 3;
const UP_PATH_REPORT: u8 = 4;
const UP_LEAVE: u8 = 5;
const UP_TO_NODE: u8 = 6;

const DOWN_WELCOME: u8 = 1;
const DOWN_REJECT: u8 = 2;
const DOWN_PEER_JOINED: u8 = 3;
const DOWN_PEER_LEFT: u8 = 4;
const DOWN_RELAYED: u8 = 5;
const DOWN_PUNCH: u8 = 6;
const DOWN_FROM_NODE: u8 = 7;

fn path_tag(p: PathKind) -> u8 {
    match p {
        PathKind::Direct => 1,
        PathKind::Relay => 2,
    }
}

fn path_from(tag: u8) -> Result<PathKind, DecodeError> {
    match tag {
        1 => Ok(PathKind::Direct),
        2 => Ok(PathKind::Relay),
        tag => Err(DecodeError::UnknownTag {
            what: "path",
            tag: u64::from(tag),
        }),
    }
}

/// Wraps a frame body in `[length u32]`.
fn framed(body: Writer) -> Vec<u8> {
    let body = body.into_bytes();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn check_version(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    let found = r.u8()?;
    if found != PROTOCOL_VERSION {
        return Err(DecodeError::Version {
            found,
            expected: PROTOCOL_VERSION,
        });
    }
    Ok(())
}

/// Reads the length prefix of a control frame; the caller then reads that many body bytes.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_CONTROL_FRAME_BYTES {
        return Err(DecodeError::TooLong {
            what: "control frame",
            len,
            max: MAX_CONTROL_FRAME_BYTES,
        });
    }
    Ok(len)
}

impl Up {
    /// Encodes with length prefix, ready to write to the stream.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        w.u8(PROTOCOL_VERSION);
        match self {
            Up::Hello {
                ticket,
                local_addrs,
            } => {
                w.u8(UP_HELLO).bytes(ticket);
                let n = local_addrs.len().min(MAX_CANDIDATES);
                w.varint(n as u64);
                for a in local_addrs.iter().take(n) {
                    w.socket_addr(a);
                }
            }
            Up::Relay { to, frame } => {
                w.u8(UP_RELAY).u64(*to).bytes(frame);
            }
            Up::PunchRequest { peer } => {
                w.u8(UP_PUNCH_REQUEST).u64(*peer);
            }
            Up::PathReport { peer, path, rtt_us } => {
                w.u8(UP_PATH_REPORT)
                    .u64(*peer)
                    .u8(path_tag(*path))
                    .varint(*rtt_us);
            }
            Up::Leave => {
                w.u8(UP_LEAVE);
            }
            Up::ToNode { payload } => {
                w.u8(UP_TO_NODE).bytes(payload);
            }
        }
        framed(w)
    }

    /// Decodes a frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        check_version(&mut r)?;
        let msg = match r.u8()? {
            UP_HELLO => {
                let ticket = r.bytes("ticket", MAX_TICKET_BYTES)?.to_vec();
                let n = r.len("local addresses", MAX_CANDIDATES)?;
                let mut local_addrs = Vec::with_capacity(n);
                for _ in 0..n {
                    local_addrs.push(r.socket_addr()?);
                }
                Up::Hello {
                    ticket,
                    local_addrs,
                }
            }
            UP_RELAY => Up::Relay {
                to: r.u64()?,
                frame: r
                    .bytes("relayed frame", MAX_RELIABLE_PAYLOAD_BYTES + 16)?
                    .to_vec(),
            },
            UP_PUNCH_REQUEST => Up::PunchRequest { peer: r.u64()? },
            UP_PATH_REPORT => Up::PathReport {
                peer: r.u64()?,
                path: path_from(r.u8()?)?,
                rtt_us: r.varint()?,
            },
            UP_LEAVE => Up::Leave,
            UP_TO_NODE => Up::ToNode {
                payload: r
                    .bytes("node message", MAX_RELIABLE_PAYLOAD_BYTES)?
                    .to_vec(),
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "up message",
                    tag: u64::from(tag),
                })
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

impl Down {
    /// Encodes with length prefix, ready to write to the stream.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        w.u8(PROTOCOL_VERSION);
        match self {
            Down::Welcome {
                player_id,
                room_id,
                observed_addr,
                peers,
            } => {
                w.u8(DOWN_WELCOME)
                    .u64(*player_id)
                    .u64(*room_id)
                    .socket_addr(observed_addr);
                let n = peers.len().min(MAX_PEERS);
                w.varint(n as u64);
                for p in peers.iter().take(n) {
                    p.encode(&mut w);
                }
            }
            Down::Reject { code, detail } => {
                let detail = truncate_utf8(detail, MAX_DETAIL_BYTES);
                w.u8(DOWN_REJECT).u8(*code as u8).string(detail);
            }
            Down::PeerJoined(p) => {
                w.u8(DOWN_PEER_JOINED);
                p.encode(&mut w);
            }
            Down::PeerLeft { player_id } => {
                w.u8(DOWN_PEER_LEFT).u64(*player_id);
            }
            Down::Relayed { from, frame } => {
                w.u8(DOWN_RELAYED).u64(*from).bytes(frame);
            }
            Down::Punch(p) => {
                w.u8(DOWN_PUNCH);
                p.encode(&mut w);
            }
            Down::FromNode { payload } => {
                w.u8(DOWN_FROM_NODE).bytes(payload);
            }
        }
        framed(w)
    }

    /// Decodes a frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        check_version(&mut r)?;
        let msg = match r.u8()? {
            DOWN_WELCOME => {
                let player_id = r.u64()?;
                let room_id = r.u64()?;
                let observed_addr = r.socket_addr()?;
                let n = r.len("peers", MAX_PEERS)?;
                let mut peers = Vec::with_capacity(n);
                for _ in 0..n {
                    peers.push(PeerInfo::decode(&mut r)?);
                }
                Down::Welcome {
                    player_id,
                    room_id,
                    observed_addr,
                    peers,
                }
            }
            DOWN_REJECT => Down::Reject {
                code: RejectCode::from_u8(r.u8()?)?,
                detail: r.string("detail", MAX_DETAIL_BYTES)?.to_owned(),
            },
            DOWN_PEER_JOINED => Down::PeerJoined(PeerInfo::decode(&mut r)?),
            DOWN_PEER_LEFT => Down::PeerLeft {
                player_id: r.u64()?,
            },
            DOWN_RELAYED => Down::Relayed {
                from: r.u64()?,
                frame: r
                    .bytes("relayed frame", MAX_RELIABLE_PAYLOAD_BYTES + 16)?
                    .to_vec(),
            },
            DOWN_PUNCH => Down::Punch(PeerInfo::decode(&mut r)?),
            DOWN_FROM_NODE => Down::FromNode {
                payload: r
                    .bytes("node message", MAX_RELIABLE_PAYLOAD_BYTES)?
                    .to_vec(),
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "down message",
                    tag: u64::from(tag),
                })
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Datagrams on the node connection: unreliable peer traffic relayed by the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeDatagram {
    /// Player → node: forward `payload` (an encoded [`PeerDatagram`]) to `peer`.
    ToPeer {
        /// Recipient.
        peer: PlayerId,
        /// Encoded peer datagram.
        payload: Vec<u8>,
    },
    /// Node → player: `payload` came from `peer`.
    FromPeer {
        /// Sender.
        peer: PlayerId,
        /// Encoded peer datagram.
        payload: Vec<u8>,
    },
    /// Player → node: an unreliable message for the room's game logic.
    ToNode {
        /// The game's bytes.
        payload: Vec<u8>,
    },
    /// Node → player: an unreliable message from the room's game logic (e.g. a snapshot).
    FromNode {
        /// The game's bytes.
        payload: Vec<u8>,
    },
}

const DGRAM_TO_PEER: u8 = 0x10;
const DGRAM_FROM_PEER: u8 = 0x11;
const DGRAM_TO_NODE: u8 = 0x12;
const DGRAM_FROM_NODE: u8 = 0x13;

/// Header bytes a relayed datagram adds: tag and peer id.
pub const NODE_DATAGRAM_OVERHEAD: usize = 9;

impl NodeDatagram {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, peer, payload) = match self {
            NodeDatagram::ToPeer { peer, payload } => (DGRAM_TO_PEER, Some(peer), payload),
            NodeDatagram::FromPeer { peer, payload } => (DGRAM_FROM_PEER, Some(peer), payload),
            NodeDatagram::ToNode { payload } => (DGRAM_TO_NODE, None, payload),
            NodeDatagram::FromNode { payload } => (DGRAM_FROM_NODE, None, payload),
        };
        let mut out = Vec::with_capacity(payload.len() + NODE_DATAGRAM_OVERHEAD);
        out.push(tag);
        if let Some(peer) = peer {
            out.extend_from_slice(&peer.to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    /// Decodes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let tag = r.u8()?;
        let peer = match tag {
            DGRAM_TO_PEER | DGRAM_FROM_PEER => Some(r.u64()?),
            DGRAM_TO_NODE | DGRAM_FROM_NODE => None,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "node datagram",
                    tag: u64::from(tag),
                })
            }
        };
        let payload = r.rest();
        if payload.len() > MAX_UNRELIABLE_PAYLOAD_BYTES + 32 {
            return Err(DecodeError::TooLong {
                what: "relayed datagram",
                len: payload.len(),
                max: MAX_UNRELIABLE_PAYLOAD_BYTES + 32,
            });
        }
        let payload = payload.to_vec();
        Ok(match (tag, peer) {
            (DGRAM_TO_PEER, Some(peer)) => NodeDatagram::ToPeer { peer, payload },
            (DGRAM_FROM_PEER, Some(peer)) => NodeDatagram::FromPeer { peer, payload },
            (DGRAM_TO_NODE, _) => NodeDatagram::ToNode { payload },
            _ => NodeDatagram::FromNode { payload },
        })
    }
}

/// A reliable frame between two players. Sequence numbers are per peer link and survive path
/// changes: the receiver orders and deduplicates by them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFrame {
    /// Position in the link's reliable sequence, from 0.
    pub seq: u64,
    /// The game's message.
    pub payload: Vec<u8>,
}

impl PeerFrame {
    /// Encodes without a length prefix (the relay carries lengths itself).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.payload.len() + 10);
        w.varint(self.seq).raw(&self.payload);
        w.into_bytes()
    }

    /// Encodes with a `[length u32]` prefix for a direct stream.
    pub fn encode_framed(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.payload.len() + 10);
        w.varint(self.seq).raw(&self.payload);
        framed(w)
    }

    /// Decodes a body produced by [`PeerFrame::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let seq = r.varint()?;
        let payload = r.rest();
        if payload.len() > MAX_RELIABLE_PAYLOAD_BYTES {
            return Err(DecodeError::TooLong {
                what: "reliable payload",
                len: payload.len(),
                max: MAX_RELIABLE_PAYLOAD_BYTES,
            });
        }
        Ok(PeerFrame {
            seq,
            payload: payload.to_vec(),
        })
    }
}

/// An unreliable datagram between two players.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerDatagram {
    /// A game message on the unreliable channel.
    Unreliable(Vec<u8>),
    /// Cumulative acknowledgement: every reliable frame below `next_seq` was delivered.
    Ack {
        /// The next sequence number the receiver expects.
        next_seq: u64,
    },
    /// Path probe; the peer answers with [`PeerDatagram::Pong`] on the same path.
    Ping {
        /// Probe id.
        id: u32,
        /// Sender's clock, microseconds, echoed back.
        sent_us: u64,
    },
    /// Answer to a ping.
    Pong {
        /// Probe id.
        id: u32,
        /// The ping's `sent_us`.
        sent_us: u64,
    },
}

const PD_UNRELIABLE: u8 = 1;
const PD_ACK: u8 = 2;
const PD_PING: u8 = 3;
const PD_PONG: u8 = 4;

impl PeerDatagram {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(16);
        match self {
            PeerDatagram::Unreliable(p) => {
                w.u8(PD_UNRELIABLE).raw(p);
            }
            PeerDatagram::Ack { next_seq } => {
                w.u8(PD_ACK).varint(*next_seq);
            }
            PeerDatagram::Ping { id, sent_us } => {
                w.u8(PD_PING).u32(*id).u64(*sent_us);
            }
            PeerDatagram::Pong { id, sent_us } => {
                w.u8(PD_PONG).u32(*id).u64(*sent_us);
            }
        }
        w.into_bytes()
    }

    /// Decodes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let msg = match r.u8()? {
            PD_UNRELIABLE => {
                let p = r.rest();
                if p.len() > MAX_UNRELIABLE_PAYLOAD_BYTES {
                    return Err(DecodeError::TooLong {
                        what: "unreliable payload",
                        len: p.len(),
                        max: MAX_UNRELIABLE_PAYLOAD_BYTES,
                    });
                }
                PeerDatagram::Unreliable(p.to_vec())
            }
            PD_ACK => PeerDatagram::Ack {
                next_seq: r.varint()?,
            },
            PD_PING => PeerDatagram::Ping {
                id: r.u32()?,
                sent_us: r.u64()?,
            },
            PD_PONG => PeerDatagram::Pong {
                id: r.u32()?,
                sent_us: r.u64()?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "peer datagram",
                    tag: u64::from(tag),
                })
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

/// A hole-punching probe, sent as a raw UDP datagram from the same socket as QUIC.
///
/// The first byte has the QUIC fixed bit (0x40) clear, so a QUIC endpoint that does not grease
/// that bit drops it; the punching layer picks it out before QUIC sees it. A probe proves
/// nothing about identity: the QUIC handshake that follows does, with the fingerprints the node
/// vouched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// `false` for a probe, `true` for the answer to one.
    pub is_reply: bool,
    /// Room both players are in.
    pub room_id: RoomId,
    /// Sender.
    pub from: PlayerId,
    /// Intended recipient.
    pub to: PlayerId,
    /// In a reply: the source address the replier saw the probe come from.
    pub observed: Option<SocketAddr>,
}

const PROBE_MAGIC: [u8; 4] = *b"VLYP";
/// First byte of every probe: fixed bit clear, so no QUIC packet starts this way.
pub const PROBE_FIRST_BYTE: u8 = 0x00;

impl Probe {
    /// Whether a datagram looks like a probe (cheap test before decoding).
    pub fn is_probe(bytes: &[u8]) -> bool {
        bytes.first() == Some(&PROBE_FIRST_BYTE) && bytes.get(1..5) == Some(&PROBE_MAGIC[..])
    }

    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(48);
        w.u8(PROBE_FIRST_BYTE)
            .raw(&PROBE_MAGIC)
            .u8(PROTOCOL_VERSION)
            .u8(u8::from(self.is_reply))
            .u64(self.room_id)
            .u64(self.from)
            .u64(self.to);
        match &self.observed {
            Some(a) => {
                w.u8(1).socket_addr(a);
            }
            None => {
                w.u8(0);
            }
        }
        w.into_bytes()
    }

    /// Decodes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != PROBE_FIRST_BYTE || r.array::<4>()? != PROBE_MAGIC {
            return Err(DecodeError::Invalid("not a probe"));
        }
        check_version(&mut r)?;
        let is_reply = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::Invalid("probe kind")),
        };
        let room_id = r.u64()?;
        let from = r.u64()?;
        let to = r.u64()?;
        let observed = match r.u8()? {
            0 => None,
            1 => Some(r.socket_addr()?),
            _ => return Err(DecodeError::Invalid("probe observed flag")),
        };
        r.finish()?;
        Ok(Probe {
            is_reply,
            room_id,
            from,
            to,
            observed,
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    fn peer(id: u64) -> PeerInfo {
        PeerInfo {
            player_id: id,
            fingerprint: Fingerprint([id as u8; 32]),
            candidates: vec![addr("203.0.113.9:5000"), addr("[::1]:77")],
        }
    }

    fn body(framed: &[u8]) -> &[u8] {
        framed.get(4..).unwrap_or(&[])
    }

    #[test]
    fn up_round_trips() {
        let msgs = vec![
            Up::Hello {
                ticket: vec![7; 100],
                local_addrs: vec![addr("10.0.0.2:1")],
            },
            Up::Relay {
                to: 9,
                frame: vec![1, 2, 3],
            },
            Up::PunchRequest { peer: 4 },
            Up::PathReport {
                peer: 4,
                path: PathKind::Direct,
                rtt_us: 1234,
            },
            Up::Leave,
        ];
        for m in msgs {
            let enc = m.encode();
            assert_eq!(
                frame_len([enc[0], enc[1], enc[2], enc[3]]),
                Ok(enc.len() - 4)
            );
            assert_eq!(Up::decode(body(&enc)), Ok(m));
        }
    }

    #[test]
    fn down_round_trips() {
        let msgs = vec![
            Down::Welcome {
                player_id: 1,
                room_id: 2,
                observed_addr: addr("198.51.100.1:9"),
                peers: vec![peer(3), peer(4)],
            },
            Down::Reject {
                code: RejectCode::Replayed,
                detail: "used from another address".into(),
            },
            Down::PeerJoined(peer(5)),
            Down::PeerLeft { player_id: 5 },
            Down::Relayed {
                from: 5,
                frame: vec![0; 10],
            },
            Down::Punch(peer(6)),
            Down::FromNode {
                payload: vec![1, 2],
            },
        ];
        for m in msgs {
            let enc = m.encode();
            assert_eq!(Down::decode(body(&enc)), Ok(m));
        }
    }

    #[test]
    fn wrong_version_and_trailing_bytes_are_errors() {
        let mut enc = Up::Leave.encode();
        enc[4] = PROTOCOL_VERSION + 1;
        assert!(matches!(
            Up::decode(body(&enc)),
            Err(DecodeError::Version { .. })
        ));
        let mut enc = Up::Leave.encode();
        enc.push(0);
        assert_eq!(Up::decode(body(&enc)), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn oversized_frame_length_is_refused() {
        assert!(frame_len((MAX_CONTROL_FRAME_BYTES as u32 + 1).to_be_bytes()).is_err());
    }

    #[test]
    fn datagrams_round_trip() {
        for d in [
            PeerDatagram::Unreliable(vec![1, 2]),
            PeerDatagram::Ack { next_seq: 77 },
            PeerDatagram::Ping { id: 1, sent_us: 2 },
            PeerDatagram::Pong { id: 1, sent_us: 2 },
        ] {
            assert_eq!(PeerDatagram::decode(&d.encode()), Ok(d));
        }
        for nd in [
            NodeDatagram::ToPeer {
                peer: 3,
                payload: vec![9; 20],
            },
            NodeDatagram::FromPeer {
                peer: 3,
                payload: vec![],
            },
            NodeDatagram::ToNode {
                payload: vec![1; 30],
            },
            NodeDatagram::FromNode {
                payload: vec![2; 3],
            },
        ] {
            assert_eq!(NodeDatagram::decode(&nd.encode()), Ok(nd));
        }
        let f = PeerFrame {
            seq: 1 << 40,
            payload: vec![5; 300],
        };
        assert_eq!(PeerFrame::decode(&f.encode()), Ok(f));
    }

    #[test]
    fn probe_round_trip_and_never_looks_like_quic() {
        let p = Probe {
            is_reply: true,
            room_id: 1,
            from: 2,
            to: 3,
            observed: Some(addr("192.0.2.1:4000")),
        };
        let enc = p.encode();
        assert!(Probe::is_probe(&enc));
        assert_eq!(enc[0] & 0x40, 0, "QUIC fixed bit must be clear");
        assert_eq!(Probe::decode(&enc), Ok(p));
        assert!(!Probe::is_probe(&[0x40, b'V', b'L', b'Y', b'P']));
    }

    #[test]
    fn reject_detail_is_truncated_on_a_char_boundary() {
        let long = "é".repeat(300);
        let enc = Down::Reject {
            code: RejectCode::Expired,
            detail: long,
        }
        .encode();
        match Down::decode(body(&enc)) {
            Ok(Down::Reject { detail, .. }) => assert!(detail.len() <= MAX_DETAIL_BYTES),
            other => panic!("unexpected {other:?}"),
        }
    }
}
