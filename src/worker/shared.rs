//! What crosses threads: the published config snapshot (lock-free, with a
//! generation counter workers check with one relaxed load), per-worker
//! "generation in use" marks for readiness, process-wide connection counts,
//! and the reload and discovery counters the control side keeps.

use super::guards::Registry;
use super::plan::{compile_routes, RouteTables};
use crate::config::Snapshot;
use crate::health::HealthTable;
use crate::telemetry::LogWriter;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct Shared {
    current: ArcSwap<Snapshot>,
    /// Route tables compiled for a generation, shared by every worker.
    routes: ArcSwap<(u64, Option<RouteTables>)>,
    /// Endpoint health published by the health-check thread.
    pub health: Arc<HealthTable>,
    /// Process-wide rate-limit reservoirs and cluster caps, kept across swaps.
    pub registry: Registry,
    /// Where workers send their access log batches, and the log's control.
    pub log_writer: LogWriter,
    generation: AtomicU64,
    /// The generation each worker is serving, for /ready and reload waits.
    in_use: Vec<AtomicU64>,
    draining: AtomicBool,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    cert_rotations_ok: AtomicU64,
    cert_rotations_failed: AtomicU64,
    /// Discovery looks by (cluster, result). Only the discovery thread writes
    /// and only scrapes and tests read, so a lock costs nothing on the data path.
    discovery_refreshes: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Open client connections per listener address, shared so `max_connections`
    /// holds for the whole process. Looked up when an accept loop starts,
    /// never per connection.
    connections: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
}

impl Shared {
    pub fn new(snapshot: Snapshot, workers: usize, log_writer: LogWriter) -> Self {
        let generation = snapshot.generation;
        Shared {
            routes: ArcSwap::from_pointee((generation, compile_routes(&snapshot).ok())),
            current: ArcSwap::from_pointee(snapshot),
            health: Arc::new(HealthTable::default()),
            log_writer,
            registry: Registry::default(),
            generation: AtomicU64::new(generation),
            in_use: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            draining: AtomicBool::new(false),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            cert_rotations_ok: AtomicU64::new(0),
            cert_rotations_failed: AtomicU64::new(0),
            discovery_refreshes: Mutex::new(BTreeMap::new()),
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Publish a new snapshot; its generation must be above the current one.
    /// Its route tables are compiled here, once, before workers see it.
    pub fn publish(&self, snapshot: Snapshot) {
        let generation = snapshot.generation;
        self.routes
            .store(Arc::new((generation, compile_routes(&snapshot).ok())));
        self.current.store(Arc::new(snapshot));
        self.generation.store(generation, Ordering::Release);
    }

    /// The route tables compiled for `generation`, if they are at hand.
    pub fn route_tables(&self, generation: u64) -> Option<RouteTables> {
        let routes = self.routes.load();
        if routes.0 == generation {
            routes.1.clone()
        } else {
            None
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Number of workers (process-wide limits are split between them).
    pub fn workers(&self) -> usize {
        self.in_use.len()
    }

    pub fn mark_in_use(&self, worker: usize, generation: u64) {
        if let Some(slot) = self.in_use.get(worker) {
            slot.store(generation, Ordering::Release);
        }
    }

    /// True once every worker serves the current generation and no drain began.
    pub fn ready(&self) -> bool {
        let g = self.generation.load(Ordering::Acquire);
        !self.is_draining() && self.in_use.iter().all(|w| w.load(Ordering::Acquire) == g)
    }

    pub fn count_reload(&self, ok: bool) {
        let counter = if ok { &self.reloads_ok } else { &self.reloads_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads applied and refused so far.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }

    /// A listener's or cluster's TLS settings rebuilt from changed files.
    pub fn count_cert_rotation(&self, ok: bool) {
        let counter = if ok {
            &self.cert_rotations_ok
        } else {
            &self.cert_rotations_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Certificate rotations applied and failed so far.
    pub fn cert_rotations(&self) -> (u64, u64) {
        (
            self.cert_rotations_ok.load(Ordering::Relaxed),
            self.cert_rotations_failed.load(Ordering::Relaxed),
        )
    }

    /// Record one discovery look at `cluster`'s source (`result` is one of
    /// `discovery::RESULTS`).
    pub fn count_discovery_refresh(&self, cluster: &str, result: &'static str) {
        *self
            .discovery_counts()
            .entry((cluster.to_string(), result))
            .or_default() += 1;
    }

    /// Every discovery count so far, as (cluster, result, count).
    pub fn discovery_refresh_counts(&self) -> Vec<(String, &'static str, u64)> {
        let counts = self.discovery_counts();
        counts.iter().map(|((c, r), n)| (c.clone(), *r, *n)).collect()
    }

    /// Discovery looks at `cluster`'s source that ended in `result`.
    pub fn discovery_refreshes(&self, cluster: &str, result: &str) -> u64 {
        let counts = self.discovery_counts();
        counts
            .iter()
            .find(|((c, r), _)| c == cluster && *r == result)
            .map_or(0, |(_, n)| *n)
    }

    /// The counts stay usable even if a thread panicked holding the lock:
    /// each update is a single add.
    fn discovery_counts(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, &'static str), u64>> {
        self.discovery_refreshes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The process-wide open-connection counter of the listener on
    /// `address` (which a rename keeps).
    pub fn connection_counter(&self, address: SocketAddr) -> Arc<AtomicUsize> {
        let mut map = self.connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(address).or_default().clone()
    }
}
