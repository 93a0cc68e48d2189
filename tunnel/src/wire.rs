//! What travels on a stream: length-prefixed JSON frames (4 bytes big-endian length, then the
//! JSON). A stream opens with one [`Request`]; one [`Reply`] answers it; `dial` and `logs`
//! then carry raw bytes until either side closes.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame either side accepts (a `run.sh` carries the event's values).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// What the server asks of the client on a new stream. Task directories (`dir`) are relative
/// to the client user's home and have the form `pipelines/<pipelineId>/tasks/<taskId>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Request {
    /// Connect to `addr` (`host:port`) and relay bytes; refused unless `--allow` permits it.
    Dial { addr: String },
    /// Agent: install `run.sh` (and `nohup.sh`) in `dir` and start it, unless started already
    /// (reply `status`: `started` or `already-started`).
    Start {
        dir: String,
        run_sh: String,
        nohup_sh: String,
    },
    /// Agent: wait up to `secs` for the task to end (reply `status` `exited` with `code` and
    /// `callback`, or `running`).
    Watch { dir: String, secs: u32 },
    /// Agent: the task's state (reply `status`: `starting`, `running`, `exited` with `code`
    /// and `callback`, `lost` or `missing`).
    Status { dir: String },
    /// Agent: kill the task's process group (TERM, then KILL after 3 s).
    Cancel { dir: String },
    /// Agent: the task's `nohup.log` as raw bytes after the reply; with `follow`, until the
    /// task ends.
    Logs { dir: String, follow: bool },
    /// Fan-out (SPEC §10): run `bash -c command` in `workspace` (default: home) for at most
    /// `timeout_secs`. Reply `status` `success`/`failed`/`timeout`/`error`, `code`, `msg`,
    /// `output` (the last lines of stdout and stderr).
    Exec {
        command: String,
        #[serde(default)]
        workspace: Option<String>,
        timeout_secs: u64,
    },
}

/// The client's answer to a [`Request`]. `ok: false` carries `error`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply {
            ok: true,
            ..Default::default()
        }
    }

    pub fn status(s: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            status: Some(s.into()),
            ..Default::default()
        }
    }

    pub fn error(e: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(e.into()),
            ..Default::default()
        }
    }
}

pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes is over {MAX_FRAME}", body.len()),
        ));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf).await?;
    w.flush().await
}

/// One frame, or `None` at a clean end of stream before its first byte.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

pub async fn send<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    write_frame(w, &body).await
}

/// One JSON message; a malformed one is `InvalidData` naming what was wrong.
pub async fn recv<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R) -> io::Result<T> {
    let body = read_frame(r).await?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stream ended before a message",
        )
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed tunnel message: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_camel_case() {
        let r = Request::Start {
            dir: "pipelines/1/tasks/2".into(),
            run_sh: "echo".into(),
            nohup_sh: "wait".into(),
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["op"], "start");
        assert_eq!(j["runSh"], "echo");
        let back: Request = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
        let e: Request =
            serde_json::from_str(r#"{"op":"exec","command":"ls","timeoutSecs":5}"#).unwrap();
        assert!(matches!(
            e,
            Request::Exec {
                workspace: None,
                timeout_secs: 5,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let w = tokio::spawn(async move {
            send(&mut a, &Reply::status("running")).await.unwrap();
            a.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        });
        let r: Reply = recv(&mut b).await.unwrap();
        assert_eq!(r.status.as_deref(), Some("running"));
        let e = read_frame(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        w.await.unwrap();
    }
}
