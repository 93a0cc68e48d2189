//! Login tokens (HS256 JWT with expiry, `nbf`/`iat` honoured, the user's token generation) and
//! the middleware that requires one on every path outside the white list and checks that its
//! user still exists at that generation.

use crate::error::ApiError;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::future::{ready, Ready};

/// Clock skew tolerated on `iat`/`nbf` between the servers of one deployment, in seconds.
const SKEW_SECS: i64 = 30;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    /// The user's token generation when the token was issued; raising it revokes the token.
    #[serde(default)]
    gen: i64,
}

/// What a genuine, current token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: String,
    pub generation: i64,
}

/// Signs and checks login tokens.
#[derive(Clone)]
pub struct Tokens {
    enc: EncodingKey,
    dec: DecodingKey,
    /// The checks every token goes through (built once: they do not change).
    rules: Validation,
    ttl_secs: i64,
}

impl Tokens {
    /// `key` is the token-signing key (derived from the configured secret, see
    /// `server::derive_key`).
    pub fn new(key: &str, ttl_secs: u64) -> Tokens {
        Tokens {
            enc: EncodingKey::from_secret(key.as_bytes()),
            dec: DecodingKey::from_secret(key.as_bytes()),
            rules: {
                let mut v = Validation::new(Algorithm::HS256);
                v.leeway = 0;
                v.validate_nbf = false;
                v.set_required_spec_claims(&["exp", "sub"]);
                v
            },
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2),
        }
    }

    /// A token for `user` at token generation `generation`, and when it expires (unix seconds).
    pub fn issue(&self, user: &str, generation: i64) -> Result<(String, i64), ApiError> {
        let now = engine::store::now_ms() / 1000;
        let exp = now.saturating_add(self.ttl_secs);
        let claims = Claims {
            sub: user.to_string(),
            iat: now,
            exp,
            nbf: None,
            gen: generation,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .map_err(|e| ApiError::Internal(format!("token: {e}")))?;
        Ok((token, exp))
    }

    /// What a token says, if it is genuine, not expired and not dated in the future (`nbf` or
    /// `iat`). Whether its user still exists at that generation is [`Users::check`]'s job.
    pub fn verify(&self, token: &str) -> Result<Verified, ApiError> {
        let claims = match jsonwebtoken::decode::<Claims>(token, &self.dec, &self.rules) {
            Ok(data) => data.claims,
            Err(e) => {
                return Err(ApiError::Unauthorized(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        "login token expired; log in again".to_string()
                    }
                    _ => "invalid login token".to_string(),
                }))
            }
        };
        let now = engine::store::now_ms() / 1000;
        let future = |t: i64| t > now.saturating_add(SKEW_SECS);
        if future(claims.iat) || claims.nbf.is_some_and(future) {
            return Err(ApiError::Unauthorized(
                "login token not valid yet (nbf/iat in the future)".into(),
            ));
        }
        Ok(Verified {
            user: claims.sub,
            generation: claims.gen,
        })
    }
}

/// Which users exist at which token generation, remembered for `uc.limits.userCacheSecs`
/// (a revocation on this server forgets its entry at once).
pub struct Users {
    cache: Option<moka::future::Cache<String, Option<i64>>>,
}

impl Users {
    pub fn new(cache_secs: u64) -> Users {
        Users {
            cache: (cache_secs > 0).then(|| {
                moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(std::time::Duration::from_secs(cache_secs))
                    .build()
            }),
        }
    }

    /// Forgets a user (after logout --all or a password change).
    pub async fn forget(&self, user: &str) {
        if let Some(c) = &self.cache {
            c.invalidate(user).await;
        }
    }

    /// Whether the token's user exists and the token is of its current generation.
    pub async fn check(&self, db: &engine::store::Db, token: &Verified) -> Result<(), ApiError> {
        let lookup = || async {
            engine::users::token_generation(db, &token.user)
                .await
                .map_err(|e| ApiError::Unavailable(format!("cannot check the login now: {e}")))
        };
        let generation = match &self.cache {
            None => lookup().await?,
            Some(c) => {
                c.try_get_with(token.user.clone(), lookup())
                    .await
                    .map_err(|e| match &*e {
                        ApiError::Unavailable(m) => ApiError::Unavailable(m.clone()),
                        other => ApiError::Internal(other.to_string()),
                    })?
            }
        };
        match generation {
            None => Err(ApiError::Unauthorized(format!(
                "user {:?} does not exist; log in again",
                token.user
            ))),
            Some(g) if g != token.generation => Err(ApiError::Unauthorized(
                "login token revoked (logout --all or a password change); log in again".into(),
            )),
            Some(_) => Ok(()),
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
        matches!(
            path,
            // the relay checks the servers' relay key itself
            "/healthz" | "/readyz" | "/metrics" | "/api/openapi.json" | "/api/cluster/relay"
        ) || self.0.iter().any(|w| {
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
    // the console's pages check their own session cookie (`console::session`)
    let white = crate::console::handles(req.path())
        || req
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
        let verified = tokens.verify(token)?;
        let users = req
            .app_data::<web::Data<Users>>()
            .ok_or_else(|| ApiError::Internal("user cache missing".into()))?;
        let state = req
            .app_data::<web::Data<crate::api::AppState>>()
            .ok_or_else(|| ApiError::Internal("state missing".into()))?;
        users.check(&state.db, &verified).await?;
        req.extensions_mut().insert(AuthUser(verified.user));
    }
    next.call(req).await
}
