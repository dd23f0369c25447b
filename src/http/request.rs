//! Request heads: `parse_request` turns the bytes a client sent into a
//! `RequestHead` of offsets, enforcing RFC 9112 strictness for requests
//! (target forms, Host rules, framing, Expect, Upgrade).

use super::fields::Facts;
use super::host::valid_authority;
use super::scan::{is_token, scan_head_from, span_of, HeadProgress, Scanned};
use super::{find_header, Framing, HeaderList, HeaderRef, HttpError, Limits, Method, ParseStatus, MAX_HEADERS_CEILING};
use std::mem::MaybeUninit;
use std::ops::Range;

/// A parsed request head. Every range indexes the buffer given to
/// `parse_request`; keep that buffer unchanged while the head is in use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The method as sent; the only way to read an extension (`Other`) method.
    pub method_span: Range<usize>,
    /// The request-target exactly as sent.
    pub target: Range<usize>,
    /// What goes upstream as the target: the target itself for origin- and
    /// asterisk-form; for absolute-form the part after the authority, which may
    /// be empty or start with `?` (then `write_request_head` prepends `/`).
    pub origin: Range<usize>,
    /// Path without query. Empty only for absolute-form with no path, which
    /// means `/` (see [`RequestHead::path_bytes`]). `*` for asterisk-form.
    pub path: Range<usize>,
    /// 0 or 1 (HTTP/1.0 or HTTP/1.1).
    pub minor_version: u8,
    pub headers: HeaderList,
    /// The authority: the target's for absolute-form, else the Host field's
    /// value (possibly empty). `None` only for HTTP/1.0 without Host.
    pub host: Option<Range<usize>>,
    /// The target was absolute-form (`http://authority/path`).
    pub absolute_form: bool,
    pub framing: Framing,
    /// The client wants the connection kept after this exchange.
    pub keep_alive: bool,
    /// HTTP/1.1 `Expect: 100-continue` (ignored for 1.0, RFC 9110 §10.1.1).
    pub expect_continue: bool,
    /// `Upgrade` with `Connection: upgrade`: the proxy offers WebSocket
    /// alone upstream when it is among the offers, and strips the others.
    pub upgrade: bool,
    /// A `Connection` option names a field beyond the hop-by-hop ones, which
    /// is then dropped on the way: spares looking for such options in
    /// the common request that has none.
    pub connection_names_fields: bool,
}

impl RequestHead {
    fn reset(&mut self) {
        let mut headers = std::mem::take(&mut self.headers);
        headers.clear();
        *self = RequestHead {
            headers,
            ..RequestHead::default()
        };
    }

    /// First field named `name` (case-insensitive): for routing on headers.
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        find_header(&self.headers, buf, name)
    }

    /// Every field line named `name` (case-insensitive), in order: for a
    /// list-valued field, whose lines are one value (RFC 9110 §5.3).
    pub fn header_lines<'a, 'n>(
        &'a self,
        buf: &'a [u8],
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |h| h.is(buf, name))
            .map(move |h| h.value(buf))
    }

    /// Every line of the field `name` that goes on upstream (as
    /// [`Self::forwarded_header`]): none when a `Connection` option names
    /// it. For keys taken from a list-valued field (rate limits, hashing).
    pub fn forwarded_lines<'a, 'n>(
        &'a self,
        buf: &'a [u8],
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        let dropped = self.named_in_connection(buf, name);
        self.header_lines(buf, name).filter(move |_| !dropped)
    }

    /// First field named `name` (not hop-by-hop by nature) that goes on
    /// upstream: none when a `Connection` option names it (dropped on the
    /// way). Costs one flag test on a request whose Connection names none.
    pub fn forwarded_header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let value = self.header(buf, name)?;
        (!self.named_in_connection(buf, name)).then_some(value)
    }

    /// Whether the client named the field `name` in `Connection`, so that
    /// it is dropped as hop-by-hop on the way (Host never is, and fields
    /// hop-by-hop by their nature are not counted: the proxy decides on those).
    pub fn named_in_connection(&self, buf: &[u8], name: &str) -> bool {
        self.connection_names_fields
            && !super::HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            && super::rewrite::nominated(buf, &self.headers, name.as_bytes())
    }

    /// The field named `name` when there is exactly one and it goes on
    /// upstream (as [`Self::forwarded_header`]): for a field whose repeats
    /// leave its meaning open (a trace parent).
    pub fn only_forwarded_header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let mut named = self.headers.iter().filter(|h| h.is(buf, name));
        let value = match (named.next(), named.next()) {
            (Some(h), None) => h.value(buf),
            _ => return None,
        };
        (!self.named_in_connection(buf, name)).then_some(value)
    }

    pub fn method_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        slice(buf, &self.method_span)
    }

    pub fn target_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        slice(buf, &self.target)
    }

    /// The path for routing: `/` when an absolute-form target had none.
    pub fn path_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        if self.path.is_empty() {
            b"/"
        } else {
            slice(buf, &self.path)
        }
    }

    /// The raw authority; feed it to [`super::host_for_routing`] to route.
    pub fn host_bytes<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.host.as_ref().map(|r| slice(buf, r))
    }
}

fn slice<'a>(buf: &'a [u8], r: &Range<usize>) -> &'a [u8] {
    buf.get(r.clone()).unwrap_or(&[])
}

/// Parses the request head at the start of `buf`, refilling `out` (its header
/// Vec keeps its capacity). `Complete(n)`: the body or next request starts at
/// `buf[n]`. `Partial`: read more and call again with the whole buffer.
pub fn parse_request(buf: &[u8], limits: &Limits, out: &mut RequestHead) -> Result<ParseStatus, HttpError> {
    parse_request_from(buf, limits, out, &mut HeadProgress::default())
}

/// [`parse_request`] for a head read piece by piece into `buf`: each call
/// checks only what arrived since the last (`progress`, which starts as
/// the default), so a head trickling in costs its length once.
pub fn parse_request_from(
    buf: &[u8],
    limits: &Limits,
    out: &mut RequestHead,
    progress: &mut HeadProgress,
) -> Result<ParseStatus, HttpError> {
    out.reset();
    let scanned = scan_head_from(buf, limits, progress).map_err(|e| match e {
        HttpError::HeadTooLarge if progress.in_start_line() => HttpError::UriTooLong,
        e => e,
    })?;
    let Some(scanned) = scanned else {
        // A request line without a version (HTTP/0.9's) has no fields to
        // wait for: refused now, not at the header timeout.
        if progress
            .start_line(buf)
            .is_some_and(|line| line.split(|&b| b == b' ').count() < 3)
        {
            return Err(HttpError::BadVersion);
        }
        return Ok(ParseStatus::Partial);
    };
    let head = &buf[..scanned.end];
    fill_from_httparse(head, &scanned, limits, out)?;

    // CONNECT asks for a tunnel, which this proxy does not offer.
    if out.method == Method::Connect {
        return Err(HttpError::ConnectNotSupported);
    }
    classify_target(buf, out)?;

    let facts = Facts::collect(buf, &out.headers)?;
    out.framing = facts.framing(out.minor_version)?.unwrap_or(Framing::Empty);

    // RFC 9112 §3.2: a 1.1 request without exactly one Host is a 400; more
    // than one is as bad in 1.0, since which one a peer routes on is a guess.
    if facts.hosts > 1 {
        return Err(HttpError::DuplicateHost);
    }
    if facts.hosts == 0 && out.minor_version == 1 {
        return Err(HttpError::MissingHost);
    }
    if let Some(h) = facts.host_index.and_then(|i| out.headers.get(i)) {
        if !valid_authority(h.value(buf), true) {
            return Err(HttpError::BadHost);
        }
        if !out.absolute_form {
            out.host = Some(h.value_range());
        }
    }

    if facts.expect_other {
        return Err(HttpError::ExpectationFailed);
    }
    out.expect_continue = facts.expect_continue && out.minor_version == 1;
    out.keep_alive = facts.keep_alive(out.minor_version);
    // RFC 9110 §7.8: an Upgrade in an HTTP/1.0 request is ignored.
    out.upgrade = facts.upgrade_field && facts.conn_upgrade && out.minor_version == 1;
    out.connection_names_fields = facts.conn_names_fields;
    Ok(ParseStatus::Complete(scanned.end))
}

/// Runs httparse over the already-scanned head and records offsets.
fn fill_from_httparse(head: &[u8], scanned: &Scanned, limits: &Limits, out: &mut RequestHead) -> Result<(), HttpError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CEILING];
    let n = limits.max_headers.min(MAX_HEADERS_CEILING);
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut slots[..n]) {
        Ok(httparse::Status::Complete(len)) if len == scanned.end => {}
        Ok(_) => return Err(HttpError::Malformed),
        Err(e) => {
            let line = &head[scanned.start..scanned.start_line_end];
            return Err(request_line_error(e, line));
        }
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Malformed);
    };
    out.method = Method::from_bytes(method.as_bytes());
    out.method_span = span_of(head, method.as_bytes()).ok_or(HttpError::Malformed)?;
    out.target = span_of(head, target.as_bytes()).ok_or(HttpError::Malformed)?;
    out.minor_version = minor;
    for h in req.headers.iter() {
        let name = span_of(head, h.name.as_bytes());
        let value = span_of(head, h.value);
        let r = name
            .zip(value)
            .and_then(|(n, v)| HeaderRef::new(n, v))
            .ok_or(HttpError::Malformed)?;
        out.headers.push(r);
    }
    Ok(())
}

/// httparse's errors are coarse; look at the start line to name the culprit.
fn request_line_error(e: httparse::Error, line: &[u8]) -> HttpError {
    match e {
        httparse::Error::Token => {
            let mut parts = line.splitn(3, |&b| b == b' ');
            let method = parts.next().unwrap_or(&[]);
            if !is_token(method) {
                HttpError::BadMethod
            } else if parts.nth(1).is_none() {
                // "GET /" with no version at all.
                HttpError::BadVersion
            } else {
                HttpError::BadTarget
            }
        }
        httparse::Error::Version | httparse::Error::NewLine => {
            let version = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or(&[]);
            version_error(version)
        }
        httparse::Error::HeaderName => HttpError::BadHeaderName,
        httparse::Error::HeaderValue => HttpError::ControlChar,
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
        httparse::Error::Status => HttpError::Malformed,
    }
}

/// `HTTP/DIGIT.DIGIT` that is not 1.0/1.1 is unsupported (505); anything
/// else in the version slot is malformed (400).
pub(crate) fn version_error(version: &[u8]) -> HttpError {
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            HttpError::UnsupportedVersion
        }
        _ => HttpError::BadVersion,
    }
}

/// Sorts the target into origin-, absolute- or asterisk-form (RFC 9112 §3.2)
/// and fills `origin`, `path` and, for absolute-form, `host`.
fn classify_target(buf: &[u8], out: &mut RequestHead) -> Result<(), HttpError> {
    let t = out.target.clone();
    let bytes = slice(buf, &t);
    // Visible ASCII only; '#' would start a fragment, which is never sent.
    if !bytes.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b'#') {
        return Err(HttpError::BadTarget);
    }
    let path_end = |from: usize| -> usize {
        slice(buf, &(from..t.end))
            .iter()
            .position(|&b| b == b'?')
            .map_or(t.end, |q| from + q)
    };
    if bytes.first() == Some(&b'/') {
        out.origin = t.clone();
        out.path = t.start..path_end(t.start);
        return Ok(());
    }
    if bytes == b"*" {
        if out.method != Method::Options {
            return Err(HttpError::AsteriskForm);
        }
        out.origin = t.clone();
        out.path = t;
        return Ok(());
    }
    let scheme_len = if starts_with_ignore_case(bytes, b"http://") {
        7
    } else if starts_with_ignore_case(bytes, b"https://") {
        8
    } else if has_scheme(bytes) {
        return Err(HttpError::BadScheme);
    } else {
        // authority-form belongs to CONNECT, refused earlier.
        return Err(HttpError::BadTarget);
    };
    let auth_start = t.start + scheme_len;
    let auth_len = bytes[scheme_len..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(bytes.len() - scheme_len);
    let authority = auth_start..auth_start + auth_len;
    if !valid_authority(slice(buf, &authority), false) {
        return Err(HttpError::BadTarget);
    }
    out.origin = authority.end..t.end;
    out.path = authority.end..path_end(authority.end);
    out.host = Some(authority);
    out.absolute_form = true;
    Ok(())
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// `scheme "://"` with RFC 3986 scheme syntax.
fn has_scheme(s: &[u8]) -> bool {
    let Some(colon) = s.iter().position(|&b| b == b':') else {
        return false;
    };
    let scheme = &s[..colon];
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && s[colon..].starts_with(b"://")
}

/// The method and path (the target without its query, as the access log
/// has it for other requests) of a head refused for something past its
/// request line (a bad field, ambiguous framing), for the access log to
/// name it by: only from a well-formed request line (a token, a
/// visible-ASCII target and `HTTP/1.x`, one space apart, ended by CRLF).
pub fn refused_request_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let mut parts = buf[..end].split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let well_formed = parts.next().is_none()
        && is_token(method)
        && !target.is_empty()
        && target.iter().all(|&b| b.is_ascii_graphic())
        && matches!(version, b"HTTP/1.0" | b"HTTP/1.1");
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    well_formed.then_some((method, path))
}

#[cfg(test)]
mod tests;
