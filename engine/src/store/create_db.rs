//! A MySQL/MariaDB or PostgreSQL database that the URL names but that does not exist yet
//! (a first start, as the seed's users do it: `mysql: {db: eventops}` on a fresh server) is
//! created before the migrations run, when the account may; otherwise the error says how to
//! create it, instead of the server's bare `Unknown database 'x'`.

use super::{Backend, Result, StoreError};
use diesel::connection::SimpleConnection;
use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};

/// What a connection error says about the URL's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Absent {
    /// It does not exist (MySQL error 1049, PostgreSQL 3D000; the drivers give only the text).
    Surely,
    /// MySQL's "Access denied for user … to database …" (1044): an account without rights on
    /// a database is not told whether it exists.
    Maybe,
}

pub(super) fn absent_database(backend: Backend, msg: &str) -> Option<Absent> {
    let surely = match backend {
        Backend::Mysql => msg.contains("Unknown database"),
        Backend::Postgres => msg.contains("database \"") && msg.contains("does not exist"),
        Backend::Sqlite => false,
    };
    let maybe = backend == Backend::Mysql
        && msg.contains("Access denied for user")
        && msg.contains("to database");
    match (surely, maybe) {
        (true, _) => Some(Absent::Surely),
        (false, true) => Some(Absent::Maybe),
        _ => None,
    }
}

/// The parts of a server URL this needs: the database name (percent-decoded), the user, and
/// the URL of the same server with another database (or none, for MySQL).
struct Target {
    db: String,
    user: String,
    url: url::Url,
}

fn target(url: &str) -> Result<Target> {
    let bad = |why: &str| StoreError::Url(format!("{}: {why}", super::redact_url(url)));
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let raw = parsed.path().trim_start_matches('/');
    let db = percent_decode(raw).ok_or_else(|| bad("the database name is not UTF-8"))?;
    if db.is_empty() {
        return Err(bad("no database name after the host"));
    }
    let user = percent_decode(parsed.username()).unwrap_or_default();
    Ok(Target {
        db,
        user,
        url: parsed,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// `name` as a quoted identifier: MySQL's backticks or SQL's double quotes, the quote
/// character doubled inside.
fn quoted(backend: Backend, name: &str) -> String {
    let q = if backend == Backend::Mysql { '`' } else { '"' };
    let inner = name.replace(q, &format!("{q}{q}"));
    format!("{q}{inner}{q}")
}

/// The statement that creates the database (what an administrator runs, too).
fn create_statement(backend: Backend, t: &Target) -> String {
    match backend {
        Backend::Mysql => format!(
            "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            quoted(backend, &t.db)
        ),
        _ => {
            let mut sql = format!("CREATE DATABASE {}", quoted(backend, &t.db));
            if !t.user.is_empty() {
                sql.push_str(&format!(" OWNER {}", quoted(backend, &t.user)));
            }
            sql
        }
    }
}

/// What to tell an operator whose account may not create the database: the statements, to
/// run in the server's client as an administrator (not a shell line: the quoting differs).
fn how_to_create(backend: Backend, t: &Target) -> String {
    let host = t.url.host_str().unwrap_or("the server");
    match backend {
        Backend::Mysql => {
            let mut sql = create_statement(backend, t);
            if !t.user.is_empty() {
                let user = t.user.replace('\'', "''");
                sql.push_str(&format!(
                    "; GRANT ALL ON {}.* TO '{user}'@'%'",
                    quoted(backend, &t.db)
                ));
            }
            format!("create it as an administrator (mysql -h {host} -u root -p): {sql};")
        }
        _ => format!(
            "create it as an administrator (psql -h {host} -U postgres): {};",
            create_statement(backend, t)
        ),
    }
}

/// Creates the database the URL names, connecting to the same server without it (MySQL) or
/// to its `postgres` (else `template1`) database. Refused or impossible: an error that names
/// the database, says why, and says how to create it.
pub(super) fn create_blocking(backend: Backend, url: &str, absent: Absent) -> Result<String> {
    let t = target(url)?;
    let sql = create_statement(backend, &t);
    let host = t.url.host_str().unwrap_or("the server");
    let state = match absent {
        Absent::Surely => "does not exist",
        Absent::Maybe => "does not exist or is not open to that user",
    };
    let fail = |why: String| {
        StoreError::Migration(format!(
            "database {:?} on {host} {state}, and user {:?} could not create it ({why}); {}",
            t.db,
            t.user,
            how_to_create(backend, &t)
        ))
    };
    match backend {
        Backend::Mysql => {
            let mut admin = t.url.clone();
            admin.set_path("");
            let mut c = AsyncConnectionWrapper::<AsyncMysqlConnection>::establish(admin.as_str())
                .map_err(|e| fail(e.to_string()))?;
            c.batch_execute(&sql).map_err(|e| fail(e.to_string()))?;
        }
        Backend::Postgres => {
            let mut last = String::new();
            let mut done = false;
            for maintenance in ["postgres", "template1"] {
                let mut admin = t.url.clone();
                admin.set_path(&format!("/{maintenance}"));
                match AsyncConnectionWrapper::<AsyncPgConnection>::establish(admin.as_str()) {
                    Ok(mut c) => {
                        c.batch_execute(&sql).map_err(|e| fail(e.to_string()))?;
                        done = true;
                        break;
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if !done {
                return Err(fail(last));
            }
        }
        Backend::Sqlite => {}
    }
    Ok(t.db)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_databases_are_recognised() {
        use Absent::*;
        let absent = absent_database;
        assert_eq!(
            absent(Backend::Mysql, "Unknown database 'eventops'"),
            Some(Surely)
        );
        assert_eq!(
            absent(Backend::Postgres, "database \"eventops\" does not exist"),
            Some(Surely)
        );
        assert_eq!(
            absent(
                Backend::Mysql,
                "Access denied for user 'u'@'%' to database 'eventops'"
            ),
            Some(Maybe)
        );
        assert_eq!(
            absent(Backend::Postgres, "relation \"x\" does not exist"),
            None
        );
        assert_eq!(
            absent(
                Backend::Mysql,
                "Access denied for user 'u'@'h' (using password: YES)"
            ),
            None
        );
    }

    #[test]
    fn statements_quote_the_name() {
        let t = target("mysql://root:pw@db.example:3306/event%20ops").unwrap();
        assert_eq!(t.db, "event ops");
        assert_eq!(
            create_statement(Backend::Mysql, &t),
            "CREATE DATABASE IF NOT EXISTS `event ops` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        );
        let how = how_to_create(Backend::Mysql, &t);
        assert_eq!(how, "create it as an administrator (mysql -h db.example -u root -p): CREATE DATABASE IF NOT EXISTS `event ops` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; GRANT ALL ON `event ops`.* TO 'root'@'%';");
        assert!(!how.contains("pw"), "{how}");
        let t = target("postgres://eo:pw@h/we\"ird").unwrap();
        assert_eq!(
            create_statement(Backend::Postgres, &t),
            "CREATE DATABASE \"we\"\"ird\" OWNER \"eo\""
        );
        assert!(target("mysql://h:1/").is_err());
        assert!(target("mysql://h:1").is_err());
    }
}
