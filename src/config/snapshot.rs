//! The compiled, immutable configuration every worker reads: names resolved to
//! indices, values checked, defaults applied. Built once per change on the
//! control side and shared read-only (`Arc<Snapshot>`) with all workers.

use super::values::Workers;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Bumped by every successful publication; workers compare it to notice swaps.
    pub generation: u64,
    /// The TOML text this snapshot was compiled from, served back by GET /config.
    pub source: Arc<str>,
    /// Where the text came from (a file path, or "admin"), used in error messages.
    pub origin: String,
    pub runtime: Runtime,
    /// The admin endpoint, when the config has an `[admin]` section.
    pub admin: Option<Admin>,
    pub access_log: AccessLog,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
}

impl Snapshot {
    pub fn cluster_index(&self, name: &str) -> Option<usize> {
        self.clusters.iter().position(|c| c.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub workers: Workers,
    pub pin_cores: bool,
    pub drain_timeout: Duration,
    /// This proxy's zone: endpoints in it are preferred while they have capacity.
    pub zone: Option<String>,
    pub metrics: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub attempts: u32,
    /// Conditions, as Envoy words ("connect-failure", "5xx", "503", ...).
    pub on: Vec<String>,
    pub per_try_timeout: Option<Duration>,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub allow_non_idempotent: bool,
    pub max_replay_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// One bucket for every request.
    All,
    ClientIp,
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Thousandths of a request a second (`rps = 0.5` is 500).
    pub milli_rps: u64,
    pub burst: u32,
    pub key: RateKey,
    pub max_keys: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlier {
    pub consecutive_5xx: u32,
    pub consecutive_connect_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    pub max_connections: u32,
    pub max_pending: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// The per-endpoint error-rate breaker, when configured.
    pub endpoint: Option<EndpointBreaker>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointBreaker {
    pub failure_ratio: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub consecutive_failures: u32,
    pub open_for: Duration,
    pub probes: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_retries_per_sec: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub address: SocketAddr,
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Off,
    Stdout,
    File(std::path::PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub target: LogTarget,
    /// Bytes each worker may buffer between flushes.
    pub buffer: usize,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub kind: ListenerKind,
    pub limits: ListenerLimits,
    /// TLS termination (and mTLS); read at accept, so a reload changes it
    /// for new connections without rebinding.
    pub tls: Option<crate::tls::ServerTls>,
    /// tcp listeners: the client identities admitted (http listeners
    /// authorise per route).
    pub allow_principals: Option<crate::tls::Principals>,
    pub lax_paths: LaxPaths,
    pub forwarded_proto: ForwardedProto,
}

/// Whose word an http listener forwards in X-Forwarded-Proto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedProto {
    /// The client's, when it sent one line of `http` or `https` (an
    /// ingress in front of this proxy said what the original client used,
    /// as Envoy keeps it by default); else the connection's scheme.
    #[default]
    Keep,
    /// Always the connection's scheme: for listeners that face clients
    /// directly, whose word vouches for nothing.
    Overwrite,
}

/// What an http listener does with a path that servers straying from RFC
/// 3986 (Java servers, those that decode first) read under another route
/// than its RFC 3986 reading (see `http::lax_readings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LaxPaths {
    /// Refuse it with 400 `bad-target`: no route's rules are right for it.
    #[default]
    Refuse,
    /// Route it by its RFC 3986 reading alone, as Envoy does by default:
    /// for upstreams known to read paths that way.
    Forward,
}

impl Listener {
    /// The terms this listener's connections are admitted under.
    pub fn connection_terms(&self) -> ConnectionTerms {
        let files = self.tls.as_ref().map(|t| t.files());
        ConnectionTerms {
            tcp: matches!(self.kind, ListenerKind::Tcp { .. }),
            tls: files.is_some(),
            client_ca: files.and_then(|f| f.client_ca.clone()),
            client_ca_digest: self.tls.as_ref().and_then(|t| t.client_ca_digest()),
            require_client_cert: files.is_some_and(|f| f.require_client_cert),
            allow_principals: self.allow_principals.clone(),
        }
    }
}

/// What a listener's open connections were admitted under: its protocol,
/// whether it speaks TLS, whom it trusts to identify clients (the client CA
/// file, and the certificates in it) and (tcp)
/// whom it lets through. A reload that changes any of it ends the
/// connections admitted before, as if the listener had been removed: a
/// client verified against a CA the config no longer trusts must not keep
/// its identity. Its certificates may change freely (rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionTerms {
    tcp: bool,
    tls: bool,
    client_ca: Option<String>,
    /// A bundle rewritten in place with other certificates counts as a
    /// change too.
    client_ca_digest: Option<u64>,
    require_client_cert: bool,
    allow_principals: Option<crate::tls::Principals>,
}

#[derive(Debug, Clone)]
pub enum ListenerKind {
    Http { routes: Vec<Route> },
    Tcp { cluster: usize },
}

#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Whole-process cap on open client connections for this listener.
    pub max_connections: Option<usize>,
    /// From a request's first byte to the end of its head (slowloris guard).
    pub header_read_timeout: Duration,
    /// How long a keep-alive client connection may sit idle between requests.
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: Option<u64>,
    /// When a keep-alive client connection ends: after this many requests,
    /// or once this old.
    pub connection_life: ConnectionLife,
    /// A limit over every request of the listener, before routing.
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: Match,
    pub target: Target,
    /// Whole-request budget: from the routed head to the last response byte.
    pub timeout: Duration,
    pub retry: Option<Retry>,
    pub rate_limit: Option<RateLimit>,
    /// Only clients with a verified identity these allow (403 otherwise).
    pub allow_principals: Option<crate::tls::Principals>,
    /// Delays and aborts injected into the route's requests.
    pub fault: Option<Fault>,
    /// Where copies of the route's requests go.
    pub mirror: Option<Mirror>,
    /// What the route changes in the requests it forwards (path and Host too).
    pub request_edits: Edits,
    /// What the route changes in the responses it returns.
    pub response_edits: Edits,
}

/// A cluster that gets a copy of a share of a route's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub cluster: usize,
    pub percent: f64,
}

/// Faults a route injects, each with the percentage of requests it hits.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub delay: Option<(Duration, f64)>,
    /// The status answered instead of forwarding (400..=599).
    pub abort: Option<(u16, f64)>,
}

/// Changes to a forwarded message's head, validated: names are tokens that
/// Ringway does not write itself, values hold no control characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// Lowercase names of received fields not forwarded (removed or set).
    pub drop: Vec<String>,
    /// Fields written after the others (set, then added; `Host` for
    /// `rewrite.host`).
    pub append: Vec<(String, Vec<u8>)>,
    /// Requests only: the route's `path_prefix` and what replaces it.
    pub path_prefix: Option<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct Match {
    pub host: Option<HostPattern>,
    pub path: PathPattern,
    pub method: Option<String>,
    /// Lowercase header name and the exact value required (`None`: present).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PathPattern {
    #[default]
    Any,
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Clone)]
pub enum Target {
    Cluster(usize),
    Split(Vec<WeightedCluster>),
    /// Answered by Ringway itself: no cluster.
    Redirect(Redirect),
    Direct(DirectResponse),
}

impl Target {
    /// The clusters requests may go to (none for a route Ringway answers).
    pub fn clusters(&self) -> Vec<usize> {
        match self {
            Target::Cluster(c) => vec![*c],
            Target::Split(parts) => parts.iter().map(|p| p.cluster).collect(),
            Target::Redirect(_) | Target::Direct(_) => Vec::new(),
        }
    }
}

/// A redirect: each part given replaces the request's own in `Location`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    pub scheme: Option<String>,
    /// A host, with or without a port.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: RedirectPath,
    pub strip_query: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectPath {
    /// The request's own path.
    Keep,
    Replace(String),
    /// The route's matched `path_prefix`, and what replaces it.
    Prefix {
        matched: String,
        replacement: String,
    },
}

/// A fixed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: String,
}

#[derive(Debug, Clone, Copy)]
pub struct WeightedCluster {
    pub cluster: usize,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub lb: LbKind,
    pub hash_header: Option<String>,
    pub connect_timeout: Duration,
    pub response_header_timeout: Option<Duration>,
    pub endpoints: Vec<Endpoint>,
    /// Where `endpoints` come from; the discovery thread keeps them current.
    pub source: EndpointSource,
    pub pool: PoolSettings,
    pub health_check: Option<HealthCheck>,
    pub outlier: Option<Outlier>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub retry_budget: RetryBudget,
    /// TLS (or mTLS) to the endpoints; new connections pick up a reload.
    pub tls: Option<crate::tls::ClientTls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSource {
    Static,
    File(std::path::PathBuf),
    Dns {
        name: String,
        refresh: Duration,
        family: DnsFamily,
    },
}

/// Which of a DNS name's addresses a cluster uses (Envoy's
/// `dns_lookup_family`). A name with addresses of both families would
/// otherwise send every other connection to a family its server may not
/// listen on (`localhost` as 127.0.0.1 and ::1 in front of a server on
/// 127.0.0.1 alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFamily {
    /// The IPv4 addresses, or the IPv6 ones where there are none.
    V4Preferred,
    /// The IPv6 addresses, or the IPv4 ones where there are none (Envoy's AUTO).
    V6Preferred,
    V4Only,
    V6Only,
    All,
}

impl DnsFamily {
    const ALL: [(DnsFamily, &'static str); 5] = [
        (DnsFamily::V4Preferred, "v4_preferred"),
        (DnsFamily::V6Preferred, "v6_preferred"),
        (DnsFamily::V4Only, "v4_only"),
        (DnsFamily::V6Only, "v6_only"),
        (DnsFamily::All, "all"),
    ];

    /// As `LbKind::from_name`: the family a config word names.
    pub fn from_name(name: &str) -> Option<DnsFamily> {
        DnsFamily::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(family, _)| *family)
    }

    /// Every word, quoted, for a message that lists them.
    pub fn names() -> String {
        let names: Vec<String> = DnsFamily::ALL.iter().map(|(_, name)| format!("{name:?}")).collect();
        names.join(", ")
    }

    /// The addresses of `found` a cluster of this family uses.
    pub fn pick(self, found: Vec<Endpoint>) -> Vec<Endpoint> {
        let has = |v4: bool| found.iter().any(|e| e.address.is_ipv4() == v4);
        let v4 = match self {
            DnsFamily::All => return found,
            DnsFamily::V4Only => true,
            DnsFamily::V6Only => false,
            DnsFamily::V4Preferred => has(true),
            DnsFamily::V6Preferred => !has(false),
        };
        found.into_iter().filter(|e| e.address.is_ipv4() == v4).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `Some(path)`: HTTP GET; `None`: a TCP connect.
    pub http_path: Option<String>,
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub jitter: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub expected_statuses: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbKind {
    RoundRobin,
    WeightedRoundRobin,
    LeastRequest,
    P2cEwma,
    Random,
    RingHash,
}

impl LbKind {
    const ALL: [(LbKind, &'static str); 6] = [
        (LbKind::RoundRobin, "round_robin"),
        (LbKind::WeightedRoundRobin, "weighted_round_robin"),
        (LbKind::LeastRequest, "least_request"),
        (LbKind::P2cEwma, "p2c_ewma"),
        (LbKind::Random, "random"),
        (LbKind::RingHash, "ring_hash"),
    ];

    pub fn from_name(name: &str) -> Option<LbKind> {
        LbKind::ALL.iter().find(|(_, n)| *n == name).map(|(kind, _)| *kind)
    }

    /// Every name, for a message that lists them.
    pub fn names() -> String {
        let names: Vec<&str> = LbKind::ALL.iter().map(|(_, name)| *name).collect();
        names.join(", ")
    }

    /// The name the config spells it with.
    pub fn name(self) -> &'static str {
        LbKind::ALL
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or("", |(_, name)| name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
    pub zone: Option<String>,
    pub priority: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
    /// When an upstream connection is no longer reused.
    pub connection_life: ConnectionLife,
}

/// How long a keep-alive connection is reused, as Envoy's
/// `max_requests_per_connection` and `max_connection_duration` bound it:
/// connections that live for ever stick to the worker, and the endpoint,
/// they were first opened to. Unlimited by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionLife {
    pub max_requests: Option<u64>,
    pub max_duration: Option<Duration>,
}

impl ConnectionLife {
    /// Whether a connection that has served `served` requests and was
    /// opened `age` ago may serve another.
    pub fn allows_another(&self, served: u64, age: Duration) -> bool {
        self.max_requests.is_none_or(|max| served < max) && self.max_duration.is_none_or(|max| age < max)
    }
}

#[cfg(test)]
mod tests {
    use super::{ConnectionLife, LbKind};
    use std::time::Duration;

    #[test]
    fn lb_names_round_trip_and_are_all_listed() {
        for (kind, name) in LbKind::ALL {
            assert_eq!(LbKind::from_name(name), Some(kind));
            assert_eq!(kind.name(), name);
        }
        assert_eq!(
            LbKind::names(),
            "round_robin, weighted_round_robin, least_request, p2c_ewma, random, ring_hash"
        );
    }

    #[test]
    fn connection_life_allows_up_to_its_bounds() {
        let unlimited = ConnectionLife::default();
        assert!(unlimited.allows_another(u64::MAX - 1, Duration::MAX));
        let life = ConnectionLife {
            max_requests: Some(3),
            max_duration: Some(Duration::from_secs(10)),
        };
        assert!(life.allows_another(2, Duration::from_secs(9)));
        assert!(
            !life.allows_another(3, Duration::ZERO),
            "the third request was the last"
        );
        assert!(
            !life.allows_another(0, Duration::from_secs(10)),
            "ten seconds old is too old"
        );
    }
}
