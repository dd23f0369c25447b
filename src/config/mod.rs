//! Configuration: TOML text → raw serde structs (unknown keys rejected) →
//! validated, compiled `Snapshot`. Every error carries FILE:LINE:COL. It
//! knows nothing of workers, sockets or the data path. The one module it
//! uses is `tls`, to read certificates and keys while compiling: a bad one is
//! then an error at its key like any other, and no swap publishes it.

mod compile;
pub mod endpoint_list;
mod local;
mod policies;
mod raw;
mod rewrite;
mod snapshot;
pub mod sources;
mod values;

pub use compile::DEFAULT_ROUTE_TIMEOUT;
pub use snapshot::*;
pub use values::{Dur, Size, Workers};

use std::fmt;
use std::path::Path;

/// One problem in a config text, located by line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// All problems found in one config text; nothing of it is applied.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub origin: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.origin, e.line, e.column, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parse, validate and compile `source`. `origin` names it in errors (a path,
/// or "admin"); `generation` is stamped on the snapshot.
pub fn parse(source: &str, origin: &str, generation: u64) -> Result<Snapshot, ConfigErrors> {
    compile_source(source, origin, generation, None)
}

/// As [`parse`], for a reload of `running`: a cluster that keeps its
/// endpoints file keeps its endpoints when the file cannot be read now.
pub fn parse_next(source: &str, origin: &str, running: &Snapshot) -> Result<Snapshot, ConfigErrors> {
    compile_source(source, origin, 0, Some(running))
}

fn compile_source(
    source: &str,
    origin: &str,
    generation: u64,
    running: Option<&Snapshot>,
) -> Result<Snapshot, ConfigErrors> {
    let located = |span: std::ops::Range<usize>, message: String| {
        let (line, column) = line_column(source, span.start);
        ConfigError { line, column, message }
    };
    let raw: raw::RawConfig = toml::from_str(source).map_err(|e| ConfigErrors {
        origin: origin.to_string(),
        errors: vec![located(e.span().unwrap_or(0..0), e.message().trim().to_string())],
    })?;
    compile::compile(raw, source, origin, generation, running).map_err(|problems| ConfigErrors {
        origin: origin.to_string(),
        errors: problems.into_iter().map(|p| located(p.span, p.message)).collect(),
    })
}

/// Read and compile a config file.
pub fn load_file(path: &Path, generation: u64) -> Result<Snapshot, ConfigErrors> {
    let source = read_file(path)?;
    parse(&source, &path.display().to_string(), generation)
}

/// A config file's text; bytes that are not UTF-8 are placed at the first.
pub fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ConfigErrors {
        origin: origin.clone(),
        errors: vec![ConfigError {
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let valid_up_to = e.utf8_error().valid_up_to();
        let valid = bytes
            .get(..valid_up_to)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default();
        error_at(valid, &origin, valid.len(), "the file is not valid UTF-8".to_string())
    })
}

/// One error at byte `offset` of `source`, named by `origin`.
pub fn error_at(source: &str, origin: &str, offset: usize, message: String) -> ConfigErrors {
    let (line, column) = line_column(source, offset);
    ConfigErrors {
        origin: origin.to_string(),
        errors: vec![ConfigError { line, column, message }],
    }
}

/// Where `source` writes the address of each endpoint of `cluster`, in
/// order, as (line, column): the positions its errors about an endpoint
/// carry. Empty when it does not parse or list them.
pub fn endpoint_positions(source: &str, cluster: &str) -> Vec<(usize, usize)> {
    let Ok(raw) = toml::from_str::<raw::RawConfig>(source) else {
        return Vec::new();
    };
    raw.clusters
        .iter()
        .find(|c| c.name.get_ref() == cluster)
        .and_then(|c| c.endpoints.as_ref())
        .map(|list| {
            list.get_ref()
                .iter()
                .map(|e| line_column(source, e.address.span().start))
                .collect()
        })
        .unwrap_or_default()
}

/// The 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before.get(line_start..).map(|s| s.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GOOD: &str = r#"
[runtime]
workers = 2

[[listener]]
name = "ingress"
address = "127.0.0.1:8080"

  [[listener.route]]
  name = "canary"
  match = { path_prefix = "/api/", headers = { "X-Canary" = "1" } }
  cluster = "v2"

  [[listener.route]]
  match = { host = "*.Example.com", method = "GET" }
  split = [ { cluster = "v1", weight = 90 }, { cluster = "v2", weight = 10 } ]
  timeout = "2s"

[[cluster]]
name = "v1"
lb = "p2c_ewma"
endpoints = [ { address = "127.0.0.1:9000" }, { address = "127.0.0.1:9001", weight = 3, zone = "b" } ]

[[cluster]]
name = "v2"
endpoints = [ { address = "127.0.0.1:9002" } ]
pool = { max_idle_per_endpoint = 4, idle_timeout = "5s" }
"#;

    fn errors_of(src: &str) -> Vec<ConfigError> {
        match parse(src, "t.toml", 1) {
            Ok(_) => panic!("config should have been rejected"),
            Err(e) => e.errors,
        }
    }

    #[test]
    fn compiles_a_full_config() {
        let s = parse(GOOD, "t.toml", 7).expect("valid config");
        assert_eq!(s.generation, 7);
        assert_eq!(s.runtime.workers, Workers::Count(2));
        assert_eq!(s.clusters.len(), 2);
        assert_eq!(s.clusters[0].lb, LbKind::P2cEwma);
        assert_eq!(s.clusters[0].endpoints[1].weight, 3);
        assert_eq!(s.clusters[1].pool.max_idle_per_endpoint, 4);
        let ListenerKind::Http { routes } = &s.listeners[0].kind else {
            panic!("http listener")
        };
        assert_eq!(routes[0].name, "canary");
        assert_eq!(
            routes[0].matcher.headers,
            vec![("x-canary".to_string(), Some(b"1".to_vec()))]
        );
        assert_eq!(routes[1].matcher.host, Some(HostPattern::Suffix("example.com".into())));
        assert_eq!(routes[1].timeout, std::time::Duration::from_secs(2));
        assert!(matches!(&routes[1].target, Target::Split(parts) if parts.len() == 2 && parts[1].cluster == 1));
    }

    #[test]
    fn listener_choices_take_their_words_and_are_for_http() {
        let defaults = &parse(GOOD, "t.toml", 1).expect("valid").listeners[0];
        assert_eq!(
            (defaults.lax_paths, defaults.forwarded_proto),
            (LaxPaths::Refuse, ForwardedProto::Keep)
        );
        let with = |key: &str, value: &str| {
            GOOD.replace(
                "address = \"127.0.0.1:8080\"\n",
                &format!("address = \"127.0.0.1:8080\"\n{key} = {value}\n"),
            )
        };
        let forward = parse(&with("lax_paths", "\"forward\""), "t.toml", 1).expect("valid");
        assert_eq!(forward.listeners[0].lax_paths, LaxPaths::Forward);
        let overwrite = parse(&with("forwarded_proto", "\"overwrite\""), "t.toml", 1).expect("valid");
        assert_eq!(overwrite.listeners[0].forwarded_proto, ForwardedProto::Overwrite);
        for (key, words) in [
            ("lax_paths", "\"refuse\" or \"forward\""),
            ("forwarded_proto", "\"keep\" or \"overwrite\""),
        ] {
            let e = errors_of(&with(key, "\"allow\""));
            assert_eq!((e[0].line, e[0].message.clone()), (8, format!("{key} must be {words}")));
            let tcp = format!(
                "[[listener]]\nname = \"l4\"\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"c\"\n\
                 {key} = \"x\"\n[[cluster]]\nname = \"c\"\nendpoints = [ {{ address = \"127.0.0.1:1\" }} ]\n"
            );
            let e = errors_of(&tcp);
            assert_eq!(e[0].line, 6, "{e:?}");
            assert!(e[0].message.contains(&format!("{key} is for http")), "{e:?}");
        }
    }

    #[test]
    fn unknown_key_is_located() {
        let src = "[runtime]\nworkers = 1\npin_core = true\n";
        let e = errors_of(src);
        assert_eq!((e[0].line, e[0].column), (3, 1), "{e:?}");
        assert!(e[0].message.contains("pin_core"), "{e:?}");
    }

    #[test]
    fn bad_duration_is_located() {
        let src = "[runtime]\ndrain_timeout = \"30 parsecs\"\n";
        let e = errors_of(src);
        assert_eq!(e[0].line, 2, "{e:?}");
        assert!(e[0].message.contains("unknown unit"), "{e:?}");
    }

    #[test]
    fn missing_cluster_is_located_and_all_errors_reported() {
        let src = GOOD
            .replace("cluster = \"v2\"\n", "cluster = \"v3\"\n")
            .replace("\"p2c_ewma\"", "\"fastest\"");
        let e = errors_of(&src);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e
            .iter()
            .any(|e| e.message.contains("unknown cluster \"v3\"") && e.line == 12));
        assert!(e.iter().any(|e| e.message.contains("unknown lb \"fastest\"")));
    }

    #[test]
    fn admin_and_access_log_sections() {
        let dir = std::env::temp_dir().join(format!("ringway-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let token = dir.join("token");
        std::fs::write(&token, "s3cret\n").expect("token file");
        let log = dir.join("a.log");
        let src = format!(
            "[admin]\ntoken_file = {:?}\n[access_log]\ntarget = {:?}\n{GOOD}",
            token.display().to_string(),
            log.display().to_string()
        );
        let s = parse(&src, "t.toml", 1).expect("valid");
        let admin = s.admin.expect("admin on");
        assert_eq!(
            admin.address,
            "127.0.0.1:9901".parse().expect("addr"),
            "loopback by default"
        );
        assert_eq!(s.access_log.target, LogTarget::File(log.clone()));
        assert!(
            parse(GOOD, "t.toml", 1).expect("valid").admin.is_none(),
            "no [admin], no admin endpoint"
        );
        let e = errors_of(&format!("[access_log]\nformat = \"text\"\n{GOOD}"));
        assert_eq!(e[0].line, 2, "{e:?}");
        // What `run` would fail on is refused by the config, where written:
        // a log that cannot be opened, a token file missing or empty.
        let missing = dir.join("no-such-dir").join("a.log");
        let e = errors_of(&format!(
            "[access_log]\n\ntarget = {:?}\n{GOOD}",
            missing.display().to_string()
        ));
        assert_eq!((e[0].line, e[0].message.contains("no-such-dir")), (3, true), "{e:?}");
        std::fs::write(&token, "  \n").expect("empty token");
        let e = errors_of(&format!(
            "[admin]\ntoken_file = {:?}\n{GOOD}",
            token.display().to_string()
        ));
        assert_eq!((e[0].line, e[0].message.contains("empty")), (2, true), "{e:?}");
        let e = errors_of(&format!("[admin]\ntoken_file = \"/no/such/token\"\n{GOOD}"));
        assert_eq!(e[0].line, 2, "{e:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What is wrong with a route as a whole is reported where its table
    /// is; a health check's or breaker's values each where they are
    /// written, every one of them at once.
    #[test]
    fn problems_point_at_their_table_or_their_value() {
        let src = "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:8080\"\n\n  [[listener.route]]\n  \
                   match = { path_prefix = \"/\" }\n\n[[cluster]]\nname = \"c\"\n\
                   endpoints = [{ address = \"127.0.0.1:1\" }]\n\
                   health_check = { interval = \"0s\", unhealthy_threshold = 0, path = \"x\" }\n\n\
                   [[cluster]]\nname = \"d\"\nendpoints = [{ address = \"127.0.0.1:1\" }]\n\
                   circuit_breaker = { failure_ratio = 2.0, max_pending = 0 }\n  \
                   [cluster.health_check]\n  timeout = \"0ms\"\n  healthy_threshold = 0\n";
        let e = parse(src, "t.toml", 1).expect_err("eight problems");
        let at: Vec<(usize, usize)> = e.errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(
            at,
            [
                (5, 3),
                (11, 29),
                (11, 57),
                (11, 67),
                (16, 37),
                (16, 56),
                (18, 13),
                (19, 23)
            ],
            "the route without a target; the inline check's interval, threshold and \
             path; the breaker's ratio and cap; the table's timeout and threshold: {e}"
        );
    }

    /// What the data path would not retry on is refused, not dropped.
    #[test]
    fn retry_conditions_are_words_or_three_digit_codes() {
        for on in ["\"0503\"", "\"+503\"", "\"50\"", "\"600\"", "\"resets\""] {
            let src = with_split_route_edits(&format!("  retry = {{ attempts = 2, on = [\"reset\", {on}] }}\n"));
            let e = parse(&src, "t.toml", 1)
                .err()
                .unwrap_or_else(|| panic!("accepted {on}"));
            assert!(e.to_string().contains("unknown retry condition"), "{on}: {e}");
        }
        // Nothing to retry on is a policy that never retries.
        let none = with_split_route_edits("  retry = { attempts = 2, on = [] }\n");
        let e = errors_of(&none);
        assert!(e[0].message.contains("retry.on is empty"), "{e:?}");
    }

    /// Ejections and a breaker's window and open time of zero would be
    /// policies that never hold: refused at the value.
    #[test]
    fn policy_periods_are_above_zero() {
        for policy in [
            "outlier = { base_ejection = \"0s\" }",
            "outlier = { max_ejection = \"0ms\" }",
            "circuit_breaker = { consecutive_failures = 3, window = \"0s\" }",
            "circuit_breaker = { consecutive_failures = 3, open_for = \"0s\" }",
        ] {
            let src = GOOD.replace("lb = \"p2c_ewma\"", &format!("lb = \"p2c_ewma\"\n{policy}"));
            let e = errors_of(&src);
            assert!(e[0].message.contains("must be above zero"), "{policy}: {e:?}");
            let line = src.find(policy).map(|at| line_column(&src, at).0);
            assert_eq!(Some(e[0].line), line, "{policy}: {e:?}");
        }
    }

    /// `[listener]` for `[[listener]]` (and the like) says what is wanted.
    #[test]
    fn a_single_table_for_an_array_of_tables_says_so() {
        let one_of_each = "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n\
                           [[listener.route]]\ncluster = \"c\"\n\
                           [[cluster]]\nname = \"c\"\nendpoints = []\n";
        for (single, double) in [
            ("[[listener]]", "[listener]"),
            ("[[cluster]]", "[cluster]"),
            ("[[listener.route]]", "[listener.route]"),
        ] {
            let src = one_of_each.replace(single, double);
            let e = errors_of(&src);
            assert!(e[0].message.contains("[[double-bracketed]]"), "{double}: {e:?}");
        }
    }

    /// An endpoint's zero weight is told at the weight, not its address.
    #[test]
    fn a_zero_endpoint_weight_is_placed_at_the_weight() {
        let src = GOOD.replace(
            "{ address = \"127.0.0.1:9000\" }",
            "{ address = \"127.0.0.1:9000\", weight = 0 }",
        );
        let e = errors_of(&src);
        let at = src
            .find("weight = 0 }")
            .map(|i| line_column(&src, i + "weight = ".len()));
        assert_eq!(Some((e[0].line, e[0].column)), at, "{e:?}");
    }

    /// A header to hash on is for a balancer that hashes.
    #[test]
    fn hash_header_needs_ring_hash() {
        let src = GOOD.replace("lb = \"p2c_ewma\"", "lb = \"p2c_ewma\"\nhash_header = \"x-user\"");
        let e = errors_of(&src);
        assert!(e[0].message.contains("ring_hash"), "{e:?}");
        let hashed = GOOD.replace("lb = \"p2c_ewma\"", "lb = \"ring_hash\"\nhash_header = \"x-user\"");
        assert!(parse(&hashed, "t.toml", 1).is_ok());
    }

    /// An http check of a `dns` cluster names the host by the cluster's
    /// name unless told otherwise; of other clusters, by no name (the
    /// checker then uses the endpoint's address).
    #[test]
    fn dns_clusters_are_checked_by_their_name() {
        let with = |source: &str, check: &str| {
            let toml = format!(
                "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[listener.route]]\ncluster = \"c\"\n\
                 [[cluster]]\nname = \"c\"\n{source}\nhealth_check = {{ {check} }}\n"
            );
            let snapshot = parse(&toml, "t", 1).expect("valid");
            snapshot.clusters[0].health_check.as_ref().and_then(|h| h.host.clone())
        };
        let dns = "dns = \"localhost:8080\"";
        assert_eq!(with(dns, "path = \"/h\""), Some("localhost:8080".to_string()));
        assert_eq!(with(dns, "path = \"/h\", host = \"svc\""), Some("svc".to_string()));
        assert_eq!(with(dns, "protocol = \"tcp\""), None, "a tcp check sends nothing");
        assert_eq!(
            with("endpoints = [{ address = \"127.0.0.1:1\" }]", "path = \"/h\""),
            None
        );
    }

    #[test]
    fn resilience_sections() {
        let src = with_split_route_edits("  retry = { attempts = 3, on = [\"connect-failure\", \"503\"], per_try_timeout = \"500ms\" }\n  rate_limit = { rps = 100, burst = 10, key = \"header:X-User\" }\n")
            .replace(
                "pool = { max_idle_per_endpoint = 4, idle_timeout = \"5s\" }\n",
                "pool = { max_idle_per_endpoint = 4, idle_timeout = \"5s\" }\noutlier = { consecutive_5xx = 3, base_ejection = \"1s\" }\ncircuit_breaker = { max_requests = 10, consecutive_failures = 3 }\nretry_budget = { ratio = 0.5 }\n",
            );
        let s = parse(
            &format!("[runtime]\nzone = \"a\"\n{}", src.replacen("[runtime]\n", "", 1)),
            "t.toml",
            1,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.runtime.zone.as_deref(), Some("a"));
        let ListenerKind::Http { routes } = &s.listeners[0].kind else {
            panic!("http")
        };
        let retry = routes[1].retry.as_ref().expect("retry");
        assert_eq!((retry.attempts, retry.on.len()), (3, 2));
        assert_eq!(
            routes[1]
                .rate_limit
                .as_ref()
                .map(|r| (r.key.clone(), r.milli_rps, r.burst)),
            Some((RateKey::Header("x-user".into()), 100_000, 10))
        );
        // Rates under one a second; the burst is at least one request.
        let slow = parse(
            &GOOD.replacen(
                "address = \"127.0.0.1:8080\"",
                "address = \"127.0.0.1:8080\"\nrate_limit = { rps = 0.5 }",
                1,
            ),
            "t.toml",
            1,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let limit = slow.listeners[0].limits.rate_limit.as_ref().expect("listener limit");
        assert_eq!((limit.milli_rps, limit.burst), (500, 1));
        let v2 = &s.clusters[1];
        assert_eq!(v2.outlier.as_ref().map(|o| o.consecutive_5xx), Some(3));
        let breaker = v2.circuit_breaker.as_ref().expect("breaker");
        assert_eq!(
            (
                breaker.max_requests,
                breaker.endpoint.as_ref().map(|e| e.consecutive_failures)
            ),
            (10, Some(3))
        );
        assert_eq!(v2.retry_budget.ratio, 0.5);
        let bad = src.replace("\"503\"]", "\"sometimes\"]");
        assert!(parse(&bad, "t.toml", 1)
            .expect_err("bad word")
            .to_string()
            .contains("sometimes"));
    }

    #[test]
    fn cluster_tls_needs_its_ca() {
        let src = format!("{GOOD}tls = {{ cert = \"x\" }}\n");
        let e = errors_of(&src);
        assert!(e[0].message.contains("missing field `ca`"), "{e:?}");
    }

    #[test]
    fn invalid_values_rejected() {
        for (bad, needle) in [
            ("address = \"127.0.0.1:8080\"", "address = \"nowhere\""),
            ("\"/api/\"", "\"api/\""),
            ("method = \"GET\"", "method = \"get\""),
            (
                "{ cluster = \"v1\", weight = 90 }, { cluster = \"v2\", weight = 10 }",
                "{ cluster = \"v1\", weight = 0 }",
            ),
            ("host = \"*.Example.com\"", "host = \"a.com:80\""),
            ("host = \"*.Example.com\"", "host = \"*..example.com\""),
            ("host = \"*.Example.com\"", "host = \"*.\""),
            ("host = \"*.Example.com\"", "host = \"a..b\""),
            ("host = \"*.Example.com\"", "host = \"api.local..\""),
            ("path_prefix = \"/api/\"", "path_prefix = \"/%61pi/\""),
            ("path_prefix = \"/api/\"", "path_prefix = \"/api/./v1/\""),
            // An IPv6 address without brackets: where its port begins is a guess.
            ("address = \"127.0.0.1:9000\"", "address = \"::1:9000\""),
            ("address = \"127.0.0.1:9000\"", "address = \"localhost\""),
            // A header value no request can carry never matches.
            ("\"X-Canary\" = \"1\"", "\"X-Canary\" = \" 1\""),
            ("\"X-Canary\" = \"1\"", "\"X-Canary\" = \"1\\r\\n\""),
            // Names label metrics and key admin paths.
            ("name = \"canary\"", "name = \"\""),
            ("name = \"ingress\"", "name = \" ingress\""),
            ("name = \"v1\"", "name = \"v\\n1\""),
        ] {
            let src = GOOD.replace(bad, needle);
            assert!(parse(&src, "t.toml", 1).is_err(), "accepted {needle}");
        }
        // A dns name must be HOST:PORT, told at the value.
        for name in ["[::1", ":80", "http://localhost:80", "::1:53"] {
            let src = GOOD.replace(
                "endpoints = [ { address = \"127.0.0.1:9002\" } ]",
                &format!("dns = {name:?}"),
            );
            let e = errors_of(&src);
            assert!(
                e.iter().any(|e| e.message.contains("is not HOST:PORT")),
                "{name}: {e:?}"
            );
        }
        // Paths no request path can hold: a query, a fragment, a space or
        // other bytes outside visible ASCII. Each error at its value.
        for needle in [
            "path = \"/a?x=1\"",
            "path = \"/a#f\"",
            "path_prefix = \"/a b\"",
            "path_prefix = \"/caf\u{e9}\"",
            "path_prefix = \"/a\\t\"",
        ] {
            let src = GOOD.replace("path_prefix = \"/api/\"", needle);
            let e = errors_of(&src);
            assert_eq!(e.len(), 1, "{needle}: {e:?}");
            assert!(e[0].message.contains("can never match"), "{needle}: {e:?}");
            let at = src.find(needle).map(|i| i + needle.find('"').unwrap_or(0));
            assert_eq!(
                Some((e[0].line, e[0].column)),
                at.map(|i| line_column(&src, i)),
                "{needle}"
            );
        }
        let both = GOOD.replace("cluster = \"v2\"\n\n  [[", "cluster = \"v2\"\n  split = []\n\n  [[");
        assert!(parse(&both, "t.toml", 1).is_err());
        // A fully qualified name's one trailing dot is dropped, as from requests.
        let fqdn = GOOD.replace("host = \"*.Example.com\"", "host = \"*.Example.com.\"");
        assert_eq!(parse(&fqdn, "t.toml", 1).map(|s| s.generation).ok(), Some(1), "{fqdn}");
    }

    #[test]
    fn dns_family_picks_addresses_and_takes_its_words() {
        let endpoint = |address: &str| Endpoint {
            address: address.parse().expect("address"),
            weight: 1,
            zone: None,
            priority: 0,
        };
        // The addresses `family` keeps of `found`, as text.
        let picked = |family: DnsFamily, found: &[&str]| -> Vec<String> {
            let found = found.iter().map(|a| endpoint(a)).collect();
            family.pick(found).iter().map(|e| e.address.to_string()).collect()
        };
        let both = ["127.0.0.1:80", "[::1]:80"];
        assert_eq!(picked(DnsFamily::V4Preferred, &both), ["127.0.0.1:80"]);
        assert_eq!(picked(DnsFamily::V4Preferred, &["[::1]:80"]), ["[::1]:80"]);
        assert_eq!(picked(DnsFamily::V6Preferred, &both), ["[::1]:80"]);
        assert_eq!(picked(DnsFamily::V6Preferred, &["127.0.0.1:80"]), ["127.0.0.1:80"]);
        assert!(picked(DnsFamily::V4Only, &["[::1]:80"]).is_empty());
        assert_eq!(picked(DnsFamily::V6Only, &both), ["[::1]:80"]);
        assert_eq!(picked(DnsFamily::All, &both), both);

        let dns = |extra: &str| {
            GOOD.replace(
                "endpoints = [ { address = \"127.0.0.1:9002\" } ]",
                &format!("dns = \"[::1]:9002\"\n{extra}"),
            )
        };
        let family_of = |src: &str| match &parse(src, "t.toml", 1).expect("valid").clusters[1].source {
            EndpointSource::Dns { family, .. } => *family,
            other => panic!("a dns cluster: {other:?}"),
        };
        assert_eq!(family_of(&dns("")), DnsFamily::V4Preferred);
        assert_eq!(family_of(&dns("dns_family = \"v6_only\"")), DnsFamily::V6Only);
        // The filter applies from the first resolution on.
        let v4_only = parse(&dns("dns_family = \"v4_only\""), "t.toml", 1).expect("valid");
        assert!(v4_only.clusters[1].endpoints.is_empty());
        let errors = errors_of(&dns("dns_family = \"ipv4\""));
        assert!(
            errors[0].message.contains("dns_family must be one of \"v4_preferred\""),
            "{errors:?}"
        );
        let static_list = GOOD.replace(
            "endpoints = [ { address = \"127.0.0.1:9002\" } ]",
            "endpoints = [ { address = \"127.0.0.1:9002\" } ]\ndns_family = \"all\"",
        );
        assert!(errors_of(&static_list)[0].message.contains("dns_family needs dns"));
    }

    #[test]
    fn a_route_names_an_ipv6_literal_host_in_brackets() {
        let host_of = |host: &str| {
            let src = GOOD.replace("host = \"*.Example.com\"", &format!("host = {host:?}"));
            let s = parse(&src, "t.toml", 1).expect("valid config");
            let ListenerKind::Http { routes } = &s.listeners[0].kind else {
                panic!("http listener")
            };
            routes[1].matcher.host.clone()
        };
        // Kept in the canonical spelling requests' literals are compared in.
        assert_eq!(host_of("[::1]"), Some(HostPattern::Exact("[::1]".into())));
        assert_eq!(host_of("[0:0:0:0:0:0:0:1]"), Some(HostPattern::Exact("[::1]".into())));
        assert_eq!(host_of("[FE80::A]"), Some(HostPattern::Exact("[fe80::a]".into())));
        assert_eq!(host_of("127.0.0.1"), Some(HostPattern::Exact("127.0.0.1".into())));
        for (bad, needle) in [
            ("::1", "an IPv6 address goes in brackets: [::1]"),
            ("[::1]:80", "must be an IPv6 address in brackets"),
            ("[::1", "must be an IPv6 address in brackets"),
            ("[1.2.3.4]", "must be an IPv6 address in brackets"),
            ("*.[::1]", "must be a name such as"),
        ] {
            let src = GOOD.replace("host = \"*.Example.com\"", &format!("host = {bad:?}"));
            let errors = errors_of(&src);
            assert!(errors.iter().any(|e| e.message.contains(needle)), "{bad}: {errors:?}");
        }
    }

    /// GOOD with `extra` lines added to its second route (the split one).
    fn with_split_route_edits(extra: &str) -> String {
        GOOD.replace("  timeout = \"2s\"\n", &format!("  timeout = \"2s\"\n{extra}"))
    }

    /// GOOD with `extra` added to its first route (the `canary` one).
    fn with_route_edits(extra: &str) -> String {
        GOOD.replace("  cluster = \"v2\"\n\n", &format!("  cluster = \"v2\"\n{extra}\n\n"))
    }

    #[test]
    fn route_edits_compile() {
        let src = with_route_edits(
            "  rewrite = { path_prefix = \"/v2/\", host = \"api.internal:8443\" }\n  \
             request_headers = { set = { X-Env = \"prod\" }, add = { x-tag = \"a\\tb\" }, remove = [\"X-Debug\"] }\n  \
             response_headers = { remove = [\"server\"] }",
        );
        let s = parse(&src, "t.toml", 1).expect("valid");
        let ListenerKind::Http { routes } = &s.listeners[0].kind else {
            panic!("http listener")
        };
        let request = &routes[0].request_edits;
        assert_eq!(request.path_prefix, Some(("/api/".to_string(), "/v2/".to_string())));
        assert_eq!(request.drop, vec!["x-env".to_string(), "x-debug".to_string()]);
        assert_eq!(
            request.append,
            vec![
                ("X-Env".to_string(), b"prod".to_vec()),
                ("x-tag".to_string(), b"a\tb".to_vec()),
                ("Host".to_string(), b"api.internal:8443".to_vec()),
            ]
        );
        assert_eq!(routes[0].response_edits.drop, vec!["server".to_string()]);
        assert_eq!(
            routes[1].request_edits,
            Edits::default(),
            "routes without edits have none"
        );
    }

    #[test]
    fn bad_route_edits_are_located() {
        for (extra, needle) in [
            ("  request_headers = { set = { Host = \"x\" } }", "rewrite.host"),
            ("  request_headers = { remove = [\"Transfer-Encoding\"] }", "framing"),
            (
                "  request_headers = { add = { X-Forwarded-For = \"1.2.3.4\" } }",
                "written by Ringway",
            ),
            ("  response_headers = { set = { Via = \"x\" } }", "written by Ringway"),
            (
                "  request_headers = { set = { \"bad name\" = \"x\" } }",
                "not a valid token",
            ),
            (
                "  request_headers = { set = { x-a = \"a\\r\\nx-b: smuggled\" } }",
                "control characters",
            ),
            ("  request_headers = { set = { x-a = \" padded\" } }", "whitespace"),
            (
                "  request_headers = { set = { x-a = \"1\" }, remove = [\"X-A\"] }",
                "more than once",
            ),
            ("  rewrite = { path_prefix = \"v2\" }", "must start with '/'"),
            ("  rewrite = { path_prefix = \"/v2?x\" }", "without '?'"),
            ("  rewrite = { host = \"a b\" }", "host name or IP address"),
        ] {
            let e = errors_of(&with_route_edits(extra));
            assert_eq!(e.len(), 1, "{extra}: {e:?}");
            assert!(e[0].message.contains(needle), "{extra}: {e:?}");
            assert_eq!(e[0].line, 13, "{extra}: {e:?}");
        }
        // Only a prefix match has a prefix to replace.
        let src = with_split_route_edits("  rewrite = { path_prefix = \"/x/\" }\n");
        let e = errors_of(&src);
        assert!(e[0].message.contains("needs `match.path_prefix`"), "{e:?}");
    }

    #[test]
    fn route_faults() {
        let src =
            with_route_edits("  fault = { delay = { duration = \"2s\", percent = 12.5 }, abort = { status = 503 } }");
        let s = parse(&src, "t.toml", 1).expect("valid");
        let ListenerKind::Http { routes } = &s.listeners[0].kind else {
            panic!("http listener")
        };
        let fault = routes[0].fault.as_ref().expect("fault");
        assert_eq!(fault.delay, Some((std::time::Duration::from_secs(2), 12.5)));
        assert_eq!(fault.abort, Some((503, 100.0)), "percent defaults to every request");
        for (extra, needle) in [
            ("  fault = {}", "needs `delay`, `abort` or both"),
            ("  fault = { abort = { status = 200 } }", "must be an error status"),
            ("  fault = { abort = { status = 503, percent = 101 } }", ") and 100"),
            ("  fault = { abort = { status = 503, percent = nan } }", ") and 100"),
            (
                "  fault = { abort = { status = 503, percent = 0.00001 } }",
                "one in a million",
            ),
            ("  fault = { delay = { duration = \"0s\" } }", "above zero"),
        ] {
            let e = errors_of(&with_route_edits(extra));
            assert!(e[0].message.contains(needle), "{extra}: {e:?}");
            assert_eq!(e[0].line, 13, "{extra}: {e:?}");
        }
    }

    /// A timeout of zero would fail everything not instant, a connection cap
    /// of zero refuse every client, port 0 fail every connect: each is
    /// refused where it is written.
    #[test]
    fn zero_timeouts_caps_and_ports_are_refused() {
        for (from, to, line, needle) in [
            ("  timeout = \"2s\"", "  timeout = \"0s\"", 17, "must be above zero"),
            (
                "  timeout = \"2s\"",
                "  retry = { attempts = 2, per_try_timeout = \"0ms\" }",
                17,
                "must be above zero",
            ),
            (
                "address = \"127.0.0.1:8080\"",
                "address = \"127.0.0.1:8080\"\nheader_read_timeout = \"0s\"",
                8,
                "must be above zero",
            ),
            (
                "address = \"127.0.0.1:8080\"",
                "address = \"127.0.0.1:8080\"\nidle_timeout = \"0us\"",
                8,
                "must be above zero",
            ),
            (
                "address = \"127.0.0.1:8080\"",
                "address = \"127.0.0.1:8080\"\nmax_connections = 0",
                8,
                "max_connections must be at least 1",
            ),
            (
                "lb = \"p2c_ewma\"",
                "lb = \"p2c_ewma\"\nconnect_timeout = \"0s\"",
                22,
                "must be above zero",
            ),
            (
                "lb = \"p2c_ewma\"",
                "lb = \"p2c_ewma\"\nresponse_header_timeout = \"0s\"",
                22,
                "must be above zero",
            ),
            ("127.0.0.1:9002", "127.0.0.1:0", 26, "needs a port above 0"),
            (
                "endpoints = [ { address = \"127.0.0.1:9002\" } ]",
                "dns = \"localhost:0\"",
                26,
                "with a port above 0",
            ),
            (
                "lb = \"p2c_ewma\"",
                "lb = \"p2c_ewma\"\ncircuit_breaker = { max_pending = 0 }",
                22,
                "circuit_breaker max_pending must be at least 1",
            ),
            (
                "lb = \"p2c_ewma\"",
                "lb = \"p2c_ewma\"\n\ncircuit_breaker = { max_requests = 0, max_connections = 0 }",
                23,
                "must be at least 1",
            ),
            (
                "address = \"127.0.0.1:8080\"",
                "address = \"127.0.0.1:8080\"\nrate_limit = { rps = 5, burst = 0 }",
                8,
                "rate_limit burst must be at least 1",
            ),
            (
                "idle_timeout = \"5s\" }",
                "idle_timeout = \"0s\" }",
                27,
                "timeout \"0s\" must be above zero",
            ),
            (
                "[runtime]\n",
                "[runtime]\ndrain_timeout = \"0ms\"\n",
                3,
                "timeout \"0ms\" must be above zero",
            ),
            (
                "address = \"127.0.0.1:8080\"",
                "address = \"127.0.0.1:8080\"\nrate_limit = { rps = 0.0001 }",
                8,
                "rate_limit rps must be from 0.001",
            ),
            (
                "address = \"127.0.0.1:8080\"",
                "address = \"127.0.0.1:8080\"\nrate_limit = { rps = 0.001, burst = 100000 }",
                8,
                "takes over a year to refill",
            ),
            (
                "address = \"127.0.0.1:8080\"",
                "address = \"127.0.0.1:8080\"\nrate_limit = { rps = 5, max_keys = 0 }",
                8,
                "rate_limit max_keys must be at least 1",
            ),
            (
                "lb = \"p2c_ewma\"",
                "lb = \"p2c_ewma\"\nhealth_check = { host = \"ok.example\\r\\nX-Injected: yes\" }",
                22,
                "is not a host[:port]",
            ),
            (
                "lb = \"p2c_ewma\"",
                "lb = \"p2c_ewma\"\nhealth_check = { protocol = \"tcp\", expected_statuses = [204] }",
                22,
                "a tcp health check only connects: expected_statuses is for http checks",
            ),
            (
                "lb = \"p2c_ewma\"",
                "lb = \"p2c_ewma\"\nhealth_check = { protocol = \"tcp\", path = \"/h\" }",
                22,
                "a tcp health check only connects: path is for http checks",
            ),
        ] {
            let src = GOOD.replacen(from, to, 1);
            assert_ne!(src, GOOD);
            let e = errors_of(&src);
            assert!(e[0].message.contains(needle), "{to}: {e:?}");
            assert_eq!(e[0].line, line, "{to}: {e:?}");
        }
    }

    /// One check reports every error: an unknown cluster does not hide a
    /// bad fault or mirror beside it, nor a bad address its routes.
    #[test]
    fn every_error_is_reported_at_once() {
        let route = "  [[listener.route]]\n  match = { path_prefix = \"/x\" }\n  cluster = \"zz\"\n  \
                     fault = { abort = { status = 200, percent = 1 } }\n  mirror = { cluster = \"yy\", percent = 5 }\n";
        let src = GOOD.replacen("  [[listener.route]]", &format!("{route}  [[listener.route]]"), 1);
        assert_ne!(src, GOOD);
        let e = errors_of(&src);
        for needle in ["unknown cluster \"zz\"", "unknown cluster \"yy\"", "abort"] {
            assert!(e.iter().any(|e| e.message.contains(needle)), "{needle}: {e:?}");
        }
        let split = "  [[listener.route]]\n  match = { path_prefix = \"/s\" }\n  \
                     split = [{ cluster = \"x1\", weight = 1 }, { cluster = \"x2\", weight = 1 }]\n";
        let src = GOOD.replacen("  [[listener.route]]", &format!("{split}  [[listener.route]]"), 1);
        let e = errors_of(&src);
        for needle in ["\"x1\"", "\"x2\""] {
            assert!(e.iter().any(|e| e.message.contains(needle)), "{needle}: {e:?}");
        }
        let src = GOOD
            .replacen("address = \"127.0.0.1:8080\"", "address = \"nope\"", 1)
            .replacen("  [[listener.route]]", &format!("{route}  [[listener.route]]"), 1);
        let e = errors_of(&src);
        for needle in ["must be IP:PORT", "unknown cluster \"zz\""] {
            assert!(e.iter().any(|e| e.message.contains(needle)), "{needle}: {e:?}");
        }
        // An IPv4-mapped address is the IPv4 address it maps.
        let mapped = GOOD.replacen(
            "address = \"127.0.0.1:8080\"",
            "address = \"[::ffff:127.0.0.1]:8080\"",
            1,
        );
        let listener = &parse(&mapped, "t.toml", 1).expect("valid").listeners[0];
        assert_eq!(listener.address, "127.0.0.1:8080".parse().expect("address"));
        // Any other keeps what it says, a link-local zone included.
        let zoned = GOOD.replacen("address = \"127.0.0.1:8080\"", "address = \"[fe80::1%2]:8080\"", 1);
        let listener = &parse(&zoned, "t.toml", 1).expect("valid").listeners[0];
        assert_eq!(listener.address, "[fe80::1%2]:8080".parse().expect("address"));
        for needless in ["[::1%1]:8080", "[fe80::1]:8080"] {
            let src = GOOD.replacen("address = \"127.0.0.1:8080\"", &format!("address = \"{needless}\""), 1);
            let e = errors_of(&src);
            assert!(
                e[0].message.contains("goes with a link-local address"),
                "{needless}: {e:?}"
            );
        }
        let unbracketed = GOOD.replacen("address = \"127.0.0.1:8080\"", "address = \"::1:8080\"", 1);
        let e = errors_of(&unbracketed);
        assert!(
            e[0].message
                .contains("must be IP:PORT (an IPv6 address goes in brackets: [::1]:8080)"),
            "{e:?}"
        );
    }

    /// Errors come in the order they are written; an admin address that a
    /// listener has too is one of them.
    #[test]
    fn errors_are_in_file_order() {
        let src = format!(
            "[admin]\naddress = \"127.0.0.1:8080\"\n{}",
            GOOD.replacen("lb = \"p2c_ewma\"", "lb = \"fastest\"", 1)
        );
        let e = errors_of(&src);
        assert!(e.len() >= 2, "{e:?}");
        assert!(
            e[0].message.contains("admin address 127.0.0.1:8080 is listener"),
            "{e:?}"
        );
        assert!(
            e.windows(2)
                .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)),
            "{e:?}"
        );
    }

    /// A value out of range (or not a header name) is reported at the
    /// value, not at its table.
    #[test]
    fn out_of_range_sizes_point_at_the_value() {
        for (from, to, line) in [
            (
                "address = \"127.0.0.1:8080\"",
                "address = \"127.0.0.1:8080\"\n\nmax_header_bytes = \"2MiB\"",
                9,
            ),
            (
                "lb = \"p2c_ewma\"",
                "lb = \"p2c_ewma\"\n\npool = { max_idle_per_endpoint = 100000 }",
                23,
            ),
            (
                "lb = \"p2c_ewma\"",
                "lb = \"ring_hash\"\n\nhash_header = \"bad header\\n\"",
                23,
            ),
        ] {
            let src = GOOD.replacen(from, to, 1);
            assert_ne!(src, GOOD);
            let e = errors_of(&src);
            assert_eq!(e[0].line, line, "{to}: {e:?}");
        }
    }

    #[test]
    fn route_mirrors() {
        let src = with_route_edits("  mirror = { cluster = \"v1\", percent = 5 }");
        let s = parse(&src, "t.toml", 1).expect("valid");
        let ListenerKind::Http { routes } = &s.listeners[0].kind else {
            panic!("http listener")
        };
        assert_eq!(
            routes[0].mirror,
            Some(Mirror {
                cluster: 0,
                percent: 5.0
            })
        );
        for (extra, needle) in [
            ("  mirror = { cluster = \"v9\" }", "unknown cluster \"v9\""),
            (
                "  mirror = { cluster = \"v1\", percent = -1 }",
                "mirror percent -1 must be 0, or between",
            ),
            ("  mirror = { percent = 5 }", "missing field `cluster`"),
        ] {
            let e = errors_of(&with_route_edits(extra));
            assert!(e[0].message.contains(needle), "{extra}: {e:?}");
            assert_eq!(e[0].line, 13, "{extra}: {e:?}");
        }
    }

    /// GOOD with its first route's `cluster = "v2"` replaced by `target`.
    fn answered_by(target: &str) -> String {
        GOOD.replacen("  cluster = \"v2\"\n\n", &format!("  {target}\n\n"), 1)
    }

    /// A redirect that writes back the exact path or host its route matches
    /// sends those clients round for ever; a pattern it does not pin down
    /// (a suffix host, another path) is a real move.
    #[test]
    fn redirects_to_the_exact_url_matched_are_refused() {
        let first = "  match = { path_prefix = \"/api/\", headers = { \"X-Canary\" = \"1\" } }\n  cluster = \"v2\"\n";
        let with = |m: &str, r: &str| GOOD.replacen(first, &format!("  match = {m}\n  redirect = {r}\n"), 1);
        for (m, r) in [
            ("{ path = \"/a\" }", "{ path = \"/a\" }"),
            ("{ path = \"/a\", host = \"h.test\" }", "{ host = \"H.test\" }"),
            ("{ path = \"/a\", host = \"h.test\" }", "{ host = \"h.test.\" }"),
            ("{ path = \"/a\", host = \"[::1]\" }", "{ host = \"[0:0::1]\" }"),
            (
                "{ path = \"/a\", host = \"h.test\" }",
                "{ host = \"h.test\", path = \"/a\", status = 302 }",
            ),
        ] {
            let e = errors_of(&with(m, r));
            assert!(
                e.iter()
                    .any(|e| e.message.contains("sends clients to the URL they asked for")),
                "{m} -> {r}: {e:?}"
            );
        }
        for (m, r) in [
            ("{ path = \"/a\" }", "{ path = \"/b\" }"),
            ("{ path = \"/a\" }", "{ host = \"h.test\" }"),
            ("{ host = \"*.h.test\" }", "{ host = \"h.test\" }"),
            ("{ path_prefix = \"/a\" }", "{ path = \"/a\" }"),
        ] {
            assert!(parse(&with(m, r), "t.toml", 1).is_ok(), "{m} -> {r}");
        }
    }

    #[test]
    fn routes_answered_here() {
        let s = parse(
            &answered_by("redirect = { scheme = \"https\", path_prefix = \"/v2/\", status = 308 }"),
            "t.toml",
            1,
        )
        .expect("valid");
        let ListenerKind::Http { routes } = &s.listeners[0].kind else {
            panic!("http listener")
        };
        let Target::Redirect(redirect) = &routes[0].target else {
            panic!("a redirect: {:?}", routes[0].target)
        };
        assert_eq!(redirect.status, 308);
        assert_eq!(
            redirect.path,
            RedirectPath::Prefix {
                matched: "/api/".into(),
                replacement: "/v2/".into()
            }
        );
        let s = parse(
            &answered_by("direct_response = { status = 200, body = \"ok\" }"),
            "t.toml",
            1,
        )
        .expect("valid");
        let ListenerKind::Http { routes } = &s.listeners[0].kind else {
            panic!("http listener")
        };
        assert!(
            matches!(&routes[0].target, Target::Direct(d) if d.body == b"ok" && d.content_type == "text/plain"),
            "{:?}",
            routes[0].target
        );
        for (target, needle) in [
            ("redirect = { status = 200 }", "must be 301, 302, 303, 307 or 308"),
            ("redirect = { scheme = \"ftp\" }", "must be \"http\" or \"https\""),
            ("redirect = { path = \"/a\", path_prefix = \"/b\" }", "not both"),
            ("redirect = { host = \"a b\" }", "host name or IP address"),
            ("direct_response = { status = 204 }", "not 204 or 304"),
            (
                "direct_response = { status = 200, content_type = \"a\\nb\" }",
                "visible ASCII",
            ),
            (
                "cluster = \"v1\"\n  redirect = { host = \"x.test\" }",
                "one of `cluster`, `split`, `redirect` or `direct_response`",
            ),
            (
                "redirect = { host = \"x.test\" }\n  retry = { attempts = 2 }",
                "`retry` applies to forwarded requests",
            ),
            ("redirect = {}", "sends clients to the URL they asked for"),
            (
                "redirect = { scheme = \"http\" }",
                "sends clients to the URL they asked for",
            ),
            (
                "redirect = { path_prefix = \"/api/\" }",
                "sends clients to the URL they asked for",
            ),
            (
                "redirect = { host = \"x.test\" }\n  response_headers = { add = { Location = \"/x\" } }",
                "may only `set` \"Location\"",
            ),
        ] {
            let e = errors_of(&answered_by(target));
            assert!(e.iter().any(|e| e.message.contains(needle)), "{target}: {e:?}");
        }
        let e = errors_of(
            &with_split_route_edits("  redirect = { path_prefix = \"/x/\" }\n").replace(
                "  split = [ { cluster = \"v1\", weight = 90 }, { cluster = \"v2\", weight = 10 } ]\n",
                "",
            ),
        );
        assert!(
            e.iter().any(|e| e.message.contains("needs `match.path_prefix`")),
            "{e:?}"
        );
    }

    #[test]
    fn connection_life_bounds_compile_and_zero_is_refused() {
        let cluster = "[[cluster]]\nname = \"a\"\nendpoints = [ { address = \"127.0.0.1:9001\" } ]\n";
        let route = "[[listener.route]]\ncluster = \"a\"\n";
        let good = format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\nmax_requests_per_connection = 100\n\
             max_connection_duration = \"10m\"\n{route}\n{cluster}\
             pool = {{ max_requests_per_connection = 5, max_connection_duration = \"1s\" }}\n"
        );
        let s = parse(&good, "t.toml", 1).expect("valid config");
        let listener_life = s.listeners[0].limits.connection_life;
        assert_eq!(listener_life.max_requests, Some(100));
        assert_eq!(listener_life.max_duration, Some(Duration::from_secs(600)));
        let pool_life = s.clusters[0].pool.connection_life;
        assert_eq!(
            (pool_life.max_requests, pool_life.max_duration),
            (Some(5), Some(Duration::from_secs(1)))
        );

        let zero = format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\nmax_requests_per_connection = 0\n{route}\n{cluster}\
             pool = {{ max_connection_duration = \"0s\" }}\n"
        );
        let e = errors_of(&zero);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e.iter()
                .any(|e| e.line == 4 && e.message == "max_requests_per_connection must be at least 1"),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| e.line == 11 && e.message == "pool.max_connection_duration must be above zero"),
            "{e:?}"
        );

        let tcp = format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"a\"\n\
             max_requests_per_connection = 10\n\n{cluster}"
        );
        let e = errors_of(&tcp);
        assert!(
            e.len() == 1 && e[0].line == 6 && e[0].message.contains("for http"),
            "{e:?}"
        );
    }

    #[test]
    fn route_names_are_unique_in_a_listener() {
        let cluster = "[[cluster]]\nname = \"a\"\nendpoints = [ { address = \"127.0.0.1:9001\" } ]\n";
        let listener =
            |routes: &str| format!("[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n{routes}\n{cluster}");
        let twice = "[[listener.route]]\nname = \"api\"\ncluster = \"a\"\n[[listener.route]]\nname = \"api\"\ncluster = \"a\"\n";
        let e = errors_of(&listener(twice));
        assert!(
            e.len() == 1 && e[0].line == 8 && e[0].message.contains("\"api\" is defined twice"),
            "{e:?}"
        );
        // The second route, nameless, would be `route-2`, a name the first took.
        let taken = "[[listener.route]]\nname = \"route-2\"\ncluster = \"a\"\n[[listener.route]]\ncluster = \"a\"\n";
        let e = errors_of(&listener(taken));
        assert!(
            e.len() == 1 && e[0].line == 5 && e[0].message.contains("route #2 gets"),
            "{e:?}"
        );
        // The same name in two listeners is fine.
        let two = format!(
            "{}[[listener]]\nname = \"m\"\naddress = \"127.0.0.1:0\"\n[[listener.route]]\nname = \"api\"\ncluster = \"a\"\n",
            listener("[[listener.route]]\nname = \"api\"\ncluster = \"a\"\n")
        );
        parse(&two, "t.toml", 1).expect("route names are per listener");
    }

    #[test]
    fn a_file_that_is_not_utf8_is_placed_at_its_first_bad_byte() {
        let path = std::env::temp_dir().join(format!("ringway-not-utf8-{}.toml", std::process::id()));
        std::fs::write(&path, b"[runtime]\nworkers = 1\n# caf\xe9\n").expect("write");
        let errors = read_file(&path).expect_err("not UTF-8");
        let _ = std::fs::remove_file(&path);
        assert_eq!(errors.errors.len(), 1);
        let e = &errors.errors[0];
        assert_eq!((e.line, e.column), (3, 6), "{errors}");
        assert!(e.message.contains("not valid UTF-8"), "{errors}");
    }

    #[test]
    fn errors_render_as_file_line_column() {
        let e = parse("[runtime]\nworkers = 0\n", "ringway.toml", 1).expect_err("rejected");
        assert!(e.to_string().starts_with("ringway.toml:2:11: "), "{e}");
    }
}
