//! Login tokens (HS256 JWT with expiry) and the middleware that requires one on every path
//! outside the white list.

use crate::error::ApiError;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::future::{ready, Ready};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
}

/// Signs and checks login tokens.
#[derive(Clone)]
pub struct Tokens {
    enc: EncodingKey,
    dec: DecodingKey,
    ttl_secs: i64,
}

impl Tokens {
    pub fn new(secret: &str, ttl_secs: u64) -> Tokens {
        Tokens {
            enc: EncodingKey::from_secret(secret.as_bytes()),
            dec: DecodingKey::from_secret(secret.as_bytes()),
            ttl_secs: ttl_secs.min(i64::MAX as u64 / 2) as i64,
        }
    }

    /// A token for `user`, and when it expires (unix seconds).
    pub fn issue(&self, user: &str) -> Result<(String, i64), ApiError> {
        let now = engine::store::now_ms() / 1000;
        let exp = now.saturating_add(self.ttl_secs);
        let claims = Claims {
            sub: user.to_string(),
            iat: now,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .map_err(|e| ApiError::Internal(format!("token: {e}")))?;
        Ok((token, exp))
    }

    /// The user a token was issued to, if it is genuine and not expired.
    pub fn verify(&self, token: &str) -> Result<String, ApiError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        match jsonwebtoken::decode::<Claims>(token, &self.dec, &v) {
            Ok(data) => Ok(data.claims.sub),
            Err(e) => Err(ApiError::Unauthorized(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "login token expired; log in again".to_string()
                }
                _ => "invalid login token".to_string(),
            })),
        }
    }
}

/// The logged-in user of a request (set by [`require_login`]).
#[derive(Debug, Clone)]
pub struct AuthUser(pub String);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<AuthUser>()
                .cloned()
                .ok_or_else(|| ApiError::Unauthorized("login required".into())),
        )
    }
}

/// The paths that need no token.
#[derive(Clone)]
pub struct WhiteList(pub Vec<String>);

impl WhiteList {
    fn allows(&self, path: &str) -> bool {
        matches!(path, "/healthz" | "/readyz" | "/metrics")
            || self.0.iter().any(|w| {
                let w = w.trim_end_matches('/');
                path == w || path.strip_prefix(w).is_some_and(|rest| rest == "/")
            })
    }
}

/// Middleware: every request outside the white list must carry `Authorization: Bearer <token>`.
pub async fn require_login(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let white = req
        .app_data::<web::Data<WhiteList>>()
        .is_some_and(|w| w.allows(req.path()));
    if !white {
        let tokens = req
            .app_data::<web::Data<Tokens>>()
            .ok_or_else(|| ApiError::Internal("token keys missing".into()))?;
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "login required: send Authorization: Bearer <token> (eoctl login)".into(),
                )
            })?;
        let user = tokens.verify(token)?;
        req.extensions_mut().insert(AuthUser(user));
    }
    next.call(req).await
}
