//! Extractors: a handler's signature says what it needs (a player's session, the server key, a
//! JSON body, path and query parameters), and each check runs before the body is read: axum
//! runs the header-only extractors first and the body extractor last. Every rejection is the
//! API's JSON error, never a framework default, and every extractor describes itself in the
//! OpenAPI document.

use std::net::SocketAddr;

use aide::generate::GenContext;
use aide::openapi::Operation;
use aide::OperationInput;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use volley_proto::PlayerId;

use super::error::Error;
use super::AppState;

/// Header carrying the studio's server key.
pub(crate) const SERVER_KEY_HEADER: &str = "x-volley-server-key";

fn add_security(op: &mut Operation, scheme: &str) {
    if !op.security.iter().any(|s| s.contains_key(scheme)) {
        op.security
            .push([(scheme.to_owned(), Vec::new())].into_iter().collect());
    }
}

/// The bearer token of a request, from `Authorization: Bearer ...`.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, Error> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::unauthorized("missing Authorization: Bearer <token> header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| Error::unauthorized("Authorization must be 'Bearer <token>'"))?;
    Ok(token.trim())
}

/// The player whose session token the request carries (`Authorization: Bearer <token>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Player(pub(crate) PlayerId);

impl FromRequestParts<AppState> for Player {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = bearer(&parts.headers)?;
        Ok(Player(state.platform.authenticate(token).await?))
    }
}

impl OperationInput for Player {
    fn operation_input(_ctx: &mut GenContext, op: &mut Operation) {
        add_security(op, "bearer");
    }
}

/// The request carries the studio's server key (`x-volley-server-key`): a call from the game's
/// own servers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerKey;

/// Whether the headers carry the node's server key.
pub(crate) fn check_server_key(state: &AppState, headers: &HeaderMap) -> Result<(), Error> {
    let key = headers
        .get(SERVER_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if state.platform.check_server_key(key) {
        return Ok(());
    }
    let message = if state.cfg.server_key.is_none() {
        "this node has no server key; start it with VOLLEY_SERVER_KEY (or --server-key) set"
            .to_owned()
    } else {
        format!("this call needs the node's server key in {SERVER_KEY_HEADER}")
    };
    Err(Error::new(
        StatusCode::UNAUTHORIZED,
        "bad_server_key",
        message,
    ))
}

impl FromRequestParts<AppState> for ServerKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        check_server_key(state, &parts.headers).map(|()| ServerKey)
    }
}

impl OperationInput for ServerKey {
    fn operation_input(_ctx: &mut GenContext, op: &mut Operation) {
        add_security(op, "serverKey");
    }
}

/// The address the request came from (rate limits, fraud checks, swarm announces).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let ConnectInfo(addr) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::internal("no client address", e))?;
        Ok(ClientAddr(addr))
    }
}

impl OperationInput for ClientAddr {}

/// Reads the body (within the route's limit) with the API's own errors.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(f) if f.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Error::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is larger than this route accepts",
            )
        }
        other => Error::bad_request(format!("could not read the body: {}", other.body_text())),
    })
}

/// Parses a JSON body with a 400 that says why (without echoing the input).
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "is not valid JSON"
            }
            _ => "does not have the expected fields",
        };
        Error::bad_request(format!(
            "the body {what} (line {}, column {}): {}",
            e.line(),
            e.column(),
            short_reason(&e)
        ))
    })
}

/// serde_json's reason without the echoed input (it quotes whole strings it could not use).
fn short_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let reason = text.split(" at line ").next().unwrap_or(&text);
    let mut out = String::new();
    for (i, piece) in reason.split('`').enumerate() {
        // Odd pieces are quoted input: keep names and short values, cut the rest.
        if i % 2 == 1 && piece.chars().count() > 40 {
            out.push_str("`…`");
        } else if i % 2 == 1 {
            out.push('`');
            out.push_str(piece);
            out.push('`');
        } else {
            out.push_str(piece);
        }
    }
    out
}

/// A JSON body of type `T`, parsed after every header check of the handler has passed.
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(Body)
    }
}

impl<T: JsonSchema> OperationInput for Body<T> {
    fn operation_input(ctx: &mut GenContext, op: &mut Operation) {
        axum::Json::<T>::operation_input(ctx, op);
    }
}

/// A JSON body that may be left out (an empty body is `None`).
#[derive(Debug)]
pub(crate) struct OptionalBody<T>(pub(crate) Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(None));
        }
        parse_json(&bytes).map(|t| OptionalBody(Some(t)))
    }
}

impl<T: JsonSchema> OperationInput for OptionalBody<T> {
    fn operation_input(ctx: &mut GenContext, op: &mut Operation) {
        axum::Json::<T>::operation_input(ctx, op);
        if let Some(aide::openapi::ReferenceOr::Item(b)) = op.request_body.as_mut() {
            b.required = false;
        }
    }
}

/// Raw bytes of a body (content uploads), within the route's limit.
#[derive(Debug)]
pub(crate) struct RawBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        read_body(req, state).await.map(RawBody)
    }
}

impl OperationInput for RawBody {
    fn operation_input(ctx: &mut GenContext, op: &mut Operation) {
        Bytes::operation_input(ctx, op);
    }
}

/// Path parameters, with a JSON 400 naming the bad one.
#[derive(Debug)]
pub(crate) struct Path<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| Error::bad_request(format!("bad path parameter: {}", e.body_text())))
    }
}

/// Path parameters are documented from the route's own path (see `docs::fill_path_params`).
impl<T> OperationInput for Path<T> {}

/// Query parameters, with a JSON 400 naming the bad one.
#[derive(Debug)]
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| Error::bad_request(format!("bad query parameter: {}", e.body_text())))
    }
}

impl<T: JsonSchema> OperationInput for Query<T> {
    fn operation_input(ctx: &mut GenContext, op: &mut Operation) {
        axum::extract::Query::<T>::operation_input(ctx, op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_do_not_echo_long_inputs() {
        let long = "y".repeat(500);
        let body = format!(r#"{{"kind": "{long}"}}"#);
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        enum Kind {
            A,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct B {
            kind: Kind,
        }
        let e = parse_json::<B>(body.as_bytes()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(!e.message.contains(&long), "{}", e.message);
        assert!(e.message.contains("expected fields"), "{}", e.message);
    }
}
