//! Telemetry that leaves the process with each request: access log lines and
//! W3C trace context (DESIGN.md §7). Pure code, no monoio.
//!
//! Files: `access_log` (the record and its line), `json` (string escaping),
//! `time` (RFC 3339 timestamps).

pub mod access_log;
mod json;
mod time;

pub use access_log::{write_json_line, AccessRecord, NO_REASON};
