//! The console's pages: runs, a run (its DAG), a task (its live log), events, definitions,
//! machines and fan-out tasks. Each handler checks the session, calls the engine function the
//! matching API handler calls, and renders; the `…/live` routes answer the fragment the page's
//! script swaps in while something is still moving.

use super::dag::{self, Node};
use super::{encode, page, respond, session, sse, ConsoleError, CsrfForm, Result, Session, State};
use crate::error::ApiError;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use engine::store::runs::RunFilter;
use maud::{html, Markup};
use proto::{RunSummary, RunView, TaskView};
use serde_json::Value;
use std::collections::BTreeMap;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui/runs", web::get().to(runs))
        .route("/ui/runs/live", web::get().to(runs_live))
        .route("/ui/runs/{id}", web::get().to(run))
        .route("/ui/runs/{id}/live", web::get().to(run_live))
        .route("/ui/runs/{id}/cancel", web::post().to(cancel))
        .route("/ui/runs/{id}/tasks/{task}", web::get().to(task))
        .route("/ui/runs/{id}/tasks/{task}/live", web::get().to(task_live))
        .route("/ui/runs/{id}/tasks/{task}/log", web::get().to(log_events))
        .route(
            "/ui/runs/{id}/tasks/{task}/log.txt",
            web::get().to(log_text),
        )
        .route("/ui/events", web::get().to(events))
        .route("/ui/events/find", web::get().to(find_event))
        .route("/ui/events/{id}", web::get().to(event))
        .route("/ui/definitions", web::get().to(definitions))
        .route("/ui/machines", web::get().to(machines))
        .route("/ui/machines/live", web::get().to(machines_live))
        .route("/ui/machines/exec", web::post().to(exec));
}

/// Statuses a run or task no longer leaves.
fn ended(status: &str) -> bool {
    !matches!(status, "running" | "initializing" | "created" | "")
}

fn badge(status: &str) -> Markup {
    html! { span class=(format!("badge st-{status}")) { (status) } }
}

fn yaml(v: &Value) -> String {
    serde_norway::to_string(v)
        .unwrap_or_else(|_| serde_json::to_string_pretty(v).unwrap_or_default())
}

/// A value (inputs, outputs, contexts) as a definition list, or "none".
fn values(v: &Value) -> Markup {
    match v.as_object() {
        Some(m) if !m.is_empty() => html! {
            dl.values {
                @for (k, val) in m {
                    dt { (k) }
                    dd { code { (match val { Value::String(s) => s.clone(), other => other.to_string() }) } }
                }
            }
        },
        _ => html! { p.none { "none" } },
    }
}

fn parse_id(s: &str, what: &str) -> Result<i64> {
    s.parse::<i64>().map_err(|_| {
        ConsoleError::Api(ApiError::BadRequest(format!(
            "{what} {s:?} is not a number"
        )))
    })
}

fn fragment(body: Markup) -> HttpResponse {
    respond(StatusCode::OK, body)
}

// ------------------------------------------------------------------ runs

/// The runs page's query: the API's filters, a page size and where the page starts.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunsQuery {
    event_name: Option<String>,
    event_version: Option<String>,
    event_creater: Option<String>,
    trigger_definition_name: Option<String>,
    pipeline_definition_name: Option<String>,
    pipeline_definition_version: Option<String>,
    status: Option<String>,
    top: Option<String>,
    before: Option<String>,
}

const PAGE: i64 = 50;
const STATUSES: [&str; 4] = ["running", "success", "failed", "cancel"];

fn given(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl RunsQuery {
    fn parse(req: &HttpRequest) -> Result<RunsQuery> {
        web::Query::<RunsQuery>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .map_err(|e| ConsoleError::Api(ApiError::BadRequest(format!("query: {e}"))))
    }

    fn filter(&self) -> RunFilter {
        RunFilter {
            event_name: given(&self.event_name),
            event_version: given(&self.event_version),
            event_creator: given(&self.event_creater),
            trigger_name: given(&self.trigger_definition_name),
            definition_name: given(&self.pipeline_definition_name),
            definition_version: given(&self.pipeline_definition_version),
            status: given(&self.status),
        }
    }

    fn top(&self) -> Result<i64> {
        match given(&self.top) {
            None => Ok(PAGE),
            Some(t) => Ok(parse_id(&t, "top")?.clamp(1, 500)),
        }
    }

    fn before(&self) -> Result<Option<i64>> {
        given(&self.before)
            .map(|b| parse_id(&b, "before"))
            .transpose()
    }

    /// The query string of these filters (without `before`), for links.
    fn link(&self, before: Option<i64>) -> String {
        let pairs = [
            ("eventName", &self.event_name),
            ("eventVersion", &self.event_version),
            ("eventCreater", &self.event_creater),
            ("triggerDefinitionName", &self.trigger_definition_name),
            ("pipelineDefinitionName", &self.pipeline_definition_name),
            (
                "pipelineDefinitionVersion",
                &self.pipeline_definition_version,
            ),
            ("status", &self.status),
            ("top", &self.top),
        ];
        let mut q: Vec<String> = pairs
            .iter()
            .filter_map(|(k, v)| given(v).map(|v| format!("{k}={}", encode(&v))))
            .collect();
        if let Some(b) = before {
            q.push(format!("before={b}"));
        }
        q.join("&")
    }
}

async fn list_page(state: &State, s: &Session, q: &RunsQuery) -> Result<Vec<RunSummary>> {
    Ok(state
        .engine
        .list_runs_page(&s.user, &q.filter(), q.before()?, q.top()?)
        .await?)
}

fn runs_table(runs: &[RunSummary]) -> Markup {
    let running = runs.iter().filter(|r| r.status == "running").count();
    let announce = format!("{} runs shown, {running} running", runs.len());
    html! {
        div data-announce=(announce) {
            @if runs.is_empty() {
                p.none { "No runs match." }
            } @else {
                div.scroll {
                    table.runs {
                        caption.visually-hidden { "Pipeline runs, newest first" }
                        thead {
                            tr {
                                th scope="col" { "Run" }
                                th scope="col" { "Status" }
                                th scope="col" { "Pipeline" }
                                th scope="col" { "Trigger" }
                                th scope="col" { "Event" }
                                th scope="col" { "Started" }
                                th scope="col" { "Ended" }
                            }
                        }
                        tbody {
                            @for r in runs {
                                tr data-run=(r.id) {
                                    td { a href=(format!("/ui/runs/{}", r.id)) { "#" (r.id) } }
                                    td.status { (badge(&r.status)) }
                                    td { (r.pipeline) }
                                    td { (r.trigger_name) }
                                    td {
                                        @if let Some(e) = r.event_id {
                                            a href=(format!("/ui/events/{e}")) { (r.event_name) ":" (r.event_version) }
                                        } @else {
                                            (r.event_name) ":" (r.event_version)
                                        }
                                    }
                                    td { (r.created_at) }
                                    td { (r.ended_at.as_deref().unwrap_or("—")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn runs(state: State, req: HttpRequest) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let q = RunsQuery::parse(&req)?;
    let list = list_page(&state, &s, &q).await?;
    let top = q.top()?;
    let older = (list.len() as i64 >= top)
        .then(|| list.last().map(|r| r.id))
        .flatten();
    let field = |id: &str, name: &str, label: &str, v: &Option<String>| {
        html! {
            p.field {
                label for=(id) { (label) }
                input id=(id) name=(name) type="text" value=(v.as_deref().unwrap_or(""));
            }
        }
    };
    let status = given(&q.status).unwrap_or_default();
    let live = format!("/ui/runs/live?{}", q.link(q.before()?));
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/ui/runs" aria-label="Filter runs" {
            (field("f-event", "eventName", "Event name", &q.event_name))
            (field("f-eventv", "eventVersion", "Event version", &q.event_version))
            (field("f-creater", "eventCreater", "Event sender", &q.event_creater))
            (field("f-trigger", "triggerDefinitionName", "Trigger", &q.trigger_definition_name))
            (field("f-pipeline", "pipelineDefinitionName", "Pipeline", &q.pipeline_definition_name))
            (field("f-pipelinev", "pipelineDefinitionVersion", "Pipeline version", &q.pipeline_definition_version))
            p.field {
                label for="f-status" { "Status" }
                select id="f-status" name="status" {
                    option value="" selected[status.is_empty()] { "any" }
                    @for st in STATUSES {
                        option value=(st) selected[status == st] { (st) }
                    }
                }
            }
            p.field.narrow {
                label for="f-top" { "Per page" }
                input id="f-top" name="top" type="number" min="1" max="500" value=(top);
            }
            p.actions {
                button type="submit" { "Filter" }
                " "
                a href="/ui/runs" { "Clear" }
            }
        }
        div.visually-hidden role="status" aria-live="polite" id="live-announce" {}
        div id="runs-live" data-live-src=(live) {
            (runs_table(&list))
        }
        nav.pager aria-label="Pages" {
            @if q.before()?.is_some() {
                a href=(format!("/ui/runs?{}", q.link(None))) { "Newest" }
                " "
            }
            @if let Some(b) = older {
                a href=(format!("/ui/runs?{}", q.link(Some(b)))) rel="next" { "Older runs" }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Runs", Some(&s), "runs", body),
    ))
}

async fn runs_live(state: State, req: HttpRequest) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let q = RunsQuery::parse(&req)?;
    let list = list_page(&state, &s, &q).await?;
    Ok(fragment(runs_table(&list)))
}

// ------------------------------------------------------------------ a run

/// The nodes of one scope's DAG: the run's (`parent` = None) or a pipeline-type task's child.
fn scope_nodes(run: i64, def: &Value, tasks: &[&TaskView]) -> Vec<Node> {
    let by_alias: BTreeMap<&str, &&TaskView> =
        tasks.iter().map(|t| (t.alias.as_str(), t)).collect();
    let kinds: BTreeMap<String, String> = def["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    Some((
                        t["alias"].as_str()?.to_string(),
                        t["type"].as_str().unwrap_or("").to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut nodes: Vec<Node> = def["dag"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|n| {
                    let alias = n["name"].as_str()?.to_string();
                    let needs = n["needs"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    Some((alias, needs))
                })
                .map(|(alias, needs)| {
                    let t = by_alias.get(alias.as_str());
                    Node {
                        kind: t
                            .map(|t| t.kind.clone())
                            .or_else(|| kinds.get(&alias).cloned())
                            .unwrap_or_default(),
                        status: t.map(|t| t.status.clone()),
                        href: t.map(|t| format!("/ui/runs/{run}/tasks/{}", t.id)),
                        alias,
                        needs,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    // tasks the dag does not name (none in a valid definition) are still shown
    for t in tasks {
        if !nodes.iter().any(|n| n.alias == t.alias) {
            nodes.push(Node {
                alias: t.alias.clone(),
                needs: vec!["root".into()],
                status: Some(t.status.clone()),
                href: Some(format!("/ui/runs/{run}/tasks/{}", t.id)),
                kind: t.kind.clone(),
            });
        }
    }
    nodes
}

fn tasks_table(run: i64, tasks: &[&TaskView]) -> Markup {
    html! {
        div.scroll {
            table.tasks {
                thead {
                    tr {
                        th scope="col" { "Task" }
                        th scope="col" { "Status" }
                        th scope="col" { "Type" }
                        th scope="col" { "Actuator" }
                        th scope="col" { "Exit" }
                        th scope="col" { "Started" }
                        th scope="col" { "Ended" }
                        th scope="col" { "Error" }
                    }
                }
                tbody {
                    @for t in tasks {
                        tr {
                            td { a href=(format!("/ui/runs/{run}/tasks/{}", t.id)) { (t.alias) } }
                            td { (badge(&t.status)) }
                            td { (t.kind) }
                            td { (t.actuator) }
                            td { (t.exit_code.map(|c| c.to_string()).unwrap_or_default()) }
                            td { (t.started_at.as_deref().unwrap_or("—")) }
                            td { (t.ended_at.as_deref().unwrap_or("—")) }
                            td.error { (t.error) }
                        }
                    }
                }
            }
        }
    }
}

/// One scope: its DAG, its tasks, then the child pipelines of its pipeline-type tasks.
fn scope(
    run: i64,
    title: &str,
    def: &Value,
    parent: Option<i64>,
    all: &[TaskView],
    children: &BTreeMap<i64, Value>,
    depth: usize,
) -> Markup {
    let tasks: Vec<&TaskView> = all.iter().filter(|t| t.parent_task_id == parent).collect();
    let nodes = scope_nodes(run, def, &tasks);
    html! {
        div.dag-wrap { (dag::svg(title, &nodes)) }
        (tasks_table(run, &tasks))
        @if depth < 8 {
            @for t in tasks.iter().filter(|t| t.kind == "pipeline") {
                @let child_title = format!("child pipeline of task {}", t.alias);
                details.child open {
                    summary {
                        "Child pipeline of task " strong { (t.alias) } " " (badge(&t.status))
                    }
                    @if let Some(cdef) = children.get(&t.id) {
                        (scope(run, &child_title, cdef, Some(t.id), all, children, depth + 1))
                    } @else {
                        p.none { "Not started yet." }
                    }
                }
            }
        }
    }
}

fn run_live_part(s: &Session, v: &RunView, children: &BTreeMap<i64, Value>) -> Markup {
    let id = v.summary.id;
    let done = ended(&v.summary.status);
    let announce = format!("run {id}: {}", v.summary.status);
    html! {
        div data-announce=(announce) data-live-done[done] {
            p.run-status {
                "Status: " (badge(&v.summary.status))
                @if let Some(e) = &v.summary.ended_at { " · ended " (e) }
            }
            @if !v.summary.error.is_empty() {
                p.error { (v.summary.error) }
            }
            @if !done {
                form.cancel method="post" action=(format!("/ui/runs/{id}/cancel")) {
                    input type="hidden" name="csrf" value=(s.csrf);
                    button type="submit" id="cancel" { "Cancel this run" }
                }
            }
            h2 { "Tasks" }
            (scope(id, &format!("DAG of run {id}"), &v.definition, None, &v.tasks, children, 0))
            div.cols {
                section { h2 { "Inputs" } (values(&v.inputs)) }
                section { h2 { "Contexts" } (values(&v.contexts)) }
                section { h2 { "Outputs" } (values(&v.outputs)) }
            }
        }
    }
}

async fn load_run(state: &State, s: &Session, id: &str) -> Result<(RunView, BTreeMap<i64, Value>)> {
    let id = parse_id(id, "run id")?;
    let v = state.engine.run_view(&s.user, id).await?;
    let children = state.engine.run_children(&s.user, id).await?;
    Ok((v, children))
}

async fn run(state: State, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let (v, children) = load_run(&state, &s, &path).await?;
    let id = v.summary.id;
    let title = format!("Run {id}");
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/ui/runs" { "Runs" } " › " span { "#" (id) } }
        h1 { "Run #" (id) " — " (v.summary.pipeline) }
        div.visually-hidden role="status" aria-live="polite" id="live-announce" {}
        div id="run-live" data-live-src=(format!("/ui/runs/{id}/live")) {
            (run_live_part(&s, &v, &children))
        }
        section {
            h2 { "Started by" }
            p {
                "Trigger " strong { (v.summary.trigger_name) } ", event "
                @if let Some(e) = v.summary.event_id {
                    a href=(format!("/ui/events/{e}")) { (v.summary.event_name) ":" (v.summary.event_version) " (#" (e) ")" }
                } @else {
                    (v.summary.event_name) ":" (v.summary.event_version)
                }
                " from " (v.summary.event_creater) ", at " (v.summary.created_at)
            }
            details {
                summary { "The event" }
                pre.yaml { (yaml(&v.event)) }
            }
            details {
                summary { "The pipeline definition" }
                pre.yaml { (yaml(&v.definition)) }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page(&title, Some(&s), "runs", body),
    ))
}

async fn run_live(state: State, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let (v, children) = load_run(&state, &s, &path).await?;
    Ok(fragment(run_live_part(&s, &v, &children)))
}

async fn cancel(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse> {
    let s = session(&req).await?;
    s.check_csrf(&form.csrf)?;
    let id = parse_id(&path, "run id")?;
    state.engine.cancel_run(&s.user, id).await?;
    log::info!("run {id}: cancel requested by {:?} (console)", s.user);
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/ui/runs/{id}")))
        .finish())
}

// ------------------------------------------------------------------ a task and its log

async fn load_task(
    state: &State,
    s: &Session,
    id: &str,
    task: &str,
) -> Result<(RunView, TaskView)> {
    let id = parse_id(id, "run id")?;
    let v = state.engine.run_view(&s.user, id).await?;
    let t = v
        .tasks
        .iter()
        .find(|t| t.id.to_string() == task)
        .cloned()
        .ok_or_else(|| {
            ConsoleError::Api(ApiError::NotFound(format!(
                "task {task:?} not found in run {id}"
            )))
        })?;
    Ok((v, t))
}

fn task_live_part(t: &TaskView) -> Markup {
    let done = ended(&t.status);
    let announce = format!("task {}: {}", t.alias, t.status);
    html! {
        div data-announce=(announce) data-live-done[done] {
            dl.facts {
                dt { "Status" } dd { (badge(&t.status)) }
                dt { "Type" } dd { (t.kind) }
                dt { "Actuator" } dd { (t.actuator) @if !t.actuator_tag.is_empty() { " (" (t.actuator_tag) ")" } }
                dt { "Exit code" } dd { (t.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into())) }
                dt { "Started" } dd { (t.started_at.as_deref().unwrap_or("—")) }
                dt { "Ended" } dd { (t.ended_at.as_deref().unwrap_or("—")) }
                @if !t.error.is_empty() { dt { "Error" } dd.error { (t.error) } }
            }
            div.cols {
                section { h2 { "Inputs" } (values(&t.inputs)) }
                section { h2 { "Outputs" } (values(&t.outputs)) }
            }
        }
    }
}

async fn task(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let (id, task) = path.into_inner();
    let (v, t) = load_task(&state, &s, &id, &task).await?;
    let run = v.summary.id;
    let base = format!("/ui/runs/{run}/tasks/{}", t.id);
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/ui/runs" { "Runs" } " › "
            a href=(format!("/ui/runs/{run}")) { "#" (run) } " › "
            span { (t.alias) }
        }
        h1 { "Task " (t.alias) " of run #" (run) }
        div.visually-hidden role="status" aria-live="polite" id="live-announce" {}
        div id="task-live" data-live-src=(format!("{base}/live")) {
            (task_live_part(&t))
        }
        section.log {
            h2 id="log-title" { "Log" }
            p.log-state id="log-state" role="status" { "Connecting…" }
            @if t.kind == "pipeline" {
                p.none { "A pipeline-type task has no log of its own: see its child tasks." }
            } @else {
                pre id="log" role="log" aria-labelledby="log-title" tabindex="0"
                    data-sse-src=(format!("{base}/log")) {}
                p { a href=(format!("{base}/log.txt")) download { "Download the whole log" } }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page(&format!("Task {}", t.alias), Some(&s), "runs", body),
    ))
}

async fn task_live(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let (id, task) = path.into_inner();
    let (_, t) = load_task(&state, &s, &id, &task).await?;
    Ok(fragment(task_live_part(&t)))
}

#[derive(Debug, serde::Deserialize)]
struct LogQuery {
    offset: Option<u64>,
}

fn sse_response() -> actix_web::HttpResponseBuilder {
    let mut r = HttpResponse::Ok();
    r.content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"));
    r
}

/// `GET …/log`: the task's log as server-sent events (see `sse`).
async fn log_events(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let (id, task) = path.into_inner();
    let (v, t) = load_task(&state, &s, &id, &task).await?;
    let q = web::Query::<LogQuery>::from_query(req.query_string())
        .map_err(|e| ConsoleError::Api(ApiError::BadRequest(format!("query: {e}"))))?;
    let last = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|h| h.to_str().ok());
    let start = sse::start_offset(last, q.offset);
    let run = v.summary.id;
    let rx = match state
        .engine
        .follow_log(&s.user, run, &t.id.to_string())
        .await
    {
        Ok(rx) => rx,
        Err(engine::Error::Conflict(why)) => {
            // not on an actuator yet: say so, and let the browser come back
            let body = format!(
                "retry: {}\n{}",
                sse::RETRY_MS,
                sse::event(
                    Some("waiting"),
                    None,
                    &serde_json::to_string(&why).unwrap_or_default()
                )
            );
            return Ok(sse_response().body(body));
        }
        Err(e) => return Err(e.into()),
    };
    let engine = state.engine.clone();
    let user = s.user.clone();
    let task_id = t.id;
    let ended_check = move || {
        let engine = engine.clone();
        let user = user.clone();
        async move {
            match engine.run_view(&user, run).await {
                Ok(v) => v
                    .tasks
                    .iter()
                    .find(|t| t.id == task_id)
                    .is_none_or(|t| ended(&t.status)),
                Err(_) => false,
            }
        }
    };
    Ok(sse_response().streaming(sse::stream(rx, start, ended_check)))
}

/// `GET …/log.txt`: the whole log, streamed as it is read (never held whole).
async fn log_text(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let (id, task) = path.into_inner();
    let (v, t) = load_task(&state, &s, &id, &task).await?;
    let rx = state
        .engine
        .follow_log(&s.user, v.summary.id, &t.id.to_string())
        .await?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| {
            (
                item.map(web::Bytes::from)
                    .map_err(actix_web::error::ErrorInternalServerError),
                rx,
            )
        })
    });
    let mut r = HttpResponse::Ok();
    super::secure_headers(&mut r);
    Ok(r.content_type("text/plain; charset=utf-8")
        .streaming(stream))
}

// ------------------------------------------------------------------ events

#[derive(Debug, Default, serde::Deserialize)]
struct PageQuery {
    before: Option<String>,
}

async fn events(state: State, req: HttpRequest) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let q = web::Query::<PageQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let before = given(&q.before)
        .map(|b| parse_id(&b, "before"))
        .transpose()?;
    let list = state.engine.recent_events(&s.user, before, PAGE).await?;
    let older = (list.len() as i64 >= PAGE)
        .then(|| list.last().map(|e| e.id))
        .flatten();
    let body = html! {
        h1 { "Events" }
        form.filters method="get" action="/ui/events/find" aria-label="Find an event" {
            p.field {
                label for="event-id" { "Event id" }
                input id="event-id" name="id" type="number" min="1" required;
            }
            p.actions { button type="submit" formaction="/ui/events/find" { "Open" } }
        }
        @if list.is_empty() {
            p.none { "No events yet." }
        } @else {
            div.scroll {
                table {
                    caption.visually-hidden { "Events received, newest first" }
                    thead { tr {
                        th scope="col" { "Event" }
                        th scope="col" { "Name" }
                        th scope="col" { "Version" }
                        th scope="col" { "Status" }
                        th scope="col" { "Message" }
                        th scope="col" { "Received" }
                    } }
                    tbody {
                        @for e in &list {
                            tr {
                                td { a href=(format!("/ui/events/{}", e.id)) { "#" (e.id) } }
                                td { (e.name) }
                                td { (e.version) }
                                td { (badge(&e.status)) }
                                td { (e.message) }
                                td { (engine::store::format_ms(e.created_at)) }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if before.is_some() { a href="/ui/events" { "Newest" } " " }
            @if let Some(b) = older { a href=(format!("/ui/events?before={b}")) rel="next" { "Older events" } }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Events", Some(&s), "events", body),
    ))
}

#[derive(Debug, serde::Deserialize)]
struct FindQuery {
    id: String,
}

async fn find_event(req: HttpRequest) -> Result<HttpResponse> {
    session(&req).await?;
    let q = web::Query::<FindQuery>::from_query(req.query_string())
        .map_err(|e| ConsoleError::Api(ApiError::BadRequest(format!("query: {e}"))))?;
    let id = parse_id(q.id.trim(), "event id")?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/ui/events/{id}")))
        .finish())
}

async fn event(state: State, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let id = parse_id(&path, "event id")?;
    let v = state.engine.event_view(&s.user, id).await?;
    let row = state.engine.event_row(&s.user, id).await?;
    let content: Value =
        serde_json::from_str(&row.content).unwrap_or(Value::String(row.content.clone()));
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/ui/events" { "Events" } " › " span { "#" (id) } }
        h1 { "Event #" (id) " — " (v.name) ":" (v.version) }
        dl.facts {
            dt { "Status" } dd { (badge(&v.status)) }
            dt { "Received" } dd { (v.created_at) }
            @if !v.message.is_empty() { dt { "Message" } dd { (v.message) } }
        }
        h2 { "Triggers" }
        @if v.triggers.is_empty() {
            p.none { "No trigger listens for this event." }
        } @else {
            div.scroll {
                table {
                    thead { tr {
                        th scope="col" { "Trigger" }
                        th scope="col" { "Pipeline" }
                        th scope="col" { "Result" }
                        th scope="col" { "Why" }
                        th scope="col" { "Run" }
                    } }
                    tbody {
                        @for t in &v.triggers {
                            tr {
                                td { (t.trigger) }
                                td { (t.pipeline) }
                                td { (badge(&t.status)) }
                                td { (t.reason) }
                                td {
                                    @if let Some(r) = t.pipeline_id {
                                        a href=(format!("/ui/runs/{r}")) { "#" (r) }
                                    } @else { "—" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "What arrived" }
        pre.yaml id="event-content" { (yaml(&content)) }
    };
    Ok(respond(
        StatusCode::OK,
        page(&format!("Event {id}"), Some(&s), "events", body),
    ))
}

// ------------------------------------------------------------------ definitions

async fn definitions(state: State, req: HttpRequest) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let db = &state.db;
    let actuators = engine::registry::list_actuators(db, &s.user).await?;
    let pipelines = engine::registry::list_pipelines(db, &s.user).await?;
    let triggers = engine::registry::list_triggers(db, &s.user).await?;
    let mut by_name: BTreeMap<&str, Vec<&proto::PipelineDefinitionView>> = BTreeMap::new();
    for p in &pipelines {
        by_name.entry(p.name.as_str()).or_default().push(p);
    }
    let body = html! {
        h1 { "Definitions" }
        nav.toc aria-label="Sections" {
            a href="#actuators" { "Actuators" } " · "
            a href="#pipelines" { "Pipelines" } " · "
            a href="#triggers" { "Triggers" }
        }
        section aria-labelledby="actuators" {
            h2 id="actuators" tabindex="-1" { "Actuators (" (actuators.len()) ")" }
            @if actuators.is_empty() { p.none { "None." } }
            @for a in &actuators {
                details.def {
                    summary {
                        strong.name { (a.name) } " " span.kind { (a.kind) }
                        @if !a.address.is_empty() { " · " (a.address) }
                        @if !a.tags.is_empty() { " · tags: " (a.tags.join(", ")) }
                    }
                    pre.yaml { (yaml(&a.definition)) }
                }
            }
        }
        section aria-labelledby="pipelines" {
            h2 id="pipelines" tabindex="-1" { "Pipelines (" (by_name.len()) ")" }
            @if by_name.is_empty() { p.none { "None." } }
            @for (name, versions) in &by_name {
                article.def-group {
                    h3.name { (name) }
                    @for p in versions {
                        details.def {
                            summary {
                                "version " strong { (p.version) }
                                @if p.latest { " " span.badge.st-latest { "latest" } }
                                " · applied " (p.updated_at)
                            }
                            pre.yaml { (yaml(&p.definition)) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="triggers" {
            h2 id="triggers" tabindex="-1" { "Triggers (" (triggers.len()) ")" }
            @if triggers.is_empty() { p.none { "None." } }
            @for t in &triggers {
                details.def {
                    summary {
                        strong.name { (t.name) } " · on " (t.event_name) ":" (t.event_version)
                        " from " (t.event_creater) " → " (t.pipelines.join(", "))
                    }
                    pre.yaml { (yaml(&t.definition)) }
                }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Definitions", Some(&s), "definitions", body),
    ))
}

// ------------------------------------------------------------------ machines and fan-out

async fn machines_part(state: &State, s: &Session) -> Result<Markup> {
    let ms = engine::commands::machines(&state.db, &state.engine.tunnels, &s.user).await?;
    let tasks = engine::commands::list(&state.db, &s.user, None, Some(20)).await?;
    let online = ms.iter().filter(|m| m.status == "online").count();
    let announce = format!("{online} of {} machines online", ms.len());
    Ok(html! {
        div data-announce=(announce) {
            h2 { "Machines (" (online) " online of " (ms.len()) ")" }
            @if ms.is_empty() {
                p.none { "No tunnel client has connected yet." }
            } @else {
                div.scroll {
                    table.machines {
                        thead { tr {
                            th scope="col" { "Label" }
                            th scope="col" { "Status" }
                            th scope="col" { "Client id" }
                            th scope="col" { "Address" }
                            th scope="col" { "Version" }
                            th scope="col" { "Runs as" }
                            th scope="col" { "Running" }
                            th scope="col" { "Last seen" }
                        } }
                        tbody {
                            @for m in &ms {
                                tr {
                                    td { (m.machine_label) }
                                    td { (badge(&m.status)) }
                                    td { (m.client_id) }
                                    td { (m.address) }
                                    td { (m.version) }
                                    td { (m.run_as) }
                                    td { (m.running_tasks) }
                                    td { (m.last_seen) }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Fan-out tasks" }
            @if tasks.is_empty() { p.none { "None yet." } }
            @for t in &tasks {
                article.fanout {
                    h3 { (t.name) " " (badge(&t.status)) }
                    p {
                        "On machines matching " code { (t.machine_pattern) } ": " code { (t.detail.command) }
                        " · " (t.created_at)
                    }
                    @if t.detail.result.is_empty() {
                        p.none { "No machine matched." }
                    } @else {
                        div.scroll {
                            table {
                                thead { tr {
                                    th scope="col" { "Machine" }
                                    th scope="col" { "Result" }
                                    th scope="col" { "Exit" }
                                    th scope="col" { "Output" }
                                } }
                                tbody {
                                    @for r in &t.detail.result {
                                        tr {
                                            td { (r.machine_label) }
                                            td { (badge(&r.status)) @if !r.msg.is_empty() { " " (r.msg) } }
                                            td { (r.exit_code.map(|c| c.to_string()).unwrap_or_default()) }
                                            td { pre.output { (r.output.join("\n")) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

#[derive(Debug, Default, serde::Deserialize)]
struct ExecForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    pattern: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    workspace: String,
    #[serde(default)]
    timeout: String,
}

fn exec_form(s: &Session, f: &ExecForm, error: Option<&str>) -> Markup {
    html! {
        form.exec method="post" action="/ui/machines/exec" aria-labelledby="exec-title" {
            h2 id="exec-title" { "Run a command on machines" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            input type="hidden" name="csrf" value=(s.csrf);
            p.field {
                label for="x-name" { "Task name" }
                input id="x-name" name="name" type="text" required value=(f.name);
            }
            p.field {
                label for="x-pattern" { "Machine label pattern (regular expression)" }
                input id="x-pattern" name="pattern" type="text" required value=(f.pattern)
                    placeholder="^web-";
            }
            p.field.wide {
                label for="x-command" { "Command (bash -c)" }
                input id="x-command" name="command" type="text" required value=(f.command);
            }
            p.field {
                label for="x-workspace" { "Working directory (optional)" }
                input id="x-workspace" name="workspace" type="text" value=(f.workspace);
            }
            p.field.narrow {
                label for="x-timeout" { "Timeout, seconds (optional)" }
                input id="x-timeout" name="timeout" type="number" min="1" value=(f.timeout);
            }
            p.actions { button type="submit" { "Run" } }
        }
    }
}

fn machines_page(s: &Session, part: Markup, f: &ExecForm, error: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Machines and fan-out tasks" }
        (exec_form(s, f, error))
        div.visually-hidden role="status" aria-live="polite" id="live-announce" {}
        div id="machines-live" data-live-src="/ui/machines/live" data-live-interval="2000" {
            (part)
        }
    };
    page("Machines", Some(s), "machines", body)
}

async fn machines(state: State, req: HttpRequest) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let part = machines_part(&state, &s).await?;
    Ok(respond(
        StatusCode::OK,
        machines_page(&s, part, &ExecForm::default(), None),
    ))
}

async fn machines_live(state: State, req: HttpRequest) -> Result<HttpResponse> {
    let s = session(&req).await?;
    Ok(fragment(machines_part(&state, &s).await?))
}

async fn exec(state: State, req: HttpRequest, form: web::Form<ExecForm>) -> Result<HttpResponse> {
    let s = session(&req).await?;
    let f = form.into_inner();
    s.check_csrf(&f.csrf)?;
    let timeout = match f.timeout.trim() {
        "" => Ok(None),
        t => t
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("timeout {t:?} is not a number of seconds")),
    };
    let created = match timeout {
        Err(m) => Err(ApiError::BadRequest(m)),
        Ok(timeout) => {
            let r = proto::FanoutRequest {
                name: f.name.clone(),
                machine_pattern: f.pattern.clone(),
                detail: proto::FanoutRequestDetail {
                    command: f.command.clone(),
                    workspace: Some(f.workspace.clone()).filter(|w| !w.trim().is_empty()),
                    timeout,
                },
            };
            engine::commands::create(&state.db, &state.engine.tunnels, &s.user, &r)
                .await
                .map_err(ApiError::from)
        }
    };
    match created {
        Ok(_) => Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/ui/machines"))
            .finish()),
        Err(e @ (ApiError::BadRequest(_) | ApiError::Conflict(_))) => {
            let part = machines_part(&state, &s).await?;
            let msg = e.to_string();
            Ok(respond(
                e_status(&e),
                machines_page(&s, part, &f, Some(&msg)),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

fn e_status(e: &ApiError) -> StatusCode {
    actix_web::ResponseError::status_code(e)
}
