//! A worker's own compiled view of one snapshot: route tables per listener and
//! per-cluster balancer state and endpoint pools. Built when the worker sees a
//! new generation, carrying over the state of endpoints that survive (balancer
//! stats by endpoint key, pools by address); pools of removed endpoints retire.

use super::guards::{ClusterGuards, Limiter};
use super::Shared;
use crate::cluster::{hash_bytes, Balancer, EndpointSpec, LbPolicy};
use crate::config::Endpoint;
use crate::config::{HostPattern, LbKind, ListenerKind, PathPattern, Snapshot, Target};
use crate::health::{EndpointHealth, HealthTable};
use crate::metrics::{ClusterKey, EndpointKey, ListenerKey, RouteKey, Shard};
use crate::resilience::{
    Chance, FaultPolicy, LevelHealth, PriorityConfig, PriorityPlan, RetryOn, RetryPolicy, ZonePreference,
};
use crate::router::{HeaderMatch, HostMatch, PathMatch, RouteSpec, RouteTable};
use crate::tls::ClientTlsFiles;
use crate::upstream::EndpointPool;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

pub struct Plan {
    pub snapshot: Arc<Snapshot>,
    /// Per listener (same index as the snapshot); `None` for TCP listeners.
    /// The route table's target is the route's index in the listener's routes.
    pub routers: RouteTables,
    pub clusters: Vec<ClusterState>,
    /// Metric label keys, interned in this worker's shard when the plan is built.
    pub keys: MetricKeys,
    /// Per listener: its listener-wide rate limit.
    pub listener_limits: Vec<Option<Limiter>>,
    /// Per listener, per route: its rate limit and its retry policy.
    pub route_limits: Vec<Vec<Option<Limiter>>>,
    pub retries: Vec<Vec<Option<RetryPolicy>>>,
    pub faults: Vec<Vec<Option<FaultPolicy>>>,
    /// Per listener, per route: the cluster copies go to, and how often.
    pub mirrors: Vec<Vec<Option<(usize, Chance)>>>,
}

/// The cluster of a route Ringway answers itself (a redirect, a direct
/// response): its requests count with `cluster=""`.
pub const NO_CLUSTER: usize = usize::MAX;

#[derive(Default)]
pub struct MetricKeys {
    pub listeners: Vec<ListenerKey>,
    /// Per listener, per route: the key for each cluster the route can target.
    pub routes: Vec<Vec<Vec<(usize, RouteKey)>>>,
    /// Per cluster, per endpoint.
    pub endpoints: Vec<Vec<EndpointKey>>,
    pub clusters: Vec<ClusterKey>,
}

impl MetricKeys {
    fn build(snapshot: &Snapshot, shard: &mut Shard) -> MetricKeys {
        let mut keys = MetricKeys::default();
        for l in &snapshot.listeners {
            keys.listeners.push(shard.listener_key(&l.name));
            let mut per_route = Vec::new();
            if let ListenerKind::Http { routes } = &l.kind {
                for r in routes {
                    let route_keys: Vec<(usize, RouteKey)> = match &r.target {
                        Target::Redirect(_) | Target::Direct(_) => {
                            vec![(NO_CLUSTER, shard.route_key(&l.name, &r.name, ""))]
                        }
                        target => target
                            .clusters()
                            .into_iter()
                            .map(|c| (c, shard.route_key(&l.name, &r.name, &snapshot.clusters[c].name)))
                            .collect(),
                    };
                    if r.fault.is_some() {
                        for &(_, key) in &route_keys {
                            shard.arm_faults(key);
                        }
                    }
                    per_route.push(route_keys);
                }
            }
            keys.routes.push(per_route);
        }
        for c in &snapshot.clusters {
            keys.clusters.push(shard.cluster_key(&c.name));
            let eps = c
                .endpoints
                .iter()
                .map(|e| shard.endpoint_key(&c.name, &e.address.to_string()))
                .collect();
            keys.endpoints.push(eps);
        }
        keys
    }

    pub fn route(&self, listener: usize, route: usize, cluster: usize) -> Option<RouteKey> {
        let targets = self.routes.get(listener)?.get(route)?;
        targets.iter().find(|(c, _)| *c == cluster).map(|(_, k)| *k)
    }

    pub fn endpoint(&self, cluster: usize, endpoint: usize) -> Option<EndpointKey> {
        self.endpoints.get(cluster)?.get(endpoint).copied()
    }
}

pub struct ClusterState {
    pub balancer: RefCell<Balancer>,
    /// Aligned with the snapshot's endpoint list for this cluster.
    pub pools: Vec<Rc<EndpointPool>>,
    /// Published active-check health per endpoint; `None` when unchecked.
    pub health: Vec<Option<Arc<EndpointHealth>>>,
    /// Which endpoints may take traffic, derived from health and priorities
    /// and recomputed only when the health table's version moves.
    active: RefCell<Active>,
    /// Caps, outlier ejection, endpoint breakers, retry budget.
    pub guards: ClusterGuards,
    /// Bumped on every ejection and every endpoint breaker that opens or
    /// leaves open, so the priority loads are recomputed.
    pub down_epoch: Cell<u64>,
}

/// How traffic spreads over priority levels, derived from endpoint health
/// as Envoy does (overprovisioning factor 1.4: a level keeps all traffic while
/// at least 1/1.4 of it is healthy, and spills the rest to the next level; a
/// level too unhealthy to trust is in panic and uses all its endpoints).
struct Active {
    health_version: u64,
    /// Ejections and open breakers seen when computed, and when the first
    /// of them ends.
    down_epoch: u64,
    valid_until: Option<Instant>,
    /// Priority value of each level, best (lowest) first.
    levels: Vec<u32>,
    plan: PriorityPlan,
    /// Per level, percent of requests picked from the local zone.
    local_percent: Vec<u32>,
}

/// The level one request is served from.
#[derive(Clone, Copy)]
pub struct Level {
    pub priority: u32,
    /// Health is ignored within the level.
    pub panic: bool,
    /// Only endpoints in this proxy's zone.
    pub local_only: bool,
}

impl ClusterState {
    /// Bring the priority loads up to date with published health and this
    /// worker's outlier ejections and open breakers (such an endpoint counts
    /// as down, so it fails over to the next level as health checks do).
    pub fn refresh_active(&self, health_version: u64, endpoints: &[Endpoint], zone: Option<&str>, now: Instant) {
        {
            let active = self.active.borrow();
            let fresh = active.health_version == health_version
                && active.down_epoch == self.down_epoch.get()
                && active.valid_until.is_none_or(|t| now < t);
            if fresh {
                return;
            }
        }
        let ejected_until = self.guards.outlier.as_ref().and_then(|o| {
            let o = o.borrow();
            (0..endpoints.len()).filter_map(|i| o.ejected_until(i, now)).min()
        });
        let open_until = self.guards.breakers.as_ref().and_then(|b| {
            let b = b.borrow();
            b.iter().filter_map(|b| b.open_until()).filter(|&t| t > now).min()
        });
        let valid_until = ejected_until.into_iter().chain(open_until).min();
        let mut levels: Vec<u32> = endpoints.iter().map(|e| e.priority).collect();
        levels.sort_unstable();
        levels.dedup();
        let mut health = Vec::with_capacity(levels.len());
        let mut local_percent = Vec::with_capacity(levels.len());
        for &priority in &levels {
            let members = || {
                endpoints
                    .iter()
                    .enumerate()
                    .filter(move |(_, e)| e.priority == priority)
            };
            let count = |f: &dyn Fn(usize, &Endpoint) -> bool| members().filter(|(i, e)| f(*i, e)).count() as u64;
            let total = count(&|_, _| true);
            health.push(LevelHealth {
                healthy: count(&|i, _| self.may_serve(i, now)),
                total,
            });
            let local = zone.map_or(0, |zone| {
                let in_zone = |e: &Endpoint| e.zone.as_deref() == Some(zone);
                let local = LevelHealth {
                    healthy: count(&|i, e| in_zone(e) && self.may_serve(i, now)),
                    total: count(&|_, e| in_zone(e)),
                };
                ZonePreference {
                    min_endpoints: 1,
                    ..ZonePreference::default()
                }
                .local_percent(local, total as usize)
            });
            local_percent.push(local);
        }
        let plan = PriorityPlan::compute(&health, PriorityConfig::default());
        let down_epoch = self.down_epoch.get();
        *self.active.borrow_mut() = Active {
            health_version,
            down_epoch,
            valid_until,
            levels,
            plan,
            local_percent,
        };
    }

    /// Every level but the one of `priority`, best first, each taken whole
    /// (no zone preference, health not ignored): where a request goes when
    /// the breakers of its own level turn it down.
    pub fn other_levels(&self, priority: u32) -> Vec<Level> {
        let active = self.active.borrow();
        active
            .levels
            .iter()
            .filter(|&&p| p != priority)
            .map(|&p| Level {
                priority: p,
                panic: false,
                local_only: false,
            })
            .collect()
    }

    /// The level (and zone restriction) for one request.
    pub fn choose_level(&self, rng: &mut fastrand::Rng) -> Level {
        let active = self.active.borrow();
        let index = if active.levels.len() > 1 {
            active.plan.pick(rng)
        } else {
            0
        };
        Level {
            priority: active.levels.get(index).copied().unwrap_or(0),
            panic: active.plan.total_panic || active.plan.panic.get(index).copied().unwrap_or(false),
            local_only: active.local_percent.get(index).is_some_and(|p| rng.u32(0..100) < *p),
        }
    }

    /// Whether endpoint `i` may serve a request on `level`.
    pub fn eligible(&self, i: usize, endpoints: &[Endpoint], level: &Level, zone: Option<&str>, now: Instant) -> bool {
        let Some(e) = endpoints.get(i) else { return false };
        e.priority == level.priority
            && (level.panic || self.may_serve(i, now))
            && (!level.local_only || e.zone.as_deref() == zone)
    }

    /// Healthy by the active checks, and neither ejected nor refused by an
    /// open breaker on this worker.
    fn may_serve(&self, i: usize, now: Instant) -> bool {
        let healthy = self
            .health
            .get(i)
            .and_then(|h| h.as_ref())
            .is_none_or(|h| h.is_healthy());
        healthy
            && !self
                .guards
                .outlier
                .as_ref()
                .is_some_and(|o| o.borrow().is_ejected(i, now))
            && !self.guards.breaker_open(i, now)
    }
}

/// Which pooled connections may serve a request: those of the same
/// cluster, to the same endpoint, made under the same TLS settings and CA
/// certificates. A connection one cluster verified is never handed to another
/// cluster (which may expect another identity of the same address), nor
/// kept across a change of the cluster's TLS settings or trust bundle (a
/// rotated client certificate keeps them); each cluster's connections
/// also count against its own caps only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    cluster: String,
    addr: SocketAddr,
    tls: Option<(ClientTlsFiles, u64)>,
}

impl Plan {
    pub fn build(
        snapshot: Arc<Snapshot>,
        previous: Option<&Plan>,
        pools: &mut HashMap<PoolKey, Rc<EndpointPool>>,
        shared: &Shared,
        shard: &mut Shard,
        now: Instant,
    ) -> Result<Plan, String> {
        let health: &HealthTable = &shared.health;
        let workers = shared.workers();
        // Compiled once on the control side when the snapshot was published;
        // compiled here only if that did not happen (a swap raced it).
        let routers = match shared.route_tables(snapshot.generation) {
            Some(tables) => tables,
            None => compile_routes(&snapshot)?,
        };

        let mut live = HashMap::with_capacity(pools.len());
        let mut clusters = Vec::with_capacity(snapshot.clusters.len());
        for cluster in &snapshot.clusters {
            let specs: Vec<EndpointSpec> = cluster
                .endpoints
                .iter()
                .map(|e| EndpointSpec {
                    key: endpoint_key(e.address),
                    weight: e.weight,
                })
                .collect();
            let policy = lb_policy(cluster.lb);
            let old = previous.and_then(|p| {
                let i = p.snapshot.cluster_index(&cluster.name)?;
                p.clusters.get(i)
            });
            let balancer = match old {
                Some(old) => old.balancer.borrow().rebuild(policy, &specs, now),
                None => Balancer::new(policy, &specs, now),
            };
            let cluster_pools = cluster
                .endpoints
                .iter()
                .map(|e| {
                    let key = PoolKey {
                        cluster: cluster.name.clone(),
                        addr: e.address,
                        tls: cluster.tls.as_ref().map(|t| (t.files().clone(), t.ca_digest())),
                    };
                    let pool = live
                        .get(&key)
                        .or_else(|| pools.get(&key))
                        .cloned()
                        .unwrap_or_else(|| Rc::new(EndpointPool::new(e.address, cluster.pool)));
                    pool.configure(cluster.pool);
                    live.insert(key, pool.clone());
                    pool
                })
                .collect();
            let keys: Vec<u64> = specs.iter().map(|s| s.key).collect();
            let guards = ClusterGuards::build(&shared.registry, cluster, &keys, old.map(|o| &o.guards), workers, now);
            let checked = cluster.health_check.is_some();
            clusters.push(ClusterState {
                balancer: RefCell::new(balancer),
                pools: cluster_pools,
                health: cluster
                    .endpoints
                    .iter()
                    .map(|e| checked.then(|| health.handle(&cluster.name, e.address)))
                    .collect(),
                // u64::MAX never matches a real version: computed on first use.
                down_epoch: Cell::new(0),
                active: RefCell::new(Active {
                    health_version: u64::MAX,
                    down_epoch: 0,
                    valid_until: None,
                    levels: Vec::new(),
                    plan: PriorityPlan::compute(&[], PriorityConfig::default()),
                    local_percent: Vec::new(),
                }),
                guards,
            });
        }
        for (key, pool) in pools.drain() {
            if !live.contains_key(&key) {
                pool.retire();
            }
        }
        *pools = live;
        let keys = MetricKeys::build(&snapshot, shard);
        let mut listener_limits = Vec::with_capacity(snapshot.listeners.len());
        let mut route_limits = Vec::with_capacity(snapshot.listeners.len());
        let mut retries = Vec::with_capacity(snapshot.listeners.len());
        let mut faults = Vec::with_capacity(snapshot.listeners.len());
        let mut mirrors = Vec::with_capacity(snapshot.listeners.len());
        for l in &snapshot.listeners {
            let limit = l.limits.rate_limit.as_ref();
            listener_limits
                .push(limit.map(|r| Limiter::build(&shared.registry, &format!("listener/{}", l.name), r, workers)));
            let routes = match &l.kind {
                ListenerKind::Http { routes } => routes.as_slice(),
                ListenerKind::Tcp { .. } => &[],
            };
            route_limits.push(
                routes
                    .iter()
                    .map(|r| {
                        // The listener name's length keeps "a/b" + "c" and
                        // "a" + "b/c" apart.
                        let id = format!("route/{}/{}/{}", l.name.len(), l.name, r.name);
                        r.rate_limit
                            .as_ref()
                            .map(|limit| Limiter::build(&shared.registry, &id, limit, workers))
                    })
                    .collect(),
            );
            retries.push(routes.iter().map(|r| r.retry.as_ref().and_then(retry_policy)).collect());
            faults.push(routes.iter().map(|r| r.fault.as_ref().map(fault_policy)).collect());
            mirrors.push(
                routes
                    .iter()
                    .map(|r| r.mirror.as_ref().map(|m| (m.cluster, Chance::percent(m.percent))))
                    .collect(),
            );
        }
        Ok(Plan {
            snapshot,
            routers,
            clusters,
            keys,
            listener_limits,
            route_limits,
            retries,
            faults,
            mirrors,
        })
    }
}

impl Plan {
    /// A route of an HTTP listener.
    pub fn route(&self, listener: usize, route: usize) -> Option<&crate::config::Route> {
        match &self.snapshot.listeners.get(listener)?.kind {
            ListenerKind::Http { routes } => routes.get(route),
            ListenerKind::Tcp { .. } => None,
        }
    }

    /// Index of the listener on `address` in this plan's snapshot. A
    /// running listener is its address: renamed, it keeps its socket and
    /// connections (addresses are unique within a config).
    pub fn listener_at(&self, address: &SocketAddr) -> Option<usize> {
        self.snapshot.listeners.iter().position(|l| l.address == *address)
    }
}

/// Per listener (same index as the snapshot): its compiled route table, whose
/// target is the route's index; `None` for TCP listeners. Immutable, so one
/// compilation is shared by every worker.
pub type RouteTables = Arc<Vec<Option<RouteTable<usize>>>>;

pub fn compile_routes(snapshot: &Snapshot) -> Result<RouteTables, String> {
    let mut tables = Vec::with_capacity(snapshot.listeners.len());
    for listener in &snapshot.listeners {
        tables.push(match &listener.kind {
            ListenerKind::Http { routes } => {
                let specs = routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| route_spec(i, &r.matcher))
                    .collect();
                Some(RouteTable::compile(specs).map_err(|e| format!("listener {}: {e}", listener.name))?)
            }
            ListenerKind::Tcp { .. } => None,
        });
    }
    Ok(Arc::new(tables))
}

/// Stable identity of an endpoint across config swaps.
pub fn endpoint_key(addr: SocketAddr) -> u64 {
    hash_bytes(addr.to_string().as_bytes())
}

fn lb_policy(kind: LbKind) -> LbPolicy {
    match kind {
        LbKind::RoundRobin => LbPolicy::RoundRobin,
        LbKind::WeightedRoundRobin => LbPolicy::WeightedRoundRobin,
        LbKind::LeastRequest => LbPolicy::LeastRequest,
        LbKind::P2cEwma => LbPolicy::P2cEwma,
        LbKind::Random => LbPolicy::Random,
        LbKind::RingHash => LbPolicy::RingHash,
    }
}

fn route_spec(index: usize, m: &crate::config::Match) -> RouteSpec<usize> {
    RouteSpec {
        host: m.host.as_ref().map(|h| match h {
            HostPattern::Exact(s) => HostMatch::Exact(s.clone()),
            HostPattern::Suffix(s) => HostMatch::Suffix(s.clone()),
        }),
        path: match &m.path {
            PathPattern::Any => PathMatch::Any,
            PathPattern::Exact(s) => PathMatch::Exact(s.clone()),
            PathPattern::Prefix(s) => PathMatch::Prefix(s.clone()),
            PathPattern::Regex(s) => PathMatch::Regex(s.clone()),
        },
        method: m.method.clone(),
        headers: m
            .headers
            .iter()
            .map(|(name, value)| {
                let matcher = match value {
                    None => HeaderMatch::Present,
                    Some(v) => HeaderMatch::Exact(v.clone()),
                };
                (name.clone(), matcher)
            })
            .collect(),
        target: index,
    }
}

fn fault_policy(f: &crate::config::Fault) -> FaultPolicy {
    FaultPolicy {
        delay: f.delay.map(|(d, percent)| (d, Chance::percent(percent))),
        abort: f.abort.map(|(status, percent)| (status, Chance::percent(percent))),
    }
}

fn retry_policy(r: &crate::config::Retry) -> Option<RetryPolicy> {
    let on = RetryOn::parse(r.on.iter().map(String::as_str)).ok()?;
    Some(RetryPolicy {
        attempts: r.attempts,
        on,
        per_try_timeout: r.per_try_timeout,
        backoff_base: r.backoff,
        backoff_max: r.max_backoff,
    })
}
