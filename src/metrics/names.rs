//! The one table of every metric Ringway exposes: name, type, label names and
//! help text. `render` takes label names from here, and a test holds the
//! rendered output to this table, so a metric cannot be exposed without an
//! entry or drift from it. Names carry the `ringway_` prefix and base units
//! (seconds, not milliseconds); counters end in `_total`.

/// The Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The word on the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// Label names in output order; `render` passes values in the same order.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn metric(name: &'static str, kind: Kind, labels: &'static [&'static str], help: &'static str) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};

const ROUTE: &[&str] = &["listener", "route", "cluster"];
const ENDPOINT: &[&str] = &["cluster", "endpoint"];

// Requests, per route and cluster (per-worker shards, summed at scrape).
pub const REQUESTS_TOTAL: Metric = metric(
    "ringway_requests_total",
    Counter,
    &["listener", "route", "cluster", "code"],
    "HTTP requests answered, by status code. Requests answered before a route matched have route=\"\" and cluster=\"\"; routes Ringway answers itself (redirects, direct responses) have cluster=\"\".",
);
pub const REQUEST_DURATION_SECONDS: Metric = metric(
    "ringway_request_duration_seconds",
    Histogram,
    ROUTE,
    "Time from a request's arrival to the end of its response, in seconds. Every request in ringway_requests_total is timed here, under the same route and cluster labels.",
);
pub const LOCAL_REPLIES_TOTAL: Metric = metric(
    "ringway_local_replies_total",
    Counter,
    &["listener", "reason"],
    "Responses the proxy generated itself, by x-ringway-error reason.",
);
pub const RATELIMIT_REJECTED_TOTAL: Metric = metric(
    "ringway_ratelimit_rejected_total",
    Counter,
    &["listener", "route"],
    "Requests refused with 429 by a rate limit: a route's, or the listener's (route=\"\").",
);
pub const FAULTS_INJECTED_TOTAL: Metric = metric(
    "ringway_faults_injected_total",
    Counter,
    &["listener", "route", "kind"],
    "Requests a route's fault injection delayed (kind=\"delay\") or answered itself (kind=\"abort\").",
);
pub const UPSTREAM_RQ_RETRY_TOTAL: Metric = metric(
    "ringway_upstream_rq_retry_total",
    Counter,
    ROUTE,
    "Upstream attempts beyond the first for a request.",
);
pub const UPSTREAM_RQ_RETRY_BUDGET_EXHAUSTED_TOTAL: Metric = metric(
    "ringway_upstream_rq_retry_budget_exhausted_total",
    Counter,
    ROUTE,
    "Retries the policy allowed but the retry budget refused.",
);

// Downstream connections, per listener.
pub const DOWNSTREAM_CX_TOTAL: Metric = metric(
    "ringway_downstream_cx_total",
    Counter,
    &["listener"],
    "Client connections accepted.",
);
pub const DOWNSTREAM_CX_ACTIVE: Metric = metric(
    "ringway_downstream_cx_active",
    Gauge,
    &["listener"],
    "Client connections open now.",
);
pub const DOWNSTREAM_TLS_HANDSHAKE_FAILURES_TOTAL: Metric = metric(
    "ringway_downstream_tls_handshake_failures_total",
    Counter,
    &["listener"],
    "Client connections closed because the TLS handshake failed or timed out (bad or missing client certificate included).",
);
pub const DOWNSTREAM_CX_OVERFLOW_TOTAL: Metric = metric(
    "ringway_downstream_cx_overflow_total",
    Counter,
    &["listener"],
    "Client connections reset on arrival because the listener's max_connections were open.",
);
pub const TCP_BYTES_TOTAL: Metric = metric(
    "ringway_tcp_bytes_total",
    Counter,
    &["listener", "cluster", "direction"],
    "Bytes tcp listeners relayed, counted as they move: direction=\"from_client\" went to the upstream, direction=\"from_upstream\" to the client.",
);
pub const TCP_CONNECTIONS_TOTAL: Metric = metric(
    "ringway_tcp_connections_total",
    Counter,
    &["listener", "cluster", "reason"],
    "Connections of tcp listeners, by how they ended: reason=\"closed\" when a side closed or reset it, otherwise the access log's reason (a refusal such as no-healthy-endpoint or forbidden, or a cut such as idle-timeout).",
);

// Upstream connections and endpoints.
pub const UPSTREAM_CX_TOTAL: Metric = metric(
    "ringway_upstream_cx_total",
    Counter,
    ENDPOINT,
    "Upstream connection attempts, failed ones included.",
);
pub const UPSTREAM_CX_CONNECT_FAIL_TOTAL: Metric = metric(
    "ringway_upstream_cx_connect_fail_total",
    Counter,
    ENDPOINT,
    "Upstream connection attempts that failed or timed out.",
);
pub const UPSTREAM_CX_ACTIVE: Metric = metric(
    "ringway_upstream_cx_active",
    Gauge,
    ENDPOINT,
    "Upstream connections open now, idle pooled ones included.",
);
pub const UPSTREAM_POOL_HITS_TOTAL: Metric = metric(
    "ringway_upstream_pool_hits_total",
    Counter,
    ENDPOINT,
    "Requests sent on a pooled idle connection.",
);
pub const UPSTREAM_POOL_MISSES_TOTAL: Metric = metric(
    "ringway_upstream_pool_misses_total",
    Counter,
    ENDPOINT,
    "Requests that found no pooled idle connection and needed a new one.",
);
pub const OUTLIER_EJECTIONS_TOTAL: Metric = metric(
    "ringway_outlier_ejections_total",
    Counter,
    ENDPOINT,
    "Times an endpoint was ejected by outlier detection.",
);
pub const UPSTREAM_RQ_OVERFLOW_TOTAL: Metric = metric(
    "ringway_upstream_rq_overflow_total",
    Counter,
    &["cluster"],
    "Requests refused because a cluster's circuit breaker limit (connections, pending, requests) was reached.",
);
pub const MIRROR_REQUESTS_TOTAL: Metric = metric(
    "ringway_mirror_requests_total",
    Counter,
    &["cluster", "result"],
    "Request copies a route's mirror sent to this cluster, by the answer's status class (2xx..5xx), or failed (no answer) or skipped (body too large to copy, too many copies in flight, no endpoint).",
);
pub const UPSTREAM_PANIC_TOTAL: Metric = metric(
    "ringway_upstream_panic_total",
    Counter,
    &["cluster"],
    "Endpoint picks made in panic mode: too few endpoints healthy, so health was ignored rather than refusing.",
);
pub const ACCESS_LOG_DROPPED_TOTAL: Metric = metric(
    "ringway_access_log_dropped_total",
    Counter,
    &[],
    "Access log lines dropped because a worker's log buffer was full.",
);

// Process-wide values owned by the control thread (`Gauges`).
pub const CIRCUIT_BREAKER_OPEN: Metric = metric(
    "ringway_circuit_breaker_open",
    Gauge,
    ENDPOINT,
    "1 while the endpoint's circuit breaker is open (or half-open), else 0.",
);
pub const ENDPOINT_HEALTHY: Metric = metric(
    "ringway_endpoint_healthy",
    Gauge,
    ENDPOINT,
    "1 while active health checks consider the endpoint healthy, else 0.",
);
pub const CONFIG_GENERATION: Metric = metric(
    "ringway_config_generation",
    Gauge,
    &[],
    "Generation of the active configuration snapshot.",
);
pub const CONFIG_RELOADS_TOTAL: Metric = metric(
    "ringway_config_reloads_total",
    Counter,
    &["result"],
    "Configuration reloads (file, SIGHUP or admin API), by result: ok or failed.",
);
pub const TLS_CERTIFICATE_ROTATIONS_TOTAL: Metric = metric(
    "ringway_tls_certificate_rotations_total",
    Counter,
    &["result"],
    "TLS settings of a listener or cluster rebuilt because a certificate, key or CA file changed, by result: ok, or failed (the settings in force stay).",
);
pub const DISCOVERY_REFRESHES_TOTAL: Metric = metric(
    "ringway_discovery_refreshes_total",
    Counter,
    &["cluster", "result"],
    "Discovery looks at a cluster's endpoints file (when it changed) or DNS name (when due), by result: updated (a new list was published), unchanged, or failed (endpoints kept).",
);
pub const ADMIN_REQUESTS_TOTAL: Metric = metric(
    "ringway_admin_requests_total",
    Counter,
    &[],
    "Admin API requests answered.",
);
pub const WORKERS: Metric = metric("ringway_workers", Gauge, &[], "Worker threads serving traffic.");
pub const START_TIME_SECONDS: Metric = metric(
    "ringway_start_time_seconds",
    Gauge,
    &[],
    "Process start time, in seconds since the Unix epoch.",
);
pub const BUILD_INFO: Metric = metric(
    "ringway_build_info",
    Gauge,
    &["version"],
    "Always 1; the version label says which build runs.",
);

/// Every family, in exposition order.
pub const ALL: &[Metric] = &[
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    LOCAL_REPLIES_TOTAL,
    RATELIMIT_REJECTED_TOTAL,
    FAULTS_INJECTED_TOTAL,
    UPSTREAM_RQ_RETRY_TOTAL,
    UPSTREAM_RQ_RETRY_BUDGET_EXHAUSTED_TOTAL,
    DOWNSTREAM_CX_TOTAL,
    DOWNSTREAM_CX_ACTIVE,
    DOWNSTREAM_TLS_HANDSHAKE_FAILURES_TOTAL,
    DOWNSTREAM_CX_OVERFLOW_TOTAL,
    TCP_CONNECTIONS_TOTAL,
    TCP_BYTES_TOTAL,
    UPSTREAM_CX_TOTAL,
    UPSTREAM_CX_CONNECT_FAIL_TOTAL,
    UPSTREAM_CX_ACTIVE,
    UPSTREAM_POOL_HITS_TOTAL,
    UPSTREAM_POOL_MISSES_TOTAL,
    OUTLIER_EJECTIONS_TOTAL,
    UPSTREAM_RQ_OVERFLOW_TOTAL,
    UPSTREAM_PANIC_TOTAL,
    MIRROR_REQUESTS_TOTAL,
    ACCESS_LOG_DROPPED_TOTAL,
    CIRCUIT_BREAKER_OPEN,
    ENDPOINT_HEALTHY,
    CONFIG_GENERATION,
    CONFIG_RELOADS_TOTAL,
    TLS_CERTIFICATE_ROTATIONS_TOTAL,
    DISCOVERY_REFRESHES_TOTAL,
    WORKERS,
    START_TIME_SECONDS,
    BUILD_INFO,
    // Last: the admin endpoint appends its own count to what it renders.
    ADMIN_REQUESTS_TOTAL,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_follow_the_conventions() {
        let mut seen = HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("ringway_"), "{}", m.name);
            let valid = m
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            assert!(valid, "{}", m.name);
            assert_eq!(m.kind == Kind::Counter, m.name.ends_with("_total"), "{}", m.name);
            for unit in ["_ms", "_us", "_milliseconds", "_microseconds", "_bytes_kb"] {
                assert!(!m.name.contains(unit), "{} is not in base units", m.name);
            }
            assert!(!m.help.is_empty() && !m.help.contains('\n'), "{}", m.name);
            let labels: HashSet<_> = m.labels.iter().collect();
            assert_eq!(labels.len(), m.labels.len(), "{} repeats a label", m.name);
            assert!(!m.labels.contains(&"le"), "{}", m.name);
        }
    }
}
