//! Telemetry that leaves the process with each request: access log lines and
//! W3C trace context (DESIGN.md §7). Pure code, no monoio.
//!
//! On a worker: [`write_json_line`] renders an [`AccessRecord`] into a scratch
//! buffer, [`LogBuffer::push`] keeps it (or drops and counts it when full),
//! and a periodic flush hands [`LogBuffer::take`]'s bytes to the writer
//! thread, which owns the [`LogSink`] and its blocking IO. [`parse_traceparent`],
//! [`TraceContext::child`] and [`new_request_id`] supply the propagated headers
//! and the log's ids.
//!
//! Files: `access_log` (the record and its line), `json` (string escaping),
//! `time` (RFC 3339 timestamps), `log_buffer`, `log_sink`, `trace`.

pub mod access_log;
mod json;
mod log_buffer;
mod log_sink;
mod time;
pub mod trace;
mod writer;

pub use access_log::{write_json_line, AccessRecord, NO_REASON};
pub use log_buffer::LogBuffer;
pub use log_sink::{open_append, LogSink, LogTarget};
pub use trace::{new_request_id, parse_traceparent, TraceContext};
pub use writer::{spawn_log_writer, LogMessage, LogWriter};
