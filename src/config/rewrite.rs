//! A route's `rewrite`, `request_headers` and `response_headers`, compiled
//! into the [`Edits`] the pipeline applies as it writes each head. Anything
//! that could make a head read differently by the next parser (a control
//! byte, padding whitespace, a framing or hop-by-hop field) or that Ringway
//! writes itself is refused here, so the writer can trust what it is given.

use super::compile::{is_token_byte, Problems};
use super::raw::{RawHeaderEdits, RawRewrite, RawRoute};
use super::snapshot::{Edits, PathPattern};
use crate::http::HOP_BY_HOP;
use std::collections::HashSet;
use toml::Spanned;

/// Fields that describe the body's framing or its continuation, besides the
/// hop-by-hop ones: Ringway writes them for each hop itself.
const FRAMING: [&str; 2] = ["content-length", "expect"];

/// Fields Ringway writes into forwarded requests (tracing, the hop's record,
/// the caller's identity, retry numbering).
const WRITTEN_UPSTREAM: [&str; 7] = [
    "traceparent",
    "via",
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
    "x-ringway-attempts",
];

/// Fields Ringway writes into the responses it returns.
const WRITTEN_DOWNSTREAM: [&str; 2] = ["via", "x-request-id"];

#[derive(Clone, Copy)]
enum Direction {
    Request,
    Response,
}

/// The request and response edits of route `r`, whose compiled path pattern
/// is `path`. Problems are recorded; the edits are only used when there are none.
pub(super) fn compile_edits(r: &RawRoute, path: &PathPattern, p: &mut Problems) -> (Edits, Edits) {
    let mut request = compile_fields(r.request_headers.as_ref(), Direction::Request, p);
    if let Some(rewrite) = &r.rewrite {
        compile_rewrite(rewrite, path, &mut request, p);
    }
    let response = compile_fields(r.response_headers.as_ref(), Direction::Response, p);
    (request, response)
}

fn compile_rewrite(rewrite: &RawRewrite, path: &PathPattern, request: &mut Edits, p: &mut Problems) {
    if let Some(replacement) = &rewrite.path_prefix {
        let text = replacement.get_ref();
        match path {
            PathPattern::Prefix(matched) if valid_path(text) => {
                request.path_prefix = Some((matched.clone(), text.clone()));
            }
            PathPattern::Prefix(_) => p.at(
                replacement.span(),
                format!(
                    "rewrite.path_prefix {text:?} must start with '/' and hold only visible ASCII without '?' or '#'"
                ),
            ),
            _ => p.at(
                replacement.span(),
                "rewrite.path_prefix replaces the prefix a route matched: it needs `match.path_prefix`",
            ),
        }
    }
    if let Some(host) = &rewrite.host {
        if valid_authority(host.get_ref()) {
            request
                .append
                .push(("Host".to_string(), host.get_ref().clone().into_bytes()));
        } else {
            p.at(
                host.span(),
                format!(
                    "rewrite.host {:?} must be a host name or IP address, with an optional port",
                    host.get_ref()
                ),
            );
        }
    }
}

fn compile_fields(raw: Option<&RawHeaderEdits>, direction: Direction, p: &mut Problems) -> Edits {
    let mut edits = Edits::default();
    let Some(raw) = raw else {
        return edits;
    };
    let table = match direction {
        Direction::Request => "request_headers",
        Direction::Response => "response_headers",
    };
    let mut seen = HashSet::new();
    let mut name_ok = |name: &str, span: std::ops::Range<usize>, p: &mut Problems| -> bool {
        let problem = field_name_problem(name, direction).or_else(|| {
            (!seen.insert(name.to_ascii_lowercase()))
                .then(|| format!("{table}: {name:?} appears more than once across set, add and remove"))
        });
        match problem {
            Some(message) => {
                p.at(span, format!("{table}: {message}"));
                false
            }
            None => true,
        }
    };
    for (name, value) in &raw.set {
        if name_ok(name, value.span(), p) && value_ok(value, table, p) {
            edits.drop.push(name.to_ascii_lowercase());
            edits.append.push((name.clone(), value.get_ref().clone().into_bytes()));
        }
    }
    for (name, value) in &raw.add {
        if name_ok(name, value.span(), p) && value_ok(value, table, p) {
            edits.append.push((name.clone(), value.get_ref().clone().into_bytes()));
        }
    }
    for name in &raw.remove {
        if name_ok(name.get_ref(), name.span(), p) {
            edits.drop.push(name.get_ref().to_ascii_lowercase());
        }
    }
    edits
}

/// Why `name` cannot be edited, if it cannot.
fn field_name_problem(name: &str, direction: Direction) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Some(format!("field name {name:?} is not a valid token"));
    }
    if HOP_BY_HOP.contains(&lower.as_str()) || FRAMING.contains(&lower.as_str()) {
        return Some(format!(
            "{name:?} describes the connection or the body's framing, which Ringway writes for each hop"
        ));
    }
    let written = match direction {
        Direction::Request if lower == "host" => {
            return Some("set the upstream Host with `rewrite.host`".to_string());
        }
        Direction::Request => &WRITTEN_UPSTREAM[..],
        Direction::Response => &WRITTEN_DOWNSTREAM[..],
    };
    written
        .contains(&lower.as_str())
        .then(|| format!("{name:?} is written by Ringway itself"))
}

/// A field value as a strict parser reads it back: no control bytes but
/// HTAB, no whitespace at either end (parsers trim it).
pub(super) fn value_ok(value: &Spanned<String>, table: &str, p: &mut Problems) -> bool {
    let v = value.get_ref();
    let clean = v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    let trimmed = !v.starts_with([' ', '\t']) && !v.ends_with([' ', '\t']);
    if !(clean && trimmed) {
        p.at(
            value.span(),
            format!("{table}: value {v:?} must hold no control characters and no leading or trailing whitespace"),
        );
    }
    clean && trimmed
}

/// An origin-form path prefix: '/' first, then visible ASCII up to any query.
pub(super) fn valid_path(text: &str) -> bool {
    text.starts_with('/')
        && text
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'?' && b != b'#')
}

/// `host` or `host:port`, the host a DNS name, an IPv4 address or a
/// bracketed IPv6 address.
pub(super) fn valid_authority(text: &str) -> bool {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => (None, port),
            _ => return false,
        },
        None => match text.rsplit_once(':') {
            Some((host, _)) => (Some(host), &text[host.len()..]),
            None => (Some(text), ""),
        },
    };
    let host_ok =
        host.is_none_or(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for ok in [
            "api.internal",
            "10.0.0.1",
            "api:8080",
            "[::1]",
            "[fe80::1]:443",
            "a-b.c",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "api:",
            "api:99999",
            "api:8x",
            "a b",
            "[::1",
            "[nope]",
            "api/x",
            "u@h",
            "a:1:2",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert!(valid_path("/"));
        assert!(valid_path("/v2/%20x"));
        for bad in ["", "v2", "/a?b", "/a#b", "/a b", "/\u{e9}"] {
            assert!(!valid_path(bad), "{bad}");
        }
    }

    #[test]
    fn managed_names_are_refused_per_direction() {
        let request = |n| field_name_problem(n, Direction::Request);
        let response = |n| field_name_problem(n, Direction::Response);
        assert!(request("Host").is_some_and(|m| m.contains("rewrite.host")));
        assert!(request("Transfer-Encoding").is_some());
        assert!(request("X-Forwarded-For").is_some());
        assert!(request("traceparent").is_some());
        assert!(request("x-env").is_none());
        assert!(response("Content-Length").is_some());
        assert!(response("Via").is_some());
        assert!(response("Server").is_none());
        assert!(response("Host").is_none(), "a response's Host is just a field");
        assert!(request("bad name").is_some());
        assert!(request("").is_some());
    }
}
