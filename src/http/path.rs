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

/// The path as the laxest common servers read it, where that may differ
/// from [`normalize_path`]: `\\`, `%2F` and `%5C` separate segments too
/// (Windows servers, and those that decode before they resolve), path
/// parameters (`;x`, `%3Bx`) are dropped from each segment (Tomcat, Jetty),
/// and empty segments merge (`//`, NGINX). None when the path has nothing
/// such servers read otherwise.
pub fn lax_path(path: &[u8]) -> Option<Vec<u8>> {
    let lax_only = |b: &u8| matches!(b, b'\\' | b';' | b'%');
    if !path.starts_with(b"/") || !(path.iter().any(lax_only) || path.windows(2).any(|w| w == b"//")) {
        return None;
    }
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut rest = &decoded[1..];
    loop {
        let (segment, after) = split_segment(rest);
        // Its parameters are not part of its name.
        let name = match find_parameters(segment) {
            Some(start) => &segment[..start],
            None => segment,
        };
        match name {
            b"" | b"." => {}
            b".." => drop(segments.pop()),
            _ => segments.push(name),
        }
        match after {
            Some(next) => rest = next,
            None => {
                let mut out = Vec::with_capacity(decoded.len());
                for s in &segments {
                    out.push(b'/');
                    out.extend_from_slice(s);
                }
                // `/a/`, `/a/.` and `/a/b/..` name a directory.
                if matches!(name, b"" | b"." | b"..") || out.is_empty() {
                    out.push(b'/');
                }
                return Some(out);
            }
        }
    }
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
    use super::{lax_path, normalize_path};

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
    fn paths_as_the_laxest_servers_read_them() {
        for (path, want) in [
            ("/x/..;/admin", "/admin"),
            ("/x/..;jsessionid=1/admin", "/admin"),
            ("/x/.;/admin", "/x/admin"),
            ("/x/%2e%2E;/admin", "/admin"),
            ("/x/..%3B;y/admin", "/admin"),
            ("/x/..%3Bx/admin", "/admin"),
            ("/admin;x/secret", "/admin/secret"),
            ("/;/admin", "/admin"),
            ("//admin//x", "/admin/x"),
            ("/x\\..\\admin", "/admin"),
            ("/x/..%5Cadmin", "/admin"),
            ("/x/..%2fadmin", "/admin"),
            ("/a%2Fb", "/a/b"),
            ("/a/..;", "/"),
            ("/a/b;", "/a/b"),
            ("/a/b/..;x", "/a/"),
            ("/%61dmin;", "/admin"),
            ("/;", "/"),
        ] {
            let got = lax_path(path.as_bytes()).unwrap_or_else(|| panic!("{path} is read otherwise"));
            assert_eq!(String::from_utf8_lossy(&got), want, "{path}");
        }
        for path in ["/", "/a/", "/plain/path", "/a/../b", "*", "/a.b/c"] {
            assert_eq!(lax_path(path.as_bytes()), None, "{path}");
        }
    }
}
