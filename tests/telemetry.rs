//! Metrics, access log and trace context, observed from outside: counts that
//! match the requests sent, exposition that promtool accepts, one JSON line
//! per request, and W3C trace context at the upstream.

mod common;

use common::*;
use std::collections::HashMap;

fn config(up: &Upstream, extra: &str) -> String {
    format!(
        "[runtime]\nworkers = 2\npin_cores = false\ndrain_timeout = \"5s\"\n{extra}\n\
         [[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n\
         [[listener.route]]\nname = \"api\"\nmatch = {{ path_prefix = \"/api/\" }}\ncluster = \"c\"\n\
         [[listener.route]]\nname = \"teapot\"\nmatch = {{ path_prefix = \"/tea\" }}\ncluster = \"t\"\n\
         [[cluster]]\nname = \"c\"\nendpoints = [ {} ]\n\
         [[cluster]]\nname = \"t\"\nendpoints = [ {} ]\n",
        up.endpoint(1),
        up.endpoint(1)
    )
}

/// Sample value of the series with exactly these labels, from exposition text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The access log's lines, each parsed as JSON, and its text for messages.
fn log_lines(log: &std::path::Path) -> (Vec<serde_json::Value>, String) {
    let text = std::fs::read_to_string(log).expect("access log written");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (lines, text)
}

#[test]
fn metrics_count_what_was_sent_and_pass_promtool() {
    let up = Upstream::start(Behavior::Named("u".into()));
    let (server, addr) = proxy(&config(&up, ""));
    let mut client = Client::connect(addr);
    for i in 0..30 {
        assert_eq!(client.get("m.test", &format!("/api/{i}")).status, 200);
    }
    for _ in 0..7 {
        assert_eq!(client.get("m.test", "/nowhere").status, 404);
    }
    let text = server.metrics();
    let ok = "ringway_requests_total{listener=\"ingress\",route=\"api\",cluster=\"c\",code=\"200\"}";
    assert_eq!(sample(&text, ok), Some(30.0), "{text}");
    let not_found = text
        .lines()
        .filter(|l| l.starts_with("ringway_requests_total{") && l.contains("code=\"404\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert_eq!(not_found, 7.0, "{text}");
    // One keep-alive client, so one pooled upstream connection stays open.
    let active = format!("ringway_upstream_cx_active{{cluster=\"c\",endpoint=\"{}\"}}", up.addr);
    assert_eq!(sample(&text, &active), Some(1.0), "{text}");
    // The histogram agrees with the counter and is cumulative.
    let hist = "{listener=\"ingress\",route=\"api\",cluster=\"c\"}";
    assert_eq!(
        sample(&text, &format!("ringway_request_duration_seconds_count{hist}")),
        Some(30.0)
    );
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("ringway_request_duration_seconds_bucket{listener=\"ingress\",route=\"api\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "cumulative buckets: {buckets:?}"
    );
    assert_eq!(buckets.last(), Some(&30.0), "+Inf bucket equals the count");
    // Requests answered before a route matched are timed too.
    let unrouted = "{listener=\"ingress\",route=\"\",cluster=\"\"}";
    assert_eq!(
        sample(&text, &format!("ringway_request_duration_seconds_count{unrouted}")),
        Some(7.0),
        "{text}"
    );

    promtool_accepts(&text);
    stop(server);
}

/// The access log counts a request body that streamed through whole, and
/// what went out of an answer that was cut part-way.
#[test]
fn access_log_counts_streamed_bodies_and_cut_answers() {
    let echo = Upstream::start(Behavior::Echo);
    let mut cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
    cut.extend(std::iter::repeat_n(b'c', 50_000));
    let cutting = Upstream::start(Behavior::Malformed(cut));
    let log = std::env::temp_dir().join(format!("ringway-access-bytes-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let extra = format!("[access_log]\ntarget = \"{}\"\n", log.display());
    // Cluster "c" (/api/) on the echo, cluster "t" (/tea) on the cut.
    let config = config(&echo, &extra)
        .replacen(&echo.endpoint(1), &cutting.endpoint(1), 2)
        .replacen(&cutting.endpoint(1), &echo.endpoint(1), 1);
    let (server, addr) = proxy(&config);
    let mut client = Client::connect(addr);
    // The 100 says the proxy waits for the body: it streams.
    let head = b"POST /api/up HTTP/1.1\r\nHost: log.test\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n";
    client.send(head);
    assert_eq!(client.read_response().status, 100);
    client.send(&vec![b'b'; 100_000]);
    assert_eq!(client.read_final_response().status, 200);
    let mut other = Client::connect(addr);
    other.send(b"GET /tea HTTP/1.1\r\nHost: log.test\r\n\r\n");
    other.expect_reset_after_bytes(50_000);
    stop(server);
    let (lines, text) = log_lines(&log);
    let streamed = lines.iter().find(|l| l["path"] == "/api/up").expect("streamed line");
    assert_eq!(streamed["bytes_in"], head.len() as u64 + 100_000, "{text}");
    let partial = lines.iter().find(|l| l["path"] == "/tea").expect("cut line");
    let out = partial["bytes_out"].as_u64().expect("bytes_out");
    assert!(out >= 50_000, "{text}");
    let _ = std::fs::remove_file(&log);
}

#[test]
fn access_log_has_one_json_line_per_request() {
    let up = Upstream::start(Behavior::Named("u".into()));
    let log = std::env::temp_dir().join(format!("ringway-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let (server, addr) = proxy(&config(&up, &format!("[access_log]\ntarget = \"{}\"\n", log.display())));
    let mut client = Client::connect(addr);
    let mut sent = Vec::new();
    for i in 0..20 {
        let path = format!("/api/item/{i}");
        assert_eq!(client.get("log.test", &path).status, 200);
        sent.push((path, 200));
    }
    let refused = client.get("log.test", "/missing");
    assert_eq!(refused.status, 404);
    sent.push(("/missing".to_string(), 404));
    stop(server); // the drain flushes every worker's buffer to the file
    let (lines, text) = log_lines(&log);
    assert_eq!(lines.len(), sent.len(), "{text}");
    let mut seen: HashMap<String, u64> = HashMap::new();
    for line in &lines {
        for key in [
            "time",
            "trace_id",
            "request_id",
            "listener",
            "client",
            "method",
            "authority",
            "path",
            "status",
            "reason",
            "route",
            "cluster",
            "upstream",
            "attempts",
            "bytes_in",
            "bytes_out",
            "duration_us",
        ] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
        assert_eq!(line["method"], "GET");
        assert_eq!(line["authority"], "log.test");
        seen.insert(
            line["path"].as_str().expect("path").to_string(),
            line["status"].as_u64().expect("status"),
        );
    }
    for (path, status) in &sent {
        assert_eq!(seen.get(path), Some(&(*status as u64)), "line for {path}");
    }
    let missing = lines.iter().find(|l| l["path"] == "/missing").expect("404 line");
    assert_eq!(missing["reason"], "no-route");
    // Ringway's own answer counts as sent, as an upstream's does.
    assert!(missing["bytes_out"].as_u64().is_some_and(|n| n > 0), "{missing}");
    // A refusal is named and traced like a forwarded request: the id its
    // answer carries is the one logged.
    let id = refused
        .header("x-request-id")
        .expect("a refusal carries its request id");
    assert_eq!(missing["request_id"], id, "{missing}");
    assert_eq!(missing["trace_id"].as_str().map(str::len), Some(32), "{missing}");
    let served = lines.iter().find(|l| l["path"] == "/api/item/3").expect("served line");
    assert_eq!(served["route"], "api");
    assert_eq!(served["cluster"], "c");
    assert_eq!(served["upstream"], up.addr.to_string());
    assert_eq!(served["attempts"], 1);
    assert_eq!(served["trace_id"].as_str().map(str::len), Some(32));
    assert_eq!(served["listener"], "ingress");
    assert_eq!(served["client"], client.local_addr().to_string(), "{served}");
    let _ = std::fs::remove_file(&log);
}

#[test]
fn trace_context_is_continued_and_request_ids_generated() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&config(&up, ""));
    let mut client = Client::connect(addr);

    // A client's trace continues with a new span id for the proxy hop.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = client.get_with(
        "t.test",
        "/api/x",
        &[
            &format!("traceparent: {parent}"),
            "tracestate: congo=t61rcWkgMzE",
            "x-b3-traceid: abc",
        ],
    );
    let echoed = Echoed::parse(&resp.body);
    assert_eq!(
        echoed.header("tracestate"),
        Some("congo=t61rcWkgMzE"),
        "kept with its trace"
    );
    let forwarded = echoed.header("traceparent").expect("traceparent forwarded");
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts.len(), 4, "{forwarded}");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace id");
    assert_ne!(parts[2], "00f067aa0ba902b7", "new span id");
    assert_eq!(parts[3], "01", "sampled flag kept");
    // Flag bits version 00 reserves go on as zero.
    let flagged = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff";
    let flagged_resp = client.get_with("t.test", "/api/f", &[&format!("traceparent: {flagged}")]);
    let flagged_echo = Echoed::parse(&flagged_resp.body);
    let forwarded_flags = flagged_echo
        .header("traceparent")
        .expect("traceparent")
        .rsplit('-')
        .next();
    assert_eq!(forwarded_flags, Some("01"), "only the sampled bit");
    assert_eq!(echoed.header_all("traceparent").len(), 1, "replaced, not duplicated");
    assert_eq!(echoed.header("x-b3-traceid"), Some("abc"), "B3 passes through");

    // Two parents leave the trace open: a new one starts (W3C Trace
    // Context), whichever came first.
    let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let resp = client.get_with(
        "t.test",
        "/api/two",
        &[
            &format!("traceparent: {parent}"),
            &format!("traceparent: {other}"),
            "tracestate: congo=t61rcWkgMzE",
        ],
    );
    let echoed = Echoed::parse(&resp.body);
    assert_eq!(echoed.header_all("traceparent").len(), 1, "one parent goes on");
    assert_eq!(echoed.header("tracestate"), None, "a new trace has no tracestate yet");
    let restarted = echoed.header("traceparent").expect("traceparent");
    assert!(
        !restarted.contains("4bf92f3577b34da6a3ce929d0e0e4736")
            && !restarted.contains("0af7651916cd43dd8448eb211c80319c"),
        "a new trace: {restarted}"
    );

    // One named in Connection is hop-by-hop, dropped on the way: as none,
    // a new trace starts, without the tracestate that came with it.
    let resp = client.get_with(
        "t.test",
        "/api/hop",
        &[
            "Connection: traceparent",
            &format!("traceparent: {parent}"),
            "tracestate: congo=t61rcWkgMzE",
        ],
    );
    let echoed = Echoed::parse(&resp.body);
    assert_eq!(echoed.header_all("traceparent").len(), 1, "ours alone goes on");
    assert_eq!(echoed.header("tracestate"), None, "a new trace has no tracestate yet");
    let restarted = echoed.header("traceparent").expect("traceparent");
    assert!(
        restarted.starts_with("00-") && !restarted.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "a new trace: {restarted}"
    );

    // Without one, a trace is started; a request id is generated, sent
    // upstream and returned to the client.
    let resp = client.get("t.test", "/api/y");
    let echoed = Echoed::parse(&resp.body);
    let started = echoed.header("traceparent").expect("traceparent created");
    assert!(started.starts_with("00-") && started.len() == 55, "{started}");
    let id = resp.header("x-request-id").expect("request id returned");
    assert_eq!(echoed.header("x-request-id"), Some(id), "same id upstream");
    assert_eq!(id.len(), 36);

    // A client's own request id is kept, not replaced.
    let resp = client.get_with("t.test", "/api/z", &["x-request-id: mine-123"]);
    assert_eq!(Echoed::parse(&resp.body).header("x-request-id"), Some("mine-123"));
    // One named in Connection is hop-by-hop: dropped, so one is generated.
    let resp = client.get_with(
        "t.test",
        "/api/z",
        &["Connection: x-request-id", "x-request-id: mine-123"],
    );
    let id = resp.header("x-request-id").expect("request id generated and returned");
    assert_eq!(Echoed::parse(&resp.body).header_all("x-request-id"), [id]);
    // An empty one names nothing: one is made in its place.
    let resp = client.get_with("t.test", "/api/e", &["x-request-id:"]);
    let id = resp.header("x-request-id").expect("request id generated and returned");
    assert_eq!(id.len(), 36);
    assert_eq!(Echoed::parse(&resp.body).header_all("x-request-id"), [id]);
    stop(server);
}

/// An L4 connection is one access log line when it ends: the upstream,
/// bytes each way and duration, or why it went nowhere.
#[test]
fn tcp_connections_are_access_logged() {
    let up = Upstream::start(Behavior::Echo);
    let dead = closed_port();
    let log = std::env::temp_dir().join(format!("ringway-access-tcp-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let config = format!(
        "[runtime]\nworkers = 1\npin_cores = false\ndrain_timeout = \"5s\"\n\
         [access_log]\ntarget = \"{}\"\n\
         [[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"c\"\n\
         [[cluster]]\nname = \"c\"\nlb = \"round_robin\"\nendpoints = [ {{ address = \"{dead}\" }}, {} ]\n",
        log.display(),
        up.endpoint(1)
    );
    let (server, addr) = proxy(&config);
    let raw = b"GET /l4 HTTP/1.1\r\nHost: l4.test\r\n\r\n";
    let mut answered = Vec::new();
    for _ in 0..2 {
        // Round robin: one connection meets the dead endpoint, one the live.
        let Ok(mut client) = Client::try_connect(addr) else {
            continue;
        };
        if client
            .try_send(raw)
            .and_then(|()| client.try_read_response(false))
            .is_ok()
        {
            answered.push(client.local_addr());
        }
    }
    assert_eq!(answered.len(), 1);
    up.wait_closed(1); // the served connection has ended on both sides
    stop(server); // the drain flushes the log
    let (lines, text) = log_lines(&log);
    assert_eq!(lines.len(), 2, "{text}");
    let served = lines
        .iter()
        .find(|l| l["upstream"] == up.addr.to_string())
        .expect("served line");
    assert_eq!(served["reason"], "-", "nothing went wrong");
    assert_eq!(served["cluster"], "c");
    assert_eq!(served["attempts"], 1);
    assert_eq!(served["bytes_in"], raw.len() as u64);
    assert!(served["bytes_out"].as_u64() > Some(0), "{served}");
    assert_eq!(served["method"], "", "no HTTP on L4");
    assert_eq!(served["listener"], "ingress");
    assert_eq!(served["client"], answered[0].to_string(), "{served}");
    let failed = lines
        .iter()
        .find(|l| l["upstream"] == dead.to_string())
        .expect("failed line");
    assert_eq!(failed["reason"], "connect-failure");
    assert_eq!(
        (failed["bytes_in"].as_u64(), failed["bytes_out"].as_u64()),
        (Some(0), Some(0))
    );
    let _ = std::fs::remove_file(&log);
}

/// A tcp relay cut at the listener's max_connection_duration is logged with
/// that reason and with the bytes it moved until then.
#[test]
fn a_cut_tcp_relay_logs_what_it_moved() {
    let up = Upstream::start(Behavior::Echo);
    let log = std::env::temp_dir().join(format!("ringway-access-tcp-cut-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let config = format!(
        "[runtime]\nworkers = 1\npin_cores = false\ndrain_timeout = \"5s\"\n\
         [access_log]\ntarget = \"{}\"\n\
         [[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"c\"\n\
         max_connection_duration = \"1s\"\n\
         [[cluster]]\nname = \"c\"\nendpoints = [ {} ]\n",
        log.display(),
        up.endpoint(1)
    );
    let (server, addr) = proxy(&config);
    let raw = b"GET /l4 HTTP/1.1\r\nHost: l4.test\r\n\r\n";
    let mut client = Client::connect(addr);
    client.send(raw);
    let answer = client.read_response();
    assert_eq!(answer.status, 200);
    client.expect_closed();
    stop(server); // the drain flushes the log
    let (lines, text) = log_lines(&log);
    assert_eq!(lines.len(), 1, "{text}");
    let line = &lines[0];
    assert_eq!(line["reason"], "max-connection-duration");
    assert_eq!(line["bytes_in"], raw.len() as u64);
    assert!(line["bytes_out"].as_u64() > Some(0), "{line}");
    let _ = std::fs::remove_file(&log);
}

/// A WebSocket request is counted when its 101 goes out and logged when its
/// tunnel ends, with the tunnel's bytes and lifetime in the line.
#[test]
fn websocket_tunnel_is_logged_when_it_ends() {
    let up = Upstream::start(Behavior::WebSocketEcho);
    let log = std::env::temp_dir().join(format!("ringway-access-ws-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let config = format!(
        "{}\n[access_log]\ntarget = \"{}\"\n",
        simple_config(&[&up], "", ""),
        log.display()
    );
    let (server, addr) = proxy(&config);
    let handshake = b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let mut client = Client::connect(addr);
    client.send(handshake);
    assert_eq!(client.read_response().status, 101);
    assert_eq!(client.read_bytes(6), b"hello\n");
    let message = pattern(0, 100_000);
    client.send(&message);
    assert_eq!(client.read_bytes(message.len()), message);
    let metrics = server.metrics();
    assert_eq!(
        sample(
            &metrics,
            "ringway_requests_total{listener=\"ingress\",route=\"all\",cluster=\"a\",code=\"101\"}"
        ),
        Some(1.0),
        "counted at the switch: {metrics}"
    );
    client.stream().shutdown(std::net::Shutdown::Write).expect("half-close");
    client.expect_closed();
    up.wait_closed(1);
    stop(server); // the drain flushes the log
    let (lines, text) = log_lines(&log);
    assert_eq!(lines.len(), 1, "{text}");
    let line = &lines[0];
    assert_eq!(line["status"], 101);
    assert_eq!(line["path"], "/chat");
    assert_eq!(line["reason"], "-");
    assert_eq!(line["client"], client.local_addr().to_string(), "{line}");
    let bytes_in = line["bytes_in"].as_u64().unwrap_or(0);
    let bytes_out = line["bytes_out"].as_u64().unwrap_or(0);
    assert_eq!(bytes_in, (handshake.len() + message.len()) as u64, "{line}");
    assert!(
        bytes_out > message.len() as u64 + 6,
        "the 101 head, greeting and echo: {line}"
    );
    let _ = std::fs::remove_file(&log);
}

/// A route a reload removes leaves /metrics once no request holds the plan
/// it belonged to; the routes that stay keep their counts.
#[test]
fn removed_routes_leave_the_scrape() {
    let up = Upstream::start(Behavior::Named("u".into()));
    let (server, addr) = proxy(&config(&up, ""));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("m.test", "/api/1").status, 200);
    assert_eq!(client.get("m.test", "/tea").status, 200);
    let api = "ringway_requests_total{listener=\"ingress\",route=\"api\",cluster=\"c\",code=\"200\"}";
    let tea = "ringway_requests_total{listener=\"ingress\",route=\"teapot\",cluster=\"t\",code=\"200\"}";
    let text = server.metrics();
    assert_eq!(
        (sample(&text, api), sample(&text, tea)),
        (Some(1.0), Some(1.0)),
        "{text}"
    );

    // The same config without the "api" route.
    let without_api = config(&up, "").replace(
        "[[listener.route]]\nname = \"api\"\nmatch = { path_prefix = \"/api/\" }\ncluster = \"c\"\n",
        "",
    );
    assert!(!without_api.contains("name = \"api\""), "{without_api}");
    ringway::admin::apply(&server, &without_api, "drop a route").unwrap_or_else(|e| panic!("apply: {e}"));
    // Every worker takes the new plan at its next request; a scrape then
    // releases what no plan in use refers to.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        assert_eq!(client.get("m.test", "/tea").status, 200);
        let text = server.metrics();
        if !text.contains("route=\"api\"") {
            assert!(
                sample(&text, tea) >= Some(2.0),
                "the kept route keeps its count: {text}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "route api still scraped:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    stop(server);
}

/// Each instance names requests from its own random start: ids (and trace
/// ids) generated by two proxies, or one restarted, do not repeat.
#[test]
fn request_ids_differ_across_instances() {
    let up = Upstream::start(Behavior::Echo);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (server, addr) = proxy(&simple_config(&[&up], "", ""));
        let resp = get(addr, "t.test", "/");
        let id = resp.header("x-request-id").expect("request id").to_string();
        let trace = Echoed::parse(&resp.body)
            .header("traceparent")
            .expect("traceparent")
            .to_string();
        seen.push((id, trace[3..35].to_string()));
        stop(server);
    }
    assert_ne!(seen[0].0, seen[1].0, "request ids");
    assert_ne!(seen[0].1, seen[1].1, "trace ids");
}

/// `ringway_downstream_cx_total` counts the connections a listener
/// accepted; `ringway_downstream_cx_active` those open now, down again as
/// they close.
#[test]
fn downstream_connections_are_counted() {
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let sample = |name: &str| -> Option<String> {
        let text = server.metrics();
        let prefix = format!("{name}{{listener=\"ingress\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    };
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(addr)).collect();
    for client in &mut clients {
        assert_eq!(client.get("t.test", "/").status, 200);
    }
    assert_eq!(sample("ringway_downstream_cx_total").as_deref(), Some("3"));
    assert_eq!(sample("ringway_downstream_cx_active").as_deref(), Some("3"));
    drop(clients);
    // The proxy sees the closes as they come: look until it has.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while sample("ringway_downstream_cx_active").as_deref() != Some("0") {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            sample("ringway_downstream_cx_active")
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(sample("ringway_downstream_cx_total").as_deref(), Some("3"));
    stop(server);
}

/// A listener and a cluster a reload removes (here: renamed) leave
/// /metrics once their connections have closed, so that config churn does
/// not grow the scrape without bound.
#[test]
fn removed_listeners_and_clusters_leave_the_scrape() {
    let up = Upstream::start(Behavior::Echo);
    let before = simple_config(&[&up], "", "");
    let (server, addr) = proxy(&before);
    let mut client = Client::connect(addr);
    assert_eq!(client.get("t.test", "/").status, 200);
    let text = server.metrics();
    assert!(
        text.contains("listener=\"ingress\"") && text.contains("cluster=\"a\""),
        "{text}"
    );
    let renamed = before
        .replace("name = \"ingress\"", "name = \"edge\"")
        .replace("cluster = \"a\"", "cluster = \"b\"")
        .replace("name = \"a\"", "name = \"b\"")
        .replacen("127.0.0.1:0", &addr.to_string(), 1);
    assert!(
        !renamed.contains("\"a\"") && !renamed.contains("\"ingress\""),
        "{renamed}"
    );
    ringway::admin::apply(&server, &renamed, "rename").unwrap_or_else(|e| panic!("apply: {e}"));
    // The old listener's connection closes (after its next answer).
    drop(client);
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let text = server.metrics();
        if !text.contains("listener=\"ingress\"") && !text.contains("cluster=\"a\"") {
            assert!(
                text.contains("listener=\"edge\"") && text.contains("cluster=\"b\""),
                "{text}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still scraped:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    stop(server);
}

/// The access log's dropped-lines counter, polled until it reads at least
/// `least` (lines reach the writer a moment after their answers).
fn wait_dropped(server: &ringway::worker::Server, least: f64) -> f64 {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let dropped = sample(&server.metrics(), "ringway_access_log_dropped_total").unwrap_or(0.0);
        if dropped >= least {
            return dropped;
        }
        assert!(std::time::Instant::now() < deadline, "dropped lines: {dropped}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A sink that stalls (a FIFO no one reads, as a hung disk would) holds up
/// neither a reopen (SIGUSR1), nor a reload that moves the log, nor the end
/// of the run: the workers drop and count lines meanwhile.
#[test]
fn a_stalled_access_log_holds_nothing_up() {
    let up = Upstream::start(Behavior::Named("u".into()));
    let dir = std::env::temp_dir().join(format!("ringway-stalled-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fifo = dir.join("access.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    // Held open for reading, never read (read-write, so the open does not wait).
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("fifo");
    let log = |target: &std::path::Path| format!("[access_log]\ntarget = \"{}\"\n", target.display());
    let (server, addr) = proxy(&config(&up, &log(&fifo)));
    let mut client = Client::connect(addr);
    // Far more lines than the pipe holds: the writer is stuck in a write.
    for i in 0..3000 {
        assert_eq!(client.get("t.test", &format!("/api/{i}")).status, 200);
    }
    let moved = config(&up, &log(&dir.join("moved.log")));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        server.reopen_log();
        let reloaded = ringway::admin::apply(&server, &moved, "reload").map(|_| ());
        stop(server);
        let _ = tx.send(reloaded);
    });
    let reloaded = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("reopen, reload and stop finish though the log stalls");
    assert!(reloaded.is_ok(), "{reloaded:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Lines the writer fails to write are lost, and counted with the dropped.
#[test]
fn lines_lost_to_failed_writes_are_counted() {
    let up = Upstream::start(Behavior::Named("u".into()));
    let (server, addr) = proxy(&config(&up, "[access_log]\ntarget = \"/dev/full\"\n"));
    let mut client = Client::connect(addr);
    for i in 0..20 {
        assert_eq!(client.get("t.test", &format!("/api/{i}")).status, 200);
    }
    wait_dropped(&server, 20.0);
    stop(server);
}

/// A request's line gives when it arrived, though it is written when the
/// request ends: a slow request that came first comes first.
#[test]
fn access_log_time_is_when_the_request_arrived() {
    let held = Upstream::start(Behavior::Hold);
    let fast = Upstream::start(Behavior::Named("fast".into()));
    let log = std::env::temp_dir().join(format!("ringway-access-time-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut toml = config(&held, &format!("[access_log]\ntarget = \"{}\"\n", log.display()));
    let teapot_endpoints = format!("name = \"t\"\nendpoints = [ {} ]", held.endpoint(1));
    assert!(toml.contains(&teapot_endpoints));
    toml = toml.replace(
        &teapot_endpoints,
        &format!("name = \"t\"\nendpoints = [ {} ]", fast.endpoint(1)),
    );
    let (server, addr) = proxy(&toml);
    let slow = std::thread::spawn(move || Client::connect(addr).get("t.test", "/api/slow").status);
    held.wait_requests(1);
    assert_eq!(Client::connect(addr).get("t.test", "/tea/fast").status, 200);
    // Time passes before the slow one ends: its end is well after the fast one's.
    std::thread::sleep(std::time::Duration::from_millis(50));
    held.release();
    assert_eq!(slow.join().expect("slow client"), 200);
    stop(server);
    let (lines, text) = log_lines(&log);
    let time = |path: &str| {
        let line = lines.iter().find(|l| l["path"] == path).expect("line");
        line["time"].as_str().expect("time").to_string()
    };
    // RFC 3339 with milliseconds, in UTC: ordered as text.
    assert!(time("/api/slow") <= time("/tea/fast"), "{text}");
    let _ = std::fs::remove_file(&log);
}

/// The sum of every sample of `family` whose labels contain `label`.
fn family_sum(text: &str, family: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The scrape once requests have been counted with status `code` (a worker
/// counts a request a moment after its connection ends).
fn scrape_once_counted(server: &ringway::worker::Server, code: &str) -> String {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let text = server.metrics();
        if family_sum(&text, "ringway_requests_total", &format!("code=\"{code}\"")) >= 1.0 {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request counted {code}:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Only answers Ringway wrote itself count as local replies: not a client
/// that left before its answer (counted as 499, NGINX's "client closed
/// request", not as a 4xx answer), nor an upstream's answer cut part-way
/// (counted with the status the client got).
#[test]
fn local_replies_are_the_answers_ringway_wrote() {
    let hold = Upstream::start(Behavior::Hold);
    let (server, addr) = proxy(&config(&hold, ""));
    let mut leaving = Client::connect(addr);
    leaving.send(b"GET /api/held HTTP/1.1\r\nHost: m.test\r\n\r\n");
    hold.wait_requests(1);
    drop(leaving);
    let text = scrape_once_counted(&server, "499");
    assert_eq!(family_sum(&text, "ringway_requests_total", ""), 1.0, "{text}");
    assert_eq!(family_sum(&text, "ringway_local_replies_total", ""), 0.0, "{text}");
    hold.release();
    stop(server);

    let cut = Upstream::start(Behavior::Malformed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten!!".to_vec(),
    ));
    let (server, addr) = proxy(&config(&cut, ""));
    let mut client = Client::connect(addr);
    client.send(b"GET /api/cut HTTP/1.1\r\nHost: m.test\r\n\r\n");
    client.expect_reset_after_bytes(b"HTTP/1.1 200 OK".len());
    let text = scrape_once_counted(&server, "200");
    assert_eq!(family_sum(&text, "ringway_requests_total", ""), 1.0, "{text}");
    assert_eq!(family_sum(&text, "ringway_local_replies_total", ""), 0.0, "{text}");
    stop(server);
}

/// Send `raw` on a new connection and read until the proxy ends it: what
/// crossed the wire, whether it ended cleanly or with a reset.
fn wire_exchange(addr: std::net::SocketAddr, raw: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    stream.write_all(raw).expect("send");
    let mut got = Vec::new();
    if let Err(e) = stream.read_to_end(&mut got) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "after {} bytes",
            got.len()
        );
    }
    got
}

/// The access log's byte counts are what crossed the client connection:
/// interim answers, chunk framing both ways, a refused head, and the body
/// part of an answer the route's timeout cut.
#[test]
fn access_log_bytes_are_the_bytes_on_the_wire() {
    let echo = Upstream::start(Behavior::Echo);
    let interim = Upstream::start(Behavior::Raw(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
          HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            .to_vec(),
    ));
    let mut stalled = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
    stalled.extend(std::iter::repeat_n(b's', 50_000));
    let stalling = Upstream::start(Behavior::Raw(stalled));
    let log = std::env::temp_dir().join(format!("ringway-access-wire-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let config = format!(
        "[runtime]\nworkers = 1\npin_cores = false\n\
         [access_log]\ntarget = \"{}\"\n\
         [[listener]]\nname = \"ingress\"\naddress = \"127.0.0.1:0\"\n\
         [[listener.route]]\nname = \"echo\"\nmatch = {{ path_prefix = \"/echo\" }}\ncluster = \"echo\"\n\
         [[listener.route]]\nname = \"hints\"\nmatch = {{ path_prefix = \"/hints\" }}\ncluster = \"hints\"\n\
         [[listener.route]]\nname = \"stall\"\nmatch = {{ path_prefix = \"/stall\" }}\ncluster = \"stall\"\n\
         timeout = \"300ms\"\n\
         [[cluster]]\nname = \"echo\"\nendpoints = [ {} ]\n\
         [[cluster]]\nname = \"hints\"\nendpoints = [ {} ]\n\
         [[cluster]]\nname = \"stall\"\nendpoints = [ {} ]\n",
        log.display(),
        echo.endpoint(1),
        interim.endpoint(1),
        stalling.endpoint(1),
    );
    let (server, addr) = proxy(&config);
    let chunked_up = b"POST /echo HTTP/1.1\r\nHost: w.test\r\nConnection: close\r\n\
                       Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=1\r\ndefg\r\n0\r\n\r\n";
    let echoed = wire_exchange(addr, chunked_up);
    let hints = wire_exchange(
        addr,
        b"GET /hints HTTP/1.1\r\nHost: w.test\r\nConnection: close\r\n\r\n",
    );
    assert!(
        hints.starts_with(b"HTTP/1.1 103"),
        "{}",
        String::from_utf8_lossy(&hints)
    );
    let refused_head = b"GET /echo HTTP/1.1\r\nHost: w.test\r\nBad\x01: x\r\n\r\n";
    assert!(wire_exchange(addr, refused_head).starts_with(b"HTTP/1.1 400"));
    let cut = wire_exchange(addr, b"GET /stall HTTP/1.1\r\nHost: w.test\r\n\r\n");
    assert!(cut.len() > 50_000, "the body part went out: {} bytes", cut.len());
    stop(server);

    let (lines, text) = log_lines(&log);
    let line = |route: &str| {
        lines
            .iter()
            .find(|l| l["route"] == route)
            .unwrap_or_else(|| panic!("{text}"))
    };
    assert_eq!(line("echo")["bytes_in"], chunked_up.len() as u64, "{text}");
    assert_eq!(line("echo")["bytes_out"], echoed.len() as u64, "{text}");
    assert_eq!(line("hints")["bytes_out"], hints.len() as u64, "{text}");
    let refused = lines.iter().find(|l| l["status"] == 400).expect("refused line");
    assert_eq!(refused["bytes_in"], refused_head.len() as u64, "{text}");
    // Refused for a field, it is named by its request line.
    assert_eq!(
        (&refused["method"], &refused["path"]),
        (&"GET".into(), &"/echo".into()),
        "{text}"
    );
    // The client may lose the last bytes to the reset; none went uncounted.
    let stall = line("stall");
    assert_eq!(stall["reason"], "upstream-timeout", "{text}");
    let out = stall["bytes_out"].as_u64().expect("bytes_out");
    assert!(out >= cut.len() as u64, "{out} logged, {} received: {text}", cut.len());
    let _ = std::fs::remove_file(&log);
}
