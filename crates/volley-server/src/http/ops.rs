//! Operations: liveness, Prometheus metrics and the OpenAPI document.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use aide::axum::routing::get_with;
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::Serialize;

use super::docs::Document;
use super::{doc, AppState};

pub(super) fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route("/v1/health", get_with(health, doc("Liveness")))
        .api_route("/metrics", get_with(metrics, doc("Prometheus metrics")))
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

async fn metrics(State(api): State<AppState>) -> Response {
    let (direct, relay) = api.rooms.path_counts();
    api.metrics.paths_direct.store(direct, Ordering::Relaxed);
    api.metrics.paths_relay.store(relay, Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(),
    )
        .into_response()
}

async fn openapi(Extension(doc): Extension<Arc<Document>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0.clone()).into_response()
}
