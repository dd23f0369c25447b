//! Why a route list was rejected at compile time.
//!
//! The router only knows route positions, not config files; the config layer
//! maps `RouteError::route` back to the FILE:LINE:COL of that `[[listener.route]]`.

use std::fmt;

/// A route that cannot be compiled, and which one it is (its index in the list
/// given to `RouteTable::compile`). The whole table is rejected, so a bad
/// reload never leaves a listener with half its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// Zero-based position of the offending route in config order.
    pub route: usize,
    pub kind: RouteErrorKind,
}

/// What was wrong with the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteErrorKind {
    /// `host = ""`: no request carries an empty host, so it would never match.
    EmptyHost,
    /// An exact host containing `*`; wildcards must come as `HostMatch::Suffix`.
    BadHost(String),
    /// `host = "*."`: a wildcard with nothing after the dot.
    EmptySuffix,
    /// A wildcard suffix that starts with `.` or contains `*` (only one leading
    /// `*.` label is supported, and it is not part of the suffix text).
    BadSuffix(String),
    /// `path_regex` failed to compile.
    BadRegex { pattern: String, message: String },
    /// `method` is empty or not an RFC 9110 token, so no request could carry it.
    BadMethod(String),
    /// A header name that is empty or not an RFC 9110 token.
    BadHeaderName(String),
    /// More routes than the table's 32-bit route indices can address.
    TooManyRoutes,
}

impl RouteError {
    pub(crate) fn new(route: usize, kind: RouteErrorKind) -> Self {
        Self { route, kind }
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}: ", self.route)?;
        match &self.kind {
            RouteErrorKind::EmptyHost => f.write_str("host is empty"),
            RouteErrorKind::BadHost(h) => {
                write!(f, "host {h:?} contains '*'; write wildcards as \"*.suffix\"")
            }
            RouteErrorKind::EmptySuffix => f.write_str("wildcard host has an empty suffix"),
            RouteErrorKind::BadSuffix(s) => write!(f, "wildcard suffix {s:?} must not start with '.' or contain '*'"),
            RouteErrorKind::BadRegex { pattern, message } => {
                write!(f, "path_regex {pattern:?} does not compile: {message}")
            }
            RouteErrorKind::BadMethod(m) => write!(f, "method {m:?} is not an HTTP token"),
            RouteErrorKind::BadHeaderName(n) => {
                write!(f, "header name {n:?} is not an HTTP token")
            }
            RouteErrorKind::TooManyRoutes => f.write_str("too many routes in one listener"),
        }
    }
}

impl std::error::Error for RouteError {}

/// RFC 9110 `token`: what methods and header field names are made of.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
