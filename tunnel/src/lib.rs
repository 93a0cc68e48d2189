//! The tunnel between the server and `eventops-client` (SPEC §9).
//!
//! One WebSocket carries a [yamux](https://github.com/hashicorp/yamux/blob/master/spec.md)
//! session ([`mux`]), so many streams share it with per-stream flow control: a saturated stream
//! does not stall the others. The WebSocket itself is only a byte pipe ([`pipe`]): each side
//! pumps its WebSocket library's binary messages through a pair of channels.
//!
//! The server opens every stream. A stream starts with one [`wire::Request`] frame; the client
//! answers with one [`wire::Reply`] frame and, for `dial` and `logs`, raw bytes follow.
//! [`allow`] holds the client's `--allow` rules for dials.

pub mod allow;
pub mod mux;
pub mod pipe;
pub mod wire;

/// Headers of the WebSocket handshake (`GET /api/dialer/connect`). The token travels in a
/// header, never in the URL, so access logs do not record it.
pub mod headers {
    pub const CLIENT_ID: &str = "x-eventops-client-id";
    pub const CLIENT_TOKEN: &str = "x-eventops-client-token";
    pub const USER: &str = "x-eventops-user";
    pub const LABEL: &str = "x-eventops-machine-label";
    pub const VERSION: &str = "x-eventops-client-version";
    /// The user the client process runs as (shown by `eoctl machine list`).
    pub const RUN_AS: &str = "x-eventops-client-run-as";
}

/// How often the client pings; the server drops a client silent for three of these.
pub const HEARTBEAT_SECS: u64 = 10;
