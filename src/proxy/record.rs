//! The one recording point of the request path: what happened to a request
//! (`Outcome`, filled in as the pipeline goes) written once at the end to the
//! worker's metric shard and, when the access log is on, as one JSON line.
//! An L4 connection is logged the same way, as one line when it ends.

use crate::config::{ListenerKind, LogTarget};
use crate::error::ProxyError;
use crate::telemetry::{write_json_line, AccessRecord, TraceContext, NO_REASON};
use crate::worker::{Plan, Worker};
use std::net::SocketAddr;
use std::time::Duration;

/// What happened to one request, filled in as the pipeline goes and recorded
/// once at the end: metrics, and the access log line.
pub(super) struct Outcome {
    pub(super) status: u16,
    /// Why the request ended as it did (`x-ringway-error` when the proxy
    /// answered itself), or `NO_REASON`.
    pub(super) reason: &'static str,
    /// The proxy wrote the answer itself (an error response): counted in
    /// `ringway_local_replies_total`. Not for a failure after the upstream's
    /// answer began, nor for a client that left unanswered.
    pub(super) answered_here: bool,
    pub(super) route: Option<usize>,
    pub(super) cluster: Option<usize>,
    pub(super) upstream: Option<SocketAddr>,
    pub(super) attempts: u32,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) trace: Option<TraceContext>,
    /// What the access log needs from the head, copied before the head is
    /// consumed; only when the access log is on.
    pub(super) logged: Option<LoggedRequest>,
    /// The client's verified SPIFFE ID, for the access log.
    pub(super) peer_identity: Option<Box<str>>,
    /// Whether the client's whole body was read, once the request was
    /// prepared for its upstream or answered here (None before): an answer
    /// that leaves it unread closes with a linger.
    pub(super) body_done: Option<bool>,
    /// The x-request-id Ringway made for a request that came without one:
    /// its answers carry it, errors included.
    pub(super) generated_id: Option<Box<[u8; 36]>>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            status: 0,
            reason: NO_REASON,
            answered_here: false,
            route: None,
            cluster: None,
            upstream: None,
            attempts: 0,
            bytes_in: 0,
            bytes_out: 0,
            trace: None,
            logged: None,
            body_done: None,
            peer_identity: None,
            generated_id: None,
        }
    }
}

impl Outcome {
    pub(super) fn fail(&mut self, error: &ProxyError) {
        self.status = error.status();
        self.reason = error.reason();
    }
}

pub(super) struct LoggedRequest {
    pub(super) method: Vec<u8>,
    pub(super) authority: Vec<u8>,
    pub(super) path: Vec<u8>,
    pub(super) request_id: Vec<u8>,
}

/// The one recording point: the worker's metric shard, and the access log.
pub(super) fn record(
    worker: &Worker,
    plan: &Plan,
    listener: usize,
    client: SocketAddr,
    outcome: &Outcome,
    elapsed: Duration,
) {
    count(worker, plan, listener, outcome, elapsed);
    log(worker, plan, listener, client, outcome, elapsed);
}

/// The request metrics alone: an upgraded request counts when its 101 goes
/// out (its duration is the handshake's), and is logged when the tunnel ends.
pub(super) fn count(worker: &Worker, plan: &Plan, listener: usize, outcome: &Outcome, elapsed: Duration) {
    let route_key = match (outcome.route, outcome.cluster) {
        (Some(route), Some(cluster)) => plan.keys.route(listener, route, cluster),
        _ => None,
    };
    if plan.snapshot.runtime.metrics {
        let mut metrics = worker.metrics.borrow_mut();
        let local = outcome.answered_here.then_some(outcome.reason);
        match (route_key, local) {
            (Some(key), None) => metrics.request(key, outcome.status, elapsed),
            (Some(key), Some(reason)) => metrics.route_local_reply(key, reason, outcome.status, elapsed),
            (None, local) => {
                if let Some(key) = plan.keys.listeners.get(listener) {
                    metrics.unrouted(*key, local, outcome.status, elapsed);
                }
            }
        }
    }
}

/// The access log line alone: L4 connections and WebSocket tunnels, when
/// they end (an L4 connection's endpoint metrics are counted as they happen).
/// `client` is the address the connection came from: a parameter, not an
/// `Outcome` field, as every caller has it at hand and the request's
/// future stays the smaller.
pub(super) fn log(
    worker: &Worker,
    plan: &Plan,
    listener: usize,
    client: SocketAddr,
    outcome: &Outcome,
    elapsed: Duration,
) {
    if plan.snapshot.access_log.target == LogTarget::Off {
        return;
    }
    let trace_id = outcome.trace.as_ref().map(|t| t.trace_id_hex());
    let logged = outcome.logged.as_ref();
    let field = |f: fn(&LoggedRequest) -> &[u8]| logged.map_or(&b""[..], f);
    let route = outcome
        .route
        .and_then(|r| match &plan.snapshot.listeners[listener].kind {
            ListenerKind::Http { routes } => routes.get(r).map(|r| r.name.as_str()),
            ListenerKind::Tcp { .. } => None,
        });
    let record = AccessRecord {
        // When it began: the line is written as it ends, `elapsed` later.
        time: std::time::SystemTime::now()
            .checked_sub(elapsed)
            .unwrap_or(std::time::UNIX_EPOCH),
        trace_id: trace_id
            .as_ref()
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or(""),
        request_id: field(|l| &l.request_id),
        listener: plan.snapshot.listeners.get(listener).map_or("", |l| l.name.as_str()),
        client: Some(client),
        method: field(|l| &l.method),
        authority: field(|l| &l.authority),
        path: field(|l| &l.path),
        status: outcome.status,
        reason: outcome.reason,
        route: route.unwrap_or(""),
        cluster: outcome
            .cluster
            .and_then(|c| plan.snapshot.clusters.get(c))
            .map_or("", |c| c.name.as_str()),
        upstream: outcome.upstream,
        peer_identity: outcome.peer_identity.as_deref(),
        attempts: outcome.attempts,
        bytes_in: outcome.bytes_in,
        bytes_out: outcome.bytes_out,
        duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
    };
    let mut line = Vec::with_capacity(512);
    write_json_line(&record, &mut line);
    let mut log = worker.log.borrow_mut();
    log.push(&line);
    let half_full = log.len() > log.capacity() / 2;
    drop(log);
    if half_full {
        worker.flush_log();
    }
}
