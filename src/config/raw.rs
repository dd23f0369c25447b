//! The TOML file as written: serde structs that mirror DESIGN.md §4 exactly.
//! Unknown keys are errors; defaults live here so the file stays short.
//! Sections that belong to features not built yet are captured as raw values
//! so that validation can name them instead of silently ignoring them.

use super::values::{Dur, Period, Size, Timeout, Workers};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub runtime: RawRuntime,
    pub admin: Option<RawAdmin>,
    pub access_log: Option<RawAccessLog>,
    #[serde(default, rename = "listener", deserialize_with = "array_of_tables")]
    pub listeners: Vec<RawListener>,
    #[serde(default, rename = "cluster", deserialize_with = "array_of_tables")]
    pub clusters: Vec<RawCluster>,
}

/// A list written as an array of tables (`[[listener]]`): one written as
/// a single table (`[listener]`) is told so, not "expected a sequence".
fn array_of_tables<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Tables<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Tables<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of tables: each one under a [[double-bracketed]] header")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    d.deserialize_seq(Tables(std::marker::PhantomData))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRuntime {
    #[serde(default)]
    pub workers: Workers,
    #[serde(default = "yes")]
    pub pin_cores: bool,
    #[serde(default = "default_drain")]
    pub drain_timeout: Timeout,
    pub zone: Option<Spanned<String>>,
    /// Per-request metrics (counters and latency histograms); off only to
    /// measure what they cost.
    #[serde(default = "yes")]
    pub metrics: bool,
}

impl Default for RawRuntime {
    fn default() -> Self {
        RawRuntime {
            workers: Workers::Auto,
            pin_cores: true,
            drain_timeout: default_drain(),
            zone: None,
            metrics: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawAdmin {
    #[serde(default = "default_admin_address")]
    pub address: Spanned<String>,
    pub token_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawAccessLog {
    /// "off", "stdout", or a file path.
    #[serde(default = "default_log_target")]
    pub target: Spanned<String>,
    #[serde(default = "default_log_format")]
    pub format: Spanned<String>,
    /// Per-worker buffer; lines that do not fit before the next flush are dropped and counted.
    #[serde(default = "default_log_buffer")]
    pub buffer: Size,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawListener {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    #[serde(default)]
    pub protocol: Protocol,
    /// For `protocol = "tcp"`: the cluster every connection goes to.
    pub cluster: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<usize>>,
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Timeout,
    /// Default per protocol: see `compile`.
    pub idle_timeout: Option<Timeout>,
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: Spanned<Size>,
    pub max_body_bytes: Option<Size>,
    /// http: the request after which a client connection is closed.
    pub max_requests_per_connection: Option<Spanned<u64>>,
    /// http: a client connection's age after which it is closed at the
    /// end of its request in progress, or when idle.
    pub max_connection_duration: Option<Spanned<Dur>>,
    pub tls: Option<Spanned<RawServerTls>>,
    /// tcp listeners with mTLS: the client identities admitted.
    pub allow_principals: Option<Spanned<Vec<String>>>,
    pub rate_limit: Option<RawRateLimit>,
    /// http: what becomes of a path that servers straying from RFC 3986
    /// read under another route: "refuse" or "forward".
    pub lax_paths: Option<Spanned<String>>,
    /// http: "keep" a client's X-Forwarded-Proto or "overwrite" it.
    pub forwarded_proto: Option<Spanned<String>>,
    /// Spanned, so that what is wrong with a route as a whole (no target)
    /// is reported where it is.
    #[serde(default, rename = "route", deserialize_with = "array_of_tables")]
    pub routes: Vec<Spanned<RawRoute>>,
}

/// TLS termination on a listener; with `client_ca`, mutual TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawServerTls {
    /// PEM certificate chain, leaf first.
    pub cert: Spanned<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<String>,
    /// PEM CA certificates client certificates must chain to.
    pub client_ca: Option<Spanned<String>>,
    /// With `client_ca`: refuse clients without a certificate (default true).
    pub require_client_cert: Option<Spanned<bool>>,
    /// Other certificates, chosen by the name the client asks for.
    #[serde(default)]
    pub sni: Vec<RawSniCert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawSniCert {
    /// DNS names or `*.suffix` wildcards this certificate is served for.
    pub names: Spanned<Vec<String>>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Tcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    pub cluster: Option<Spanned<String>>,
    pub split: Option<Spanned<Vec<RawSplit>>>,
    pub timeout: Option<Timeout>,
    pub retry: Option<RawRetry>,
    pub rate_limit: Option<RawRateLimit>,
    /// Client identities (SPIFFE IDs or patterns) allowed to use the route.
    pub allow_principals: Option<Spanned<Vec<String>>>,
    pub rewrite: Option<RawRewrite>,
    pub fault: Option<Spanned<RawFault>>,
    pub mirror: Option<RawMirror>,
    /// Answer with a redirect instead of forwarding.
    pub redirect: Option<Spanned<RawRedirect>>,
    /// Answer with a fixed response instead of forwarding.
    pub direct_response: Option<Spanned<RawDirectResponse>>,
    pub request_headers: Option<RawHeaderEdits>,
    pub response_headers: Option<RawHeaderEdits>,
}

/// Faults a route injects: `delay` holds requests before forwarding them,
/// `abort` answers them with an error status; each for `percent` of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawFault {
    pub delay: Option<Spanned<RawFaultDelay>>,
    pub abort: Option<RawFaultAbort>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawFaultDelay {
    pub duration: Dur,
    #[serde(default = "default_percent")]
    pub percent: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawFaultAbort {
    pub status: Spanned<u16>,
    #[serde(default = "default_percent")]
    pub percent: Spanned<f64>,
}

fn default_percent() -> Spanned<f64> {
    Spanned::new(0..0, 100.0)
}

/// Where a redirect points: each part given replaces the request's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRedirect {
    pub scheme: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    /// The whole path.
    pub path: Option<Spanned<String>>,
    /// What replaces the route's `match.path_prefix`.
    pub path_prefix: Option<Spanned<String>>,
    #[serde(default = "default_redirect_status")]
    pub status: Spanned<u16>,
    #[serde(default)]
    pub strip_query: bool,
}

fn default_redirect_status() -> Spanned<u16> {
    Spanned::new(0..0, 301)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawDirectResponse {
    pub status: Spanned<u16>,
    #[serde(default)]
    pub body: String,
    pub content_type: Option<Spanned<String>>,
}

/// A copy of `percent` of a route's requests goes to `cluster`; its answers
/// are dropped.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawMirror {
    pub cluster: Spanned<String>,
    #[serde(default = "default_percent")]
    pub percent: Spanned<f64>,
}

/// What a route's requests look like upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRewrite {
    /// Replaces the path prefix the route matched (`match.path_prefix`).
    pub path_prefix: Option<Spanned<String>>,
    /// The Host field (and authority) sent upstream.
    pub host: Option<Spanned<String>>,
}

/// Fields a route sets (replacing what came), adds (beside what came) or
/// removes, in the requests it forwards or the responses it returns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawHeaderEdits {
    #[serde(default)]
    pub set: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub add: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRetry {
    /// Tries in all, the first included.
    pub attempts: Spanned<u32>,
    #[serde(default = "default_retry_on")]
    pub on: Spanned<Vec<String>>,
    pub per_try_timeout: Option<Timeout>,
    #[serde(default = "default_backoff")]
    pub backoff: Dur,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Dur,
    #[serde(default)]
    pub allow_non_idempotent: bool,
    /// Request bodies up to this size are kept for replay; larger ones are not retried.
    #[serde(default = "default_replay")]
    pub max_replay_bytes: Size,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRateLimit {
    /// Requests a second; a fraction for slower rates (5 a minute: 0.0833).
    pub rps: Spanned<f64>,
    pub burst: Option<Spanned<u32>>,
    /// "client_ip", or "header:NAME"; one bucket for all requests when absent.
    pub key: Option<Spanned<String>>,
    /// Keyed limits remember at most this many keys per worker (LRU).
    #[serde(default = "default_max_keys")]
    pub max_keys: Spanned<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawOutlier {
    #[serde(default = "five")]
    pub consecutive_5xx: u32,
    #[serde(default = "five")]
    pub consecutive_connect_failures: u32,
    #[serde(default = "default_base_ejection")]
    pub base_ejection: Period,
    #[serde(default = "default_max_ejection")]
    pub max_ejection: Period,
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: Spanned<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawCircuitBreaker {
    #[serde(default = "default_cap")]
    pub max_connections: Spanned<u32>,
    #[serde(default = "default_cap")]
    pub max_pending: Spanned<u32>,
    #[serde(default = "default_cap")]
    pub max_requests: Spanned<u32>,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Per-endpoint error-rate breaker: opens at this failure ratio over
    /// `window` (after `min_requests`), or after `consecutive_failures`.
    pub failure_ratio: Option<Spanned<f64>>,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    #[serde(default = "default_breaker_window")]
    pub window: Period,
    pub consecutive_failures: Option<u32>,
    #[serde(default = "default_open_for")]
    pub open_for: Period,
    #[serde(default = "one")]
    pub probes: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRetryBudget {
    #[serde(default = "default_budget_ratio")]
    pub ratio: Spanned<f64>,
    #[serde(default = "default_min_retries")]
    pub min_retries_per_sec: u32,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawMatch {
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub path_regex: Option<Spanned<String>>,
    pub method: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawSplit {
    pub cluster: Spanned<String>,
    pub weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawCluster {
    pub name: Spanned<String>,
    #[serde(default = "default_lb")]
    pub lb: Spanned<String>,
    /// For `lb = "ring_hash"`: hash this request header; the client IP when absent.
    pub hash_header: Option<Spanned<String>>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Timeout,
    /// Time allowed between the end of the request and the response head.
    pub response_header_timeout: Option<Timeout>,
    /// One source of endpoints: a static list, an endpoints file (re-read
    /// when it changes), or a DNS name (re-resolved every `dns_refresh`).
    pub endpoints: Option<Spanned<Vec<RawEndpoint>>>,
    pub endpoints_file: Option<Spanned<String>>,
    pub dns: Option<Spanned<String>>,
    pub dns_refresh: Option<Dur>,
    pub dns_family: Option<Spanned<String>>,
    #[serde(default)]
    pub pool: RawPool,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub outlier: Option<RawOutlier>,
    pub circuit_breaker: Option<RawCircuitBreaker>,
    pub retry_budget: Option<RawRetryBudget>,
    pub tls: Option<Spanned<RawClientTls>>,
}

/// TLS to a cluster's endpoints; with `cert` and `key`, mutual TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawClientTls {
    /// PEM CA certificates the endpoints' certificates must chain to.
    pub ca: Spanned<String>,
    /// Our client certificate chain and key, for upstreams that ask.
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    /// SNI and the name certificates must carry; default the endpoint's IP.
    pub server_name: Option<Spanned<String>>,
    /// Verify the endpoints' SPIFFE IDs against these instead of a name.
    pub principals: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawHealthCheck {
    /// "http" (GET `path`, status in `expected_statuses`) or "tcp" (connect).
    #[serde(default = "default_check_protocol")]
    pub protocol: Spanned<String>,
    /// http: the path checked; "/" when absent.
    pub path: Option<Spanned<String>>,
    /// http: Host header of the check; the endpoint address when absent.
    pub host: Option<Spanned<String>>,
    #[serde(default = "default_check_interval")]
    pub interval: Spanned<Dur>,
    #[serde(default = "default_check_timeout")]
    pub timeout: Spanned<Dur>,
    /// Up to this much random delay is added to each interval, so checks spread out.
    #[serde(default)]
    pub jitter: Option<Dur>,
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: Spanned<u32>,
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: Spanned<u32>,
    /// http: the statuses that pass; 200 when absent.
    pub expected_statuses: Option<Spanned<Vec<u16>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawEndpoint {
    pub address: Spanned<String>,
    #[serde(default = "spanned_one")]
    pub weight: Spanned<u32>,
    pub zone: Option<String>,
    #[serde(default)]
    pub priority: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawPool {
    #[serde(default = "default_max_idle")]
    pub max_idle_per_endpoint: Spanned<usize>,
    #[serde(default = "default_pool_idle")]
    pub idle_timeout: Timeout,
    /// Requests an upstream connection serves before it is closed.
    pub max_requests_per_connection: Option<Spanned<u64>>,
    /// Age after which an upstream connection is not reused.
    pub max_connection_duration: Option<Spanned<Dur>>,
}

impl Default for RawPool {
    fn default() -> Self {
        RawPool {
            max_idle_per_endpoint: default_max_idle(),
            idle_timeout: default_pool_idle(),
            max_requests_per_connection: None,
            max_connection_duration: None,
        }
    }
}

fn default_admin_address() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9901".to_string())
}
fn default_log_target() -> Spanned<String> {
    Spanned::new(0..0, "stdout".to_string())
}
fn default_log_format() -> Spanned<String> {
    Spanned::new(0..0, "json".to_string())
}
fn default_log_buffer() -> Size {
    Size(256 << 10)
}
fn default_check_protocol() -> Spanned<String> {
    Spanned::new(0..0, "http".to_string())
}
fn default_check_interval() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(std::time::Duration::from_secs(5)))
}
fn default_check_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(std::time::Duration::from_secs(1)))
}
fn default_unhealthy_threshold() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}
fn default_healthy_threshold() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}
fn default_retry_on() -> Spanned<Vec<String>> {
    Spanned::new(
        0..0,
        vec!["connect-failure".into(), "reset".into(), "gateway-error".into()],
    )
}
fn default_backoff() -> Dur {
    Dur(std::time::Duration::from_millis(25))
}
fn default_max_backoff() -> Dur {
    Dur(std::time::Duration::from_millis(250))
}
fn default_replay() -> Size {
    Size(64 << 10)
}
fn default_max_keys() -> Spanned<usize> {
    Spanned::new(0..0, 10_000)
}
fn five() -> u32 {
    5
}
fn default_base_ejection() -> Period {
    Period(std::time::Duration::from_secs(30))
}
fn default_max_ejection() -> Period {
    Period(std::time::Duration::from_secs(300))
}
fn default_max_ejection_percent() -> Spanned<u32> {
    Spanned::new(0..0, 10)
}
fn default_cap() -> Spanned<u32> {
    Spanned::new(0..0, 1024)
}
fn default_max_retries() -> u32 {
    3
}
fn default_min_requests() -> u32 {
    20
}
fn default_breaker_window() -> Period {
    Period(std::time::Duration::from_secs(10))
}
fn default_open_for() -> Period {
    Period(std::time::Duration::from_secs(5))
}
fn default_budget_ratio() -> Spanned<f64> {
    Spanned::new(0..0, 0.2)
}
fn default_min_retries() -> u32 {
    10
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn spanned_one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}
fn default_drain() -> Timeout {
    Timeout(std::time::Duration::from_secs(30))
}
fn default_header_read_timeout() -> Timeout {
    Timeout(std::time::Duration::from_secs(10))
}
fn default_max_header_bytes() -> Spanned<Size> {
    Spanned::new(0..0, Size(64 << 10))
}
fn default_lb() -> Spanned<String> {
    Spanned::new(0..0, "round_robin".to_string())
}
fn default_connect_timeout() -> Timeout {
    Timeout(std::time::Duration::from_secs(1))
}
fn default_max_idle() -> Spanned<usize> {
    Spanned::new(0..0, 128)
}
fn default_pool_idle() -> Timeout {
    Timeout(std::time::Duration::from_secs(60))
}
