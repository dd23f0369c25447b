//! TLS termination and mutual TLS, over real sockets: a rustls client talks
//! to the proxy's TLS listener with certificates from a test CA; the proxy
//! verifies them, authorises routes by the client's SPIFFE ID and tells the
//! upstream who called.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

const FRONTEND: &str = "spiffe://test.local/ns/web/sa/frontend";
const OPS: &str = "spiffe://test.local/ns/ops/sa/admin";

/// A CA, the proxy's certificate, and client certificates, as PEM files in
/// a directory of their own (removed on drop).
struct Pki {
    dir: PathBuf,
    ca_pem: String,
}

impl Pki {
    fn new() -> Pki {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ringway-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let (ca_pem, issuer) = ca("Ringway test CA");
        std::fs::write(dir.join("ca.pem"), &ca_pem).expect("write CA");
        let pki = Pki { dir, ca_pem };
        pki.leaf(&issuer, "server", Some("spiffe://test.local/ns/mesh/sa/ringway"));
        pki.leaf(&issuer, "frontend", Some(FRONTEND));
        pki.leaf(&issuer, "ops", Some(OPS));
        pki.leaf(&issuer, "anonymous", None);
        pki.leaf(&issuer, "payments", Some("spiffe://test.local/ns/pay/sa/payments"));
        pki.leaf(&issuer, "rotated", Some("spiffe://test.local/ns/mesh/sa/ringway"));
        pki.leaf_for(&issuer, "api", "api.test.local", None);
        pki.leaf_for(&issuer, "apps", "*.apps.test.local", None);
        let (_, stranger_ca) = ca("Someone else's CA");
        pki.leaf(&stranger_ca, "stranger", Some(FRONTEND));
        pki
    }

    /// `name.pem` and `name.key`: a leaf for `localhost` signed by `issuer`.
    fn leaf(&self, issuer: &Issuer<'static, KeyPair>, name: &str, spiffe: Option<&str>) {
        self.leaf_for(issuer, name, "localhost", spiffe);
    }

    /// As `leaf`, for the DNS name `dns`.
    fn leaf_for(&self, issuer: &Issuer<'static, KeyPair>, name: &str, dns: &str, spiffe: Option<&str>) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(vec![dns.to_string()]).expect("leaf params");
        if let Some(id) = spiffe {
            params
                .subject_alt_names
                .push(SanType::URI(id.try_into().expect("URI SAN")));
        }
        let cert = params.signed_by(&key, issuer).expect("sign leaf");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write cert");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("write key");
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A cluster's `tls` value that verifies the upstream against the test
    /// CA as `localhost`.
    fn cluster_tls_by_name(&self) -> String {
        format!("{{ ca = {:?}, server_name = \"localhost\" }}", self.path("ca.pem"))
    }

    /// The listener's `tls` table: the server certificate, and client
    /// certificates verified against the CA when `mtls`.
    fn listener_tls(&self, mtls: bool) -> String {
        let ca = if mtls {
            format!(", client_ca = {:?}", self.path("ca.pem"))
        } else {
            String::new()
        };
        format!(
            "tls = {{ cert = {:?}, key = {:?}{ca} }}",
            self.path("server.pem"),
            self.path("server.key")
        )
    }

    /// A client that trusts the CA and presents `identity`'s certificate.
    fn client(&self, identity: Option<&str>) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("add CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(name) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
                    .expect("client cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client cert PEM");
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).expect("client key");
                builder.with_client_auth_cert(chain, key).expect("client auth")
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert.pem(), Issuer::new(params, key))
}

/// A blocking TLS client connection; responses are read with the same
/// parser as the plain clients'.
struct TlsClient {
    wire: Wire<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsClient {
    fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsClient {
        TlsClient::connect_as(addr, config, "localhost")
    }

    /// Asking for `name` (SNI) and verifying the certificate against it.
    fn connect_as(addr: SocketAddr, config: Arc<rustls::ClientConfig>, name: &str) -> TlsClient {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        tcp.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
        // Each write its own segment, so tests can split records on purpose.
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from(name.to_string()).expect("server name");
        let session = rustls::ClientConnection::new(config, name).expect("client session");
        TlsClient {
            wire: Wire::over(rustls::StreamOwned::new(session, tcp)),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wire.stream.write_all(bytes)?;
        self.wire.stream.flush()
    }

    fn read_reply(&mut self) -> io::Result<Response> {
        self.wire.read_response(false)
    }

    fn get(&mut self, path: &str, extra: &str) -> io::Result<Response> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: svc.local\r\n{extra}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// End our side as a closing TLS client does: close_notify, then FIN.
    fn close_notify_and_fin(&mut self) {
        self.wire.stream.conn.send_close_notify();
        self.wire.stream.flush().expect("close_notify");
        self.wire.stream.sock.shutdown(std::net::Shutdown::Write).expect("FIN");
    }

    /// Wait for the proxy to end the connection (`what` it was, for the
    /// message): a close, with or without close_notify, or a reset.
    fn expect_closed(&mut self, what: &str) {
        let mut byte = [0u8; 1];
        match self.wire.stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => {}
            other => panic!("{what} is still open: {other:?}"),
        }
    }

    /// Whether the handshake resumed an earlier session.
    fn resumed(&self) -> bool {
        self.wire.stream.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The protocol ALPN agreed on, if any.
    fn alpn(&self) -> Option<Vec<u8>> {
        self.wire.stream.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The leaf certificate the proxy served.
    fn server_certificate(&self) -> Vec<u8> {
        let chain = self.wire.stream.conn.peer_certificates().expect("server chain");
        chain[0].to_vec()
    }
}

/// `config` offering `protocols` in ALPN instead.
fn offering(config: Arc<rustls::ClientConfig>, protocols: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut config = (*config).clone();
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn mtls_config(pki: &Pki, up: &Upstream, route_extra: &str) -> String {
    format!(
        "{RUNTIME_1}
[[listener]]
name = \"ingress\"
address = \"127.0.0.1:0\"
{tls}
  [[listener.route]]
  name = \"admin\"
  match = {{ path_prefix = \"/admin\" }}
  cluster = \"a\"
  {route_extra}

  [[listener.route]]
  name = \"all\"
  match = {{ path_prefix = \"/\" }}
  cluster = \"a\"

[[cluster]]
name = \"a\"
endpoints = [ {} ]
",
        up.endpoint(1),
        tls = pki.listener_tls(true),
    )
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn mtls_requests_reach_the_upstream_with_the_verified_identity() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&mtls_config(&pki, &up, ""));
    let mut client = TlsClient::connect(addr, pki.client(Some("frontend")));

    // A client cannot claim an identity with the header itself.
    let reply = client
        .get(
            "/",
            "x-forwarded-client-cert: URI=spiffe://test.local/ns/ops/sa/admin\r\n",
        )
        .expect("first request");
    assert_eq!(reply.status, 200);
    let seen = Echoed::parse(&reply.body);
    assert_eq!(
        seen.header_all("x-forwarded-client-cert"),
        vec![format!("URI={FRONTEND}")]
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    // Keep-alive: a second request, and a body spanning many TLS records
    // each way.
    let body = pattern(0, 256 * 1024);
    let mut post = format!(
        "POST /upload HTTP/1.1\r\nHost: svc.local\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    post.extend_from_slice(&body);
    // Twice: after a large response the session's scratch buffer has grown,
    // and a read into it must still take no more than a record's worth.
    for _ in 0..2 {
        client.send(&post).expect("send the upload");
        let reply = client.read_reply().expect("upload reply");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-echo-body-length"), Some("262144"));
        assert!(Echoed::parse(&reply.body).body == body, "the body came back altered");
    }
    assert_eq!(up.connections(), 1, "one upstream connection, reused");
    stop(server);
}

/// Wait until `count` certificate rotations went through and every worker
/// serves the config they made.
fn wait_rotations(server: &ringway::worker::Server, count: f64) {
    let rotations = "ringway_tls_certificate_rotations_total{result=\"ok\"}";
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while sample(&server.metrics(), rotations).unwrap_or(0.0) < count || !server.shared().ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "no rotation: {}",
            server.metrics()
        );
        std::thread::yield_now();
    }
}

/// Apply `config` as a reload and wait until every worker serves it.
fn reload(server: &ringway::worker::Server, config: &str) {
    ringway::admin::apply(server, config, "test").unwrap_or_else(|e| panic!("apply: {e}"));
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !server.shared().ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "workers did not take the new generation"
        );
        std::thread::yield_now();
    }
}

/// A reload that changes whom a listener trusts to identify clients ends
/// the connections it admitted before: a client verified against a CA the
/// config no longer names does not keep its identity. One that changes
/// only routes leaves them open.
#[test]
fn connections_admitted_under_a_changed_client_ca_end() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&mtls_config(&pki, &up, ""));
    let bound = mtls_config(&pki, &up, "").replace("127.0.0.1:0", &addr.to_string());

    let mut kept = TlsClient::connect(addr, pki.client(Some("ops")));
    assert_eq!(kept.get("/", "").expect("before the route change").status, 200);
    let route_change = bound.replace("cluster = \"a\"\n  \n", "cluster = \"a\"\n  timeout = \"5s\"\n");
    assert_ne!(route_change, bound);
    reload(&server, &route_change);
    let reply = kept.get("/", "").expect("after a route change");
    assert_eq!(reply.status, 200);
    assert!(!reply.announces_close(), "a route change keeps connections");

    // The same CA under another path: a change of terms all the same.
    std::fs::copy(pki.path("ca.pem"), pki.path("ca2.pem")).expect("copy the CA");
    let moved = bound.replace("/ca.pem\"", "/ca2.pem\"");
    assert_ne!(moved, bound);
    reload(&server, &moved);
    kept.expect_closed("the connection admitted under the old CA");
    let mut fresh = TlsClient::connect(addr, pki.client(Some("ops")));
    assert_eq!(fresh.get("/", "").expect("under the new CA").status, 200);
    stop(server);
}

#[test]
fn routes_admit_only_the_principals_they_allow() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let route = "allow_principals = [ \"spiffe://test.local/ns/ops/*\" ]";
    let log = pki.dir.join("access.log");
    let config = format!(
        "[access_log]\ntarget = {:?}\n{}",
        log.display().to_string(),
        mtls_config(&pki, &up, route)
    );
    let (server, addr) = proxy(&config);

    let mut frontend = TlsClient::connect(addr, pki.client(Some("frontend")));
    let refused = frontend.get("/admin/users", "").expect("admin as frontend");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("x-ringway-error"), Some("forbidden"));
    // The refusal leaves the connection usable, and other routes open.
    assert_eq!(frontend.get("/", "").expect("index as frontend").status, 200);

    let mut ops = TlsClient::connect(addr, pki.client(Some("ops")));
    let admitted = ops.get("/admin/users", "").expect("admin as ops");
    assert_eq!(admitted.status, 200);
    assert_eq!(
        Echoed::parse(&admitted.body).header("x-forwarded-client-cert"),
        Some(format!("URI={OPS}").as_str())
    );

    // Verified, but with no SPIFFE ID: no identity to allow.
    let mut anonymous = TlsClient::connect(addr, pki.client(Some("anonymous")));
    assert_eq!(anonymous.get("/admin/users", "").expect("admin, no id").status, 403);
    let seen = Echoed::parse(&anonymous.get("/", "").expect("index, no id").body);
    assert_eq!(seen.header("x-forwarded-client-cert"), None);

    assert_eq!(up.requests(), 3, "refused requests never reached the upstream");
    stop(server); // the drain flushes the access log

    // Each line names the caller's identity (null without one).
    let text = std::fs::read_to_string(&log).expect("access log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let seen: Vec<(u64, Option<&str>)> = lines
        .iter()
        .map(|l| (l["status"].as_u64().unwrap_or(0), l["peer_identity"].as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (403, Some(FRONTEND)),
            (200, Some(FRONTEND)),
            (200, Some(OPS)),
            (403, None),
            (200, None)
        ],
        "{text}"
    );
}

#[test]
fn clients_without_a_trusted_certificate_never_get_through() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&mtls_config(&pki, &up, ""));

    // TLS 1.3: the client learns of the refusal on its first read.
    for who in [None, Some("stranger")] {
        let mut client = TlsClient::connect(addr, pki.client(who));
        let outcome = client.get("/", "");
        assert!(outcome.is_err(), "{who:?} was served");
    }
    // Plain HTTP on the TLS port is not a handshake: a TLS alert, then close.
    let mut plain = Client::connect(addr);
    plain.send(b"GET / HTTP/1.1\r\nHost: svc.local\r\n\r\n");
    let answer = plain.read_to_close();
    assert_eq!(answer.first(), Some(&0x15), "an alert record: {answer:?}");

    let metrics = server.metrics();
    let failed = sample(
        &metrics,
        "ringway_downstream_tls_handshake_failures_total{listener=\"ingress\"}",
    );
    assert_eq!(failed, Some(3.0), "{metrics}");
    assert_eq!(up.requests(), 0);
    stop(server);
}

#[test]
fn a_stalled_handshake_is_cut_at_the_header_read_timeout() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let config = mtls_config(&pki, &up, "").replace(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\nheader_read_timeout = \"200ms\"\n",
    );
    let (server, addr) = proxy(&config);
    let mut silent = Client::connect(addr);
    silent.expect_closed();

    // Past the handshake, a head that stalls gets its 408 over TLS.
    let mut slow = TlsClient::connect(addr, pki.client(Some("frontend")));
    slow.send(b"GET / HTTP/1.1\r\nHost: svc").expect("part of a head");
    let reply = slow.read_reply().expect("408 over TLS");
    assert_eq!(reply.status, 408);
    assert_eq!(reply.header("x-ringway-error"), Some("header-read-timeout"));
    stop(server);
}

#[test]
fn optional_client_certificates_are_verified_when_sent() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let tls = pki.listener_tls(true).replace(" }", ", require_client_cert = false }");
    let config = config_with(&endpoints(&[&up]), &tls, "allow_principals = [\"*\"]", "");
    let (server, addr) = proxy(&config);
    // Without a certificate: served as far as the handshake, refused by the route.
    let mut anonymous = TlsClient::connect(addr, pki.client(None));
    let refused = anonymous.get("/", "").expect("request without a certificate");
    assert_eq!(refused.status, 403);
    // With one: its identity is admitted.
    let mut frontend = TlsClient::connect(addr, pki.client(Some("frontend")));
    let reply = frontend.get("/", "").expect("request with a certificate");
    assert_eq!(reply.status, 200);
    assert_eq!(
        Echoed::parse(&reply.body).header("x-forwarded-client-cert"),
        Some(format!("URI={FRONTEND}").as_str())
    );
    // A certificate that is sent must still be good.
    let mut stranger = TlsClient::connect(addr, pki.client(Some("stranger")));
    assert!(stranger.get("/", "").is_err(), "an untrusted certificate got through");
    stop(server);
}

/// A WebSocket handshake over TLS becomes a tunnel like a plain one: the
/// upstream's greeting and the client's early bytes first, then both ways
/// byte-exact, and the client's close (close_notify, FIN) passes through to
/// the upstream and back.
#[test]
fn websocket_tunnels_through_a_tls_listener() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::WebSocketEcho);
    let (server, addr) = proxy(&simple_config(&[&up], &pki.listener_tls(false), ""));
    let mut client = TlsClient::connect(addr, pki.client(None));
    client
        .send(&[WEBSOCKET_HANDSHAKE, b"early|"].concat())
        .expect("handshake");
    let switched = client.read_reply().expect("101");
    assert_eq!(switched.status, 101, "{}", switched.text());
    assert_eq!(switched.header("upgrade"), Some("websocket"));
    let greeting = client.wire.read_exact_vec(12, "greeting").expect("greeting");
    assert_eq!(greeting, b"hello\nearly|");
    for message in [&b"ping"[..], &pattern(0, 256 * 1024)] {
        client.send(message).expect("send through the tunnel");
        let echoed = client.wire.read_exact_vec(message.len(), "echo").expect("echo");
        assert!(echoed == message, "{} bytes came back altered", message.len());
    }
    client.close_notify_and_fin();
    up.wait_closed(1);
    let mut rest = Vec::new();
    client
        .wire
        .stream
        .read_to_end(&mut rest)
        .expect("a clean end from the proxy");
    assert!(rest.is_empty(), "{rest:?}");
    stop(server);
}

/// A head sent a byte per TLS record, and records split across TCP writes:
/// the proxy assembles whatever arrives in whatever pieces.
#[test]
fn requests_in_tiny_records_and_split_records_are_assembled() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], &pki.listener_tls(false), ""));
    let mut client = TlsClient::connect(addr, pki.client(None));
    for byte in b"GET /bytewise HTTP/1.1\r\nHost: svc.local\r\n\r\n" {
        client.send(std::slice::from_ref(byte)).expect("one byte, one record");
    }
    let reply = client.read_reply().expect("reply to the bytewise head");
    assert_eq!(reply.status, 200);
    assert!(Echoed::parse(&reply.body).request_line.starts_with("GET /bytewise "));

    // One record, its ciphertext written to the socket a few bytes at a time.
    let tls = &mut client.wire.stream;
    tls.conn
        .writer()
        .write_all(b"GET /split HTTP/1.1\r\nHost: svc.local\r\n\r\n")
        .expect("plaintext into the session");
    let mut cipher = Vec::new();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut cipher).expect("ciphertext");
    }
    for piece in cipher.chunks(7) {
        tls.sock.write_all(piece).expect("a piece of the record");
        tls.sock.flush().expect("flush");
    }
    let reply = client.read_reply().expect("reply to the split record");
    assert_eq!(reply.status, 200);
    assert!(Echoed::parse(&reply.body).request_line.starts_with("GET /split "));
    stop(server);
}

/// The client CA file rewritten in place (a new trust bundle) ends the
/// connections admitted under the old one, as a changed path does.
#[test]
fn a_rewritten_client_ca_ends_the_connections_admitted_before() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&mtls_config(&pki, &up, ""));
    let mut kept = TlsClient::connect(addr, pki.client(Some("ops")));
    assert_eq!(kept.get("/", "").expect("before").status, 200);
    let rewrite = |content: &str, count: f64| {
        std::fs::write(pki.path("ca.pem.tmp"), content).expect("write");
        std::fs::rename(pki.path("ca.pem.tmp"), pki.path("ca.pem")).expect("rename");
        wait_rotations(&server, count);
    };
    // The same certificates written again (secret mounts do, on every
    // rotation) keep the connection.
    rewrite(&pki.ca_pem, 1.0);
    let reply = kept.get("/", "").expect("after the same bundle");
    assert!(reply.status == 200 && !reply.announces_close());
    rewrite(&format!("{}{}", pki.ca_pem, ca("another").0), 2.0);
    kept.expect_closed("the connection admitted under the old bundle");
    let mut fresh = TlsClient::connect(addr, pki.client(Some("ops")));
    assert_eq!(fresh.get("/", "").expect("under the new bundle").status, 200);
    stop(server);
}

/// A WebSocket tunnel ends too when its listener's admission terms change
/// (here: a plain listener turned TLS), with a reset, while a route
/// change leaves it.
#[test]
fn websocket_tunnels_end_when_their_listener_terms_change() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::WebSocketEcho);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let bound = |listener_extra: &str, route_extra: &str| {
        config_with(&endpoints(&[&up]), listener_extra, route_extra, "").replace("127.0.0.1:0", &addr.to_string())
    };
    let mut client = Client::connect(addr);
    client.send(b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    assert_eq!(client.read_response().status, 101);
    assert_eq!(client.read_bytes(6), b"hello\n");
    reload(&server, &bound("", "timeout = \"20s\""));
    client.send(b"still here");
    assert_eq!(client.read_bytes(10), b"still here", "a route change keeps the tunnel");
    reload(&server, &bound(&pki.listener_tls(false), ""));
    // Cut, not ended: a FIN would read as the upstream closing its side.
    client.expect_reset();
    stop(server);
}

/// A listener that moves to another address stops, and its WebSocket
/// tunnels run on: only a change of admission terms cuts them, moving or
/// not.
#[test]
fn websocket_tunnels_outlive_a_listener_that_moves() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::WebSocketEcho);
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let free_port = || free_address().to_string();
    let at =
        |address: &str, listener_extra: &str| simple_config(&[&up], listener_extra, "").replace("127.0.0.1:0", address);
    let mut client = Client::connect(addr);
    client.send(b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    assert_eq!(client.read_response().status, 101);
    assert_eq!(client.read_bytes(6), b"hello\n");
    let moved = free_port();
    reload(&server, &at(&moved, ""));
    assert_eq!(
        get(moved.parse().expect("address"), "ws.test", "/").status,
        200,
        "served at the new address"
    );
    client.send(b"still here");
    assert_eq!(client.read_bytes(10), b"still here", "the tunnel runs on");
    // A later reload turns the moved listener TLS: the terms the tunnel was
    // admitted under are gone, and so is the tunnel.
    reload(&server, &at(&moved, &pki.listener_tls(false)));
    client.expect_closed();
    stop(server);

    // Moving and turning TLS in one reload: the terms changed, the tunnel ends.
    let (server, addr) = proxy(&simple_config(&[&up], "", ""));
    let at =
        |address: &str, listener_extra: &str| simple_config(&[&up], listener_extra, "").replace("127.0.0.1:0", address);
    let mut client = Client::connect(addr);
    client.send(b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    assert_eq!(client.read_response().status, 101);
    assert_eq!(client.read_bytes(6), b"hello\n");
    reload(&server, &at(&free_port(), &pki.listener_tls(false)));
    client.expect_closed();
    stop(server);
}

/// A reload that narrows a tcp listener's allow_principals cuts the relays
/// it admitted before (they were let in once, when they connected).
#[test]
fn tcp_relays_admitted_under_changed_principals_are_cut() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let config = |listen: &str, who: &str| {
        let listener = format!("{}\nallow_principals = [\"{who}\"]", pki.listener_tls(true));
        tcp_config(&endpoints(&[&up]), &listener, "").replace("127.0.0.1:0", listen)
    };
    let (server, addr) = proxy(&config("127.0.0.1:0", "spiffe://test.local/ns/web/*"));
    let mut frontend = TlsClient::connect(addr, pki.client(Some("frontend")));
    assert_eq!(frontend.get("/l4", "").expect("relayed").status, 200);
    reload(&server, &config(&addr.to_string(), "spiffe://test.local/ns/ops/*"));
    frontend.expect_closed("the relay admitted under the old principals");
    up.wait_closed(1);
    stop(server);
}

/// A tcp listener terminates TLS too: the upstream gets the decrypted
/// bytes verbatim, the listener's allow_principals admits or refuses the
/// connection, and its access log line names the caller.
#[test]
fn tcp_listeners_terminate_mtls_and_admit_by_principal() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let log = pki.dir.join("l4.log");
    let listener = format!(
        "{}\nallow_principals = [\"spiffe://test.local/ns/web/*\"]",
        pki.listener_tls(true)
    );
    let config = format!(
        "[access_log]\ntarget = {:?}\n{}",
        log.display().to_string(),
        tcp_config(&endpoints(&[&up]), &listener, "")
    );
    let (server, addr) = proxy(&config);
    let raw = "GET /l4 HTTP/1.1\r\nHost: l4.test\r\nx-forwarded-client-cert: spoofed\r\n\r\n";
    let mut frontend = TlsClient::connect(addr, pki.client(Some("frontend")));
    frontend.send(raw.as_bytes()).expect("request over TLS");
    let reply = frontend.read_reply().expect("reply over TLS");
    assert_eq!(reply.status, 200);
    assert_eq!(up.last().raw_head, raw.as_bytes().to_vec(), "L4: bytes verbatim");

    // The relay carries a protocol it does not know: whatever a client
    // offers in ALPN (gRPC's h2, say), none is agreed and none refused.
    let mut grpc = TlsClient::connect(addr, offering(pki.client(Some("frontend")), &[b"h2"]));
    grpc.send(raw.as_bytes()).expect("request over TLS");
    assert_eq!(grpc.read_reply().expect("reply over TLS").status, 200);
    assert_eq!(grpc.alpn(), None);

    let mut ops = TlsClient::connect(addr, pki.client(Some("ops")));
    let refused = ops.get("/l4", "");
    assert!(
        refused.is_err(),
        "a principal the listener does not admit got an answer"
    );
    drop((frontend, grpc, ops));
    assert_eq!(up.requests(), 2);
    stop(server);

    let text = std::fs::read_to_string(&log).expect("access log");
    let mut lines: Vec<(String, Option<String>)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .map(|v| {
            let reason = v["reason"].as_str().unwrap_or_default().to_string();
            (reason, v["peer_identity"].as_str().map(str::to_string))
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            ("-".to_string(), Some(FRONTEND.to_string())),
            ("-".to_string(), Some(FRONTEND.to_string())),
            ("forbidden".to_string(), Some(OPS.to_string()))
        ],
        "{text}"
    );
}

#[test]
fn server_only_tls_serves_clients_without_certificates() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let config = simple_config(&[&up], &pki.listener_tls(false), "");
    let (server, addr) = proxy(&config);
    let mut client = TlsClient::connect(addr, pki.client(None));
    for _ in 0..3 {
        let reply = client.get("/", "").expect("request over TLS");
        assert_eq!(reply.status, 200);
        assert_eq!(Echoed::parse(&reply.body).header("x-forwarded-client-cert"), None);
    }
    assert_eq!(client.alpn().as_deref(), Some(&b"http/1.1"[..]));
    // An HTTP/1.0 client may say so in ALPN; one offering only h2 is
    // refused in the handshake rather than misread after it.
    let mut old = TlsClient::connect(addr, offering(pki.client(None), &[b"http/1.0"]));
    old.send(b"GET / HTTP/1.0\r\nHost: svc.local\r\n\r\n")
        .expect("request over TLS");
    assert_eq!(old.read_reply().expect("reply over TLS").status, 200);
    assert_eq!(old.alpn().as_deref(), Some(&b"http/1.0"[..]));
    let mut h2 = TlsClient::connect(addr, offering(pki.client(None), &[b"h2"]));
    assert!(h2.get("/", "").is_err(), "an h2-only client got an answer");
    stop(server);
}

/// A resumed session would bring back an identity proved once, with no
/// look at the certificate since (it may have expired): mTLS listeners
/// make every client prove it again. Where no identity is at stake,
/// sessions resume.
#[test]
fn mtls_sessions_are_never_resumed() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    for (verifies_clients, resumes) in [(true, false), (false, true)] {
        let config = simple_config(&[&up], &pki.listener_tls(verifies_clients), "");
        let (server, addr) = proxy(&config);
        // One client config, whose session cache the second connection asks from.
        let client = pki.client(Some("frontend"));
        let mut first = TlsClient::connect(addr, client.clone());
        assert_eq!(first.get("/", "").expect("first").status, 200);
        drop(first);
        let mut second = TlsClient::connect(addr, client);
        assert_eq!(second.get("/", "").expect("second").status, 200);
        assert_eq!(second.resumed(), resumes, "client_ca: {verifies_clients}");
        stop(server);
    }
}

/// Bytes after a client's close_notify are ignored (RFC 8446 §6.1), and
/// arriving with it in one read they do not stall the worker: the next
/// client is served.
#[test]
fn bytes_behind_a_close_notify_do_not_stall_the_worker() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&simple_config(&[&up], &pki.listener_tls(false), ""));
    let mut client = TlsClient::connect(addr, pki.client(None));
    assert_eq!(client.get("/", "").expect("request over TLS").status, 200);
    let tls = &mut client.wire.stream;
    tls.conn.send_close_notify();
    let mut out = Vec::new();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut out).expect("close_notify record");
    }
    // More than the session takes in one go, behind the close_notify.
    out.extend_from_slice(&[0x17; 8 * 1024]);
    tls.sock.write_all(&out).expect("close_notify and more, in one write");
    let mut next = TlsClient::connect(addr, pki.client(None));
    let reply = next.get("/", "").expect("the worker still serves");
    assert_eq!(reply.status, 200);
    stop(server);
}

/// A TLS client that ends with close_notify and FIN while its answer is
/// awaited has left, as a plain one that closes: the try ends there and
/// the connection with it, before the upstream answers. The close_notify
/// waits unread (nothing reads while the answer is awaited), so a peek
/// alone would take it for a client still sending.
#[test]
fn a_tls_client_that_leaves_with_close_notify_is_noticed() {
    let pki = Pki::new();
    let hold = Upstream::start(Behavior::Hold);
    let (server, addr) = proxy(&simple_config(&[&hold], &pki.listener_tls(false), ""));
    let mut client = TlsClient::connect(addr, pki.client(None));
    client
        .send(b"GET /held HTTP/1.1\r\nHost: svc.local\r\n\r\n")
        .expect("request over TLS");
    hold.wait_requests(1);
    client.close_notify_and_fin();
    client.expect_closed("the connection of a client that left");
    hold.release();
    stop(server);
}

/// The DER of the first certificate in a PEM file.
fn leaf_der(path: &str) -> Vec<u8> {
    let mut certs = CertificateDer::pem_file_iter(path).expect("PEM file");
    certs.next().expect("a certificate").expect("PEM").to_vec()
}

#[test]
fn rotated_certificate_files_are_served_without_a_reload() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let (server, addr) = proxy(&mtls_config(&pki, &up, ""));
    let mut before = TlsClient::connect(addr, pki.client(Some("frontend")));
    assert_eq!(before.get("/", "").expect("request").status, 200);
    assert_eq!(before.server_certificate(), leaf_der(&pki.path("server.pem")));

    // Rotate as tools do: write aside, rename over, the key first.
    let rotated = leaf_der(&pki.path("rotated.pem"));
    for (from, to) in [("rotated.key", "server.key"), ("rotated.pem", "server.pem")] {
        std::fs::copy(pki.path(from), pki.path(&format!("{to}.tmp"))).expect("copy");
        std::fs::rename(pki.path(&format!("{to}.tmp")), pki.path(to)).expect("rename");
    }
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let rotations = "ringway_tls_certificate_rotations_total{result=\"ok\"}";
    while sample(&server.metrics(), rotations).unwrap_or(0.0) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no rotation: {}",
            server.metrics()
        );
        std::thread::yield_now();
    }
    let mut after = TlsClient::connect(addr, pki.client(Some("frontend")));
    assert_eq!(after.get("/", "").expect("request").status, 200);
    assert_eq!(
        after.server_certificate(),
        rotated,
        "new connections get the new certificate"
    );
    // A connection made before goes on with its session.
    assert_eq!(before.get("/", "").expect("request on the old session").status, 200);
    stop(server);
}

/// A new trust bundle (the CA file rewritten) retires pooled upstream
/// connections verified under the old one; a rotated client certificate
/// keeps them.
#[test]
fn a_new_ca_file_retires_pooled_upstream_connections() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", true);
    let tls = format!(
        "{{ ca = {:?}, cert = {:?}, key = {:?}, server_name = \"localhost\" }}",
        pki.path("ca.pem"),
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let (server, addr) = proxy(&upstream_tls_config(&up, &tls, ""));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("pay.local", "/1").status, 200);
    let rotate = |files: &[(&str, &str)], count: f64| {
        for (from, to) in files {
            std::fs::copy(pki.path(from), pki.path(&format!("{to}.tmp"))).expect("copy");
            std::fs::rename(pki.path(&format!("{to}.tmp")), pki.path(to)).expect("rename");
        }
        wait_rotations(&server, count);
    };
    rotate(&[("rotated.key", "server.key"), ("rotated.pem", "server.pem")], 1.0);
    assert_eq!(client.get("pay.local", "/2").status, 200);
    assert_eq!(
        up.connections(),
        1,
        "a rotated client certificate keeps pooled connections"
    );
    // The same bundle written again, as secret mounts do on every rotation.
    std::fs::copy(pki.path("ca.pem"), pki.path("ca-copy.pem")).expect("copy the CA");
    rotate(&[("ca-copy.pem", "ca.pem")], 2.0);
    assert_eq!(client.get("pay.local", "/3").status, 200);
    assert_eq!(up.connections(), 1, "the same CA certificates keep pooled connections");
    // A new bundle: one more CA trusted.
    let bundle = format!("{}{}", pki.ca_pem, ca("another").0);
    std::fs::write(pki.path("bundle.pem"), bundle).expect("write the bundle");
    rotate(&[("bundle.pem", "ca.pem")], 3.0);
    assert_eq!(client.get("pay.local", "/4").status, 200);
    assert_eq!(up.connections(), 2, "a new trust bundle retires pooled connections");
    stop(server);
}

#[test]
fn sni_picks_the_certificate_for_the_name_asked() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    let sni = format!(
        ", sni = [ {{ names = [\"api.test.local\"], cert = {:?}, key = {:?} }}, \
         {{ names = [\"*.apps.test.local\"], cert = {:?}, key = {:?} }} ] }}",
        pki.path("api.pem"),
        pki.path("api.key"),
        pki.path("apps.pem"),
        pki.path("apps.key")
    );
    let tls = pki.listener_tls(false).replace(" }", &sni);
    let (server, addr) = proxy(&simple_config(&[&up], &tls, ""));
    for (name, served) in [
        ("api.test.local", "api.pem"),
        ("shop.apps.test.local", "apps.pem"),
        ("localhost", "server.pem"),
    ] {
        let mut client = TlsClient::connect_as(addr, pki.client(None), name);
        assert_eq!(client.get("/", "").expect(name).status, 200, "{name}");
        assert_eq!(client.server_certificate(), leaf_der(&pki.path(served)), "{name}");
    }
    stop(server);

    // Errors point at the entry.
    for (entry, expected) in [
        (
            "{ names = [\"api_test\"], cert = \"c\", key = \"k\" }",
            "must be a DNS name",
        ),
        ("{ names = [], cert = \"c\", key = \"k\" }", "at least one name"),
        (
            "{ names = [\"a.test\"], cert = \"c\", key = \"k\" }, { names = [\"A.test\"], cert = \"c\", key = \"k\" }",
            "listed twice",
        ),
        ("{ names = [\"127.0.0.1\"], cert = \"c\", key = \"k\" }", "IP address"),
        (
            &format!(
                "{{ names = [\"api.test.local\"], cert = {:?}, key = {:?} }}",
                pki.path("api.pem"),
                pki.path("apps.key")
            ),
            "do not make a usable pair",
        ),
    ] {
        let tls = pki
            .listener_tls(false)
            .replace(" }", &format!(", sni = [ {entry} ] }}"));
        let errors = ringway::config::parse(&simple_config(&[&up], &tls, ""), "mesh.toml", 1)
            .expect_err(expected)
            .to_string();
        assert!(errors.contains(expected), "{errors}");
    }
}

#[test]
fn tls_config_errors_point_at_the_offending_key() {
    let pki = Pki::new();
    let up = Upstream::start(Behavior::Echo);
    // A certificate file cut short, as a rotation caught mid-write leaves it.
    let pem = std::fs::read_to_string(pki.path("server.pem")).expect("server.pem");
    let cut = pki.path("cut.pem");
    std::fs::write(&cut, &pem[..pem.len() / 2]).expect("write cut.pem");
    let cases = [
        (
            simple_config(
                &[&up],
                &format!("tls = {{ cert = {cut:?}, key = {:?} }}", pki.path("server.key")),
                "",
            ),
            "no \"-----END CERTIFICATE-----\" line",
        ),
        (
            simple_config(&[&up], "tls = { cert = \"/nonexistent/cert.pem\", key = \"k\" }", ""),
            "no such file",
        ),
        (
            simple_config(&[&up], "tls = { cert = \"/tmp\", key = \"k\" }", ""),
            "\"/tmp\": it is a directory",
        ),
        (
            simple_config(
                &[&up],
                &format!(
                    "tls = {{ cert = {:?}, key = {:?} }}",
                    pki.path("server.pem"),
                    pki.path("frontend.key")
                ),
                "",
            ),
            "do not make a usable pair",
        ),
        (
            config_with(
                &endpoints(&[&up]),
                &pki.listener_tls(false),
                "allow_principals = [\"spiffe://test.local/x\"]",
                "",
            ),
            "needs a listener with `tls.client_ca`",
        ),
        (
            config_with(
                &endpoints(&[&up]),
                &pki.listener_tls(true),
                "allow_principals = [\"frontend\"]",
                "",
            ),
            "must be a SPIFFE ID",
        ),
        (
            tcp_config(
                &endpoints(&[&up]),
                &format!("{}\nallow_principals = [\"*\"]", pki.listener_tls(false)),
                "",
            ),
            "needs a listener with `tls.client_ca`",
        ),
        (
            simple_config(&[&up], "allow_principals = [\"*\"]", ""),
            "http listeners authorise per route",
        ),
    ];
    for (config, expected) in cases {
        let errors = ringway::config::parse(&config, "mesh.toml", 1)
            .expect_err(expected)
            .to_string();
        assert!(errors.contains(expected), "{errors}");
        // FILE:LINE:COL on the line that holds the problem.
        let line: usize = errors
            .strip_prefix("mesh.toml:")
            .and_then(|rest| rest.split(':').next())
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("no line number: {errors}"));
        let text = config.lines().nth(line - 1).unwrap_or_default();
        assert!(
            text.contains("tls") || text.contains("allow_principals"),
            "line {line} is {text:?}: {errors}"
        );
    }
}

// ---------------------------------------------------------------------------
// TLS to upstreams
// ---------------------------------------------------------------------------

/// A TLS upstream on its own thread: answers each request 200 with
/// `x-peer: <the SPIFFE ID of the proxy's client certificate>` (or `none`)
/// and `x-path`, keeping connections open. Counts connections and requests.
struct TlsUpstream {
    addr: SocketAddr,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Connections it has closed (after their thread finished with them).
    closed: Arc<std::sync::atomic::AtomicUsize>,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
}

impl TlsUpstream {
    /// Serves `name`'s certificate; with `require_client_cert`, only clients
    /// with a certificate from the test CA get through the handshake.
    fn start(pki: &Pki, name: &str, require_client_cert: bool) -> TlsUpstream {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
            .expect("cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("cert PEM");
        let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).expect("key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
                roots.add(cert.expect("CA")).expect("add CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key).expect("server config");
        // Offered to clients that ask; the reply's x-alpn says what was agreed.
        config.alpn_protocols = vec![b"http/1.1".to_vec(), b"postgresql".to_vec()];
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (conns, done, reqs) = (connections.clone(), closed.clone(), requests.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (config, done, reqs) = (config.clone(), done.clone(), reqs.clone());
                std::thread::spawn(move || {
                    serve_tls_upstream(tcp, config, reqs);
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        TlsUpstream {
            addr,
            connections,
            closed,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn wait_closed(&self, n: usize) {
        let deadline = std::time::Instant::now() + IO_TIMEOUT;
        while self.closed.load(std::sync::atomic::Ordering::SeqCst) < n {
            assert!(std::time::Instant::now() < deadline, "the upstream did not close");
            std::thread::yield_now();
        }
    }

    fn paths(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve_tls_upstream(tcp: TcpStream, config: Arc<rustls::ServerConfig>, requests: Arc<std::sync::Mutex<Vec<String>>>) {
    let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
    let Ok(session) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(session, tcp);
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match tls.read(&mut chunk) {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or_default().to_string();
        if let Ok(mut r) = requests.lock() {
            r.push(path.clone());
        }
        if path == "/refuse" {
            // Refuses the body unread, then closes once the refusal is
            // delivered (with unread bytes the close is a reset, which
            // throws away what was not sent yet).
            let _ = tls
                .write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .and_then(|()| tls.flush());
            let deadline = std::time::Instant::now() + IO_TIMEOUT;
            while unacked_bytes(&tls.sock) > 0 && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
            return;
        }
        if path == "/echo-duplex" {
            // Answers at once and echoes the body as it reads it.
            let len = content_length(&head);
            let _ = echo_as_it_reads(&mut tls, std::mem::take(&mut buf), len);
            return;
        }
        if path.starts_with("/until-close") {
            // A body that ends at the close: whole with close_notify, cut
            // (as an attacker's FIN would) without.
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
                .and_then(|()| tls.flush());
            if path == "/until-close" {
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
            return;
        }
        let peer = tls
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| ringway::tls::spiffe_id(leaf))
            .unwrap_or_else(|| "none".to_string());
        let alpn = tls
            .conn
            .alpn_protocol()
            .map_or_else(|| "none".to_string(), |p| String::from_utf8_lossy(p).into_owned());
        let resumed = tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let reply = format!(
            "HTTP/1.1 200 OK\r\nx-peer: {peer}\r\nx-path: {path}\r\nx-alpn: {alpn}\r\nx-resumed: {resumed}\r\n\
             Content-Length: 2\r\n\r\nok"
        );
        if tls.write_all(reply.as_bytes()).and_then(|()| tls.flush()).is_err() {
            return;
        }
        if path == "/then-close" {
            // As an upstream's idle timeout would: close_notify, then close.
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return;
        }
    }
}

/// The Content-Length of a request head (0 without one).
fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Answer 200 at once, then echo a body of `len` bytes (`read` of it
/// already in hand) chunk by chunk as it is read, which needs the answer
/// read while the body is still being sent: past what the sockets buffer,
/// a proxy that sends the whole body first stalls both.
fn echo_as_it_reads(stream: &mut (impl Read + Write), read: Vec<u8>, len: usize) -> io::Result<()> {
    fn chunk(stream: &mut impl Write, data: &[u8]) -> io::Result<()> {
        stream.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
        stream.write_all(data)?;
        stream.write_all(b"\r\n")
    }
    stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
    let mut left = len.saturating_sub(read.len());
    if !read.is_empty() {
        chunk(stream, &read)?;
    }
    let mut buf = vec![0; 1 << 16];
    while left > 0 {
        let want = left.min(buf.len());
        let n = stream.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= n;
        chunk(stream, &buf[..n])?;
    }
    stream.write_all(b"0\r\n\r\n")?;
    stream.flush()
}

/// A plain upstream that does as `/echo-duplex` does on its first
/// connection: answers at once and echoes the body as it reads it.
fn plain_duplex_echo() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        tcp.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let head = String::from_utf8_lossy(&read_request_head(&mut tcp)).into_owned();
        echo_as_it_reads(&mut tcp, Vec::new(), content_length(&head)).expect("echo");
    });
    (addr, served)
}

/// Send `head` and then `len` pattern bytes through a TLS connection to
/// `addr` while reading what comes back, all in one thread (a session
/// cannot be split between two): returns what came back before the proxy
/// closed the connection, and how much of it had come when the last body
/// byte was handed to the session.
fn tls_upload_reading_meanwhile(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    head: &[u8],
    len: usize,
) -> (Vec<u8>, usize) {
    use std::os::fd::AsRawFd;
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nonblocking(true).expect("nonblocking");
    let name = ServerName::try_from("localhost").expect("server name");
    let mut session = rustls::ClientConnection::new(config, name).expect("client session");
    session.writer().write_all(head).expect("head");
    let mut sent = 0;
    let mut got = Vec::new();
    let mut got_by_the_end_of_the_body = None;
    let mut plaintext = vec![0; 1 << 16];
    let deadline = std::time::Instant::now() + IO_TIMEOUT * 3;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "stalled: {sent} sent, {} received",
            got.len()
        );
        let mut moved = false;
        while sent < len && !session.is_handshaking() {
            let part = pattern(sent as u64, (len - sent).min(1 << 14));
            let taken = session.writer().write(&part).expect("plaintext");
            if taken == 0 {
                break;
            }
            sent += taken;
            moved = true;
        }
        if sent == len && got_by_the_end_of_the_body.is_none() {
            got_by_the_end_of_the_body = Some(got.len());
        }
        while session.wants_write() {
            match session.write_tls(&mut tcp) {
                Ok(_) => moved = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        let ended = match session.read_tls(&mut tcp) {
            Ok(0) => true,
            Ok(_) => {
                session.process_new_packets().expect("records");
                moved = true;
                false
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("receive: {e}"),
        };
        loop {
            match session.reader().read(&mut plaintext) {
                Ok(0) => return (got, got_by_the_end_of_the_body.unwrap_or(0)),
                Ok(n) => got.extend_from_slice(&plaintext[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e} after {} bytes", got.len()),
            }
        }
        if ended {
            return (got, got_by_the_end_of_the_body.unwrap_or(0));
        }
        if !moved {
            let events = match session.wants_write() {
                true => libc::POLLIN | libc::POLLOUT,
                false => libc::POLLIN,
            };
            let mut poll = libc::pollfd {
                fd: tcp.as_raw_fd(),
                events,
                revents: 0,
            };
            // SAFETY: one pollfd, valid for the call.
            unsafe { libc::poll(&mut poll, 1, 100) };
        }
    }
}

/// The answer that came back through [`tls_upload_reading_meanwhile`] or
/// a plain client: a 200 echoing the `len` pattern bytes, then a close.
fn assert_echoed(resp: &Response, len: usize) {
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body.len(), len, "the whole echo");
    assert_eq!(
        Fnv::of(&resp.body),
        pattern_fnv(len as u64),
        "the echo came back changed"
    );
    // Answered before its body ended, the connection closes after it.
    assert_eq!(resp.header("connection"), Some("close"));
}

/// Upload `ECHOED` bytes after `head` from a TLS client to `addr`, reading
/// meanwhile: the echo must begin before the body ends, and come back whole.
fn assert_tls_upload_echoed(addr: SocketAddr, pki: &Pki, head: &[u8]) {
    let (got, early) = tls_upload_reading_meanwhile(addr, pki.client(None), head, ECHOED);
    assert!(early > 0, "the answer waited for the whole body");
    let resp = Wire::over(io::Cursor::new(got))
        .read_response(false)
        .expect("an answer");
    assert_echoed(&resp, ECHOED);
}

/// Past what the sockets buffer both ways: a proxy that sends the whole
/// body before it reads the answer would stall until the route's timeout.
const ECHOED: usize = 32 << 20;

/// An upstream answers 200 at once and echoes the body as it reads it,
/// with TLS on either side and on both: the answer streams to the client
/// while the body still goes up, through a TLS session shared by the task
/// that sends the body and the one that forwards the answer.
#[test]
fn a_full_duplex_answer_streams_through_tls_on_either_side() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", false);
    let head = |host: &str| {
        format!("POST /echo-duplex HTTP/1.1\r\nHost: {host}\r\nContent-Length: {ECHOED}\r\n\r\n").into_bytes()
    };

    // A plain client, a TLS upstream.
    let (server, addr) = proxy(&upstream_tls_config(&up, &pki.cluster_tls_by_name(), ""));
    let mut client = Client::connect(addr);
    client.send(&head("pay.local"));
    let mut writer = client.writer();
    let sending = std::thread::spawn(move || {
        let mut sent = 0;
        while sent < ECHOED {
            let part = pattern(sent as u64, (ECHOED - sent).min(1 << 16));
            writer
                .write_all(&part)
                .expect("the body goes up while the echo comes back");
            sent += part.len();
        }
        std::time::Instant::now()
    });
    // Waits for the answer's first byte, leaving it to be read.
    client.stream().peek(&mut [0; 1]).expect("the answer begins");
    let answer_began = std::time::Instant::now();
    assert_echoed(&client.read_final_response(), ECHOED);
    let body_sent = sending.join().expect("sender");
    // However much the sockets could hold: not sent whole first.
    assert!(answer_began < body_sent, "the answer waited for the whole body");
    stop(server);

    // A TLS client, a plain upstream.
    let (echo, served) = plain_duplex_echo();
    let (server, addr) = proxy(&config_with(
        &format!("[ {{ address = \"{echo}\" }} ]"),
        &pki.listener_tls(false),
        "",
        "",
    ));
    assert_tls_upload_echoed(addr, &pki, &head("svc.local"));
    served.join().expect("upstream");
    stop(server);

    // TLS both ways.
    let (server, addr) = proxy(&tls_listener_to_tls_upstream(
        &up,
        &pki.listener_tls(false),
        &pki.cluster_tls_by_name(),
        "",
    ));
    assert_tls_upload_echoed(addr, &pki, &head("pay.local"));
    stop(server);
}

/// Bytes written to `socket` that its peer has not acknowledged (SIOCOUTQ).
fn unacked_bytes(socket: &TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut unacked: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ's number) writes one int through the
    // pointer, which points at `unacked`.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut unacked) };
    if rc == 0 {
        unacked
    } else {
        0
    }
}

fn upstream_tls_config(up: &TlsUpstream, tls: &str, cluster_extra: &str) -> String {
    tls_listener_to_tls_upstream(up, "", tls, cluster_extra)
}

/// As [`upstream_tls_config`], with `listener_extra` (its `tls`, say).
fn tls_listener_to_tls_upstream(up: &TlsUpstream, listener_extra: &str, tls: &str, cluster_extra: &str) -> String {
    format!(
        "{RUNTIME_1}
[[listener]]
name = \"ingress\"
address = \"127.0.0.1:0\"
{listener_extra}
  [[listener.route]]
  match = {{ path_prefix = \"/\" }}
  cluster = \"pay\"

[[cluster]]
name = \"pay\"
endpoints = [ {{ address = \"{}\" }} ]
tls = {tls}
{cluster_extra}
",
        up.addr
    )
}

#[test]
fn upstream_mtls_proves_our_identity_and_checks_theirs() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", true);
    let tls = format!(
        "{{ ca = {:?}, cert = {:?}, key = {:?}, principals = [\"spiffe://test.local/ns/pay/*\"] }}",
        pki.path("ca.pem"),
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let (server, addr) = proxy(&upstream_tls_config(&up, &tls, ""));
    let mut client = Client::connect(addr);
    for i in 0..3 {
        let reply = client.get("pay.local", &format!("/charge/{i}"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-peer"), Some("spiffe://test.local/ns/mesh/sa/ringway"));
        assert_eq!(reply.header("x-path"), Some(format!("/charge/{i}").as_str()));
        assert_eq!(reply.header("x-alpn"), Some("http/1.1"));
    }
    // The pooled TLS connection is reused: the session tickets a TLS 1.3
    // server sends after the handshake do not count as unasked bytes.
    assert_eq!(up.connections(), 1);
    stop(server);
}

/// A body that ends at the close reaches a TLS client ended by
/// close_notify only when it came whole: cut short upstream (a FIN
/// without close_notify, which anyone on the path can forge), it ends
/// without one, in a reset, so that the client can tell the two apart.
#[test]
fn an_answer_ending_at_the_close_vouches_for_itself_only_when_whole() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", false);
    let tls = pki.cluster_tls_by_name();
    let listener = format!("address = \"127.0.0.1:0\"\n{}\n", pki.listener_tls(false));
    let config = upstream_tls_config(&up, &tls, "").replacen("address = \"127.0.0.1:0\"\n", &listener, 1);
    let (server, addr) = proxy(&config);
    for (path, whole) in [("/until-close", true), ("/until-close-cut", false)] {
        let mut client = TlsClient::connect(addr, pki.client(None));
        client
            .send(format!("GET {path} HTTP/1.1\r\nHost: pay.local\r\n\r\n").as_bytes())
            .expect("request");
        let mut received = Vec::new();
        let read = client.wire.stream.read_to_end(&mut received);
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {text}");
        assert!(text.ends_with("\r\n\r\nall of it"), "{path}: {text}");
        match whole {
            true => assert!(read.is_ok(), "{path}: ended without close_notify: {read:?}"),
            false => assert_eq!(
                read.map_err(|e| e.kind()).err(),
                Some(io::ErrorKind::ConnectionReset),
                "{path}: a cut answer must not end as a whole one"
            ),
        }
    }
    stop(server);
}

/// A TLS upstream that refuses a large body with a 413 and closes (a
/// reset, as the body is unread) fails the body's write: the 413 it sent
/// first is still read through the session and is the client's answer.
#[test]
fn an_early_refusal_from_a_tls_upstream_reaches_the_client() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", false);
    let tls = pki.cluster_tls_by_name();
    let (server, addr) = proxy(&upstream_tls_config(&up, &tls, ""));
    let body = vec![b'x'; 8 << 20];
    let mut client = Client::connect(addr);
    let head = format!(
        "POST /refuse HTTP/1.1\r\nHost: pay.local\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut writer = client.writer();
    let sender = std::thread::spawn(move || {
        // Ringway stops reading the body once the upstream refused it.
        let _ = writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&body));
    });
    let resp = client.read_response();
    assert_eq!((resp.status, resp.error_reason()), (413, None), "{}", resp.text());
    drop(client);
    let _ = sender.join();
    stop(server);
}

#[test]
fn a_pooled_tls_connection_the_upstream_closed_is_not_reused() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", false);
    let tls = pki.cluster_tls_by_name();
    let (server, addr) = proxy(&upstream_tls_config(&up, &tls, ""));
    let mut client = Client::connect(addr);
    assert_eq!(client.get("pay.local", "/then-close").status, 200);
    up.wait_closed(1);
    // A POST cannot be replayed: it must go out on a connection that is open.
    let reply = client.request(b"POST /charge HTTP/1.1\r\nHost: pay.local\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-path"), Some("/charge"));
    assert_eq!(up.connections(), 2, "the closed connection was replaced");
    stop(server);
}

/// An upstream checked by its SPIFFE ID proves it on every connection: a
/// resumed session would skip the look at its certificate. One checked by
/// name resumes.
#[test]
fn upstream_identities_are_proved_on_every_connection() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", false);
    let by_name = pki.cluster_tls_by_name();
    let by_identity = format!(
        "{{ ca = {:?}, principals = [\"spiffe://test.local/ns/pay/*\"] }}",
        pki.path("ca.pem")
    );
    for (tls, resumes) in [(by_name, "true"), (by_identity, "false")] {
        let (server, addr) = proxy(&upstream_tls_config(&up, &tls, ""));
        let mut client = Client::connect(addr);
        let closed = up.closed.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(client.get("pay.local", "/then-close").status, 200);
        up.wait_closed(closed + 1);
        let reply = client.get("pay.local", "/again");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-resumed"), Some(resumes), "{tls}");
        stop(server);
    }
}

#[test]
fn an_upstream_that_cannot_prove_the_expected_identity_is_refused() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", false);
    let wrong_principal = format!(
        "{{ ca = {:?}, principals = [\"spiffe://test.local/ns/ledger/sa/ledger\"] }}",
        pki.path("ca.pem")
    );
    let wrong_name = format!("{{ ca = {:?}, server_name = \"ledger.local\" }}", pki.path("ca.pem"));
    // An upstream whose certificate does not chain to the cluster's CA.
    let stranger = TlsUpstream::start(&pki, "stranger", false);
    for (up, tls) in [(&up, &wrong_principal), (&up, &wrong_name), (&stranger, &wrong_name)] {
        let (server, addr) = proxy(&upstream_tls_config(up, tls, ""));
        let reply = get(addr, "pay.local", "/charge");
        assert_eq!(reply.status, 502, "{tls}");
        assert_eq!(reply.error_reason(), Some("upstream-tls-failure"));
        stop(server);
    }
    assert!(
        up.paths().is_empty() && stranger.paths().is_empty(),
        "no request was sent"
    );

    // The right name (the certificates are for localhost) is accepted.
    let right_name = pki.cluster_tls_by_name();
    let (server, addr) = proxy(&upstream_tls_config(&up, &right_name, ""));
    let reply = get(addr, "pay.local", "/charge");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-peer"),
        Some("none"),
        "no client certificate was asked for"
    );
    stop(server);
}

/// An upstream that requires a client certificate, which the cluster does
/// not present: in TLS 1.3 its refusal (an alert) arrives only once the
/// request has been sent, and is still the failed handshake it is: a 502
/// `upstream-tls-failure`, retried and counted as a connect failure.
#[test]
fn an_upstream_refusing_our_missing_certificate_is_a_tls_failure() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", true);
    let tls = format!(
        "{{ ca = {:?}, principals = [\"spiffe://test.local/ns/pay/*\"] }}",
        pki.path("ca.pem")
    );
    let config = upstream_tls_config(&up, &tls, "").replace(
        "  cluster = \"pay\"\n",
        "  cluster = \"pay\"\n  retry = { attempts = 3, on = [\"connect-failure\"] }\n",
    );
    let (server, addr) = proxy(&config);
    let reply = get(addr, "pay.local", "/charge");
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.error_reason(), Some("upstream-tls-failure"));
    assert_eq!(up.connections(), 3, "retried as a connect failure");
    assert!(up.paths().is_empty(), "no request got through");
    let failed: f64 = server
        .metrics()
        .lines()
        .filter(|l| l.starts_with("ringway_upstream_cx_connect_fail_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failed, 3.0, "each refused handshake counted");
    stop(server);
}

/// Two clusters reach one address with different TLS expectations: a
/// connection one of them verified is never handed to the other, which
/// would then send requests to an endpoint it never verified. Checked on
/// the first config and after a swap, which carries pools over.
#[test]
fn clusters_sharing_an_address_do_not_share_tls_connections() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", false);
    let verified = pki.cluster_tls_by_name();
    let expects_ledger = format!(
        "{{ ca = {:?}, principals = [\"spiffe://test.local/ns/ledger/sa/ledger\"] }}",
        pki.path("ca.pem")
    );
    let config = |listen: &str| {
        format!(
            "{RUNTIME_1}
[[listener]]
name = \"ingress\"
address = \"{listen}\"
  [[listener.route]]
  match = {{ path_prefix = \"/pay\" }}
  cluster = \"pay\"
  [[listener.route]]
  match = {{ path_prefix = \"/ledger\" }}
  cluster = \"ledger\"

[[cluster]]
name = \"pay\"
endpoints = [ {{ address = \"{addr}\" }} ]
tls = {verified}

[[cluster]]
name = \"ledger\"
endpoints = [ {{ address = \"{addr}\" }} ]
tls = {expects_ledger}
",
            addr = up.addr
        )
    };
    let (server, addr) = proxy(&config("127.0.0.1:0"));
    let mut client = Client::connect(addr);
    for round in 1..=2 {
        let pay = client.get("pay.local", &format!("/pay/{round}"));
        assert_eq!(pay.status, 200);
        let reply = client.get("pay.local", &format!("/ledger/{round}"));
        assert_eq!(reply.status, 502, "round {round}: {}", reply.text());
        assert_eq!(reply.error_reason(), Some("upstream-tls-failure"));
        reload(&server, &config(&addr.to_string()));
    }
    assert_eq!(
        up.paths(),
        ["/pay/1", "/pay/2"],
        "nothing went to the unverified endpoint"
    );
    stop(server);
}

/// Reloads that leave a TLS cluster's settings and files as they were do
/// not restart its health checks (each restart probes at once and counts
/// its thresholds from zero).
#[test]
fn reloads_keep_tls_health_checks_running() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", false);
    // A plain cluster whose check path changes with every reload: once it
    // probes the new path, the checker has taken that reload.
    let marker = Upstream::start(Behavior::Echo);
    let tls = pki.cluster_tls_by_name();
    let extra = |n: usize| {
        format!(
            "health_check = {{ path = \"/healthz\", interval = \"30s\" }}\n\n\
             [[cluster]]\nname = \"marker\"\nendpoints = [ {} ]\n\
             health_check = {{ path = \"/mark{n}\", interval = \"30s\" }}\n",
            marker.endpoint(1)
        )
    };
    let (server, addr) = proxy(&upstream_tls_config(&up, &tls, &extra(0)));
    let config = |n| upstream_tls_config(&up, &tls, &extra(n)).replace("127.0.0.1:0", &addr.to_string());
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let wait_mark = |n: usize| {
        let path = format!("/mark{n}");
        while !marker.received().iter().any(|r| r.path == path) {
            assert!(
                std::time::Instant::now() < deadline,
                "the checker never took reload {n}"
            );
            std::thread::yield_now();
        }
    };
    wait_mark(0);
    for n in 1..=4 {
        reload(&server, &config(n));
        wait_mark(n);
    }
    let probes = up.paths().iter().filter(|p| *p == "/healthz").count();
    assert_eq!(probes, 1, "reloads restarted an unchanged TLS check");
    stop(server);
}

#[test]
fn health_checks_speak_tls_to_tls_clusters() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", true);
    let tls = format!(
        "{{ ca = {:?}, cert = {:?}, key = {:?}, server_name = \"localhost\" }}",
        pki.path("ca.pem"),
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let check = "health_check = { path = \"/healthz\", interval = \"50ms\", healthy_threshold = 1 }";
    let (server, addr) = proxy(&upstream_tls_config(&up, &tls, check));
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !up.paths().iter().any(|p| p == "/healthz") {
        assert!(std::time::Instant::now() < deadline, "no health check arrived over TLS");
        std::thread::yield_now();
    }
    assert_eq!(get(addr, "pay.local", "/after-check").status, 200);
    stop(server);
}

#[test]
fn cluster_tls_config_errors_point_at_the_offending_key() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", false);
    let cases = [
        (
            format!(
                "{{ ca = {:?}, cert = {:?} }}",
                pki.path("ca.pem"),
                pki.path("server.pem")
            ),
            "needs both `cert` and `key`",
        ),
        ("{ ca = \"/nonexistent/ca.pem\" }".to_string(), "no such file"),
        (
            format!("{{ ca = {:?}, server_name = \"bad name!\" }}", pki.path("ca.pem")),
            "not a DNS name",
        ),
        (
            format!("{{ ca = {:?}, principals = [\"pay\"] }}", pki.path("ca.pem")),
            "must be a SPIFFE ID",
        ),
    ];
    for (tls, expected) in cases {
        let config = upstream_tls_config(&up, &tls, "");
        let errors = ringway::config::parse(&config, "mesh.toml", 1)
            .expect_err(expected)
            .to_string();
        assert!(
            errors.contains(expected) && errors.starts_with("mesh.toml:17:"),
            "{errors}"
        );
    }
}

/// A plain tcp listener in front of a TLS cluster: the bytes reach the
/// endpoint inside an mTLS session (our certificate shown, theirs checked
/// against the principals), as a mesh carries any protocol; an endpoint
/// that cannot prove the identity gets nothing.
#[test]
fn tcp_listeners_originate_mtls_to_tls_clusters() {
    let pki = Pki::new();
    let up = TlsUpstream::start(&pki, "payments", true);
    let tls = |principal: &str| {
        format!(
            "tls = {{ ca = {:?}, cert = {:?}, key = {:?}, principals = [{principal:?}] }}",
            pki.path("ca.pem"),
            pki.path("server.pem"),
            pki.path("server.key")
        )
    };
    let endpoints = format!("[ {{ address = \"{}\" }} ]", up.addr);
    let (server, addr) = proxy(&tcp_config(&endpoints, "", &tls("spiffe://test.local/ns/pay/*")));
    let mut client = Client::connect(addr);
    for i in 0..2 {
        let reply = client.get("pay.local", &format!("/l4/{i}"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-peer"), Some("spiffe://test.local/ns/mesh/sa/ringway"));
        assert_eq!(reply.header("x-path"), Some(format!("/l4/{i}").as_str()));
        assert_eq!(
            reply.header("x-alpn"),
            Some("none"),
            "L4 bytes are not announced as HTTP"
        );
    }
    drop(client);
    assert_eq!(up.connections(), 1, "one client connection, one upstream session");
    up.wait_closed(1);
    stop(server);

    let (server, addr) = proxy(&tcp_config(
        &endpoints,
        "",
        &tls("spiffe://test.local/ns/ledger/sa/ledger"),
    ));
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let _ = stream.write_all(b"GET /l4 HTTP/1.1\r\nHost: pay.local\r\n\r\n");
    let mut rest = Vec::new();
    // The proxy ends the connection (a close, or a reset over the unread
    // request), rather than leaving the client waiting.
    let ended = stream.read_to_end(&mut rest);
    assert!(
        !matches!(&ended, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
        "the connection was left open: {ended:?}"
    );
    assert!(rest.is_empty(), "an unproven endpoint's bytes reached the client");
    assert_eq!(up.paths().len(), 2, "nothing more was sent");
    stop(server);
}

/// A client that writes a whole large batch before it reads (as pipelining
/// database clients do) through a TLS tcp listener, while the upstream
/// streams a large answer from the start: both directions must keep
/// moving. A relay that stops reading the client while its write to the
/// client is stuck would stall here until the idle timeout.
#[test]
fn tls_relay_moves_both_directions_when_the_client_reads_late() {
    const EACH_WAY: usize = 24 << 20; // well past loopback socket buffering
    let pki = Pki::new();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = upstream.local_addr().expect("addr");
    let served = std::thread::spawn(move || -> usize {
        let (tcp, _) = upstream.accept().expect("accept");
        let mut writer = tcp.try_clone().expect("clone");
        let pusher = std::thread::spawn(move || {
            let chunk = vec![b'u'; 1 << 16];
            for _ in 0..EACH_WAY / chunk.len() {
                writer.write_all(&chunk).expect("upstream write");
            }
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
        let mut got = 0;
        let mut reader = tcp;
        let mut buf = vec![0; 1 << 16];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        let _ = pusher.join();
        got
    });
    let (server, addr) = proxy(&tcp_config(
        &format!("[ {{ address = \"{up_addr}\" }} ]"),
        &pki.listener_tls(false),
        "",
    ));
    let mut client = TlsClient::connect(addr, pki.client(None));
    let chunk = vec![b'c'; 1 << 16];
    for _ in 0..EACH_WAY / chunk.len() {
        client.send(&chunk).expect("the client's batch goes through");
    }
    let answer = client
        .wire
        .read_exact_vec(EACH_WAY, "the upstream's stream")
        .expect("answer");
    assert!(answer.iter().all(|&b| b == b'u'));
    client.wire.stream.conn.send_close_notify();
    let _ = client.wire.stream.flush();
    assert_eq!(served.join().expect("upstream thread"), EACH_WAY);
    stop(server);
}

/// A TLS client that resets its connection while the relay holds records
/// for it and the upstream has stopped reading: the client's direction is
/// over, and the relay must then wait on the upstream or its idle timeout,
/// not on the reset socket (writable at once, it would spin the loop and
/// the idle timeout would never end the relay). The idle timeout is well
/// above the pauses before the reset, so only the reset leaves it to act.
#[test]
fn tls_relay_whose_client_reset_ends_at_its_idle_timeout() {
    use std::sync::mpsc;
    use std::time::Duration;
    let pki = Pki::new();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = upstream.local_addr().expect("addr");
    let (full_tx, full_rx) = mpsc::channel();
    let (ended_tx, ended_rx) = mpsc::channel();
    // Never reads; writes until its writes stop being taken, says so, then
    // goes on writing until the relay lets go of the connection.
    std::thread::spawn(move || {
        let Ok((mut tcp, _)) = upstream.accept() else { return };
        let chunk = vec![b'u'; 1 << 16];
        let _ = tcp.set_write_timeout(Some(Duration::from_millis(300)));
        while tcp.write_all(&chunk).is_ok() {}
        let _ = full_tx.send(());
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(30)));
        while tcp.write_all(&chunk).is_ok() {}
        let _ = ended_tx.send(());
    });
    let (server, addr) = proxy(&tcp_config(
        &format!("[ {{ address = \"{up_addr}\" }} ]"),
        &format!("idle_timeout = \"2s\"\n{}", pki.listener_tls(false)),
        "",
    ));
    let mut client = TlsClient::connect(addr, pki.client(None));
    client.send(b"hello").expect("handshake and first bytes");
    full_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the upstream's writes back up");
    // The client writes, never reading, until the relay stops taking its
    // bytes too (the upstream's backlog is full).
    let tcp = client.wire.stream.get_ref().try_clone().expect("clone");
    tcp.set_write_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let chunk = vec![b'c'; 1 << 16];
    while client.send(&chunk).is_ok() {}
    socket2::SockRef::from(&tcp)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(tcp);
    drop(client);
    assert!(
        ended_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the relay never let go of the upstream after its client reset"
    );
    stop(server);
}

/// A TLS client's reset passes through a TLS tcp listener to a plain
/// upstream as a reset, and the upstream's reset back to the client as
/// one: a FIN would end the other peer's stream as if whole.
#[test]
fn tls_relay_passes_a_reset_on_as_a_reset() {
    use std::time::Duration;
    let pki = Pki::new();
    for client_resets in [true, false] {
        let (up_addr, ended) = resetting_upstream();
        let (server, addr) = proxy(&tcp_config(
            &format!("[ {{ address = \"{up_addr}\" }} ]"),
            &pki.listener_tls(false),
            "",
        ));
        let mut client = TlsClient::connect(addr, pki.client(None));
        client.send(b"hello").expect("send");
        assert_eq!(client.wire.read_exact_vec(5, "echo").expect("echo"), b"hello");
        if client_resets {
            let tcp = client.wire.stream.get_ref();
            socket2::SockRef::from(tcp)
                .set_linger(Some(Duration::ZERO))
                .expect("linger");
            drop(client);
            let got = ended.recv_timeout(IO_TIMEOUT * 2).expect("the upstream's read ended");
            assert!(
                matches!(&got, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
                "the upstream saw {got:?}"
            );
        } else {
            client.send(b"RESET").expect("send");
            let mut rest = Vec::new();
            let got = client.wire.stream.get_mut().read_to_end(&mut rest);
            assert!(
                matches!(&got, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
                "the client saw {got:?}"
            );
        }
        stop(server);
    }
}
