//! IPv6 listeners over real sockets on ::1: routes that name an IPv6
//! literal host. (That an IPv6 listening socket takes IPv6 clients only is
//! a unit test of its socket option: a test here binds loopback alone.)

mod common;

use common::*;

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
