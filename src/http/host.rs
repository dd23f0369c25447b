//! Authority syntax (RFC 3986 §3.2 as used by Host and absolute-form targets)
//! and the normalised host name the router matches on.

use std::borrow::Cow;

/// Splits `host[:port]`, checking the port is at most five digits (RFC 3986
/// allows an empty port). IP literals keep their brackets.
pub fn split_host_port(a: &[u8]) -> Option<(&[u8], &[u8])> {
    let (host, rest) = if a.first() == Some(&b'[') {
        let close = a.iter().position(|&b| b == b']')?;
        // An IPv6 address (RFC 3986 §3.2.2; IPvFuture is not taken): a
        // strict upstream would refuse anything else in brackets.
        let inner = std::str::from_utf8(&a[1..close]).ok()?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        a.split_at(close + 1)
    } else {
        let colon = a.iter().position(|&b| b == b':').unwrap_or(a.len());
        a.split_at(colon)
    };
    let port = match rest {
        [] => rest,
        [b':', port @ ..] => port,
        _ => return None,
    };
    (port.len() <= 5 && port.iter().all(u8::is_ascii_digit)).then_some((host, port))
}

fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        )
}

/// `authority` without userinfo, as RFC 9110 §4.2 requires for http(s).
/// `allow_empty` admits an empty host: a Host field may be empty (RFC 9112
/// §3.2) but an absolute-form http URI may not.
pub(crate) fn valid_authority(a: &[u8], allow_empty: bool) -> bool {
    if a.is_empty() {
        return allow_empty;
    }
    let Some((host, _port)) = split_host_port(a) else {
        return false;
    };
    if host.first() == Some(&b'[') {
        return true;
    }
    if host.is_empty() {
        return false;
    }
    let mut i = 0;
    while let Some(&b) = host.get(i) {
        if b == b'%' {
            let hex = host.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if is_reg_name_byte(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// A bracketed IPv6 literal in the one spelling routes and requests are
/// compared in: [0:0:0:0:0:0:0:1] is [::1]. None if it is not one.
pub fn ipv6_literal(bracketed: &str) -> Option<String> {
    let inner = bracketed.strip_prefix('[')?.strip_suffix(']')?;
    Some(format!("[{}]", inner.parse::<std::net::Ipv6Addr>().ok()?))
}

/// The host the router matches on: port stripped, one trailing dot dropped
/// (`example.com.` names the same host), ASCII-lowercased because host
/// matching is case-insensitive. Borrowed when already lowercase, so the usual
/// case allocates nothing. `None` for an empty host or any byte outside
/// letters, digits, `-`, `.`, `_` (or a bracketed IP literal): such a name
/// cannot match a configured route and should get 400, not a fallback route.
pub fn host_for_routing(raw: &[u8]) -> Option<Cow<'_, str>> {
    let (host, _port) = split_host_port(raw)?;
    let host = if host.first() == Some(&b'[') {
        // Rare enough to allocate for.
        let canonical = ipv6_literal(std::str::from_utf8(host).ok()?)?;
        return Some(if canonical.as_bytes() == host {
            Cow::Borrowed(std::str::from_utf8(host).ok()?)
        } else {
            Cow::Owned(canonical)
        });
    } else {
        let host = host.strip_suffix(b".").unwrap_or(host);
        let ok = host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !ok {
            return None;
        }
        host
    };
    if host.is_empty() {
        return None;
    }
    let s = std::str::from_utf8(host).ok()?;
    Some(if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_syntax() {
        for ok in [
            &b"example.com"[..],
            b"example.com:8080",
            b"example.com:",
            b"127.0.0.1:80",
            b"[::1]",
            b"[::1]:443",
            b"[::ffff:1.2.3.4]",
            b"a-b_c~d",
            b"xn--bcher-kva.example",
            b"caf%C3%A9.example",
        ] {
            assert!(valid_authority(ok, false), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b""[..],
            b"user@example.com",
            b"example.com/x",
            b"example.com:80:80",
            b"example.com:http",
            b"example.com:123456",
            b"exa mple.com",
            b"[::1",
            b"[]",
            b"[::1]x",
            b"[::g]",
            // Brackets hold an IPv6 address, nothing less.
            b"[:]",
            b"[1]",
            b"[1.2.3.4]",
            b"[1::2::3]",
            b"a%2",
            b"a%zz",
            b":80",
            b"a\"b",
        ] {
            assert!(!valid_authority(bad, false), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(valid_authority(b"", true));
    }

    #[test]
    fn routing_host_normalisation() {
        assert_eq!(host_for_routing(b"api.local").as_deref(), Some("api.local"));
        assert!(matches!(
            host_for_routing(b"api.local:8080"),
            Some(Cow::Borrowed("api.local"))
        ));
        assert!(matches!(host_for_routing(b"API.Local"), Some(Cow::Owned(s)) if s == "api.local"));
        assert_eq!(host_for_routing(b"api.local.:80").as_deref(), Some("api.local"));
        assert_eq!(host_for_routing(b"[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host_for_routing(b"[FE80::1]").as_deref(), Some("[fe80::1]"));
        // IPv6 literals in their canonical spelling, as routes name them.
        assert_eq!(host_for_routing(b"[0:0:0:0:0:0:0:1]:80").as_deref(), Some("[::1]"));
        assert!(matches!(host_for_routing(b"[::1]"), Some(Cow::Borrowed("[::1]"))));
        assert_eq!(host_for_routing(b"[::1"), None);
        assert_eq!(host_for_routing(b"").as_deref(), None);
        assert_eq!(host_for_routing(b".").as_deref(), None);
        assert_eq!(host_for_routing(b":80").as_deref(), None);
        assert_eq!(host_for_routing(b"a,b").as_deref(), None);
        assert_eq!(host_for_routing(b"a%41").as_deref(), None);
        assert_eq!(host_for_routing(b"caf\xc3\xa9").as_deref(), None);
    }
}
