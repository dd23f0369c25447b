//! Routes Ringway answers itself: a redirect, whose `Location` is the
//! request's own URL with the parts the route replaces, or a fixed
//! response. Nothing is forwarded; the request counts under its route with
//! `cluster=""`.

use super::exchange::{Failure, Reply};
use super::io::Inbound;
use crate::config::{Redirect, RedirectPath, Route, Target};
use crate::error::ErrorKind;
use crate::http::{self, Framing, HttpError, Method, RequestHead};

/// Answer the request whose head (of `head_len` bytes) starts `client`'s
/// pending bytes, with `x-request-id` when Ringway named the request;
/// `draining` closes the connection after it. The answer's
/// status and size go into the caller's outcome, and whether the request's
/// whole body was read.
pub(super) async fn answer(
    client: &mut Inbound,
    head: &RequestHead,
    head_len: usize,
    route: &Route,
    request_id: Option<&[u8]>,
    draining: bool,
) -> Result<(Reply, u16, u64, bool), Failure> {
    let tls = client.stream.is_tls();
    let mut location = Vec::new();
    let (status, field, body): (u16, (&str, &[u8]), &[u8]) = match &route.target {
        Target::Redirect(redirect) => {
            if !write_location(client.pending(), head, redirect, tls, &mut location) {
                client.consume(head_len);
                return Err(ErrorKind::Malformed(HttpError::MissingHost).into());
            }
            (redirect.status, ("Location", &location), &[])
        }
        Target::Direct(direct) => (
            direct.status,
            ("Content-Type", direct.content_type.as_bytes()),
            &direct.body,
        ),
        Target::Cluster(_) | Target::Split(_) => return Err(ErrorKind::NoRoute.into()),
    };
    // The route's `response_headers` apply to its own answers too (a field
    // of theirs replaces the answer's own of the same name).
    let field = Some(field).filter(|(name, _)| !route.response_edits.drop.iter().any(|d| d.eq_ignore_ascii_case(name)));
    let added = route
        .response_edits
        .append
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()));
    let named = request_id.map(|id| ("x-request-id", id));
    let fields: Vec<(&str, &[u8])> = field.into_iter().chain(named).chain(added).collect();
    client.consume(head_len);
    // A body already here whole is passed over, and the connection goes on;
    // one still to come is not read, and the connection closes after this.
    let body_done = match head.framing {
        Framing::Empty => true,
        Framing::Length(n) if n <= client.pending().len() as u64 => {
            client.consume(n as usize);
            true
        }
        Framing::Chunked => match http::whole_body_len(client.pending()) {
            Some(len) => {
                client.consume(len);
                true
            }
            None => false,
        },
        _ => false,
    };
    let keep_alive = body_done && head.keep_alive && !draining;
    let mut out = Vec::with_capacity(128 + location.len() + body.len());
    http::write_local_response(
        &mut out,
        status,
        &fields,
        body,
        !keep_alive,
        keep_alive && head.minor_version == 0,
        head.method == Method::Head,
    );
    let size = out.len() as u64;
    let (written, _) = client.stream.write_all(out).await;
    written.map_err(|_| ErrorKind::ClientIo)?;
    Ok((Reply::Sent { keep_alive }, status, size, body_done))
}

/// The redirect's target: `scheme://authority/path?query`, each part the
/// route's when it gives one, else the request's. The port goes with a
/// changed scheme (80 is not https's), unless the route names one. Without
/// any authority (HTTP/1.0, no Host) the reference is relative, with one
/// leading slash (`//other.example/` would name another site); false when
/// the route changes the scheme or port, which a relative reference cannot.
fn write_location(buf: &[u8], head: &RequestHead, redirect: &Redirect, tls: bool, out: &mut Vec<u8>) -> bool {
    let request_scheme = if tls { "https" } else { "http" };
    let scheme = redirect.scheme.as_deref().unwrap_or(request_scheme);
    let authority = match &redirect.host {
        Some(host) => Some((host.as_bytes(), true)),
        None => head.host_bytes(buf).filter(|a| !a.is_empty()).map(|a| (a, false)),
    };
    let Some((authority, configured)) = authority else {
        if redirect.scheme.is_some() || redirect.port.is_some() {
            return false;
        }
        let start = out.len();
        write_path_and_query(buf, head, redirect, out);
        let slashes = out[start..].iter().take_while(|&&b| b == b'/' || b == b'\\').count();
        out.drain(start + 1..start + slashes.max(1));
        return true;
    };
    let (host, port) = http::split_host_port(authority).unwrap_or((authority, &[]));
    out.extend_from_slice(scheme.as_bytes());
    out.extend_from_slice(b"://");
    out.extend_from_slice(host);
    let keep_port = configured || scheme == request_scheme;
    match redirect.port {
        Some(port) => {
            out.push(b':');
            out.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
        }
        None if keep_port && !port.is_empty() => {
            out.push(b':');
            out.extend_from_slice(port);
        }
        None => {}
    }
    write_path_and_query(buf, head, redirect, out);
    true
}

fn write_path_and_query(buf: &[u8], head: &RequestHead, redirect: &Redirect, out: &mut Vec<u8>) {
    let path = head.path_bytes(buf);
    // Asterisk-form (OPTIONS *) has no path to send anyone to.
    let path: &[u8] = if path.starts_with(b"/") { path } else { b"/" };
    match &redirect.path {
        RedirectPath::Keep => out.extend_from_slice(path),
        RedirectPath::Replace(whole) => out.extend_from_slice(whole.as_bytes()),
        RedirectPath::Prefix { matched, replacement } => match path.strip_prefix(matched.as_bytes()) {
            Some(rest) => {
                out.extend_from_slice(replacement.as_bytes());
                out.extend_from_slice(rest);
            }
            None => out.extend_from_slice(path),
        },
    }
    if !redirect.strip_query {
        out.extend_from_slice(buf.get(head.path.end..head.origin.end).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, Limits, ParseStatus};

    fn location(raw: &str, redirect: &Redirect, tls: bool) -> String {
        try_location(raw, redirect, tls).expect("a location")
    }

    fn try_location(raw: &str, redirect: &Redirect, tls: bool) -> Option<String> {
        let mut head = RequestHead::default();
        let parsed = parse_request(raw.as_bytes(), &Limits::default(), &mut head);
        assert!(matches!(parsed, Ok(ParseStatus::Complete(_))), "{raw:?}");
        let mut out = Vec::new();
        let written = write_location(raw.as_bytes(), &head, redirect, tls, &mut out);
        written.then(|| String::from_utf8(out).expect("ascii"))
    }

    fn redirect() -> Redirect {
        Redirect {
            status: 301,
            scheme: None,
            host: None,
            port: None,
            path: RedirectPath::Keep,
            strip_query: false,
        }
    }

    #[test]
    fn the_request_url_with_the_routes_parts() {
        let get = "GET /a/b?x=1 HTTP/1.1\r\nHost: shop.test:8080\r\n\r\n";
        assert_eq!(location(get, &redirect(), false), "http://shop.test:8080/a/b?x=1");
        let https = Redirect {
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            location(get, &https, false),
            "https://shop.test/a/b?x=1",
            "the port goes with the scheme"
        );
        assert_eq!(
            location(get, &https, true),
            "https://shop.test:8080/a/b?x=1",
            "same scheme, same port"
        );
        let moved = Redirect {
            host: Some("new.test".into()),
            port: Some(8443),
            path: RedirectPath::Replace("/landing".into()),
            strip_query: true,
            ..redirect()
        };
        assert_eq!(location(get, &moved, false), "http://new.test:8443/landing");
        let prefix = Redirect {
            path: RedirectPath::Prefix {
                matched: "/a/".into(),
                replacement: "/v2/".into(),
            },
            ..redirect()
        };
        assert_eq!(location(get, &prefix, false), "http://shop.test:8080/v2/b?x=1");
    }

    #[test]
    fn odd_requests_still_get_a_valid_reference() {
        let stripped = Redirect {
            strip_query: true,
            ..redirect()
        };
        assert_eq!(
            location("GET /p?q HTTP/1.0\r\n\r\n", &stripped, false),
            "/p",
            "no authority: relative"
        );
        // Not a reference to another site.
        assert_eq!(
            location("GET //evil.example/x HTTP/1.0\r\n\r\n", &stripped, false),
            "/evil.example/x"
        );
        assert_eq!(
            location("GET /\\\\evil.example HTTP/1.0\r\n\r\n", &stripped, false),
            "/evil.example"
        );
        let https = Redirect {
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            try_location("GET /p HTTP/1.0\r\n\r\n", &https, false),
            None,
            "a scheme needs a host"
        );
        assert_eq!(
            location(
                "GET http://abs.test:81?q HTTP/1.1\r\nHost: other\r\n\r\n",
                &redirect(),
                false
            ),
            "http://abs.test:81/?q"
        );
        assert_eq!(
            location("OPTIONS * HTTP/1.1\r\nHost: [::1]:9000\r\n\r\n", &redirect(), false),
            "http://[::1]:9000/"
        );
    }
}
