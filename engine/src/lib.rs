//! The eventops engine: everything but HTTP.
//!
//! - [`document`]: YAML/JSON parsing that keeps versions as text.
//! - [`definition`]: actuator, pipeline, trigger and event schemas and their validation.
//! - [`placeholder`]: `${{ inputs.x }}` parsing.
//! - [`dag`]: the task graph of a pipeline definition.
//! - [`store`]: the database layer (SQLite, MySQL/MariaDB, PostgreSQL).
//! - [`users`]: accounts and password hashing.
//! - [`commands`]: the machine list and fan-out commands on tunnel clients (SPEC §10).
//! - [`registry`]: apply/list/get/delete of definitions and event intake, as the API uses them.
//! - [`files`]: file values in an S3 bucket, moved by tasks with presigned URLs.
//! - [`secrets`]: the key that seals actuator secrets at rest; file-mode helpers.

pub mod actuator;
pub mod commands;
pub mod dag;
pub mod definition;
pub mod document;
pub mod error;
pub mod files;
pub mod metrics;
pub mod placeholder;
pub mod registry;
pub mod runtime;
pub mod script;
pub mod secrets;
pub mod store;
pub mod tunnel;
pub mod users;

pub use error::{Error, Result};
