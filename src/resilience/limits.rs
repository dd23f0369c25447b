//! Process-wide caps on a cluster's connections, pending requests, active requests
//! and active retries (Envoy's circuit-breaker thresholds), stated once and held for
//! the whole process (DESIGN.md §1) without a contended atomic per request.
//!
//! # Model: per-worker leases from a shared pool
//!
//! [`SharedLimits`] holds one pool of free permits per [`LimitKind`] (an `AtomicI64`,
//! `max − permits out`). Each worker's [`Leases`] keeps a few free permits in a local
//! cache: [`Leases::try_acquire`] takes one from the cache (a `Cell` decrement) and,
//! only when the cache is empty, takes up to a batch from the pool with one CAS.
//! Dropping the [`Permit`] puts it back in the cache; a cache above one batch trims
//! itself to half a batch with one `fetch_add`.
//!
//! # What it costs, and the trade-off
//!
//! - Never over the cap: a permit is handed out only after leaving the pool, so the
//!   permits in use across the process never exceed `max`.
//! - Refusal slack: a worker can be refused while other workers' caches hold free
//!   permits, at most one batch each. `batch = max / (100 · workers)`, so the slack is
//!   at most 1% of `max`, whatever the traffic pattern.
//! - Per request, usually a local decrement and increment; the pool sees one atomic
//!   per half batch of acquisitions or releases on a worker.
//! - Below `max = 100 · workers` a batch would round to 0: there every acquire is a
//!   CAS and every release a `fetch_add` on the pool, uncached. That is the one
//!   correct option for small caps: any cache could strand a large share of them (a
//!   `max_retries` of 3 cached one-per-worker on three idle workers blocks the other
//!   thirteen), and a small cap also bounds how many requests can race on it. The cost
//!   is one shared read-modify-write each way, tens of nanoseconds when contended.
//!
//! A config swap calls [`SharedLimits::set`], which moves each pool by the change in
//! `max`, so permits held across the swap still count and the cap is never doubled.

use std::{
    cell::Cell,
    rc::Rc,
    sync::{
        atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

/// The four capped resources of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Open upstream connections.
    Connections,
    /// Requests waiting for a connection.
    Pending,
    /// Requests in flight to the cluster.
    Requests,
    /// Retries in flight to the cluster.
    Retries,
}

impl LimitKind {
    pub const ALL: [LimitKind; 4] = [
        LimitKind::Connections,
        LimitKind::Pending,
        LimitKind::Requests,
        LimitKind::Retries,
    ];

    /// For metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitKind::Connections => "connections",
            LimitKind::Pending => "pending",
            LimitKind::Requests => "requests",
            LimitKind::Retries => "retries",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// A cluster's caps (`circuit_breaker = { ... }` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClusterLimits {
    pub max_connections: u32,
    pub max_pending: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for ClusterLimits {
    /// Envoy's defaults.
    fn default() -> Self {
        ClusterLimits {
            max_connections: 1024,
            max_pending: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

impl ClusterLimits {
    pub const fn get(&self, kind: LimitKind) -> u32 {
        match kind {
            LimitKind::Connections => self.max_connections,
            LimitKind::Pending => self.max_pending,
            LimitKind::Requests => self.max_requests,
            LimitKind::Retries => self.max_retries,
        }
    }
}

/// Permits a worker caches at once for a cap of `max` shared by `workers` workers.
fn batch(max: u32, workers: usize) -> u32 {
    let per_worker = u64::from(max) / 100 / u64::try_from(workers.max(1)).unwrap_or(u64::MAX);
    u32::try_from(per_worker).unwrap_or(u32::MAX)
}

#[derive(Debug)]
struct Pool {
    /// Permits not out: `max` minus permits in use and in worker caches. Negative
    /// after `max` shrank below what was out.
    free: AtomicI64,
    max: AtomicU64,
    batch: AtomicU32,
}

impl Pool {
    /// Takes up to `want` (≥ 1) permits; how many it got.
    fn take(&self, want: u32) -> u32 {
        let mut free = self.free.load(Relaxed);
        loop {
            if free <= 0 {
                return 0;
            }
            let n = free.min(i64::from(want.max(1)));
            match self.free.compare_exchange_weak(free, free - n, Relaxed, Relaxed) {
                Ok(_) => return u32::try_from(n).unwrap_or(0),
                Err(current) => free = current,
            }
        }
    }

    fn put(&self, n: u32) {
        if n > 0 {
            self.free.fetch_add(i64::from(n), Relaxed);
        }
    }
}

/// The process-wide pools of one cluster's caps; share as `Arc<SharedLimits>`.
#[derive(Debug)]
pub struct SharedLimits {
    pools: [Pool; 4],
    workers: usize,
}

impl SharedLimits {
    pub fn new(limits: ClusterLimits, workers: usize) -> Self {
        let pool = |kind| {
            let max = limits.get(kind);
            Pool {
                free: AtomicI64::new(i64::from(max)),
                max: AtomicU64::new(u64::from(max)),
                batch: AtomicU32::new(batch(max, workers)),
            }
        };
        SharedLimits {
            pools: LimitKind::ALL.map(pool),
            workers,
        }
    }

    /// New caps (a config swap): each pool moves by the change in `max`, so permits
    /// already out keep counting. Meant for the one thread that publishes config.
    pub fn set(&self, limits: ClusterLimits) {
        for kind in LimitKind::ALL {
            let pool = &self.pools[kind.index()];
            let max = limits.get(kind);
            let old = pool.max.swap(u64::from(max), Relaxed);
            pool.batch.store(batch(max, self.workers), Relaxed);
            pool.free
                .fetch_add(i64::from(max) - i64::try_from(old).unwrap_or(i64::MAX), Relaxed);
        }
    }

    pub fn max(&self, kind: LimitKind) -> u32 {
        u32::try_from(self.pools[kind.index()].max.load(Relaxed)).unwrap_or(u32::MAX)
    }

    /// Permits in the shared pool: not in use and not cached by any worker.
    pub fn free(&self, kind: LimitKind) -> i64 {
        self.pools[kind.index()].free.load(Relaxed)
    }

    /// Permits a worker caches at once (0: no caching, see the module docs).
    pub fn batch(&self, kind: LimitKind) -> u32 {
        self.pools[kind.index()].batch.load(Relaxed)
    }
}

/// One worker's leases on a cluster's [`SharedLimits`]. Cheap to clone (an `Rc`);
/// stays on its worker (not `Send`).
#[derive(Clone, Debug)]
pub struct Leases {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<SharedLimits>,
    /// Free permits cached on this worker, per kind.
    idle: [Cell<u32>; 4],
}

impl Inner {
    fn release(&self, kind: LimitKind) {
        let idle = &self.idle[kind.index()];
        let n = idle.get() + 1;
        let batch = self.shared.batch(kind);
        if n > batch {
            let keep = batch.div_ceil(2);
            self.shared.pools[kind.index()].put(n - keep);
            idle.set(keep);
        } else {
            idle.set(n);
        }
    }

    fn flush(&self) {
        for kind in LimitKind::ALL {
            self.shared.pools[kind.index()].put(self.idle[kind.index()].replace(0));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Leases {
    pub fn new(shared: Arc<SharedLimits>) -> Self {
        Leases {
            inner: Rc::new(Inner {
                shared,
                idle: Default::default(),
            }),
        }
    }

    pub fn shared(&self) -> &Arc<SharedLimits> {
        &self.inner.shared
    }

    /// A permit for one unit of `kind`, or `None` when the cluster is at its cap
    /// (the pipeline answers 503 "overloaded"). Dropping the permit releases it.
    pub fn try_acquire(&self, kind: LimitKind) -> Option<Permit> {
        let idle = &self.inner.idle[kind.index()];
        match idle.get() {
            0 => {
                let want = self.inner.shared.batch(kind).max(1);
                let got = self.inner.shared.pools[kind.index()].take(want);
                idle.set(got.checked_sub(1)?);
            }
            n => idle.set(n - 1),
        }
        Some(Permit {
            leases: self.inner.clone(),
            kind,
        })
    }

    /// Free permits cached on this worker.
    pub fn idle(&self, kind: LimitKind) -> u32 {
        self.inner.idle[kind.index()].get()
    }

    /// Whether `try_acquire(kind)` would succeed now (nothing is taken).
    pub fn can_acquire(&self, kind: LimitKind) -> bool {
        self.idle(kind) > 0 || self.inner.shared.free(kind) > 0
    }

    /// Returns every cached permit to the shared pools (drain, idle maintenance).
    pub fn flush(&self) {
        self.inner.flush();
    }
}

/// One unit of a capped resource, released on drop.
#[must_use = "dropping a permit releases it at once"]
#[derive(Debug)]
pub struct Permit {
    leases: Rc<Inner>,
    kind: LimitKind,
}

impl Permit {
    pub fn kind(&self) -> LimitKind {
        self.kind
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.leases.release(self.kind);
    }
}

#[cfg(test)]
mod tests;
