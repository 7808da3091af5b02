//! The one error type of the HTTP API. Every failure answers with the JSON [`ApiError`] shape:
//! a stable code, a message that says what to do, and for 429/503 a `Retry-After`. Internal
//! failures answer 500 with a request id that the node logged the cause under, and nothing of
//! the cause itself.

use aide::generate::GenContext;
use aide::openapi::{MediaType, Operation, Response as DocResponse, SchemaObject};
use aide::OperationOutput;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use volley_proto::api::ApiError;

/// Longest message an error carries; longer ones (from user input echoed into a reason) are
/// cut, so a 5,000-character input never comes back whole.
const MESSAGE_CHARS_MAX: usize = 200;

/// An API failure.
#[derive(Debug)]
pub(crate) struct Error {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The stable machine-readable code.
    pub(crate) code: &'static str,
    /// What went wrong, for people.
    pub(crate) message: String,
    /// When the client may try again (429 and 503).
    pub(crate) retry_after_ms: Option<u64>,
    /// Set on internal errors: the id the cause was logged under.
    pub(crate) request_id: Option<String>,
}

impl Error {
    /// An error with a status, a code and a message.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            status,
            code,
            message: message.into(),
            retry_after_ms: None,
            request_id: None,
        }
    }

    /// 400 `bad_request`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Error::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Error::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Error::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 with a code, retry after `retry_after_ms`.
    pub(crate) fn unavailable(code: &'static str, message: impl Into<String>, ms: u64) -> Self {
        Error::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry_after(ms)
    }

    /// 500 `internal`: logs `cause` with a fresh request id and answers with only that id.
    pub(crate) fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        let id = format!("{:016x}", rand::random::<u64>());
        tracing::error!(request_id = %id, error = %cause, "{context}");
        Error {
            request_id: Some(id.clone()),
            ..Error::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("internal error; the node logged it as request {id}"),
            )
        }
    }

    /// Sets when the client may try again.
    pub(crate) fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }
}

/// Cuts `s` to at most [`MESSAGE_CHARS_MAX`] characters, marking the cut.
fn bounded(mut s: String) -> String {
    if let Some((at, _)) = s.char_indices().nth(MESSAGE_CHARS_MAX) {
        s.truncate(at);
        s.push('…');
    }
    s
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = ApiError {
            code: self.code.to_owned(),
            message: bounded(self.message),
            request_id: self.request_id.clone(),
        };
        let mut r = (self.status, Json(body)).into_response();
        if let Some(ms) = self.retry_after_ms {
            if let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if let Some(id) = self
            .request_id
            .and_then(|id| HeaderValue::from_str(&id).ok())
        {
            r.headers_mut().insert("x-request-id", id);
        }
        r
    }
}

impl From<volley_platform::PlatformError> for Error {
    fn from(e: volley_platform::PlatformError) -> Self {
        use volley_platform::ErrorKind as K;
        let status = match e.kind {
            K::BadRequest => StatusCode::BAD_REQUEST,
            K::Unauthorized => StatusCode::UNAUTHORIZED,
            K::Forbidden => StatusCode::FORBIDDEN,
            K::NotFound => StatusCode::NOT_FOUND,
            K::Conflict => StatusCode::CONFLICT,
            K::TooMany(ms) => {
                return Error::new(StatusCode::TOO_MANY_REQUESTS, e.code, e.message).retry_after(ms)
            }
            K::Overloaded => {
                return Error::new(StatusCode::SERVICE_UNAVAILABLE, e.code, e.message)
                    .retry_after(1000)
            }
            K::Internal => {
                return Error::internal("platform", format!("{}: {}", e.code, e.message))
            }
        };
        Error::new(status, e.code, e.message)
    }
}

impl From<crate::origin::OriginError> for Error {
    fn from(e: crate::origin::OriginError) -> Self {
        use crate::origin::OriginError as O;
        match e {
            O::BadRequest { code, message } => Error::new(StatusCode::BAD_REQUEST, code, message),
            O::NotFound(message) => Error::not_found(message),
            O::Conflict { code, message } => Error::new(StatusCode::CONFLICT, code, message),
            O::Unavailable { code, message, ms } => Error::unavailable(code, message, ms),
            O::TooMany { code, message, ms } => {
                Error::new(StatusCode::TOO_MANY_REQUESTS, code, message).retry_after(ms)
            }
            O::Storage(cause) => Error::internal("content storage", cause),
            O::BadStoredManifest { version, cause } => Error {
                code: "bad_stored_manifest",
                message: format!("the stored manifest of version {version} does not parse"),
                ..Error::internal("a stored manifest does not parse", cause)
            },
        }
    }
}

/// The error response every operation documents as its default.
fn error_response(ctx: &mut GenContext) -> DocResponse {
    let schema = ctx.schema.subschema_for::<ApiError>().into_object();
    DocResponse {
        description: "An error: a stable code and a message.".into(),
        content: [(
            "application/json".to_owned(),
            MediaType {
                schema: Some(SchemaObject {
                    json_schema: schema.into(),
                    example: None,
                    external_docs: None,
                }),
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

impl OperationOutput for Error {
    type Inner = ApiError;

    fn operation_response(ctx: &mut GenContext, _op: &mut Operation) -> Option<DocResponse> {
        Some(error_response(ctx))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        _op: &mut Operation,
    ) -> Vec<(Option<u16>, DocResponse)> {
        vec![(None, error_response(ctx))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(5000);
        let cut = bounded(long);
        assert_eq!(cut.chars().count(), MESSAGE_CHARS_MAX + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("short".into()), "short");
    }
}
