//! The files shipped in config/ next to the binary must keep working as the
//! code moves: every example TOML compiles with the same loader `ringway run`
//! and `ringway check` use, the examples still show what their comments say,
//! and the Prometheus rules and Grafana dashboard only name metric families
//! that `/metrics` actually exposes.

use ringway::config::{load_file, LbKind, ListenerKind, LogTarget, Snapshot, Target};
use ringway::metrics::names::{self, Kind};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// Files directly under `dir` whose name ends with one of `extensions`, sorted.
fn files(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| extensions.contains(&x))
        })
        .collect();
    out.sort();
    out
}

fn load(name: &str) -> Snapshot {
    let path = config_dir().join(name);
    load_file(&path, 1).unwrap_or_else(|e| panic!("{name} does not compile:\n{e}"))
}

#[test]
fn every_shipped_config_compiles() {
    let tomls = files(&config_dir(), &["toml"]);
    let names: BTreeSet<String> = tomls
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect();
    for expected in [
        "ringway.toml",
        "demo.toml",
        "quickstart.toml",
        "canary.toml",
        "failover.toml",
    ] {
        assert!(
            names.contains(expected),
            "config/{expected} is missing; found {names:?}"
        );
    }
    let failures: Vec<String> = tomls
        .iter()
        .filter_map(|p| load_file(p, 1).err().map(|e| e.to_string()))
        .collect();
    assert!(
        failures.is_empty(),
        "shipped configs that do not compile:\n{}",
        failures.join("\n")
    );
}

#[test]
fn quickstart_shows_a_health_checked_pooled_cluster() {
    let s = load("quickstart.toml");
    assert_eq!((s.listeners.len(), s.clusters.len()), (1, 1));
    let web = &s.clusters[0];
    assert!(web.health_check.is_some(), "quickstart documents health_check");
    assert_eq!(web.pool.max_idle_per_endpoint, 64);
}

#[test]
fn canary_splits_95_5_behind_a_header_route() {
    let s = load("canary.toml");
    let ListenerKind::Http { routes } = &s.listeners[0].kind else {
        panic!("canary.toml: the listener should be http");
    };
    let cluster = |i: usize| s.clusters[i].name.as_str();
    let header = &routes[0];
    assert_eq!(
        header.matcher.headers,
        vec![("x-canary".to_string(), Some(b"1".to_vec()))]
    );
    assert!(matches!(header.target, Target::Cluster(i) if cluster(i) == "shop-v2"));
    let Target::Split(parts) = &routes[1].target else {
        panic!("canary.toml: the second route should be a split");
    };
    let split: Vec<(&str, u32)> = parts.iter().map(|p| (cluster(p.cluster), p.weight)).collect();
    assert_eq!(split, [("shop-v1", 95), ("shop-v2", 5)]);
    assert!(s.clusters.iter().all(|c| c.lb == LbKind::P2cEwma));
    let admin = s.admin.expect("canary.toml has an [admin] section");
    assert!(admin.address.ip().is_loopback(), "admin stays on loopback");
    assert_eq!(s.access_log.target, LogTarget::Stdout);
}

#[test]
fn failover_has_checked_local_and_remote_priorities() {
    let s = load("failover.toml");
    let orders = &s.clusters[0];
    assert!(orders.health_check.as_ref().is_some_and(|h| h.http_path.is_some()));
    for e in &orders.endpoints {
        let expected = match e.priority {
            0 => "local",
            1 => "remote",
            other => panic!("unexpected priority {other}"),
        };
        assert_eq!(e.zone.as_deref(), Some(expected), "{}", e.address);
    }
    let levels: BTreeSet<u32> = orders.endpoints.iter().map(|e| e.priority).collect();
    assert_eq!(levels, BTreeSet::from([0, 1]));
}

/// Every `ringway_*` token in `text`.
fn metric_tokens(text: &str) -> BTreeSet<&str> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("ringway_") {
        let start = from + at;
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let len = text[start..]
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        if !preceded {
            out.insert(&text[start..start + len]);
        }
        from = start + len;
    }
    out
}

/// Names a query may use: every family, plus the series suffixes of histograms.
fn exposed_names() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in names::ALL {
        out.insert(m.name.to_string());
        if m.kind == Kind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{}{suffix}", m.name));
            }
        }
    }
    out
}

#[test]
fn rules_and_dashboard_name_only_exposed_metrics() {
    let exposed = exposed_names();
    let mut shipped = files(&config_dir().join("prometheus"), &["yml", "yaml"]);
    shipped.extend(files(&config_dir().join("grafana"), &["json"]));
    assert!(shipped.len() >= 3, "alerts, alert tests and the dashboard: {shipped:?}");
    let mut unknown = Vec::new();
    for path in &shipped {
        let text = std::fs::read_to_string(path).expect("read shipped file");
        let used = metric_tokens(&text);
        assert!(!used.is_empty(), "{} names no metric", path.display());
        for name in used {
            if !exposed.contains(name) {
                unknown.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not in src/metrics/names.rs:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn metric_tokens_are_whole_names() {
    let found = metric_tokens("rate(ringway_requests_total{x=\"a\"}[5m]) my_ringway_x ringway-proxy");
    assert_eq!(found, BTreeSet::from(["ringway_requests_total"]));
}
