//! Active health checking. One control thread probes every endpoint of every
//! cluster that has a `health_check` (once per process, not per core) and
//! publishes the result in a `HealthTable`: one atomic flag per endpoint that
//! workers resolve when they build a plan and then read with a relaxed load
//! per pick. No lock is taken on the request path.

mod checker;

pub use checker::spawn_checker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The published health of one endpoint of one cluster.
#[derive(Debug)]
pub struct EndpointHealth {
    healthy: AtomicBool,
}

impl EndpointHealth {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct HealthTable {
    entries: Mutex<HashMap<(String, SocketAddr), Arc<EndpointHealth>>>,
    /// Bumped on every change, so readers can cache what they derive from it.
    version: AtomicU64,
}

impl HealthTable {
    /// The flag of an endpoint, created healthy (optimistic until checks say
    /// otherwise, so a restart does not make every endpoint unavailable).
    pub fn handle(&self, cluster: &str, addr: SocketAddr) -> Arc<EndpointHealth> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .entry((cluster.to_string(), addr))
            .or_insert_with(|| {
                Arc::new(EndpointHealth {
                    healthy: AtomicBool::new(true),
                })
            })
            .clone()
    }

    /// Record a health transition; returns whether it changed anything.
    pub fn set(&self, cluster: &str, addr: SocketAddr, healthy: bool) -> bool {
        let flag = self.handle(cluster, addr);
        let changed = flag.healthy.swap(healthy, Ordering::Relaxed) != healthy;
        if changed {
            self.version.fetch_add(1, Ordering::Release);
        }
        changed
    }

    /// Forget endpoints no longer `checked`, once no worker's plan holds
    /// their flag: a flag dropped while held would leave that worker reading
    /// a copy nobody updates, should the endpoint come back before its next
    /// plan (its check, restarted, would publish into a new flag).
    pub fn retain(&self, checked: impl Fn(&(String, SocketAddr)) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|key, flag| checked(key) || Arc::strong_count(flag) > 1);
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Every endpoint with a flag and its health, for /clusters and
    /// /metrics. A flag outlives its endpoint's removal while a plan holds
    /// it (a long-lived relay's, say), so report those of the config in
    /// force only.
    pub fn all(&self) -> Vec<(String, SocketAddr, bool)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = entries
            .iter()
            .map(|((c, a), h)| (c.clone(), *a, h.is_healthy()))
            .collect();
        all.sort();
        all
    }
}

/// Consecutive-result thresholds: a pure state machine, one per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy: bool,
    successes: u32,
    failures: u32,
    /// A result came in: thresholds apply from then on.
    checked: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            healthy: true,
            successes: 0,
            failures: 0,
            checked: true,
        }
    }
}

impl Thresholds {
    /// Continue from a known state (a restarted check keeps what was published).
    pub fn starting(healthy: bool) -> Self {
        Thresholds {
            healthy,
            ..Thresholds::default()
        }
    }

    /// An endpoint not checked yet, published as `healthy` (healthy, unless
    /// a worker still holds the flag of an earlier check): its first
    /// result decides at once either way, so that one down when the check
    /// starts leaves after one check rather than `unhealthy_threshold`.
    pub fn unchecked(healthy: bool) -> Self {
        Thresholds {
            healthy,
            checked: false,
            ..Thresholds::default()
        }
    }

    /// Feed one check result; returns the new health when it flipped.
    pub fn observe(&mut self, ok: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> Option<bool> {
        if !self.checked {
            self.checked = true;
            let flipped = self.healthy != ok;
            *self = Thresholds {
                healthy: ok,
                successes: u32::from(ok),
                failures: u32::from(!ok),
                checked: true,
            };
            return flipped.then_some(ok);
        }
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if !self.healthy && self.successes >= healthy_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.healthy && self.failures >= unhealthy_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_need_consecutive_results() {
        let mut t = Thresholds::default();
        assert_eq!(t.observe(false, 2, 3), None);
        assert_eq!(t.observe(false, 2, 3), None);
        assert_eq!(t.observe(true, 2, 3), None, "a success resets the failure run");
        assert_eq!(t.observe(false, 2, 3), None);
        assert_eq!(t.observe(false, 2, 3), None);
        assert_eq!(t.observe(false, 2, 3), Some(false), "third consecutive failure");
        assert_eq!(t.observe(false, 2, 3), None, "already unhealthy");
        assert_eq!(t.observe(true, 2, 3), None);
        assert_eq!(t.observe(true, 2, 3), Some(true), "second consecutive success");
    }

    #[test]
    fn the_first_result_decides_then_thresholds_apply() {
        let mut down = Thresholds::unchecked(true);
        assert_eq!(down.observe(false, 2, 3), Some(false), "one failure at start");
        assert_eq!(down.observe(true, 2, 3), None);
        assert_eq!(down.observe(true, 2, 3), Some(true), "back after healthy_threshold");
        let mut up = Thresholds::unchecked(true);
        assert_eq!(up.observe(true, 2, 3), None, "healthy already");
        assert_eq!(up.observe(false, 2, 3), None);
        assert_eq!(up.observe(false, 2, 3), None);
        assert_eq!(up.observe(false, 2, 3), Some(false), "then unhealthy_threshold");
        let mut published_down = Thresholds::unchecked(false);
        assert_eq!(
            published_down.observe(true, 2, 3),
            Some(true),
            "the first result decides"
        );
    }

    #[test]
    fn table_publishes_and_versions_changes() {
        let table = HealthTable::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let handle = table.handle("c", addr);
        assert!(handle.is_healthy());
        let v = table.version();
        assert!(table.set("c", addr, false));
        assert!(!handle.is_healthy(), "the worker's handle sees the change");
        assert!(table.version() > v);
        assert!(!table.set("c", addr, false), "no change, no new version");
        table.retain(|_| false);
        assert!(
            table.set("c", addr, true),
            "the flag a worker holds stays the published one"
        );
        assert!(handle.is_healthy());
        drop(handle);
        table.retain(|_| false);
        assert!(table.all().is_empty());
    }
}
