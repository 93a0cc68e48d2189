//! A task's log as server-sent events with byte offsets.
//!
//! Every data event carries `id: OFFSET`, the byte offset in the log just after its text, so
//! the browser's `EventSource` resumes after a reconnect by sending it back as
//! `Last-Event-ID`; the stream then skips that many bytes of the actuator's follow stream
//! (which starts at the beginning of the log) before sending anything. The text is a JSON
//! string (a log may hold `\r` and any byte), cut only at UTF-8 boundaries.
//!
//! The browser is never sent a huge log whole: at most [`RATE`] bytes a second go out (after a
//! first [`BURST`]), and while the log grows faster than that only its last [`WINDOW`] bytes
//! are kept; what is dropped is announced by a `skip` event (`{"from":A,"to":B}`) so the page
//! can say so and link the full download. Memory stays at the window plus one chunk, however
//! big the log is.
//!
//! Events: `message` (text), `skip`, `waiting` (the task has not started on an actuator yet;
//! the browser retries after `retry`), `fail` (the log could not be read), `end` (the task
//! ended and all its log was sent).

use actix_web::web::Bytes;
use engine::actuator::LogStream;
use std::time::{Duration, Instant};

/// Bytes kept while the log outruns the page.
pub const WINDOW: usize = 256 * 1024;
/// Bytes a second sent once the burst is spent.
pub const RATE: f64 = 1024.0 * 1024.0;
/// Bytes that may go out at once.
pub const BURST: f64 = 512.0 * 1024.0;
/// How long the browser waits before reconnecting, in ms.
pub const RETRY_MS: u64 = 1000;

/// An SSE event.
pub fn event(kind: Option<&str>, id: Option<u64>, data: &str) -> String {
    let mut s = String::new();
    if let Some(k) = kind {
        s.push_str("event: ");
        s.push_str(k);
        s.push('\n');
    }
    if let Some(i) = id {
        s.push_str(&format!("id: {i}\n"));
    }
    s.push_str("data: ");
    s.push_str(data);
    s.push_str("\n\n");
    s
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Where a (re)connection starts: `Last-Event-ID`, else `?offset=`, else 0.
pub fn start_offset(last_event_id: Option<&str>, query: Option<u64>) -> u64 {
    last_event_id
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(query)
        .unwrap_or(0)
}

struct Follow {
    rx: LogStream,
    /// Bytes still to drop before anything is sent (the resume offset).
    to_skip: u64,
    /// Offset of the first byte of `pending`.
    offset: u64,
    pending: Vec<u8>,
    /// Bytes dropped by the window since the last event, as `(from, to)`.
    skipped: Option<(u64, u64)>,
    budget: f64,
    refilled: Instant,
    closed: bool,
    failed: Option<String>,
    started: bool,
}

impl Follow {
    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.budget = (self.budget + dt * RATE).min(BURST);
    }

    fn take(&mut self, chunk: Vec<u8>) {
        let mut chunk = chunk.as_slice();
        if self.to_skip > 0 {
            let n = usize::try_from(self.to_skip)
                .unwrap_or(usize::MAX)
                .min(chunk.len());
            chunk = chunk.get(n..).unwrap_or_default();
            self.to_skip -= n as u64;
            self.offset += n as u64;
        }
        self.pending.extend_from_slice(chunk);
        if self.pending.len() > WINDOW {
            // keep the last WINDOW bytes, starting on a line when one begins soon after
            let mut cut = self.pending.len() - WINDOW;
            if let Some(nl) = self
                .pending
                .get(cut..)
                .and_then(|rest| rest.iter().take(4096).position(|&b| b == b'\n'))
            {
                cut += nl + 1;
            }
            self.pending.drain(..cut);
            let from = self.skipped.map_or(self.offset, |(f, _)| f);
            self.offset += cut as u64;
            self.skipped = Some((from, self.offset));
        }
    }

    /// What can be sent now, as SSE text (empty when nothing may go yet).
    fn emit(&mut self) -> String {
        let mut out = String::new();
        if self.pending.is_empty() {
            return out;
        }
        self.refill();
        let allowed = if self.budget >= self.pending.len() as f64 {
            self.pending.len()
        } else if self.budget >= 4096.0 {
            // the budget is a float of whole bytes here; truncation is what is meant
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let b = self.budget as usize;
            b
        } else {
            0
        };
        let mut n = allowed.min(self.pending.len());
        if n > 0 {
            if let Err(e) = std::str::from_utf8(self.pending.get(..n).unwrap_or_default()) {
                // do not cut a character in two while more may come
                if e.error_len().is_none() && !self.closed {
                    n = e.valid_up_to();
                }
            }
        }
        if n == 0 {
            return out;
        }
        // what the window dropped is announced with the text that follows it
        if let Some((from, to)) = self.skipped.take() {
            out.push_str(&event(
                Some("skip"),
                Some(to),
                &format!("{{\"from\":{from},\"to\":{to}}}"),
            ));
        }
        let text = String::from_utf8_lossy(self.pending.get(..n).unwrap_or_default()).into_owned();
        self.pending.drain(..n);
        self.offset += n as u64;
        self.budget -= n as f64;
        out.push_str(&event(None, Some(self.offset), &json_str(&text)));
        out
    }
}

/// The SSE body for a follow stream, starting at byte `start`. `ended` is asked, when the
/// follow stream closes, whether the task has ended (then `end` is sent; otherwise the stream
/// just closes and the browser reconnects from the last offset).
pub fn stream<F, Fut>(
    rx: LogStream,
    start: u64,
    ended: F,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>>
where
    F: Fn() -> Fut + 'static,
    Fut: std::future::Future<Output = bool> + 'static,
{
    let st = Follow {
        rx,
        to_skip: start,
        offset: 0,
        pending: Vec::new(),
        skipped: None,
        budget: BURST,
        refilled: Instant::now(),
        closed: false,
        failed: None,
        started: false,
    };
    let ended = std::rc::Rc::new(ended);
    futures_util::stream::unfold(Some(st), move |st| {
        let ended = ended.clone();
        async move {
            let mut st = st?;
            if !st.started {
                st.started = true;
                let hello = format!("retry: {RETRY_MS}\n: log of the task\n\n");
                return Some((Ok(Bytes::from(hello)), Some(st)));
            }
            loop {
                // take all the actuator has sent so far before sending anything: the window
                // bounds memory, and the reading must keep up with a log that grows fast
                // however slowly the page is sent (the actuator's stream fails when its reader
                // falls behind by more than its buffer)
                // (at most a mailbox's worth per pass, so the task yields)
                for _ in 0..64 {
                    if st.closed {
                        break;
                    }
                    match st.rx.try_recv() {
                        Ok(Ok(b)) => st.take(b),
                        Ok(Err(e)) => {
                            st.failed = Some(e);
                            st.closed = true;
                        }
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                            st.closed = true
                        }
                    }
                }
                let out = st.emit();
                if !out.is_empty() {
                    return Some((Ok(Bytes::from(out)), Some(st)));
                }
                if st.closed && st.pending.is_empty() {
                    let last = if let Some(why) = st.failed.take() {
                        event(Some("fail"), None, &json_str(&why))
                    } else if ended().await {
                        event(Some("end"), Some(st.offset + st.to_skip), "{}")
                    } else {
                        String::new()
                    };
                    if last.is_empty() {
                        return None;
                    }
                    return Some((Ok(Bytes::from(last)), None));
                }
                if st.closed {
                    // only a partial character or a spent budget left: wait for the budget
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let wait = !st.pending.is_empty();
                tokio::select! {
                    chunk = st.rx.recv() => match chunk {
                        Some(Ok(b)) => st.take(b),
                        Some(Err(e)) => {
                            st.failed = Some(e);
                            st.closed = true;
                        }
                        None => st.closed = true,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(50)), if wait => {}
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn collect(chunks: Vec<Vec<u8>>, start: u64) -> String {
        let (tx, rx) = tokio::sync::mpsc::channel(chunks.len() + 1);
        for c in chunks {
            tx.send(Ok(c)).await.unwrap_or_default();
        }
        drop(tx);
        let s = stream(rx, start, || async { true });
        let parts: Vec<_> = s.collect().await;
        parts
            .into_iter()
            .filter_map(|p| p.ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    fn texts(sse: &str) -> (String, Vec<u64>) {
        let mut text = String::new();
        let mut ids = Vec::new();
        for ev in sse.split("\n\n") {
            if ev.contains("event:") {
                continue;
            }
            for line in ev.lines() {
                if let Some(d) = line.strip_prefix("data: ") {
                    text.push_str(&serde_json::from_str::<String>(d).unwrap_or_default());
                }
                if let Some(i) = line.strip_prefix("id: ") {
                    ids.push(i.parse().unwrap_or(0));
                }
            }
        }
        (text, ids)
    }

    #[tokio::test]
    async fn offsets_and_resume() {
        let log = "one\ntwo\r\nthré\n".as_bytes().to_vec();
        let (a, b) = log.split_at(12); // inside the two-byte é
        let all = collect(vec![a.to_vec(), b.to_vec()], 0).await;
        let (text, ids) = texts(&all);
        assert_eq!(text, "one\ntwo\r\nthré\n");
        assert_eq!(ids.last().copied(), Some(log.len() as u64));
        assert!(all.contains("event: end"), "{all}");
        // resumed from offset 4: only what follows
        let resumed = collect(vec![a.to_vec(), b.to_vec()], 4).await;
        assert_eq!(texts(&resumed).0, "two\r\nthré\n");
    }

    #[tokio::test]
    async fn a_huge_backlog_is_cut_to_the_window() {
        let line = "x".repeat(1023) + "\n";
        let chunk = line.repeat(64).into_bytes(); // 64 KiB
        let chunks: Vec<Vec<u8>> = (0..160).map(|_| chunk.clone()).collect(); // 10 MiB
        let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let all = collect(chunks, 0).await;
        assert!(all.len() < 2 * 1024 * 1024, "sent {} bytes", all.len());
        assert!(all.contains("event: skip"), "no skip event");
        let (_, ids) = texts(&all);
        assert_eq!(ids.last().copied(), Some(total));
    }

    #[test]
    fn start_from_last_event_id() {
        assert_eq!(start_offset(Some("42"), Some(7)), 42);
        assert_eq!(start_offset(Some("x"), Some(7)), 7);
        assert_eq!(start_offset(None, None), 0);
    }
}
