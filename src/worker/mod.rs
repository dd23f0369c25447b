//! Thread-per-core workers. Each worker is a thread pinned to one core running
//! its own monoio runtime (io_uring, epoll as fallback); it binds its own
//! SO_REUSEPORT socket per listener and owns all its mutable state: plan,
//! balancers, pools, buffers. Only the published snapshot crosses threads.
//!
//! Layering: the per-core state here (`Worker` and what it holds) depends on
//! neither `listener` nor `proxy`, which use it; only `server` (threads,
//! runtimes, the control loop) starts listeners.

mod buffers;
mod drain;
mod guards;
mod idle;
mod plan;
mod server;
mod shared;

pub use buffers::{BufferPool, PoolSizes};
pub use drain::{Drain, Retirement};
pub use guards::{ClusterGuards, Limiter, RateKeyBytes, Registry};
pub use idle::IdleClock;
pub use plan::{compile_routes, endpoint_key, ClusterState, Level, MetricKeys, Plan, PoolKey, NO_CLUSTER};
pub use server::{Control, Publisher, Server};
pub use shared::Shared;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{ConnectionTerms, Listener};
use crate::metrics::{ListenerKey, Shard};
use crate::resilience::{BreakerState, Injected, Outcome};
use crate::telemetry::{LogBuffer, LogMessage};
use crate::upstream::EndpointPool;

/// Size of each pooled I/O buffer: a typical head plus the start of a body.
const BUFFER_SIZE: usize = 16 * 1024;
/// Free buffers a worker keeps for reuse: a request in flight uses up to
/// three (client read, upstream read, response out), so this covers 85
/// concurrent requests without allocating. At most 4 MiB, kept once used.
const BUFFERS_KEPT: usize = 256;
/// Connections that may wait for their next request with a buffer posted.
const WAITING_WITH_BUFFER: usize = 64;
/// Buffers for bodies passed through: one read of this size moves a 64 KiB
/// body, where standard buffers would take four.
const LARGE_BUFFER_SIZE: usize = 64 * 1024;
/// Free large buffers kept: at most 4 MiB, kept once used. With fewer
/// than the large bodies in flight, the rest went back to the allocator,
/// which gave the pages back to the kernel, and the next read into a new
/// buffer faulted them in again (2% of a worker passing 64 KiB bodies to 64
/// clients).
const LARGE_BUFFERS_KEPT: usize = 64;
/// Mirrored request copies a worker keeps in flight at once; past it, copies
/// are skipped (and counted) rather than queued: a slow mirror must not
/// hold a worker's memory hostage.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 256;

/// One endpoint as one worker sees it: the per-worker state GET /clusters
/// reports (each worker has its own, shared with no one).
#[derive(Debug, Clone)]
pub struct EndpointView {
    pub cluster: String,
    pub address: SocketAddr,
    pub ejected: bool,
    /// None without an endpoint breaker.
    pub breaker: Option<BreakerState>,
    /// None until this worker has seen the endpoint answer.
    pub ewma_ms: Option<f64>,
    /// Requests (or tcp relays) in flight to it.
    pub active: u32,
}

/// A listener this worker accepts on (bound and run by `listener`, which
/// this state must not depend on).
pub struct RunningListener {
    /// The name the config in force gives it (a rename keeps the listener).
    pub name: String,
    /// Started by [`RunningListener::stop`]: the accept loop ends.
    pub stop_accepting: Rc<Drain>,
    /// What the connections it accepts now are admitted under, and the
    /// generation it was last compared with.
    pub terms: ConnectionTerms,
    pub terms_generation: u64,
    /// Started when the connections accepted under `terms` must end: their
    /// terms changed (then a new one takes its place for the connections
    /// accepted from then on), or the listener stopped.
    pub retired: Rc<Retirement>,
    /// The retirements of this name's listeners that moved away, with the
    /// terms their tunnels and relays (still running) were admitted under:
    /// a later change of terms reaches them too.
    pub moved_away: MovedAway,
}

/// Retirements of connections admitted under earlier terms, still tracked.
pub type MovedAway = Vec<(ConnectionTerms, Weak<Retirement>)>;

/// Retire the tracked connections admitted under terms other than `terms`,
/// and forget them and those already gone.
pub fn retire_changed(moved_away: &mut MovedAway, terms: &ConnectionTerms) {
    moved_away.retain(|(admitted, retired)| match retired.upgrade() {
        Some(retired) if admitted != terms => {
            retired.change_terms();
            false
        }
        Some(_) => true,
        None => false,
    });
}

impl RunningListener {
    /// The drain of connections admitted under `listener`'s terms (as
    /// generation `generation` has them), after retiring the connections
    /// admitted under other terms. One comparison of generations when the
    /// config did not move.
    pub fn admit_under(&mut self, listener: &Listener, generation: u64) -> Rc<Retirement> {
        if generation != self.terms_generation {
            let terms = listener.connection_terms();
            if terms != self.terms {
                self.retired.change_terms();
                self.retired = Rc::new(Retirement::default());
                self.terms = terms;
            }
            retire_changed(&mut self.moved_away, &self.terms);
            self.terms_generation = generation;
        }
        self.retired.clone()
    }

    /// Stop accepting: the listener left the config, or the worker drains.
    /// HTTP connections then end after their request in progress;
    /// WebSocket tunnels and tcp relays go on until they end or the drain
    /// deadline cuts them (see `Retirement::terms_change`).
    pub fn stop(&self) {
        self.stop_accepting.start();
        self.retired.stop();
    }
}

pub struct Worker {
    pub id: usize,
    /// This worker, for tasks it spawns that outlive the request that
    /// started them (mirrored request copies).
    this: Weak<Worker>,
    /// Mirrored request copies in flight, capped at [`MAX_MIRRORS_IN_FLIGHT`].
    pub mirrors_in_flight: Cell<usize>,
    pub shared: Arc<Shared>,
    plan: RefCell<Rc<Plan>>,
    /// Plans replaced by a later generation that a request or connection
    /// may still hold; their endpoints' metric series stay until they go.
    superseded: RefCell<Vec<Weak<Plan>>>,
    pools: RefCell<HashMap<PoolKey, Rc<EndpointPool>>>,
    pub buffers: BufferPool,
    /// This worker's metric shard: written here only, cloned for scrapes.
    pub metrics: RefCell<Shard>,
    /// Access log lines waiting for the next flush to the writer thread.
    pub log: RefCell<LogBuffer>,
    pub drain: Drain,
    /// Fired when the drain deadline passes: connections still open close.
    pub abort: Drain,
    pub idle: IdleClock,
    /// Listeners this worker accepts on, by address.
    pub listeners: RefCell<HashMap<SocketAddr, RunningListener>>,
    /// The generation `listeners` were last reconciled with.
    pub listeners_generation: Cell<u64>,
    /// What moved listeners left running, by name, while the listener
    /// taking the name could not bind; the one that binds takes it over.
    pub unbound_moves: RefCell<HashMap<String, MovedAway>>,
    /// Client connections open on this worker.
    pub connections: Cell<usize>,
    rng: RefCell<fastrand::Rng>,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Result<Rc<Worker>, String> {
        let mut pools = HashMap::new();
        let snapshot = shared.load();
        let generation = snapshot.generation;
        let mut metrics = Shard::new();
        let log_capacity = snapshot.access_log.buffer;
        let plan = Plan::build(snapshot, None, &mut pools, &shared, &mut metrics, Instant::now())?;
        shared.mark_in_use(id, generation);
        Ok(Rc::new_cyclic(|this| Worker {
            id,
            this: this.clone(),
            mirrors_in_flight: Cell::new(0),
            shared,
            plan: RefCell::new(Rc::new(plan)),
            superseded: RefCell::new(Vec::new()),
            pools: RefCell::new(pools),
            buffers: BufferPool::new(PoolSizes {
                size: BUFFER_SIZE,
                keep: BUFFERS_KEPT,
                large_size: LARGE_BUFFER_SIZE,
                keep_large: LARGE_BUFFERS_KEPT,
                max_waiting: WAITING_WITH_BUFFER,
            }),
            metrics: RefCell::new(metrics),
            log: RefCell::new(LogBuffer::new(log_capacity)),
            drain: Drain::default(),
            abort: Drain::default(),
            idle: IdleClock::default(),
            listeners: RefCell::new(HashMap::new()),
            listeners_generation: Cell::new(0),
            unbound_moves: RefCell::new(HashMap::new()),
            connections: Cell::new(0),
            // Seeded from the OS, not a constant: request ids and trace ids
            // must differ across restarts and across the instances of a fleet.
            rng: RefCell::new(fastrand::Rng::with_seed(std::hash::BuildHasher::hash_one(
                &std::hash::RandomState::new(),
                id,
            ))),
        }))
    }

    /// A counted handle on this worker, for a task it spawns.
    pub fn handle(&self) -> Option<Rc<Worker>> {
        self.this.upgrade()
    }

    pub fn count_mirrored(&self, plan: &Plan, cluster: usize, result: &'static str) {
        if let Some(key) = plan.keys.clusters.get(cluster) {
            self.metrics.borrow_mut().mirrored(*key, result);
        }
    }

    /// The plan for a new request: one relaxed load, and a rebuild only when
    /// the published generation moved. Requests keep the `Rc` they got.
    pub fn plan(&self) -> Rc<Plan> {
        let current = self.plan.borrow().snapshot.generation;
        if self.shared.generation() != current {
            self.refresh();
        }
        self.plan.borrow().clone()
    }

    /// Take the published snapshot and reconcile this worker's state with it.
    pub fn refresh(&self) {
        let snapshot = self.shared.load();
        let old = self.plan.borrow().clone();
        if snapshot.generation == old.snapshot.generation {
            return;
        }
        let generation = snapshot.generation;
        let built = Plan::build(
            snapshot,
            Some(&old),
            &mut self.pools.borrow_mut(),
            &self.shared,
            &mut self.metrics.borrow_mut(),
            Instant::now(),
        );
        match built {
            Ok(plan) => {
                self.log.borrow_mut().set_capacity(plan.snapshot.access_log.buffer);
                *self.plan.borrow_mut() = Rc::new(plan);
                self.superseded.borrow_mut().push(Rc::downgrade(&old));
                drop(old);
                self.release_removed_series();
            }
            Err(e) => crate::stderr_line!("ringway: worker {}: cannot apply generation {generation}: {e}", self.id),
        }
    }

    pub fn with_rng<R>(&self, f: impl FnOnce(&mut fastrand::Rng) -> R) -> R {
        f(&mut self.rng.borrow_mut())
    }

    /// Where an endpoint of `plan` is now: the current plan, and the
    /// cluster's and endpoint's indices in it. A request's own plan may have
    /// been replaced meanwhile; what the request teaches belongs to the
    /// state that carries on (the new balancer carries the endpoint's
    /// outstanding count, outlier detection and breakers its record).
    /// `at` is called with the plan and indices; it is the caller's plan
    /// (no clone) while no new generation came.
    fn at_current_place<R>(
        &self,
        plan: &Plan,
        cluster: usize,
        endpoint: usize,
        at: impl FnOnce(&Plan, usize, usize) -> R,
    ) -> Option<R> {
        if self.plan.borrow().snapshot.generation == plan.snapshot.generation {
            return Some(at(plan, cluster, endpoint));
        }
        let current = self.plan.borrow().clone();
        let key = plan.clusters.get(cluster)?.balancer.borrow().key(endpoint)?;
        let name = plan.snapshot.clusters.get(cluster)?.name.as_str();
        let cluster = current.snapshot.cluster_index(name)?;
        let endpoint = current.clusters.get(cluster)?.balancer.borrow().index_of(key)?;
        Some(at(&current, cluster, endpoint))
    }

    /// Report a finished upstream exchange to the balancer that now owns the
    /// endpoint, with the latency it measured if it measured one.
    pub fn record(&self, plan: &Plan, cluster: usize, endpoint: usize, rtt: Option<Duration>) {
        self.at_current_place(plan, cluster, endpoint, |current, cluster, endpoint| {
            if let Some(state) = current.clusters.get(cluster) {
                let mut balancer = state.balancer.borrow_mut();
                match rtt {
                    Some(rtt) => balancer.on_end(endpoint, rtt, Instant::now()),
                    None => balancer.on_abandon(endpoint),
                }
            }
        });
    }

    /// Feed one try's result to outlier detection and the endpoint breaker
    /// that now watch the endpoint. `failure` is what went wrong before a
    /// response, else `status` counts.
    pub fn observe_result(&self, plan: &Plan, cluster: usize, endpoint: usize, failure: Option<Outcome>, status: u16) {
        self.at_current_place(plan, cluster, endpoint, |current, cluster, endpoint| {
            self.observe_at(current, cluster, endpoint, failure, status);
        });
    }

    fn observe_at(&self, current: &Plan, cluster: usize, endpoint: usize, failure: Option<Outcome>, status: u16) {
        let Some(state) = current.clusters.get(cluster) else {
            return;
        };
        if state.guards.outlier.is_none() && state.guards.breakers.is_none() {
            return; // nothing to learn: skip the clock read too
        }
        let now = Instant::now();
        let outcome = failure.unwrap_or(Outcome::Status(status));
        if let Some(outlier) = &state.guards.outlier {
            if outlier.borrow_mut().record(endpoint, outcome, now) {
                state.down_epoch.set(state.down_epoch.get() + 1);
                if let Some(key) = current.keys.endpoint(cluster, endpoint) {
                    self.metrics.borrow_mut().ejection(key);
                }
            }
        }
        if let Some(breakers) = &state.guards.breakers {
            let success = failure.is_none() && status < 500;
            if let Some(b) = breakers.borrow_mut().get_mut(endpoint) {
                let was_open = b.state() == BreakerState::Open;
                b.on_result(now, success);
                if (b.state() == BreakerState::Open) != was_open {
                    state.down_epoch.set(state.down_epoch.get() + 1);
                }
            }
        }
    }

    /// Every plan still in use: superseded ones that something holds, oldest
    /// first, then the current one. Forgets the superseded plans that are gone.
    fn live_plans(&self) -> Vec<Rc<Plan>> {
        let mut superseded = self.superseded.borrow_mut();
        superseded.retain(|plan| plan.strong_count() > 0);
        let mut live: Vec<Rc<Plan>> = superseded.iter().filter_map(Weak::upgrade).collect();
        live.push(self.plan.borrow().clone());
        live
    }

    /// Feed an L4 connection attempt to outlier detection and the endpoint
    /// breaker: one that connected counts as a success (it resets the
    /// consecutive-failure counts, as a non-5xx answer does).
    pub fn observe_connect(&self, plan: &Plan, cluster: usize, endpoint: usize, connected: bool) {
        let failure = (!connected).then_some(Outcome::ConnectFailure);
        // No HTTP status on L4: 0 stands for "no 5xx" once connected.
        self.observe_result(plan, cluster, endpoint, failure, 0);
    }

    /// Drop the metric series of listeners, routes, clusters and endpoints
    /// that no plan in use refers to: one removed by a reload (or, for
    /// endpoints, discovery) leaves the scrape once the requests and
    /// connections that began with it are done.
    pub fn release_removed_series(&self) {
        let live = self.live_plans();
        let mut metrics = self.metrics.borrow_mut();
        // Listeners first: the unrouted series of those released go with
        // the routes.
        metrics.retain_listeners(live.iter().flat_map(|plan| plan.keys.listeners.iter().copied()));
        let routes = live
            .iter()
            .flat_map(|plan| plan.keys.routes.iter().flatten().flatten().map(|&(_, key)| key));
        metrics.retain_routes(routes);
        let endpoints = live
            .iter()
            .flat_map(|plan| plan.keys.endpoints.iter().flatten().copied());
        metrics.retain_endpoints(endpoints);
        metrics.retain_clusters(live.iter().flat_map(|plan| plan.keys.clusters.iter().copied()));
    }

    /// Copy each endpoint's open upstream connections into the metric shard,
    /// removed endpoints' too while a plan still holds them. The current plan
    /// goes last: an endpoint in several plans shares one pool anyway.
    pub fn report_open_connections(&self) {
        let live = self.live_plans();
        let mut metrics = self.metrics.borrow_mut();
        for plan in &live {
            for (c, state) in plan.clusters.iter().enumerate() {
                for (e, pool) in state.pools.iter().enumerate() {
                    if let Some(key) = plan.keys.endpoint(c, e) {
                        metrics.set_upstream_active(key, pool.open_connections());
                    }
                }
            }
        }
    }

    /// Each endpoint's state on this worker (GET /clusters): its outlier
    /// ejection, breaker, latency estimate and requests in flight.
    pub fn endpoint_views(&self) -> Vec<EndpointView> {
        let plan = self.plan.borrow().clone();
        let now = Instant::now();
        let mut views = Vec::new();
        for (cluster, state) in plan.snapshot.clusters.iter().zip(plan.clusters.iter()) {
            let balancer = state.balancer.borrow();
            let outlier = state.guards.outlier.as_ref().map(|o| o.borrow());
            let breakers = state.guards.breakers.as_ref().map(|b| b.borrow());
            for (i, endpoint) in cluster.endpoints.iter().enumerate() {
                views.push(EndpointView {
                    cluster: cluster.name.clone(),
                    address: endpoint.address,
                    ejected: outlier.as_ref().is_some_and(|o| o.is_ejected(i, now)),
                    breaker: breakers.as_ref().and_then(|b| b.get(i)).map(|b| b.state_at(now)),
                    ewma_ms: balancer.observed(i).then(|| balancer.ewma_ms(i, now)),
                    active: balancer.outstanding(i),
                });
            }
        }
        views
    }

    /// Copy the state of this worker's endpoint breakers into the metric shard.
    pub fn report_breakers(&self) {
        let plan = self.plan.borrow().clone();
        let now = Instant::now();
        let mut states = Vec::new();
        for (c, state) in plan.clusters.iter().enumerate() {
            if state.guards.breakers.is_none() {
                continue;
            }
            let cluster = &plan.snapshot.clusters[c];
            for (e, endpoint) in cluster.endpoints.iter().enumerate() {
                states.push((
                    cluster.name.clone(),
                    endpoint.address.to_string(),
                    state.guards.breaker_open(e, now),
                ));
            }
        }
        self.metrics.borrow_mut().set_breakers(states);
    }

    /// An endpoint picked with health ignored (panic mode).
    pub fn count_panic(&self, plan: &Plan, cluster: usize) {
        if let Some(key) = plan.keys.clusters.get(cluster) {
            self.metrics.borrow_mut().panic(*key);
        }
    }

    pub fn count_tls_handshake_failure(&self, plan: &Plan, listener: usize) {
        if let Some(key) = plan.keys.listeners.get(listener) {
            self.metrics.borrow_mut().downstream_tls_handshake_failed(*key);
        }
    }

    pub fn count_overflow(&self, plan: &Plan, cluster: usize) {
        if let Some(key) = plan.keys.clusters.get(cluster) {
            self.metrics.borrow_mut().overflow(*key);
        }
    }

    /// A retry made, or refused by the retry budget.
    pub fn count_retry(&self, plan: &Plan, listener: usize, route: usize, cluster: usize, made: bool) {
        if let Some(key) = plan.keys.route(listener, route, cluster) {
            let mut metrics = self.metrics.borrow_mut();
            if made {
                metrics.retry(key);
            } else {
                metrics.retry_budget_exhausted(key);
            }
        }
    }

    pub fn count_faults(&self, plan: &Plan, listener: usize, route: usize, cluster: usize, fault: Injected) {
        if let Some(key) = plan.keys.route(listener, route, cluster) {
            self.metrics
                .borrow_mut()
                .fault_injected(key, fault.delay.is_some(), fault.abort.is_some());
        }
    }

    /// A listener's rate limit refused a request (before any route).
    pub fn count_listener_ratelimited(&self, plan: &Plan, listener: usize) {
        if let Some(key) = plan.keys.listeners.get(listener) {
            self.metrics.borrow_mut().listener_ratelimited(*key);
        }
    }

    pub fn count_ratelimited(&self, plan: &Plan, listener: usize, route: usize, cluster: usize) {
        if let Some(key) = plan.keys.route(listener, route, cluster) {
            self.metrics.borrow_mut().ratelimited(key);
        }
    }

    /// Close pooled connections that idled past their timeout or outlived
    /// their max_connection_duration.
    pub fn sweep_pools(&self) {
        let now = Instant::now();
        for pool in self.pools.borrow().values() {
            pool.sweep(now);
        }
    }

    /// Hand the buffered access log lines to the writer thread. Never blocks:
    /// when the writer is behind, the batch is dropped and counted.
    pub fn flush_log(&self) {
        let mut log = self.log.borrow_mut();
        if log.is_empty() {
            return;
        }
        let lines = log.take();
        if let Err(
            flume::TrySendError::Full(LogMessage::Lines(lines))
            | flume::TrySendError::Disconnected(LogMessage::Lines(lines)),
        ) = self.shared.log_writer.lines.try_send(LogMessage::Lines(lines))
        {
            log.count_dropped_batch(&lines);
        }
    }

    pub fn close_idle_pools(&self) {
        for pool in self.pools.borrow().values() {
            pool.clear();
        }
    }
}

/// Counts a client connection on its worker and in the process-wide total.
pub struct ConnectionGuard {
    worker: Rc<Worker>,
    counter: Arc<AtomicUsize>,
    /// The listener's series in this worker's metric shard.
    listener: ListenerKey,
}

impl ConnectionGuard {
    /// None when the listener's `max_connections` is reached.
    pub fn open(
        worker: &Rc<Worker>,
        counter: Arc<AtomicUsize>,
        cap: Option<usize>,
        listener: ListenerKey,
    ) -> Option<ConnectionGuard> {
        let before = counter.fetch_add(1, Ordering::Relaxed);
        if cap.is_some_and(|cap| before >= cap) {
            counter.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        worker.connections.set(worker.connections.get() + 1);
        worker.metrics.borrow_mut().downstream_cx_opened(listener);
        Some(ConnectionGuard {
            worker: worker.clone(),
            counter,
            listener,
        })
    }
}

impl ConnectionGuard {
    pub fn worker(&self) -> &Worker {
        &self.worker
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.worker.connections.set(self.worker.connections.get() - 1);
        self.counter.fetch_sub(1, Ordering::Relaxed);
        self.worker.metrics.borrow_mut().downstream_cx_closed(self.listener);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(protocol: &str) -> ConnectionTerms {
        let route = if protocol == "tcp" {
            "cluster = \"c\""
        } else {
            "[[listener.route]]\ncluster = \"c\""
        };
        let toml = format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\nprotocol = \"{protocol}\"\n{route}\n\
             [[cluster]]\nname = \"c\"\nendpoints = [{{ address = \"127.0.0.1:1001\" }}]\n"
        );
        crate::config::parse(&toml, "t", 1).expect("valid").listeners[0].connection_terms()
    }

    #[test]
    fn retire_changed_cuts_other_terms_and_forgets_the_gone() {
        let (http, tcp) = (terms("http"), terms("tcp"));
        assert_ne!(http, tcp);
        let same = Rc::new(Retirement::default());
        let other = Rc::new(Retirement::default());
        let gone = Rc::new(Retirement::default());
        let mut moved: MovedAway = vec![
            (http.clone(), Rc::downgrade(&same)),
            (tcp.clone(), Rc::downgrade(&other)),
            (http.clone(), Rc::downgrade(&gone)),
        ];
        drop(gone);
        retire_changed(&mut moved, &http);
        assert!(!same.terms_changed(), "admitted under the terms in force");
        assert!(other.terms_changed(), "admitted under other terms");
        assert_eq!(moved.len(), 1, "only the one still under the terms in force is kept");
    }
}
