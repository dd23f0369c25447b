//! Prometheus text exposition (format 0.0.4) of a merged [`Shard`] plus the
//! process-wide [`Gauges`]. Runs on the control thread at scrape time, so it
//! may allocate freely; it never runs on a worker.
//!
//! Every family in [`names::ALL`] is written, in that order, with its
//! `# HELP` and `# TYPE` lines even when it has no series yet. Series are
//! sorted by label values, so the output is stable; each label set appears
//! once per family because the shard interns label sets, and values that are
//! summed or OR-ed here (across clusters, or repeated gauge entries) are
//! gathered into maps keyed by their label values.

use super::latency::{Latency, BUCKETS};
use super::names::{self, Metric};
use super::shard::{EndpointStats, Shard};
use crate::telemetry::NO_REASON;
use std::collections::BTreeMap;
use std::fmt::{Display, Write};

/// Values the control thread owns rather than the workers.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Generation of the active snapshot.
    pub config_generation: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub cert_rotations_ok: u64,
    pub cert_rotations_failed: u64,
    /// Discovery looks as (cluster, result, count); repeats are summed, so
    /// zero entries can make a series appear before its first increment.
    pub discovery_refreshes: Vec<(String, &'static str, u64)>,
    /// (cluster, endpoint, healthy) from active health checks.
    pub endpoint_healthy: Vec<(String, String, bool)>,
    /// (cluster, endpoint, open). Repeats (one per worker, say) are OR-ed: the
    /// series reads 1 when any entry is open.
    pub circuit_breaker_open: Vec<(String, String, bool)>,
    pub workers: usize,
    /// Process start, seconds since the Unix epoch.
    pub start_time_seconds: u64,
}

/// Render the exposition text.
pub fn render(merged: &Shard, gauges: &Gauges) -> String {
    let mut out = Out(String::with_capacity(8 * 1024));
    requests(&mut out, merged);
    route_counters(&mut out, merged);
    connections(&mut out, merged);
    process(&mut out, gauges);
    out.0
}

/// `write!` into a `String` cannot fail, so results are dropped in one place.
struct Out(String);

impl Out {
    fn family(&mut self, m: &Metric) {
        let _ = write!(self.0, "# HELP {} ", m.name);
        for c in m.help.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                c => self.0.push(c),
            }
        }
        let _ = writeln!(self.0, "\n# TYPE {} {}", m.name, m.kind.as_str());
    }

    /// One sample of `m` (with `suffix` such as `_bucket`), label values in the
    /// table's order, then `le` when given.
    fn sample(&mut self, m: &Metric, suffix: &str, values: &[&str], le: Option<&str>, value: impl Display) {
        debug_assert_eq!(values.len(), m.labels.len(), "{}", m.name);
        let _ = write!(self.0, "{}{}", m.name, suffix);
        let extra = le.map(|v| ("le", v));
        let mut labels = m
            .labels
            .iter()
            .copied()
            .zip(values.iter().copied())
            .chain(extra)
            .peekable();
        if labels.peek().is_some() {
            self.0.push('{');
            for (i, (name, v)) in labels.enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{name}=\"");
                escape_label(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Label value escaping per the text format: backslash, quote, newline.
pub(super) fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn listener_name(s: &Shard, i: usize) -> &str {
    s.listeners.get(i).map_or("", |l| l.name.as_str())
}

fn requests(out: &mut Out, s: &Shard) {
    let mut by_code: BTreeMap<(&str, &str, &str, u16), u64> = BTreeMap::new();
    // Interning makes a route's label set unique within a shard, so the
    // histograms can be borrowed rather than merged again.
    let mut durations: BTreeMap<(&str, &str, &str), &Latency> = BTreeMap::new();
    for r in s.routes.iter() {
        let labels = (
            listener_name(s, r.listener.index()),
            r.route.as_str(),
            r.cluster.as_str(),
        );
        for &(code, n) in &r.codes {
            *by_code.entry((labels.0, labels.1, labels.2, code)).or_default() += n;
        }
        if !r.latency.is_empty() {
            durations.insert(labels, &r.latency);
        }
    }
    out.family(&names::REQUESTS_TOTAL);
    for ((listener, route, cluster, code), n) in by_code {
        let code = code.to_string();
        out.sample(&names::REQUESTS_TOTAL, "", &[listener, route, cluster, &code], None, n);
    }
    let m = &names::REQUEST_DURATION_SECONDS;
    out.family(m);
    for ((listener, route, cluster), latency) in durations {
        let values = [listener, route, cluster];
        for ((_, le), count) in BUCKETS.iter().zip(latency.cumulative()) {
            out.sample(m, "_bucket", &values, Some(le), count);
        }
        out.sample(m, "_bucket", &values, Some("+Inf"), latency.count());
        out.sample(m, "_sum", &values, None, latency.sum_us() as f64 / 1e6);
        out.sample(m, "_count", &values, None, latency.count());
    }
}

fn route_counters(out: &mut Out, s: &Shard) {
    let mut local: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for l in s.listeners.iter() {
        for &(reason, n) in &l.local {
            *local.entry((l.name.as_str(), reason)).or_default() += n;
        }
    }
    out.family(&names::LOCAL_REPLIES_TOTAL);
    for ((listener, reason), n) in local {
        out.sample(&names::LOCAL_REPLIES_TOTAL, "", &[listener, reason], None, n);
    }

    // Routes a plan interned start at zero so that rate() sees their first
    // increment; pseudo-routes (empty route or cluster) appear once non-zero.
    let mut limited: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut faults: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    let mut retries: BTreeMap<(&str, &str, &str), (u64, u64)> = BTreeMap::new();
    for r in s.routes.iter() {
        let listener = listener_name(s, r.listener.index());
        if !r.route.is_empty() || r.ratelimited > 0 {
            *limited.entry((listener, r.route.as_str())).or_default() += r.ratelimited;
        }
        if r.faults_armed || r.delays_injected > 0 || r.aborts_injected > 0 {
            let f = faults.entry((listener, r.route.as_str())).or_default();
            f.0 += r.delays_injected;
            f.1 += r.aborts_injected;
        }
        if !r.cluster.is_empty() || r.retries > 0 || r.retry_budget_exhausted > 0 {
            let e = retries
                .entry((listener, r.route.as_str(), r.cluster.as_str()))
                .or_default();
            e.0 += r.retries;
            e.1 += r.retry_budget_exhausted;
        }
    }
    out.family(&names::RATELIMIT_REJECTED_TOTAL);
    for ((listener, route), n) in limited {
        out.sample(&names::RATELIMIT_REJECTED_TOTAL, "", &[listener, route], None, n);
    }
    out.family(&names::FAULTS_INJECTED_TOTAL);
    for ((listener, route), (delays, aborts)) in faults {
        out.sample(
            &names::FAULTS_INJECTED_TOTAL,
            "",
            &[listener, route, "delay"],
            None,
            delays,
        );
        out.sample(
            &names::FAULTS_INJECTED_TOTAL,
            "",
            &[listener, route, "abort"],
            None,
            aborts,
        );
    }
    out.family(&names::UPSTREAM_RQ_RETRY_TOTAL);
    for (&(l, r, c), &(n, _)) in &retries {
        out.sample(&names::UPSTREAM_RQ_RETRY_TOTAL, "", &[l, r, c], None, n);
    }
    out.family(&names::UPSTREAM_RQ_RETRY_BUDGET_EXHAUSTED_TOTAL);
    for (&(l, r, c), &(_, n)) in &retries {
        out.sample(
            &names::UPSTREAM_RQ_RETRY_BUDGET_EXHAUSTED_TOTAL,
            "",
            &[l, r, c],
            None,
            n,
        );
    }
}

/// The endpoint families and how to read each from one endpoint's stats.
type EndpointColumn = (&'static Metric, fn(&EndpointStats) -> i128);

const ENDPOINT_COLUMNS: [EndpointColumn; 6] = [
    (&names::UPSTREAM_CX_TOTAL, |e| e.cx_total.into()),
    (&names::UPSTREAM_CX_CONNECT_FAIL_TOTAL, |e| e.connect_fail.into()),
    (&names::UPSTREAM_CX_ACTIVE, |e| e.cx_active.into()),
    (&names::UPSTREAM_POOL_HITS_TOTAL, |e| e.pool_hits.into()),
    (&names::UPSTREAM_POOL_MISSES_TOTAL, |e| e.pool_misses.into()),
    (&names::OUTLIER_EJECTIONS_TOTAL, |e| e.ejections.into()),
];

/// One listener's connection counts, summed over the shards that know it.
#[derive(Default)]
struct ListenerTotals {
    cx_total: u64,
    cx_active: i64,
    tls_handshake_failures: u64,
    cx_overflow: u64,
}

type ListenerColumn = (&'static Metric, fn(&ListenerTotals) -> i128);

const LISTENER_COLUMNS: [ListenerColumn; 4] = [
    (&names::DOWNSTREAM_CX_TOTAL, |l| l.cx_total.into()),
    (&names::DOWNSTREAM_CX_ACTIVE, |l| l.cx_active.into()),
    (&names::DOWNSTREAM_TLS_HANDSHAKE_FAILURES_TOTAL, |l| {
        l.tls_handshake_failures.into()
    }),
    (&names::DOWNSTREAM_CX_OVERFLOW_TOTAL, |l| l.cx_overflow.into()),
];

fn connections(out: &mut Out, s: &Shard) {
    let mut listeners: BTreeMap<&str, ListenerTotals> = BTreeMap::new();
    let mut tcp_ends: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    let mut tcp_bytes: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for l in s.listeners.iter() {
        let e = listeners.entry(l.name.as_str()).or_default();
        e.cx_total += l.cx_total;
        e.cx_active += l.cx_active;
        e.tls_handshake_failures += l.tls_handshake_failures;
        e.cx_overflow += l.cx_overflow;
        for tcp in &l.tcp {
            let at = |label| (l.name.as_str(), tcp.cluster.as_str(), label);
            for &(reason, n) in &tcp.ends {
                let reason = if reason == NO_REASON { "closed" } else { reason };
                *tcp_ends.entry(at(reason)).or_default() += n;
            }
            for (direction, n) in ["from_client", "from_upstream"].into_iter().zip(tcp.bytes) {
                *tcp_bytes.entry(at(direction)).or_default() += n;
            }
        }
    }
    for (m, value) in LISTENER_COLUMNS {
        out.family(m);
        for (&l, totals) in &listeners {
            out.sample(m, "", &[l], None, value(totals));
        }
    }
    out.family(&names::TCP_CONNECTIONS_TOTAL);
    for (&(l, cluster, reason), &n) in &tcp_ends {
        out.sample(&names::TCP_CONNECTIONS_TOTAL, "", &[l, cluster, reason], None, n);
    }
    out.family(&names::TCP_BYTES_TOTAL);
    for (&(l, cluster, direction), &n) in &tcp_bytes {
        out.sample(&names::TCP_BYTES_TOTAL, "", &[l, cluster, direction], None, n);
    }

    // Interning makes (cluster, endpoint) unique within a shard; sort for stable output.
    let mut endpoints: Vec<(&str, &EndpointStats)> = s
        .endpoints
        .iter()
        .map(|e| (s.clusters.get(e.cluster.index()).map_or("", |c| c.name.as_str()), e))
        .collect();
    endpoints.sort_by(|a, b| (a.0, &a.1.endpoint).cmp(&(b.0, &b.1.endpoint)));
    for (m, value) in ENDPOINT_COLUMNS {
        out.family(m);
        for (cluster, e) in &endpoints {
            out.sample(m, "", &[cluster, &e.endpoint], None, value(e));
        }
    }

    let mut overflow: BTreeMap<&str, u64> = BTreeMap::new();
    for c in s.clusters.iter() {
        *overflow.entry(c.name.as_str()).or_default() += c.overflow;
    }
    out.family(&names::UPSTREAM_RQ_OVERFLOW_TOTAL);
    for (c, n) in overflow {
        out.sample(&names::UPSTREAM_RQ_OVERFLOW_TOTAL, "", &[c], None, n);
    }
    let mut panic: BTreeMap<&str, u64> = BTreeMap::new();
    for c in s.clusters.iter() {
        *panic.entry(c.name.as_str()).or_default() += c.panic;
    }
    out.family(&names::UPSTREAM_PANIC_TOTAL);
    for (c, n) in panic {
        out.sample(&names::UPSTREAM_PANIC_TOTAL, "", &[c], None, n);
    }
    let mut mirrored: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for c in s.clusters.iter() {
        for &(result, n) in &c.mirrored {
            *mirrored.entry((c.name.as_str(), result)).or_default() += n;
        }
    }
    out.family(&names::MIRROR_REQUESTS_TOTAL);
    for ((c, result), n) in mirrored {
        out.sample(&names::MIRROR_REQUESTS_TOTAL, "", &[c, result], None, n);
    }
    out.family(&names::ACCESS_LOG_DROPPED_TOTAL);
    out.sample(&names::ACCESS_LOG_DROPPED_TOTAL, "", &[], None, s.access_log_dropped);
}

fn flags(list: &[(String, String, bool)]) -> BTreeMap<(&str, &str), bool> {
    let mut map: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for (cluster, endpoint, on) in list {
        *map.entry((cluster.as_str(), endpoint.as_str())).or_default() |= on;
    }
    map
}

fn process(out: &mut Out, g: &Gauges) {
    for (m, list) in [
        (&names::CIRCUIT_BREAKER_OPEN, &g.circuit_breaker_open),
        (&names::ENDPOINT_HEALTHY, &g.endpoint_healthy),
    ] {
        out.family(m);
        for ((cluster, endpoint), on) in flags(list) {
            out.sample(m, "", &[cluster, endpoint], None, u8::from(on));
        }
    }
    out.family(&names::CONFIG_GENERATION);
    out.sample(&names::CONFIG_GENERATION, "", &[], None, g.config_generation);
    out.family(&names::CONFIG_RELOADS_TOTAL);
    out.sample(&names::CONFIG_RELOADS_TOTAL, "", &["ok"], None, g.reloads_ok);
    out.sample(&names::CONFIG_RELOADS_TOTAL, "", &["failed"], None, g.reloads_failed);
    out.family(&names::TLS_CERTIFICATE_ROTATIONS_TOTAL);
    out.sample(
        &names::TLS_CERTIFICATE_ROTATIONS_TOTAL,
        "",
        &["ok"],
        None,
        g.cert_rotations_ok,
    );
    out.sample(
        &names::TLS_CERTIFICATE_ROTATIONS_TOTAL,
        "",
        &["failed"],
        None,
        g.cert_rotations_failed,
    );
    let mut refreshes: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (cluster, result, n) in &g.discovery_refreshes {
        *refreshes.entry((cluster.as_str(), result)).or_default() += n;
    }
    out.family(&names::DISCOVERY_REFRESHES_TOTAL);
    for ((cluster, result), n) in refreshes {
        out.sample(&names::DISCOVERY_REFRESHES_TOTAL, "", &[cluster, result], None, n);
    }
    // ringway_admin_requests_total is the admin endpoint's own to report.
    out.family(&names::WORKERS);
    out.sample(&names::WORKERS, "", &[], None, g.workers);
    out.family(&names::START_TIME_SECONDS);
    out.sample(&names::START_TIME_SECONDS, "", &[], None, g.start_time_seconds);
    out.family(&names::BUILD_INFO);
    out.sample(&names::BUILD_INFO, "", &[env!("CARGO_PKG_VERSION")], None, 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn label_values_are_escaped() {
        let mut shard = Shard::new();
        let k = shard.route_key("l\\1", "r\"2", "c\n3");
        shard.request(k, 200, Duration::from_millis(1));
        let text = render(&shard, &Gauges::default());
        let expected =
            "ringway_requests_total{listener=\"l\\\\1\",route=\"r\\\"2\",cluster=\"c\\n3\",code=\"200\"} 1\n";
        assert!(text.contains(expected), "{text}");
    }
}
