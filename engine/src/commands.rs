//! Ad-hoc commands on many machines, and the machine list (SPEC §10, what sidebike does).
//!
//! A *machine* is a tunnel client of the user (client id + label). [`machines`] lists every one
//! ever seen (`store::machines`, kept by the WebSocket endpoint) with whether it is connected
//! now. A fan-out task ([`create`]) runs one shell command on every connected machine of the
//! user whose label matches a regular expression — searched, not anchored, like sidebike's Go
//! `regexp.MatchString`: `web` matches `web-1` and `old-web`; `^web-\d+$` pins it. Each machine
//! gets one `exec` request on a stream of its tunnel, concurrently; its answer (or its going
//! offline) is recorded in its own result row as soon as it arrives, so readers see results
//! one by one.
//!
//! Results are written by the server that sent the request. If that server stops first, the
//! result would stay `running`: every result has a deadline (timeout + margins) after which a
//! reader ends it as `error` ([`list`]).

use crate::store::models::{Command, CommandResult};
use crate::store::{self, commands as q, format_ms, now_ms, Db};
use crate::tunnel::{Client, Tunnels};
use crate::{Error, Result};
use proto::{FanoutDetail, FanoutRequest, FanoutView, MachineResult, MachineView};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tunnel::wire::{Reply, Request};

/// Longest task name, in characters.
pub const MAX_NAME: usize = 128;
/// Longest machine pattern, in characters.
pub const MAX_PATTERN: usize = 1024;
/// Longest command, in bytes (Linux refuses a single argument over 128 KiB).
pub const MAX_COMMAND: usize = 64 * 1024;
/// Longest workspace path, in bytes.
pub const MAX_WORKSPACE: usize = 4096;
/// Timeout when the request gives none, in seconds.
pub const DEFAULT_TIMEOUT: u64 = 60;
/// Longest timeout, in seconds: 7 days, as for pipeline tasks (eventops-client honours up to 30).
pub const MAX_TIMEOUT: u64 = 7 * 24 * 3600;
/// Tasks listed when the request does not say, and the most it may ask for.
pub const DEFAULT_TOP: i64 = 200;
pub const MAX_TOP: i64 = 1000;
/// How long past the timeout the server waits for a machine's answer (the client kills the
/// command at the timeout and answers at once; this covers a slow network).
const REPLY_GRACE: Duration = Duration::from_secs(30);
/// A result still `running` this long past its timeout and grace was abandoned by a server
/// that stopped; readers end it.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);
/// Lines of output kept per machine, and the longest line (characters).
const MAX_LINES: usize = 1000;
const MAX_LINE: usize = 4096;
const MAX_MSG: usize = 4096;
const ABANDONED_MSG: &str =
    "no answer: the server waiting for this machine stopped before it answered";

const STATUSES: [&str; 4] = ["success", "failed", "timeout", "error"];

/// A checked request.
struct Checked {
    name: String,
    pattern: regex::Regex,
    command: String,
    workspace: String,
    timeout: u64,
}

fn check(req: &FanoutRequest) -> Result<Checked> {
    let bad = |m: String| Err(Error::Validation(m));
    let name = req.name.as_str();
    if name.trim().is_empty() {
        return bad("name is empty".into());
    }
    if name.chars().count() > MAX_NAME {
        return bad(format!("name: longer than {MAX_NAME} characters"));
    }
    if name.chars().any(crate::definition::is_hidden_char) {
        return bad(format!(
            "name {name:?}: control characters, bidi and zero-width characters are not allowed"
        ));
    }
    let p = req.machine_pattern.as_str();
    if p.is_empty() {
        return bad("machinePattern is empty (\".*\" matches every machine)".into());
    }
    if p.chars().count() > MAX_PATTERN {
        return bad(format!(
            "machinePattern: longer than {MAX_PATTERN} characters"
        ));
    }
    let pattern = regex::RegexBuilder::new(p)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            Error::Validation(format!(
                "machinePattern {p:?} is not a valid regular expression: {}",
                regex_error(&e)
            ))
        })?;
    let d = &req.detail;
    if d.command.trim().is_empty() {
        return bad("detail.command is empty".into());
    }
    if d.command.len() > MAX_COMMAND {
        return bad(format!("detail.command: longer than {MAX_COMMAND} bytes"));
    }
    if d.command.contains('\0') {
        return bad("detail.command: contains a NUL character".into());
    }
    let workspace = d.workspace.clone().unwrap_or_default();
    if workspace.len() > MAX_WORKSPACE {
        return bad(format!(
            "detail.workspace: longer than {MAX_WORKSPACE} bytes"
        ));
    }
    if workspace.chars().any(char::is_control) {
        return bad("detail.workspace: control characters are not allowed".into());
    }
    let timeout = d.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if !(1..=MAX_TIMEOUT).contains(&timeout) {
        return bad(format!(
            "detail.timeout: {timeout} is not between 1 and {MAX_TIMEOUT} seconds (default {DEFAULT_TIMEOUT})"
        ));
    }
    Ok(Checked {
        name: name.to_string(),
        pattern,
        command: d.command.clone(),
        workspace,
        timeout,
    })
}

/// The one-line reason of a regex error (its text draws a caret diagram over several lines).
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Creates fan-out task `req` of `owner` and starts it on every matching online machine;
/// returns its view (every result `running`). Errors: a bad request or no matching machine
/// (`Validation`), a taken name (`Conflict`).
pub async fn create(
    db: &Db,
    tunnels: &Arc<Tunnels>,
    owner: &str,
    req: &FanoutRequest,
) -> Result<FanoutView> {
    let c = check(req)?;
    let taken = || Error::Conflict(format!("task {:?} exists", c.name));
    if q::exists(db, owner, &c.name).await? {
        return Err(taken());
    }
    let mut targets: Vec<Arc<Client>> = tunnels
        .online_anywhere(owner)
        .await
        .into_iter()
        .filter(|m| c.pattern.is_match(&m.info.label))
        .collect();
    if targets.is_empty() {
        return Err(Error::Validation(format!(
            "no online machine of yours matches machinePattern {:?}",
            req.machine_pattern
        )));
    }
    targets.sort_by(|a, b| {
        (&a.info.label, &a.info.client_id).cmp(&(&b.info.label, &b.info.client_id))
    });
    let now = now_ms();
    let row = Command {
        id: store::new_id(),
        owner: owner.to_string(),
        name: c.name.clone(),
        machine_pattern: req.machine_pattern.clone(),
        command: c.command.clone(),
        workspace: c.workspace.clone(),
        timeout_secs: i64::try_from(c.timeout).unwrap_or(i64::MAX / 2000),
        created_at: now,
    };
    let deadline =
        now + (Duration::from_secs(c.timeout) + REPLY_GRACE + ABANDONED_AFTER).as_millis() as i64;
    let results: Vec<CommandResult> = targets
        .iter()
        .map(|m| CommandResult {
            id: store::new_id(),
            command_id: row.id,
            machine_label: m.info.label.clone(),
            client_id: m.info.client_id.clone(),
            status: q::RUNNING.into(),
            exit_code: None,
            msg: String::new(),
            output: "[]".into(),
            started_at: now,
            deadline_at: deadline,
            ended_at: None,
        })
        .collect();
    q::insert(db, &row, &results).await.map_err(|e| {
        if e.is_unique_violation() {
            taken()
        } else {
            Error::Store(e)
        }
    })?;
    log::info!(
        "task {:?} of {owner:?}: running on {} machine(s) matching {:?}",
        c.name,
        targets.len(),
        req.machine_pattern
    );
    let exec = Request::Exec {
        command: c.command.clone(),
        workspace: (!c.workspace.is_empty()).then(|| c.workspace.clone()),
        timeout_secs: c.timeout,
    };
    let wait = Duration::from_secs(c.timeout) + REPLY_GRACE;
    for (client, result) in targets.into_iter().zip(&results) {
        tokio::spawn(run_one(
            db.retrying(), // a result that arrives during a database outage is kept
            tunnels.clone(),
            client,
            result.id,
            c.name.clone(),
            exec.clone(),
            wait,
        ));
    }
    Ok(view(&row, &results))
}

/// Sends the command to one machine, waits for its answer, records it.
async fn run_one(
    db: Db,
    tunnels: Arc<Tunnels>,
    client: Arc<Client>,
    result_id: i64,
    task: String,
    exec: Request,
    wait: Duration,
) {
    // counted in the machine's running tasks while it runs
    let key = format!("exec:{result_id}");
    client.task_started(&key);
    let outcome = tokio::select! {
        r = client.request(&exec) => match r {
            Ok((reply, _stream)) => outcome_of(&client, reply),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                ended("error", None, format!("tunnel client {}: {e}", client.name()))
            }
            Err(e) => {
                log::debug!("task {task:?}: tunnel client {}: {e}", client.name());
                offline(&client)
            }
        },
        _ = client.closed.cancelled() => offline(&client),
        _ = tokio::time::sleep(wait) => ended(
            "error",
            None,
            format!(
                "no answer from tunnel client {} within {}s",
                client.name(),
                wait.as_secs()
            ),
        ),
    };
    client.task_ended(&key);
    // a reconnection of the same machine inherited the key
    for c in tunnels.online(&client.info.owner) {
        if c.info.client_id == client.info.client_id && c.info.label == client.info.label {
            c.task_ended(&key);
        }
    }
    log::info!(
        "task {task:?} of {:?}: {}: {}{}",
        client.info.owner,
        client.info.label,
        outcome.status,
        if outcome.msg.is_empty() {
            String::new()
        } else {
            format!(" ({})", outcome.msg)
        }
    );
    crate::metrics::get().fanout_result(&outcome.status);
    if let Err(e) = q::finish(&db, result_id, &outcome).await {
        log::error!(
            "task {task:?}: recording the result of {}: {e}",
            client.info.label
        );
    }
}

fn ended(status: &str, exit_code: Option<i32>, msg: String) -> q::Outcome {
    q::Outcome {
        status: status.to_string(),
        exit_code,
        msg,
        output: "[]".into(),
        ended_at: now_ms(),
    }
}

fn offline(client: &Client) -> q::Outcome {
    ended(
        "error",
        None,
        format!("tunnel client {} went offline", client.name()),
    )
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

/// The record of a machine's answer; what it sends is bounded and checked.
fn outcome_of(client: &Client, reply: Reply) -> q::Outcome {
    if !reply.ok {
        return ended(
            "error",
            None,
            format!(
                "tunnel client {}: {}",
                client.name(),
                cut(reply.error.as_deref().unwrap_or("refused"), MAX_MSG)
            ),
        );
    }
    let status = reply.status.as_deref().unwrap_or("");
    if !STATUSES.contains(&status) {
        return ended(
            "error",
            None,
            format!(
                "tunnel client {} answered an unknown status {:?}",
                client.name(),
                cut(status, 64)
            ),
        );
    }
    let skip = reply.output.len().saturating_sub(MAX_LINES);
    let lines: Vec<String> = reply.output[skip..]
        .iter()
        .map(|l| cut(l, MAX_LINE))
        .collect();
    q::Outcome {
        status: status.to_string(),
        exit_code: reply.code,
        msg: cut(reply.msg.as_deref().unwrap_or(""), MAX_MSG),
        output: serde_json::to_string(&lines).unwrap_or_else(|_| "[]".into()),
        ended_at: now_ms(),
    }
}

/// `owner`'s fan-out tasks whose name starts with `prefix`, newest first, at most `top`
/// ([`DEFAULT_TOP`] when `None`, at most [`MAX_TOP`]). Results abandoned by a stopped server
/// (past their deadline) are ended as `error` on the way.
pub async fn list(
    db: &Db,
    owner: &str,
    prefix: Option<&str>,
    top: Option<i64>,
) -> Result<Vec<FanoutView>> {
    let top = top.unwrap_or(DEFAULT_TOP).clamp(1, MAX_TOP);
    let mut rows = q::list(db, owner, prefix, top).await?;
    let now = now_ms();
    for (_, results) in &mut rows {
        for r in results.iter_mut() {
            if r.status == q::RUNNING && r.deadline_at < now {
                let o = ended("error", None, ABANDONED_MSG.into());
                if q::finish(db, r.id, &o).await? {
                    crate::metrics::get().fanout_result(&o.status);
                    r.status = o.status;
                    r.msg = o.msg;
                    r.ended_at = Some(o.ended_at);
                }
            }
        }
    }
    Ok(rows.iter().map(|(c, r)| view(c, r)).collect())
}

fn view(c: &Command, results: &[CommandResult]) -> FanoutView {
    let running = results.iter().any(|r| r.status == q::RUNNING);
    FanoutView {
        name: c.name.clone(),
        machine_pattern: c.machine_pattern.clone(),
        status: if running { "running" } else { "done" }.into(),
        detail: FanoutDetail {
            command: c.command.clone(),
            workspace: c.workspace.clone(),
            timeout: c.timeout_secs.max(0) as u64,
            result: results
                .iter()
                .map(|r| MachineResult {
                    machine_label: r.machine_label.clone(),
                    client_id: r.client_id.clone(),
                    status: r.status.clone(),
                    exit_code: r.exit_code,
                    msg: r.msg.clone(),
                    output: serde_json::from_str(&r.output).unwrap_or_default(),
                    started_at: format_ms(r.started_at),
                    ended_at: r.ended_at.map(format_ms),
                })
                .collect(),
        },
        created_at: format_ms(c.created_at),
    }
}

/// `owner`'s machines by label: every tunnel client seen (`store::machines`), `online` when
/// connected now (with its in-memory last-seen time and what it runs).
pub async fn machines(db: &Db, tunnels: &Tunnels, owner: &str) -> Result<Vec<MachineView>> {
    let rows = store::machines::list(db, owner).await?;
    let mut online = tunnels.online_anywhere(owner).await;
    let mut out: Vec<MachineView> = Vec::with_capacity(rows.len() + online.len());
    for m in rows {
        let live = online
            .iter()
            .position(|c| c.info.client_id == m.client_id && c.info.label == m.label)
            .map(|i| online.swap_remove(i));
        out.push(match live {
            Some(c) => online_view(&c, m.first_seen),
            None => MachineView {
                machine_label: m.label,
                client_id: m.client_id,
                status: "offline".into(),
                first_seen: format_ms(m.first_seen),
                last_seen: format_ms(m.last_seen),
                address: m.address,
                version: m.version,
                run_as: m.run_as,
                running_tasks: 0,
            },
        });
    }
    // connected but not recorded yet (its first `seen` is on its way)
    for c in online {
        out.push(online_view(&c, c.connected_at));
    }
    out.sort_by(|a, b| (&a.machine_label, &a.client_id).cmp(&(&b.machine_label, &b.client_id)));
    Ok(out)
}

fn online_view(c: &Client, first_seen: i64) -> MachineView {
    MachineView {
        machine_label: c.info.label.clone(),
        client_id: c.info.client_id.clone(),
        status: "online".into(),
        first_seen: format_ms(first_seen.min(c.connected_at)),
        last_seen: format_ms(c.last_seen.load(Ordering::Relaxed)),
        address: c.info.address.clone(),
        version: c.info.version.clone(),
        run_as: c.info.run_as.clone(),
        running_tasks: c.busy() as u64,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proto::FanoutRequestDetail;

    fn req(name: &str, pattern: &str, command: &str, timeout: Option<u64>) -> FanoutRequest {
        FanoutRequest {
            name: name.into(),
            machine_pattern: pattern.into(),
            detail: FanoutRequestDetail {
                command: command.into(),
                workspace: None,
                timeout,
            },
        }
    }

    fn refused(r: &FanoutRequest) -> String {
        match check(r) {
            Err(Error::Validation(m)) => m,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted {r:?}"),
        }
    }

    #[test]
    fn requests_are_checked_with_precise_messages() {
        let ok = req("t", ".*", "uptime", None);
        let c = check(&ok).unwrap();
        assert_eq!((c.timeout, c.workspace.as_str()), (DEFAULT_TIMEOUT, ""));
        assert_eq!(refused(&req(" ", ".*", "x", None)), "name is empty");
        assert!(refused(&req(&"n".repeat(129), ".*", "x", None)).contains("longer than 128"));
        assert!(refused(&req("a\nb", ".*", "x", None)).contains("control characters"));
        assert!(refused(&req("t", "", "x", None)).starts_with("machinePattern is empty"));
        assert_eq!(
            refused(&req("t", "web-(", "x", None)),
            "machinePattern \"web-(\" is not a valid regular expression: unclosed group"
        );
        assert_eq!(
            refused(&req("t", ".*", "  ", None)),
            "detail.command is empty"
        );
        assert!(refused(&req("t", ".*", "a\0b", None)).contains("NUL"));
        assert!(refused(&req("t", ".*", &"x".repeat(MAX_COMMAND + 1), None))
            .starts_with("detail.command: longer than"));
        assert!(refused(&req("t", ".*", "x", Some(0))).starts_with("detail.timeout: 0 is not"));
        assert!(refused(&req("t", ".*", "x", Some(MAX_TIMEOUT + 1))).contains("between 1 and"));
        // `$(…)` is the user's own command on the user's own machines: accepted as is
        assert!(check(&req("t", ".*", "echo $(id -u); rm -rf ./tmp", None)).is_ok());
    }

    #[test]
    fn patterns_are_searched_not_anchored() {
        let c = check(&req("t", "web", "x", None)).unwrap();
        assert!(c.pattern.is_match("old-web-1"));
        let c = check(&req("t", "^web-\\d+$", "x", None)).unwrap();
        assert!(c.pattern.is_match("web-12") && !c.pattern.is_match("web-1a"));
    }

    /// What a fake machine does with an `exec`.
    #[derive(Clone, Copy)]
    enum Acts {
        /// Succeeds and prints the command.
        Echo,
        /// Fails with exit code 3.
        Fail,
        /// Never answers.
        Hang,
        /// Answers garbage.
        Garbage,
    }

    /// Connects a fake eventops-client of kakj's fleet that does `acts` with an `exec`.
    fn fake_machine(tunnels: &Tunnels, label: &str, acts: Acts) -> Arc<Client> {
        let answer: crate::tunnel::fake::Answer = Arc::new(move |req| {
            Box::pin(async move {
                let Request::Exec { command, .. } = req else {
                    return Some(Reply::error("not an exec"));
                };
                match acts {
                    Acts::Echo => Some(Reply {
                        code: Some(0),
                        msg: Some(String::new()),
                        output: vec![command, "done".into()],
                        ..Reply::status("success")
                    }),
                    Acts::Fail => Some(Reply {
                        code: Some(3),
                        msg: Some("exit code 3".into()),
                        ..Reply::status("failed")
                    }),
                    Acts::Garbage => Some(Reply::status("exploded")),
                    Acts::Hang => None,
                }
            })
        });
        crate::tunnel::fake::machine(tunnels, ("kakj", "fleet", label), answer)
    }

    async fn wait_until(
        db: &Db,
        name: &str,
        what: &str,
        done: impl Fn(&FanoutView) -> bool,
    ) -> FanoutView {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v = list(db, "kakj", Some(name), None).await.unwrap();
            assert_eq!(v.len(), 1, "{v:?}");
            if done(&v[0]) {
                return v[0].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fan_out_records_each_machine_as_it_answers() {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", tmp.path().join("t.db").display());
        let db = Db::connect(&url, 1).await.unwrap();
        let tunnels = Arc::new(Tunnels::new(Duration::from_secs(1)));
        let web1 = fake_machine(&tunnels, "web-1", Acts::Echo);
        let web2 = fake_machine(&tunnels, "web-2", Acts::Hang);
        let _web3 = fake_machine(&tunnels, "web-3", Acts::Fail);
        let _db1 = fake_machine(&tunnels, "db-1", Acts::Echo);
        let _odd = fake_machine(&tunnels, "odd-web", Acts::Garbage);
        for c in [&web1, &web2] {
            store::machines::seen(&db, &c.info, c.connected_at)
                .await
                .unwrap();
        }

        let v = create(&db, &tunnels, "kakj", &req("t1", "web", "uptime", Some(5)))
            .await
            .unwrap();
        assert_eq!(v.status, "running");
        let labels: Vec<&str> = v
            .detail
            .result
            .iter()
            .map(|r| r.machine_label.as_str())
            .collect();
        assert_eq!(labels, ["odd-web", "web-1", "web-2", "web-3"]);
        assert!(v.detail.result.iter().all(|r| r.status == "running"));

        let v = wait_until(&db, "t1", "web-1, web-3 and odd-web", |v| {
            v.detail
                .result
                .iter()
                .filter(|r| r.status != "running")
                .count()
                == 3
        })
        .await;
        let by = |l: &str| {
            v.detail
                .result
                .iter()
                .find(|r| r.machine_label == l)
                .unwrap()
                .clone()
        };
        assert_eq!(by("web-1").status, "success");
        assert_eq!(by("web-1").exit_code, Some(0));
        assert_eq!(by("web-1").output, ["uptime", "done"]);
        assert!(by("web-1").ended_at.is_some());
        assert_eq!(
            (by("web-3").status.as_str(), by("web-3").exit_code),
            ("failed", Some(3))
        );
        assert_eq!(by("odd-web").status, "error");
        assert!(
            by("odd-web").msg.contains("unknown status \"exploded\""),
            "{v:?}"
        );
        assert_eq!(by("web-2").status, "running");
        assert_eq!(v.status, "running");

        // the hanging machine counts the command among its running tasks
        let ms = machines(&db, &tunnels, "kakj").await.unwrap();
        let m2 = ms.iter().find(|m| m.machine_label == "web-2").unwrap();
        assert_eq!((m2.status.as_str(), m2.running_tasks), ("online", 1));

        // it goes offline mid-command
        tunnels.disconnect(&web2);
        let v = wait_until(&db, "t1", "web-2 offline", |v| v.status == "done").await;
        let r2 = v
            .detail
            .result
            .iter()
            .find(|r| r.machine_label == "web-2")
            .unwrap();
        assert_eq!(r2.status, "error");
        assert_eq!(r2.msg, "tunnel client fleet (web-2) went offline");

        // the machine list: recorded and online, recorded and offline, online not yet recorded
        let ms = machines(&db, &tunnels, "kakj").await.unwrap();
        let st: Vec<(&str, &str, u64)> = ms
            .iter()
            .map(|m| (m.machine_label.as_str(), m.status.as_str(), m.running_tasks))
            .collect();
        assert_eq!(
            st,
            [
                ("db-1", "online", 0),
                ("odd-web", "online", 0),
                ("web-1", "online", 0),
                ("web-2", "offline", 0),
                ("web-3", "online", 0)
            ]
        );
        assert_eq!(ms[2].run_as, "ops");
        assert!(machines(&db, &tunnels, "other").await.unwrap().is_empty());

        // names are unique per user; another user may reuse one
        let e = create(&db, &tunnels, "kakj", &req("t1", "web", "x", None)).await;
        assert!(
            matches!(e, Err(Error::Conflict(ref m)) if m == "task \"t1\" exists"),
            "{e:?}"
        );
        let e = create(&db, &tunnels, "kakj", &req("t2", "^nothing$", "x", None)).await;
        assert!(
            matches!(e, Err(Error::Validation(ref m))
                if m == "no online machine of yours matches machinePattern \"^nothing$\""),
            "{e:?}"
        );
        // another user's machines are not mine
        let e = create(&db, &tunnels, "someone", &req("t1", ".*", "x", None)).await;
        assert!(matches!(e, Err(Error::Validation(_))), "{e:?}");
        assert!(list(&db, "kakj", Some("t2"), None)
            .await
            .unwrap()
            .is_empty());
        assert!(list(&db, "someone", None, None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn abandoned_results_end_as_errors_when_read() {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", tmp.path().join("t.db").display());
        let db = Db::connect(&url, 1).await.unwrap();
        let row = Command {
            id: store::new_id(),
            owner: "kakj".into(),
            name: "old".into(),
            machine_pattern: ".*".into(),
            command: "sleep 1".into(),
            workspace: String::new(),
            timeout_secs: 1,
            created_at: 1,
        };
        let res = CommandResult {
            id: store::new_id(),
            command_id: row.id,
            machine_label: "m".into(),
            client_id: "c".into(),
            status: q::RUNNING.into(),
            exit_code: None,
            msg: String::new(),
            output: "[]".into(),
            started_at: 1,
            deadline_at: 2,
            ended_at: None,
        };
        q::insert(&db, &row, &[res]).await.unwrap();
        let v = list(&db, "kakj", None, None).await.unwrap();
        assert_eq!(v[0].status, "done");
        assert_eq!(v[0].detail.result[0].status, "error");
        assert_eq!(v[0].detail.result[0].msg, ABANDONED_MSG);
    }
}
