//! One error type for every service, with a kind the HTTP layer maps to a status and a stable
//! machine-readable code.

use volley_store::StoreError;

/// What kind of failure, which decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule (400).
    BadRequest,
    /// No valid credentials (401).
    Unauthorized,
    /// Valid credentials, but not allowed to touch this (403).
    Forbidden,
    /// No such thing (404).
    NotFound,
    /// It conflicts with what exists (409).
    Conflict,
    /// Too many requests; retry after the given ms (429).
    TooMany(u64),
    /// The service sheds load (503).
    Overloaded,
    /// A storage failure (500, logged; the body says only that).
    Internal,
}

/// A service error: kind, stable code and a message for humans.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PlatformError {
    /// The kind.
    pub kind: ErrorKind,
    /// Stable code, e.g. `invalid_credentials`, `party_full`.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

impl PlatformError {
    /// A new error.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        PlatformError {
            kind,
            code,
            message: message.into(),
        }
    }

    /// 400 with `code`.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorKind::NotFound, "not_found", format!("no such {what}"))
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", message)
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    /// 401.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, code, message)
    }
}

impl From<StoreError> for PlatformError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage failure");
        PlatformError::new(ErrorKind::Internal, "storage", "storage is unavailable")
    }
}

impl From<sqlx::Error> for PlatformError {
    fn from(e: sqlx::Error) -> Self {
        PlatformError::from(StoreError::from(e))
    }
}
