//! Turns the options into what the connection loops need: the resolved
//! target address and every distinct request pre-serialized once, plus the
//! order (smooth weighted round robin over the mix) to cycle through them.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::options::{LoadOptions, MixEntry};

/// Longest cycle a mix may expand to after dividing the weights by their gcd.
const MAX_MIX_CYCLE: u64 = 100_000;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host and port as written (the Host header), e.g. `localhost:9000`.
    pub authority: String,
    /// Host without port (and without IPv6 brackets), for resolution.
    pub host: String,
    /// Port, 80 when not written.
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl Target {
    /// Parses `http://host[:port][/path]`.
    pub fn parse(url: &str) -> io::Result<Target> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(invalid(format!(
                    "unsupported scheme {scheme:?} in {url:?} (only http:// is supported)"
                )))
            }
            None => return Err(invalid(format!("bad URL {url:?} (expected http://host:port/path)"))),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        let path = path.split('#').next().unwrap_or("/").to_string();
        if authority.is_empty() || authority.contains('@') {
            return Err(invalid(format!("bad host in URL {url:?}")));
        }
        if path.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control()) {
            return Err(invalid(format!("bad path in URL {url:?}")));
        }
        let (host, port) = split_host_port(authority).map_err(|what| invalid(format!("bad URL {url:?}: {what}")))?;
        Ok(Target {
            authority: authority.to_string(),
            host: host.to_string(),
            port,
            path,
        })
    }

    /// Resolves the host once and picks the address to load (blocking; call
    /// before the run starts): the first, in the resolver's order, that
    /// accepts a connection within `timeout`, as wrk does. A name such as
    /// `localhost` may resolve to `::1` and `127.0.0.1` while the server
    /// listens on one of them only.
    pub fn resolve(&self, timeout: Duration) -> io::Result<SocketAddr> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        first_reachable(&addrs, |a| TcpStream::connect_timeout(a, timeout).is_ok())
            .ok_or_else(|| invalid(format!("{} did not resolve to any address", self.host)))
    }
}

/// The first of `addrs` that `connects`, or the first of all when none does
/// (the run then counts its connect errors). A lone address is not tried:
/// the run's own connections will.
fn first_reachable(addrs: &[SocketAddr], connects: impl FnMut(&SocketAddr) -> bool) -> Option<SocketAddr> {
    match addrs {
        [] => None,
        [only] => Some(*only),
        _ => addrs.iter().copied().find(connects).or(addrs.first().copied()),
    }
}

/// Splits an authority into host and port (80 when not written). What is
/// left after it goes into the Host header as written, so anything a server
/// could read differently is refused: text after an IPv6 literal's `]`
/// other than a port, an IPv6 address without brackets (`::1:9000` has no
/// one reading), a sign or anything but digits in the port.
fn split_host_port(authority: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("bad IPv6 host")?;
        if h.parse::<Ipv6Addr>().is_err() {
            return Err("bad IPv6 host");
        }
        match after {
            "" => (h, None),
            _ => (h, Some(after.strip_prefix(':').ok_or("bad text after the IPv6 host")?)),
        }
    } else {
        if authority.matches(':').count() > 1 {
            return Err("an IPv6 host needs brackets, as in http://[::1]:9000/");
        }
        let (h, p) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        // RFC 3986 reg-name (or IPv4) characters only.
        let name_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b);
        if h.is_empty() || !h.bytes().all(name_byte) {
            return Err("bad host");
        }
        (h, p)
    };
    let port = match port {
        None => 80,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().map_err(|_| "bad port")?,
        Some(_) => return Err("bad port"),
    };
    Ok((host, port))
}

/// Serializes one request: request line, Host (unless given), headers,
/// Content-Length when there is a body or the method defines one (RFC 9110
/// §8.6: a POST with an empty body says so), then the body. The body's
/// framing is its own: framing fields among `headers` are left out.
pub fn serialize(method: &str, target: &Target, path: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\n").as_bytes());
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        out.extend_from_slice(format!("Host: {}\r\n", target.authority).as_bytes());
    }
    let frames =
        |name: &str| name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding");
    for (name, value) in headers.iter().filter(|(name, _)| !frames(name)) {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let defines_body = ["POST", "PUT", "PATCH"].iter().any(|m| method.eq_ignore_ascii_case(m));
    if !body.is_empty() || defines_body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The pre-serialized requests and the order to send them in.
#[derive(Debug, Clone)]
pub struct RequestSet {
    /// Distinct requests, ready to write.
    pub requests: Vec<Vec<u8>>,
    /// Indexes into `requests`, one full weighted cycle.
    pub order: Vec<usize>,
}

/// Merges mix headers over the global ones (a mix header replaces a same-named one).
fn merged(global: &[(String, String)], extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = global
        .iter()
        .filter(|(n, _)| !extra.iter().any(|(m, _)| m.eq_ignore_ascii_case(n)))
        .cloned()
        .collect();
    out.extend(extra.iter().cloned());
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Builds every request of the run from the options.
pub fn build(opts: &LoadOptions, target: &Target) -> io::Result<RequestSet> {
    let single = [MixEntry {
        weight: 1,
        path: target.path.clone(),
        headers: Vec::new(),
    }];
    let mix: Vec<&MixEntry> = if opts.mix.is_empty() {
        single.iter().collect()
    } else {
        opts.mix.iter().filter(|e| e.weight > 0).collect()
    };
    if mix.is_empty() {
        return Err(invalid("the mix has no entry with a weight above 0".into()));
    }
    let requests = mix
        .iter()
        .map(|e| {
            let headers = merged(&opts.headers, &e.headers);
            serialize(&opts.method, target, &e.path, &headers, &opts.body)
        })
        .collect();
    let weights: Vec<u64> = mix.iter().map(|e| u64::from(e.weight)).collect();
    let g = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    let weights: Vec<i64> = weights.iter().map(|w| (w / g) as i64).collect();
    let total: i64 = weights.iter().sum();
    if total as u64 > MAX_MIX_CYCLE {
        return Err(invalid(format!(
            "mix weights are too fine-grained: one cycle would be {total} requests (max {MAX_MIX_CYCLE})"
        )));
    }
    // Smooth weighted round robin: spreads each entry evenly over the cycle.
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i)))
            .unwrap_or((0, &0));
        current[best] -= total;
        order.push(best);
    }
    Ok(RequestSet { requests, order })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:9000/api?x=1").expect("valid");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 9000, "/api?x=1")
        );
        let t = Target::parse("http://localhost").expect("valid");
        assert_eq!((t.authority.as_str(), t.port, t.path.as_str()), ("localhost", 80, "/"));
        let t = Target::parse("http://[::1]:8080").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert!(Target::parse("https://x/").is_err());
        assert!(Target::parse("localhost:80").is_err());
        assert!(Target::parse("http://h:99999/").is_err());
    }

    #[test]
    fn ambiguous_authorities_are_refused() {
        let t = Target::parse("http://[::1]/x").expect("valid");
        assert_eq!((t.host.as_str(), t.port, t.authority.as_str()), ("::1", 80, "[::1]"));
        let t = Target::parse("http://[2001:db8::1]:0").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("2001:db8::1", 0));
        let t = Target::parse("http://my-host.example_1:8080").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("my-host.example_1", 8080));
        for bad in [
            "http://[::1]junk/x",
            "http://[::1]:/x",
            "http://[::1]:8080x/",
            "http://[nothost]:80/",
            "http://[::1/",
            "http://::1:19501/x",
            "http://::1/",
            "http://:80/",
            "http://h:/",
            "http://h:+80/",
            "http://h: 80/",
            "http://a b:80/",
            "http://h\"x:80/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_first_address_that_connects_is_loaded() {
        let (v6, v4) = (
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 80)),
            SocketAddr::from(([127, 0, 0, 1], 80)),
        );
        let only = |up: SocketAddr| move |a: &SocketAddr| *a == up;
        assert_eq!(first_reachable(&[v4, v6], only(v6)), Some(v6));
        assert_eq!(first_reachable(&[v6, v4], only(v4)), Some(v4));
        assert_eq!(first_reachable(&[v6, v4], |_| true), Some(v6));
        assert_eq!(first_reachable(&[v6, v4], |_| false), Some(v6));
        assert_eq!(first_reachable(&[], |_| true), None);
        assert_eq!(
            first_reachable(&[v6], |_| panic!("a lone address is not tried")),
            Some(v6)
        );

        // Over real sockets: a closed port first, then a listening one.
        let up = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (up_addr, closed_addr) = (up.local_addr().expect("addr"), closed.local_addr().expect("addr"));
        drop(closed);
        let connects = |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok();
        assert_eq!(first_reachable(&[closed_addr, up_addr], connects), Some(up_addr));
    }

    #[test]
    fn requests_and_weighted_order() {
        let opts = LoadOptions {
            url: "http://h:1/".into(),
            method: "POST".into(),
            headers: vec![("x-canary".into(), "0".into()), ("a".into(), "b".into())],
            body: b"hi".to_vec(),
            mix: vec![
                MixEntry {
                    weight: 30,
                    path: "/one".into(),
                    headers: vec![],
                },
                MixEntry {
                    weight: 10,
                    path: "/two".into(),
                    headers: vec![("X-Canary".into(), "1".into())],
                },
            ],
            ..LoadOptions::default()
        };
        let target = Target::parse(&opts.url).expect("valid");
        let set = build(&opts, &target).expect("valid");
        assert_eq!(
            set.requests[1],
            b"POST /two HTTP/1.1\r\nHost: h:1\r\na: b\r\nX-Canary: 1\r\nContent-Length: 2\r\n\r\nhi"
        );
        assert_eq!(set.order, vec![0, 0, 1, 0]);
    }

    #[test]
    fn an_empty_body_is_announced_where_the_method_defines_one() {
        let target = Target::parse("http://h:1/").expect("valid");
        assert_eq!(
            serialize("POST", &target, "/", &[], b""),
            b"POST / HTTP/1.1\r\nHost: h:1\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            serialize("GET", &target, "/", &[], b""),
            b"GET / HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
    }
}
