//! One worker's metrics: plain counters in vectors, indexed by keys the worker
//! interned when it built its plan.
//!
//! Recording is an index into a `Vec` plus, for status codes and local-reply
//! reasons, a scan of a short list: no atomics, no locks, no string hashing
//! and no allocation once a label combination has been seen. A key from one
//! shard means nothing in another; [`Shard::merge`] therefore joins by label
//! values. Interning the same labels again returns the same key, so counters
//! stay monotonic across config swaps. Listener and cluster series are never
//! removed. Route and endpoint series follow the config: the worker releases
//! those no live plan refers to ([`Shard::retain_routes`],
//! [`Shard::retain_endpoints`]); they leave the scrape and their slots are
//! reused. A route or endpoint that returns later starts from zero, a counter
//! reset Prometheus's `rate()` expects.

use super::latency::Latency;
use super::slots::Slots;
use std::collections::HashMap;
use std::time::Duration;

/// A (listener, route, cluster) label set in one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteKey(u32);

/// A listener in one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerKey(u32);

impl ListenerKey {
    /// Counts nowhere (as a key past the shard's capacity does).
    pub const NONE: ListenerKey = ListenerKey(u32::MAX);
}

/// A cluster in one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterKey(u32);

/// A (cluster, endpoint) label set in one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointKey(u32);

macro_rules! key_index {
    ($($key:ident),*) => {$(
        impl $key {
            pub(super) fn index(self) -> usize {
                self.0 as usize
            }
        }
    )*};
}
key_index!(RouteKey, ListenerKey, ClusterKey, EndpointKey);

#[derive(Debug, Clone)]
pub(super) struct ListenerStats {
    pub name: String,
    /// The route="" cluster="" series that local replies count into.
    pub unrouted: RouteKey,
    pub cx_total: u64,
    pub cx_active: i64,
    pub tls_handshake_failures: u64,
    pub cx_overflow: u64,
    /// A tcp listener's connections and bytes, by cluster.
    pub tcp: Vec<TcpStats>,
    /// Local replies by reason; reasons are few, so a list beats a map.
    pub local: Vec<(&'static str, u64)>,
}

/// A tcp listener's traffic to one cluster.
#[derive(Debug, Clone)]
pub(super) struct TcpStats {
    pub cluster: String,
    /// Connections by how they ended (the access log's reason), as local
    /// replies are counted.
    pub ends: Vec<(&'static str, u64)>,
    /// Bytes read from the client, and from the upstream.
    pub bytes: [u64; 2],
}

#[derive(Debug, Clone)]
pub(super) struct RouteStats {
    pub listener: ListenerKey,
    pub route: String,
    pub cluster: String,
    /// Requests by status code; usually one to three entries.
    pub codes: Vec<(u16, u64)>,
    pub latency: Latency,
    pub retries: u64,
    pub retry_budget_exhausted: u64,
    pub ratelimited: u64,
    pub delays_injected: u64,
    pub aborts_injected: u64,
    /// The route injects faults: its fault series show from zero.
    pub faults_armed: bool,
}

#[derive(Debug, Clone)]
pub(super) struct ClusterStats {
    pub name: String,
    pub overflow: u64,
    pub panic: u64,
    /// Mirrored request copies by result; results are few, so a list.
    pub mirrored: Vec<(&'static str, u64)>,
}

#[derive(Debug, Clone)]
pub(super) struct EndpointStats {
    pub cluster: ClusterKey,
    pub endpoint: String,
    pub cx_total: u64,
    pub connect_fail: u64,
    pub cx_active: i64,
    pub pool_hits: u64,
    pub pool_misses: u64,
    pub ejections: u64,
}

/// A worker's metric shard. `Clone + Send`: the control thread asks each
/// worker for a clone at scrape time and merges them with [`Shard::merge`].
#[derive(Debug, Clone, Default)]
pub struct Shard {
    pub(super) listeners: Slots<ListenerStats>,
    listener_index: HashMap<String, ListenerKey>,
    pub(super) routes: Slots<RouteStats>,
    route_index: HashMap<(ListenerKey, String, String), RouteKey>,
    pub(super) clusters: Slots<ClusterStats>,
    cluster_index: HashMap<String, ClusterKey>,
    pub(super) endpoints: Slots<EndpointStats>,
    endpoint_index: HashMap<(ClusterKey, String), EndpointKey>,
    pub(super) access_log_dropped: u64,
    breakers: Vec<(String, String, bool)>,
}

fn bump(list: &mut Vec<(u16, u64)>, code: u16, n: u64) {
    match list.iter_mut().find(|(c, _)| *c == code) {
        Some((_, count)) => *count += n,
        None => list.push((code, n)),
    }
}

fn bump_reason(list: &mut Vec<(&'static str, u64)>, reason: &'static str, n: u64) {
    // Pointer equality first: the same literal is almost always the same address.
    match list.iter_mut().find(|(r, _)| std::ptr::eq(*r, reason) || *r == reason) {
        Some((_, count)) => *count += n,
        None => list.push((reason, n)),
    }
}

/// The entry of `cluster` in a tcp listener's stats, made on first use.
fn tcp_stats<'a>(list: &'a mut Vec<TcpStats>, cluster: &str) -> &'a mut TcpStats {
    let i = match list.iter().position(|t| t.cluster == cluster) {
        Some(i) => i,
        None => {
            list.push(TcpStats {
                cluster: cluster.to_owned(),
                ends: Vec::new(),
                bytes: [0; 2],
            });
            list.len() - 1
        }
    };
    &mut list[i]
}

impl Shard {
    pub fn new() -> Self {
        Shard::default()
    }

    // === interning: when a worker builds its plan, not per request ===

    pub fn listener_key(&mut self, listener: &str) -> ListenerKey {
        if let Some(&k) = self.listener_index.get(listener) {
            return k;
        }
        let stats = ListenerStats {
            name: listener.to_owned(),
            unrouted: RouteKey(u32::MAX),
            cx_total: 0,
            cx_active: 0,
            tls_handshake_failures: 0,
            cx_overflow: 0,
            tcp: Vec::new(),
            local: Vec::new(),
        };
        let Some(i) = self.listeners.insert(stats) else {
            return ListenerKey::NONE;
        };
        let key = ListenerKey(i);
        self.listener_index.insert(listener.to_owned(), key);
        let unrouted = self.route_key_in(key, "", "");
        if let Some(l) = self.listeners.get_mut(i as usize) {
            l.unrouted = unrouted;
        }
        key
    }

    /// Intern a (listener, route, cluster) label set. Use `cluster = ""` for
    /// outcomes decided before a cluster is picked (rate limiting).
    pub fn route_key(&mut self, listener: &str, route: &str, cluster: &str) -> RouteKey {
        let l = self.listener_key(listener);
        self.route_key_in(l, route, cluster)
    }

    fn route_key_in(&mut self, listener: ListenerKey, route: &str, cluster: &str) -> RouteKey {
        let index_key = (listener, route.to_owned(), cluster.to_owned());
        if let Some(&k) = self.route_index.get(&index_key) {
            return k;
        }
        let stats = RouteStats {
            listener,
            route: index_key.1.clone(),
            cluster: index_key.2.clone(),
            codes: Vec::new(),
            latency: Latency::default(),
            retries: 0,
            retry_budget_exhausted: 0,
            ratelimited: 0,
            delays_injected: 0,
            aborts_injected: 0,
            faults_armed: false,
        };
        let Some(i) = self.routes.insert(stats) else {
            return RouteKey(u32::MAX);
        };
        self.route_index.insert(index_key, RouteKey(i));
        RouteKey(i)
    }

    /// Release every route series whose key is not in `live` (the keys held
    /// by every plan still in use on this worker), as
    /// [`Shard::retain_endpoints`] does. Each listener's unrouted series
    /// stays with the listener.
    pub fn retain_routes(&mut self, live: impl IntoIterator<Item = RouteKey>) {
        let unrouted = self.listeners.iter().map(|l| l.unrouted);
        let kept = live.into_iter().chain(unrouted).map(RouteKey::index);
        let index = &mut self.route_index;
        self.routes.retain(kept, |stats| {
            index.remove(&(stats.listener, stats.route, stats.cluster));
        });
    }

    pub fn cluster_key(&mut self, cluster: &str) -> ClusterKey {
        if let Some(&k) = self.cluster_index.get(cluster) {
            return k;
        }
        let stats = ClusterStats {
            name: cluster.to_owned(),
            overflow: 0,
            panic: 0,
            mirrored: Vec::new(),
        };
        let Some(i) = self.clusters.insert(stats) else {
            return ClusterKey(u32::MAX);
        };
        self.cluster_index.insert(cluster.to_owned(), ClusterKey(i));
        ClusterKey(i)
    }

    /// Intern an endpoint of `cluster`; `endpoint` is its address as shown in
    /// config and the admin API (`10.0.0.7:8080`).
    pub fn endpoint_key(&mut self, cluster: &str, endpoint: &str) -> EndpointKey {
        let c = self.cluster_key(cluster);
        let index_key = (c, endpoint.to_owned());
        if let Some(&k) = self.endpoint_index.get(&index_key) {
            return k;
        }
        let stats = EndpointStats {
            cluster: c,
            endpoint: index_key.1.clone(),
            cx_total: 0,
            connect_fail: 0,
            cx_active: 0,
            pool_hits: 0,
            pool_misses: 0,
            ejections: 0,
        };
        let Some(i) = self.endpoints.insert(stats) else {
            return EndpointKey(u32::MAX);
        };
        self.endpoint_index.insert(index_key, EndpointKey(i));
        EndpointKey(i)
    }

    /// Release every endpoint series whose key is not in `live`, the keys
    /// held by every plan still in use on this worker (the current one and
    /// any an in-flight request or connection began on). Nothing can record
    /// into a released slot before it is handed out again, so no count lands
    /// on the wrong endpoint.
    /// Release every listener whose key is not in `live` (as
    /// [`Shard::retain_routes`] does for routes) and that has no connection
    /// open any more; its unrouted series goes with the next route release.
    pub fn retain_listeners(&mut self, live: impl IntoIterator<Item = ListenerKey>) {
        let open = self
            .listeners
            .indexed()
            .filter(|(_, l)| l.cx_active != 0)
            .map(|(i, _)| i);
        let kept: Vec<usize> = live.into_iter().map(ListenerKey::index).chain(open).collect();
        let index = &mut self.listener_index;
        self.listeners.retain(kept, |stats| {
            index.remove(&stats.name);
        });
    }

    /// Release every cluster whose key is not in `live`.
    pub fn retain_clusters(&mut self, live: impl IntoIterator<Item = ClusterKey>) {
        let index = &mut self.cluster_index;
        self.clusters.retain(live.into_iter().map(ClusterKey::index), |stats| {
            index.remove(&stats.name);
        });
    }

    pub fn retain_endpoints(&mut self, live: impl IntoIterator<Item = EndpointKey>) {
        let index = &mut self.endpoint_index;
        self.endpoints
            .retain(live.into_iter().map(EndpointKey::index), |stats| {
                index.remove(&(stats.cluster, stats.endpoint));
            });
    }

    // === recording: the request path ===

    /// A routed request finished with `status` (from the upstream or a local
    /// reply on the route) after `duration`.
    pub fn request(&mut self, key: RouteKey, status: u16, duration: Duration) {
        if let Some(r) = self.route(key) {
            bump(&mut r.codes, status, 1);
            r.latency.record(duration);
        }
    }

    /// The proxy answered a request on a matched route itself (429, 502, 503,
    /// 504…): [`Shard::request`] plus `ringway_local_replies_total{reason}`.
    pub fn route_local_reply(&mut self, key: RouteKey, reason: &'static str, status: u16, duration: Duration) {
        self.request(key, status, duration);
        let Some(l) = self.routes.get(key.index()).map(|r| r.listener) else {
            return;
        };
        if let Some(l) = self.listeners.get_mut(l.index()) {
            bump_reason(&mut l.local, reason, 1);
        }
    }

    /// A request that ended before any route matched: counted with route=""
    /// cluster="", its duration in that series' histogram (so that every
    /// request counted is timed), and with its reason when the proxy
    /// answered it itself (malformed request, no route, header timeout…).
    pub fn unrouted(
        &mut self,
        listener: ListenerKey,
        local_reason: Option<&'static str>,
        status: u16,
        duration: Duration,
    ) {
        let Some(l) = self.listeners.get_mut(listener.index()) else {
            return;
        };
        if let Some(reason) = local_reason {
            bump_reason(&mut l.local, reason, 1);
        }
        let unrouted = l.unrouted;
        if let Some(r) = self.route(unrouted) {
            bump(&mut r.codes, status, 1);
            r.latency.record(duration);
        }
    }

    /// The listener's own rate limit refused a request, before routing:
    /// counted under the listener's unrouted series (`route=""`).
    pub fn listener_ratelimited(&mut self, listener: ListenerKey) {
        let Some(l) = self.listeners.get(listener.index()) else {
            return;
        };
        let unrouted = l.unrouted;
        if let Some(r) = self.route(unrouted) {
            r.ratelimited += 1;
        }
    }

    pub fn retry(&mut self, key: RouteKey) {
        if let Some(r) = self.route(key) {
            r.retries += 1;
        }
    }

    pub fn retry_budget_exhausted(&mut self, key: RouteKey) {
        if let Some(r) = self.route(key) {
            r.retry_budget_exhausted += 1;
        }
    }

    /// A route's rate limit refused a request. Exposed per (listener, route);
    /// the key's cluster is ignored. Record the 429 itself with
    /// [`Shard::route_local_reply`].
    pub fn ratelimited(&mut self, key: RouteKey) {
        if let Some(r) = self.route(key) {
            r.ratelimited += 1;
        }
    }

    /// The route has fault injection: expose its fault counters from zero,
    /// so that the first fault shows in rate().
    pub fn arm_faults(&mut self, key: RouteKey) {
        if let Some(r) = self.route(key) {
            r.faults_armed = true;
        }
    }

    /// A route's fault injection delayed and/or aborted a request. Exposed
    /// per (listener, route); the abort's reply is recorded as a local reply.
    pub fn fault_injected(&mut self, key: RouteKey, delayed: bool, aborted: bool) {
        if let Some(r) = self.route(key) {
            r.delays_injected += u64::from(delayed);
            r.aborts_injected += u64::from(aborted);
        }
    }

    /// A cluster's circuit breaker limit refused a request.
    /// A mirrored request copy to this cluster ended with `result`.
    pub fn mirrored(&mut self, cluster: ClusterKey, result: &'static str) {
        if let Some(c) = self.clusters.get_mut(cluster.index()) {
            bump_reason(&mut c.mirrored, result, 1);
        }
    }

    /// An endpoint picked in panic mode (health ignored).
    pub fn panic(&mut self, cluster: ClusterKey) {
        if let Some(c) = self.clusters.get_mut(cluster.index()) {
            c.panic += 1;
        }
    }

    /// The worker's endpoint breakers, (cluster, endpoint, open), replaced at
    /// each scrape; merged shards keep every worker's list.
    pub fn set_breakers(&mut self, states: Vec<(String, String, bool)>) {
        self.breakers = states;
    }

    pub fn breakers(&self) -> &[(String, String, bool)] {
        &self.breakers
    }

    pub fn overflow(&mut self, cluster: ClusterKey) {
        if let Some(c) = self.clusters.get_mut(cluster.index()) {
            c.overflow += 1;
        }
    }

    pub fn downstream_cx_opened(&mut self, listener: ListenerKey) {
        if let Some(l) = self.listeners.get_mut(listener.index()) {
            l.cx_total += 1;
            l.cx_active += 1;
        }
    }

    pub fn downstream_tls_handshake_failed(&mut self, listener: ListenerKey) {
        if let Some(l) = self.listeners.get_mut(listener.index()) {
            l.tls_handshake_failures += 1;
        }
    }

    /// A connection over the listener's `max_connections`, reset at once.
    pub fn downstream_cx_overflow(&mut self, listener: ListenerKey) {
        if let Some(l) = self.listeners.get_mut(listener.index()) {
            l.cx_overflow += 1;
        }
    }

    /// A tcp listener's connection to `cluster` ended, for `reason`.
    pub fn tcp_connection_ended(&mut self, listener: ListenerKey, cluster: &str, reason: &'static str) {
        if let Some(l) = self.listeners.get_mut(listener.index()) {
            bump_reason(&mut tcp_stats(&mut l.tcp, cluster).ends, reason, 1);
        }
    }

    /// `n` bytes a tcp listener's relay to `cluster` read from the client
    /// (`from_client`) or from the upstream.
    pub fn tcp_bytes(&mut self, listener: ListenerKey, cluster: &str, from_client: bool, n: u64) {
        if let Some(l) = self.listeners.get_mut(listener.index()) {
            tcp_stats(&mut l.tcp, cluster).bytes[usize::from(!from_client)] += n;
        }
    }

    pub fn downstream_cx_closed(&mut self, listener: ListenerKey) {
        if let Some(l) = self.listeners.get_mut(listener.index()) {
            l.cx_active -= 1;
        }
    }

    fn route(&mut self, key: RouteKey) -> Option<&mut RouteStats> {
        self.routes.get_mut(key.index())
    }

    fn endpoint(&mut self, ep: EndpointKey) -> Option<&mut EndpointStats> {
        self.endpoints.get_mut(ep.index())
    }

    /// A connection attempt finished; `ok` is whether it connected.
    pub fn upstream_connect(&mut self, ep: EndpointKey, ok: bool) {
        if let Some(e) = self.endpoint(ep) {
            e.cx_total += 1;
            e.connect_fail += u64::from(!ok);
        }
    }

    /// A connection counted as made failed its TLS handshake after all.
    pub fn upstream_handshake_refused(&mut self, ep: EndpointKey) {
        if let Some(e) = self.endpoint(ep) {
            e.connect_fail += 1;
        }
    }

    /// A checkout found a pooled idle connection (`hit`) or had to connect.
    pub fn pool(&mut self, ep: EndpointKey, hit: bool) {
        if let Some(e) = self.endpoint(ep) {
            e.pool_hits += u64::from(hit);
            e.pool_misses += u64::from(!hit);
        }
    }

    /// Open upstream connections changed by `delta` (+1 on connect, -1 on close).
    pub fn upstream_active(&mut self, ep: EndpointKey, delta: i64) {
        if let Some(e) = self.endpoint(ep) {
            e.cx_active += delta;
        }
    }

    /// Set the open-connections gauge outright (from a count kept elsewhere).
    pub fn set_upstream_active(&mut self, ep: EndpointKey, open: i64) {
        if let Some(e) = self.endpoint(ep) {
            e.cx_active = open;
        }
    }

    pub fn ejection(&mut self, ep: EndpointKey) {
        if let Some(e) = self.endpoint(ep) {
            e.ejections += 1;
        }
    }

    /// Copy in the worker's `LogBuffer::dropped()` total before handing out a
    /// clone. Merging sums it across workers.
    /// Count lines lost after they left the workers (failed writes).
    pub fn add_access_log_dropped(&mut self, lines: u64) {
        self.access_log_dropped += lines;
    }

    pub fn set_access_log_dropped(&mut self, total: u64) {
        self.access_log_dropped = total;
    }

    // === scrape side ===

    /// Add `other`'s values into `self`, joining by label values.
    pub fn merge(&mut self, other: &Shard) {
        self.breakers.extend(other.breakers.iter().cloned());
        for l in other.listeners.iter() {
            let k = self.listener_key(&l.name);
            if let Some(ours) = self.listeners.get_mut(k.index()) {
                ours.cx_total += l.cx_total;
                ours.cx_active += l.cx_active;
                ours.tls_handshake_failures += l.tls_handshake_failures;
                ours.cx_overflow += l.cx_overflow;
                for theirs in &l.tcp {
                    let tcp = tcp_stats(&mut ours.tcp, &theirs.cluster);
                    for &(reason, n) in &theirs.ends {
                        bump_reason(&mut tcp.ends, reason, n);
                    }
                    tcp.bytes[0] += theirs.bytes[0];
                    tcp.bytes[1] += theirs.bytes[1];
                }
                for &(reason, n) in &l.local {
                    bump_reason(&mut ours.local, reason, n);
                }
            }
        }
        for r in other.routes.iter() {
            let Some(listener) = other.listeners.get(r.listener.index()) else {
                continue;
            };
            let k = self.route_key(&listener.name, &r.route, &r.cluster);
            if let Some(ours) = self.route(k) {
                for &(code, n) in &r.codes {
                    bump(&mut ours.codes, code, n);
                }
                ours.latency.merge(&r.latency);
                ours.retries += r.retries;
                ours.retry_budget_exhausted += r.retry_budget_exhausted;
                ours.ratelimited += r.ratelimited;
                ours.delays_injected += r.delays_injected;
                ours.aborts_injected += r.aborts_injected;
                ours.faults_armed |= r.faults_armed;
            }
        }
        for c in other.clusters.iter() {
            let k = self.cluster_key(&c.name);
            if let Some(ours) = self.clusters.get_mut(k.index()) {
                ours.overflow += c.overflow;
                ours.panic += c.panic;
                for &(result, n) in &c.mirrored {
                    bump_reason(&mut ours.mirrored, result, n);
                }
            }
        }
        for e in other.endpoints.iter() {
            let Some(cluster) = other.clusters.get(e.cluster.index()) else {
                continue;
            };
            let k = self.endpoint_key(&cluster.name, &e.endpoint);
            if let Some(ours) = self.endpoint(k) {
                ours.cx_total += e.cx_total;
                ours.connect_fail += e.connect_fail;
                ours.cx_active += e.cx_active;
                ours.pool_hits += e.pool_hits;
                ours.pool_misses += e.pool_misses;
                ours.ejections += e.ejections;
            }
        }
        self.access_log_dropped += other.access_log_dropped;
    }
}
