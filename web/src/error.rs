//! The one API error type: every failure becomes the envelope `{status, msg, data}` with the
//! matching HTTP status (an exhaustive mapping from engine errors).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use std::fmt;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    NotFound(String),
    MethodNotAllowed,
    Conflict(String),
    TooLarge(usize),
    /// 503, with `Retry-After: 1`.
    Unavailable(String),
    /// 429: too many failed attempts; retry after this many seconds (sent as `Retry-After`).
    TooManyRequests(String, u64),
    Internal(String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Unavailable(m)
            | ApiError::TooManyRequests(m, _) => f.write_str(m),
            ApiError::MethodNotAllowed => f.write_str("method not allowed"),
            ApiError::TooLarge(limit) => {
                write!(f, "request body is larger than the limit of {limit} bytes")
            }
            // details are logged, not sent
            ApiError::Internal(_) => f.write_str("internal server error"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ApiError::Internal(detail) = self {
            log::error!("internal error: {detail}");
        }
        let mut resp = HttpResponse::build(status);
        match self {
            ApiError::Unavailable(_) => {
                resp.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
            }
            ApiError::TooManyRequests(_, secs) => {
                resp.insert_header((actix_web::http::header::RETRY_AFTER, (*secs).max(1)));
            }
            _ => {}
        }
        resp.json(proto::Envelope::<()> {
            status: status.as_u16(),
            msg: self.to_string(),
            data: None,
        })
    }
}

impl From<engine::Error> for ApiError {
    fn from(e: engine::Error) -> Self {
        match e {
            engine::Error::Validation(m) => ApiError::BadRequest(m),
            engine::Error::NotFound(m) => ApiError::NotFound(m),
            engine::Error::Conflict(m) => ApiError::Conflict(m),
            engine::Error::Unauthorized(m) => ApiError::Unauthorized(m),
            engine::Error::Unavailable(m) => ApiError::Unavailable(m),
            engine::Error::Store(s) => s.into(),
            engine::Error::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<engine::store::StoreError> for ApiError {
    fn from(e: engine::store::StoreError) -> Self {
        if e.is_transient() {
            // never a 500 for an outage: the request may be sent again as it was
            ApiError::Unavailable(format!(
                "the database is unavailable; try again later ({e})"
            ))
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

/// A successful envelope.
pub fn ok<T: serde::Serialize>(data: T) -> HttpResponse {
    HttpResponse::Ok().json(proto::Envelope {
        status: 200,
        msg: "ok".into(),
        data: Some(data),
    })
}
