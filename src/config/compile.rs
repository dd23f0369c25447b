//! Validation and compilation: raw TOML structs → `Snapshot`. Every problem is
//! collected with the byte span it came from, so the user sees all of them at
//! once as FILE:LINE:COL, and nothing half-valid is ever published.

use super::local::{compile_direct, compile_redirect};
use super::policies::{
    compile_breaker, compile_fault, compile_health_check, compile_outlier, compile_rate_limit, compile_retry,
    valid_percent,
};
use super::raw::{
    Protocol, RawClientTls, RawCluster, RawConfig, RawHeaderEdits, RawListener, RawMatch, RawRoute, RawServerTls,
};
use super::rewrite::compile_edits;
use super::snapshot::*;
use super::sources;
use super::values::Dur;
use crate::tls::{
    client_config, server_config, ClientTls, ClientTlsFiles, NamePattern, Principals, ServerTls, ServerTlsFiles,
    SniFiles, TlsFile,
};
use std::collections::HashSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Route `timeout` when none is given (the same default Envoy uses).
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a keep-alive client may sit between requests.
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an L4 connection may pass no bytes either way. Long, as Envoy's
/// tcp_proxy default (1h): database and queue clients hold quiet connections.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A problem found at a byte span of the source.
pub(super) struct Problem {
    pub span: Range<usize>,
    pub message: String,
}

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.0.push(Problem {
            span,
            message: message.into(),
        });
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// `running`: the config in force, on a reload (see `compile_endpoints`).
pub(super) fn compile(
    raw: RawConfig,
    source: &str,
    origin: &str,
    generation: u64,
    running: Option<&Snapshot>,
) -> Result<Snapshot, Vec<Problem>> {
    let mut p = Problems::default();
    let admin = raw.admin.as_ref().and_then(|a| {
        let address = listen_address(a.address.get_ref());
        if let Err(e) = &address {
            p.at(a.address.span(), format!("admin address {e}"));
        }
        if let Some(file) = &a.token_file {
            // Read now, as at start: `check` passes only what `run` takes.
            if let Err(e) = crate::admin::load_token(std::path::Path::new(file.get_ref())) {
                p.at(file.span(), e.to_string());
            }
        }
        Some(Admin {
            address: address.ok()?,
            token_file: a.token_file.as_ref().map(|t| t.get_ref().into()),
        })
    });
    let access_log = match &raw.access_log {
        None => AccessLog {
            target: LogTarget::Off,
            buffer: 0,
        },
        Some(log) => {
            if log.format.get_ref() != "json" {
                p.at(
                    log.format.span(),
                    format!(
                        "access_log format {:?}: only \"json\" is supported",
                        log.format.get_ref()
                    ),
                );
            }
            let target = match log.target.get_ref().as_str() {
                "off" => LogTarget::Off,
                "stdout" => LogTarget::Stdout,
                path => {
                    // Opened now (created if need be), as a check: a target
                    // that cannot be written is refused with the config,
                    // not found out once lines are lost.
                    if let Err(e) = crate::telemetry::open_append(std::path::Path::new(path)) {
                        p.at(log.target.span(), format!("access_log target {path:?}: {e}"));
                    }
                    LogTarget::File(path.into())
                }
            };
            AccessLog {
                target,
                buffer: usize::try_from(log.buffer.0).unwrap_or(usize::MAX).max(4096),
            }
        }
    };

    let clusters = compile_clusters(&raw.clusters, running, &mut p);
    let cluster_names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    let listeners = compile_listeners(&raw.listeners, &cluster_names, &mut p);

    if let (Some(admin), Some(raw_admin)) = (&admin, &raw.admin) {
        // Port 0: each takes a port of its own.
        let clash = listeners
            .iter()
            .find(|l| l.address == admin.address && l.address.port() != 0);
        if let Some(l) = clash {
            p.at(
                raw_admin.address.span(),
                format!("admin address {} is listener {:?}'s too", admin.address, l.name),
            );
        }
    }

    if !p.0.is_empty() {
        // In the order they are written, as a reader goes through the file.
        p.0.sort_by_key(|problem| problem.span.start);
        return Err(p.0);
    }
    Ok(Snapshot {
        generation,
        source: Arc::from(source),
        origin: origin.to_string(),
        runtime: Runtime {
            workers: raw.runtime.workers,
            pin_cores: raw.runtime.pin_cores,
            drain_timeout: raw.runtime.drain_timeout.0,
            zone: raw.runtime.zone.as_ref().map(|z| z.get_ref().clone()),
            metrics: raw.runtime.metrics,
        },
        admin,
        access_log,
        listeners,
        clusters,
    })
}

fn compile_clusters(raw: &[RawCluster], running: Option<&Snapshot>, p: &mut Problems) -> Vec<Cluster> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for c in raw {
        named(&c.name, "cluster", p);
        if !seen.insert(c.name.get_ref().as_str()) {
            p.at(
                c.name.span(),
                format!("cluster {:?} is defined twice", c.name.get_ref()),
            );
        }
        let mut health_check = c
            .health_check
            .as_ref()
            .and_then(|h| compile_health_check(h.get_ref(), p));
        let outlier = c.outlier.as_ref().and_then(|o| compile_outlier(o, p));
        let circuit_breaker = c.circuit_breaker.as_ref().and_then(|b| compile_breaker(b, p));
        let retry_budget = match &c.retry_budget {
            Some(b) => {
                if !(0.0..=10.0).contains(b.ratio.get_ref()) {
                    p.at(b.ratio.span(), "retry_budget ratio must be between 0 and 10");
                }
                RetryBudget {
                    ratio: *b.ratio.get_ref(),
                    min_retries_per_sec: b.min_retries_per_sec,
                }
            }
            None => RetryBudget {
                ratio: 0.2,
                min_retries_per_sec: 10,
            },
        };
        let tls = c.tls.as_ref().and_then(|t| compile_client_tls(t, p));
        let lb = LbKind::from_name(c.lb.get_ref()).unwrap_or_else(|| {
            p.at(
                c.lb.span(),
                format!("unknown lb {:?}; expected one of {}", c.lb.get_ref(), LbKind::names()),
            );
            LbKind::RoundRobin
        });
        let (source, endpoints) = compile_endpoints(c, running, p);
        // A name's addresses are checked by that name, as an upstream doing
        // virtual hosting expects (its forwarded requests carry the
        // client's Host); other endpoints by their address.
        if let (Some(check), EndpointSource::Dns { name, .. }) = (&mut health_check, &source) {
            if check.http_path.is_some() && check.host.is_none() {
                check.host = Some(name.clone());
            }
        }
        let max_idle = &c.pool.max_idle_per_endpoint;
        if *max_idle.get_ref() > 65_536 {
            p.at(max_idle.span(), "pool.max_idle_per_endpoint must be at most 65536");
        }
        if let Some(h) = &c.hash_header {
            if h.get_ref().is_empty() || !h.get_ref().bytes().all(is_token_byte) {
                p.at(h.span(), format!("hash_header {:?} is not a header name", h.get_ref()));
            } else if lb != LbKind::RingHash {
                p.at(
                    h.span(),
                    "hash_header is what lb = \"ring_hash\" hashes; this cluster's lb hashes nothing",
                );
            }
        }
        out.push(Cluster {
            name: c.name.get_ref().clone(),
            lb,
            hash_header: c.hash_header.as_ref().map(|h| h.get_ref().to_ascii_lowercase()),
            connect_timeout: c.connect_timeout.0,
            response_header_timeout: c.response_header_timeout.map(|d| d.0),
            endpoints,
            source,
            pool: PoolSettings {
                max_idle_per_endpoint: *c.pool.max_idle_per_endpoint.get_ref(),
                idle_timeout: c.pool.idle_timeout.0,
                connection_life: connection_life(
                    &c.pool.max_requests_per_connection,
                    &c.pool.max_connection_duration,
                    "pool.",
                    p,
                ),
            },
            health_check,
            outlier,
            circuit_breaker,
            retry_budget,
            tls,
        });
    }
    out
}

fn compile_client_tls(t: &Spanned<RawClientTls>, p: &mut Problems) -> Option<ClientTls> {
    let raw = t.get_ref();
    let identity = match (&raw.cert, &raw.key) {
        (Some(cert), Some(key)) => Some((cert.get_ref().clone(), key.get_ref().clone())),
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => {
            p.at(one.span(), "a client certificate needs both `cert` and `key`");
            return None;
        }
    };
    let principals = match &raw.principals {
        None => None,
        Some(list) => match Principals::parse(list.get_ref().iter().map(String::as_str)) {
            Ok(principals) => Some(principals),
            Err(message) => {
                p.at(list.span(), message);
                return None;
            }
        },
    };
    let files = ClientTlsFiles {
        ca: raw.ca.get_ref().clone(),
        identity,
        server_name: raw.server_name.as_ref().map(|n| n.get_ref().clone()),
        principals,
    };
    match client_config(files) {
        Ok(tls) => Some(tls),
        Err((file, message)) => {
            let span = match (file, &raw.cert, &raw.key, &raw.server_name) {
                (TlsFile::Cert, Some(cert), _, _) => cert.span(),
                (TlsFile::Key, _, Some(key), _) => key.span(),
                (TlsFile::ServerName, _, _, Some(name)) => name.span(),
                (TlsFile::Ca, ..) => raw.ca.span(),
                _ => t.span(),
            };
            p.at(span, message);
            None
        }
    }
}

/// An http listener's choice of one of two words, the first the default;
/// a problem where the word is another, or the listener is tcp.
fn http_choice<T: Copy>(
    given: &Option<Spanned<String>>,
    key: &str,
    words: [(&str, T); 2],
    tcp: bool,
    p: &mut Problems,
) -> T {
    let [(first, default), (second, other)] = words;
    let Some(value) = given else { return default };
    if tcp {
        p.at(
            value.span(),
            format!("tcp listeners carry no requests: {key} is for http"),
        );
        return default;
    }
    match value.get_ref().as_str() {
        word if word == first => default,
        word if word == second => other,
        _ => {
            p.at(value.span(), format!("{key} must be \"{first}\" or \"{second}\""));
            default
        }
    }
}

/// The cluster's endpoint source and its endpoints as of now. A file must
/// read and parse, except on a reload that keeps the cluster's file: one
/// caught mid-write keeps the endpoints last read from it (the discovery
/// thread reads it again once it changes). A DNS name that does not resolve
/// yet is not an error (the discovery thread keeps trying), the cluster is
/// just empty until it does.
fn compile_endpoints(c: &RawCluster, running: Option<&Snapshot>, p: &mut Problems) -> (EndpointSource, Vec<Endpoint>) {
    let given = [c.endpoints.is_some(), c.endpoints_file.is_some(), c.dns.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        p.at(c.name.span(), "a cluster takes one of endpoints, endpoints_file or dns");
    }
    if c.dns_refresh.is_some() && c.dns.is_none() {
        p.at(c.name.span(), "dns_refresh needs dns = \"HOST:PORT\"");
    }
    if let (Some(family), None) = (&c.dns_family, &c.dns) {
        p.at(family.span(), "dns_family needs dns = \"HOST:PORT\"");
    }
    if let Some(file) = &c.endpoints_file {
        let path = std::path::PathBuf::from(file.get_ref());
        let endpoints = match sources::read_endpoints_file(&path) {
            Ok(endpoints) => endpoints,
            Err(e) => {
                let same_file = EndpointSource::File(path.clone());
                let kept = running.and_then(|r| {
                    r.clusters
                        .iter()
                        .find(|k| k.name == *c.name.get_ref() && k.source == same_file)
                });
                match kept {
                    Some(kept) => kept.endpoints.clone(),
                    None => {
                        p.at(file.span(), e);
                        Vec::new()
                    }
                }
            }
        };
        return (EndpointSource::File(path), endpoints);
    }
    if let Some(name) = &c.dns {
        let refresh = c.dns_refresh.map_or(Duration::from_secs(30), |d| d.0);
        if let Err(e) = sources::split_host_port(name.get_ref()) {
            p.at(name.span(), format!("dns {e}"));
        }
        if refresh.is_zero() {
            p.at(name.span(), "dns_refresh must be above zero");
        }
        let family = match &c.dns_family {
            None => DnsFamily::V4Preferred,
            Some(word) => DnsFamily::from_name(word.get_ref()).unwrap_or_else(|| {
                p.at(word.span(), format!("dns_family must be one of {}", DnsFamily::names()));
                DnsFamily::V4Preferred
            }),
        };
        let endpoints = family.pick(sources::resolve_dns(name.get_ref()).unwrap_or_default());
        return (
            EndpointSource::Dns {
                name: name.get_ref().clone(),
                refresh,
                family,
            },
            endpoints,
        );
    }
    let Some(list) = &c.endpoints else {
        p.at(c.name.span(), "a cluster needs endpoints, endpoints_file or dns");
        return (EndpointSource::Static, Vec::new());
    };
    let mut endpoints = Vec::with_capacity(list.get_ref().len());
    let mut addrs = HashSet::new();
    for e in list.get_ref() {
        if *e.weight.get_ref() == 0 {
            p.at(e.weight.span(), "endpoint weight must be at least 1");
        }
        let Some(address) = resolve(&e.address, p) else {
            continue;
        };
        if !addrs.insert(address) {
            p.at(e.address.span(), format!("endpoint {address} is listed twice"));
        }
        endpoints.push(Endpoint {
            address,
            weight: (*e.weight.get_ref()).max(1),
            zone: e.zone.clone(),
            priority: e.priority,
        });
    }
    (EndpointSource::Static, endpoints)
}

/// Endpoint addresses are resolved here, on the control side, so workers only
/// ever connect to `SocketAddr`s and never block on DNS.
fn resolve(text: &Spanned<String>, p: &mut Problems) -> Option<SocketAddr> {
    super::sources::resolve_endpoint(text.get_ref())
        .map_err(|message| p.at(text.span(), message))
        .ok()
}

fn compile_listeners(raw: &[RawListener], clusters: &[&str], p: &mut Problems) -> Vec<Listener> {
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for l in raw {
        named(&l.name, "listener", p);
        if !names.insert(l.name.get_ref().as_str()) {
            p.at(
                l.name.span(),
                format!("listener {:?} is defined twice", l.name.get_ref()),
            );
        }
        let tls = l
            .tls
            .as_ref()
            .and_then(|t| compile_server_tls(t, l.protocol == Protocol::Http, p));
        let verifies_clients = tls.as_ref().is_some_and(|t| t.verifies_clients);
        let listener_rate_limit = l.rate_limit.as_ref().and_then(|r| compile_rate_limit(r, p));
        let address = match listen_address(l.address.get_ref()) {
            Ok(a) => a,
            Err(e) => {
                p.at(l.address.span(), format!("listener address {e}"));
                // The config is refused; the rest of the listener is still
                // compiled, so that one check reports all that is wrong.
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        };
        if address.port() != 0 && !addresses.insert(address) {
            p.at(l.address.span(), format!("address {address} is used by two listeners"));
        }
        let max_header_bytes = l.max_header_bytes.get_ref().0;
        if !(1024..=1 << 20).contains(&max_header_bytes) {
            p.at(
                l.max_header_bytes.span(),
                "max_header_bytes must be between 1KiB and 1MiB",
            );
        }
        let allow_principals = match (l.protocol, &l.allow_principals) {
            (Protocol::Http, Some(list)) => {
                p.at(
                    list.span(),
                    "http listeners authorise per route: put `allow_principals` on the routes",
                );
                None
            }
            _ => compile_principals(&l.allow_principals, verifies_clients, p),
        };
        let tcp = l.protocol == Protocol::Tcp;
        let lax_paths = http_choice(
            &l.lax_paths,
            "lax_paths",
            [("refuse", LaxPaths::Refuse), ("forward", LaxPaths::Forward)],
            tcp,
            p,
        );
        let forwarded_proto = http_choice(
            &l.forwarded_proto,
            "forwarded_proto",
            [("keep", ForwardedProto::Keep), ("overwrite", ForwardedProto::Overwrite)],
            tcp,
            p,
        );
        let kind = match l.protocol {
            Protocol::Http => {
                if let Some(c) = &l.cluster {
                    p.at(
                        c.span(),
                        "`cluster` on a listener is only for protocol = \"tcp\"; http listeners use routes",
                    );
                }
                unique_route_names(&l.routes, p);
                let routes = l
                    .routes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        compile_route(i, r.get_ref(), r.span(), clusters, verifies_clients, l.tls.is_some(), p)
                    })
                    .collect();
                ListenerKind::Http { routes }
            }
            Protocol::Tcp => {
                if let Some(r) = l.routes.first() {
                    let span = r.get_ref().cluster.as_ref().map_or(r.span(), |c| c.span());
                    p.at(span, "tcp listeners take `cluster`, not routes");
                }
                if let Some(n) = &l.max_requests_per_connection {
                    p.at(
                        n.span(),
                        "tcp listeners carry no requests: max_requests_per_connection is for http",
                    );
                }
                match &l.cluster {
                    Some(c) => ListenerKind::Tcp {
                        cluster: cluster_ref(c, clusters, p).unwrap_or(0),
                    },
                    None => {
                        p.at(l.name.span(), "protocol = \"tcp\" needs `cluster = ...`");
                        ListenerKind::Tcp { cluster: 0 }
                    }
                }
            }
        };
        if let Some(n) = l.max_connections.as_ref().filter(|n| *n.get_ref() == 0) {
            p.at(n.span(), "max_connections must be at least 1");
        }
        out.push(Listener {
            name: l.name.get_ref().clone(),
            address,
            kind,
            limits: ListenerLimits {
                max_connections: l.max_connections.as_ref().map(|n| *n.get_ref()),
                header_read_timeout: l.header_read_timeout.0,
                idle_timeout: l.idle_timeout.map_or(
                    match l.protocol {
                        Protocol::Http => HTTP_IDLE_TIMEOUT,
                        Protocol::Tcp => TCP_IDLE_TIMEOUT,
                    },
                    |d| d.0,
                ),
                max_header_bytes: max_header_bytes as usize,
                max_body_bytes: l.max_body_bytes.map(|s| s.0),
                connection_life: connection_life(&l.max_requests_per_connection, &l.max_connection_duration, "", p),
                rate_limit: listener_rate_limit,
            },
            tls,
            allow_principals,
            lax_paths,
            forwarded_proto,
        });
    }
    out
}

/// A connection's reuse bounds; each, when given, must allow at least one
/// request. `prefix` names the table the keys sit in, for the message.
fn connection_life(
    max_requests: &Option<Spanned<u64>>,
    max_duration: &Option<Spanned<Dur>>,
    prefix: &str,
    p: &mut Problems,
) -> ConnectionLife {
    if let Some(n) = max_requests.as_ref().filter(|n| *n.get_ref() == 0) {
        p.at(
            n.span(),
            format!("{prefix}max_requests_per_connection must be at least 1"),
        );
    }
    if let Some(d) = max_duration.as_ref().filter(|d| d.get_ref().0.is_zero()) {
        p.at(d.span(), format!("{prefix}max_connection_duration must be above zero"));
    }
    ConnectionLife {
        max_requests: max_requests.as_ref().map(|n| *n.get_ref()),
        max_duration: max_duration.as_ref().map(|d| d.get_ref().0),
    }
}

/// Where a `request_headers` / `response_headers` table shows in the source.
fn edits_span(e: &RawHeaderEdits) -> Range<usize> {
    let values = e.set.values().chain(e.add.values()).chain(&e.remove);
    values.map(Spanned::span).next().unwrap_or(0..0)
}

fn cluster_ref(name: &Spanned<String>, clusters: &[&str], p: &mut Problems) -> Option<usize> {
    let found = clusters.iter().position(|c| *c == name.get_ref().as_str());
    if found.is_none() {
        p.at(name.span(), format!("unknown cluster {:?}", name.get_ref()));
    }
    found
}

fn compile_server_tls(t: &Spanned<RawServerTls>, carries_http: bool, p: &mut Problems) -> Option<ServerTls> {
    let raw = t.get_ref();
    if raw.client_ca.is_none() {
        if let Some(r) = &raw.require_client_cert {
            p.at(
                r.span(),
                "`require_client_cert` needs `client_ca` to verify certificates against",
            );
            return None;
        }
    }
    let mut sni = Vec::with_capacity(raw.sni.len());
    let mut named = HashSet::new();
    for entry in &raw.sni {
        let names = entry.names.get_ref().iter().map(|n| NamePattern::parse(n));
        match names.collect::<Result<Vec<_>, _>>() {
            // One certificate per name: which of two would be served is
            // nowhere said.
            Ok(names) if names.iter().any(|n| !named.insert(n.clone())) => {
                p.at(entry.names.span(), "an sni name is listed twice on this listener")
            }
            Ok(names) if !names.is_empty() => sni.push(SniFiles {
                names,
                cert: entry.cert.get_ref().clone(),
                key: entry.key.get_ref().clone(),
            }),
            Ok(_) => p.at(entry.names.span(), "an sni entry needs at least one name"),
            Err(message) => p.at(entry.names.span(), message),
        }
    }
    if sni.len() != raw.sni.len() {
        return None;
    }
    let files = ServerTlsFiles {
        cert: raw.cert.get_ref().clone(),
        key: raw.key.get_ref().clone(),
        client_ca: raw.client_ca.as_ref().map(|c| c.get_ref().clone()),
        require_client_cert: raw.require_client_cert.as_ref().is_none_or(|r| *r.get_ref()),
        sni,
        carries_http,
    };
    match server_config(files) {
        Ok(tls) => Some(tls),
        Err((file, message)) => {
            let span = match (file, &raw.client_ca) {
                (TlsFile::Cert, _) => raw.cert.span(),
                (TlsFile::Key, _) => raw.key.span(),
                (TlsFile::Ca, Some(ca)) => ca.span(),
                (TlsFile::Sni(i), _) => raw.sni.get(i).map_or(t.span(), |e| e.cert.span()),
                (TlsFile::Ca | TlsFile::ServerName, _) => t.span(),
            };
            p.at(span, message);
            None
        }
    }
}

/// `allow_principals`, which needs verified client certificates to mean
/// anything.
fn compile_principals(
    raw: &Option<Spanned<Vec<String>>>,
    verifies_clients: bool,
    p: &mut Problems,
) -> Option<Principals> {
    let list = raw.as_ref()?;
    if !verifies_clients {
        p.at(
            list.span(),
            "`allow_principals` needs a listener with `tls.client_ca`: without verified client certificates no client has an identity",
        );
        return None;
    }
    Principals::parse(list.get_ref().iter().map(String::as_str))
        .map_err(|message| p.at(list.span(), message))
        .ok()
}

/// `tls_listener`: the route's listener terminates TLS (its requests are
/// https).
fn compile_route(
    index: usize,
    r: &RawRoute,
    span: std::ops::Range<usize>,
    clusters: &[&str],
    verifies_clients: bool,
    tls_listener: bool,
    p: &mut Problems,
) -> Option<Route> {
    let allow_principals = compile_principals(&r.allow_principals, verifies_clients, p);
    let retry = r.retry.as_ref().and_then(|x| compile_retry(x, p));
    let rate_limit = r.rate_limit.as_ref().and_then(|x| compile_rate_limit(x, p));
    let matcher = compile_match(&r.matcher, p);
    let targets = [
        r.cluster.as_ref().map(|c| c.span()),
        r.split.as_ref().map(|s| s.span()),
        r.redirect.as_ref().map(|s| s.span()),
        r.direct_response.as_ref().map(|s| s.span()),
    ];
    if let Some(second) = targets.iter().flatten().nth(1) {
        p.at(
            second.clone(),
            "a route has one of `cluster`, `split`, `redirect` or `direct_response`",
        );
        return None;
    }
    if r.redirect.is_some() || r.direct_response.is_some() {
        let forwarding_only = [
            ("retry", r.retry.as_ref().map(|x| x.attempts.span())),
            ("mirror", r.mirror.as_ref().map(|x| x.cluster.span())),
            (
                "rewrite",
                r.rewrite
                    .as_ref()
                    .and_then(|x| x.path_prefix.as_ref().or(x.host.as_ref()))
                    .map(|x| x.span()),
            ),
            ("request_headers", r.request_headers.as_ref().map(edits_span)),
        ];
        for (key, span) in forwarding_only {
            if let Some(span) = span {
                p.at(
                    span,
                    format!("`{key}` applies to forwarded requests; this route answers itself"),
                );
            }
        }
    }
    // Each part is compiled whatever became of the others, so that one
    // check reports every error.
    let target = match (&r.cluster, &r.split) {
        (Some(c), _) => cluster_ref(c, clusters, p).map(Target::Cluster),
        (None, Some(split)) => {
            let parts: Vec<Option<WeightedCluster>> = split
                .get_ref()
                .iter()
                .map(|s| {
                    cluster_ref(&s.cluster, clusters, p).map(|cluster| WeightedCluster {
                        cluster,
                        weight: s.weight,
                    })
                })
                .collect();
            if split.get_ref().iter().map(|s| u64::from(s.weight)).sum::<u64>() == 0 {
                p.at(split.span(), "split weights must add up to more than 0");
                None
            } else {
                parts.into_iter().collect::<Option<Vec<_>>>().map(Target::Split)
            }
        }
        (None, None) => match (&r.redirect, &r.direct_response) {
            (Some(redirect), _) => {
                let scheme = if tls_listener { "https" } else { "http" };
                matcher
                    .as_ref()
                    .and_then(|m| compile_redirect(redirect, m, scheme, p))
                    .map(Target::Redirect)
            }
            (None, Some(direct)) => compile_direct(direct, p).map(Target::Direct),
            (None, None) => {
                p.at(
                    span,
                    format!(
                        "route #{} needs `cluster`, `split`, `redirect` or `direct_response`",
                        index + 1
                    ),
                );
                None
            }
        },
    };
    let fault = r.fault.as_ref().and_then(|f| compile_fault(f, p));
    let mirror = r.mirror.as_ref().and_then(|m| {
        let cluster = cluster_ref(&m.cluster, clusters, p);
        let percent_ok = valid_percent(&m.percent, "mirror", p);
        cluster.filter(|_| percent_ok).map(|cluster| Mirror {
            cluster,
            percent: *m.percent.get_ref(),
        })
    });
    let (matcher, target) = (matcher?, target?);
    if let (Target::Redirect(_) | Target::Direct(_), Some(edits)) = (&target, &r.response_headers) {
        let own = match target {
            Target::Redirect(_) => "location",
            _ => "content-type",
        };
        let added = edits.add.iter().map(|(name, value)| (name.as_str(), value.span()));
        let removed = edits.remove.iter().map(|name| (name.get_ref().as_str(), name.span()));
        for (name, span) in added.chain(removed) {
            if name.eq_ignore_ascii_case(own) {
                p.at(
                    span,
                    format!("response_headers may only `set` {name:?} on a route that answers itself"),
                );
            }
        }
    }
    let (request_edits, response_edits) = compile_edits(r, &matcher.path, p);
    Some(Route {
        name: route_name(index, r),
        matcher,
        target,
        timeout: r.timeout.map(|d| d.0).unwrap_or(DEFAULT_ROUTE_TIMEOUT),
        retry,
        rate_limit,
        allow_principals,
        fault,
        mirror,
        request_edits,
        response_edits,
    })
}

/// A route's name: as given, or `route-N` for the Nth.
fn route_name(index: usize, r: &RawRoute) -> String {
    r.name
        .as_ref()
        .map_or_else(|| format!("route-{}", index + 1), |n| n.get_ref().clone())
}

/// Route names label a listener's metrics and key its routes' rate limits:
/// two routes of one name would share both. A given name may not repeat
/// another, nor the `route-N` one a nameless route gets.
fn unique_route_names(routes: &[Spanned<RawRoute>], p: &mut Problems) {
    let mut seen = HashSet::new();
    for (i, r) in routes.iter().map(Spanned::get_ref).enumerate() {
        if let Some(name) = &r.name {
            named(name, "route", p);
        }
        let fresh = seen.insert(route_name(i, r));
        if let (false, Some(name)) = (fresh, &r.name) {
            p.at(
                name.span(),
                format!("route {:?} is defined twice in this listener", name.get_ref()),
            );
        }
    }
    // A nameless route whose `route-N` an earlier route took.
    for (i, r) in routes
        .iter()
        .map(Spanned::get_ref)
        .enumerate()
        .filter(|(_, r)| r.name.is_none())
    {
        let auto = route_name(i, r);
        if let Some(n) = routes[..i]
            .iter()
            .filter_map(|r| r.get_ref().name.as_ref())
            .find(|n| *n.get_ref() == auto)
        {
            p.at(
                n.span(),
                format!("route name {auto:?} is the one route #{} gets without a name", i + 1),
            );
        }
    }
}

/// Names label metrics and the access log, and key admin paths: visible
/// text, not empty (`route=""` is the series of requests no route took).
fn named(name: &Spanned<String>, what: &str, p: &mut Problems) {
    let text = name.get_ref();
    if text.is_empty() || text.len() > 256 || text.chars().any(char::is_control) || text.trim() != text {
        p.at(
            name.span(),
            format!("a {what} name must be 1 to 256 characters of visible text, without leading or trailing spaces"),
        );
    }
}

/// An address to listen on, `IP:PORT`. An IPv4-mapped IPv6 address
/// (`[::ffff:127.0.0.1]:80`) is the IPv4 address it maps: IPv6 sockets
/// listen for IPv6 clients only, and cannot bind one.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    match text.parse::<SocketAddr>() {
        // Only a mapped one changes: another keeps its zone (`[fe80::1%2]`).
        Ok(SocketAddr::V6(a)) if a.ip().to_ipv4_mapped().is_some() => {
            Ok(SocketAddr::new(a.ip().to_canonical(), a.port()))
        }
        // A zone names the interface of a link-local address, which needs
        // one; the kernel ignores it on any other, where two spellings
        // would be two listeners on one socket group.
        Ok(SocketAddr::V6(a)) if a.ip().is_unicast_link_local() != (a.scope_id() != 0) => Err(format!(
            "{text:?}: a zone (%N, the interface's number) goes with a link-local address (fe80::/10), and only there"
        )),
        Ok(a) => Ok(a),
        Err(_) => {
            // Written as an unbracketed IPv6 address and a port (`::1:8080`).
            let unbracketed = text
                .rsplit_once(':')
                .filter(|(ip, port)| ip.parse::<Ipv6Addr>().is_ok() && port.parse::<u16>().is_ok());
            let hint = match unbracketed {
                Some((ip, port)) => format!(" (an IPv6 address goes in brackets: [{ip}]:{port})"),
                None => String::new(),
            };
            Err(format!("{text:?} must be IP:PORT{hint}"))
        }
    }
}

fn compile_match(m: &RawMatch, p: &mut Problems) -> Option<Match> {
    let mut ok = true;
    let host = m.host.as_ref().map(|h| {
        let lower = h.get_ref().to_ascii_lowercase();
        // One trailing dot (a fully qualified name) is dropped, as it is
        // from the hosts requests carry.
        let text = lower.strip_suffix('.').unwrap_or(&lower);
        // An IPv6 literal, as requests carry it: bracketed, and in the
        // canonical spelling the router compares requests' literals in.
        if text.starts_with('[') {
            return match crate::http::ipv6_literal(text) {
                Some(literal) => HostPattern::Exact(literal),
                None => {
                    p.at(
                        h.span(),
                        format!(
                            "host {:?} must be an IPv6 address in brackets, such as [::1] (no port)",
                            h.get_ref()
                        ),
                    );
                    ok = false;
                    HostPattern::Exact(String::new())
                }
            };
        }
        let pattern = match text.strip_prefix("*.") {
            Some(suffix) => HostPattern::Suffix(suffix.to_string()),
            None => HostPattern::Exact(text.to_string()),
        };
        let body = match &pattern {
            HostPattern::Exact(s) | HostPattern::Suffix(s) => s,
        };
        // Labels, none of them empty: `*..example.com` names no host.
        if body.split('.').any(str::is_empty)
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            let hint = match text.parse::<Ipv6Addr>() {
                Ok(ip) => format!(" (an IPv6 address goes in brackets: [{ip}])"),
                Err(_) => " (no port)".to_string(),
            };
            p.at(
                h.span(),
                format!(
                    "host {:?} must be a name such as api.local or *.example.com, or an address{hint}",
                    h.get_ref()
                ),
            );
            ok = false;
        }
        pattern
    });
    let paths = [(&m.path, 0), (&m.path_prefix, 1), (&m.path_regex, 2)];
    let given: Vec<_> = paths.iter().filter(|(v, _)| v.is_some()).collect();
    if given.len() > 1 {
        if let Some(v) = given[1].0 {
            p.at(v.span(), "use one of path, path_prefix or path_regex in a match");
        }
        ok = false;
    }
    let path = match given.first() {
        None => PathPattern::Any,
        Some((Some(v), kind)) => {
            let text = v.get_ref().clone();
            if *kind < 2 && !text.starts_with('/') {
                p.at(v.span(), "paths start with '/'");
                ok = false;
            } else if *kind < 2 && !super::rewrite::valid_path(&text) {
                // Requests are matched by their path alone, which holds only
                // visible ASCII: such a route would never match (a guard on
                // `/admin?debug=1` would let that request by).
                let key = if *kind == 0 { "path" } else { "path_prefix" };
                p.at(
                    v.span(),
                    format!("{key} {text:?} can never match: request paths are matched without their query, and hold only visible ASCII without '?' or '#'"),
                );
                ok = false;
            } else if let Some(normal) = (*kind < 2)
                .then(|| crate::http::normalize_path(text.as_bytes()))
                .filter(|normal| **normal != *text.as_bytes())
            {
                // Request paths are matched normalised: this one never would be.
                let normal = String::from_utf8_lossy(&normal);
                p.at(
                    v.span(),
                    format!("paths are matched with encoded unreserved characters decoded and dot segments resolved: write {normal:?}"),
                );
                ok = false;
            }
            match kind {
                0 => PathPattern::Exact(text),
                1 => PathPattern::Prefix(text),
                _ => {
                    if let Err(e) = regex::Regex::new(&text) {
                        p.at(v.span(), format!("invalid path_regex: {e}"));
                        ok = false;
                    }
                    PathPattern::Regex(text)
                }
            }
        }
        Some((None, _)) => PathPattern::Any,
    };
    let method = m.method.as_ref().map(|v| {
        if v.get_ref().is_empty() || !v.get_ref().bytes().all(|b| b.is_ascii_uppercase()) {
            p.at(
                v.span(),
                format!("method {:?} must be an upper-case token such as GET", v.get_ref()),
            );
            ok = false;
        }
        v.get_ref().clone()
    });
    let mut headers = Vec::with_capacity(m.headers.len());
    for (name, value) in &m.headers {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            p.at(value.span(), format!("header name {name:?} is not a valid token"));
            ok = false;
        }
        // A value a request can carry: one that cannot would never match.
        if value.get_ref() != "*" && !super::rewrite::value_ok(value, "match.headers", p) {
            ok = false;
        }
        let expected = match value.get_ref().as_str() {
            "*" => None,
            v => Some(v.as_bytes().to_vec()),
        };
        headers.push((name.to_ascii_lowercase(), expected));
    }
    ok.then_some(Match {
        host,
        path,
        method,
        headers,
    })
}

pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
