//! The eventops server: configuration, HTTP routes, start-up. The binary is `eventops`.

pub mod api;
pub mod auth;
pub mod config;
pub mod console;
pub mod dialer;
pub mod error;
pub mod fanout;
pub mod limiter;
pub mod metrics;
pub mod openapi;
pub mod server;
pub mod testing;
