//! Shards recorded as several workers would, merged, rendered and read back:
//! totals must add up exactly, histograms must be cumulative and agree with
//! `_count`, every family must come from the name table, and the text must
//! pass `promtool check metrics` where promtool is installed.

use super::*;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Sample lines as `series -> value`, and the families in `# HELP` order.
fn parse(text: &str) -> (HashMap<String, f64>, Vec<String>) {
    let mut samples = HashMap::new();
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            families.push(rest.split(' ').next().unwrap_or("").to_owned());
        } else if !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value.parse().expect("numeric value");
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "duplicate series {series}"
            );
        }
    }
    (samples, families)
}

fn get(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("missing {series}"))
}

const LISTENERS: [&str; 2] = ["ingress", "edge \"quoted\""];
const ROUTES: [(&str, &str); 4] = [
    ("api", "api-v1"),
    ("api", "api-v2"),
    ("web", "web"),
    ("path\\with\nnewline", "web"),
];
const ENDPOINTS: [(&str, &str); 3] = [
    ("api-v1", "10.0.0.1:80"),
    ("api-v2", "10.0.0.2:80"),
    ("web", "[::1]:9000"),
];
const CODES: [u16; 4] = [200, 200, 503, 404];

/// What one worker saw, as label values, so the test can total it
/// independently of the shard's keys.
#[derive(Default)]
struct Expected {
    requests: BTreeMap<(String, String, String, u16), u64>,
    durations: BTreeMap<(String, String, String), Vec<u64>>,
    local: BTreeMap<(String, String), u64>,
    retries: u64,
    connects: u64,
    connect_fails: u64,
    active: i64,
}

/// Log-uniform from 1µs to ~40s, a quarter of them on or next to a bucket bound.
fn duration_us(rng: &mut fastrand::Rng) -> u64 {
    if rng.u8(..4) == 0 {
        let (bound, _) = latency::BUCKETS[rng.usize(..latency::BUCKETS.len())];
        return bound - 1 + rng.u64(..3);
    }
    (rng.f64() * 17.5).exp() as u64
}

/// Build one worker's shard. Each worker interns in a different order, so
/// the same labels get different keys in different shards.
fn worker(seed: u64, exp: &mut Expected) -> Shard {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut shard = Shard::new();
    let mut order: Vec<usize> = (0..ROUTES.len() * LISTENERS.len()).collect();
    rng.shuffle(&mut order);
    let mut keys = Vec::new();
    for i in order {
        let (l, (r, c)) = (LISTENERS[i % 2], ROUTES[i / 2]);
        keys.push((shard.route_key(l, r, c), (l, r, c)));
    }
    let eps: Vec<_> = ENDPOINTS.iter().map(|(c, e)| shard.endpoint_key(c, e)).collect();
    let listener = shard.listener_key(LISTENERS[0]);
    for _ in 0..500 {
        let (key, (l, r, c)) = keys[rng.usize(..keys.len())];
        let status = CODES[rng.usize(..CODES.len())];
        let us = duration_us(&mut rng);
        shard.request(key, status, Duration::from_micros(us));
        let labels = (l.to_owned(), r.to_owned(), c.to_owned());
        *exp.requests
            .entry((labels.0.clone(), labels.1.clone(), labels.2.clone(), status))
            .or_default() += 1;
        exp.durations.entry(labels).or_default().push(us);
        if rng.bool() {
            shard.retry(key);
            exp.retries += 1;
        }
        let ep = eps[rng.usize(..eps.len())];
        let ok = rng.u8(..4) > 0;
        shard.upstream_connect(ep, ok);
        shard.pool(ep, !ok);
        shard.upstream_active(ep, 1);
        exp.connects += 1;
        exp.connect_fails += u64::from(!ok);
        exp.active += 1;
    }
    for reason in ["no-route", "no-route", "header-read-timeout"] {
        let d = duration_us(&mut rng);
        shard.unrouted(listener, Some(reason), 404, Duration::from_micros(d));
        *exp.requests
            .entry((LISTENERS[0].into(), String::new(), String::new(), 404))
            .or_default() += 1;
        exp.durations
            .entry((LISTENERS[0].into(), String::new(), String::new()))
            .or_default()
            .push(d);
        *exp.local.entry((LISTENERS[0].into(), reason.into())).or_default() += 1;
    }
    shard.set_access_log_dropped(seed);
    shard
}

fn merged_workers(n: u64) -> (Shard, Expected) {
    let mut exp = Expected::default();
    let mut merged = Shard::new();
    for seed in 1..=n {
        merged.merge(&worker(seed, &mut exp));
    }
    (merged, exp)
}

fn gauges() -> Gauges {
    Gauges {
        config_generation: 7,
        reloads_ok: 6,
        reloads_failed: 1,
        cert_rotations_ok: 2,
        cert_rotations_failed: 0,
        discovery_refreshes: vec![
            ("web".into(), "failed", 0),
            ("api-v1".into(), "updated", 2),
            ("web".into(), "failed", 3),
        ],
        endpoint_healthy: vec![
            ("web".into(), "[::1]:9000".into(), true),
            ("api-v1".into(), "10.0.0.1:80".into(), false),
        ],
        circuit_breaker_open: vec![
            ("web".into(), "[::1]:9000".into(), false),
            ("web".into(), "[::1]:9000".into(), true),
        ],
        workers: 4,
        start_time_seconds: 1_700_000_000,
    }
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut s = format!("{name}{{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{k}=\""));
        render::escape_label(&mut s, v);
        s.push('"');
    }
    s.push('}');
    s
}

#[test]
fn merged_counts_add_up_exactly() {
    let (merged, exp) = merged_workers(4);
    let (samples, _) = parse(&render(&merged, &Gauges::default()));
    for ((l, r, c, code), n) in &exp.requests {
        let code = code.to_string();
        let labels = [("listener", l.as_str()), ("route", r), ("cluster", c), ("code", &code)];
        assert_eq!(get(&samples, &series("ringway_requests_total", &labels)), *n as f64);
    }
    let total: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("ringway_requests_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, exp.requests.values().sum::<u64>() as f64);
    for ((l, reason), n) in &exp.local {
        let s = series("ringway_local_replies_total", &[("listener", l), ("reason", reason)]);
        assert_eq!(get(&samples, &s), *n as f64);
    }
    let sum_of = |prefix: &str| -> f64 {
        samples
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(sum_of("ringway_upstream_rq_retry_total{"), exp.retries as f64);
    assert_eq!(sum_of("ringway_upstream_cx_total{"), exp.connects as f64);
    assert_eq!(
        sum_of("ringway_upstream_cx_connect_fail_total{"),
        exp.connect_fails as f64
    );
    assert_eq!(sum_of("ringway_upstream_pool_hits_total{"), exp.connect_fails as f64);
    assert_eq!(sum_of("ringway_upstream_cx_active{"), exp.active as f64);
    assert_eq!(
        get(&samples, "ringway_access_log_dropped_total"),
        (1 + 2 + 3 + 4) as f64
    );
}

#[test]
fn histograms_are_cumulative_and_match_count_and_sum() {
    let (merged, exp) = merged_workers(3);
    let (samples, _) = parse(&render(&merged, &Gauges::default()));
    for ((l, r, c), values) in &exp.durations {
        let labels = [("listener", l.as_str()), ("route", r), ("cluster", c)];
        let base = "ringway_request_duration_seconds";
        let count = get(&samples, &series(&format!("{base}_count"), &labels));
        assert_eq!(count, values.len() as f64);
        let sum = get(&samples, &series(&format!("{base}_sum"), &labels));
        let exact: u64 = values.iter().sum();
        assert!((sum - exact as f64 / 1e6).abs() < 1e-6, "{sum} vs {exact}µs");
        let mut previous = 0.0;
        for (le_us, le) in latency::BUCKETS
            .iter()
            .map(|(us, s)| (*us, *s))
            .chain([(u64::MAX, "+Inf")])
        {
            let mut with_le = labels.to_vec();
            with_le.push(("le", le));
            let n = get(&samples, &series(&format!("{base}_bucket"), &with_le));
            assert!(n >= previous, "{le}: {n} < {previous}");
            // Exact to the histogram's resolution (1/128 of the bound).
            let at_most = values
                .iter()
                .filter(|&&v| v <= le_us.saturating_add(le_us / 128))
                .count();
            let surely = values.iter().filter(|&&v| v <= le_us).count();
            assert!(
                (surely as f64..=at_most as f64).contains(&n),
                "{le}: {n} not in {surely}..={at_most}"
            );
            previous = n;
        }
        assert_eq!(previous, count, "+Inf equals _count");
    }
}

#[test]
fn families_come_from_the_name_table_in_order() {
    let (merged, _) = merged_workers(2);
    let text = render(&merged, &gauges());
    let (samples, families) = parse(&text);
    // All but the admin endpoint's own count, which it appends.
    let rendered = &names::ALL[..names::ALL.len() - 1];
    assert_eq!(
        names::ALL.last().map(|m| m.name),
        Some(names::ADMIN_REQUESTS_TOTAL.name)
    );
    let table: Vec<_> = rendered.iter().map(|m| m.name.to_owned()).collect();
    assert_eq!(families, table);
    for m in rendered {
        assert!(
            text.contains(&format!("# TYPE {} {}\n", m.name, m.kind.as_str())),
            "{}",
            m.name
        );
    }
    assert_eq!(get(&samples, "ringway_config_generation"), 7.0);
    assert_eq!(get(&samples, "ringway_config_reloads_total{result=\"failed\"}"), 1.0);
    let failed = "ringway_discovery_refreshes_total{cluster=\"web\",result=\"failed\"}";
    assert_eq!(get(&samples, failed), 3.0, "repeats are summed");
    let open = "ringway_circuit_breaker_open{cluster=\"web\",endpoint=\"[::1]:9000\"}";
    assert_eq!(get(&samples, open), 1.0, "any open entry opens the series");
    assert_eq!(get(&samples, "ringway_workers"), 4.0);
}

#[test]
fn discovery_refreshes_render_sorted_with_zeroes_kept() {
    let gauges = Gauges {
        discovery_refreshes: vec![
            ("web".into(), "updated", 1),
            ("api".into(), "unchanged", 0),
            ("web".into(), "failed", 0),
            ("api".into(), "failed", 2),
            ("web".into(), "updated", 4),
        ],
        ..Gauges::default()
    };
    let text = render(&Shard::new(), &gauges);
    let lines: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("ringway_discovery_refreshes_total{"))
        .collect();
    assert_eq!(
        lines,
        [
            r#"ringway_discovery_refreshes_total{cluster="api",result="failed"} 2"#,
            r#"ringway_discovery_refreshes_total{cluster="api",result="unchanged"} 0"#,
            r#"ringway_discovery_refreshes_total{cluster="web",result="failed"} 0"#,
            r#"ringway_discovery_refreshes_total{cluster="web",result="updated"} 5"#,
        ]
    );
}

#[test]
fn empty_shard_renders_every_family() {
    let text = render(&Shard::new(), &Gauges::default());
    let (samples, families) = parse(&text);
    // All but the admin family, which the admin endpoint appends itself when
    // the control side has no per-handler breakdown.
    assert_eq!(families.len(), names::ALL.len() - 1);
    assert!(!samples.keys().any(|k| k.starts_with("ringway_requests_total")));
    assert!(samples.contains_key(&format!(
        "ringway_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    )));
}

#[test]
fn keys_are_stable_and_foreign_keys_are_harmless() {
    fn clone_and_send<T: Clone + Send + 'static>() {}
    clone_and_send::<Shard>();
    clone_and_send::<Gauges>();
    let mut shard = Shard::new();
    let a = shard.route_key("l", "r", "c");
    assert_ne!(shard.route_key("l", "r", "d"), a);
    assert_eq!(
        shard.route_key("l", "r", "c"),
        a,
        "re-interning after a plan rebuild keeps the key"
    );
    let e = shard.endpoint_key("c", "1.2.3.4:80");
    assert_eq!(shard.endpoint_key("c", "1.2.3.4:80"), e);
    // Keys minted by a bigger shard point past this one's vectors: ignored.
    let mut big = Shard::new();
    let foreign = (0..10).map(|i| big.route_key("x", &i.to_string(), "z")).last();
    let foreign_ep = (0..10).map(|i| big.endpoint_key("z", &i.to_string())).last();
    let (Some(foreign), Some(foreign_ep)) = (foreign, foreign_ep) else {
        unreachable!("ten keys each")
    };
    let mut small = Shard::new();
    small.request(foreign, 200, Duration::ZERO);
    small.retry(foreign);
    small.upstream_connect(foreign_ep, true);
    small.route_local_reply(foreign, "rate-limited", 429, Duration::ZERO);
    let empty = render(&Shard::new(), &Gauges::default());
    assert_eq!(render(&small, &Gauges::default()), empty);
}

#[test]
fn routed_local_replies_count_under_the_route_and_the_reason() {
    let mut shard = Shard::new();
    let k = shard.route_key("in", "api", "");
    shard.ratelimited(k);
    shard.route_local_reply(k, "rate-limited", 429, Duration::from_micros(30));
    let c = shard.cluster_key("api-v1");
    shard.overflow(c);
    let (samples, _) = parse(&render(&shard, &Gauges::default()));
    for want in [
        r#"ringway_requests_total{listener="in",route="api",cluster="",code="429"}"#,
        r#"ringway_local_replies_total{listener="in",reason="rate-limited"}"#,
        r#"ringway_ratelimit_rejected_total{listener="in",route="api"}"#,
        r#"ringway_upstream_rq_overflow_total{cluster="api-v1"}"#,
    ] {
        assert_eq!(get(&samples, want), 1.0, "{want}");
    }
    let retries = samples.keys().any(|k| k.starts_with("ringway_upstream_rq_retry_total"));
    assert!(!retries, "no cluster, no retry series");
}

#[test]
fn released_endpoints_leave_the_scrape_and_their_slots_are_reused() {
    let mut shard = Shard::new();
    let kept = shard.endpoint_key("web", "10.0.0.1:80");
    let gone = shard.endpoint_key("web", "10.0.0.2:80");
    shard.upstream_connect(kept, true);
    shard.upstream_connect(gone, false);
    shard.retain_endpoints([kept]);
    // A stale key records nothing once released.
    shard.ejection(gone);
    let text = render(&shard, &Gauges::default());
    assert!(!text.contains("10.0.0.2:80"), "{text}");
    let mut merged = Shard::new();
    merged.merge(&shard);
    assert_eq!(
        render(&merged, &Gauges::default()),
        text,
        "merging skips released slots"
    );

    // The next endpoint takes the freed slot and starts from zero.
    let fresh = shard.endpoint_key("api", "10.0.0.3:80");
    assert_eq!(fresh, gone, "the slot is reused");
    shard.pool(fresh, true);
    // The endpoint that left comes back under a new key, counting afresh.
    let back = shard.endpoint_key("web", "10.0.0.2:80");
    assert_ne!(back, gone);
    shard.pool(back, false);
    assert_eq!(shard.endpoint_key("web", "10.0.0.1:80"), kept, "kept keys stay");
    let (samples, _) = parse(&render(&shard, &Gauges::default()));
    for (series, want) in [
        (
            r#"ringway_upstream_cx_total{cluster="web",endpoint="10.0.0.1:80"}"#,
            1.0,
        ),
        (
            r#"ringway_upstream_pool_hits_total{cluster="api",endpoint="10.0.0.3:80"}"#,
            1.0,
        ),
        (
            r#"ringway_upstream_cx_total{cluster="api",endpoint="10.0.0.3:80"}"#,
            0.0,
        ),
        (
            r#"ringway_outlier_ejections_total{cluster="api",endpoint="10.0.0.3:80"}"#,
            0.0,
        ),
        (
            r#"ringway_upstream_pool_misses_total{cluster="web",endpoint="10.0.0.2:80"}"#,
            1.0,
        ),
        (
            r#"ringway_upstream_cx_connect_fail_total{cluster="web",endpoint="10.0.0.2:80"}"#,
            0.0,
        ),
    ] {
        assert_eq!(get(&samples, series), want, "{series}");
    }
}

#[test]
fn released_routes_leave_the_scrape_but_unrouted_series_stay() {
    let mut shard = Shard::new();
    let kept = shard.route_key("in", "web", "c");
    let gone = shard.route_key("in", "old", "c");
    let listener = shard.listener_key("in");
    shard.request(kept, 200, Duration::from_micros(10));
    shard.request(gone, 200, Duration::from_micros(10));
    shard.unrouted(listener, Some("no-route"), 404, Duration::from_micros(10));
    shard.retain_routes([kept]);
    shard.retry(gone); // a stale key records nothing
    let text = render(&shard, &Gauges::default());
    assert!(!text.contains("route=\"old\""), "{text}");
    let mut merged = Shard::new();
    merged.merge(&shard);
    assert_eq!(
        render(&merged, &Gauges::default()),
        text,
        "merging skips released slots"
    );
    let (samples, _) = parse(&text);
    for (series, want) in [
        (
            r#"ringway_requests_total{listener="in",route="web",cluster="c",code="200"}"#,
            1.0,
        ),
        (
            r#"ringway_requests_total{listener="in",route="",cluster="",code="404"}"#,
            1.0,
        ),
    ] {
        assert_eq!(get(&samples, series), want, "{series}");
    }
    // A new route takes the freed slot and starts from zero.
    let fresh = shard.route_key("in", "new", "c");
    assert_eq!(fresh, gone, "the slot is reused");
    let (samples, _) = parse(&render(&shard, &Gauges::default()));
    let fresh_retries = r#"ringway_upstream_rq_retry_total{listener="in",route="new",cluster="c"}"#;
    assert_eq!(get(&samples, fresh_retries), 0.0);
}

#[test]
fn connection_gauges_sum_across_workers() {
    let mut merged = Shard::new();
    for (opened, closed) in [(3, 1), (2, 2)] {
        let mut w = Shard::new();
        let l = w.listener_key("in");
        let ep = w.endpoint_key("web", "10.0.0.1:80");
        for _ in 0..opened {
            w.downstream_cx_opened(l);
            w.upstream_active(ep, 1);
        }
        for _ in 0..closed {
            w.downstream_cx_closed(l);
            w.upstream_active(ep, -1);
        }
        w.pool(ep, false);
        w.ejection(ep);
        merged.merge(&w);
    }
    let (samples, _) = parse(&render(&merged, &Gauges::default()));
    for (series, want) in [
        (r#"ringway_downstream_cx_total{listener="in"}"#, 5.0),
        (r#"ringway_downstream_cx_active{listener="in"}"#, 2.0),
        (
            r#"ringway_upstream_cx_active{cluster="web",endpoint="10.0.0.1:80"}"#,
            2.0,
        ),
        (
            r#"ringway_upstream_pool_misses_total{cluster="web",endpoint="10.0.0.1:80"}"#,
            2.0,
        ),
        (
            r#"ringway_outlier_ejections_total{cluster="web",endpoint="10.0.0.1:80"}"#,
            2.0,
        ),
        (
            r#"ringway_upstream_cx_total{cluster="web",endpoint="10.0.0.1:80"}"#,
            0.0,
        ),
    ] {
        assert_eq!(get(&samples, series), want, "{series}");
    }
}

#[test]
fn promtool_accepts_the_output() {
    let installed = Path::new("/usr/bin/promtool");
    let promtool = if installed.exists() {
        installed
    } else {
        Path::new("promtool")
    };
    let (merged, _) = merged_workers(4);
    let text = render(&merged, &gauges());
    let piped = Stdio::piped;
    let spawned = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(piped())
        .stdout(piped())
        .stderr(piped())
        .spawn();
    let Ok(mut child) = spawned else {
        eprintln!("note: promtool not found; skipping the exposition-format check");
        return;
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(text.as_bytes()).expect("write to promtool");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool runs");
    let report = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool:\n{report}\n---\n{text}"
    );
}

#[test]
fn injected_faults_count_per_route_and_kind_across_shards() {
    let mut a = Shard::new();
    let k = a.route_key("in", "ratings", "ratings-v1");
    a.fault_injected(k, true, false);
    a.fault_injected(k, true, true);
    let mut b = Shard::new();
    let k = b.route_key("in", "ratings", "ratings-v2");
    b.fault_injected(k, false, true);
    a.merge(&b);
    let (samples, _) = parse(&render(&a, &Gauges::default()));
    let delay = r#"ringway_faults_injected_total{listener="in",route="ratings",kind="delay"}"#;
    let abort = r#"ringway_faults_injected_total{listener="in",route="ratings",kind="abort"}"#;
    assert_eq!(get(&samples, delay), 2.0);
    assert_eq!(get(&samples, abort), 2.0, "summed over the split's clusters");

    // A route with faults that have not fired yet shows zeros.
    let mut armed = Shard::new();
    let k = armed.route_key("in", "quiet", "c");
    armed.arm_faults(k);
    let (samples, _) = parse(&render(&armed, &Gauges::default()));
    let quiet = r#"ringway_faults_injected_total{listener="in",route="quiet",kind="delay"}"#;
    assert_eq!(samples.get(quiet).copied(), Some(0.0));
}

#[test]
fn released_listeners_and_clusters_leave_unless_connections_remain() {
    let mut shard = Shard::new();
    let (kept, gone, busy) = (
        shard.listener_key("in"),
        shard.listener_key("old"),
        shard.listener_key("busy"),
    );
    shard.downstream_cx_opened(gone);
    shard.downstream_cx_closed(gone);
    shard.downstream_cx_opened(busy);
    let (web, api) = (shard.cluster_key("web"), shard.cluster_key("api"));
    shard.overflow(web);
    shard.overflow(api);
    shard.retain_listeners([kept]);
    shard.retain_clusters([web]);
    shard.retain_routes([]);
    let text = render(&shard, &Gauges::default());
    assert!(
        !text.contains("listener=\"old\"") && !text.contains("cluster=\"api\""),
        "{text}"
    );
    assert!(
        text.contains("ringway_downstream_cx_active{listener=\"busy\"} 1"),
        "a listener with a connection open stays: {text}"
    );
    assert!(
        text.contains("ringway_upstream_rq_overflow_total{cluster=\"web\"} 1"),
        "{text}"
    );
    // The open connection closes on the series it opened on.
    shard.downstream_cx_closed(busy);
    shard.retain_listeners([kept]);
    let text = render(&shard, &Gauges::default());
    assert!(!text.contains("listener=\"busy\""), "{text}");
    // A name that comes back counts afresh.
    let again = shard.cluster_key("api");
    assert_ne!(shard.clusters.get(again.index()).map(|c| c.overflow), Some(1));
}

#[test]
fn listener_overflow_and_tcp_connection_ends_sum_across_workers() {
    let mut merged = Shard::new();
    for reasons in [&["-", "forbidden", "-"][..], &["-", "idle-timeout"][..]] {
        let mut w = Shard::new();
        let l = w.listener_key("db");
        w.downstream_cx_overflow(l);
        for reason in reasons {
            w.tcp_connection_ended(l, "postgres", reason);
        }
        merged.merge(&w);
    }
    let (samples, _) = parse(&render(&merged, &Gauges::default()));
    let ended = |reason: &str| {
        format!(r#"ringway_tcp_connections_total{{listener="db",cluster="postgres",reason="{reason}"}}"#)
    };
    for (series, want) in [
        (
            r#"ringway_downstream_cx_overflow_total{listener="db"}"#.to_string(),
            2.0,
        ),
        (ended("closed"), 3.0),
        (ended("forbidden"), 1.0),
        (ended("idle-timeout"), 1.0),
    ] {
        assert_eq!(samples.get(&series), Some(&want), "{series}");
    }
    assert!(
        !samples.contains_key(&ended("-")),
        "a relay that ended by itself reads as closed"
    );
}

#[test]
fn tcp_bytes_sum_across_workers_by_direction() {
    let mut merged = Shard::new();
    for (from_client, from_upstream) in [(100, 2_000), (5, 0)] {
        let mut w = Shard::new();
        let l = w.listener_key("db");
        w.tcp_bytes(l, "postgres", true, from_client);
        w.tcp_bytes(l, "postgres", false, from_upstream);
        merged.merge(&w);
    }
    let (samples, _) = parse(&render(&merged, &Gauges::default()));
    let series = |direction: &str| {
        format!(r#"ringway_tcp_bytes_total{{listener="db",cluster="postgres",direction="{direction}"}}"#)
    };
    assert_eq!(samples.get(&series("from_client")), Some(&105.0));
    assert_eq!(samples.get(&series("from_upstream")), Some(&2_000.0));
}
