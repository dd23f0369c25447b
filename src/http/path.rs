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

/// Whether servers disagree on what `path` names, so that no route can be
/// chosen for it safely: a `\\` (a separator to Windows servers, a plain
/// character to the rest) or a dot segment with path parameters (`..;x`,
/// which Java servers resolve as `..` and the rest keep as a name).
pub fn is_ambiguous(path: &[u8]) -> bool {
    // The usual path has none of these: one pass, no more.
    if !path.iter().any(|&b| matches!(b, b'\\' | b';' | b'%')) {
        return false;
    }
    if path.contains(&b'\\') {
        return true;
    }
    let params = |s: &[u8]| {
        s.iter()
            .position(|&b| b == b';')
            .or_else(|| find_ignore_case(s, b"%3b"))
    };
    if params(path).is_none() {
        return false;
    }
    decode_unreserved(path)
        .split(|&b| b == b'/')
        .any(|segment| params(segment).is_some_and(|end| matches!(&segment[..end], b"." | b"..")))
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
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
    use super::{is_ambiguous, normalize_path};

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
    fn paths_servers_read_differently_are_ambiguous() {
        for path in [
            "/a\\b",
            "/x/..\\admin",
            "/x/..;/admin",
            "/x/..;jsessionid=1/admin",
            "/x/.;/admin",
            "/x/%2e%2E;/admin",
            "/x/..%3Bx/admin",
            "/x/..;",
        ] {
            assert!(is_ambiguous(path.as_bytes()), "{path}");
        }
        for path in [
            "/",
            "/a;b/c",
            "/x/..a;b",
            "/x/...;/y",
            "/x/..",
            "/a;/b",
            "/%3B..",
            "/%5C",
        ] {
            assert!(!is_ambiguous(path.as_bytes()), "{path}");
        }
    }
}
