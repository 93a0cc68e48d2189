//! Machines and fan-out tasks (SPEC §10), on sidebike's paths so its curl flow works:
//!
//! - `GET  /api/v1/machine` — my tunnel clients, online or offline, first/last seen.
//! - `POST /api/v1/task` — `{name, machinePattern, detail: {command, workspace, timeout}}`: run
//!   the command on every online machine of mine whose label matches (201 with the task).
//! - `GET  /api/v1/task[?taskPrefix=P&top=N]` — my tasks, newest first, a result per machine.
//!
//! A trailing `/` is accepted on each (the routes are in `api`'s table). The work is
//! `engine::commands`'.

use crate::api::{read_body, AppState};
use crate::auth::AuthUser;
use crate::error::{ok, ApiError};
use actix_web::{web, HttpRequest, HttpResponse};
use engine::commands;
use proto::FanoutRequest;

type State = web::Data<AppState>;

/// The body as a [`FanoutRequest`]; errors name the field (`detail.timeout: invalid type…`,
/// `unknown field `colour`…`). Objects must be objects: serde would also take a struct from
/// an array of its fields in order, which nobody means.
fn parse(text: &str) -> Result<FanoutRequest, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("malformed JSON body: {e}")))?;
    let Some(fields) = v.as_object() else {
        return Err(bad(
            "the body must be a JSON object {\"name\", \"machinePattern\", \"detail\"}".into(),
        ));
    };
    if let Some(path) = engine::document::find_nul(&v) {
        return Err(bad(engine::document::nul_message(&path)));
    }
    if fields.get("detail").is_some_and(|d| !d.is_object()) {
        return Err(bad(
            "detail: must be an object {\"command\", \"workspace\", \"timeout\"}".into(),
        ));
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            bad(inner.to_string())
        } else {
            bad(format!("{path}: {inner}"))
        }
    })
}

#[utoipa::path(post, path = "/api/v1/task", tag = "fan-out", security(("token" = [])),
    request_body = proto::FanoutRequest,
    responses(
        (status = 201, description = "Started on every online machine whose label matches", body = proto::Envelope<proto::FanoutView>),
        (status = 400, description = "Invalid request: the message names the field", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure),
        (status = 409, description = "A task of that name exists", body = crate::openapi::Failure)))]
pub(crate) async fn create_task(
    state: State,
    user: AuthUser,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let r = parse(&read_body(&req, body, state.max_body).await?)?;
    let view = commands::create(&state.db, &state.engine.tunnels, &user.0, &r).await?;
    Ok(HttpResponse::Created().json(proto::Envelope {
        status: 201,
        msg: "ok".into(),
        data: Some(view),
    }))
}

/// Query of `GET /api/v1/task`.
#[derive(utoipa::IntoParams, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TaskQuery {
    task_prefix: Option<String>,
    top: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/task", tag = "fan-out", security(("token" = [])),
    params(TaskQuery),
    responses(
        (status = 200, description = "The caller's fan-out tasks, newest first, a result per machine", body = proto::Envelope<Vec<proto::FanoutView>>),
        (status = 400, description = "Bad query", body = crate::openapi::Failure),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure)))]
pub(crate) async fn list_tasks(
    state: State,
    user: AuthUser,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = web::Query::<TaskQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?
        .into_inner();
    let tasks = commands::list(&state.db, &user.0, q.task_prefix.as_deref(), q.top).await?;
    Ok(ok(tasks))
}

#[utoipa::path(get, path = "/api/v1/machine", tag = "fan-out", security(("token" = [])),
    responses(
        (status = 200, description = "The caller's tunnel clients, online or offline", body = proto::Envelope<Vec<proto::MachineView>>),
        (status = 401, description = "No or bad token", body = crate::openapi::Failure)))]
pub(crate) async fn list_machines(state: State, user: AuthUser) -> Result<HttpResponse, ApiError> {
    Ok(ok(commands::machines(
        &state.db,
        &state.engine.tunnels,
        &user.0,
    )
    .await?))
}
