//! Request metrics and the access log: every request is counted by route template, method and
//! status class, timed into a histogram, and logged on the `volley::access` target (turn it
//! off with `VOLLEY_LOG=info,volley::access=off`).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// The route label for a path the router does not serve (one label, so scans cannot grow
/// the metrics).
const UNMATCHED: &str = "unmatched";

pub(super) async fn observe(State(api): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = req.method().clone();
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let resp = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    api.metrics
        .http
        .record(&route, method.as_str(), status, seconds);
    tracing::info!(
        target: "volley::access",
        method = %method,
        route,
        status,
        ms = seconds * 1000.0,
        client = client.map(|c| c.to_string()).unwrap_or_default(),
    );
    resp
}
