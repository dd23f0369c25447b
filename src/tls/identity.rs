//! Service identities: the SPIFFE ID a peer's certificate carries as its URI
//! SAN, and the principal patterns a route allows.

/// The SPIFFE ID (`spiffe://trust-domain/path`) in a certificate's subject
/// alternative names; None when it has none or cannot be read. Called only
/// on certificates the verifier has already accepted.
pub fn spiffe_id(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) if is_spiffe_id(uri) => Some((*uri).to_string()),
        _ => None,
    })
}

/// `spiffe://`, a trust domain of lowercase letters, digits, `-`, `.` and
/// `_`, then a path of letters, digits and those (SPIFFE ID spec §2). Being
/// this strict also keeps an ID safe to write into a header.
fn is_spiffe_id(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("spiffe://") else {
        return false;
    };
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
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
                if !is_spiffe_id(prefix) {
                    return Err(format!(
                        "principal {pattern:?} must be a SPIFFE ID, a SPIFFE ID prefix ending in *, or *"
                    ));
                }
                Principal::Prefix(prefix.to_string())
            } else {
                if !is_spiffe_id(pattern) {
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
        assert_eq!(spiffe_id(cert.der()).as_deref(), Some("spiffe://td/ns/a/sa/web"));

        let plain = rcgen::CertificateParams::new(vec!["web.local".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(spiffe_id(plain.der()), None);
        assert_eq!(spiffe_id(b"not a certificate"), None);
    }
}
