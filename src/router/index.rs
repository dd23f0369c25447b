//! The two-level index behind `RouteTable::lookup`: host → path → candidate lists.
//!
//! Each leaf holds route indices in ascending (config) order. A lookup visits
//! every leaf whose host and path conditions hold for the request, walks each
//! list only until its first fully matching route, and keeps the smallest such
//! index. That is exactly "first match wins", but touches only the few leaves a
//! request can reach, so the cost stays near-flat as the table grows.
//!
//! Nothing here allocates during a search.

use super::hash::FxMap;
use super::prefix::PrefixTrie;
use regex::Regex;

/// Route indices in config order, ascending because routes are inserted in order.
type Candidates = Vec<u32>;

/// Where one route sits on the host level.
pub(super) enum HostKey {
    Any,
    /// Lowercased host.
    Exact(Box<str>),
    /// Lowercased text after `*.`; matches hosts that end in `.` + this.
    Suffix(Box<str>),
}

/// Where one route sits on the path level.
pub(super) enum PathKey {
    Any,
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    /// Already anchored to the whole path.
    Regex(Regex),
}

#[derive(Debug, Default)]
pub(super) struct HostIndex {
    exact: FxMap<Box<str>, PathIndex>,
    suffix: FxMap<Box<str>, PathIndex>,
    /// Length of the longest wildcard suffix: host tails longer than this
    /// cannot match one, so a lookup does not hash them.
    max_suffix_len: usize,
    /// Routes without a host condition; every request searches them.
    any: PathIndex,
}

impl HostIndex {
    pub(super) fn insert(&mut self, host: HostKey, path: PathKey, route: u32) {
        let bucket = match host {
            HostKey::Any => &mut self.any,
            HostKey::Exact(host) => self.exact.entry(host).or_default(),
            HostKey::Suffix(suffix) => {
                self.max_suffix_len = self.max_suffix_len.max(suffix.len());
                self.suffix.entry(suffix).or_default()
            }
        };
        bucket.insert(path, route);
    }

    /// Drops the growth slack left by `insert`; the index is read-only from here on.
    pub(super) fn shrink(&mut self) {
        self.exact.values_mut().for_each(PathIndex::shrink);
        self.suffix.values_mut().for_each(PathIndex::shrink);
        self.exact.shrink_to_fit();
        self.suffix.shrink_to_fit();
        self.any.shrink();
    }

    /// Lowers `best` to the smallest route index whose host and path
    /// conditions hold and which `accept` (method, headers) also takes.
    pub(super) fn search(&self, host: Option<&str>, path: &str, best: &mut u32, accept: &impl Fn(u32) -> bool) {
        if let Some(host) = host {
            if let Some(bucket) = self.exact.get(host) {
                bucket.search(path, best, accept);
            }
            if !self.suffix.is_empty() {
                self.search_suffixes(host, path, best, accept);
            }
        }
        self.any.search(path, best, accept);
    }

    /// `*.a.com` must match `x.a.com` and `y.x.a.com` but not `a.com`, so the
    /// candidates are the tails after each dot that has something before it.
    fn search_suffixes(&self, host: &str, path: &str, best: &mut u32, accept: &impl Fn(u32) -> bool) {
        // A dot before `first_dot` leaves a tail longer than any suffix.
        let first_dot = host.len().saturating_sub(self.max_suffix_len + 1).max(1);
        for (dot, byte) in host.bytes().enumerate().skip(first_dot) {
            if byte != b'.' {
                continue;
            }
            // `dot` indexes an ASCII byte, so `dot + 1` is a char boundary.
            let Some(tail) = host.get(dot + 1..) else {
                continue;
            };
            if let Some(bucket) = self.suffix.get(tail) {
                bucket.search(path, best, accept);
            }
        }
    }
}

#[derive(Debug)]
struct PathIndex {
    /// Smallest route index anywhere in this bucket, to skip it outright once
    /// an earlier route has already matched.
    first: u32,
    exact: FxMap<Box<[u8]>, Candidates>,
    /// Keyed by bytes, not str, so a prefix that ends inside a UTF-8
    /// sequence of the path is a plain miss.
    prefix: PrefixTrie,
    /// Regexes cannot be indexed, so each is tried in turn, after the cheaper
    /// method and header checks.
    regex: Vec<(u32, Regex)>,
    any: Candidates,
}

impl Default for PathIndex {
    fn default() -> Self {
        Self {
            first: u32::MAX,
            exact: FxMap::default(),
            prefix: PrefixTrie::default(),
            regex: Vec::new(),
            any: Vec::new(),
        }
    }
}

impl PathIndex {
    fn insert(&mut self, path: PathKey, route: u32) {
        self.first = self.first.min(route);
        match path {
            PathKey::Any => self.any.push(route),
            PathKey::Exact(path) => self.exact.entry(path).or_default().push(route),
            PathKey::Prefix(prefix) => self.prefix.insert(&prefix, route),
            PathKey::Regex(regex) => self.regex.push((route, regex)),
        }
    }

    fn shrink(&mut self) {
        self.exact.values_mut().for_each(Vec::shrink_to_fit);
        self.exact.shrink_to_fit();
        self.prefix.shrink();
        self.regex.shrink_to_fit();
        self.any.shrink_to_fit();
    }

    fn search(&self, path: &str, best: &mut u32, accept: &impl Fn(u32) -> bool) {
        if self.first >= *best {
            return;
        }
        let bytes = path.as_bytes();
        if let Some(list) = self.exact.get(bytes) {
            scan(list, best, accept);
        }
        self.prefix.search(bytes, best, accept);
        for (route, regex) in &self.regex {
            if *route >= *best {
                break;
            }
            // Method and headers first: they are far cheaper than the regex.
            if accept(*route) && regex.is_match(path) {
                *best = *route;
                break;
            }
        }
        scan(&self.any, best, accept);
    }
}

/// Walks an ascending candidate list up to its first route `accept` takes,
/// giving up as soon as the candidates can no longer beat `best`.
#[inline]
pub(super) fn scan(list: &[u32], best: &mut u32, accept: &impl Fn(u32) -> bool) {
    for &route in list {
        if route >= *best {
            return;
        }
        if accept(route) {
            *best = route;
            return;
        }
    }
}
