//! Queries on fan-out `commands` and their `command_results` (one row per machine).
//! A result leaves `running` once, by a conditional update, so a late answer and the
//! give-up of a stale result cannot both win.

use super::models::{Command, CommandResult};
use super::schema::{command_results as r, commands as cmd};
use super::{db_run, Db, Result, StoreError};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

pub const RUNNING: &str = "running";

/// Whether `owner` has a command called `name`.
pub async fn exists(db: &Db, owner: &str, name: &str) -> Result<bool> {
    db_run!(db, |c| {
        let n: i64 = cmd::table
            .filter(cmd::owner.eq(owner))
            .filter(cmd::name.eq(name))
            .count()
            .get_result(c)
            .await?;
        Ok::<_, StoreError>(n > 0)
    })
}

/// Stores a command with its (running) results in one transaction. A taken name is a unique
/// violation (see `StoreError::is_unique_violation`).
pub async fn insert(db: &Db, command: &Command, results: &[CommandResult]) -> Result<()> {
    db_run!(db, |c| {
        c.transaction::<_, StoreError, _>(async |c| {
            diesel::insert_into(cmd::table)
                .values(command)
                .execute(c)
                .await?;
            for row in results {
                diesel::insert_into(r::table).values(row).execute(c).await?;
            }
            Ok(())
        })
        .await
    })
}

/// How a result ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: String,
    pub exit_code: Option<i32>,
    pub msg: String,
    /// JSON array of lines.
    pub output: String,
    pub ended_at: i64,
}

/// Records the end of a result if it is still running; true when it was.
pub async fn finish(db: &Db, result_id: i64, o: &Outcome) -> Result<bool> {
    db_run!(db, |c| {
        let n = diesel::update(
            r::table
                .filter(r::id.eq(result_id))
                .filter(r::status.eq(RUNNING)),
        )
        .set((
            r::status.eq(&o.status),
            r::exit_code.eq(o.exit_code),
            r::msg.eq(&o.msg),
            r::output.eq(&o.output),
            r::ended_at.eq(Some(o.ended_at)),
        ))
        .execute(c)
        .await?;
        Ok::<_, StoreError>(n == 1)
    })
}

/// Ends, as `error` with `msg`, every result still running past its deadline (the server that
/// was waiting for it stopped). Returns how many.
pub async fn expire(db: &Db, now_ms: i64, msg: &str) -> Result<usize> {
    db_run!(db, |c| {
        Ok::<_, StoreError>(
            diesel::update(
                r::table
                    .filter(r::status.eq(RUNNING))
                    .filter(r::deadline_at.lt(now_ms)),
            )
            .set((
                r::status.eq("error"),
                r::msg.eq(msg),
                r::ended_at.eq(Some(now_ms)),
            ))
            .execute(c)
            .await?,
        )
    })
}

/// `owner`'s commands whose name starts with `prefix` (all with `None`), newest first, at
/// most `top`, each with its results by machine label.
pub async fn list(
    db: &Db,
    owner: &str,
    prefix: Option<&str>,
    top: i64,
) -> Result<Vec<(Command, Vec<CommandResult>)>> {
    let (commands, results) = db_run!(db, |c| {
        let mut q = cmd::table
            .filter(cmd::owner.eq(owner))
            .select(Command::as_select())
            .into_boxed();
        if let Some(p) = prefix.filter(|p| !p.is_empty()) {
            q = q.filter(cmd::name.like(like_prefix(p)).escape('\\'));
        }
        let commands: Vec<Command> = q.order(cmd::id.desc()).limit(top).load(c).await?;
        let ids: Vec<i64> = commands.iter().map(|x| x.id).collect();
        let results: Vec<CommandResult> = if ids.is_empty() {
            Vec::new()
        } else {
            r::table
                .filter(r::command_id.eq_any(&ids))
                .order((r::machine_label.asc(), r::client_id.asc()))
                .select(CommandResult::as_select())
                .load(c)
                .await?
        };
        Ok::<_, StoreError>((commands, results))
    })?;
    // SQLite's LIKE ignores ASCII case: keep the prefix exact on every backend
    let commands = commands
        .into_iter()
        .filter(|x| prefix.is_none_or(|p| x.name.starts_with(p)));
    let mut out: Vec<(Command, Vec<CommandResult>)> = commands.map(|x| (x, Vec::new())).collect();
    for row in results {
        if let Some((_, list)) = out.iter_mut().find(|(x, _)| x.id == row.command_id) {
            list.push(row);
        }
    }
    Ok(out)
}

/// `p%` with LIKE's wildcards in `p` escaped (escape character `\`).
fn like_prefix(p: &str) -> String {
    let mut s = String::with_capacity(p.len() + 1);
    for ch in p.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(ch);
    }
    s.push('%');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_prefixes_escape_wildcards() {
        assert_eq!(super::like_prefix("exec-"), "exec-%");
        assert_eq!(super::like_prefix("a%b_c\\"), "a\\%b\\_c\\\\%");
    }
}
