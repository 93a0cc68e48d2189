//! `eoctl event send -f FILE`: sends the file as written (YAML or JSON) and prints the id;
//! `eoctl event get ID`: the event's processing status and its event-trigger records.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::live::{self, Live};
use super::runtime::{ended, run_result, watch_frame};
use super::Ctx;
use crate::args::EventCmd;
use crate::client::typed;
use crate::document;
use crate::output::{self, key_values, or_dash, truncate, Table};

/// Longest reason shown in the table (the whole text is in `-o json|yaml`).
const REASON_WIDTH: usize = 80;

pub fn run(ctx: &Ctx, cmd: EventCmd) -> Result<()> {
    match cmd {
        EventCmd::Send(a) => {
            let f = &a.file;
            let mut text = document::read(&f.file)?;
            let mut content_type = document::content_type(&f.file, &text);
            let client = ctx.client()?;
            if !a.attach.is_empty() {
                text = attach(&client, &f.file, &text, &a.attach)?;
                content_type = "application/json";
            }
            let data = client.post_raw("/api/event/send", content_type, text.as_bytes())?;
            if a.wait {
                let sent: proto::EventSent = typed(data, "event id")?;
                if ctx.format == output::Format::Table {
                    println!("{}", sent.id);
                }
                return wait(ctx, &client, sent.id, a.timeout.map(Duration::from_secs));
            }
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let sent: proto::EventSent = typed(data, "event id")?;
            // Only the id, so that `id=$(eoctl event send -f e.yaml)` works.
            println!("{}", sent.id);
            Ok(())
        }
        EventCmd::Get { id, id_flag } => {
            let id = id.or(id_flag).unwrap_or_default();
            let data = ctx.client()?.get(&format!("/api/event/{id}"))?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let view: proto::EventView = typed(data, "event")?;
            print!("{}", render(&view));
            Ok(())
        }
    }
}

/// `event send --wait`: waits until the event is processed, then until every run it started
/// has ended, redrawing their task tables as they change; an error (exit 1) if the event
/// failed, a trigger could not start its pipeline, a run did not succeed, or `timeout` passed
/// first. With `-o json|yaml` nothing is drawn: `{id, event, runs}` is printed at the end.
fn wait(
    ctx: &Ctx,
    client: &crate::client::Client,
    id: i64,
    timeout: Option<Duration>,
) -> Result<()> {
    let deadline = timeout.map(|t| (Instant::now() + t, t));
    let draw = ctx.format == output::Format::Table;
    let mut live = Live::new();
    let out_of_time = |what: String| -> Result<()> {
        match deadline {
            Some((at, t)) if Instant::now() >= at => {
                Err(anyhow!("timed out after {}s: {what}", t.as_secs_f64()))
            }
            _ => Ok(()),
        }
    };
    let (event_data, event) = loop {
        let data = live::get(client, &format!("/api/event/{id}"))?;
        let event: proto::EventView = typed(data.clone(), "event")?;
        if event.status != "created" && event.status != "processing" {
            break (data, event);
        }
        if draw {
            live.show(&format!("event {id}: {}\n", event.status))?;
        }
        out_of_time(format!("event {id} is still {}", event.status))?;
        std::thread::sleep(live::POLL);
    };
    if event.status == "processFailed" {
        if draw {
            live.show(&render(&event))?;
        }
        return Err(anyhow!(
            "event {id} could not be processed: {}",
            or_dash(&event.message)
        ));
    }
    let run_ids: Vec<i64> = event
        .triggers
        .iter()
        .filter_map(|t| t.pipeline_id)
        .collect();
    let mut runs: Vec<proto::RunView> = Vec::new();
    let mut run_data = Vec::new();
    if run_ids.is_empty() {
        if draw {
            live.show(&render(&event))?;
        }
    } else {
        loop {
            runs.clear();
            run_data.clear();
            for r in &run_ids {
                let data = live::get(client, &format!("/api/pipeline/{r}"))?;
                runs.push(typed(data.clone(), "pipeline run")?);
                run_data.push(data);
            }
            if draw {
                live.show(&wait_frame(&event, &runs))?;
            }
            let running: Vec<String> = runs
                .iter()
                .filter(|r| !ended(&r.summary.status))
                .map(|r| r.summary.id.to_string())
                .collect();
            if running.is_empty() {
                break;
            }
            out_of_time(format!(
                "pipeline run {} still running (it goes on: `eoctl runtime watch ID`)",
                running.join(", ")
            ))?;
            std::thread::sleep(live::POLL);
        }
    }
    let all = serde_json::json!({"id": id, "event": event_data, "runs": run_data});
    output::print_structured(ctx.format, &all)?;
    let mut failures: Vec<String> = event
        .triggers
        .iter()
        .filter(|t| t.status == "processFailed")
        .map(|t| {
            format!(
                "trigger {} could not start {}: {}",
                or_dash(&t.trigger),
                or_dash(&t.pipeline),
                or_dash(&t.reason)
            )
        })
        .collect();
    failures.extend(
        runs.iter()
            .filter_map(|r| run_result(&r.summary).err())
            .map(|e| e.to_string()),
    );
    if run_ids.is_empty() && failures.is_empty() {
        eprintln!("event {id} started no pipeline run");
    }
    match failures.len() {
        0 => Ok(()),
        _ => Err(anyhow!(failures.join("; "))),
    }
}

/// A frame of `event send --wait`: the event, then each run it started as `runtime watch`
/// shows it.
fn wait_frame(event: &proto::EventView, runs: &[proto::RunView]) -> String {
    let label = if event.version.is_empty() {
        event.name.clone()
    } else {
        format!("{}:{}", event.name, event.version)
    };
    let done = runs.iter().filter(|r| ended(&r.summary.status)).count();
    let mut out = format!(
        "Event {} ({label}): {}, {done}/{} runs ended\n",
        event.id,
        event.status,
        runs.len()
    );
    for r in runs {
        out.push('\n');
        out.push_str(&watch_frame(r));
    }
    out
}

fn render(v: &proto::EventView) -> String {
    let event = if v.version.is_empty() {
        v.name.clone()
    } else {
        format!("{}:{}", v.name, v.version)
    };
    let mut pairs = vec![
        ("ID", v.id.to_string()),
        ("Event", event),
        ("Status", v.status.clone()),
        ("Message", or_dash(&v.message)),
        ("Created", v.created_at.clone()),
    ];
    if v.triggers.is_empty() {
        pairs.push(("Triggers", "-".to_string()));
    }
    let mut out = key_values(&pairs);
    if !v.triggers.is_empty() {
        let mut table = Table::new(&["TRIGGER", "PIPELINE", "STATUS", "REASON", "RUN"]);
        for t in &v.triggers {
            table.row(vec![
                or_dash(&t.trigger),
                or_dash(&t.pipeline),
                t.status.clone(),
                or_dash(&truncate(&t.reason, REASON_WIDTH)),
                t.pipeline_id
                    .map_or_else(|| "-".to_string(), |id| id.to_string()),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}

/// Uploads each `NAME=PATH` through the server and answers the event (as JSON) with
/// `files.NAME` naming the stored object.
fn attach(
    client: &crate::client::Client,
    shown: &str,
    text: &str,
    attach: &[String],
) -> Result<String> {
    let mut doc = document::parse(shown, text)?;
    let Some(obj) = doc.as_object_mut() else {
        anyhow::bail!("{shown}: an event is a mapping");
    };
    let files = obj
        .entry("files")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    let Some(files) = files.as_object_mut() else {
        anyhow::bail!("{shown}: files must be a mapping");
    };
    for a in attach {
        let Some((name, path)) = a
            .split_once('=')
            .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        else {
            anyhow::bail!("--attach {a:?}: expected NAME=PATH");
        };
        let file = std::fs::File::open(path)
            .with_context(|| format!("--attach {name}: cannot read {path}"))?;
        let file_name = std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_string());
        let query = format!(
            "/api/file/upload?name={}",
            crate::client::encode_segment(&file_name)
        );
        let data = client
            .post_file(&query, file)
            .with_context(|| format!("--attach {name}: uploading {path}"))?;
        let up: proto::UploadedFile = typed(data, "uploaded file")?;
        files.insert(
            name.to_string(),
            serde_json::json!({"value": up.key, "type": "minio"}),
        );
    }
    Ok(serde_json::to_string(&doc)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_well() {
        let mut v = proto::EventView {
            id: 4,
            name: "push".into(),
            version: "1.0".into(),
            status: "processing".into(),
            message: String::new(),
            created_at: "2024-01-01T00:00:00Z".into(),
            triggers: vec![],
        };
        let text = render(&v);
        assert!(text.contains("Event:     push:1.0\n"), "{text}");
        assert!(text.contains("Message:   -\n"), "{text}");
        assert!(text.ends_with("Triggers:  -\n"), "{text}");
        v.status = "processed".into();
        v.triggers = vec![
            proto::EventTriggerView {
                trigger: "t".into(),
                pipeline: "hello:1.0".into(),
                status: "pass".into(),
                reason: String::new(),
                pipeline_id: Some(9),
            },
            proto::EventTriggerView {
                trigger: "t".into(),
                pipeline: "other:1".into(),
                status: "unpass".into(),
                reason: "values.email does not match".into(),
                pipeline_id: None,
            },
        ];
        let text = render(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&""), "{text}");
        assert!(
            text.contains("TRIGGER   PIPELINE    STATUS   REASON"),
            "{text}"
        );
        assert!(text.contains("hello:1.0   pass     -"), "{text}");
        assert!(text.trim_end().ends_with("-"), "{text}");
        assert!(!text.contains("Triggers:"), "{text}");
    }
}
