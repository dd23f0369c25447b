//! Where a request goes, decided before any I/O: route it, apply the
//! listener's limits and rate limits, pick the cluster (weighted split), and,
//! for each try, pick the endpoint. The request path in `http.rs` calls these.

use crate::addr_text::IpText;
use crate::config::{LaxPaths, ListenerKind, RateKey, Redirect, RedirectPath, Target};
use crate::error::{ErrorKind, ProxyError};
use crate::http::{self, Framing, HttpError, Method, RequestHead};
use crate::resilience::Injected;
use crate::router::{HeaderLookup, RouteRequest};
use crate::worker::{Level, Plan, RateKeyBytes, Worker, NO_CLUSTER};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Pick an endpoint of the cluster for a try: healthy, on the active priority
/// level, not ejected, breaker not open, and not one already tried when
/// another qualifies. When ejection leaves nothing, ejected endpoints are used
/// (failing open, as Envoy's panic mode does). When breakers refuse every
/// endpoint of the level (half-open ones whose probes are out), the other
/// levels are tried in order; when breakers refuse those too, the request is
/// refused.
pub(super) fn pick_endpoint(
    worker: &Worker,
    plan: &Plan,
    cluster_index: usize,
    hash: Option<u64>,
    tried: &[usize],
    now: Instant,
) -> Result<usize, ErrorKind> {
    let cluster = &plan.snapshot.clusters[cluster_index];
    let state = &plan.clusters[cluster_index];
    let zone = plan.snapshot.runtime.zone.as_deref();
    state.refresh_active(worker.shared.health.version(), &cluster.endpoints, zone, now);
    let level = worker.with_rng(|rng| state.choose_level(rng));
    let pick = |level| pick_in_level(worker, plan, cluster_index, level, hash, tried, now);
    let mut refused_by_breakers = match pick(level) {
        Ok(i) => return Ok(i),
        Err(refused) => refused,
    };
    if refused_by_breakers {
        for other in state.other_levels(level.priority) {
            match pick(other) {
                Ok(i) => return Ok(i),
                Err(refused) => refused_by_breakers |= refused,
            }
        }
    }
    let any_breaker_open = (0..cluster.endpoints.len()).any(|i| state.guards.breaker_open(i, now));
    Err(if any_breaker_open || refused_by_breakers {
        ErrorKind::CircuitOpen
    } else {
        ErrorKind::NoEndpoint
    })
}

/// One level's pick (its local zone first when it prefers it); when there
/// is none, whether a breaker turned the balancer's choice down.
fn pick_in_level(
    worker: &Worker,
    plan: &Plan,
    cluster_index: usize,
    mut level: Level,
    hash: Option<u64>,
    tried: &[usize],
    now: Instant,
) -> Result<usize, bool> {
    let cluster = &plan.snapshot.clusters[cluster_index];
    let state = &plan.clusters[cluster_index];
    let guards = &state.guards;
    let zone = plan.snapshot.runtime.zone.as_deref();
    let mut balancer = state.balancer.borrow_mut();
    let mut refused_by_breakers = false;
    for zoned in [true, false] {
        // Outside the local zone only when the zone's pick found nothing.
        if !zoned && !std::mem::take(&mut level.local_only) {
            break;
        }
        let usable =
            |i: usize| state.eligible(i, &cluster.endpoints, &level, zone, now) && !guards.breaker_open(i, now);
        let filters: [&dyn Fn(usize) -> bool; 2] = [&|i| usable(i) && !tried.contains(&i), &usable];
        for filter in filters {
            // The breaker may still refuse the chosen endpoint (its half-open
            // probes are taken): then pick again without it.
            let mut refused: Vec<usize> = Vec::new();
            loop {
                let keep = |i: usize| filter(i) && !refused.contains(&i);
                let lane = (u64::from(level.priority) << 1) | u64::from(level.local_only);
                let Some(i) = worker.with_rng(|rng| balancer.pick_in(lane, now, hash, rng, &keep)) else {
                    break;
                };
                let admitted = guards
                    .breakers
                    .as_ref()
                    .is_none_or(|b| b.borrow_mut().get_mut(i).is_none_or(|b| b.allow(now)));
                if admitted {
                    if level.panic {
                        worker.count_panic(plan, cluster_index);
                    }
                    return Ok(i);
                }
                refused.push(i);
            }
            refused_by_breakers |= !refused.is_empty();
        }
    }
    Err(refused_by_breakers)
}

/// Whether the request asks to switch to WebSocket (`Connection: upgrade`
/// and an `Upgrade` naming websocket). Only WebSocket is offered upstream,
/// whatever else the client listed: a switch to another protocol (h2c)
/// would carry requests past routing and policy.
pub(super) fn asks_websocket(head: &RequestHead, buf: &[u8]) -> bool {
    head.upgrade && head.header_lines(buf, "upgrade").any(http::names_websocket)
}

/// Where a request goes, decided before any I/O.
pub(super) struct Choice {
    pub route: usize,
    pub route_timeout: Duration,
    pub cluster: usize,
    pub max_body: Option<u64>,
    /// What the route's fault injection drew for this request.
    pub fault: Injected,
}

/// Route the request, authorise the client (`identity`: its verified SPIFFE
/// ID), apply the listener's limits and rate limits, and pick the cluster
/// (weighted split). A refusal after routing names the route and
/// cluster it was counted against.
pub(super) fn choose(
    worker: &Worker,
    plan: &Plan,
    listener: usize,
    peer: SocketAddr,
    identity: Option<&str>,
    buf: &[u8],
    head: &RequestHead,
) -> Result<Choice, (ProxyError, Option<(usize, usize)>)> {
    let listener_config = &plan.snapshot.listeners[listener];
    let unrouted = |kind: ErrorKind| (ProxyError::new(kind), None);

    // A WebSocket handshake is a GET without a body (RFC 6455 §4.1); any
    // other request offering it is refused before routing. Other upgrade
    // offers (h2c) may be ignored: Upgrade is hop-by-hop and stripped.
    let bodiless = matches!(head.framing, Framing::Empty | Framing::Length(0));
    if asks_websocket(head, buf) && (head.method != Method::Get || !bodiless) {
        return Err(unrouted(ErrorKind::Malformed(HttpError::UpgradeNotSupported)));
    }
    let now = Instant::now();
    let rate_key = |key: &RateKey| match key {
        RateKey::All => RateKeyBytes::Field(&[]),
        RateKey::ClientIp => RateKeyBytes::Client(IpText::new(peer.ip())),
        RateKey::Header(name) => RateKeyBytes::of_field(head.forwarded_lines(buf, name)),
    };
    if let Some(limiter) = &plan.listener_limits[listener] {
        limiter.admit(rate_key, now).map_err(|wait| {
            worker.count_listener_ratelimited(plan, listener);
            unrouted(rate_limited(wait))
        })?;
    }

    // Route.
    let router = plan.routers[listener]
        .as_ref()
        .ok_or_else(|| unrouted(ErrorKind::NoRoute))?;
    let host = match head.host_bytes(buf) {
        Some(raw) => {
            Some(http::host_for_routing(raw).ok_or_else(|| unrouted(ErrorKind::Malformed(HttpError::BadHost)))?)
        }
        None => None,
    };
    // Matched as an upstream reads the path (see `normalize_path`), so that
    // `/%61dmin` meets the rules of `/admin`; it goes upstream as sent.
    let raw_path = match head.path_bytes(buf) {
        // `OPTIONS *` asks about the server as a whole: routed by `/`, as
        // its absolute-form twin with no path is (RFC 9112 §3.2.4), and
        // sent on as `*`.
        b"*" => &b"/"[..],
        path => path,
    };
    let headers = HeadHeaders { head, buf };
    let route_of = |path: &[u8]| {
        let request = RouteRequest {
            host: host.as_deref(),
            path: std::str::from_utf8(path).unwrap_or(""),
            method: std::str::from_utf8(head.method_bytes(buf)).unwrap_or(""),
            headers: &headers,
        };
        router.lookup(&request).map(|(_, &index)| index)
    };
    let route_index = route_of(&http::normalize_path(raw_path)).ok_or_else(|| unrouted(ErrorKind::NoRoute))?;
    // Servers that read `..;`, `\`, `%2F` or `//` their own way (see
    // `lax_readings`) must meet the same route's rules, or none is right.
    let readings = (listener_config.lax_paths == LaxPaths::Refuse)
        .then(|| http::lax_readings(raw_path))
        .flatten();
    if readings.is_some_and(|readings| readings.iter().any(|lax| route_of(lax) != Some(route_index))) {
        return Err(unrouted(ErrorKind::Malformed(HttpError::BadTarget)));
    }
    let ListenerKind::Http { routes } = &listener_config.kind else {
        return Err(unrouted(ErrorKind::NoRoute));
    };
    let route = &routes[route_index];

    // Pick the cluster (weighted split); none for a route answered here.
    let cluster_index = match &route.target {
        Target::Cluster(c) => *c,
        Target::Redirect(_) | Target::Direct(_) => NO_CLUSTER,
        Target::Split(parts) => {
            let total: u64 = parts.iter().map(|p| u64::from(p.weight)).sum();
            let mut ticket = worker.with_rng(|rng| rng.u64(0..total.max(1)));
            parts
                .iter()
                .find(|p| {
                    let hit = ticket < u64::from(p.weight);
                    ticket = ticket.saturating_sub(u64::from(p.weight));
                    hit
                })
                .map_or(parts[0].cluster, |p| p.cluster)
        }
    };
    let routed = |kind: ErrorKind| (ProxyError::new(kind), Some((route_index, cluster_index)));

    // A rewritten or redirected prefix must hold: a dot segment resolved
    // upstream, or by the redirected client, would step out of it
    // (`/api/../admin` sent as `/internal/../admin`; `/old/../old/a`
    // redirected to `/new/../old/a`, which leads back here). And a
    // path that matched the prefix only once normalised (`/%61pi/x`) does
    // not start with it as sent: a rewrite would leave it as it is, and a
    // redirect would send the client back to where it asked.
    let rewritten = route.request_edits.path_prefix.as_ref().map(|(matched, _)| matched);
    let redirected = match &route.target {
        Target::Redirect(Redirect {
            path: RedirectPath::Prefix { matched, .. },
            ..
        }) => Some(matched),
        _ => None,
    };
    let stepped_out = (rewritten.is_some() || redirected.is_some()) && http::has_dot_segment(raw_path);
    let not_as_sent = rewritten
        .or(redirected)
        .is_some_and(|matched| !raw_path.starts_with(matched.as_bytes()));
    if stepped_out || not_as_sent {
        return Err(routed(ErrorKind::Malformed(HttpError::BadTarget)));
    }

    // Authorise: the client's verified identity against the route's principals.
    if route.allow_principals.as_ref().is_some_and(|p| !p.allows(identity)) {
        return Err(routed(ErrorKind::Forbidden));
    }

    // Limit.
    let max_body = listener_config.limits.max_body_bytes;
    if let (Framing::Length(n), Some(max)) = (head.framing, max_body) {
        if n > max {
            return Err(routed(ErrorKind::BodyTooLarge));
        }
    }
    if let Some(limiter) = &plan.route_limits[listener][route_index] {
        if let Err(wait) = limiter.admit(rate_key, now) {
            worker.count_ratelimited(plan, listener, route_index, cluster_index);
            return Err(routed(rate_limited(wait)));
        }
    }
    let fault = match &plan.faults[listener][route_index] {
        Some(policy) => worker.with_rng(|rng| policy.draw(rng)),
        None => Injected::default(),
    };
    if fault != Injected::default() {
        worker.count_faults(plan, listener, route_index, cluster_index, fault);
    }
    Ok(Choice {
        route: route_index,
        route_timeout: route.timeout,
        cluster: cluster_index,
        max_body,
        fault,
    })
}

fn rate_limited(wait: Duration) -> ErrorKind {
    ErrorKind::RateLimited {
        retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    }
}

/// Route matching reads header values straight out of the parsed head. A
/// field the client named in `Connection` is absent here: it is dropped on
/// the way, and a route must not be chosen by what its upstream never sees.
struct HeadHeaders<'a> {
    head: &'a RequestHead,
    buf: &'a [u8],
}

impl HeaderLookup for HeadHeaders<'_> {
    fn first(&self, name: &str) -> Option<&[u8]> {
        let value = self.head.header(self.buf, name)?;
        (!self.head.named_in_connection(self.buf, name)).then_some(value)
    }

    fn value_equals(&self, name: &str, want: &[u8]) -> Option<bool> {
        let equals = crate::router::combined_equals(self.head.header_lines(self.buf, name), want)?;
        (!self.head.named_in_connection(self.buf, name)).then_some(equals)
    }
}
