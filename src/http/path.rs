//! The path as an upstream that follows RFC 3986 reads it: percent-encoded
//! unreserved characters decoded and dot segments resolved (§6.2.2). Routes
//! are matched on it, so that `/%61dmin` and `/x/../admin` meet the rules
//! of `/admin`, not those of `/`.

use std::borrow::Cow;

/// `path` normalised: borrowed when there is nothing to normalise (the
/// usual case, found in one pass). Encoded reserved characters (`%2F`)
/// stay encoded: decoding them would change what the path means.
pub fn normalize_path(path: &[u8]) -> Cow<'_, [u8]> {
    if !path.starts_with(b"/") || !(path.contains(&b'%') || has_dot_segment_literal(path)) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut out = Vec::with_capacity(decoded.len());
    let mut segments = decoded[1..].split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            b"." => {}
            b".." => match out.iter().rposition(|&b| b == b'/') {
                Some(slash) => out.truncate(slash),
                None => out.clear(),
            },
            _ => {
                out.push(b'/');
                out.extend_from_slice(segment);
                continue;
            }
        }
        // `/a/.` and `/a/b/..` name a directory: `/a/`.
        if last {
            out.push(b'/');
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Cow::Owned(out)
}

/// How servers that stray from RFC 3986 read `path`, where they may read
/// it otherwise than [`normalize_path`] (None: nothing for them to differ on):
/// - decoding first (NGINX, Windows servers): `\`, `%2F` and `%5C`
///   separate segments, and empty segments merge (`//`);
/// - Java (Tomcat, Jetty): each segment's parameters (`;x`, up to the next
///   `/`) go before anything else, so that `..;` is `..` and `/admin;x/` is
///   `/admin/`; then as above.
///
/// Both resolve dot segments. No server applies both, so each is a reading
/// of its own.
pub fn lax_readings(path: &[u8]) -> Option<[Vec<u8>; 2]> {
    // One pass over the usual path, which has none of these.
    let mut previous = 0;
    let read_otherwise = path.iter().any(|&b| {
        let otherwise = matches!(b, b'\\' | b';' | b'%') || (b == b'/' && previous == b'/');
        previous = b;
        otherwise
    });
    if !path.starts_with(b"/") || !read_otherwise {
        return None;
    }
    Some([
        read_decoding_first(path),
        read_decoding_first(&without_parameters(path)),
    ])
}

/// `path` with each `/`-separated segment cut at its parameters.
fn without_parameters(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for (i, segment) in path.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(&segment[..find_parameters(segment).unwrap_or(segment.len())]);
    }
    out
}

/// `path` (starting with `/`) decoded, split at every kind of separator,
/// empty segments merged and dot segments resolved.
fn read_decoding_first(path: &[u8]) -> Vec<u8> {
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut rest = decoded.get(1..).unwrap_or_default();
    loop {
        let (segment, after) = split_segment(rest);
        match segment {
            b"" | b"." => {}
            b".." => drop(segments.pop()),
            _ => segments.push(segment),
        }
        if let Some(next) = after {
            rest = next;
            continue;
        }
        let mut out = Vec::with_capacity(decoded.len());
        for s in &segments {
            out.push(b'/');
            out.extend_from_slice(s);
        }
        // `/a/`, `/a/.` and `/a/b/..` name a directory.
        if matches!(segment, b"" | b"." | b"..") || out.is_empty() {
            out.push(b'/');
        }
        return out;
    }
}

/// Whether `path` has a `.` or `..` segment as any server may read it:
/// literal or `%2e`, between any separators (`/`, `\`, `%2F`, `%5C`), with
/// path parameters after it or not (`..;x`). A server that resolves it
/// would step out of a rewritten prefix.
pub fn has_dot_segment(path: &[u8]) -> bool {
    let mut rest = path;
    loop {
        let (segment, after) = split_segment(rest);
        if is_dots(&segment[..find_parameters(segment).unwrap_or(segment.len())]) {
            return true;
        }
        match after {
            Some(next) => rest = next,
            None => return false,
        }
    }
}

/// `.` or `..`, each dot literal or `%2e`.
fn is_dots(name: &[u8]) -> bool {
    let mut dots = 0;
    let mut rest = name;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return false,
        };
        dots += 1;
    }
    (1..=2).contains(&dots)
}

/// The segment `path` starts with, and what follows its separator (None:
/// it is the last).
fn split_segment(path: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut i = 0;
    while i < path.len() {
        let width = match &path[i..] {
            [b'/' | b'\\', ..] => 1,
            [b'%', b'2', f, ..] if f.eq_ignore_ascii_case(&b'f') => 3,
            [b'%', b'5', c, ..] if c.eq_ignore_ascii_case(&b'c') => 3,
            _ => 0,
        };
        if width > 0 {
            return (&path[..i], Some(&path[i + width..]));
        }
        i += 1;
    }
    (path, None)
}

/// Where a segment's parameters begin: its first `;` or `%3B`.
fn find_parameters(segment: &[u8]) -> Option<usize> {
    (0..segment.len())
        .find(|&i| segment[i] == b';' || segment[i..].get(..3).is_some_and(|w| w.eq_ignore_ascii_case(b"%3b")))
}

/// A `.` or `..` segment between slashes, as sent.
fn has_dot_segment_literal(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').any(|s| s == b"." || s == b"..")
}

fn decode_unreserved(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut rest = path;
    while let Some((&b, tail)) = rest.split_first() {
        let decoded = match (b, tail) {
            (b'%', [hi, lo, ..]) => hex(*hi).zip(hex(*lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match decoded {
            Some(c) if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => {
                out.push(c);
                rest = &tail[2..];
            }
            _ => {
                out.push(b);
                rest = tail;
            }
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::{has_dot_segment, lax_readings, normalize_path};

    #[test]
    fn paths_read_as_an_upstream_reads_them() {
        for (path, want) in [
            ("/", "/"),
            ("/api/x", "/api/x"),
            ("/%61dmin", "/admin"),
            ("/%7Euser/%2e%2E/x", "/x"),
            ("/x/../admin", "/admin"),
            ("/x/./y", "/x/y"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/..", "/"),
            ("/a/../../b", "/b"),
            ("/a//b", "/a//b"),
            ("/a%2Fb/../c", "/c"),
            ("/a%2fb", "/a%2fb"),
            ("/%", "/%"),
            ("/%4", "/%4"),
            ("/%zz", "/%zz"),
            ("/%20x", "/%20x"),
            ("/...", "/..."),
            ("/.a/..b", "/.a/..b"),
        ] {
            let got = normalize_path(path.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), want, "{path}");
        }
        assert!(matches!(normalize_path(b"/plain/path"), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(normalize_path(b"*"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn paths_as_lax_servers_read_them() {
        // (path, read decoding first, read as Java servers do)
        for (path, decoding_first, java) in [
            ("/x/..;/admin", "/x/..;/admin", "/admin"),
            ("/x/..;jsessionid=1/admin", "/x/..;jsessionid=1/admin", "/admin"),
            ("/x/.;/admin", "/x/.;/admin", "/x/admin"),
            ("/x/%2e%2E;/admin", "/x/..;/admin", "/admin"),
            ("/x/..%3Bx/admin", "/x/..%3Bx/admin", "/admin"),
            ("/x/..%3B;y/admin", "/x/..%3B;y/admin", "/admin"),
            ("/admin;x/secret", "/admin;x/secret", "/admin/secret"),
            ("/admin;%2F..%2F/y", "/y", "/admin/y"),
            ("/;/admin", "/;/admin", "/admin"),
            ("//admin//x", "/admin/x", "/admin/x"),
            ("//admin/x/..;/..;/public", "/admin/x/..;/..;/public", "/public"),
            ("/x\\..\\admin", "/admin", "/admin"),
            ("/x/..%5Cadmin", "/admin", "/admin"),
            ("/x/..%2fadmin", "/admin", "/admin"),
            ("/a%2Fb", "/a/b", "/a/b"),
            ("/%2Fa", "/a", "/a"),
            ("/a/..;", "/a/..;", "/"),
            ("/a/b;", "/a/b;", "/a/b"),
            ("/a/b/..;x", "/a/b/..;x", "/a/"),
            ("/%61dmin;", "/admin;", "/admin"),
            ("/..%2F..%2F", "/", "/"),
            ("/;", "/;", "/"),
            ("/%20x", "/%20x", "/%20x"),
        ] {
            let [got_decoding_first, got_java] =
                lax_readings(path.as_bytes()).unwrap_or_else(|| panic!("{path} is read otherwise"));
            assert_eq!(String::from_utf8_lossy(&got_decoding_first), decoding_first, "{path}");
            assert_eq!(String::from_utf8_lossy(&got_java), java, "{path}");
        }
        for path in ["/", "/a/", "/plain/path", "/a/../b", "/..", "*", "/a.b/c"] {
            assert_eq!(lax_readings(path.as_bytes()), None, "{path}");
        }
    }

    #[test]
    fn dot_segments_are_found_literal_or_encoded() {
        for path in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/.",
            "/a/%2e%2E/b",
            "/%2e/x",
            "/a/.%2e",
            "/api/..%2Fadmin",
            "/api/..%5cadmin",
            "/api/..\\admin",
            "/api%2f..%2fadmin",
            "/api/..;/admin",
            "/api/..;jsessionid=x/admin",
            "/api/.%3bx/admin",
            "/api/..;",
        ] {
            assert!(has_dot_segment(path.as_bytes()), "{path}");
        }
        for path in [
            "/",
            "/a/b",
            "/a/.../b",
            "/a/.b",
            "/a/b.",
            "/..a",
            "/%2e%2e%2e",
            "/a%2eb",
            "/%2",
            "/a;../b",
            "/a/x;/..b",
            "/a/;/b",
        ] {
            assert!(!has_dot_segment(path.as_bytes()), "{path}");
        }
    }
}
