//! The web console at `/` (SPEC §11): pages rendered on the server with maud, one small
//! plain-JS file and one stylesheet embedded in the binary, no build step.
//!
//! - **Session.** Logging in issues the same login token as `POST /api/user/login`, kept in an
//!   HttpOnly, SameSite=Strict cookie; every page checks it as the API's middleware checks a
//!   bearer token (signature, expiry, the user still there at that token generation), so
//!   `logout-all` and a password change end console sessions too. No session, or a bad one,
//!   is a redirect to the login page.
//! - **CSRF.** Every form carries a token derived from the session token (SHA-256 of it with a
//!   label): a page can only be made to post it by someone who holds the cookie, and the
//!   cookie never leaves the browser for another site (SameSite=Strict). A POST without the
//!   right token is a 403. The login form has a random token of its own in a cookie.
//! - **Ownership.** Pages call the engine functions the API handlers call, with the session's
//!   user, so another user's run is a 404 exactly as in the API.
//! - **Escaping.** maud escapes every value; the pages never use `PreEscaped` on data. The
//!   responses also carry a Content-Security-Policy that allows no inline script.
//! - **Live.** An element with `data-live-src` is refreshed by the script from that URL (an HTML
//!   fragment, every ~1.5 s, until the fragment says it is done); a task's log is a stream of
//!   server-sent events with byte offsets (`sse`).
//!
//! The routes are `/` and everything under `/ui/`; the API's bearer-token middleware leaves
//! them to the session guard here ([`handles`]).

mod dag;
mod pages;
mod sse;

use crate::api::AppState;
use crate::auth::{Tokens, Users};
use crate::error::ApiError;
use crate::limiter::{peer_ip, Limiter, Realm};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use maud::{html, Markup, DOCTYPE};
use sha2::Digest;
use std::fmt;

/// The session cookie (the login token).
pub const SESSION_COOKIE: &str = "eo_session";
/// The login form's CSRF cookie.
const LOGIN_COOKIE: &str = "eo_login";

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Whether a path belongs to the console (which checks its own session cookie).
pub fn handles(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/ui", web::get().to(root))
        .route("/ui/", web::get().to(root))
        .route("/ui/assets/console.js", web::get().to(script))
        .route("/ui/assets/console.css", web::get().to(style))
        .route("/ui/login", web::get().to(login_page))
        .route("/ui/login", web::post().to(login))
        .route("/ui/logout", web::post().to(logout))
        .configure(pages::routes);
}

type State = web::Data<AppState>;

/// A console failure, shown as a page (or a redirect to the login page).
#[derive(Debug)]
pub enum ConsoleError {
    /// No valid session: back to the login page, then to `next`.
    Login { next: String, why: String },
    /// A POST without the right CSRF token.
    Forbidden(String),
    /// Anything the API would answer with an error, with its status.
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        ConsoleError::Api(e)
    }
}

impl From<engine::Error> for ConsoleError {
    fn from(e: engine::Error) -> Self {
        ConsoleError::Api(e.into())
    }
}

impl fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsoleError::Login { why, .. } => write!(f, "log in: {why}"),
            ConsoleError::Forbidden(m) => f.write_str(m),
            ConsoleError::Api(e) => write!(f, "{e}"),
        }
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::Login { .. } => StatusCode::SEE_OTHER,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::Api(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ConsoleError::Login { next, why } => {
                log::debug!("console: to the login page ({why})");
                HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, login_url(next)))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .finish()
            }
            ConsoleError::Forbidden(m) => error_page(StatusCode::FORBIDDEN, m),
            ConsoleError::Api(e) => {
                if let ApiError::Internal(detail) = e {
                    log::error!("console: internal error: {detail}");
                }
                let mut page = error_page(e.status_code(), &e.to_string());
                // a 429 or 503 says when to try again, as the API's answer does
                if matches!(e, ApiError::Unavailable(_) | ApiError::TooManyRequests(..)) {
                    if let Some(v) = e.error_response().headers().get(header::RETRY_AFTER) {
                        page.headers_mut().insert(header::RETRY_AFTER, v.clone());
                    }
                }
                page
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, ConsoleError>;

fn login_url(next: &str) -> String {
    if matches!(next, "" | "/" | "/ui" | "/ui/" | "/ui/runs") {
        "/ui/login".into()
    } else {
        format!("/ui/login?next={}", encode(next))
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Where to go after logging in: a console path of this server only (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/ui/runs".into(),
    }
}

/// The logged-in user of a console request and the CSRF token of the session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
}

impl Session {
    /// Checks a form's CSRF token (constant-time).
    pub fn check_csrf(&self, token: &str) -> Result<()> {
        if engine::secrets::same(token, &self.csrf) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "the form's CSRF token is missing or wrong; reload the page and try again".into(),
            ))
        }
    }
}

/// The CSRF token of a session: bound to its login token, unguessable without it.
fn csrf_of(token: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"eventops console csrf v1\0");
    h.update(token.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn set_cookie(req: &HttpRequest, name: &str, value: &str, max_age: i64, path: &str) -> String {
    let secure = if req.connection_info().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// The session of a request, or [`ConsoleError::Login`] back to this page.
pub async fn session(req: &HttpRequest) -> Result<Session> {
    let next = match req.query_string() {
        "" => req.path().to_string(),
        q => format!("{}?{q}", req.path()),
    };
    let login = |why: String| ConsoleError::Login {
        next: next.clone(),
        why,
    };
    let token = cookie(req, SESSION_COOKIE)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| login("no session".into()))?;
    let tokens = req
        .app_data::<web::Data<Tokens>>()
        .ok_or_else(|| ApiError::Internal("token keys missing".into()))?;
    let users = req
        .app_data::<web::Data<Users>>()
        .ok_or_else(|| ApiError::Internal("user cache missing".into()))?;
    let state = req
        .app_data::<State>()
        .ok_or_else(|| ApiError::Internal("state missing".into()))?;
    let verified = tokens.verify(token).map_err(|e| login(e.to_string()))?;
    match users.check(&state.db, &verified).await {
        Ok(()) => {}
        Err(e @ ApiError::Unauthorized(_)) => return Err(login(e.to_string())),
        Err(e) => return Err(e.into()),
    }
    Ok(Session {
        user: verified.user,
        csrf: csrf_of(token),
    })
}

/// Headers every console page carries: no inline script or style may run, no framing.
pub fn secure_headers(
    r: &mut actix_web::HttpResponseBuilder,
) -> &mut actix_web::HttpResponseBuilder {
    r.insert_header((
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ))
    .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
    .insert_header((header::REFERRER_POLICY, "same-origin"))
    .insert_header((header::CACHE_CONTROL, "no-store"))
}

/// An HTML response.
pub fn respond(status: StatusCode, body: Markup) -> HttpResponse {
    let mut r = HttpResponse::build(status);
    secure_headers(&mut r)
        .content_type("text/html; charset=utf-8")
        .body(body.into_string())
}

/// A page: the navigation, the user and a logout button, then `content` in `<main>`.
pub fn page(title: &str, session: Option<&Session>, current: &str, content: Markup) -> Markup {
    let nav = [
        ("runs", "/ui/runs", "Runs"),
        ("events", "/ui/events", "Events"),
        ("definitions", "/ui/definitions", "Definitions"),
        ("machines", "/ui/machines", "Machines"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · eventops" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/runs" { "eventops" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            ul {
                                @for (key, href, label) in nav {
                                    li {
                                        @if key == current {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form.logout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span.user { "Signed in as " strong { (s.user) } }
                            " "
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    (content)
                }
            }
        }
    }
}

fn error_page(status: StatusCode, msg: &str) -> HttpResponse {
    let title = status.canonical_reason().unwrap_or("Error");
    respond(
        status,
        page(
            title,
            None,
            "",
            html! {
                h1 { (status.as_u16()) " " (title) }
                p role="alert" { (msg) }
                p { a href="/ui/runs" { "Back to the runs" } }
            },
        ),
    )
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

async fn root(req: HttpRequest) -> Result<HttpResponse> {
    session(&req).await?;
    Ok(see_other("/ui/runs"))
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(SCRIPT)
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(STYLE)
}

#[derive(Debug, serde::Deserialize)]
struct NextQuery {
    next: Option<String>,
}

fn login_form(next: &str, csrf: &str, name: &str, error: Option<&str>) -> Markup {
    page(
        "Log in",
        None,
        "",
        html! {
            h1 { "Log in to eventops" }
            @if let Some(e) = error {
                p.error role="alert" id="login-error" { (e) }
            }
            form.login method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                p {
                    label for="name" { "User name" }
                    input id="name" name="name" type="text" autocomplete="username" required
                        value=(name) autofocus;
                }
                p {
                    label for="password" { "Password" }
                    input id="password" name="password" type="password"
                        autocomplete="current-password" required;
                }
                p { button type="submit" { "Log in" } }
            }
        },
    )
}

fn random_hex() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn login_page(req: HttpRequest) -> HttpResponse {
    let q = web::Query::<NextQuery>::from_query(req.query_string()).ok();
    let next = safe_next(q.as_ref().and_then(|q| q.next.as_deref()));
    let csrf = random_hex();
    let mut r = HttpResponse::Ok();
    secure_headers(&mut r)
        .insert_header((
            header::SET_COOKIE,
            set_cookie(&req, LOGIN_COOKIE, &csrf, 3600, "/ui/login"),
        ))
        .content_type("text/html; charset=utf-8")
        .body(login_form(&next, &csrf, "", None).into_string())
}

#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

async fn login(
    state: State,
    tokens: web::Data<Tokens>,
    hasher: web::Data<engine::users::Hasher>,
    limiter: web::Data<Limiter>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse> {
    let f = form.into_inner();
    let expected = cookie(&req, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !engine::secrets::same(&f.csrf, expected) {
        return Err(ConsoleError::Forbidden(
            "the login form's CSRF token is missing or wrong; reload the login page".into(),
        ));
    }
    let next = safe_next(f.next.as_deref());
    let peer = peer_ip(&req);
    let attempt = limiter.begin(Realm::Login, &f.name, peer)?;
    match engine::users::authenticate(&state.db, &hasher, &f.name, &f.password).await {
        Ok(user) => {
            attempt.succeeded();
            let (token, expires_at) = tokens.issue(&user.name, user.token_generation)?;
            let max_age = expires_at.saturating_sub(engine::store::now_ms() / 1000);
            log::info!("console: {:?} logged in from {peer}", user.name);
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, next))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .append_header((
                    header::SET_COOKIE,
                    set_cookie(&req, SESSION_COOKIE, &token, max_age, "/"),
                ))
                .append_header((
                    header::SET_COOKIE,
                    set_cookie(&req, LOGIN_COOKIE, "", 0, "/ui/login"),
                ))
                .finish())
        }
        Err(e @ engine::Error::Unauthorized(_)) => {
            log::info!("console: failed login for {:?} from {peer}", f.name);
            let msg = e.to_string();
            Ok(respond(
                StatusCode::UNAUTHORIZED,
                login_form(&next, expected, &f.name, Some(&msg)),
            ))
        }
        Err(e) => {
            attempt.succeeded();
            Err(e.into())
        }
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

async fn logout(req: HttpRequest, form: web::Form<CsrfForm>) -> Result<HttpResponse> {
    let s = session(&req).await?;
    s.check_csrf(&form.csrf)?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui/login"))
        .insert_header((
            header::SET_COOKIE,
            set_cookie(&req, SESSION_COOKIE, "", 0, "/"),
        ))
        .finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_console() {
        assert_eq!(safe_next(Some("/ui/runs/5")), "/ui/runs/5");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/runs");
        assert_eq!(safe_next(Some("//evil.example/ui/")), "/ui/runs");
        assert_eq!(safe_next(Some("/ui/\\evil")), "/ui/runs");
        assert_eq!(safe_next(None), "/ui/runs");
    }

    #[test]
    fn csrf_is_bound_to_the_session() {
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert_eq!(csrf_of("a").len(), 64);
        let s = Session {
            user: "u".into(),
            csrf: csrf_of("a"),
        };
        assert!(s.check_csrf(&csrf_of("a")).is_ok());
        assert!(s.check_csrf("").is_err());
        assert!(s.check_csrf(&csrf_of("b")).is_err());
    }

    #[test]
    fn console_paths() {
        assert!(handles("/"));
        assert!(handles("/ui/runs"));
        assert!(!handles("/api/pipeline/"));
        assert!(!handles("/uix"));
    }
}
