//! The engine's error type. The HTTP layer maps each variant to one status code.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is wrong; the message names the field (400).
    #[error("{0}")]
    Validation(String),
    /// No such object for this user (404). Other users' objects are reported the same way.
    #[error("{0}")]
    NotFound(String),
    /// The object exists and the request contradicts it (409).
    #[error("{0}")]
    Conflict(String),
    /// Bad credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Temporarily unable to serve, e.g. too many password checks queued (503 with
    /// `Retry-After`); the client should retry shortly.
    #[error("{0}")]
    Unavailable(String),
    /// The database failed (500, logged, not detailed to the client).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else that is our fault (500).
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<crate::document::DocError> for Error {
    fn from(e: crate::document::DocError) -> Self {
        Error::Validation(e.0)
    }
}
