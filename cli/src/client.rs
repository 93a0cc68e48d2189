//! HTTP access to the eventops server: the `{status, msg, data}` envelope, the bearer token and
//! the mapping of failures to messages a user can act on.
//!
//! A non-2xx answer becomes an [`ApiError`] whose text is exactly the server's `msg`, so that
//! `eoctl` prints `error: <what the server said>`. Transport failures name the server URL.

use std::fmt;
use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Longest part of an unexpected (non-envelope) body quoted in an error.
const MAX_QUOTED_BODY: usize = 300;

/// The server answered with a non-2xx status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub msg: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for ApiError {}

/// A connection to one server, optionally authenticated.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

/// Normalises a server address: trims spaces and trailing `/`, adds `http://` when no scheme
/// is given (`127.0.0.1:8080` → `http://127.0.0.1:8080`).
pub fn normalize_server(server: &str) -> Result<String> {
    let s = server.trim();
    let (scheme, rest) = s.split_once("://").unwrap_or(("http", s));
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(anyhow!(
            "server address {s:?} must start with http:// or https://"
        ));
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(anyhow!("server address {s:?} has no host"));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// Percent-encodes one path segment (everything except RFC 3986 unreserved characters), so
/// that names with spaces, `/`, `?`, `#` or non-ASCII letters reach the server intact.
pub fn encode_segment(segment: &str) -> String {
    // "." and ".." would be collapsed by URL normalisation; encode them fully.
    let dots_only = !segment.is_empty() && segment.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        let keep =
            !dots_only && (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds an API path from fixed parts and user-given segments, encoding the latter.
pub fn api_path(prefix: &str, segments: &[&str]) -> String {
    let mut p = prefix.trim_end_matches('/').to_string();
    for s in segments {
        p.push('/');
        p.push_str(&encode_segment(s));
    }
    p
}

impl Client {
    /// A client for `server` (already normalised), sending `token` as a bearer token if given.
    pub fn new(server: &str, token: Option<String>) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .user_agent(format!("eoctl/{}", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent: config.into(),
            base: server.to_string(),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// `GET path` → the envelope's `data`.
    pub fn get(&self, path: &str) -> Result<Value> {
        let mut req = self.agent.get(self.url(path));
        if let Some(a) = self.auth() {
            req = req.header("Authorization", a);
        }
        self.finish(req.call())
    }

    /// `DELETE path` → the envelope's `data`.
    pub fn delete(&self, path: &str) -> Result<Value> {
        let mut req = self.agent.delete(self.url(path));
        if let Some(a) = self.auth() {
            req = req.header("Authorization", a);
        }
        self.finish(req.call())
    }

    /// `POST path` with a JSON body → the envelope's `data`.
    pub fn post_json<B: Serialize>(&self, path: &str, body: &B) -> Result<Value> {
        let mut req = self.agent.post(self.url(path));
        if let Some(a) = self.auth() {
            req = req.header("Authorization", a);
        }
        self.finish(req.send_json(body))
    }

    /// `POST path` without a body → the envelope's `data`.
    pub fn post_empty(&self, path: &str) -> Result<Value> {
        let mut req = self.agent.post(self.url(path));
        if let Some(a) = self.auth() {
            req = req.header("Authorization", a);
        }
        self.finish(req.send_empty())
    }

    /// `GET path` of a plain-text answer (not the envelope), as a reader that yields the bytes
    /// as they arrive. `endless` lifts the overall time limit, for answers the server streams
    /// for as long as something happens (a followed log). A non-2xx answer is read whole and
    /// becomes the usual [`ApiError`] with the envelope's `msg`.
    pub fn get_stream(&self, path: &str, endless: bool) -> Result<impl Read + 'static> {
        let mut req = self.agent.get(self.url(path));
        if let Some(a) = self.auth() {
            req = req.header("Authorization", a);
        }
        if endless {
            req = req.config().timeout_global(None).build();
        }
        let mut resp = req.call().map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp
                .body_mut()
                .read_to_string()
                .map_err(|e| self.transport_error(e))?;
            interpret(
                status.as_u16(),
                status.canonical_reason(),
                &body,
                &self.base,
            )?;
            // interpret() only returns Ok for 2xx
            return Err(anyhow!("server {} answered HTTP {status}", self.base));
        }
        Ok(resp.into_body().into_reader())
    }

    /// `POST path` with a file as the body (its length announced, streamed from disk, no
    /// overall time limit) → the envelope's `data`.
    pub fn post_file(&self, path: &str, file: std::fs::File) -> Result<Value> {
        let mut req = self
            .agent
            .post(self.url(path))
            .content_type("application/octet-stream");
        if let Some(a) = self.auth() {
            req = req.header("Authorization", a);
        }
        let req = req.config().timeout_global(None).build();
        self.finish(req.send(file))
    }

    /// `POST path` with a raw body of the given content type → the envelope's `data`.
    pub fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Value> {
        let mut req = self.agent.post(self.url(path)).content_type(content_type);
        if let Some(a) = self.auth() {
            req = req.header("Authorization", a);
        }
        self.finish(req.send(body))
    }

    fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value> {
        let mut resp = result.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport_error(e))?;
        interpret(
            status.as_u16(),
            status.canonical_reason(),
            &body,
            &self.base,
        )
    }

    fn transport_error(&self, e: ureq::Error) -> anyhow::Error {
        anyhow!("cannot reach the eventops server at {}: {e}", self.base)
    }
}

/// Turns a status and body into the envelope's `data`, or an error carrying the server's `msg`.
fn interpret(status: u16, reason: Option<&str>, body: &str, server: &str) -> Result<Value> {
    let envelope: Option<proto::Envelope<Value>> = serde_json::from_str(body).ok();
    if (200..300).contains(&status) {
        let envelope = envelope.ok_or_else(|| {
            anyhow!(
                "unexpected answer from {server} (is it an eventops server?): {}",
                quote_body(body)
            )
        })?;
        return Ok(envelope.data.unwrap_or(Value::Null));
    }
    let msg = match envelope {
        Some(env) if !env.msg.trim().is_empty() => env.msg,
        _ => {
            let reason = reason.unwrap_or("");
            if body.trim().is_empty() {
                format!("server {server} answered HTTP {status} {reason}")
            } else {
                format!(
                    "server {server} answered HTTP {status} {reason}: {}",
                    quote_body(body)
                )
            }
        }
    };
    Err(ApiError { status, msg }.into())
}

fn quote_body(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.chars().count() > MAX_QUOTED_BODY {
        let cut: String = trimmed.chars().take(MAX_QUOTED_BODY).collect();
        format!("{cut}…")
    } else {
        trimmed.to_string()
    }
}

/// Deserializes an envelope's `data` into a typed view, with a clear error if the server sent
/// something else.
pub fn typed<T: DeserializeOwned>(data: Value, what: &str) -> Result<T> {
    serde_json::from_value(data)
        .with_context(|| format!("unexpected {what} in the server's answer"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("hello-world_1.0~x"), "hello-world_1.0~x");
        assert_eq!(encode_segment("a b/c?d#e%"), "a%20b%2Fc%3Fd%23e%25");
        assert_eq!(encode_segment("流水线"), "%E6%B5%81%E6%B0%B4%E7%BA%BF");
        assert_eq!(encode_segment(".."), "%2E%2E");
        assert_eq!(encode_segment("1.0"), "1.0");
        assert_eq!(
            api_path("/api/pipeline-definition/", &["a b", "1.0"]),
            "/api/pipeline-definition/a%20b/1.0"
        );
    }

    #[test]
    fn servers_are_normalised() {
        assert_eq!(normalize_server("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(
            normalize_server(" 127.0.0.1:8080 ").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(normalize_server("HTTPS://h").unwrap(), "HTTPS://h");
        assert!(normalize_server("ftp://h").is_err());
        assert!(normalize_server("").is_err());
        assert!(normalize_server("/").is_err());
        assert!(normalize_server("http://").is_err());
    }

    #[test]
    fn envelope_data_and_errors() {
        let ok = interpret(
            200,
            Some("OK"),
            r#"{"status":200,"msg":"","data":{"id":3}}"#,
            "s",
        );
        assert_eq!(ok.unwrap()["id"], 3);
        let none = interpret(200, Some("OK"), r#"{"status":200,"msg":"ok"}"#, "s");
        assert!(none.unwrap().is_null());

        let e = interpret(
            400,
            Some("Bad Request"),
            r#"{"status":400,"msg":"pipeline hello-world:1.0: task \"a\": bad","data":null}"#,
            "s",
        )
        .unwrap_err();
        let api = e.downcast_ref::<ApiError>().unwrap();
        assert_eq!(api.status, 400);
        assert_eq!(e.to_string(), "pipeline hello-world:1.0: task \"a\": bad");

        let e = interpret(502, Some("Bad Gateway"), "<html>proxy</html>", "http://x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "server http://x answered HTTP 502 Bad Gateway: <html>proxy</html>"
        );
        let e = interpret(200, Some("OK"), "hello", "http://x").unwrap_err();
        assert!(e.to_string().contains("unexpected answer"), "{e}");
    }
}
