//! Ringway: a thread-per-core io_uring HTTP/1.1 and TCP proxy for service meshes.
//!
//! The request path, top to bottom: `worker` starts one pinned monoio runtime
//! per core; each binds its own SO_REUSEPORT socket per listener (`listener`)
//! and hands accepted connections to `proxy::http::serve` (after the TLS
//! handshake on a TLS listener, `tls`). There, per request, the head is
//! decoded strictly (`http`), matched against the listener's route table
//! (`router`), a weighted split picks the cluster and the cluster's per-worker
//! balancer picks an endpoint (`cluster`); an idle pooled or new connection
//! (`upstream`, TLS when the cluster asks) carries the rewritten head and the
//! streamed body,
//! the response streams back, and failures become responses in one place
//! (`error`). Config (`config`) is compiled into an immutable snapshot that
//! `admin` publishes lock-free; each worker notices the new generation with one
//! relaxed load and rebuilds its own plan, keeping the state of endpoints that
//! survive.
#![deny(unsafe_code)]

/// One line on stderr, where Ringway logs: a write that fails (the reader
/// of a pipe went away) drops the line instead of panicking, which would
/// take a worker, the control thread or the health checker with it.
#[macro_export]
macro_rules! stderr_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// One line on stdout (a command's answer), dropped as [`stderr_line!`] is
/// when the reader went away (`ringway check | head -1`).
#[macro_export]
macro_rules! stdout_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod addr_text;
pub mod admin;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod health;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod resilience;
pub mod router;
mod sys;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod worker;
