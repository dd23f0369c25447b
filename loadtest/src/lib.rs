//! `ringway-load`: Ringway's bundled HTTP/1.1 load generator and its
//! benchmark upstream, both on monoio (io_uring, thread per core).
//!
//! [`run_load`] drives a target with keep-alive connections, closed loop like
//! wrk or open loop at a fixed rate like wrk2 (latency from the intended send
//! time), and returns a [`Report`] that renders the text summary and the JSON
//! object the scripts read; [`run_load_until`] can be ended early through a
//! [`LoadStop`] (the binary's Ctrl-C). [`spawn_serve`] starts the
//! fixed-response server used as an upstream in benchmarks, demos and tests.
//!
//! Layout: `options` (plain option structs, durations, mix files), `request`
//! (URL, pre-serialized requests), `framing` (incremental HTTP/1.1 framing),
//! `client` (the run), `report` (tallies, summary, JSON), `progress` (live
//! line), `serve` (the server), `runtime` (runtime build, pinning, stop
//! signal) and `cli` (argument parsing for the binary).
#![deny(unsafe_code)]

pub mod cli;
mod client;
pub mod framing;
pub mod options;
mod progress;
pub mod report;
pub mod request;
mod runtime;
mod serve;

pub use client::{check_load, run_load, run_load_until, LoadStop};
pub use options::{LoadOptions, MixEntry, ServeOptions};
pub use report::{ErrorCounts, LatencySummary, Report};
pub use serve::{spawn_serve, ServeHandle};
