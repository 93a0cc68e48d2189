//! `eoctl runtime list|get|cancel|logs|file`: pipeline runs (SPEC §6, §8).

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use super::live::{self, Live};
use super::Ctx;
use crate::args::{RuntimeCmd, RuntimeListArgs};
use crate::client::{api_path, encode_segment, typed};
use crate::output::{self, key_values, or_dash, truncate, Table};

const BASE: &str = "/api/pipeline";

/// Longest error text shown in a table cell (the whole text is in `-o json|yaml`).
const ERROR_WIDTH: usize = 60;

pub fn run(ctx: &Ctx, cmd: RuntimeCmd) -> Result<()> {
    match cmd {
        RuntimeCmd::List(args) => list(ctx, &args),
        RuntimeCmd::Get(id) => get(ctx, id.get()),
        RuntimeCmd::Watch(id) => watch(ctx, id.get()),
        RuntimeCmd::Cancel(id) => cancel(ctx, id.get()),
        RuntimeCmd::Logs { target, follow } => {
            let (id, task, _) = target.resolve(&[]).map_err(|e| anyhow!(e))?;
            logs(ctx, id, &task, follow)
        }
        RuntimeCmd::File { target } => {
            let (id, task, rest) = target.resolve(&["NAME"]).map_err(|e| anyhow!(e))?;
            let name = rest.first().map(String::as_str).unwrap_or_default();
            file(ctx, id, &task, name, ctx.output_path.as_deref())
        }
    }
}

/// Whether a run status is final (a run is `running` until it ends).
pub fn ended(status: &str) -> bool {
    status != "running"
}

/// `eoctl runtime watch ID`: the run's view, redrawn as it changes (polled every second),
/// until the run ends; an error (exit 1) unless it succeeded. With `-o json|yaml` nothing is
/// drawn: the run's final view is printed once it ended.
fn watch(ctx: &Ctx, id: i64) -> Result<()> {
    let client = ctx.client()?;
    let path = format!("{BASE}/{id}");
    let mut live = Live::new();
    let (data, run) = loop {
        let data = live::get(&client, &path)?;
        let run: proto::RunView = typed(data.clone(), "pipeline run")?;
        if ctx.format == output::Format::Table {
            live.show(&watch_frame(&run))?;
        }
        if ended(&run.summary.status) {
            break (data, run);
        }
        std::thread::sleep(live::POLL);
    };
    output::print_structured(ctx.format, &data)?;
    run_result(&run.summary)
}

/// Ok for a run that succeeded, else the error that says how it ended.
pub fn run_result(run: &proto::RunSummary) -> Result<()> {
    if run.status == "success" {
        return Ok(());
    }
    if run.error.is_empty() {
        Err(anyhow!("pipeline run {} ended {}", run.id, run.status))
    } else {
        Err(anyhow!(
            "pipeline run {} ended {}: {}",
            run.id,
            run.status,
            truncate(&run.error, 200)
        ))
    }
}

/// One frame of `runtime watch`: what the run is, its status, then its tasks. Nothing in it
/// changes unless a status does (no clock), so that frames repeat only on change.
pub fn watch_frame(run: &proto::RunView) -> String {
    let s = &run.summary;
    let done = run.tasks.iter().filter(|t| task_ended(&t.status)).count();
    let mut pairs: Vec<(&str, String)> = vec![
        ("Run", format!("{} {}", s.id, s.pipeline)),
        ("Status", s.status.clone()),
        ("Tasks", format!("{done}/{} ended", run.tasks.len())),
        ("Created", s.created_at.clone()),
    ];
    if let Some(ended) = &s.ended_at {
        pairs.push(("Ended", ended.clone()));
    }
    if !s.error.is_empty() {
        pairs.push(("Error", truncate(&s.error, 200)));
    }
    let mut out = key_values(&pairs);
    out.push('\n');
    if run.tasks.is_empty() {
        out.push_str("no tasks yet\n");
    } else {
        out.push_str(&task_table(&run.tasks).render());
    }
    out
}

/// Whether a task status is final.
fn task_ended(status: &str) -> bool {
    !matches!(status, "initializing" | "created" | "running")
}

/// `eoctl runtime file --id=RUN --task=ALIAS NAME [-o PATH]`: streamed from the server (which
/// checks the run is the caller's) to PATH, or to standard output.
fn file(ctx: &Ctx, id: i64, task: &str, name: &str, output: Option<&str>) -> Result<()> {
    if task.trim().is_empty() || name.trim().is_empty() {
        return Err(anyhow!("task and NAME must not be empty"));
    }
    let path = api_path(&format!("{BASE}/{id}/task"), &[task, "file", name]);
    let mut reader = ctx.client()?.get_stream(&path, true)?;
    match output {
        Some(p) if p != "-" => {
            let tmp = format!("{p}.part");
            let mut f =
                std::fs::File::create(&tmp).with_context(|| format!("cannot create {tmp}"))?;
            io::copy(&mut reader, &mut f)
                .with_context(|| format!("downloading {name:?} of task {task:?} broke off"))?;
            f.sync_all().ok();
            std::fs::rename(&tmp, p).with_context(|| format!("cannot write {p}"))?;
            Ok(())
        }
        _ => {
            let stdout = io::stdout();
            copy_flushing(reader, &mut stdout.lock())
                .with_context(|| format!("downloading {name:?} of task {task:?} broke off"))
        }
    }
}

/// `/api/pipeline/?eventName=…&top=N` with the given filters, values percent-encoded.
fn list_path(a: &RuntimeListArgs) -> String {
    let top = a.top.map(|n| n.to_string());
    let params = [
        ("eventName", a.event_name.as_deref()),
        ("eventVersion", a.event_version.as_deref()),
        ("eventCreater", a.event_creater.as_deref()),
        (
            "triggerDefinitionName",
            a.trigger_definition_name.as_deref(),
        ),
        (
            "pipelineDefinitionName",
            a.pipeline_definition_name.as_deref(),
        ),
        (
            "pipelineDefinitionVersion",
            a.pipeline_definition_version.as_deref(),
        ),
        ("status", a.status.as_deref()),
        ("top", top.as_deref()),
    ];
    let query: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode_segment(v))))
        .collect();
    if query.is_empty() {
        format!("{BASE}/")
    } else {
        format!("{BASE}/?{}", query.join("&"))
    }
}

fn event_label(name: &str, version: &str) -> String {
    match (name.is_empty(), version.is_empty()) {
        (true, _) => "-".to_string(),
        (false, true) => name.to_string(),
        (false, false) => format!("{name}:{version}"),
    }
}

fn list(ctx: &Ctx, args: &RuntimeListArgs) -> Result<()> {
    let data = ctx.client()?.get(&list_path(args))?;
    if output::print_structured(ctx.format, &data)? {
        return Ok(());
    }
    let runs: Vec<proto::RunSummary> = typed(data, "pipeline run list")?;
    if runs.is_empty() {
        eprintln!("no pipeline runs");
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID", "PIPELINE", "STATUS", "TRIGGER", "EVENT", "CREATED", "ENDED", "ERROR",
    ]);
    for r in runs {
        table.row(vec![
            r.id.to_string(),
            r.pipeline,
            r.status,
            or_dash(&r.trigger_name),
            event_label(&r.event_name, &r.event_version),
            r.created_at,
            or_dash(r.ended_at.as_deref().unwrap_or("")),
            or_dash(&truncate(&r.error, ERROR_WIDTH)),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

/// Whether a value (inputs, contexts, outputs) has nothing to show.
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn get(ctx: &Ctx, id: i64) -> Result<()> {
    let data = ctx.client()?.get(&format!("{BASE}/{id}"))?;
    if output::print_structured(ctx.format, &data)? {
        return Ok(());
    }
    let run: proto::RunView = typed(data, "pipeline run")?;
    print!("{}", render_run(&run)?);
    Ok(())
}

/// The readable view of a run: header lines, its values as YAML blocks, then the task table.
fn render_run(run: &proto::RunView) -> Result<String> {
    let s = &run.summary;
    let mut event = event_label(&s.event_name, &s.event_version);
    if let Some(eid) = s.event_id {
        event.push_str(&format!(" (event {eid}"));
        if !s.event_creater.is_empty() {
            event.push_str(&format!(", sent by {}", s.event_creater));
        }
        event.push(')');
    }
    let blocks = [
        ("Inputs", &run.inputs),
        ("Contexts", &run.contexts),
        ("Outputs", &run.outputs),
    ];
    let mut pairs: Vec<(&str, String)> = vec![
        ("ID", s.id.to_string()),
        ("Pipeline", s.pipeline.clone()),
        ("Status", s.status.clone()),
        ("Trigger", or_dash(&s.trigger_name)),
        ("Event", event),
        ("Created", s.created_at.clone()),
        ("Ended", or_dash(s.ended_at.as_deref().unwrap_or(""))),
        ("Error", or_dash(&s.error)),
    ];
    // Empty values stay one line; the others follow as indented YAML.
    for (title, value) in blocks {
        if is_empty_value(value) {
            pairs.push((title, "-".to_string()));
        }
    }
    let mut out = key_values(&pairs);
    for (title, value) in blocks {
        if !is_empty_value(value) {
            out.push_str(&format!("{title}:\n"));
            for line in output::to_yaml(value)?.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    out.push('\n');
    if run.tasks.is_empty() {
        out.push_str("no tasks yet\n");
    } else {
        out.push_str(&task_table(&run.tasks).render());
    }
    // file outputs with their sizes (`eoctl runtime file` downloads one)
    let mut files = Table::new(&["TASK", "FILE", "SIZE", "KEY"]);
    let mut any = false;
    for t in &run.tasks {
        for (name, f) in &t.files {
            any = true;
            files.row(vec![
                t.alias.clone(),
                name.clone(),
                human_size(f.size),
                f.key.clone(),
            ]);
        }
    }
    if any {
        out.push('\n');
        out.push_str(&files.render());
    }
    Ok(out)
}

/// `1.5 MiB`, `512 B`.
fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The tasks, each child DAG (tasks whose `parentTaskId` is a pipeline-type task of this run)
/// right under its parent with the alias indented one step per level.
fn task_table(tasks: &[proto::TaskView]) -> Table {
    let ids: HashSet<i64> = tasks.iter().map(|t| t.id).collect();
    let mut children: BTreeMap<i64, Vec<&proto::TaskView>> = BTreeMap::new();
    let mut roots = Vec::new();
    for t in tasks {
        match t.parent_task_id {
            Some(p) if ids.contains(&p) && p != t.id => children.entry(p).or_default().push(t),
            _ => roots.push(t),
        }
    }
    let mut table = Table::new(&[
        "ID",
        "ALIAS",
        "TYPE",
        "STATUS",
        "ACTUATOR/TAG",
        "EXIT",
        "STARTED",
        "ENDED",
        "ERROR",
    ]);
    let mut seen = HashSet::new();
    let mut stack: Vec<(&proto::TaskView, usize)> =
        roots.into_iter().rev().map(|t| (t, 0)).collect();
    while let Some((t, depth)) = stack.pop() {
        if !seen.insert(t.id) {
            continue;
        }
        table.row(task_row(t, depth));
        if let Some(kids) = children.get(&t.id) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    // Tasks caught in a parent cycle (never sent by a sane server) are still listed.
    for t in tasks {
        if !seen.contains(&t.id) {
            table.row(task_row(t, 0));
        }
    }
    table
}

fn task_row(t: &proto::TaskView, depth: usize) -> Vec<String> {
    let placement = match (t.actuator.is_empty(), t.actuator_tag.is_empty()) {
        (true, true) => "-".to_string(),
        (false, true) => t.actuator.clone(),
        (true, false) => t.actuator_tag.clone(),
        (false, false) => format!("{}/{}", t.actuator, t.actuator_tag),
    };
    vec![
        t.id.to_string(),
        format!("{}{}", "  ".repeat(depth), t.alias),
        t.kind.clone(),
        t.status.clone(),
        placement,
        t.exit_code
            .map_or_else(|| "-".to_string(), |c| c.to_string()),
        or_dash(t.started_at.as_deref().unwrap_or("")),
        or_dash(t.ended_at.as_deref().unwrap_or("")),
        or_dash(&truncate(&t.error, ERROR_WIDTH)),
    ]
}

fn cancel(ctx: &Ctx, id: i64) -> Result<()> {
    let data = ctx.client()?.post_empty(&format!("{BASE}/{id}/cancel"))?;
    if output::print_structured(ctx.format, &data)? {
        return Ok(());
    }
    let state = data.as_str().unwrap_or("cancelling");
    println!("pipeline run {id}: {state}");
    Ok(())
}

fn logs(ctx: &Ctx, id: i64, task: &str, follow: bool) -> Result<()> {
    if task.trim().is_empty() {
        return Err(anyhow!("task must not be empty (give its alias or id)"));
    }
    let mut path = api_path(&format!("{BASE}/{id}/task"), &[task]);
    path.push_str("/log");
    if follow {
        path.push_str("?follow=true");
    }
    let client = ctx.client()?;
    let reader = client.get_stream(&path, follow)?;
    let stdout = io::stdout();
    copy_flushing(reader, &mut stdout.lock())
        .with_context(|| format!("the log of task {task:?} of run {id} broke off"))
}

/// Copies the log to `out` chunk by chunk, flushing each so that a followed log shows up as it
/// grows. A closed `out` (`eoctl runtime logs … | head`) ends the copy quietly.
fn copy_flushing(mut reader: impl Read, out: &mut impl Write) -> Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let written = out.write_all(&buf[..n]).and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(anyhow!("cannot write the log: {e}")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(id: i64, parent: Option<i64>, alias: &str, kind: &str) -> proto::TaskView {
        proto::TaskView {
            id,
            parent_task_id: parent,
            alias: alias.into(),
            kind: kind.into(),
            status: "success".into(),
            actuator: if kind == "os" {
                "runner".into()
            } else {
                String::new()
            },
            actuator_tag: if kind == "os" {
                "os".into()
            } else {
                String::new()
            },
            inputs: Value::Null,
            outputs: Value::Null,
            files: Default::default(),
            error: String::new(),
            exit_code: (kind == "os").then_some(0),
            timeout: 0,
            created_at: "2024-01-01T00:00:00Z".into(),
            started_at: None,
            ended_at: None,
        }
    }

    #[test]
    fn list_filters_become_an_encoded_query() {
        let mut a = RuntimeListArgs {
            event_name: None,
            event_version: None,
            event_creater: None,
            trigger_definition_name: None,
            pipeline_definition_name: None,
            pipeline_definition_version: None,
            status: None,
            top: None,
        };
        assert_eq!(list_path(&a), "/api/pipeline/");
        a.event_name = Some("a b&c".into());
        a.status = Some("running".into());
        a.top = Some(5);
        assert_eq!(
            list_path(&a),
            "/api/pipeline/?eventName=a%20b%26c&status=running&top=5"
        );
    }

    #[test]
    fn child_dags_are_indented_under_their_task() {
        let tasks = vec![
            task(1, None, "make", "os"),
            task(2, None, "nest", "pipeline"),
            task(3, None, "last", "os"),
            task(4, Some(2), "upper", "os"),
            task(5, Some(4), "deep", "os"),
            task(6, Some(2), "exclaim", "os"),
            task(7, Some(99), "orphan", "os"),
        ];
        let text = task_table(&tasks).render();
        let col = text.lines().next().unwrap().find("ALIAS").unwrap();
        let aliases: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| {
                let cell = &l[col..];
                let indent = cell.len() - cell.trim_start().len();
                let name = cell.trim_start().split(' ').next().unwrap();
                format!("{}{name}", " ".repeat(indent))
            })
            .collect();
        assert_eq!(
            aliases,
            vec![
                "make",
                "nest",
                "  upper",
                "    deep",
                "  exclaim",
                "last",
                "orphan"
            ],
            "{text}"
        );
        assert!(text.contains("runner/os"), "{text}");
    }

    #[test]
    fn a_run_reads_well() {
        let run = proto::RunView {
            summary: proto::RunSummary {
                id: 7,
                status: "failed".into(),
                pipeline: "kakj/hello:1.0".into(),
                trigger_name: "t".into(),
                event_id: Some(3),
                event_name: "push".into(),
                event_version: "1".into(),
                event_creater: "kakj".into(),
                error: "task \"a\" failed".into(),
                created_at: "2024-01-01T00:00:00Z".into(),
                ended_at: Some("2024-01-01T00:01:00Z".into()),
            },
            inputs: json!({"who": "world"}),
            contexts: json!({}),
            outputs: Value::Null,
            definition: Value::Null,
            event: Value::Null,
            trigger: Value::Null,
            tasks: vec![task(1, None, "a", "os")],
        };
        let text = render_run(&run).unwrap();
        assert!(
            text.contains("Event:     push:1 (event 3, sent by kakj)"),
            "{text}"
        );
        assert!(text.contains("Contexts:  -"), "{text}");
        assert!(text.contains("Outputs:   -"), "{text}");
        assert!(text.contains("Inputs:\n  who: world\n"), "{text}");
        assert!(text.contains("\nID   ALIAS"), "{text}");
    }

    #[test]
    fn copying_stops_quietly_on_a_closed_pipe() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        copy_flushing(&b"log"[..], &mut Closed).unwrap();
        let mut out = Vec::new();
        copy_flushing(&b"hello\nworld\n"[..], &mut out).unwrap();
        assert_eq!(out, b"hello\nworld\n");
    }
}
