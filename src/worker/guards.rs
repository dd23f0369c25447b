//! The resilience state a worker keeps per route and per cluster, built with
//! each plan: rate limiters (drawing from process-wide reservoirs), cluster
//! caps (leases on process-wide permit pools), outlier detection, endpoint
//! breakers and the retry budget. Process-wide pieces live in the `Registry`
//! so a config swap keeps them (no second burst, no doubled caps); per-worker
//! pieces carry their per-endpoint state over by endpoint key.

use crate::addr_text::IpText;
use crate::config::{self, RateKey};
use crate::resilience::{
    BreakerConfig, BreakerState, ClusterLimits, EndpointBreaker, KeyedLimiter, KeyedReservoir, Leases, LocalBucket,
    OutlierConfig, OutlierDetector, RateLimit, Reservoir, RetryBudget, RetryBudgetConfig, SharedLimits,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Process-wide limiter state, looked up when workers build plans (never per
/// request) and kept across swaps while the settings stay the same.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    /// Process-wide buckets: rate limits' and retry floors', by id.
    reservoirs: HashMap<String, (RateLimit, Arc<Reservoir>)>,
    keyed: HashMap<String, (config::RateLimit, Arc<KeyedReservoir>)>,
    limits: HashMap<String, Arc<SharedLimits>>,
}

impl Registry {
    /// The process-wide bucket `id`, kept across swaps while its rate stays.
    fn reservoir(&self, id: &str, limit: RateLimit, workers: usize) -> Arc<Reservoir> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.reservoirs.get(id) {
            Some((settings, r)) if *settings == limit => r.clone(),
            _ => {
                let r = Arc::new(Reservoir::new(limit, workers, Instant::now()));
                inner.reservoirs.insert(id.to_string(), (limit, r.clone()));
                r
            }
        }
    }

    fn keyed(&self, id: &str, limit: &config::RateLimit, workers: usize) -> Arc<KeyedReservoir> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.keyed.get(id) {
            Some((settings, r)) if settings == limit => r.clone(),
            _ => {
                let slots = limit.max_keys.next_power_of_two().max(64);
                let rate = RateLimit::milli(limit.milli_rps, limit.burst);
                let r = Arc::new(KeyedReservoir::new(rate, slots, workers, Instant::now()));
                inner.keyed.insert(id.to_string(), (limit.clone(), r.clone()));
                r
            }
        }
    }

    /// The cluster's process-wide retry floor: one bucket for every worker.
    fn retry_floor(&self, cluster: &str, cfg: &RetryBudgetConfig, workers: usize) -> Option<Arc<Reservoir>> {
        let floor = cfg.floor()?;
        Some(self.reservoir(&format!("retry-floor/{cluster}"), floor, workers))
    }

    fn limits(&self, cluster: &str, caps: ClusterLimits, workers: usize) -> Arc<SharedLimits> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let shared = inner
            .limits
            .entry(cluster.to_string())
            .or_insert_with(|| Arc::new(SharedLimits::new(caps, workers)));
        shared.set(caps);
        shared.clone()
    }
}

/// A worker's view of one rate limit.
pub enum Limiter {
    All(RefCell<LocalBucket>),
    Keyed {
        key: RateKey,
        limiter: RefCell<KeyedLimiter>,
    },
}

/// The bytes a keyed rate limit counts a request under, borrowed from the
/// request or formatted on the stack: admitting allocates nothing.
pub enum RateKeyBytes<'a> {
    Client(IpText),
    Field(&'a [u8]),
    /// A field sent on several lines: their combined value.
    Joined(Vec<u8>),
}

impl AsRef<[u8]> for RateKeyBytes<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            RateKeyBytes::Client(text) => text.as_bytes(),
            RateKeyBytes::Field(bytes) => bytes,
            RateKeyBytes::Joined(bytes) => bytes,
        }
    }
}

impl<'a> RateKeyBytes<'a> {
    /// The key of a field, from its lines (none when it is absent): a
    /// field on several lines keys by its combined value (RFC 9110 §5.3),
    /// copied out only then.
    pub fn of_field(mut lines: impl Iterator<Item = &'a [u8]>) -> RateKeyBytes<'a> {
        match (lines.next(), lines.next()) {
            (first, None) => RateKeyBytes::Field(first.unwrap_or_default()),
            (first, Some(second)) => {
                let mut joined = first.unwrap_or_default().to_vec();
                for line in std::iter::once(second).chain(lines) {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(line);
                }
                RateKeyBytes::Joined(joined)
            }
        }
    }
}

impl Limiter {
    pub fn build(registry: &Registry, id: &str, limit: &config::RateLimit, workers: usize) -> Limiter {
        match &limit.key {
            RateKey::All => Limiter::All(RefCell::new(LocalBucket::new(registry.reservoir(
                id,
                RateLimit::milli(limit.milli_rps, limit.burst),
                workers,
            )))),
            key => Limiter::Keyed {
                key: key.clone(),
                limiter: RefCell::new(KeyedLimiter::new(registry.keyed(id, limit, workers), limit.max_keys)),
            },
        }
    }

    /// Admit one request (`key` picks the bucket of keyed limits), or say
    /// how long until one would be admitted.
    pub fn admit<'a>(&self, key: impl Fn(&RateKey) -> RateKeyBytes<'a>, now: Instant) -> Result<(), Duration> {
        match self {
            Limiter::All(bucket) => {
                let mut bucket = bucket.borrow_mut();
                if bucket.try_acquire(now) {
                    Ok(())
                } else {
                    Err(bucket.retry_after(now))
                }
            }
            Limiter::Keyed { key: which, limiter } => {
                let key = key(which);
                let mut limiter = limiter.borrow_mut();
                if limiter.try_acquire(key.as_ref(), now) {
                    Ok(())
                } else {
                    Err(limiter.retry_after(key.as_ref(), now))
                }
            }
        }
    }
}

/// A worker's fault-handling state for one cluster.
pub struct ClusterGuards {
    pub leases: Option<Leases>,
    pub outlier: Option<RefCell<OutlierDetector>>,
    /// Per endpoint, aligned with the cluster's endpoints.
    pub breakers: Option<RefCell<Vec<EndpointBreaker>>>,
    pub budget: RefCell<RetryBudget>,
    /// Endpoint keys the per-endpoint state is aligned with.
    keys: Vec<u64>,
}

impl ClusterGuards {
    pub fn build(
        registry: &Registry,
        cluster: &config::Cluster,
        keys: &[u64],
        previous: Option<&ClusterGuards>,
        workers: usize,
        now: Instant,
    ) -> ClusterGuards {
        let leases = cluster.circuit_breaker.as_ref().map(|b| {
            let caps = ClusterLimits {
                max_connections: b.max_connections,
                max_pending: b.max_pending,
                max_requests: b.max_requests,
                max_retries: b.max_retries,
            };
            let shared = registry.limits(&cluster.name, caps, workers);
            // The same process-wide pools: keep this worker's cache of
            // permits, which a new cache would strand in the old one for as
            // long as a pooled connection holds one of its permits.
            match previous.and_then(|p| p.leases.as_ref()) {
                Some(old) if Arc::ptr_eq(old.shared(), &shared) => old.clone(),
                _ => Leases::new(shared),
            }
        });
        let outlier = cluster.outlier.as_ref().map(|o| {
            let cfg = OutlierConfig {
                consecutive_5xx: o.consecutive_5xx,
                consecutive_connect_failures: o.consecutive_connect_failures,
                base_ejection: o.base_ejection,
                max_ejection: o.max_ejection,
                max_ejection_percent: o.max_ejection_percent,
            };
            let detector = match previous.and_then(|p| p.outlier.as_ref()) {
                Some(old) => old.borrow().rebuild(cfg, keys, now),
                None => OutlierDetector::new(cfg, keys),
            };
            RefCell::new(detector)
        });
        let breakers = cluster
            .circuit_breaker
            .as_ref()
            .and_then(|b| b.endpoint.as_ref())
            .map(|e| {
                let cfg = BreakerConfig {
                    failure_ratio: e.failure_ratio,
                    min_requests: e.min_requests,
                    window: e.window,
                    consecutive_failures: e.consecutive_failures,
                    open_for: e.open_for,
                    max_open_for: e.open_for * 8,
                    probes: e.probes,
                };
                let old: HashMap<u64, EndpointBreaker> = match previous {
                    Some(p) => match &p.breakers {
                        Some(old) => p.keys.iter().copied().zip(old.borrow().iter().cloned()).collect(),
                        None => HashMap::new(),
                    },
                    None => HashMap::new(),
                };
                let list = keys
                    .iter()
                    .map(|k| match old.get(k) {
                        Some(b) => {
                            let mut b = b.clone();
                            b.set_config(cfg, now);
                            b
                        }
                        None => EndpointBreaker::new(cfg, now),
                    })
                    .collect();
                RefCell::new(list)
            });
        let budget_cfg = RetryBudgetConfig {
            ratio: cluster.retry_budget.ratio,
            min_retries_per_sec: cluster.retry_budget.min_retries_per_sec,
            ..RetryBudgetConfig::default()
        };
        let floor = registry.retry_floor(&cluster.name, &budget_cfg, workers);
        let budget = match previous {
            Some(p) => {
                let mut budget = p.budget.borrow().clone();
                budget.reconfigure(budget_cfg, floor, now);
                RefCell::new(budget)
            }
            None => RefCell::new(RetryBudget::new(budget_cfg, floor, now)),
        };
        ClusterGuards {
            leases,
            outlier,
            breakers,
            budget,
            keys: keys.to_vec(),
        }
    }

    pub fn breaker_open(&self, i: usize, now: Instant) -> bool {
        self.breakers
            .as_ref()
            .is_some_and(|b| b.borrow().get(i).is_some_and(|b| b.state_at(now) == BreakerState::Open))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::LimitKind;

    #[test]
    fn a_field_on_several_lines_keys_by_its_combined_value() {
        let key = |lines: &[&'static [u8]]| RateKeyBytes::of_field(lines.iter().copied()).as_ref().to_vec();
        assert_eq!(key(&[]), b"");
        assert_eq!(key(&[b"a"]), b"a");
        assert_eq!(key(&[b"a", b"b", b"c"]), b"a, b, c");
    }

    fn capped_cluster(max_connections: u32) -> config::Snapshot {
        let toml = format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[listener.route]]\ncluster = \"c\"\n\
             [[cluster]]\nname = \"c\"\nendpoints = [{{ address = \"127.0.0.1:1001\" }}]\n\
             circuit_breaker = {{ max_connections = {max_connections} }}\n"
        );
        crate::config::parse(&toml, "t", 1).expect("valid")
    }

    /// A pooled connection holds its permit across reloads. The worker's
    /// cache of free permits must come along to the new plan, not stay
    /// stranded with the old one for as long as that connection lives.
    #[test]
    fn a_rebuilt_plan_reaches_every_permit_a_held_one_leaves() {
        let snapshot = capped_cluster(1000);
        let cluster = &snapshot.clusters[0];
        let registry = Registry::default();
        let now = Instant::now();
        let first = ClusterGuards::build(&registry, cluster, &[1], None, 1, now);
        let pooled = first
            .leases
            .as_ref()
            .and_then(|l| l.try_acquire(LimitKind::Connections))
            .expect("under the cap");
        let first_cache = first.leases.as_ref().map_or(0, |l| l.idle(LimitKind::Connections));
        assert!(first_cache > 0, "the worker caches a batch of permits");

        let mut guards = first;
        for _ in 0..5 {
            guards = ClusterGuards::build(&registry, cluster, &[1], Some(&guards), 1, now);
        }
        let leases = guards.leases.as_ref().expect("capped");
        let taken: Vec<_> = (0..999)
            .map_while(|_| leases.try_acquire(LimitKind::Connections))
            .collect();
        assert_eq!(taken.len(), 999, "every permit but the pooled connection's");
        assert!(
            leases.try_acquire(LimitKind::Connections).is_none(),
            "the cap still holds"
        );
        drop(pooled);
    }
}
