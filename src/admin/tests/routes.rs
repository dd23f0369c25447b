//! What each admin route answers: status, body, content-type and headers.

use super::*;

#[test]
fn ready_follows_the_backend() {
    let (server, fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    let reply = client.get("/ready");
    assert_eq!((reply.status, reply.text()), (200, "ready\n"));
    assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(reply.header("content-length"), Some("6"));
    fake.not_ready.store(true, Ordering::SeqCst);
    let reply = client.get("/ready?verbose=1");
    assert_eq!((reply.status, reply.text()), (503, "not ready\n"));
}

#[test]
fn get_config_returns_the_toml_and_its_generation() {
    let (server, fake) = start_default();
    fake.put_config("[runtime]\nworkers = 2\n").expect("seed");
    let reply = Client::connect(server.local_addr()).get("/config");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "[runtime]\nworkers = 2\n");
    assert_eq!(reply.header("content-type"), Some("application/toml"));
    assert_eq!(reply.header("x-ringway-generation"), Some("1"));
}

#[test]
fn put_config_answers_the_generation_or_every_error() {
    let (server, fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    let reply = client.request("PUT", "/config", &[], b"[runtime]\nworkers = 4\n");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({ "generation": 1 }));
    assert_eq!(reply.header("x-ringway-generation"), Some("1"));
    assert_eq!(fake.config().1.as_ref(), "[runtime]\nworkers = 4\n");

    let reply = client.request("PUT", "/config", &[], b"bogus = 1\n");
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.errors(),
        [
            "admin:3:7: unknown field `bogus`",
            "admin:9:1: missing field `listener`"
        ]
    );
    let reply = client.request("PUT", "/config", &[], b"a = 1\nb = \"\xff\"\n");
    assert_eq!(
        (reply.status, reply.errors()),
        (
            400,
            vec!["admin:/config:2:6: the config is not valid UTF-8".to_string()]
        )
    );
    assert_eq!(fake.config().0, 1, "rejected configs change nothing");
}

#[test]
fn put_endpoints_passes_a_validated_list() {
    let (server, fake) = start_default();
    let body =
        br#"[{"address": "10.0.0.7:8080"}, {"address": "api.internal:80", "weight": 3, "zone": "b", "priority": 1}]"#;
    let reply = Client::connect(server.local_addr()).request("PUT", "/clusters/web/endpoints", &[], body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), serde_json::json!({ "generation": 1 }));
    let calls = fake.endpoints.lock().expect("lock").clone();
    let expected = vec![
        JsonEndpoint {
            address: "10.0.0.7:8080".to_string(),
            weight: 1,
            zone: None,
            priority: 0,
        },
        JsonEndpoint {
            address: "api.internal:80".to_string(),
            weight: 3,
            zone: Some("b".to_string()),
            priority: 1,
        },
    ];
    assert_eq!(calls, vec![("web".to_string(), expected)]);
}

#[test]
fn put_endpoints_reports_json_errors_by_line_and_column() {
    let (server, fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    let mut put = |body: &str| client.request("PUT", "/clusters/web/endpoints", &[], body.as_bytes());

    let reply = put("[\n  {\"address\": \"10.0.0.7:8080\",}\n]");
    assert_eq!(reply.status, 400);
    assert_eq!(reply.errors(), ["2:31: trailing comma"]);

    let reply = put("[{\"address\": \"10.0.0.7:8080\", \"port\": 80}]");
    let errors = reply.errors();
    assert_eq!(reply.status, 400);
    assert!(
        errors[0].starts_with("1:36: unknown field `port`, expected one of"),
        "{errors:?}"
    );

    let reply = put("[\n{\"address\": \"10.0.0.7:8080\",\n \"weight\": 0}]");
    assert_eq!(
        (reply.status, reply.errors()),
        (400, vec!["3:13: endpoint weight must be at least 1".to_string()])
    );

    for bad in [
        "10.0.0.7",
        "10.0.0.7:0",
        "10.0.0.7:http",
        ":80",
        "bad host:80",
        "[::1]:99999",
    ] {
        let reply = put(&format!("[{{\"address\": {bad:?}}}]"));
        let errors = reply.errors();
        assert_eq!(reply.status, 400, "{bad}");
        assert!(errors[0].contains("invalid endpoint address"), "{bad}: {errors:?}");
        assert!(errors[0].starts_with("1:"), "{errors:?}");
    }
    let reply = put("[{\"weight\": 2}]");
    assert!(
        reply.errors()[0].contains("missing field `address`"),
        "{:?}",
        reply.errors()
    );
    let reply = put("{\"address\": \"10.0.0.7:8080\"}");
    assert_eq!(reply.status, 400);

    let reply = put("[]");
    assert_eq!(
        (reply.status, reply.errors()),
        (400, vec!["cluster \"web\" needs at least one endpoint".to_string()])
    );
    assert!(
        fake.endpoints.lock().expect("lock").is_empty(),
        "nothing invalid reached the backend"
    );

    let reply = client.request(
        "PUT",
        "/clusters/nope/endpoints",
        &[],
        br#"[{"address": "10.0.0.7:8080"}]"#,
    );
    assert_eq!(
        (reply.status, reply.errors()),
        (404, vec!["unknown cluster \"nope\"".to_string()])
    );
}

/// An endpoint the backend refuses is pointed at where it starts in the body.
#[test]
fn put_endpoints_locates_what_the_backend_refuses() {
    let (server, _fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    let body = "[\n  {\"address\": \"10.0.0.7:8080\"},\n    {\"address\": \"unresolved.test:80\"}\n]";
    let reply = client.request("PUT", "/clusters/web/endpoints", &[], body.as_bytes());
    assert_eq!(
        (reply.status, reply.errors()),
        (400, vec!["3:5: cannot resolve".to_string()])
    );
    let reply = client.request(
        "PUT",
        "/clusters/from-dns/endpoints",
        &[],
        br#"[{"address": "10.0.0.7:8080"}]"#,
    );
    assert_eq!(reply.status, 409, "{}", reply.text());
}

#[test]
fn clusters_metrics_and_drain() {
    let (server, fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    let reply = client.get("/clusters");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["web"]["endpoints"][0]["healthy"], serde_json::json!(true));

    let reply = client.get("/metrics");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(reply
        .text()
        .starts_with("# TYPE ringway_config_generation gauge\nringway_config_generation 7\n"));
    assert!(reply
        .text()
        .ends_with("# TYPE ringway_admin_requests_total counter\nringway_admin_requests_total 2\n"));

    let reply = client.request("POST", "/drain", &[], b"");
    assert_eq!((reply.status, reply.text()), (202, "draining\n"));
    assert!(fake.drained.load(Ordering::SeqCst));
    assert_eq!(client.get("/ready").status, 503);
    assert_eq!(server.calls(), 4);
}

/// A draining proxy takes no new config: 503, and nothing changes.
#[test]
fn changes_after_a_drain_are_refused() {
    let (server, fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    assert_eq!(client.request("POST", "/drain", &[], b"").status, 202);
    let reply = client.request("PUT", "/config", &[], b"[runtime]\nworkers = 4\n");
    assert_eq!(
        (reply.status, reply.errors()),
        (503, vec!["the proxy is draining: it takes no new config".to_string()])
    );
    let reply = client.request(
        "PUT",
        "/clusters/web/endpoints",
        &[],
        br#"[{"address": "10.0.0.7:8080"}]"#,
    );
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(fake.config().0, 0, "nothing was published");
    assert!(fake.endpoints.lock().expect("lock").is_empty());
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let (server, fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    for path in [
        "/",
        "/readyz",
        "/ready/",
        "/clusters/web",
        "/clusters//endpoints",
        "/clusters/a/b/endpoints",
    ] {
        assert_eq!(client.get(path).status, 404, "{path}");
    }
    let cases = [
        ("DELETE", "/config", "GET, HEAD, PUT"),
        ("POST", "/ready", "GET, HEAD"),
        ("GET", "/drain", "POST"),
        ("GET", "/clusters/web/endpoints", "PUT"),
        ("PUT", "/metrics", "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        let reply = client.request(method, path, &[], b"");
        assert_eq!(
            (reply.status, reply.header("allow")),
            (405, Some(allow)),
            "{method} {path}"
        );
        assert!(reply.header("content-length").is_some());
    }
    assert!(!fake.drained.load(Ordering::SeqCst));
    assert!(fake.config.lock().expect("lock").is_none());
}

#[test]
fn head_gets_the_length_without_the_body() {
    let (server, _fake) = start_default();
    let mut client = Client::connect(server.local_addr());
    let reply = client.request("HEAD", "/ready", &[], b"");
    assert_eq!((reply.status, reply.header("content-length")), (200, Some("6")));
    assert!(reply.body.is_empty());
    // The connection stays in step: the next response is read whole.
    assert_eq!(client.get("/ready").text(), "ready\n");
}
