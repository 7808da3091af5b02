//! Operations: liveness, Prometheus metrics and the OpenAPI document.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use aide::axum::routing::get_with;
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::Serialize;

use super::docs::Document;
use super::error::Error;
use super::extract::ClientAddr;
use super::{doc, doc_long, AppState};

pub(super) fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route("/v1/health", get_with(health, doc("Liveness")))
        .api_route(
            "/metrics",
            get_with(
                metrics,
                doc_long(
                    "Prometheus metrics",
                    "With `metrics_token` set, ask with `Authorization: Bearer <token>`; \
                     without it only loopback clients are answered here. `metrics_addr` \
                     serves them on a listener of their own.",
                ),
            ),
        )
        .api_route("/v1/openapi.json", get_with(openapi, doc("This document")))
}

/// The node answers.
#[derive(Serialize, JsonSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Whether a request on the API port may read `/metrics`: with the token when one is set,
/// else only from loopback. Compared in constant time.
fn may_read_metrics(token: Option<&str>, from: std::net::IpAddr, headers: &HeaderMap) -> bool {
    match token {
        None => from.is_loopback(),
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            volley_platform::same_secret(given.as_bytes(), token.as_bytes())
        }
    }
}

async fn metrics(
    State(api): State<AppState>,
    ClientAddr(from): ClientAddr,
    headers: HeaderMap,
) -> Result<Response, Error> {
    if !may_read_metrics(api.cfg.metrics_token.as_deref(), from.ip(), &headers) {
        return Err(Error::new(
            StatusCode::UNAUTHORIZED,
            "metrics_token_required",
            "metrics need the metrics token (Authorization: Bearer), or the metrics listener",
        ));
    }
    Ok(render_metrics(&api))
}

/// The metrics text, for the API route and the metrics listener.
pub(super) fn render_metrics(api: &AppState) -> Response {
    let (direct, relay) = api.rooms.path_counts();
    api.metrics.paths_direct.store(direct, Ordering::Relaxed);
    api.metrics.paths_relay.store(relay, Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(),
    )
        .into_response()
}

/// The metrics listener's routes: `/metrics` and `/healthz`, no token.
pub(super) fn metrics_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(api): State<AppState>| async move { render_metrics(&api) }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(state)
}

async fn openapi(Extension(doc): Extension<Arc<Document>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0.clone()).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metrics_go_to_loopback_without_a_token_and_to_its_holders_with_one() {
        let none = HeaderMap::new();
        let mut right = HeaderMap::new();
        right.insert(
            header::AUTHORIZATION,
            "Bearer t0123456789abcdef".parse().unwrap(),
        );
        let mut wrong = HeaderMap::new();
        wrong.insert(
            header::AUTHORIZATION,
            "Bearer t0123456789abcdeX".parse().unwrap(),
        );
        let lan: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let v6: std::net::IpAddr = "::1".parse().unwrap();
        assert!(may_read_metrics(None, local, &none));
        assert!(may_read_metrics(None, v6, &none));
        assert!(!may_read_metrics(None, lan, &none));
        assert!(!may_read_metrics(None, lan, &right));
        let token = Some("t0123456789abcdef");
        assert!(may_read_metrics(token, lan, &right));
        assert!(!may_read_metrics(token, lan, &wrong));
        assert!(
            !may_read_metrics(token, local, &none),
            "a token binds loopback too"
        );
    }
}
