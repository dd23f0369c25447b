//! Choosing a listener's certificate by the name the client asked for (SNI):
//! exact names first, then wildcards (`*.example.com`, one label deep, as
//! certificates match), else the listener's default certificate.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// A name a certificate is served for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamePattern {
    Exact(String),
    /// `*.suffix`: any single label before `.suffix`.
    Wildcard(String),
}

impl NamePattern {
    /// A DNS name, or `*.` and one: lowercase letters, digits, `-` and `.`.
    pub fn parse(text: &str) -> Result<NamePattern, String> {
        let lower = text.to_ascii_lowercase();
        let (pattern, name) = match lower.strip_prefix("*.") {
            Some(suffix) => (NamePattern::Wildcard(suffix.to_string()), suffix),
            None => (NamePattern::Exact(lower.clone()), lower.as_str()),
        };
        let valid = name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        if !valid {
            return Err(format!(
                "SNI name {text:?} must be a DNS name such as api.example.com or *.example.com"
            ));
        }
        // Clients never send an address as SNI (RFC 6066 §3).
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(format!(
                "SNI name {text:?} is an IP address, which clients never send as a name"
            ));
        }
        Ok(pattern)
    }

    fn matches_exact(&self, name: &str) -> bool {
        matches!(self, NamePattern::Exact(exact) if exact.eq_ignore_ascii_case(name))
    }

    fn matches_wildcard(&self, name: &str) -> bool {
        let NamePattern::Wildcard(suffix) = self else {
            return false;
        };
        name.len() > suffix.len() + 1
            && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            && !name[..name.len() - suffix.len() - 1].contains('.')
    }
}

/// The certificates of one listener.
#[derive(Debug)]
pub struct SniResolver {
    pub default: Arc<CertifiedKey>,
    pub by_name: Vec<(NamePattern, Arc<CertifiedKey>)>,
}

impl SniResolver {
    /// The certificate for `name` (None: no SNI sent).
    pub fn choose(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name else {
            return &self.default;
        };
        let exact = self.by_name.iter().find(|(p, _)| p.matches_exact(name));
        let wildcard = || self.by_name.iter().find(|(p, _)| p.matches_wildcard(name));
        exact.or_else(wildcard).map_or(&self.default, |(_, key)| key)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(client_hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_match_like_certificates() {
        let exact = NamePattern::parse("API.Example.com").unwrap();
        assert!(exact.matches_exact("api.example.com") && !exact.matches_wildcard("api.example.com"));
        let wild = NamePattern::parse("*.example.com").unwrap();
        assert!(wild.matches_wildcard("a.example.com"));
        assert!(wild.matches_wildcard("A.EXAMPLE.COM"));
        assert!(!wild.matches_wildcard("example.com"), "the wildcard needs a label");
        assert!(!wild.matches_wildcard("a.b.example.com"), "one label deep");
        assert!(!wild.matches_wildcard("aexample.com"));
        for bad in ["", "*.", "*", "a..b", ".a", "a.", "a_b.com", "*.*.com", "a b"] {
            assert!(NamePattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
