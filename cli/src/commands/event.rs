//! `eoctl event send -f FILE`: sends the file as written (YAML or JSON) and prints the id;
//! `eoctl event get ID`: the event's processing status and its event-trigger records.

use anyhow::{Context, Result};

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
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let sent: proto::EventSent = typed(data, "event id")?;
            // Only the id, so that `id=$(eoctl event send -f e.yaml)` works.
            println!("{}", sent.id);
            Ok(())
        }
        EventCmd::Get { id } => {
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
