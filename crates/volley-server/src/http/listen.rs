//! The HTTP listener: accepts TCP (and TLS when configured), bounds connections per source
//! address and in all, and serves each connection with hyper under the node's timeouts.
//!
//! - A request head must arrive whole within `http_header_timeout_secs`, and a connection
//!   between requests with nothing moving closes after it too. One watchdog per connection
//!   checks this, ticking every quarter of the timeout (at least 250 ms): hyper's own header
//!   timeout arms a timer per request, which cost a quarter of a cheap route's throughput.
//! - A request body that stalls (no bytes) for `http_body_stall_secs` is refused (400).
//! - Each source address holds at most `http_connections_per_address_max` connections; beyond
//!   it, or beyond `http_connections_max` in all, new connections are closed at once.
//! - TLS handshakes must finish within the header timeout.
//!
//! Connection tasks live in a `JoinSet` owned by the accept loop: when the node stops the loop,
//! every connection ends with it.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::AppState;
use crate::metrics::DropReason;

/// The listener's limits, from the node's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_timeout: Duration,
    pub(crate) body_stall: Duration,
    pub(crate) per_address_max: usize,
    pub(crate) connections_max: usize,
}

impl Limits {
    pub(crate) fn of(cfg: &crate::config::NodeConfig) -> Self {
        Limits {
            header_timeout: Duration::from_secs(cfg.http_header_timeout_secs),
            body_stall: Duration::from_secs(cfg.http_body_stall_secs),
            per_address_max: cfg.http_connections_per_address_max,
            connections_max: cfg.http_connections_max,
        }
    }
}

/// Open connections per source address.
type Open = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's place in [`Open`]; given back when dropped.
struct AddressSlot {
    open: Open,
    ip: IpAddr,
}

impl AddressSlot {
    fn take(open: &Open, ip: IpAddr, max: usize) -> Option<Self> {
        let mut m = open.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            open: open.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.open.lock().unwrap_or_else(|p| p.into_inner());
        crate::state::down(&mut m, &self.ip);
    }
}

/// Serves `router` on `listener` until the task is dropped.
pub(crate) async fn serve(
    state: AppState,
    router: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let limits = Limits::of(&state.cfg);
    let open: Open = Arc::default();
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors, most likely: wait for connections to end.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if conns.len() >= limits.connections_max {
            state.metrics.note_drop(DropReason::HttpConnectionsFull);
            continue;
        }
        let Some(slot) = AddressSlot::take(&open, addr.ip(), limits.per_address_max) else {
            state
                .metrics
                .note_drop(DropReason::HttpConnectionsPerAddress);
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        conns.spawn(connection(
            router.clone(),
            tcp,
            addr,
            tls.clone(),
            limits,
            slot,
        ));
    }
}

async fn connection(
    router: axum::Router,
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    _slot: AddressSlot,
) {
    let act = Arc::new(Activity::new());
    let tcp = Watched {
        inner: tcp,
        act: act.clone(),
    };
    match tls {
        None => http(TokioIo::new(tcp), router, addr, limits, act).await,
        Some(acceptor) => {
            match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => http(TokioIo::new(stream), router, addr, limits, act).await,
                Ok(Err(e)) => tracing::debug!(remote = %addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(remote = %addr, "TLS handshake timed out"),
            }
        }
    }
}

async fn http<I>(io: I, router: axum::Router, addr: SocketAddr, limits: Limits, act: Arc<Activity>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let watched = act.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = Busy::start(watched.clone());
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(addr));
        let body = Stall::new(body, limits.body_stall);
        let read_whole = body.done.clone();
        let answer = router.clone().oneshot(axum::http::Request::from_parts(
            parts,
            axum::body::Body::new(body),
        ));
        async move {
            let mut resp = answer.await?;
            drop(busy);
            // Answered before the body was read (refused early): hyper will not reuse the
            // connection, so say so, or the client would send its next request into a close.
            if !read_whole.load(std::sync::atomic::Ordering::Relaxed) {
                resp.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    // hyper's own header timeout arms a timer per request, which cost a quarter of the
    // throughput of a cheap route here; one coarse watchdog per connection does the same job.
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let every =
        (limits.header_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(2));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(remote = %addr, error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = tick.tick() => {
                if act.expired(limits.header_timeout) {
                    tracing::debug!(remote = %addr, "HTTP connection idle or its request head slow; closed");
                    return;
                }
            }
        }
    }
}

/// What a connection is doing, for its watchdog: requests in progress, the last byte moved,
/// and when the head of the next request began to arrive. Times are ms since the connection
/// opened, plus one (0: never).
struct Activity {
    opened: std::time::Instant,
    in_flight: std::sync::atomic::AtomicUsize,
    last_io: std::sync::atomic::AtomicU64,
    head_since: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: std::time::Instant::now(),
            in_flight: Default::default(),
            last_io: std::sync::atomic::AtomicU64::new(1),
            head_since: Default::default(),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }

    /// Between requests: a head arriving for longer than `limit`, or nothing moving for that
    /// long. A request being served never expires (its body has its own stall limit).
    fn expired(&self, limit: Duration) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self.in_flight.load(Relaxed) > 0 {
            return false;
        }
        let limit = limit.as_millis() as u64;
        let now = self.now();
        match self.head_since.load(Relaxed) {
            0 => now.saturating_sub(self.last_io.load(Relaxed)) > limit,
            since => now.saturating_sub(since) > limit,
        }
    }

    fn moved(&self, read: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.now();
        self.last_io.store(now, Relaxed);
        if read && self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) == 0 {
            self.head_since.store(now, Relaxed);
        }
    }
}

/// One request in progress on a connection; ended when dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(act: Arc<Activity>) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        act.in_flight.fetch_add(1, Relaxed);
        act.head_since.store(0, Relaxed);
        Busy(act)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.0.last_io.store(self.0.now(), Relaxed);
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A socket that reports the bytes it moves to its connection's [`Activity`].
struct Watched<T> {
    inner: T,
    act: Arc<Activity>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.act.moved(true);
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.act.moved(false);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.act.moved(false);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails when no bytes arrive for `stall` once a handler reads it.
struct Stall {
    inner: Incoming,
    stall: Duration,
    /// Started by the first read.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set once the body has been read to its end (or had none).
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Stall {
    fn new(inner: Incoming, stall: Duration) -> Self {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(
            hyper::body::Body::is_end_stream(&inner),
        ));
        Stall {
            inner,
            stall,
            timer: None,
            done,
        }
    }
}

/// Why a body read failed on our side.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for {0:?}")]
struct Stalled(Duration);

impl hyper::body::Body for Stall {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let deadline = tokio::time::Instant::now() + this.stall;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(t) = this.timer.as_mut() {
                    t.as_mut().reset(deadline);
                }
                if frame.is_none() || this.inner.is_end_stream() {
                    this.done.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Stalled(this.stall).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
