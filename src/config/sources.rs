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

/// An endpoint's `HOST:PORT` or `IP:PORT` as a socket address (the first
/// a name resolves to), with a port above 0.
pub(super) fn resolve_endpoint(text: &str) -> Result<SocketAddr, String> {
    let addr = match text.parse() {
        Ok(addr) => addr,
        Err(_) => text
            .to_socket_addrs()
            .ok()
            .and_then(|mut it| it.next())
            .ok_or_else(|| format!("cannot resolve endpoint address {text:?}; expected HOST:PORT"))?,
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
