//! `register`, `login`, `logout [--all]` and `user list|use|me|passwd`: accounts on the server
//! and the users stored in the config file.

use anyhow::{Context, Result};
use serde::Serialize;

use super::Ctx;
use crate::args::{LoginArgs, LogoutArgs, PasswdArgs, RegisterArgs, UserCmd};
use crate::client::{typed, Client};
use crate::config::StoredUser;
use crate::output::{self, key_values, or_dash, Table};

pub fn register(ctx: &Ctx, a: RegisterArgs) -> Result<()> {
    let server = ctx.server_for_login()?;
    let client = Client::new(&server, None);
    let body = proto::RegisterRequest {
        name: a.username,
        password: a.password,
        email: a.email,
    };
    let data = client.post_json("/api/user/register", &body)?;
    if output::print_structured(ctx.format, &data)? {
        return Ok(());
    }
    let name = data["name"].as_str().unwrap_or(&body.name);
    println!("user \"{name}\" registered on {server}; log in with `eoctl login -s={server} -u={name} -p=…`");
    Ok(())
}

pub fn login(ctx: &Ctx, a: LoginArgs) -> Result<()> {
    let server = ctx.server_for_login()?;
    let client = Client::new(&server, None);
    let body = proto::LoginRequest {
        name: a.username.clone(),
        password: a.password,
    };
    let data = client.post_json("/api/user/login", &body)?;
    let answer: proto::LoginResponse = typed(data, "login answer")?;
    let mut config = ctx.load_config()?;
    config.upsert_and_use(StoredUser {
        name: a.username.clone(),
        server: server.clone(),
        token: answer.token,
        expires_at: Some(answer.expires_at),
    });
    config
        .save(&ctx.config_path)
        .context("logged in, but the token could not be stored")?;
    let shown = UserRow {
        name: a.username.clone(),
        server: server.clone(),
        current: true,
        expires_at: Some(answer.expires_at),
    };
    if output::print_structured(ctx.format, &shown)? {
        return Ok(());
    }
    println!(
        "logged in as \"{}\" on {server} (token stored in {})",
        a.username,
        ctx.config_path.display()
    );
    Ok(())
}

/// Forgets the current user's token (removes its entry); with `--all`, first has the server
/// revoke every token of that user.
pub fn logout(ctx: &Ctx, a: LogoutArgs) -> Result<()> {
    let mut config = ctx.load_config()?;
    let Some(name) = config.current_user().map(|u| u.name.clone()) else {
        anyhow::bail!(
            "not logged in (no current user in {})",
            ctx.config_path.display()
        );
    };
    if a.all {
        ctx.client()?.post_empty("/api/user/logout-all")?;
    }
    config.users.retain(|u| u.name != name);
    config.current = String::new();
    config
        .save(&ctx.config_path)
        .context("the token could not be removed from the config file")?;
    if a.all {
        println!("every login token of \"{name}\" is revoked; logged out here");
    } else {
        println!("logged out \"{name}\" here (the token is forgotten; `logout --all` also revokes it on the server)");
    }
    Ok(())
}

/// Changes the current user's password; the server revokes every older token and answers a
/// new one, which replaces the stored one.
fn passwd(ctx: &Ctx, a: PasswdArgs) -> Result<()> {
    let client = ctx.client()?;
    let body = proto::PasswordChange {
        old_password: a.old_password,
        new_password: a.new_password,
    };
    let data = client.post_json("/api/user/password", &body)?;
    let answer: proto::LoginResponse = typed(data, "password answer")?;
    let mut config = ctx.load_config()?;
    let name = config.current.clone();
    if let Some(u) = config.users.iter_mut().find(|u| u.name == name) {
        u.token = answer.token;
        u.expires_at = Some(answer.expires_at);
    }
    config
        .save(&ctx.config_path)
        .context("password changed, but the new token could not be stored; log in again")?;
    println!("password of \"{name}\" changed; every older token is revoked, the new one is stored");
    Ok(())
}

/// A stored user as `user list` shows it: never the token.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserRow {
    name: String,
    server: String,
    current: bool,
    expires_at: Option<i64>,
}

pub fn run(ctx: &Ctx, cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::List => list(ctx),
        UserCmd::Passwd(a) => passwd(ctx, a),
        UserCmd::Use { name } => {
            let mut config = ctx.load_config()?;
            config.use_user(&name)?;
            config.save(&ctx.config_path)?;
            let server = config
                .current_user()
                .map(|u| u.server.clone())
                .unwrap_or_default();
            println!("now using \"{name}\" on {server}");
            Ok(())
        }
        UserCmd::Me => {
            let data = ctx.client()?.get("/api/user/me")?;
            if output::print_structured(ctx.format, &data)? {
                return Ok(());
            }
            let me: proto::UserView = typed(data, "user")?;
            print!(
                "{}",
                key_values(&[
                    ("Name", me.name),
                    ("Email", or_dash(&me.email)),
                    ("Created", me.created_at),
                ])
            );
            Ok(())
        }
    }
}

fn list(ctx: &Ctx) -> Result<()> {
    let config = ctx.load_config()?;
    let rows: Vec<UserRow> = config
        .users
        .iter()
        .map(|u| UserRow {
            name: u.name.clone(),
            server: u.server.clone(),
            current: u.name == config.current,
            expires_at: u.expires_at,
        })
        .collect();
    if output::print_structured(ctx.format, &rows)? {
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("no stored users; run `eoctl login -s URL -u NAME -p PASSWORD`");
        return Ok(());
    }
    let now = now_secs();
    let mut table = Table::new(&["CURRENT", "NAME", "SERVER", "TOKEN EXPIRES"]);
    for r in rows {
        let expires = match r.expires_at {
            Some(t) if t <= now => format!("{} (expired)", format_unix(t)),
            Some(t) => format_unix(t),
            None => "-".to_string(),
        };
        table.row(vec![
            if r.current { "*".into() } else { String::new() },
            r.name,
            r.server,
            expires,
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM UTC` for Unix seconds (civil-from-days, proleptic Gregorian).
fn format_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::format_unix;

    #[test]
    fn unix_times_are_formatted() {
        assert_eq!(format_unix(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_unix(1_661_422_308), "2022-08-25 10:11 UTC");
        assert_eq!(format_unix(951_782_400), "2000-02-29 00:00 UTC");
    }
}
