//! Route table: a listener's ordered `[[listener.route]]` list, compiled once
//! per config snapshot and then read by every worker for every request.
//!
//! Semantics are those of DESIGN.md §4: routes are tried in config order and
//! the first whose conditions all hold wins. A route may require a host (exact,
//! or `*.suffix`), one path condition (exact, prefix, or a regex that must
//! match the whole path), a method, and headers (exact value or mere presence).
//! A route with no conditions matches everything.
//!
//! Lookups do not scan the list: `index` narrows the candidates by host, then
//! by path, and only those candidates have their method and headers checked.
//! The answer is still the lowest matching index, so the index is invisible to
//! behaviour (the property test in `prop_tests` holds it to a linear scan).
//!
//! This module is pure: no IO, no clock, no shared mutable state, and no heap
//! allocation per lookup (the one exception is inside the regex crate, which
//! builds a match cache the first time a thread runs a given regex and reuses
//! it afterwards). It knows nothing of clusters or splits; the caller chooses
//! the target type `T`.

mod error;
mod hash;
mod index;
mod prefix;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

pub use error::{RouteError, RouteErrorKind};

use error::is_token;
use index::{HostIndex, HostKey, PathKey};
use regex::Regex;

/// A route's host condition. Request hosts are compared without port and in
/// ASCII lowercase; patterns are lowercased at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// The host exactly, e.g. `api.local`.
    Exact(String),
    /// The text after `*.` of a wildcard: `Suffix("a.com")` is `*.a.com`, which
    /// matches any host ending in `.a.com` with at least one byte before that
    /// dot (`x.a.com`, `y.x.a.com`), but not `a.com` itself.
    Suffix(String),
}

/// A route's single path condition, compared against the request target's
/// path as the caller passes it (no normalisation or percent-decoding here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// No path condition.
    Any,
    /// The path exactly.
    Exact(String),
    /// The path starts with this, byte for byte (`/api/` does not match `/api`).
    Prefix(String),
    /// A `regex` crate pattern that must match the whole path, as if written
    /// `^(?:pattern)$`.
    Regex(String),
}

/// A route's condition on one header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// Config `"*"`: the header is present, whatever its value.
    Present,
    /// The header's first value equals this exactly (case-sensitive).
    Exact(Vec<u8>),
}

/// One route as the config layer hands it over, before compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec<T> {
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// Exact, case-sensitive method token (`GET` does not match `get`).
    pub method: Option<String>,
    /// Header name (any case) → condition; all must hold.
    pub headers: Vec<(String, HeaderMatch)>,
    /// What the caller gets back on a match (cluster, split, ...).
    pub target: T,
}

/// Read access to a request's headers for route matching.
///
/// A trait rather than a closure so the HTTP codec's parsed head can implement
/// it directly, and so lookups stay free of allocation: the router only ever
/// borrows the value.
pub trait HeaderLookup {
    /// The first value of the header called `name`, or `None` when absent.
    /// The router always asks with a lowercase name.
    fn first(&self, name: &str) -> Option<&[u8]>;

    /// Whether the field called `name` has the value `want`, its field
    /// lines taken together (see [`combined_equals`]); `None` when absent.
    /// Lookups that hold one line per name need not say more than `first`.
    fn value_equals(&self, name: &str, want: &[u8]) -> Option<bool> {
        self.first(name).map(|got| got == want)
    }
}

/// Whether field `lines`, combined as RFC 9110 §5.3 has it (in order,
/// joined by ", "), equal `want`; `None` when there are no lines. Two lines
/// `1` and `2` are the one value `1, 2`, so they match neither `1` nor `2`:
/// no way of writing a field changes what it matches.
pub fn combined_equals<'v>(lines: impl Iterator<Item = &'v [u8]>, want: &[u8]) -> Option<bool> {
    let mut rest = want;
    let mut any = false;
    for line in lines {
        if any {
            match rest.strip_prefix(b", ") {
                Some(after) => rest = after,
                None => return Some(false),
            }
        }
        any = true;
        match rest.strip_prefix(line) {
            Some(after) => rest = after,
            None => return Some(false),
        }
    }
    any.then_some(rest.is_empty())
}

/// For requests or tests that carry no headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeaders;

impl HeaderLookup for NoHeaders {
    fn first(&self, _name: &str) -> Option<&[u8]> {
        None
    }
}

/// A fixed list of `(name, value)` pairs, names in any case: handy for tests,
/// benches and callers that hold only a few headers.
impl<const N: usize> HeaderLookup for [(&str, &[u8]); N] {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    fn value_equals(&self, name: &str, want: &[u8]) -> Option<bool> {
        let lines = self.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        combined_equals(lines.map(|(_, v)| *v), want)
    }
}

/// The parts of a request that routing looks at, all borrowed.
#[derive(Clone, Copy)]
pub struct RouteRequest<'a> {
    /// Host without port, already ASCII-lowercased; `None` when the request
    /// has none (then only routes without a host condition can match).
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a str,
    pub headers: &'a dyn HeaderLookup,
}

/// The compiled, immutable route table. `Send + Sync` when `T` is, so one
/// snapshot can be shared by every worker.
#[derive(Debug)]
pub struct RouteTable<T> {
    routes: Box<[Route<T>]>,
    index: HostIndex,
}

/// The conditions the index cannot answer, checked only on its candidates.
#[derive(Debug)]
struct Route<T> {
    method: Option<Box<str>>,
    /// Lowercased names.
    headers: Box<[(Box<str>, HeaderMatch)]>,
    target: T,
}

/// `best` before any route has matched. Route indices stay below it, which
/// `compile` enforces.
const NO_MATCH: u32 = u32::MAX;

impl<T> RouteTable<T> {
    /// Validates and indexes `routes` (in config order). Any bad route rejects
    /// the whole list, naming the first offender.
    pub fn compile(routes: Vec<RouteSpec<T>>) -> Result<Self, RouteError> {
        let mut index = HostIndex::default();
        let mut compiled = Vec::with_capacity(routes.len());
        for (i, spec) in routes.into_iter().enumerate() {
            let fail = |kind| RouteError::new(i, kind);
            let id = u32::try_from(i)
                .ok()
                .filter(|&id| id != NO_MATCH)
                .ok_or_else(|| fail(RouteErrorKind::TooManyRoutes))?;
            let host = host_key(spec.host).map_err(fail)?;
            let path = path_key(spec.path).map_err(fail)?;
            if let Some(method) = spec.method.as_deref().filter(|m| !is_token(m)) {
                return Err(fail(RouteErrorKind::BadMethod(method.to_owned())));
            }
            let headers = spec
                .headers
                .into_iter()
                .map(|(name, want)| {
                    if is_token(&name) {
                        Ok((name.to_ascii_lowercase().into_boxed_str(), want))
                    } else {
                        Err(fail(RouteErrorKind::BadHeaderName(name)))
                    }
                })
                .collect::<Result<_, _>>()?;
            index.insert(host, path, id);
            compiled.push(Route {
                method: spec.method.map(String::into_boxed_str),
                headers,
                target: spec.target,
            });
        }
        index.shrink();
        Ok(Self {
            routes: compiled.into_boxed_slice(),
            index,
        })
    }

    /// The first route, in config order, that matches `req`: its index and
    /// target. `None` means no route matched (the proxy answers 404).
    pub fn lookup(&self, req: &RouteRequest<'_>) -> Option<(usize, &T)> {
        let accept = |id: u32| self.routes.get(id as usize).is_some_and(|route| route.accepts(req));
        let mut best = NO_MATCH;
        self.index.search(req.host, req.path, &mut best, &accept);
        let best = best as usize;
        self.routes.get(best).map(|route| (best, &route.target))
    }

    /// Number of routes, matching the length of the list given to `compile`.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl<T> Route<T> {
    /// Method and headers; host and path were settled by the index.
    fn accepts(&self, req: &RouteRequest<'_>) -> bool {
        if self.method.as_deref().is_some_and(|m| m != req.method) {
            return false;
        }
        self.headers.iter().all(|(name, want)| match want {
            HeaderMatch::Present => req.headers.first(name).is_some(),
            HeaderMatch::Exact(want) => req.headers.value_equals(name, want) == Some(true),
        })
    }
}

fn host_key(host: Option<HostMatch>) -> Result<HostKey, RouteErrorKind> {
    Ok(match host {
        None => HostKey::Any,
        Some(HostMatch::Exact(h)) if h.is_empty() => return Err(RouteErrorKind::EmptyHost),
        Some(HostMatch::Exact(h)) if h.contains('*') => return Err(RouteErrorKind::BadHost(h)),
        Some(HostMatch::Exact(h)) => HostKey::Exact(h.to_ascii_lowercase().into_boxed_str()),
        Some(HostMatch::Suffix(s)) if s.is_empty() => return Err(RouteErrorKind::EmptySuffix),
        Some(HostMatch::Suffix(s)) if s.starts_with('.') || s.contains('*') => {
            return Err(RouteErrorKind::BadSuffix(s))
        }
        Some(HostMatch::Suffix(s)) => HostKey::Suffix(s.to_ascii_lowercase().into_boxed_str()),
    })
}

fn path_key(path: PathMatch) -> Result<PathKey, RouteErrorKind> {
    Ok(match path {
        PathMatch::Any => PathKey::Any,
        PathMatch::Exact(p) => PathKey::Exact(p.into_bytes().into_boxed_slice()),
        PathMatch::Prefix(p) => PathKey::Prefix(p.into_bytes().into_boxed_slice()),
        PathMatch::Regex(p) => PathKey::Regex(anchored_regex(&p)?),
    })
}

/// Compiles `pattern` to match whole paths only.
fn anchored_regex(pattern: &str) -> Result<Regex, RouteErrorKind> {
    let bad = |e: regex::Error| RouteErrorKind::BadRegex {
        pattern: pattern.to_owned(),
        message: e.to_string(),
    };
    // Compiling it bare first rejects patterns that would escape the wrapper
    // below: `a)|(b` is invalid alone, but `\A(?:a)|(b)\z` would compile and
    // match any path starting with `a`.
    Regex::new(pattern).map_err(bad)?;
    Regex::new(&format!(r"\A(?:{pattern})\z")).map_err(bad)
}
