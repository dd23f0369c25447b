//! Endpoint sources other than a static list: an endpoints file (a JSON list,
//! the shape PUT /clusters/{name}/endpoints takes) and a DNS name. Both are
//! read here, on control threads only: at compile time, and when the
//! discovery thread notices a change.

use super::endpoint_list;
use super::snapshot::Endpoint;
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

/// Parse an endpoints list (JSON). Errors lead with LINE:COLUMN.
pub fn parse_endpoints_json(text: &str) -> Result<Vec<Endpoint>, String> {
    let list = endpoint_list::parse(text)?;
    let mut seen = HashSet::new();
    let mut endpoints = Vec::with_capacity(list.len());
    for (i, e) in list.into_iter().enumerate() {
        let at = || endpoint_list::element_position(text, i);
        let address = resolve_endpoint(&e.address).map_err(|m| format!("{}{m}", at()))?;
        if !seen.insert(address) {
            return Err(format!("{}endpoint {address} is listed twice", at()));
        }
        endpoints.push(Endpoint {
            address,
            weight: e.weight,
            zone: e.zone,
            priority: e.priority,
        });
    }
    Ok(endpoints)
}

pub fn read_endpoints_file(path: &Path) -> Result<Vec<Endpoint>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_endpoints_json(&text).map_err(|e| format!("{}:{e}", path.display()))
}

/// Every address `name` (HOST:PORT) resolves to, weight 1 each, sorted.
pub fn resolve_dns(name: &str) -> Result<Vec<Endpoint>, String> {
    let mut addrs: Vec<SocketAddr> = name
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {name:?}: {e}"))?
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs
        .into_iter()
        .map(|address| Endpoint {
            address,
            weight: 1,
            zone: None,
            priority: 0,
        })
        .collect())
}

/// `HOST:PORT`, `IPV4:PORT` or `[IPV6]:PORT`, split, with a port above 0.
/// A bare IPv6 address (`::1:80`) is refused: where its port begins is a
/// guess.
pub(crate) fn split_host_port(text: &str) -> Result<(&str, u16), String> {
    let bad =
        || format!("{text:?} is not HOST:PORT with a port above 0 (an IPv6 address goes in brackets: [::1]:8080)");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    let port = Some(port)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    match (host_ok, port) {
        (true, Some(port)) => Ok((host, port)),
        _ => Err(bad()),
    }
}

/// An endpoint's `HOST:PORT` or `IP:PORT` as a socket address (the first
/// a name resolves to), with a port above 0.
pub(super) fn resolve_endpoint(text: &str) -> Result<SocketAddr, String> {
    let addr = match text.parse() {
        Ok(addr) => addr,
        Err(_) => {
            let (host, port) = split_host_port(text).map_err(|e| format!("endpoint address {e}"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (host, port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .ok_or_else(|| format!("cannot resolve endpoint address {text:?}; expected HOST:PORT"))?
        }
    };
    // Nothing listens on port 0: every connect would fail.
    match addr.port() {
        0 => Err(format!("endpoint address {text:?} needs a port above 0")),
        _ => Ok(addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("db.local:5432"), Ok(("db.local", 5432)));
        assert_eq!(split_host_port("[::1]:80"), Ok(("[::1]", 80)));
        for bad in [
            "::1:80",
            "[::1",
            ":80",
            "localhost",
            "http://localhost:80",
            "x:0",
            "x:+80",
            "x:99999",
            "",
            "a b:1",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
        assert!(resolve_endpoint("::1:80").is_err(), "a bare IPv6 address");
        assert_eq!(resolve_endpoint("localhost:80").map(|a| a.port()), Ok(80));
    }

    #[test]
    fn parses_and_validates_lists() {
        let list = parse_endpoints_json(r#"[{"address": "127.0.0.1:80", "weight": 2, "zone": "a"}]"#).expect("valid");
        assert_eq!(
            (list[0].address.port(), list[0].weight, list[0].zone.as_deref()),
            (80, 2, Some("a"))
        );
        let err = parse_endpoints_json("[{\"address\": \"127.0.0.1:80\",\n \"wieght\": 2}]").expect_err("unknown key");
        assert!(err.starts_with("2:"), "{err}");
        assert!(parse_endpoints_json(r#"[{"address": "127.0.0.1:80", "weight": 0}]"#).is_err());
        assert!(parse_endpoints_json(r#"[{"address": "127.0.0.1:0"}]"#).is_err());
        let twice = "[{\"address\": \"127.0.0.1:80\"},\n {\"address\": \"127.0.0.1:80\"}]";
        assert_eq!(
            parse_endpoints_json(twice).expect_err("listed twice"),
            "2:2: endpoint 127.0.0.1:80 is listed twice"
        );
    }

    #[test]
    fn resolves_names() {
        let list = resolve_dns("localhost:8080").expect("localhost resolves");
        assert!(list
            .iter()
            .all(|e| e.address.port() == 8080 && e.address.ip().is_loopback()));
    }
}
