//! The admin endpoint of the real binary: auth, readiness, config push with
//! located errors, endpoint discovery pushes, metrics, and drain.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "s3cret-admin-token";

struct Admin {
    addr: SocketAddr,
}

impl Admin {
    fn of(binary: &RunningBinary) -> Admin {
        let line = binary
            .early
            .iter()
            .find_map(|l| l.strip_prefix("ringway: admin on "))
            .unwrap_or_else(|| panic!("no admin line in {:#?}", binary.early));
        Admin {
            addr: line.trim().parse().expect("admin address"),
        }
    }

    fn call(&self, method: &str, path: &str, body: &str, token: Option<&str>) -> Response {
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        Client::connect(self.addr).request(raw.as_bytes())
    }

    fn authed(&self, method: &str, path: &str, body: &str) -> Response {
        self.call(method, path, body, Some(TOKEN))
    }
}

fn config(token_file: &std::path::Path, cluster_endpoints: &str, route_cluster: &str) -> String {
    format!(
        "[runtime]\nworkers = 2\npin_cores = false\ndrain_timeout = \"5s\"\n\
         [admin]\naddress = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\
         [[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n\
         [[listener.route]]\ncluster = \"{route_cluster}\"\n\
         [[cluster]]\nname = \"a\"\nendpoints = [ {cluster_endpoints} ]\n\
         [[cluster]]\nname = \"b\"\nendpoints = [ {cluster_endpoints} ]\n",
        token_file.display()
    )
}

fn token_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "ringway-admin-token-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write token");
    path
}

/// Endpoint pushes for two clusters at once both land: each edits the
/// config in force when it is applied, not the one it saw before.
#[test]
fn concurrent_endpoint_pushes_do_not_undo_each_other() {
    let up = Upstream::start(Behavior::Named("u".into()));
    let token = token_file();
    let binary = RunningBinary::start(&config(&token, &up.endpoint(1), "a"));
    let admin = Admin::of(&binary);
    let pushes: Vec<std::thread::JoinHandle<()>> = [("a", 20000), ("b", 30000)]
        .into_iter()
        .map(|(cluster, base)| {
            let admin = Admin { addr: admin.addr };
            std::thread::spawn(move || {
                for port in base..base + 100 {
                    let body = format!("[{{\"address\": \"127.0.0.1:{port}\"}}]");
                    let pushed = admin.authed("PUT", &format!("/clusters/{cluster}/endpoints"), &body);
                    assert_eq!(pushed.status, 200, "{}", pushed.text());
                }
            })
        })
        .collect();
    for push in pushes {
        push.join().expect("pushes");
    }
    let config = admin.authed("GET", "/config", "");
    assert_eq!(
        config.header("x-ringway-generation"),
        Some("201"),
        "every push published"
    );
    let text = config.text();
    for last in ["127.0.0.1:20099", "127.0.0.1:30099"] {
        assert!(text.contains(last), "{last} was undone: {text}");
    }
}

/// GET /clusters shows each endpoint's state on the workers: here, that
/// a tcp relay cut at its max_connection_duration no longer counts as in
/// flight (the balancer would shun the endpoint for it for good).
#[test]
fn clusters_show_requests_in_flight_and_cut_relays_leave_them() {
    let up = Upstream::start(Behavior::Echo);
    let token = token_file();
    let config = format!(
        "{}\n[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        tcp_config(
            &endpoints(&[&up]),
            "max_connection_duration = \"1500ms\"",
            "lb = \"least_request\"\ncircuit_breaker = { consecutive_failures = 5 }"
        ),
        token.display()
    );
    let binary = RunningBinary::start(&config);
    let admin = Admin::of(&binary);
    let mut relayed = Client::connect(binary.addr);
    assert_eq!(relayed.get("t.test", "/").status, 200, "relayed to the upstream");
    let endpoint = |admin: &Admin| {
        let clusters: serde_json::Value =
            serde_json::from_str(&admin.authed("GET", "/clusters", "").text()).expect("JSON");
        clusters["clusters"][0]["endpoints"][0].clone()
    };
    let clusters: serde_json::Value = serde_json::from_str(&admin.authed("GET", "/clusters", "").text()).expect("JSON");
    assert_eq!(
        clusters["clusters"][0]["lb"], "least_request",
        "as the config spells it"
    );
    let during = endpoint(&admin);
    assert_eq!(during["active"], 1, "{during}");
    assert_eq!(during["breaker"], "closed", "{during}");
    assert_eq!(during["ejected_on_workers"], 0, "{during}");
    assert_eq!(
        during["ewma_ms"],
        serde_json::Value::Null,
        "nothing measured yet: {during}"
    );
    // Cut at 1.5 s: the client sees its connection end.
    relayed.expect_closed();
    let after = endpoint(&admin);
    assert_eq!(after["active"], 0, "a cut relay still counted: {after}");
    assert!(
        after["ewma_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "the relay's connect time measured: {after}"
    );
}

/// What a try that ends without an answer teaches the balancer: one whose
/// client stalled its body, nothing (the endpoint was waiting on the
/// client); one whose client left while the answer was awaited, that the
/// endpoint took at least that long.
#[test]
fn tries_without_an_answer_teach_the_balancer_only_what_they_measured() {
    let up = Upstream::start(Behavior::Hold);
    let token = token_file();
    let source = config(&token, &up.endpoint(1), "a").replace(
        "[[listener.route]]\ncluster = \"a\"\n",
        "[[listener.route]]\ncluster = \"a\"\ntimeout = \"300ms\"\n",
    );
    let binary = RunningBinary::start(&source);
    let admin = Admin::of(&binary);
    let endpoint = || {
        let clusters: serde_json::Value =
            serde_json::from_str(&admin.authed("GET", "/clusters", "").text()).expect("JSON");
        clusters["clusters"][0]["endpoints"][0].clone()
    };

    let mut stalled = Client::connect(binary.addr);
    stalled.send(b"PUT /stalled HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\nabc");
    assert_eq!(stalled.read_response().status, 408);
    let after_stall = endpoint();
    assert_eq!(after_stall["active"], 0, "{after_stall}");
    assert_eq!(
        after_stall["ewma_ms"],
        serde_json::Value::Null,
        "a stalled body measures nothing: {after_stall}"
    );

    let mut leaving = Client::connect(binary.addr);
    leaving.send(b"GET /held HTTP/1.1\r\nHost: a.test\r\n\r\n");
    up.wait_requests(1);
    drop(leaving);
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let after_leaving = loop {
        let now = endpoint();
        if now["active"] == 0 {
            break now;
        }
        assert!(std::time::Instant::now() < deadline, "the try did not end: {now}");
        std::thread::yield_now();
    };
    assert!(
        after_leaving["ewma_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "the wait was measured: {after_leaving}"
    );
    up.release();
}

/// Sets the soft descriptor limit of `pid`, returning the one before.
fn set_fd_limit(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads `new` and writes `old`, both valid for the call.
    let rc = unsafe {
        let mut current = std::mem::zeroed::<libc::rlimit>();
        libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut current);
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: current.rlim_max,
        };
        libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, &mut old)
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// Ringway out of descriptors cannot open an upstream connection: the
/// client gets 503 `resources-exhausted`, and the endpoint, never reached,
/// is neither counted a connect failure nor ejected for it.
#[test]
fn running_out_of_descriptors_blames_no_endpoint() {
    let up = Upstream::start(Behavior::Named("up".into()));
    let token = token_file();
    let source = config(&token, &up.endpoint(1), "a")
        .replace("workers = 2", "workers = 1")
        .replace(
            "[[cluster]]\nname = \"a\"\n",
            "[[cluster]]\nname = \"a\"\noutlier = { consecutive_connect_failures = 1, max_ejection_percent = 100 }\n",
        );
    let binary = RunningBinary::start(&source);
    let admin = Admin::of(&binary);
    let pid = binary.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fd list").count() as u64;
    // Room for one client connection, none for its upstream connection.
    let before = set_fd_limit(pid, open + 1);
    let mut client = Client::connect(binary.addr);
    let reply = client.get("a.test", "/");
    set_fd_limit(pid, before);
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.error_reason(), Some("resources-exhausted"));

    assert_eq!(Client::connect(binary.addr).get("a.test", "/").status, 200);
    let metrics = admin.authed("GET", "/metrics", "").text().to_string();
    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(sum("ringway_upstream_cx_connect_fail_total"), 0.0, "{metrics}");
    assert_eq!(sum("ringway_outlier_ejections_total"), 0.0, "{metrics}");
}

#[test]
fn admin_api_end_to_end() {
    let first = Upstream::start(Behavior::Named("first".into()));
    let second = Upstream::start(Behavior::Named("second".into()));
    let token = token_file();
    let source = config(&token, &first.endpoint(1), "a");
    let mut binary = RunningBinary::start(&source);
    let admin = Admin::of(&binary);
    assert!(admin.addr.ip().is_loopback());

    // Auth.
    let denied = admin.call("GET", "/config", "", None);
    assert_eq!(denied.status, 401);
    assert_eq!(admin.call("GET", "/ready", "", Some("wrong")).status, 401);

    // Readiness and the config in force.
    assert_eq!(admin.authed("GET", "/ready", "").status, 200);
    let config = admin.authed("GET", "/config", "");
    assert_eq!(config.status, 200);
    assert_eq!(config.header("x-ringway-generation"), Some("1"));
    assert!(config.text().contains("[[listener]]"));

    // A typo'd key: 400 naming line and column, nothing changes.
    let typo = source.replace("drain_timeout", "drain_timout");
    let rejected = admin.authed("PUT", "/config", &typo);
    assert_eq!(rejected.status, 400, "{}", rejected.text());
    assert!(rejected.text().contains(":4:1: "), "line:column in {}", rejected.text());
    // Logged as a SIGHUP reload is: what was refused, and where.
    binary.wait_stderr("ringway: reload rejected, the running config stays");
    binary.wait_stderr("admin:/config:4:1: ");
    let missing = source.replace("cluster = \"a\"\n[[cluster]]", "cluster = \"nope\"\n[[cluster]]");
    assert_eq!(admin.authed("PUT", "/config", &missing).status, 400);
    assert_eq!(
        get(binary.addr, "x.test", "/").header("x-upstream"),
        Some("first"),
        "old generation serves"
    );

    // Endpoint push: cluster a now points at the second upstream.
    let body = format!("[{{\"address\": \"{}\", \"weight\": 2}}]", second.addr);
    let pushed = admin.authed("PUT", "/clusters/a/endpoints", &body);
    assert_eq!(pushed.status, 200, "{}", pushed.text());
    assert_eq!(get(binary.addr, "x.test", "/").header("x-upstream"), Some("second"));
    binary.wait_stderr("ringway: reloaded admin:/clusters/a/endpoints as generation 2");
    assert_eq!(admin.authed("PUT", "/clusters/zzz/endpoints", &body).status, 404);
    let bad = admin.authed(
        "PUT",
        "/clusters/a/endpoints",
        "[{\"address\": \"127.0.0.1:1\", \"wieght\": 1}]",
    );
    assert_eq!(bad.status, 400, "unknown field");
    // Found only once compiled, and pointed at in the body sent.
    let twice = format!("[{{\"address\": \"{0}\"}},\n {{\"address\": \"{0}\"}}]", second.addr);
    let refused = admin.authed("PUT", "/clusters/a/endpoints", &twice);
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains(&format!("\"2:2: endpoint {} is listed twice\"", second.addr)),
        "{}",
        refused.text()
    );
    let clusters = admin.authed("GET", "/clusters", "");
    assert!(
        clusters.text().contains(&second.addr.to_string()),
        "{}",
        clusters.text()
    );

    // Metrics reflect the generation and the refused reloads: two configs
    // and the endpoint list that compiled with a duplicate.
    let metrics = admin.authed("GET", "/metrics", "").text();
    assert!(metrics.contains("ringway_config_generation 2"), "{metrics}");
    promtool_accepts(&metrics);
    assert!(
        metrics.contains("ringway_config_reloads_total{result=\"failed\"} 3"),
        "{metrics}"
    );

    // SIGHUP reloads the file; one that cannot be read is a reload that
    // failed too, counted for the alert.
    let path = binary.config_path().to_path_buf();
    let text = std::fs::read_to_string(&path).expect("config file");
    std::fs::remove_file(&path).expect("take the file away");
    binary.signal("HUP");
    binary.wait_stderr("cannot read");
    let metrics = admin.authed("GET", "/metrics", "").text();
    assert!(
        metrics.contains("ringway_config_reloads_total{result=\"failed\"} 4"),
        "{metrics}"
    );
    std::fs::write(&path, text).expect("put the file back");
    binary.signal("HUP");
    binary.wait_stderr("as generation 3");

    // A pushed config that renames the listener and adds one logs both,
    // as a start does; taking them back logs the rename and the close.
    let extra = free_address();
    let ingress = |name: &str| format!("name = \"{name}\"\naddress = \"{}\"\n", binary.addr);
    let kept = source.replace("name = \"ingress\"\naddress = \"127.0.0.1:0\"\n", &ingress("ingress"));
    assert_ne!(kept, source, "the listener is spelled as expected");
    let more = format!(
        "{}\n[[listener]]\nname = \"extra\"\naddress = \"{extra}\"\n[[listener.route]]\ncluster = \"a\"\n",
        kept.replace(&ingress("ingress"), &ingress("edge"))
    );
    assert_eq!(admin.authed("PUT", "/config", &more).status, 200);
    binary.wait_stderr("ringway: reloaded admin:/config as generation 4");
    binary.wait_stderr(&format!("ringway: listener ingress on {} renamed edge", binary.addr));
    binary.wait_stderr(&format!("ringway: listener extra on {extra}"));
    assert_eq!(admin.authed("PUT", "/config", &kept).status, 200);
    binary.wait_stderr("ringway: reloaded admin:/config as generation 5");
    binary.wait_stderr(&format!("ringway: listener edge on {} renamed ingress", binary.addr));
    binary.wait_stderr(&format!("ringway: listener extra on {extra} closed"));

    // Drain over the API: the process finishes and exits 0.
    assert_eq!(admin.authed("POST", "/drain", "").status, 202);
    let status = binary
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain");
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_file(token);
}
