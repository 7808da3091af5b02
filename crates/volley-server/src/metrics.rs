//! Node counters, exposed in the Prometheus text format at `/metrics`.

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
    /// Messages, sends and results dropped on purpose or by failure, by [`DropReason`] reason.
    pub dropped: [AtomicU64; DropReason::ALL.len()],
    /// HTTP requests by route: counts by status class and latency histograms.
    pub http: HttpMetrics,
}

/// Why something was dropped rather than delivered. Each is counted in
/// `volley_dropped_total{reason}`; none is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The Welcome frame did not fit the new member's queue.
    WelcomeQueueFull,
    /// A punch instruction did not fit a player's queue.
    PunchQueueFull,
    /// A peer-joined notice timed out waiting for room in a player's queue.
    PeerJoinedQueueFull,
    /// A peer-left notice did not fit a player's queue.
    PeerLeftQueueFull,
    /// The reject frame could not be written to a refused player.
    RejectUnsent,
    /// Writing to a player's control stream failed (it went away).
    ControlWriteFailed,
    /// A chunk pulled from a peer node was served but not kept (queue full or disk error).
    PulledChunkNotKept,
    /// A content announcement on the bus did not parse.
    AnnouncementMalformed,
    /// An event for a player's WebSocket could not be sent (the socket closed).
    EventUnsent,
    /// An HTTP connection was closed at once: the node holds `http_connections_max`.
    HttpConnectionsFull,
    /// An HTTP connection was closed at once: its address holds its share.
    HttpConnectionsPerAddress,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 11] = [
        DropReason::WelcomeQueueFull,
        DropReason::PunchQueueFull,
        DropReason::PeerJoinedQueueFull,
        DropReason::PeerLeftQueueFull,
        DropReason::RejectUnsent,
        DropReason::ControlWriteFailed,
        DropReason::PulledChunkNotKept,
        DropReason::AnnouncementMalformed,
        DropReason::EventUnsent,
        DropReason::HttpConnectionsFull,
        DropReason::HttpConnectionsPerAddress,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::WelcomeQueueFull => "welcome_queue_full",
            DropReason::PunchQueueFull => "punch_queue_full",
            DropReason::PeerJoinedQueueFull => "peer_joined_queue_full",
            DropReason::PeerLeftQueueFull => "peer_left_queue_full",
            DropReason::RejectUnsent => "reject_unsent",
            DropReason::ControlWriteFailed => "control_write_failed",
            DropReason::PulledChunkNotKept => "pulled_chunk_not_kept",
            DropReason::AnnouncementMalformed => "announcement_malformed",
            DropReason::EventUnsent => "event_unsent",
            DropReason::HttpConnectionsFull => "http_connections_full",
            DropReason::HttpConnectionsPerAddress => "http_connections_per_address",
        }
    }
}

/// Upper bounds (seconds) of the HTTP latency histogram's buckets.
pub const HTTP_LATENCY_BUCKETS_S: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// One route's request statistics.
#[derive(Debug, Default, Clone)]
struct RouteStats {
    /// Requests by status class: 1xx..5xx.
    by_class: [u64; 5],
    /// Requests per latency bucket (not cumulative; the last is +Inf).
    buckets: [u64; HTTP_LATENCY_BUCKETS_S.len() + 1],
    /// Sum of latencies, seconds.
    sum_s: f64,
}

/// HTTP request metrics, keyed by (route template, method): bounded by the routes the node
/// serves (unmatched paths share one key).
#[derive(Debug, Default)]
pub struct HttpMetrics {
    routes: std::sync::Mutex<std::collections::BTreeMap<(String, String), RouteStats>>,
}

impl HttpMetrics {
    /// Records one request.
    pub fn record(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let key = (route.to_owned(), method.to_owned());
        let r = routes.entry(key).or_default();
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        r.by_class[class] += 1;
        let bucket = HTTP_LATENCY_BUCKETS_S
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(HTTP_LATENCY_BUCKETS_S.len());
        r.buckets[bucket] += 1;
        r.sum_s += seconds;
    }

    /// Requests so far for `route` and `method` with a status in `class` (1-5).
    pub fn requests(&self, route: &str, method: &str, class: u16) -> u64 {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes
            .get(&(route.to_owned(), method.to_owned()))
            .and_then(|r| r.by_class.get(usize::from(class).wrapping_sub(1)).copied())
            .unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        line(
            out,
            "# HELP volley_http_requests_total HTTP requests by route, method and status class.",
        );
        line(out, "# TYPE volley_http_requests_total counter");
        for ((route, method), r) in routes.iter() {
            for (i, n) in r.by_class.iter().enumerate().filter(|(_, n)| **n > 0) {
                line(out, &format!(
                    "volley_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{}xx\"}} {n}",
                    i + 1
                ));
            }
        }
        line(
            out,
            "# HELP volley_http_request_duration_seconds HTTP request latency by route and method.",
        );
        line(out, "# TYPE volley_http_request_duration_seconds histogram");
        for ((route, method), r) in routes.iter() {
            let labels = format!("route=\"{route}\",method=\"{method}\"");
            let mut cumulative = 0;
            for (i, n) in r.buckets.iter().enumerate() {
                cumulative += n;
                let le = HTTP_LATENCY_BUCKETS_S
                    .get(i)
                    .map_or("+Inf".to_owned(), |b| b.to_string());
                line(out, &format!("volley_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"));
            }
            line(
                out,
                &format!(
                    "volley_http_request_duration_seconds_sum{{{labels}}} {}",
                    r.sum_s
                ),
            );
            line(
                out,
                &format!("volley_http_request_duration_seconds_count{{{labels}}} {cumulative}"),
            );
        }
    }
}

/// Appends a line to an exposition being built in memory.
fn line(out: &mut String, text: &str) {
    out.push_str(text);
    out.push('\n');
}

impl Metrics {
    /// Counts something dropped.
    pub fn note_drop(&self, why: DropReason) {
        self.note_drops(why, 1);
    }

    /// Counts `n` things dropped for one reason.
    pub fn note_drops(&self, why: DropReason, n: u64) {
        if let Some(c) = self.dropped.get(why as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Drops so far for `why`.
    pub fn dropped(&self, why: DropReason) -> u64 {
        self.dropped
            .get(why as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

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
        line(
            &mut out,
            "# HELP volley_admission_rejected_total Players refused at the QUIC gate, by reason.",
        );
        line(&mut out, "# TYPE volley_admission_rejected_total counter");
        for code in RejectCode::ALL {
            line(
                &mut out,
                &format!(
                    "volley_admission_rejected_total{{reason=\"{}\"}} {}",
                    code.as_str(),
                    self.rejected(code)
                ),
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
            line(
                &mut out,
                &format!(
                    "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                    get(c)
                ),
            );
        }
        line(&mut out, &format!("# HELP volley_players Players connected.\n# TYPE volley_players gauge\nvolley_players {}", get(&self.players)));
        line(
            &mut out,
            &format!(
                "# HELP volley_rooms Rooms open.\n# TYPE volley_rooms gauge\nvolley_rooms {}",
                get(&self.rooms)
            ),
        );
        line(&mut out, "# HELP volley_peer_paths Peer pairs by path, as last reported by players.\n# TYPE volley_peer_paths gauge");
        line(
            &mut out,
            &format!(
                "volley_peer_paths{{path=\"direct\"}} {}",
                get(&self.paths_direct)
            ),
        );
        line(
            &mut out,
            &format!(
                "volley_peer_paths{{path=\"relay\"}} {}",
                get(&self.paths_relay)
            ),
        );
        for why in DropReason::ALL {
            if why == DropReason::ALL[0] {
                line(
                    &mut out,
                    "# HELP volley_dropped_total Messages, sends and results dropped, by reason.",
                );
                line(&mut out, "# TYPE volley_dropped_total counter");
            }
            line(
                &mut out,
                &format!(
                    "volley_dropped_total{{reason=\"{}\"}} {}",
                    why.as_str(),
                    self.dropped(why)
                ),
            );
        }
        self.http.render(&mut out);
        out
    }
}
