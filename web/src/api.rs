//! HTTP routes (SPEC §4–§5, §11). Handlers read the body, call one engine function and wrap
//! the answer in the envelope; they never touch SQL.

use crate::auth::{AuthUser, Tokens, Users};
use crate::error::{ok, ApiError};
use crate::limiter::{peer_ip, Limiter, Realm};
use actix_web::{web, HttpRequest, HttpResponse};
use engine::registry::{self, Settings};
use engine::store::Db;
use engine::users::Hasher;
use futures_util::StreamExt;
use proto::{
    Deleted, EventSent, LoginRequest, LoginResponse, PasswordChange, RegisterRequest, UserView,
};

/// What handlers share.
pub struct AppState {
    pub db: Db,
    pub engine: std::sync::Arc<engine::runtime::Engine>,
    pub settings: Settings,
    pub max_body: usize,
    pub max_event: usize,
    /// `minio.maxUploadBytes`.
    pub max_upload: u64,
}

type State = web::Data<AppState>;

/// Registers every route and lists them in [`ROUTES`] (method, path), from one table: the
/// OpenAPI document is checked against that list (`crate::openapi`'s tests), so a route cannot
/// be added without being documented. A trailing `/` is accepted on the list routes.
macro_rules! route_table {
    ($($method:ident $path:literal => $handler:path;)*) => {
        /// Every route of the API: (method, path).
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        pub fn routes(cfg: &mut web::ServiceConfig) {
            $(cfg.route($path, web::$method().to($handler));)*
        }
    };
}

// Matched in this order: the hot static routes (events, callbacks) come before the patterns.
route_table! {
    post "/api/event/send" => send_event;
    post "/api/pipeline/callback" => callback;
    get "/healthz" => healthz;
    get "/readyz" => readyz;
    get "/metrics" => crate::metrics::scrape;
    get "/api/openapi.json" => crate::openapi::document;
    get "/api/dialer/connect" => crate::dialer::connect;
    post "/api/user/register" => register;
    post "/api/user/login" => login;
    get "/api/user/me" => me;
    post "/api/user/logout-all" => logout_all;
    post "/api/user/password" => change_password;
    post "/api/actuator/apply" => apply_actuator;
    get "/api/actuator" => list_actuators;
    get "/api/actuator/" => list_actuators;
    get "/api/actuator/{name}" => get_actuator;
    delete "/api/actuator/{name}" => delete_actuator;
    post "/api/pipeline-definition/apply" => apply_pipeline;
    get "/api/pipeline-definition" => list_pipelines;
    get "/api/pipeline-definition/" => list_pipelines;
    get "/api/pipeline-definition/{name}" => get_pipeline_latest;
    get "/api/pipeline-definition/{name}/{version}" => get_pipeline;
    delete "/api/pipeline-definition/{name}/{version}" => delete_pipeline;
    post "/api/trigger-definition/apply" => apply_trigger;
    get "/api/trigger-definition" => list_triggers;
    get "/api/trigger-definition/" => list_triggers;
    get "/api/trigger-definition/{name}" => get_trigger;
    delete "/api/trigger-definition/{name}" => delete_trigger;
    get "/api/event/{id}" => get_event;
    get "/api/pipeline" => list_runs;
    get "/api/pipeline/" => list_runs;
    get "/api/pipeline/{id}" => get_run;
    post "/api/pipeline/{id}/cancel" => cancel_run;
    get "/api/pipeline/{id}/task/{task}/log" => task_log;
    get "/api/pipeline/{id}/task/{task}/file/{name}" => task_file;
    post "/api/file/upload" => upload_file;
    get "/api/cluster" => cluster;
    get "/api/cluster/relay" => crate::relay::relay;
    get "/api/v1/machine" => crate::fanout::list_machines;
    get "/api/v1/machine/" => crate::fanout::list_machines;
    post "/api/v1/task" => crate::fanout::create_task;
    post "/api/v1/task/" => crate::fanout::create_task;
    get "/api/v1/task" => crate::fanout::list_tasks;
    get "/api/v1/task/" => crate::fanout::list_tasks;
}

/// Reads a whole body as UTF-8 text, refusing more than `limit` bytes (413) before reading
/// them when the length is announced, and as soon as the stream passes it otherwise.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<String, ApiError> {
    if let Some(len) = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(ApiError::TooLarge(limit));
        }
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("request body is not valid UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest("request body is empty".into()));
    }
    Ok(text)
}

/// A JSON body as `T`: one JSON value and nothing after it (`{..}garbage` is refused), no NUL
/// character in any string (no database stores it), errors naming the field.
fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    let malformed =
        |e: serde_json::Error| ApiError::BadRequest(format!("malformed JSON body: {e}"));
    let de = &mut serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest(format!("malformed JSON body: {inner}"))
        } else {
            ApiError::BadRequest(format!("{path}: {inner}"))
        }
    })?;
    de.end().map_err(malformed)?;
    // `\u0000` is the only way a NUL gets into JSON text; look for the field only then
    if text.contains("\\u0000") {
        let v: serde_json::Value = serde_json::from_str(text).map_err(malformed)?;
        if let Some(path) = engine::document::find_nul(&v) {
            return Err(ApiError::BadRequest(engine::document::nul_message(&path)));
        }
    }
    Ok(value)
}

/// Refuses, before any handler runs, a request whose path or query cannot be stored or
/// compared by every database: a NUL character (`%00`; PostgreSQL refuses it in text) or bytes
/// that are not UTF-8 (`%FF`), once percent-decoded. The message names the path segment or
/// query parameter.
pub async fn check_url(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if let Err(msg) = url_problem(req.uri().path(), req.query_string()) {
        return Err(ApiError::BadRequest(msg).into());
    }
    next.call(req).await
}

/// Why a raw (percent-encoded) path and query cannot be served, if they cannot.
pub fn url_problem(path: &str, query: &str) -> Result<(), String> {
    let decode = |raw: &str| percent_decode(raw.as_bytes());
    for seg in path.split('/') {
        let bytes = decode(seg);
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        check_text(&bytes).map_err(|what| format!("path segment {shown:?}: {what}"))?;
    }
    if query.is_empty() {
        return Ok(());
    }
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // `+` is a space in a query; it changes nothing checked here
        let key = decode(k);
        let name = String::from_utf8_lossy(&key).into_owned();
        check_text(&key).map_err(|what| format!("query parameter name {name:?}: {what}"))?;
        check_text(&decode(v)).map_err(|what| format!("query parameter {name}: {what}"))?;
    }
    Ok(())
}

fn check_text(bytes: &[u8]) -> Result<(), &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not valid UTF-8 once percent-decoded")?;
    if text.contains('\0') {
        return Err("contains a NUL character (%00), which cannot be stored");
    }
    Ok(())
}

/// `%XX` → the byte; anything else (including a malformed `%`) as written.
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |i: usize| raw.get(i).and_then(|b| char::from(*b).to_digit(16));
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            if let Some(byte) = hex(i + 1)
                .zip(hex(i + 2))
                .and_then(|(h, l)| u8::try_from(h * 16 + l).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is alive", body = proto::Envelope<String>)))]
async fn healthz() -> HttpResponse {
    ok("alive")
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The database answers", body = proto::Envelope<String>),
        (status = 503, description = "Not ready: the database is down", body = crate::openapi::Failure)))]
async fn readyz(state: State) -> Result<HttpResponse, ApiError> {
    if state.engine.cluster.is_draining() {
        return Err(ApiError::Unavailable(
            "not ready: this server is draining (stopping); use another".into(),
        ));
    }
    if let Err(e) = state.db.ping().await {
        let why = state
            .db
            .health()
            .down()
            .unwrap_or_else(|| format!("database not reachable: {e}"));
        return Err(ApiError::Unavailable(format!("not ready: {why}")));
    }
    Ok(ok("ready"))
}

#[utoipa::path(get, path = "/api/cluster", tag = "health", security(("token" = [])),
    responses(
        (status = 200, description = "The servers sharing this server's database", body = proto::Envelope<proto::ClusterView>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 503, description = "The database is down", body = crate::openapi::Failure)))]
async fn cluster(state: State, _user: AuthUser) -> Result<HttpResponse, ApiError> {
    use engine::store;
    let rows = store::cluster::list(&state.db).await?;
    let runs: std::collections::HashMap<String, i64> = store::cluster::runs_per_owner(&state.db)
        .await?
        .into_iter()
        .collect();
    let now = store::now_ms();
    let me = &state.engine.settings.instance_id;
    let servers = rows
        .into_iter()
        .map(|s| {
            let age = (now - s.heartbeat_at).max(0);
            proto::ServerView {
                node: s.node,
                runs: runs.get(&s.instance_id).copied().unwrap_or(0),
                this: &s.instance_id == me,
                state: if s.draining {
                    "draining"
                } else if age > engine::runtime::cluster::UP_WITHIN_MS {
                    "down"
                } else {
                    "up"
                }
                .into(),
                started_at: store::format_ms(s.started_at),
                last_heartbeat: store::format_ms(s.heartbeat_at),
                heartbeat_age_ms: age,
                instance_id: s.instance_id,
                address: s.address,
                version: s.version,
                clients: s.clients,
            }
        })
        .collect();
    Ok(ok(proto::ClusterView {
        database: match state.db.backend() {
            store::Backend::Sqlite => "sqlite",
            store::Backend::Mysql => "mysql",
            store::Backend::Postgres => "postgres",
        }
        .into(),
        lease_secs: state.engine.lease.as_secs(),
        servers,
    }))
}

// ------------------------------------------------------------------ users

fn user_view(u: &engine::store::models::User) -> UserView {
    UserView {
        name: u.name.clone(),
        email: u.email.clone(),
        created_at: engine::store::format_ms(u.created_at),
    }
}

#[utoipa::path(post, path = "/api/user/register", tag = "users", request_body = proto::RegisterRequest,
    responses(
        (status = 200, description = "Registered", body = proto::Envelope<proto::UserView>),
        (status = 400, description = "Bad name or password", body = crate::openapi::Failure),
        (status = 409, description = "The name is taken", body = crate::openapi::Failure),
        (status = 413, description = "Body too large", body = crate::openapi::Failure),
        (status = 503, description = "Busy or database down", body = crate::openapi::Failure)))]
async fn register(
    state: State,
    hasher: web::Data<Hasher>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let r: RegisterRequest = json(&read_body(&req, body, state.max_body).await?)?;
    let user = engine::users::register(&state.db, &hasher, &r.name, &r.password, &r.email).await?;
    log::info!("user {:?} registered", user.name);
    Ok(ok(user_view(&user)))
}

#[utoipa::path(post, path = "/api/user/login", tag = "users", request_body = proto::LoginRequest,
    responses(
        (status = 200, description = "A login token", body = proto::Envelope<proto::LoginResponse>),
        (status = 400, description = "Malformed body", body = crate::openapi::Failure),
        (status = 401, description = "Wrong name or password", body = crate::openapi::Failure),
        (status = 413, description = "Body too large", body = crate::openapi::Failure),
        (status = 429, description = "Too many failures: retry after `Retry-After` s", body = crate::openapi::Failure),
        (status = 503, description = "Busy or database down", body = crate::openapi::Failure)))]
async fn login(
    state: State,
    tokens: web::Data<Tokens>,
    hasher: web::Data<Hasher>,
    limiter: web::Data<Limiter>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let r: LoginRequest = json(&read_body(&req, body, state.max_body).await?)?;
    let peer = peer_ip(&req);
    let attempt = limiter.begin(Realm::Login, &r.name, peer)?;
    match engine::users::authenticate(&state.db, &hasher, &r.name, &r.password).await {
        Ok(user) => {
            attempt.succeeded();
            let (token, expires_at) = tokens.issue(&user.name, user.token_generation)?;
            Ok(ok(LoginResponse { token, expires_at }))
        }
        Err(e @ engine::Error::Unauthorized(_)) => {
            log::info!("failed login for {:?} from {peer}", r.name);
            Err(e.into())
        }
        Err(e) => {
            // not the caller's fault (busy hasher, database): no failure is counted
            attempt.succeeded();
            Err(e.into())
        }
    }
}

/// Revokes every login token of the caller, this one included.
#[utoipa::path(post, path = "/api/user/logout-all", tag = "users", security(("token" = [])),
    responses(
        (status = 200, description = "Every token of the caller revoked; the caller's name", body = proto::Envelope<String>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure)))]
async fn logout_all(
    state: State,
    users: web::Data<Users>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    engine::users::revoke_tokens(&state.db, &user.0).await?;
    users.forget(&user.0).await;
    log::info!("user {:?} revoked all their login tokens", user.0);
    Ok(ok(user.0))
}

/// Changes the caller's password (the current one is checked, and limited like a login);
/// every token issued before is revoked and a new one is returned.
#[utoipa::path(post, path = "/api/user/password", tag = "users", security(("token" = [])),
    request_body = proto::PasswordChange,
    responses(
        (status = 200, description = "Changed; a new token (older ones revoked)", body = proto::Envelope<proto::LoginResponse>),
        (status = 400, description = "Malformed body or weak password", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token, or wrong current password", body = crate::openapi::Failure),
        (status = 429, description = "Too many failures", body = crate::openapi::Failure)))]
#[allow(clippy::too_many_arguments)]
async fn change_password(
    state: State,
    tokens: web::Data<Tokens>,
    hasher: web::Data<Hasher>,
    limiter: web::Data<Limiter>,
    users: web::Data<Users>,
    user: AuthUser,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let r: PasswordChange = json(&read_body(&req, body, state.max_body).await?)?;
    let attempt = limiter.begin(Realm::Login, &user.0, peer_ip(&req))?;
    let changed = engine::users::change_password(
        &state.db,
        &hasher,
        &user.0,
        &r.old_password,
        &r.new_password,
    )
    .await;
    let u = match changed {
        Ok(u) => {
            attempt.succeeded();
            u
        }
        Err(e @ engine::Error::Unauthorized(_)) => return Err(e.into()),
        Err(e) => {
            attempt.succeeded();
            return Err(e.into());
        }
    };
    users.forget(&u.name).await;
    log::info!("user {:?} changed their password", u.name);
    let (token, expires_at) = tokens.issue(&u.name, u.token_generation)?;
    Ok(ok(LoginResponse { token, expires_at }))
}

#[utoipa::path(get, path = "/api/user/me", tag = "users", security(("token" = [])),
    responses(
        (status = 200, description = "The caller", body = proto::Envelope<proto::UserView>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure)))]
async fn me(state: State, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let u = engine::users::get(&state.db, &user.0).await?;
    Ok(ok(user_view(&u)))
}

// ------------------------------------------------------------------ actuators

#[utoipa::path(post, path = "/api/actuator/apply", tag = "actuators", security(("token" = [])),
    request_body(content = String, description = "The actuator definition, YAML or JSON", content_type = "application/yaml"),
    responses(
        (status = 200, description = "Stored (created or replaced)", body = proto::Envelope<proto::ActuatorView>),
        (status = 400, description = "Invalid definition: the message names the field", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 409, description = "Conflicts with a stored object", body = crate::openapi::Failure),
        (status = 413, description = "Body too large", body = crate::openapi::Failure)))]
async fn apply_actuator(
    state: State,
    user: AuthUser,
    hasher: web::Data<Hasher>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let text = read_body(&req, body, state.max_body).await?;
    let policy = &state.engine.settings.actuator_policy;
    let view = registry::apply_actuator(&state.db, &hasher, &user.0, &text, policy).await?;
    log::info!("actuator {:?} applied by {:?}", view.name, user.0);
    Ok(ok(view))
}

#[utoipa::path(get, path = "/api/actuator", tag = "actuators", security(("token" = [])),
    responses(
        (status = 200, description = "The caller's actuators (no secrets)", body = proto::Envelope<Vec<proto::ActuatorView>>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure)))]
async fn list_actuators(state: State, user: AuthUser) -> Result<HttpResponse, ApiError> {
    Ok(ok(registry::list_actuators(&state.db, &user.0).await?))
}

#[utoipa::path(get, path = "/api/actuator/{name}", tag = "actuators", security(("token" = [])),
    params(("name" = String, Path, description = "The name")),
    responses(
        (status = 200, description = "The actuator", body = proto::Envelope<proto::ActuatorView>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such actuator of the caller", body = crate::openapi::Failure)))]
async fn get_actuator(
    state: State,
    user: AuthUser,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(ok(registry::get_actuator(&state.db, &user.0, &name).await?))
}

#[utoipa::path(delete, path = "/api/actuator/{name}", tag = "actuators", security(("token" = [])),
    params(("name" = String, Path, description = "The name")),
    responses(
        (status = 200, description = "Deleted", body = proto::Envelope<proto::Deleted>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such actuator of the caller", body = crate::openapi::Failure)))]
async fn delete_actuator(
    state: State,
    user: AuthUser,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    registry::delete_actuator(&state.db, &user.0, &name).await?;
    state.engine.actuators.forget(&user.0, &name);
    log::info!("actuator {:?} deleted by {:?}", name.as_str(), user.0);
    Ok(ok(Deleted {
        kind: "actuator".into(),
        name: name.into_inner(),
    }))
}

// ------------------------------------------------------------------ pipelines

#[utoipa::path(post, path = "/api/pipeline-definition/apply", tag = "pipelines", security(("token" = [])),
    request_body(content = String, description = "The pipeline definition, YAML or JSON", content_type = "application/yaml"),
    responses(
        (status = 200, description = "Stored (created or replaced)", body = proto::Envelope<proto::PipelineDefinitionView>),
        (status = 400, description = "Invalid definition: the message names the field", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 409, description = "Conflicts with a stored object", body = crate::openapi::Failure),
        (status = 413, description = "Body too large", body = crate::openapi::Failure)))]
async fn apply_pipeline(
    state: State,
    user: AuthUser,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let text = read_body(&req, body, state.max_body).await?;
    let view = registry::apply_pipeline(&state.db, state.settings, &user.0, &text).await?;
    log::info!(
        "pipeline {}:{} applied by {:?}",
        view.name,
        view.version,
        user.0
    );
    Ok(ok(view))
}

#[utoipa::path(get, path = "/api/pipeline-definition", tag = "pipelines", security(("token" = [])),
    responses(
        (status = 200, description = "The caller's pipeline definitions", body = proto::Envelope<Vec<proto::PipelineDefinitionView>>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure)))]
async fn list_pipelines(state: State, user: AuthUser) -> Result<HttpResponse, ApiError> {
    Ok(ok(registry::list_pipelines(&state.db, &user.0).await?))
}

#[utoipa::path(get, path = "/api/pipeline-definition/{name}", tag = "pipelines", security(("token" = [])),
    params(("name" = String, Path, description = "The name")),
    responses(
        (status = 200, description = "The pipeline (its latest version)", body = proto::Envelope<proto::PipelineDefinitionView>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such pipeline (its latest version) of the caller", body = crate::openapi::Failure)))]
async fn get_pipeline_latest(
    state: State,
    user: AuthUser,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(ok(registry::get_pipeline(
        &state.db, &user.0, &name, "latest",
    )
    .await?))
}

#[utoipa::path(get, path = "/api/pipeline-definition/{name}/{version}", tag = "pipelines", security(("token" = [])),
    params(("name" = String, Path, description = "The name"), ("version" = String, Path, description = "The version")),
    responses(
        (status = 200, description = "The pipeline version", body = proto::Envelope<proto::PipelineDefinitionView>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such pipeline version of the caller", body = crate::openapi::Failure)))]
async fn get_pipeline(
    state: State,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    Ok(ok(registry::get_pipeline(
        &state.db, &user.0, &name, &version,
    )
    .await?))
}

#[utoipa::path(delete, path = "/api/pipeline-definition/{name}/{version}", tag = "pipelines", security(("token" = [])),
    params(("name" = String, Path, description = "The name"), ("version" = String, Path, description = "The version")),
    responses(
        (status = 200, description = "Deleted", body = proto::Envelope<proto::Deleted>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such pipeline version of the caller", body = crate::openapi::Failure)))]
async fn delete_pipeline(
    state: State,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    let deleted = registry::delete_pipeline(&state.db, &user.0, &name, &version).await?;
    log::info!("pipeline {name}:{deleted} deleted by {:?}", user.0);
    Ok(ok(Deleted {
        kind: "pipeline".into(),
        name: format!("{name}:{deleted}"),
    }))
}

// ------------------------------------------------------------------ triggers

#[utoipa::path(post, path = "/api/trigger-definition/apply", tag = "triggers", security(("token" = [])),
    request_body(content = String, description = "The trigger definition, YAML or JSON", content_type = "application/yaml"),
    responses(
        (status = 200, description = "Stored (created or replaced)", body = proto::Envelope<proto::TriggerDefinitionView>),
        (status = 400, description = "Invalid definition: the message names the field", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 409, description = "Conflicts with a stored object", body = crate::openapi::Failure),
        (status = 413, description = "Body too large", body = crate::openapi::Failure)))]
async fn apply_trigger(
    state: State,
    user: AuthUser,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let text = read_body(&req, body, state.max_body).await?;
    let view = registry::apply_trigger(&state.db, state.settings, &user.0, &text).await?;
    state.engine.triggers_changed().await;
    log::info!("trigger {:?} applied by {:?}", view.name, user.0);
    Ok(ok(view))
}

#[utoipa::path(get, path = "/api/trigger-definition", tag = "triggers", security(("token" = [])),
    responses(
        (status = 200, description = "The caller's triggers", body = proto::Envelope<Vec<proto::TriggerDefinitionView>>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure)))]
async fn list_triggers(state: State, user: AuthUser) -> Result<HttpResponse, ApiError> {
    Ok(ok(registry::list_triggers(&state.db, &user.0).await?))
}

#[utoipa::path(get, path = "/api/trigger-definition/{name}", tag = "triggers", security(("token" = [])),
    params(("name" = String, Path, description = "The name")),
    responses(
        (status = 200, description = "The trigger", body = proto::Envelope<proto::TriggerDefinitionView>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such trigger of the caller", body = crate::openapi::Failure)))]
async fn get_trigger(
    state: State,
    user: AuthUser,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(ok(registry::get_trigger(&state.db, &user.0, &name).await?))
}

#[utoipa::path(delete, path = "/api/trigger-definition/{name}", tag = "triggers", security(("token" = [])),
    params(("name" = String, Path, description = "The name")),
    responses(
        (status = 200, description = "Deleted", body = proto::Envelope<proto::Deleted>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such trigger of the caller", body = crate::openapi::Failure)))]
async fn delete_trigger(
    state: State,
    user: AuthUser,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    registry::delete_trigger(&state.db, &user.0, &name).await?;
    state.engine.triggers_changed().await;
    log::info!("trigger {:?} deleted by {:?}", name.as_str(), user.0);
    Ok(ok(Deleted {
        kind: "trigger".into(),
        name: name.into_inner(),
    }))
}

// ------------------------------------------------------------------ events

#[utoipa::path(post, path = "/api/event/send", tag = "events", security(("token" = [])),
    request_body(content = String, description = "The event, YAML or JSON", content_type = "application/yaml"),
    responses(
        (status = 200, description = "Accepted (stored before the answer); its id", body = proto::Envelope<proto::EventSent>),
        (status = 400, description = "Invalid event: the message names the field", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 413, description = "Event too large", body = crate::openapi::Failure),
        (status = 503, description = "Database down: retry after `Retry-After` s", body = crate::openapi::Failure)))]
async fn send_event(
    state: State,
    user: AuthUser,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let text = read_body(&req, body, state.max_event).await?;
    let (row, files) = registry::prepare_event(state.settings, &user.0, &text)?;
    engine::runtime::task_files::check_event_files(&state.engine, &user.0, &files).await?;
    let id = state.engine.intake(row).await?;
    log::debug!("event {id} received from {:?}", user.0);
    Ok(ok(EventSent { id }))
}

/// Unknown paths and methods answer with the envelope too.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

fn parse_id(s: &str, what: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .map_err(|_| ApiError::BadRequest(format!("{what} {s:?} is not a number")))
}

#[utoipa::path(get, path = "/api/event/{id}", tag = "events", security(("token" = [])),
    params(("id" = String, Path, description = "The id (a number)")),
    responses(
        (status = 200, description = "The event, each trigger's verdict and the runs started", body = proto::Envelope<proto::EventView>),
        (status = 400, description = "The id is not a number", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such event of the caller", body = crate::openapi::Failure)))]
async fn get_event(
    state: State,
    user: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "event id")?;
    Ok(ok(state.engine.event_view(&user.0, id).await?))
}

// ------------------------------------------------------------------ runs

/// Query of `GET /api/pipeline/` (the seed's parameter names).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunQuery {
    event_name: Option<String>,
    event_version: Option<String>,
    event_creater: Option<String>,
    trigger_definition_name: Option<String>,
    pipeline_definition_name: Option<String>,
    pipeline_definition_version: Option<String>,
    status: Option<String>,
    top: Option<i64>,
}

#[utoipa::path(get, path = "/api/pipeline", tag = "runs", security(("token" = [])),
    params(RunQuery),
    responses(
        (status = 200, description = "The caller's runs, newest first", body = proto::Envelope<Vec<proto::RunSummary>>),
        (status = 400, description = "Bad query", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure)))]
async fn list_runs(
    state: State,
    user: AuthUser,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = web::Query::<RunQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?
        .into_inner();
    let f = engine::store::runs::RunFilter {
        event_name: q.event_name,
        event_version: q.event_version,
        event_creator: q.event_creater,
        trigger_name: q.trigger_definition_name,
        definition_name: q.pipeline_definition_name,
        definition_version: q.pipeline_definition_version,
        status: q.status,
    };
    Ok(ok(state
        .engine
        .list_runs(&user.0, &f, q.top.unwrap_or(20))
        .await?))
}

#[utoipa::path(get, path = "/api/pipeline/{id}", tag = "runs", security(("token" = [])),
    params(("id" = String, Path, description = "The id (a number)")),
    responses(
        (status = 200, description = "The run with its tasks", body = proto::Envelope<proto::RunView>),
        (status = 400, description = "The id is not a number", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such run of the caller", body = crate::openapi::Failure)))]
async fn get_run(
    state: State,
    user: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "pipeline id")?;
    Ok(ok(state.engine.run_view(&user.0, id).await?))
}

#[utoipa::path(post, path = "/api/pipeline/{id}/cancel", tag = "runs", security(("token" = [])),
    params(("id" = String, Path, description = "The id (a number)")),
    responses(
        (status = 200, description = "Cancelling (the run ends `cancel`)", body = proto::Envelope<String>),
        (status = 400, description = "The id is not a number", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such run of the caller", body = crate::openapi::Failure),
        (status = 409, description = "The run has ended", body = crate::openapi::Failure)))]
async fn cancel_run(
    state: State,
    user: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "pipeline id")?;
    state.engine.cancel_run(&user.0, id).await?;
    log::info!("run {id}: cancel requested by {:?}", user.0);
    Ok(ok("cancelling"))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
}

#[utoipa::path(get, path = "/api/pipeline/{id}/task/{task}/log", tag = "runs", security(("token" = [])),
    params(("id" = String, Path, description = "The run id (a number)"), ("task" = String, Path, description = "The task alias"), LogQuery),
    responses(
        (status = 200, description = "The task's output; with `follow=true` streamed until the task ends", body = String, content_type = "text/plain"),
        (status = 400, description = "Bad id or query", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such run or task of the caller", body = crate::openapi::Failure)))]
async fn task_log(
    state: State,
    user: AuthUser,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, task) = path.into_inner();
    let id = parse_id(&id, "pipeline id")?;
    let q = web::Query::<LogQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    if !q.follow {
        let log = state.engine.task_log(&user.0, id, &task).await?;
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(log));
    }
    let rx = state.engine.follow_log(&user.0, id, &task).await?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| {
            (
                item.map(web::Bytes::from)
                    .map_err(actix_web::error::ErrorInternalServerError),
                rx,
            )
        })
    });
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .streaming(stream))
}

/// `POST /api/pipeline/callback` (white-listed: the per-task secret is the credential).
#[utoipa::path(post, path = "/api/pipeline/callback", tag = "runs", request_body = proto::CallbackRequest,
    responses(
        (status = 200, description = "Recorded (or already recorded)", body = proto::Envelope<String>),
        (status = 400, description = "Malformed body", body = crate::openapi::Failure),
        (status = 401, description = "Unknown task or wrong per-task secret", body = crate::openapi::Failure)))]
async fn callback(
    state: State,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let r: proto::CallbackRequest = json(&read_body(&req, body, state.max_body).await?)?;
    let outcome = state.engine.callback(&r).await?;
    Ok(ok(outcome))
}

// ------------------------------------------------------------------ files

fn file_store(state: &State) -> Result<std::sync::Arc<engine::files::FileStore>, ApiError> {
    state
        .engine
        .settings
        .files
        .clone()
        .ok_or_else(|| ApiError::BadRequest(engine::definition::FILES_DISABLED.into()))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    name: String,
}

/// `POST /api/file/upload?name=FILE`: stores the body (its `Content-Length` announced, at most
/// `minio.maxUploadBytes`) as `uploads/<user>/<random>/<FILE>` and answers the key, for an
/// event's `files`. Streamed through: the server holds a few chunks at a time, never the file.
#[utoipa::path(post, path = "/api/file/upload", tag = "files", security(("token" = [])),
    params(UploadQuery),
    request_body(content = Vec<u8>, description = "The file's bytes, with Content-Length", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored: the key to give in an event's `files`", body = proto::Envelope<proto::UploadedFile>),
        (status = 400, description = "No Content-Length, bad name, or file values disabled", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 413, description = "Larger than minio.maxUploadBytes", body = crate::openapi::Failure),
        (status = 503, description = "The file store is unreachable", body = crate::openapi::Failure)))]
async fn upload_file(
    state: State,
    user: AuthUser,
    req: HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let files = file_store(&state)?;
    let q = web::Query::<UploadQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    let len = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::BadRequest("an upload needs its Content-Length (no chunked body)".into())
        })?;
    if len > state.max_upload {
        return Err(ApiError::TooLarge(
            usize::try_from(state.max_upload).unwrap_or(usize::MAX),
        ));
    }
    let key = engine::files::upload_key(&user.0, &q.name).map_err(ApiError::BadRequest)?;
    // the request body is not Send; the upload's is: a small channel between the two keeps
    // memory flat (the S3 side pulls at its pace)
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(8);
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let pump = async move {
        while let Some(chunk) = payload.next().await {
            let item = chunk.map_err(|e| std::io::Error::other(e.to_string()));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    };
    let (stored, ()) = futures_util::join!(files.put(&key, len, body), pump);
    stored.map_err(engine::Error::from)?;
    log::info!("file {key:?} ({len} bytes) uploaded by {:?}", user.0);
    Ok(ok(proto::UploadedFile { key, size: len }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct FileQuery {
    #[serde(default)]
    presign: bool,
}

/// How long a presigned download URL for the owner is valid.
const PRESIGNED_GET_SECS: u64 = 300;

/// `GET /api/pipeline/{id}/task/{task}/file/{name}`: a file output of the caller's run,
/// streamed from the bucket; `?presign=true` answers a download URL valid for 5 minutes.
#[utoipa::path(get, path = "/api/pipeline/{id}/task/{task}/file/{name}", tag = "files", security(("token" = [])),
    params(("id" = String, Path, description = "The run id (a number)"), ("task" = String, Path, description = "The task alias"), ("name" = String, Path, description = "The file output's name"), FileQuery),
    responses(
        (status = 200, description = "The file (or with `presign=true` an envelope with a 5-minute URL)", content(
            (Vec<u8> = "application/octet-stream"),
            (proto::Envelope<proto::PresignedFile> = "application/json"))),
        (status = 400, description = "Bad id or query, or file values disabled", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 404, description = "No such run, task or file output of the caller", body = crate::openapi::Failure)))]
async fn task_file(
    state: State,
    user: AuthUser,
    path: web::Path<(String, String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, task, name) = path.into_inner();
    let id = parse_id(&id, "pipeline id")?;
    let q = web::Query::<FileQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    let files = file_store(&state)?;
    let (key, _) =
        engine::runtime::task_files::task_file(&state.engine, &user.0, id, &task, &name).await?;
    if q.presign {
        let ttl = std::time::Duration::from_secs(PRESIGNED_GET_SECS);
        return Ok(ok(proto::PresignedFile {
            url: files.presign_get(&key, ttl),
            key,
            expires_in_secs: PRESIGNED_GET_SECS,
        }));
    }
    let Some((len, stream)) = files.get(&key).await.map_err(engine::Error::from)? else {
        return Err(ApiError::NotFound(format!(
            "file {key:?} is no longer in the bucket"
        )));
    };
    let mut r = HttpResponse::Ok();
    r.content_type("application/octet-stream");
    r.insert_header((
        actix_web::http::header::CONTENT_DISPOSITION,
        actix_web::http::header::ContentDisposition::attachment(engine::files::local_name(&key)),
    ));
    if let Some(len) = len {
        r.no_chunking(len);
    }
    Ok(r.streaming(stream))
}
