//! Node counters, exposed in the Prometheus text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use volley_proto::msg::RejectCode;

/// Counters and gauges of one node. All monotonic counters end in `_total`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Admissions rejected, by [`RejectCode`] (indexed by code - 1).
    pub rejected: [AtomicU64; 12],
    /// Players admitted.
    pub admitted: AtomicU64,
    /// New connections answered with a Retry.
    pub retries: AtomicU64,
    /// New connections dropped silently (per-source rate limit).
    pub ignored_rate_limited: AtomicU64,
    /// New connections refused (too many handshakes).
    pub refused_overload: AtomicU64,
    /// QUIC handshakes that failed.
    pub handshake_failures: AtomicU64,
    /// Datagrams relayed.
    pub relay_datagrams: AtomicU64,
    /// Bytes of relayed datagram payload.
    pub relay_datagram_bytes: AtomicU64,
    /// Reliable frames relayed.
    pub relay_frames: AtomicU64,
    /// Bytes of relayed reliable frames.
    pub relay_frame_bytes: AtomicU64,
    /// Relay requests dropped (unknown target, malformed, or target's datagram buffer full).
    pub relay_dropped: AtomicU64,
    /// Messages between players and room logic dropped (queue full or datagram refused).
    pub logic_dropped: AtomicU64,
    /// Players connected now.
    pub players: AtomicU64,
    /// Rooms open now.
    pub rooms: AtomicU64,
    /// Peer pairs reported on a direct path.
    pub paths_direct: AtomicU64,
    /// Peer pairs reported on the relay.
    pub paths_relay: AtomicU64,
    /// Content chunks served (origin).
    pub content_chunks_served: AtomicU64,
    /// Bytes of content chunks served (origin).
    pub content_bytes_served: AtomicU64,
    /// Content chunks pulled from other nodes of the cluster and kept in the store.
    pub content_chunks_pulled: AtomicU64,
    /// Unreferenced content chunks dropped by collections.
    pub content_chunks_collected: AtomicU64,
}

impl Metrics {
    /// Counts a rejection.
    pub fn reject(&self, code: RejectCode) {
        if let Some(c) = self.rejected.get(code as usize - 1) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Rejections so far for `code`.
    pub fn rejected(&self, code: RejectCode) -> u64 {
        self.rejected
            .get(code as usize - 1)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP volley_admission_rejected_total Players refused at the QUIC gate, by reason."
        );
        let _ = writeln!(out, "# TYPE volley_admission_rejected_total counter");
        for code in RejectCode::ALL {
            let _ = writeln!(
                out,
                "volley_admission_rejected_total{{reason=\"{}\"}} {}",
                code.as_str(),
                self.rejected(code)
            );
        }
        let counters: [(&str, &str, &AtomicU64); 15] = [
            (
                "volley_logic_dropped_total",
                "Messages to or from room logic dropped.",
                &self.logic_dropped,
            ),
            (
                "volley_admission_admitted_total",
                "Players admitted to a room.",
                &self.admitted,
            ),
            (
                "volley_quic_retry_total",
                "New connections answered with a Retry.",
                &self.retries,
            ),
            (
                "volley_quic_ignored_total",
                "New connections dropped by the per-source rate limit.",
                &self.ignored_rate_limited,
            ),
            (
                "volley_quic_refused_total",
                "New connections refused for overload.",
                &self.refused_overload,
            ),
            (
                "volley_quic_handshake_failed_total",
                "QUIC handshakes that failed.",
                &self.handshake_failures,
            ),
            (
                "volley_relay_datagrams_total",
                "Unreliable datagrams relayed.",
                &self.relay_datagrams,
            ),
            (
                "volley_relay_datagram_bytes_total",
                "Payload bytes of relayed datagrams.",
                &self.relay_datagram_bytes,
            ),
            (
                "volley_relay_frames_total",
                "Reliable frames relayed.",
                &self.relay_frames,
            ),
            (
                "volley_relay_frame_bytes_total",
                "Bytes of relayed reliable frames.",
                &self.relay_frame_bytes,
            ),
            (
                "volley_relay_dropped_total",
                "Relay requests dropped.",
                &self.relay_dropped,
            ),
            (
                "volley_content_chunks_served_total",
                "Content chunks served as the origin.",
                &self.content_chunks_served,
            ),
            (
                "volley_content_bytes_served_total",
                "Bytes of content chunks served as the origin.",
                &self.content_bytes_served,
            ),
            (
                "volley_content_chunks_pulled_total",
                "Content chunks pulled from other nodes of the cluster and kept.",
                &self.content_chunks_pulled,
            ),
            (
                "volley_content_chunks_collected_total",
                "Unreferenced content chunks dropped by collections.",
                &self.content_chunks_collected,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                get(c)
            );
        }
        let _ = writeln!(out, "# HELP volley_players Players connected.\n# TYPE volley_players gauge\nvolley_players {}", get(&self.players));
        let _ = writeln!(
            out,
            "# HELP volley_rooms Rooms open.\n# TYPE volley_rooms gauge\nvolley_rooms {}",
            get(&self.rooms)
        );
        let _ = writeln!(out, "# HELP volley_peer_paths Peer pairs by path, as last reported by players.\n# TYPE volley_peer_paths gauge");
        let _ = writeln!(
            out,
            "volley_peer_paths{{path=\"direct\"}} {}",
            get(&self.paths_direct)
        );
        let _ = writeln!(
            out,
            "volley_peer_paths{{path=\"relay\"}} {}",
            get(&self.paths_relay)
        );
        out
    }
}
