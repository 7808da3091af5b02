//! Admission at the QUIC gate as a pure state machine: the per-source connect limiter, the
//! connect-ticket checks and the replay window. It reads no clock and owns no socket: every
//! call takes `now`, so it is tested without a network and replays exactly.
//!
//! The gate ([`crate::gate`]) asks [`Admission::allow_connect`] for each new connection,
//! [`Admission::open_ticket`] for the ticket in a player's Hello, and
//! [`Admission::claim_nonce`] once the room is known, under the room's lock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use volley_proto::msg::RejectCode;
use volley_proto::ticket::{Ticket, TicketError, TicketKey, NONCE_BYTES};
use volley_proto::Fingerprint;

/// Most entries in the per-source rate-limit table; when full, the oldest entry makes room.
/// Only validated sources are ever entered (see [`Admission::allow_connect`]), so filling it
/// takes that many real addresses, and what it forgets is only the oldest of them.
pub(crate) const RATE_TABLE_MAX: usize = 65_536;

/// A refusal: the code the player is told, and the detail logged.
pub(crate) type Refusal = (RejectCode, String);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// When the entry was made: its place in the eviction order.
    born: Instant,
}

/// The limits admission enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdmissionLimits {
    /// New connections allowed per source address per second (token refill).
    pub(crate) connects_per_ip_per_s: f64,
    /// Burst of new connections per source address.
    pub(crate) connects_per_ip_burst: f64,
}

/// A ticket that opened: who may join which room, and its nonce.
#[derive(Debug, Clone)]
pub(crate) struct Admitted {
    /// The ticket's contents.
    pub(crate) ticket: Ticket,
    /// The nonce it was sealed with (its identity in the replay window).
    pub(crate) nonce: [u8; NONCE_BYTES],
}

/// Admission state of one node.
#[derive(Debug)]
pub(crate) struct Admission {
    key: TicketKey,
    node_addr: SocketAddr,
    limits: AdmissionLimits,
    buckets: HashMap<IpAddr, Bucket>,
    /// Entries of `buckets` in the order they were made, with their `born` stamp.
    order: VecDeque<(IpAddr, Instant)>,
    /// Ticket nonce → (first address it was used from, expiry in Unix ms).
    replay: HashMap<[u8; NONCE_BYTES], (SocketAddr, u64)>,
}

impl Admission {
    /// Admission for a node at `node_addr` whose tickets are sealed with `key`.
    pub(crate) fn new(key: TicketKey, node_addr: SocketAddr, limits: AdmissionLimits) -> Self {
        Admission {
            key,
            node_addr,
            limits,
            buckets: HashMap::new(),
            order: VecDeque::new(),
            replay: HashMap::new(),
        }
    }

    /// Charges one connection attempt from `ip` at `now` to its token bucket; false when the
    /// bucket is empty. Call it only for a validated source (a Retry token came back, or a
    /// handshake completed): charging spoofable addresses would let a flood of Initials
    /// forged in a victim's name lock the victim out.
    pub(crate) fn allow_connect(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&ip) {
            while self.buckets.len() >= RATE_TABLE_MAX {
                let Some((old, born)) = self.order.pop_front() else {
                    break;
                };
                if self.buckets.get(&old).is_some_and(|b| b.born == born) {
                    self.buckets.remove(&old);
                }
            }
            self.order.push_back((ip, now));
        }
        let burst = self.limits.connects_per_ip_burst;
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
            born: now,
        });
        Self::refill(b, now, self.limits.connects_per_ip_per_s, burst);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether `ip`'s bucket is empty at `now`, without charging it: the gate then asks an
    /// unvalidated source to prove its address (Retry) rather than starting a handshake.
    pub(crate) fn exhausted(&mut self, ip: IpAddr, now: Instant) -> bool {
        let (per_s, burst) = (
            self.limits.connects_per_ip_per_s,
            self.limits.connects_per_ip_burst,
        );
        match self.buckets.get_mut(&ip) {
            Some(b) => {
                Self::refill(b, now, per_s, burst);
                b.tokens < 1.0
            }
            None => false,
        }
    }

    fn refill(b: &mut Bucket, now: Instant, per_s: f64, burst: f64) {
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * per_s;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = b.at.max(now);
    }

    /// Opens a Hello's ticket at `now_unix_ms` and checks it is for this node and for the
    /// certificate the player connected with.
    pub(crate) fn open_ticket(
        &self,
        sealed: &[u8],
        fingerprint: Fingerprint,
        now_unix_ms: u64,
    ) -> Result<Admitted, Refusal> {
        let opened = Ticket::open(sealed, &self.key, now_unix_ms).map_err(|e| {
            let code = match e {
                TicketError::Malformed(_) => RejectCode::Malformed,
                TicketError::Version(_) => RejectCode::Version,
                TicketError::Expired { .. } => RejectCode::Expired,
                TicketError::Forged => RejectCode::Forged,
            };
            (code, e.to_string())
        })?;
        let t = opened.ticket;
        if t.node_addr != self.node_addr {
            return Err((
                RejectCode::WrongNode,
                format!(
                    "ticket is for {}, this node is {}",
                    t.node_addr, self.node_addr
                ),
            ));
        }
        if t.fingerprint != fingerprint {
            return Err((
                RejectCode::WrongCertificate,
                "ticket is bound to another certificate".into(),
            ));
        }
        Ok(Admitted {
            ticket: t,
            nonce: opened.nonce,
        })
    }

    /// Whether `nonce` may be used from `remote`: a ticket is good for one address, and only
    /// while the connection it admitted is not still in the room (`in_use`).
    pub(crate) fn check_nonce(
        &self,
        nonce: &[u8; NONCE_BYTES],
        remote: SocketAddr,
        in_use: bool,
    ) -> Result<(), Refusal> {
        match self.replay.get(nonce) {
            Some((first, _)) if *first != remote || in_use => Err((
                RejectCode::Replayed,
                "ticket was already used; ask for a new one".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Records that `nonce` admitted a player from `remote`; remembered until `expires_unix_ms`.
    pub(crate) fn claim_nonce(
        &mut self,
        nonce: [u8; NONCE_BYTES],
        remote: SocketAddr,
        expires_unix_ms: u64,
    ) {
        self.replay.insert(nonce, (remote, expires_unix_ms));
    }

    /// Forgets nonces whose tickets have expired by `now_unix_ms` (they would be refused as
    /// expired anyway).
    pub(crate) fn sweep(&mut self, now_unix_ms: u64) {
        self.replay.retain(|_, (_, exp)| *exp > now_unix_ms);
    }

    /// Nonces remembered now.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.replay.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn node() -> SocketAddr {
        "10.0.0.1:7351".parse().unwrap()
    }

    fn admission(per_s: f64, burst: f64) -> Admission {
        Admission::new(
            TicketKey::from_bytes([7; 32]),
            node(),
            AdmissionLimits {
                connects_per_ip_per_s: per_s,
                connects_per_ip_burst: burst,
            },
        )
    }

    fn ticket(node_addr: SocketAddr, fp: Fingerprint, expires: u64, key: &TicketKey) -> Vec<u8> {
        Ticket {
            player_id: 5,
            room_id: 9,
            node_addr,
            fingerprint: fp,
            expires_at_ms: expires,
        }
        .seal(key, [3; NONCE_BYTES])
    }

    #[test]
    fn a_source_gets_its_burst_then_the_refill_rate() {
        let mut a = admission(2.0, 3.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| a.allow_connect(ip, t0)));
        assert!(!a.allow_connect(ip, t0));
        // Half a second at 2/s refills one token, not more.
        let t1 = t0 + Duration::from_millis(500);
        assert!(a.allow_connect(ip, t1));
        assert!(!a.allow_connect(ip, t1));
        // Another source is not charged for the first.
        assert!(a.allow_connect("192.0.2.2".parse().unwrap(), t1));
        // A clock that goes backwards refills nothing.
        assert!(!a.allow_connect(ip, t0));
    }

    #[test]
    fn a_full_table_forgets_its_oldest_entry_not_everyone() {
        let mut a = admission(0.0, 1.0);
        let t = Instant::now();
        let nth = |i: u32| IpAddr::from(i.to_be_bytes());
        for i in 0..RATE_TABLE_MAX as u32 {
            let later = t + Duration::from_micros(u64::from(i));
            assert!(a.allow_connect(nth(i), later));
        }
        assert_eq!(a.buckets.len(), RATE_TABLE_MAX);
        let newcomer: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(a.allow_connect(newcomer, t + Duration::from_secs(1)));
        assert_eq!(a.buckets.len(), RATE_TABLE_MAX);
        // The oldest source is forgotten (a fresh burst); every other one keeps its empty bucket.
        assert!(!a.buckets.contains_key(&nth(0)));
        assert!(a.exhausted(nth(1), t + Duration::from_secs(1)));
        assert!(!a.allow_connect(nth(RATE_TABLE_MAX as u32 - 1), t));
        assert!(!a.allow_connect(newcomer, t + Duration::from_secs(1)));
    }

    #[test]
    fn looking_at_a_bucket_does_not_charge_it() {
        let mut a = admission(0.0, 2.0);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t = Instant::now();
        assert!(!a.exhausted(ip, t));
        assert!(!a.exhausted(ip, t));
        assert!(a.allow_connect(ip, t));
        assert!(!a.exhausted(ip, t));
        assert!(a.allow_connect(ip, t));
        assert!(a.exhausted(ip, t));
    }

    #[test]
    fn tickets_are_checked_for_expiry_forgery_node_and_certificate() {
        let a = admission(1.0, 1.0);
        let key = TicketKey::from_bytes([7; 32]);
        let fp = Fingerprint([1; 32]);
        let good = ticket(node(), fp, NOW + 1000, &key);
        let ok = a.open_ticket(&good, fp, NOW).unwrap();
        assert_eq!((ok.ticket.player_id, ok.ticket.room_id), (5, 9));
        assert_eq!(ok.nonce, [3; NONCE_BYTES]);

        let code = |r: Result<Admitted, Refusal>| r.unwrap_err().0;
        assert_eq!(
            code(a.open_ticket(&good, fp, NOW + 1001)),
            RejectCode::Expired
        );
        let forged = ticket(node(), fp, NOW + 1000, &TicketKey::from_bytes([8; 32]));
        assert_eq!(code(a.open_ticket(&forged, fp, NOW)), RejectCode::Forged);
        let elsewhere = ticket("10.0.0.2:7351".parse().unwrap(), fp, NOW + 1000, &key);
        assert_eq!(
            code(a.open_ticket(&elsewhere, fp, NOW)),
            RejectCode::WrongNode
        );
        assert_eq!(
            code(a.open_ticket(&good, Fingerprint([2; 32]), NOW)),
            RejectCode::WrongCertificate
        );
        assert_eq!(
            code(a.open_ticket(&[1, 2, 3], fp, NOW)),
            RejectCode::Malformed
        );
    }

    #[test]
    fn a_nonce_is_good_for_one_address_and_one_live_connection() {
        let mut a = admission(1.0, 1.0);
        let n = [4; NONCE_BYTES];
        let here: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let there: SocketAddr = "198.51.100.2:5000".parse().unwrap();
        assert!(a.check_nonce(&n, here, false).is_ok());
        a.claim_nonce(n, here, NOW + 1000);
        // The same player reconnecting from the same address after its connection ended.
        assert!(a.check_nonce(&n, here, false).is_ok());
        // While the connection it admitted is still in the room, or from anywhere else: replay.
        assert_eq!(
            a.check_nonce(&n, here, true).unwrap_err().0,
            RejectCode::Replayed
        );
        assert_eq!(
            a.check_nonce(&n, there, false).unwrap_err().0,
            RejectCode::Replayed
        );
        // Swept only once expired.
        a.sweep(NOW + 1000);
        assert_eq!(a.remembered(), 0);
        a.claim_nonce(n, here, NOW + 1000);
        a.sweep(NOW + 999);
        assert_eq!(a.remembered(), 1);
    }
}
