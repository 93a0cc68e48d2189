//! A view that is redrawn while something runs (`runtime watch`, `event send --wait`), and the
//! polling it shows.
//!
//! On a terminal each frame replaces the previous one (the screen is cleared, as `watch` and
//! `argo watch` do). Into a pipe or a file a frame is written only when it differs from the
//! last one, separated by a blank line, so a log of the output shows every change once.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::Value;

use crate::client::{ApiError, Client};

/// How often the server is asked.
pub const POLL: Duration = Duration::from_secs(1);

/// How long the server may stay unreachable (or answer 503) before a poll gives up.
const UNREACHABLE_FOR: Duration = Duration::from_secs(60);

pub struct Live {
    tty: bool,
    last: Option<String>,
}

impl Live {
    pub fn new() -> Self {
        Self {
            tty: io::stdout().is_terminal(),
            last: None,
        }
    }

    /// Shows `frame` unless it is the one on screen.
    pub fn show(&mut self, frame: &str) -> io::Result<()> {
        if self.last.as_deref() == Some(frame) {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        if self.tty {
            // home, clear the screen
            out.write_all(b"\x1b[H\x1b[2J")?;
        } else if self.last.is_some() {
            out.write_all(b"\n")?;
        }
        out.write_all(frame.as_bytes())?;
        out.flush()?;
        self.last = Some(frame.to_string());
        Ok(())
    }
}

/// `GET path`, riding out a server that is briefly away: transport errors and 503s are
/// retried for up to a minute (said once on standard error); any other error ends the poll.
pub fn get(client: &Client, path: &str) -> Result<Value> {
    let mut away_since: Option<Instant> = None;
    loop {
        match client.get(path) {
            Ok(v) => {
                if away_since.is_some() {
                    eprintln!("the server answers again");
                }
                return Ok(v);
            }
            Err(e) => {
                let retry = match e.downcast_ref::<ApiError>() {
                    Some(api) => api.status == 503,
                    None => true,
                };
                if !retry {
                    return Err(e);
                }
                let since = *away_since.get_or_insert_with(|| {
                    eprintln!("{e:#}; retrying for up to {}s", UNREACHABLE_FOR.as_secs());
                    Instant::now()
                });
                if since.elapsed() > UNREACHABLE_FOR {
                    return Err(anyhow!(
                        "{e:#} (gave up after {}s)",
                        UNREACHABLE_FOR.as_secs()
                    ));
                }
                std::thread::sleep(POLL);
            }
        }
    }
}
