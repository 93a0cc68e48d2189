//! `eoctl machine list` and `eoctl exec` (SPEC §10): the machines of my tunnel clients, and a
//! shell command run on every online one whose label matches, results printed as they
//! arrive.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use proto::{FanoutRequest, FanoutRequestDetail, FanoutView, MachineResult, MachineView};

use super::Ctx;
use crate::args::{ExecArgs, MachineCmd};
use crate::client::{encode_segment, typed};
use crate::output::{self, Table};

const MACHINES: &str = "/api/v1/machine";
const TASKS: &str = "/api/v1/task";
/// How often `exec` asks for results.
const POLL: Duration = Duration::from_millis(100);
/// Beyond the command's timeout, how long `exec` waits for the last result. The server ends
/// every result by timeout + 90 s even when the machine never answers; this is a backstop.
const WAIT_MARGIN: Duration = Duration::from_secs(180);
/// The server's default timeout.
const DEFAULT_TIMEOUT: u64 = 60;

pub fn machine(ctx: &Ctx, cmd: MachineCmd) -> Result<()> {
    match cmd {
        MachineCmd::List => {
            let data = ctx.client()?.get(&format!("{MACHINES}/"))?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let views: Vec<MachineView> = typed(data, "machine list")?;
            if views.is_empty() {
                eprintln!("no machines (connect one with eventops-client)");
                return Ok(());
            }
            print!("{}", machine_table(&views).render());
            Ok(())
        }
    }
}

fn machine_table(views: &[MachineView]) -> Table {
    let mut table = Table::new(&[
        "LABEL",
        "CLIENT-ID",
        "STATUS",
        "FIRST-SEEN",
        "LAST-SEEN",
        "RUNNING",
        "ADDRESS",
    ]);
    for v in views {
        table.row(vec![
            v.machine_label.clone(),
            v.client_id.clone(),
            v.status.clone(),
            v.first_seen.clone(),
            v.last_seen.clone(),
            v.running_tasks.to_string(),
            output::or_dash(&v.address),
        ]);
    }
    table
}

/// `exec-<unix seconds>-<6 random hex digits>`.
fn default_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // RandomState is seeded randomly per process
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("exec-{secs}-{:06x}", h.finish() & 0xff_ffff)
}

/// The header printed above a machine's output: `== web-1: success (exit code 0)`.
fn header(r: &MachineResult, show_id: bool) -> String {
    let mut h = format!("== {}", r.machine_label);
    if show_id {
        h.push_str(&format!(" [{}]", r.client_id));
    }
    h.push_str(&format!(": {}", r.status));
    if let Some(code) = r.exit_code {
        h.push_str(&format!(" (exit code {code})"));
    }
    let msg = r.msg.trim();
    let redundant = r
        .exit_code
        .is_some_and(|code| msg == format!("exit code {code}"));
    if !msg.is_empty() && !redundant {
        h.push_str(&format!(": {}", msg.replace('\n', " ")));
    }
    h
}

fn key(r: &MachineResult) -> (String, String) {
    (r.client_id.clone(), r.machine_label.clone())
}

pub fn exec(ctx: &Ctx, a: ExecArgs) -> Result<()> {
    let command = a.command.join(" ");
    if command.trim().is_empty() {
        bail!("the command after `--` is empty");
    }
    let name = a.name.clone().unwrap_or_else(default_name);
    let req = FanoutRequest {
        name: name.clone(),
        machine_pattern: a.machines.clone(),
        detail: FanoutRequestDetail {
            command,
            workspace: a.workspace.clone(),
            timeout: a.timeout,
        },
    };
    let client = ctx.client()?;
    let created: FanoutView = typed(client.post_json(&format!("{TASKS}/"), &req)?, "task")?;
    let structured = ctx.format != output::Format::Table;
    let machines = created.detail.result.len();
    if !structured {
        eprintln!(
            "task {name}: running on {machines} machine{}",
            if machines == 1 { "" } else { "s" }
        );
    }
    // a label shared by two client ids is told apart by the id
    let mut labels: HashMap<&str, usize> = HashMap::new();
    for r in &created.detail.result {
        *labels.entry(r.machine_label.as_str()).or_default() += 1;
    }
    let shared: HashSet<String> = labels
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(l, _)| l.to_string())
        .collect();

    let path = format!("{TASKS}/?taskPrefix={}", encode_segment(&name));
    let give_up =
        Instant::now() + Duration::from_secs(a.timeout.unwrap_or(DEFAULT_TIMEOUT)) + WAIT_MARGIN;
    let mut printed: HashSet<(String, String)> = HashSet::new();
    let mut stdout = std::io::stdout().lock();
    let last = loop {
        let tasks: Vec<FanoutView> = typed(client.get(&path)?, "task list")?;
        let task = tasks
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| anyhow!("task {name} is gone from the server's list"))?;
        if !structured {
            for r in &task.detail.result {
                if r.status == "running" || printed.contains(&key(r)) {
                    continue;
                }
                printed.insert(key(r));
                writeln!(stdout, "{}", header(r, shared.contains(&r.machine_label)))?;
                for line in &r.output {
                    writeln!(stdout, "{line}")?;
                }
                stdout.flush()?;
            }
        }
        if task.status != "running" {
            break task;
        }
        if Instant::now() > give_up {
            bail!(
                "gave up waiting for task {name}; see `curl {TASKS}?taskPrefix={name}` or `eoctl exec` again with another --name"
            );
        }
        std::thread::sleep(POLL);
    };
    drop(stdout);
    if structured {
        output::print_structured(ctx.format, &last)?;
    }
    let failed = last
        .detail
        .result
        .iter()
        .filter(|r| r.status != "success")
        .count();
    if failed > 0 {
        bail!(
            "{failed} of {} machine{} did not succeed",
            last.detail.result.len(),
            if last.detail.result.len() == 1 {
                ""
            } else {
                "s"
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: &str, code: Option<i32>, msg: &str) -> MachineResult {
        MachineResult {
            machine_label: "web-1".into(),
            client_id: "fleet".into(),
            status: status.into(),
            exit_code: code,
            msg: msg.into(),
            output: vec![],
            started_at: String::new(),
            ended_at: None,
        }
    }

    #[test]
    fn headers_say_status_code_and_message() {
        assert_eq!(
            header(&result("success", Some(0), ""), false),
            "== web-1: success (exit code 0)"
        );
        assert_eq!(
            header(&result("failed", Some(2), "exit code 2"), false),
            "== web-1: failed (exit code 2)"
        );
        assert_eq!(
            header(
                &result("error", None, "tunnel client fleet (web-1) went offline"),
                true
            ),
            "== web-1 [fleet]: error: tunnel client fleet (web-1) went offline"
        );
        assert_eq!(
            header(&result("timeout", None, "killed after 5s"), false),
            "== web-1: timeout: killed after 5s"
        );
    }

    #[test]
    fn default_names_are_unique_and_timed() {
        let a = default_name();
        let b = default_name();
        assert!(a.starts_with("exec-") && a.len() > 16, "{a}");
        assert_ne!(a, b);
    }
}
