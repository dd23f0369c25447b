//! Admin endpoint tests over real loopback sockets, against a fake backend:
//! `routes` checks what each route answers, `limits` the auth, framing,
//! keep-alive, deadline and cap behaviour. Here: the fake and a tiny client.

mod limits;
mod routes;

use super::{AdminBackend, AdminServer, ConfigRefused, EndpointsRefused, Limits};
use crate::config::endpoint_list::JsonEndpoint;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A backend that records what it was asked and answers like the real one.
#[derive(Default)]
struct Fake {
    not_ready: AtomicBool,
    drained: AtomicBool,
    generation: AtomicU64,
    config: Mutex<Option<Arc<str>>>,
    endpoints: Mutex<Vec<(String, Vec<JsonEndpoint>)>>,
}

impl AdminBackend for Fake {
    fn ready(&self) -> bool {
        !self.not_ready.load(Ordering::SeqCst) && !self.drained.load(Ordering::SeqCst)
    }

    fn config(&self) -> (u64, Arc<str>) {
        let config = self.config.lock().expect("lock").clone();
        (
            self.generation.load(Ordering::SeqCst),
            config.unwrap_or_else(|| Arc::from("[runtime]\n")),
        )
    }

    fn put_config(&self, toml: &str) -> Result<u64, ConfigRefused> {
        if self.drained.load(Ordering::SeqCst) {
            return Err(ConfigRefused::Draining);
        }
        if toml.contains("bogus") {
            return Err(ConfigRefused::Invalid(
                "admin:3:7: unknown field `bogus`\nadmin:9:1: missing field `listener`\n".to_string(),
            ));
        }
        *self.config.lock().expect("lock") = Some(Arc::from(toml));
        Ok(self.generation.fetch_add(1, Ordering::SeqCst) + 1)
    }

    fn put_endpoints(&self, cluster: &str, endpoints: Vec<JsonEndpoint>) -> Result<u64, EndpointsRefused> {
        if self.drained.load(Ordering::SeqCst) {
            return Err(EndpointsRefused::Draining);
        }
        if cluster == "from-dns" {
            return Err(EndpointsRefused::Conflict("takes its endpoints from `dns`".to_string()));
        }
        if cluster != "web" {
            return Err(EndpointsRefused::UnknownCluster);
        }
        if endpoints.is_empty() {
            return Err(EndpointsRefused::Invalid(vec![(
                None,
                "cluster \"web\" needs at least one endpoint".to_string(),
            )]));
        }
        let unresolved = endpoints.iter().position(|e| e.address.starts_with("unresolved."));
        if let Some(i) = unresolved {
            return Err(EndpointsRefused::Invalid(vec![(Some(i), "cannot resolve".to_string())]));
        }
        self.endpoints
            .lock()
            .expect("lock")
            .push((cluster.to_string(), endpoints));
        Ok(self.generation.fetch_add(1, Ordering::SeqCst) + 1)
    }

    fn clusters(&self) -> serde_json::Value {
        serde_json::json!({ "web": { "endpoints": [{ "address": "127.0.0.1:9000", "healthy": true }] } })
    }

    fn metrics(&self) -> String {
        "# TYPE ringway_config_generation gauge\nringway_config_generation 7".to_string()
    }

    fn drain(&self) {
        self.drained.store(true, Ordering::SeqCst);
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn start(token: Option<&str>, limits: Limits) -> (AdminServer, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let server = AdminServer::start_with_limits(loopback(), token.map(str::to_string), fake.clone(), limits)
        .expect("admin server starts");
    (server, fake)
}

fn start_default() -> (AdminServer, Arc<Fake>) {
    start(None, Limits::default())
}

/// One parsed response.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(self.header("content-type"), Some("application/json"));
        serde_json::from_slice(&self.body).expect("json body")
    }

    /// The `errors` array of a JSON error body.
    fn errors(&self) -> Vec<String> {
        let json = self.json();
        let errors = json["errors"].as_array().expect("errors array");
        errors.iter().map(|e| e.as_str().expect("string").to_string()).collect()
    }
}

/// A test client on one connection; every read gives up after 5 s.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(address: SocketAddr) -> Client {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.send(&request_bytes(method, path, headers, body));
        self.reply(method == "HEAD")
    }

    fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    /// Read one response; a HEAD response has no body whatever its length says.
    fn reply(&mut self, head_request: bool) -> Reply {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(length) = response.parse(&self.buf).expect("response head") {
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let status = response.code.expect("status");
                let content_length = headers.iter().find(|(n, _)| n == "content-length");
                let body_length = match content_length {
                    _ if status < 200 => 0,
                    Some(_) if head_request => 0,
                    Some((_, v)) => v.parse().expect("content-length"),
                    None => panic!("every final response carries content-length"),
                };
                while self.buf.len() < length + body_length {
                    assert!(self.fill() > 0, "closed inside a response body");
                }
                let body = self.buf[length..length + body_length].to_vec();
                self.buf.drain(..length + body_length);
                return Reply { status, headers, body };
            }
            assert!(self.fill() > 0, "closed before a response head");
        }
    }

    /// True when the server closed the connection (with nothing unread).
    fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}
