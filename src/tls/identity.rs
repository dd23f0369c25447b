//! Service identities: the SPIFFE ID a peer's certificate carries as its URI
//! SAN, and the principal patterns a route allows.

/// The SPIFFE ID (`spiffe://trust-domain/path`) a leaf certificate carries
/// as its one URI SAN, as an X.509-SVID validator reads it (X.509-SVID
/// §5.2); None when it has none, more than one URI SAN (with two, which
/// one names the peer is a guess), an ID naming no workload (no path), a
/// key usage for signing certificates or CRLs (a CA's, not a workload's),
/// or cannot be read. Called only on certificates the verifier has already
/// accepted.
pub fn spiffe_id(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    if let Some(usage) = cert.key_usage().ok()? {
        if usage.value.key_cert_sign() || usage.value.crl_sign() {
            return None;
        }
    }
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(uri), None) if is_workload_id(uri) => Some(uri.to_string()),
        _ => None,
    }
}

/// A SPIFFE ID that names a workload: one with a path (SPIFFE ID §2.2: a
/// trust domain alone names no workload, and a leaf SVID must not carry
/// one).
fn is_workload_id(uri: &str) -> bool {
    is_spiffe_id(uri) && uri["spiffe://".len()..].contains('/')
}

/// `spiffe://`, a trust domain of lowercase letters, digits, `-`, `.` and
/// `_`, then path segments of letters, digits and those, none of them
/// empty, `.` or `..` (SPIFFE ID spec §2): an ID names one workload, and
/// `ns/web/../admin` would pass for a prefix it does not belong under.
/// Being this strict also keeps an ID safe to write into a header.
fn is_spiffe_id(uri: &str) -> bool {
    // SPIFFE ID §2.3 and §2.5: a trust domain of at most 255 bytes, an ID
    // of at most 2048.
    if uri.len() > 2048 {
        return false;
    }
    let Some(rest) = uri.strip_prefix("spiffe://") else {
        return false;
    };
    let (domain, path) = match rest.split_once('/') {
        Some((domain, path)) => (domain, Some(path)),
        None => (rest, None),
    };
    let segment_ok =
        |s: &str| !matches!(s, "" | "." | "..") && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    !domain.is_empty()
        && domain.len() <= 255
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        && path.is_none_or(|path| path.split('/').all(segment_ok))
}

/// Who a route lets in: exact SPIFFE IDs, prefixes written with a trailing
/// `*` (`spiffe://td/ns/web/*`), or `*` for any verified identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principals(Vec<Principal>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Principal {
    Exact(String),
    Prefix(String),
    AnyIdentity,
}

impl Principals {
    /// Parse patterns; Err names the first one that is not a SPIFFE ID, a
    /// SPIFFE prefix ending in `*`, or `*`.
    pub fn parse<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut out = Vec::new();
        for pattern in patterns {
            let principal = if pattern == "*" {
                Principal::AnyIdentity
            } else if let Some(prefix) = pattern.strip_suffix('*') {
                // The whole trust domain, then any path: `spiffe://td*`
                // would take in `spiffe://td.other/...` too.
                let whole_domain = prefix.strip_prefix("spiffe://").is_some_and(|rest| rest.contains('/'));
                if !whole_domain || !is_spiffe_id(prefix.strip_suffix('/').unwrap_or(prefix)) {
                    return Err(format!(
                        "principal {pattern:?} must be a SPIFFE ID, a SPIFFE ID prefix ending in *, or *"
                    ));
                }
                Principal::Prefix(prefix.to_string())
            } else {
                if !is_workload_id(pattern) {
                    return Err(format!(
                        "principal {pattern:?} must be a SPIFFE ID such as spiffe://cluster.local/ns/web/sa/frontend"
                    ));
                }
                Principal::Exact(pattern.to_string())
            };
            out.push(principal);
        }
        if out.is_empty() {
            return Err("allow_principals must list at least one principal".to_string());
        }
        Ok(Principals(out))
    }

    /// Whether a peer with this identity (None: no verified certificate, or
    /// one without a SPIFFE ID) is allowed.
    pub fn allows(&self, identity: Option<&str>) -> bool {
        let Some(id) = identity else { return false };
        self.0.iter().any(|p| match p {
            Principal::Exact(exact) => id == exact,
            Principal::Prefix(prefix) => id.starts_with(prefix.as_str()),
            Principal::AnyIdentity => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_any() {
        let p = Principals::parse(["spiffe://td/ns/a/sa/web", "spiffe://td/ns/b/*"]).unwrap();
        assert!(p.allows(Some("spiffe://td/ns/a/sa/web")));
        assert!(!p.allows(Some("spiffe://td/ns/a/sa/web2")), "exact means exact");
        assert!(p.allows(Some("spiffe://td/ns/b/sa/anything")));
        assert!(!p.allows(Some("spiffe://td/ns/c/sa/web")));
        assert!(!p.allows(None), "no identity is never allowed");
        let any = Principals::parse(["*"]).unwrap();
        assert!(any.allows(Some("spiffe://other/x")));
        assert!(!any.allows(None));
        let domain = Principals::parse(["spiffe://td/*", "spiffe://ex/ns/web-*"]).unwrap();
        assert!(domain.allows(Some("spiffe://td/ns/a")));
        assert!(!domain.allows(Some("spiffe://td.other/ns/a")));
        assert!(
            domain.allows(Some("spiffe://ex/ns/web-1")),
            "a prefix may end inside a segment"
        );
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "web",
            "https://td/x",
            "spiffe://",
            "spiffe:///path",
            "spiffe://td/*/x",
            "spiffe://td/a**",
            "spiffe://TD/x",
            "spiffe://td/x\r\nx-evil: 1",
            "spiffe://td*",
            "spiffe://td.oth*",
            "spiffe://td//*",
            "spiffe://td/a/../*",
            "spiffe://td/a/",
            "spiffe://td/a//b",
            "spiffe://td/./b",
            "spiffe://td/a/..",
        ] {
            assert!(Principals::parse([bad]).is_err(), "{bad:?} accepted");
        }
        assert!(Principals::parse(std::iter::empty()).is_err());
    }

    #[test]
    fn spiffe_id_is_read_from_the_uri_san() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["web.local".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::URI("https://not-spiffe/x".try_into().unwrap()));
        params
            .subject_alt_names
            .push(rcgen::SanType::URI("spiffe://td/ns/a/sa/web".try_into().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(spiffe_id(cert.der()), None, "two URI SANs: which one is the peer?");
        params.subject_alt_names.remove(1);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(spiffe_id(cert.der()).as_deref(), Some("spiffe://td/ns/a/sa/web"));
        let mut dotted = rcgen::CertificateParams::new(vec!["web.local".to_string()]).unwrap();
        dotted
            .subject_alt_names
            .push(rcgen::SanType::URI("spiffe://td/ns/web/../admin".try_into().unwrap()));
        assert_eq!(spiffe_id(dotted.self_signed(&key).unwrap().der()), None);

        let plain = rcgen::CertificateParams::new(vec!["web.local".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(spiffe_id(plain.der()), None);
        assert_eq!(spiffe_id(b"not a certificate"), None);
    }

    /// What an X.509-SVID validator refuses (X.509-SVID §5.2, SPIFFE ID §2).
    #[test]
    fn a_leaf_that_names_no_workload_has_no_identity() {
        let key = rcgen::KeyPair::generate().unwrap();
        let with_uri = |uri: &str, usages: Vec<rcgen::KeyUsagePurpose>| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.try_into().unwrap()));
            params.key_usages = usages;
            spiffe_id(params.self_signed(&key).unwrap().der())
        };
        use rcgen::KeyUsagePurpose::{CrlSign, DigitalSignature, KeyCertSign};
        let id = "spiffe://td/ns/a/sa/web";
        assert_eq!(with_uri(id, vec![DigitalSignature]).as_deref(), Some(id));
        assert_eq!(
            with_uri(id, vec![DigitalSignature, KeyCertSign]),
            None,
            "a CA's key usage"
        );
        assert_eq!(with_uri(id, vec![DigitalSignature, CrlSign]), None, "a CA's key usage");
        assert_eq!(with_uri("spiffe://td", vec![]), None, "a trust domain is no workload");
        let long_domain = format!("spiffe://{}/ns/a", "d".repeat(256));
        assert_eq!(with_uri(&long_domain, vec![]), None, "a trust domain over 255 bytes");
        let longest_domain = format!("spiffe://{}/ns/a", "d".repeat(255));
        assert_eq!(with_uri(&longest_domain, vec![]), Some(longest_domain));
        assert!(Principals::parse(["spiffe://td"]).is_err(), "it can never match a leaf");
    }
}
