//! IPv6 listeners over real sockets on ::1: routes that name an IPv6
//! literal host, and `[::]` listening for IPv6 clients only.

mod common;

use common::*;
use std::net::SocketAddr;

/// A route names an IPv6 literal in brackets; a request's Host matches it
/// in any spelling of the same address.
#[test]
fn a_route_matches_an_ipv6_literal_host_in_any_spelling() {
    let literal = Upstream::start(Behavior::Named("literal".into()));
    let other = Upstream::start(Behavior::Named("other".into()));
    let config = format!(
        "{RUNTIME_1}
[[listener]]
name = \"ingress\"
address = \"[::1]:0\"

  [[listener.route]]
  match = {{ host = \"[0:0::1]\" }}
  cluster = \"literal\"

  [[listener.route]]
  cluster = \"other\"

[[cluster]]
name = \"literal\"
endpoints = [ {} ]

[[cluster]]
name = \"other\"
endpoints = [ {} ]
",
        literal.endpoint(1),
        other.endpoint(1)
    );
    let (server, addr) = proxy(&config);
    assert!(addr.is_ipv6(), "{addr}");
    let port = addr.port();
    for (host, expected) in [
        (format!("[::1]:{port}"), "literal"),
        ("[0:0:0:0:0:0:0:1]".to_string(), "literal"),
        ("[::1]".to_string(), "literal"),
        ("[::2]".to_string(), "other"),
        ("localhost".to_string(), "other"),
    ] {
        let resp = get(addr, &host, "/");
        assert_eq!(resp.status, 200, "{host}: {}", resp.text());
        assert_eq!(resp.header("x-upstream"), Some(expected), "{host}");
    }
    stop(server);
}

/// `[::]:PORT` takes IPv6 clients only, as NGINX and Envoy listen, whatever
/// the host's net.ipv6.bindv6only: it binds beside an IPv4 socket on the
/// same port, and an IPv4 client reaches that socket, not the proxy.
#[test]
fn an_ipv6_listener_takes_ipv6_clients_only() {
    let upstream = Upstream::start(Behavior::Named("up".into()));
    // Bound, never listening: an IPv4 client of this port is refused.
    let v4 = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    v4.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
    let port = v4
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("an inet address")
        .port();
    let config = format!(
        "{RUNTIME_1}
[[listener]]
name = \"ingress\"
address = \"[::]:{port}\"

  [[listener.route]]
  cluster = \"up\"

[[cluster]]
name = \"up\"
endpoints = [ {} ]
",
        upstream.endpoint(1)
    );
    let (server, _) = proxy(&config);
    let v6_client = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let resp = get(v6_client, "svc", "/");
    assert_eq!((resp.status, resp.header("x-upstream")), (200, Some("up")));
    let refused = std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(
        refused.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "an IPv4 client must not reach the [::] listener"
    );
    stop(server);
    drop(v4);
}
