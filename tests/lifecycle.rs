//! Process lifecycle: graceful drain in-process and under SIGTERM, the
//! `check` and `--version` commands, and live config swaps.

mod common;

use common::*;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Wait until the listener refuses connections. A drain closes listening
/// sockets asynchronously and offers no signal for it, so this polls with a
/// bound. A connection still accepted meanwhile is simply dropped.
fn wait_refused(addr: SocketAddr) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            // A handshake half done as the listening socket closed is reset:
            // look again.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("unexpected connect error: {e}"),
            Ok(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections after the drain began"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Run `f` on a thread and give up (failing the test) after `limit`.
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// `/slow` goes to a held upstream, everything else to an echo.
fn slow_and_fast_config(slow: &Upstream, fast: &Upstream, runtime: &str) -> String {
    format!(
        "{runtime}
[[listener]]
name = \"ingress\"
address = \"127.0.0.1:0\"
  [[listener.route]]
  match = {{ path_prefix = \"/slow\" }}
  cluster = \"slow\"
  [[listener.route]]
  match = {{ path_prefix = \"/\" }}
  cluster = \"fast\"

[[cluster]]
name = \"slow\"
endpoints = {}

[[cluster]]
name = \"fast\"
endpoints = {}
",
        endpoints(&[slow]),
        endpoints(&[fast])
    )
}

#[test]
fn drain_finishes_in_flight_requests_and_stops_accepting() {
    let held = Upstream::start(Behavior::Hold);
    let fast = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&slow_and_fast_config(&held, &fast, RUNTIME_2));

    // An idle keep-alive connection, which the drain must close.
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get("d.test", "/warm").status, 200);

    let in_flight = thread::spawn(move || {
        let mut c = Client::connect(addr);
        let resp = c.get("d.test", "/slow");
        c.expect_closed();
        resp
    });
    held.wait_requests(1);

    server.drain();
    wait_refused(addr);
    idle.expect_closed();

    held.release();
    let resp = in_flight.join().expect("in-flight client");
    assert_eq!(
        resp.status,
        200,
        "the in-flight request completes: {:?}",
        resp.error_reason()
    );
    assert_eq!(resp.body, b"released");
    within(IO_TIMEOUT, "Server::wait after drain", move || server.wait());
}

/// Once a drain began, a new config is refused rather than published to
/// workers that bind nothing more; the request in flight finishes under
/// the config it started with.
#[test]
fn a_config_sent_during_a_drain_is_refused() {
    let held = Upstream::start(Behavior::Hold);
    let fast = Upstream::start(Behavior::Echo);
    let config = slow_and_fast_config(&held, &fast, RUNTIME_2);
    let (server, addr) = proxy(&config);
    let in_flight = thread::spawn(move || Client::connect(addr).get("d.test", "/slow"));
    held.wait_requests(1);

    server.drain();
    let refused = ringway::admin::apply(&server, &config, "during the drain");
    assert!(
        matches!(refused, Err(ringway::admin::Rejected::Draining)),
        "{refused:?}"
    );
    assert_eq!(server.shared().generation(), 1, "nothing published");

    held.release();
    let resp = in_flight.join().expect("in-flight client");
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"released"[..]));
    within(IO_TIMEOUT, "Server::wait after drain", move || server.wait());
}

#[test]
fn sigterm_drains_in_flight_request_and_exits_zero() {
    let held = Upstream::start(Behavior::Hold);
    let mut bin = RunningBinary::start(&simple_config(&[&held], "", ""));
    let addr = bin.addr;
    let in_flight = thread::spawn(move || Client::connect(addr).get("d.test", "/slow"));
    held.wait_requests(1);

    bin.sigterm();
    wait_refused(addr);

    held.release();
    let resp = in_flight.join().expect("in-flight client");
    assert_eq!(
        resp.status,
        200,
        "the in-flight request completes: {:?}",
        resp.error_reason()
    );
    assert_eq!(resp.body, b"released");
    let status = bin.wait_exit(IO_TIMEOUT).expect("ringway exits after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[test]
fn sigterm_with_idle_connections_exits_promptly() {
    let up = Upstream::start(Behavior::Echo);
    let mut bin = RunningBinary::start(&simple_config(&[&up], "", ""));
    let mut idle = Client::connect(bin.addr);
    assert_eq!(idle.get("d.test", "/").status, 200);
    bin.sigterm();
    idle.expect_closed();
    let status = bin.wait_exit(IO_TIMEOUT).expect("ringway exits after SIGTERM");
    assert!(status.success(), "exit status: {status:?}");
}

/// A start that finds its address in use waits a moment for it, as one
/// right after a Ringway's exit can (its io_uring, torn down after the
/// process, holds the listening sockets some milliseconds more). A SIGHUP
/// meanwhile is held for once it runs, not the end of it.
#[test]
fn a_start_waits_for_an_address_in_use_to_come_free() {
    let up = Upstream::start(Behavior::Named("up".into()));
    let mut holder = Some(std::net::TcpListener::bind("127.0.0.1:0").expect("holder"));
    let addr = holder.as_ref().and_then(|h| h.local_addr().ok()).expect("addr");
    let config = simple_config(&[&up], "", "").replace("127.0.0.1:0", &addr.to_string());
    // Once Ringway said it found the address in use: a SIGHUP, then the
    // address comes free.
    let mut bin = RunningBinary::start_seeing(&config, |line, pid| {
        if line.contains(&format!("{addr} is in use")) {
            let hup = Command::new("kill").args(["-HUP", &pid.to_string()]).status();
            assert!(hup.is_ok_and(|s| s.success()), "kill -HUP");
            holder = None;
        }
    });
    assert!(holder.is_none(), "the address was found in use: {:#?}", bin.early);
    assert_eq!(bin.addr, addr);
    bin.wait_stderr("as generation 2");
    assert_eq!(get(addr, "d.test", "/").header("x-upstream"), Some("up"));
    bin.sigterm();
    let status = bin.wait_exit(IO_TIMEOUT).expect("ringway exits after SIGTERM");
    assert!(status.success(), "exit status: {status:?}");
}

#[test]
fn check_reports_file_line_column_and_exits_1() {
    let bad = "[runtime]\nworkers = 1\n\n[[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\nbogus_key = 1\n";
    let config = TempConfig::new(bad);
    let out = Command::new(binary_path())
        .args(["check", "-c"])
        .arg(&config.path)
        .output()
        .expect("run ringway check");
    assert_eq!(out.status.code(), Some(1), "check on a bad config exits 1: {out:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = format!("{}:7:", config.path.display());
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}COL: line in:\n{text}"));
    let rest = &line[prefix.len()..];
    let (column, message) = rest.split_once(": ").expect("FILE:LINE:COL: message");
    let column: usize = column.parse().expect("column is a number");
    assert_eq!(column, 1, "the unknown key starts at column 1: {line}");
    assert!(message.contains("bogus_key"), "the message names the key: {line}");
}

#[test]
fn check_reports_semantic_errors_with_location() {
    // Valid TOML, but the route names a cluster that does not exist (line 9).
    let bad = "[runtime]\nworkers = 1\n\n[[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n  [[listener.route]]\n  match = { path_prefix = \"/\" }\n  cluster = \"missing\"\n";
    let config = TempConfig::new(bad);
    let out = Command::new(binary_path())
        .args(["check", "-c"])
        .arg(&config.path)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = format!("{}:9:", config.path.display());
    assert!(
        text.lines().any(|l| l.starts_with(&prefix) && l.contains("missing")),
        "expected {prefix}COL: ... naming the cluster, got:\n{text}"
    );
}

#[test]
fn check_accepts_a_valid_config() {
    let up = Upstream::start(Behavior::Echo);
    let config = TempConfig::new(&simple_config(&[&up], "", ""));
    let out = Command::new(binary_path())
        .args(["check", "-c"])
        .arg(&config.path)
        .output()
        .expect("run check");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn version_prints_the_package_version() {
    let out = Command::new(binary_path())
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text:?}");
}

/// A usage error goes to stderr with exit status 2, stdout left empty for
/// scripts; and a reader that goes away (`| head -1`) ends the output, not
/// the process with a panic.
#[test]
fn usage_errors_go_to_stderr_and_closed_pipes_are_no_crash() {
    let out = Command::new(binary_path())
        .arg("--bogus")
        .output()
        .expect("run with a bad flag");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"), "{out:?}");

    // Many errors, read by no one: each write fails with EPIPE.
    let mut bad = String::from("[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n");
    for i in 0..3_000 {
        bad.push_str(&format!("[[listener.route]]\ncluster = \"missing{i}\"\n"));
    }
    let config = TempConfig::new(&bad);
    let mut child = Command::new(binary_path())
        .args(["check", "-c"])
        .arg(&config.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run check");
    // Close both pipes unread.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().expect("check ends");
    assert_eq!(status.code(), Some(1), "a bad config, not a panic: {status:?}");
}

fn two_cluster_config(target: &str, a: &Upstream, b: &Upstream) -> String {
    format!(
        "{RUNTIME_2}
[[listener]]
name = \"ingress\"
address = \"127.0.0.1:0\"
  [[listener.route]]
  match = {{ path_prefix = \"/\" }}
  cluster = \"{target}\"

[[cluster]]
name = \"a\"
endpoints = {}

[[cluster]]
name = \"b\"
endpoints = {}
",
        endpoints(&[a]),
        endpoints(&[b])
    )
}

#[test]
fn live_swap_changes_routing_for_new_connections() {
    let a = Upstream::start(Behavior::Named("a".into()));
    let b = Upstream::start(Behavior::Named("b".into()));
    let (server, addr) = proxy(&two_cluster_config("a", &a, &b));
    assert_eq!(get(addr, "s.test", "/").header("x-upstream"), Some("a"));

    let generation = ringway::admin::apply(&server, &two_cluster_config("b", &a, &b), "swap")
        .unwrap_or_else(|e| panic!("apply: {e}"));
    assert!(generation > 1, "generation increases: {generation}");
    for i in 0..10 {
        assert_eq!(
            get(addr, "s.test", "/").header("x-upstream"),
            Some("b"),
            "connection {i} after the swap"
        );
    }

    let before = a.requests();
    let again = ringway::admin::apply(&server, &two_cluster_config("a", &a, &b), "swap back").expect("apply");
    assert!(again > generation);
    assert_eq!(get(addr, "s.test", "/").header("x-upstream"), Some("a"));
    assert_eq!(a.requests(), before + 1);
    stop(server);
}

/// A request sent on an open keep-alive connection after `apply` returned
/// is a new request: it is routed by the new config, however soon it
/// follows the previous response.
#[test]
fn live_swap_changes_routing_for_the_next_request_on_an_open_connection() {
    let a = Upstream::start(Behavior::Named("a".into()));
    let b = Upstream::start(Behavior::Named("b".into()));
    let (server, addr) = proxy(&two_cluster_config("a", &a, &b));
    let mut kept = Client::connect(addr);
    assert_eq!(kept.get("s.test", "/").header("x-upstream"), Some("a"));
    // Several swaps back and forth, each checked by the very next request.
    for (i, target) in ["b", "a", "b", "a", "b", "a"].into_iter().enumerate() {
        ringway::admin::apply(&server, &two_cluster_config(target, &a, &b), "swap").expect("apply");
        assert_eq!(
            kept.get("s.test", "/").header("x-upstream"),
            Some(target),
            "swap {i}: the first request after it on an open connection"
        );
    }
    stop(server);
}

/// A request in flight during a swap finishes on the config it started
/// with, and the swap drops no connection.
#[test]
fn swap_does_not_disturb_in_flight_requests() {
    let a = Upstream::start(Behavior::Hold);
    let b = Upstream::start(Behavior::Named("b".into()));
    let (server, addr) = proxy(&two_cluster_config("a", &a, &b));
    let in_flight = thread::spawn(move || Client::connect(addr).get("s.test", "/slow"));
    a.wait_requests(1);
    ringway::admin::apply(&server, &two_cluster_config("b", &a, &b), "swap").expect("apply");
    assert_eq!(get(addr, "s.test", "/").header("x-upstream"), Some("b"));
    a.release();
    let resp = in_flight.join().expect("in-flight client");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"released");
    stop(server);
}

/// A swap that removes an endpoint closes the idle pooled connections to
/// it; one that keeps an endpoint keeps its pooled connections.
#[test]
fn swap_reconciles_upstream_pools() {
    let a = Upstream::start(Behavior::Named("a".into()));
    let b = Upstream::start(Behavior::Named("b".into()));
    let config = |eps: &str, timeout: &str| config_with(eps, "", &format!("timeout = \"{timeout}\""), "");
    let (server, addr) = proxy(&config(&endpoints(&[&a]), "5s"));
    assert_eq!(get(addr, "s.test", "/").header("x-upstream"), Some("a"));
    assert_eq!(a.connections(), 1);

    // Same endpoint, another setting: the pooled connection survives.
    ringway::admin::apply(&server, &config(&endpoints(&[&a]), "6s"), "swap").expect("apply");
    assert_eq!(get(addr, "s.test", "/").header("x-upstream"), Some("a"));
    assert_eq!(a.connections(), 1, "the pool for a kept endpoint survives a swap");

    // Endpoint a removed: its idle connection is closed by the proxy.
    ringway::admin::apply(&server, &config(&endpoints(&[&b]), "6s"), "swap").expect("apply");
    assert_eq!(get(addr, "s.test", "/").header("x-upstream"), Some("b"));
    a.wait_closed(1);
    stop(server);
}

/// Send GET `path` on a connection of its own, in the background: its
/// answer's status, or why none came.
fn request_in_the_background(addr: SocketAddr, path: &'static str) -> thread::JoinHandle<std::io::Result<u16>> {
    thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: d.test\r\n\r\n").as_bytes());
        c.try_read_response(false).map(|r| r.status)
    })
}

/// Requests still running when drain_timeout expires do not keep the
/// workers alive, and their connections are closed rather than left open
/// with nobody serving them.
#[test]
fn drain_gives_up_on_requests_after_drain_timeout() {
    let held = Upstream::start(Behavior::Hold);
    let config = simple_config(&[&held], "", "").replace("drain_timeout = \"5s\"", "drain_timeout = \"300ms\"");
    assert!(config.contains("300ms"));
    let (server, addr) = proxy(&config);
    let stuck = request_in_the_background(addr, "/stuck");
    held.wait_requests(1);
    server.drain();
    within(Duration::from_secs(5), "Server::wait past drain_timeout", move || {
        server.wait()
    });
    // The upstream is still holding the request: only the proxy can end it.
    let outcome = stuck.join().expect("client thread");
    held.release();
    match outcome {
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ),
            "the abandoned client connection was left open after Server::wait returned: {e}"
        ),
        Ok(status) => assert_ne!(status, 200, "the upstream never answered"),
    }
}

/// The drain waits as long as the config in force when it begins says,
/// not the one the process started with.
#[test]
fn a_reloaded_drain_timeout_is_the_one_a_drain_waits() {
    let held = Upstream::start(Behavior::Hold);
    let config = |timeout: &str| {
        simple_config(&[&held], "", "").replace("drain_timeout = \"5s\"", &format!("drain_timeout = \"{timeout}\""))
    };
    let (server, addr) = proxy(&config("60s"));
    ringway::admin::apply(&server, &config("300ms"), "shorter drain").unwrap_or_else(|e| panic!("apply: {e}"));
    let stuck = request_in_the_background(addr, "/stuck");
    held.wait_requests(1);
    server.drain();
    within(
        Duration::from_secs(10),
        "Server::wait past the reloaded drain_timeout",
        move || server.wait(),
    );
    held.release();
    let outcome = stuck.join().expect("client thread");
    assert!(
        !matches!(outcome, Ok(200)),
        "the held request was cut at the drain deadline, not answered"
    );
}

#[test]
fn sigint_drains_and_exits_zero_too() {
    let up = Upstream::start(Behavior::Echo);
    let mut bin = RunningBinary::start(&simple_config(&[&up], "", ""));
    assert_eq!(get(bin.addr, "d.test", "/").status, 200);
    let status = Command::new("kill")
        .args(["-INT", &bin.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let status = bin.wait_exit(IO_TIMEOUT).expect("ringway exits after SIGINT");
    assert!(status.success(), "exit status after SIGINT: {status:?}");
}

/// SIGTERM with a request that never finishes: the process still exits 0
/// once drain_timeout has passed.
#[test]
fn sigterm_exits_zero_after_drain_timeout_with_a_stuck_request() {
    let held = Upstream::start(Behavior::Hold);
    let config = simple_config(&[&held], "", "").replace("drain_timeout = \"5s\"", "drain_timeout = \"300ms\"");
    let mut bin = RunningBinary::start(&config);
    let addr = bin.addr;
    let stuck = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(b"GET /stuck HTTP/1.1\r\nHost: d.test\r\n\r\n");
        let _ = c.try_read_response(false);
    });
    held.wait_requests(1);
    bin.sigterm();
    let status = bin
        .wait_exit(IO_TIMEOUT)
        .expect("ringway exits once drain_timeout passed");
    assert!(status.success(), "exit status: {status:?}");
    stuck.join().expect("client thread");
    held.release();
}

/// Wait until every worker serves the newest generation (what /ready reports).
fn wait_ready(server: &ringway::worker::Server) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.shared().ready() {
        assert!(Instant::now() < deadline, "workers did not take the new generation");
        thread::yield_now();
    }
}

fn listeners_config(listeners: &[(&str, SocketAddr)], up: &Upstream) -> String {
    let mut toml = String::from("[runtime]\nworkers = 2\npin_cores = false\ndrain_timeout = \"5s\"\n");
    for (name, addr) in listeners {
        toml.push_str(&format!(
            "[[listener]]\nname = \"{name}\"\naddress = \"{addr}\"\n[[listener.route]]\ncluster = \"c\"\n"
        ));
    }
    toml.push_str(&format!(
        "[[cluster]]\nname = \"c\"\nendpoints = [ {} ]\n",
        up.endpoint(1)
    ));
    toml
}

/// A reload that adds a listener starts it on every worker; one that removes
/// a listener stops it accepting while its open connection finishes its request.
#[test]
fn reload_adds_and_removes_listeners() {
    let up = Upstream::start(Behavior::Named("up".into()));
    let (server, ingress) = proxy(&listeners_config(
        &[("ingress", "127.0.0.1:0".parse().expect("addr"))],
        &up,
    ));
    let extra_addr = free_address();
    let both = listeners_config(&[("ingress", ingress), ("extra", extra_addr)], &up);
    ringway::admin::apply(&server, &both, "add").unwrap_or_else(|e| panic!("apply: {e}"));
    wait_ready(&server);
    for _ in 0..4 {
        assert_eq!(
            get(extra_addr, "x.test", "/").header("x-upstream"),
            Some("up"),
            "added listener serves"
        );
    }

    let mut kept = Client::connect(ingress);
    assert_eq!(kept.get("x.test", "/").status, 200);
    // Let the kept connection go idle first (past the proxy's 25 ms hot window).
    thread::sleep(Duration::from_millis(100));
    let only_extra = listeners_config(&[("extra", extra_addr)], &up);
    ringway::admin::apply(&server, &only_extra, "remove").unwrap_or_else(|e| panic!("apply: {e}"));
    wait_ready(&server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(ingress).is_ok() {
        assert!(Instant::now() < deadline, "removed listener still accepts");
        thread::yield_now();
    }
    kept.expect_closed();
    assert_eq!(
        get(extra_addr, "x.test", "/").status,
        200,
        "the other listener is untouched"
    );
    stop(server);
}

/// The answer to a request in flight when its listener is removed says
/// `Connection: close`: the client learns the connection ends with it.
#[test]
fn an_answer_after_its_listener_left_says_close() {
    let held = Upstream::start(Behavior::Hold);
    let up = Upstream::start(Behavior::Named("up".into()));
    let (server, ingress) = proxy(&listeners_config(
        &[("ingress", "127.0.0.1:0".parse().expect("addr"))],
        &held,
    ));
    let mut client = Client::connect(ingress);
    client.send(b"GET / HTTP/1.1\r\nHost: x.test\r\n\r\n");
    held.wait_requests(1);
    let elsewhere = free_address();
    let moved = listeners_config(&[("other", elsewhere)], &up);
    ringway::admin::apply(&server, &moved, "remove").unwrap_or_else(|e| panic!("apply: {e}"));
    wait_ready(&server);
    held.release();
    let answer = client.read_response();
    assert_eq!((answer.status, answer.header("connection")), (200, Some("close")));
    client.expect_closed();
    stop(server);
}

/// One request on a fresh connection, as `hammer` made it: the first error
/// of connect, send and read, and what was read until then.
struct Attempt {
    error: Option<std::io::Error>,
    answer: Vec<u8>,
}

/// Two threads that connect to `address` until `done`, each sending one
/// `Connection: close` request and reading to the end; each returns what
/// `judge` objected to in its attempts.
fn hammer(
    address: SocketAddr,
    done: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    judge: fn(&Attempt) -> Option<String>,
) -> Vec<thread::JoinHandle<Vec<String>>> {
    use std::io::{Read, Write};
    let attempt = move || -> Attempt {
        let mut answer = Vec::new();
        let result = TcpStream::connect(address).and_then(|mut conn| {
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            conn.read_to_end(&mut answer)
        });
        Attempt {
            error: result.err(),
            answer,
        }
    };
    (0..2)
        .map(|_| {
            let done = done.clone();
            thread::spawn(move || {
                let mut objections = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    objections.extend(judge(&attempt()));
                }
                objections
            })
        })
        .collect()
}

/// A connection the kernel hands over just as its listener is removed is
/// closed, not left open and unserved: every client that connects while
/// listeners come and go gets an answer, an end of stream or a reset.
#[test]
fn connections_caught_by_a_listener_removal_end() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let up = Upstream::start(Behavior::Named("up".into()));
    let (server, ingress) = proxy(&listeners_config(
        &[("ingress", "127.0.0.1:0".parse().expect("addr"))],
        &up,
    ));
    let extra = free_address();
    let with = listeners_config(&[("ingress", ingress), ("extra", extra)], &up);
    let without = listeners_config(&[("ingress", ingress)], &up);
    for round in 0..8 {
        ringway::admin::apply(&server, &with, "add").unwrap_or_else(|e| panic!("apply: {e}"));
        wait_ready(&server);
        let done = Arc::new(AtomicBool::new(false));
        // An answer, an end of stream, a reset or a refused connect are all
        // fine while the listener goes; a read that times out is not.
        let hammers = hammer(extra, &done, |attempt| {
            let hung = attempt
                .error
                .as_ref()
                .is_some_and(|e| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
            hung.then(|| "a connection was left open and unserved".to_string())
        });
        ringway::admin::apply(&server, &without, "remove").unwrap_or_else(|e| panic!("apply: {e}"));
        wait_ready(&server);
        done.store(true, Ordering::Relaxed);
        for hammer in hammers {
            let hung = hammer.join().expect("client thread");
            assert!(hung.is_empty(), "round {round}: {}", hung[0]);
        }
    }
    stop(server);
}

/// A listener is its address: renamed by a reload, it keeps its socket,
/// its backlog and its connections. Clients connecting across the reloads
/// are all answered, and an idle keep-alive connection goes on, counted
/// under the new name.
#[test]
fn a_renamed_listener_keeps_its_socket_and_connections() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let up = Upstream::start(Behavior::Named("up".into()));
    let address = free_address();
    let (server, _) = proxy(&listeners_config(&[("ingress", address)], &up));
    let mut kept = Client::connect(address);
    assert_eq!(kept.get("x.test", "/").status, 200);
    let done = Arc::new(AtomicBool::new(false));
    // The address listens throughout: every attempt is answered 200.
    let hammers = hammer(address, &done, |attempt| {
        let answered = attempt.error.is_none() && attempt.answer.starts_with(b"HTTP/1.1 200");
        (!answered).then(|| format!("{:?} {:?}", attempt.error, String::from_utf8_lossy(&attempt.answer)))
    });
    for round in 0..6 {
        let name = if round % 2 == 0 { "ingress" } else { "edge" };
        let renamed = listeners_config(&[(name, address)], &up);
        ringway::admin::apply(&server, &renamed, "rename").unwrap_or_else(|e| panic!("apply: {e}"));
        wait_ready(&server);
    }
    done.store(true, Ordering::Relaxed);
    for hammer in hammers {
        let failed = hammer.join().expect("client thread");
        assert!(
            failed.is_empty(),
            "{} requests failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
    }
    // The kept connection is served under the name now in force, "edge".
    let edge = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("ringway_requests_total{listener=\"edge\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = edge(&server.metrics());
    let answer = kept.get("x.test", "/");
    assert_eq!((answer.status, answer.header("connection")), (200, None));
    let deadline = Instant::now() + Duration::from_secs(5);
    // Counted a moment after the answer went out: polled, with a deadline.
    while edge(&server.metrics()) < before + 1.0 {
        assert!(
            Instant::now() < deadline,
            "the kept connection's request was not counted under edge"
        );
        thread::sleep(Duration::from_millis(10));
    }
    stop(server);
}

/// A reload may not take an address someone else holds: refused, nothing changes.
#[test]
fn reload_with_an_unbindable_listener_is_refused() {
    let up = Upstream::start(Behavior::Named("up".into()));
    let (server, ingress) = proxy(&listeners_config(
        &[("ingress", "127.0.0.1:0".parse().expect("addr"))],
        &up,
    ));
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("squatter");
    let taken = squatter.local_addr().expect("addr");
    let config = listeners_config(&[("ingress", ingress), ("taken", taken)], &up);
    let err = ringway::admin::apply(&server, &config, "bad").expect_err("refused");
    assert!(err.to_string().contains("cannot listen"), "{err}");
    assert_eq!(server.shared().generation(), 1, "nothing published");
    assert_eq!(get(ingress, "x.test", "/").status, 200);
    stop(server);
}

/// A process of the same user listening with SO_REUSEPORT would share its
/// connections with Ringway's own SO_REUSEPORT sockets: its address is
/// taken, at start and on a reload alike.
#[test]
fn an_address_another_process_shares_out_is_taken() {
    let up = Upstream::start(Behavior::Named("up".into()));
    let squatter = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    squatter.set_reuse_port(true).expect("reuseport");
    squatter
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    squatter.listen(16).expect("listen");
    let taken = squatter.local_addr().expect("addr").as_socket().expect("inet");

    let snapshot = ringway::config::parse(&listeners_config(&[("taken", taken)], &up), "test.toml", 1).expect("config");
    let refused = ringway::worker::Server::start(snapshot).err().map(|e| e.to_string());
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("cannot listen")),
        "{refused:?}"
    );

    let (server, ingress) = proxy(&listeners_config(
        &[("ingress", "127.0.0.1:0".parse().expect("addr"))],
        &up,
    ));
    let config = listeners_config(&[("ingress", ingress), ("taken", taken)], &up);
    let err = ringway::admin::apply(&server, &config, "reload").expect_err("refused");
    assert!(err.to_string().contains("cannot listen"), "{err}");
    assert_eq!(server.shared().generation(), 1, "nothing published");
    stop(server);
}

/// An answer still streaming when drain_timeout expires is cut with a
/// reset: to a client reading a body delimited by the close, a FIN would
/// say the part it got was the whole.
#[test]
fn an_answer_cut_at_the_drain_deadline_ends_in_a_reset() {
    use std::io::{Read, Write};
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = upstream.local_addr().expect("addr");
    let (release, released) = mpsc::channel::<()>();
    let served = thread::spawn(move || {
        let (mut tcp, _) = upstream.accept().expect("accept");
        read_request_head(&mut tcp);
        tcp.write_all(b"HTTP/1.1 200 OK\r\n\r\npart").expect("answer");
        let _ = released.recv_timeout(IO_TIMEOUT);
    });
    let config = config_with(&format!("[ {{ address = \"{up_addr}\" }} ]"), "", "", "")
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"300ms\"");
    assert!(config.contains("300ms"));
    let (server, addr) = proxy(&config);
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: d.test\r\n\r\n")
        .expect("request");
    // The answer has begun once its first bytes are here.
    let mut got = vec![0u8; 4096];
    let n = client.read(&mut got).expect("the answer's start");
    assert!(String::from_utf8_lossy(&got[..n]).starts_with("HTTP/1.1 200"));
    server.drain();
    within(Duration::from_secs(5), "Server::wait past drain_timeout", move || {
        server.wait()
    });
    let mut rest = Vec::new();
    let ended = client.read_to_end(&mut rest);
    let _ = release.send(());
    served.join().expect("upstream");
    assert!(
        matches!(&ended, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "{ended:?} after {:?}",
        String::from_utf8_lossy(&rest)
    );
}
