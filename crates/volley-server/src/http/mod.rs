//! The HTTP API, one module per domain. Each route is declared once, with its documentation,
//! in its domain's `routes()`; the OpenAPI document at `/v1/openapi.json` is generated from
//! the assembled router itself (aide), so the two cannot drift. Checks live in extractors
//! ([`extract`]) and every failure is an [`error::Error`].
//!
//! | module | routes |
//! |---|---|
//! | [`accounts`] | `/v1/auth/*`, `/v1/account*` |
//! | [`social`] | friends, presence, lobbies, chat |
//! | [`matchmaking`] | tickets, ratings, match results |
//! | [`economy`] | wallet, gifts, bonus codes, store |
//! | [`leaderboards`] | boards, scores, seasons |
//! | [`rooms`] | rooms and connect tickets |
//! | [`content`] | builds: chunks, manifests, versions, swarm tracker |
//! | [`admin`] | server-key calls: bans, grants, items, held redemptions, audit |
//! | [`events`] | the event WebSocket |
//! | [`ops`] | health, metrics, the OpenAPI document |

mod accounts;
mod admin;
mod content;
mod docs;
mod economy;
pub(crate) mod error;
mod events;
pub(crate) mod extract;
mod leaderboards;
mod listen;
mod matchmaking;
mod observe;
mod ops;
pub(crate) mod rooms;
mod social;

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::generate::GenContext;
use aide::openapi::{Operation, Response as DocResponse};
use aide::transform::TransformOperation;
use aide::OperationOutput;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::JsonSchema;
use serde::Serialize;

use crate::state::Shared;
use error::Error;

/// The state every handler sees.
pub(crate) type AppState = Arc<Shared>;

/// Request bodies are small JSON documents; anything larger is refused before parsing. Content
/// uploads set their own limits per route.
pub(crate) const BODY_BYTES_MAX: usize = 16 * 1024;

/// A route's documentation: its summary line.
pub(crate) fn doc(summary: &'static str) -> impl FnOnce(TransformOperation) -> TransformOperation {
    move |op| op.summary(summary)
}

/// A route's documentation: summary and a longer description.
pub(crate) fn doc_long(
    summary: &'static str,
    description: &'static str,
) -> impl FnOnce(TransformOperation) -> TransformOperation {
    move |op| op.summary(summary).description(description)
}

/// A JSON answer with status 201 Created.
#[derive(Debug)]
pub(crate) struct Created<T>(pub(crate) T);

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        (StatusCode::CREATED, Json(self.0)).into_response()
    }
}

impl<T: JsonSchema> OperationOutput for Created<T> {
    type Inner = T;

    fn operation_response(ctx: &mut GenContext, op: &mut Operation) -> Option<DocResponse> {
        Json::<T>::operation_response(ctx, op)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        op: &mut Operation,
    ) -> Vec<(Option<u16>, DocResponse)> {
        Self::operation_response(ctx, op)
            .map(|r| vec![(Some(201), r)])
            .unwrap_or_default()
    }
}

/// An answer with no body: 204 No Content.
pub(crate) use axum::response::NoContent;

/// Every route of the node, with its documentation.
fn api_routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .merge(ops::routes())
        .merge(accounts::routes())
        .merge(social::routes())
        .merge(matchmaking::routes())
        .merge(economy::routes())
        .merge(leaderboards::routes())
        .merge(rooms::routes())
        .merge(content::routes())
        .merge(admin::routes())
        .merge(events::routes())
}

/// The router with its middleware, and the OpenAPI document made from it.
pub(crate) fn router(state: AppState) -> axum::Router {
    docs::prepare();
    let (router, doc) = docs::finish(api_routes());
    router
        .fallback(|| async { Error::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Error::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method (see /v1/openapi.json)",
            )
        })
        .layer(axum::Extension(Arc::new(doc)))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// Serves the API on `listener` (over TLS with `tls`) until the task is dropped.
pub(crate) async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let app = router(state.clone());
    listen::serve(state, app, listener, tls).await;
}

/// Serves `/metrics` and `/healthz` on a listener of their own until the task is dropped.
pub(crate) async fn serve_metrics(state: AppState, listener: tokio::net::TcpListener) {
    let app = ops::metrics_router(state.clone());
    listen::serve(state, app, listener, None).await;
}

/// The TLS acceptor for the API: the configured PEM certificate and key, else the node's own
/// certificate; `None` when HTTPS is off.
pub(crate) fn tls_acceptor(
    cfg: &crate::config::NodeConfig,
    identity: &volley_net::tls::Identity,
) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (chain, key) = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!("tls_cert {}: no certificate in it", cert.display()));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls_key {}: {e}", key.display()))?;
            (chain, key)
        }
        _ if cfg.https => (
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        ),
        _ => return Ok(None),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the TLS certificate and key do not go together: {e}"))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}
