//! Priority levels and locality as pure arithmetic: how a cluster's traffic splits
//! across its priority levels by their health, when a level (or the cluster) is in
//! panic, and whether a request stays in the proxy's own zone.
//!
//! # Priority load (Envoy's algorithm, in integer percentages)
//!
//! - `health(P) = min(100, overprovisioning · healthy(P) / total(P))`, with the
//!   overprovisioning factor as a percentage (140 = 1.4): a level counts as fully
//!   healthy down to ~72% healthy.
//! - `normalized = min(100, Σ health)`. Walking levels from P0,
//!   `load(P) = min(remaining, health(P) · 100 / normalized)`; the rounding remainder
//!   goes to the first level with any health. So each level takes its health's share
//!   of what the levels above left, and when total health is under 100 the shares are
//!   scaled up to fill 100.
//! - Panic: never while `normalized` is 100. Otherwise a level whose healthy share is
//!   below `panic_threshold` is in panic, and its picks use all its endpoints, healthy
//!   or not (better to try them all than overload the few). When every level is in
//!   panic, load splits by total weight regardless of health (Envoy's "total panic").
//!   `panic_threshold = 0` turns panic off; if then nothing is healthy, P0 gets 100.
//!
//! Envoy counts hosts; here `healthy` and `total` are whatever the caller sums —
//! endpoint weights, or counts to match Envoy exactly. Ringway has no "degraded"
//! state, so Envoy's degraded load is always 0 and is left out. Health here should
//! already exclude ejected and breaker-open endpoints if the pipeline wants those to
//! trigger failover.
//!
//! # Zone preference (a simplified zone-aware routing)
//!
//! Envoy compares the proxy fleet's spread over zones with the upstream's; a sidecar
//! knows neither fleet, so the rule here is local only: a request stays in the local
//! zone while that zone has at least `min_healthy_fraction` of its endpoints (by
//! weight) healthy. Below that, the local zone keeps a proportional share,
//! `healthy_fraction / min_healthy_fraction`, and the rest is picked from the whole
//! level (local zone included), so traffic spills over gradually rather than all at
//! once. Clusters smaller than `min_endpoints` are not zone-aware (Envoy's
//! `min_cluster_size`): with few endpoints, one zone is too thin to take everything.

/// Envoy's default overprovisioning factor, 1.4, as a percentage.
pub const DEFAULT_OVERPROVISIONING: u32 = 140;
/// Envoy's default healthy panic threshold, in percent.
pub const DEFAULT_PANIC_THRESHOLD: u32 = 50;

/// How healthy one priority level (or zone) is: healthy and total weight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LevelHealth {
    pub healthy: u64,
    pub total: u64,
}

impl LevelHealth {
    pub const fn new(healthy: u64, total: u64) -> Self {
        LevelHealth { healthy, total }
    }

    /// Healthy share in whole percent (0 for an empty level).
    pub fn healthy_percent(&self) -> u64 {
        percent(self.healthy.min(self.total), 100, self.total)
    }

    /// `min(100, overprovisioning · healthy / total)`.
    fn health(&self, overprovisioning: u32) -> u32 {
        let h = percent(self.healthy.min(self.total), u64::from(overprovisioning), self.total);
        u32::try_from(h.min(100)).unwrap_or(100)
    }
}

/// `a · b / c` without overflow, 0 when `c` is 0.
fn percent(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return 0;
    }
    u64::try_from(u128::from(a) * u128::from(b) / u128::from(c)).unwrap_or(u64::MAX)
}

/// Tuning of the priority computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PriorityConfig {
    /// Percent: 140 means a level at 1/1.4 ≈ 72% healthy still counts as whole.
    pub overprovisioning: u32,
    /// Percent healthy below which a level is in panic (0: never).
    pub panic_threshold: u32,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        PriorityConfig {
            overprovisioning: DEFAULT_OVERPROVISIONING,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
        }
    }
}

/// Where a cluster's traffic goes, recomputed whenever health changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriorityPlan {
    /// Percent of requests per level, summing to 100 (empty for no levels).
    pub loads: Vec<u32>,
    /// Per level: pick among all its endpoints, not only the healthy ones.
    pub panic: Vec<bool>,
    /// Every level is in panic: `loads` follow total weight, not health.
    pub total_panic: bool,
}

impl PriorityPlan {
    /// The plan for levels P0, P1, … in priority order.
    pub fn compute(levels: &[LevelHealth], cfg: PriorityConfig) -> Self {
        if levels.is_empty() {
            return PriorityPlan::default();
        }
        let health: Vec<u32> = levels.iter().map(|l| l.health(cfg.overprovisioning)).collect();
        let normalized = health.iter().sum::<u32>().min(100);
        let threshold = u64::from(cfg.panic_threshold.min(100));
        let panic: Vec<bool> = levels
            .iter()
            .map(|l| normalized < 100 && threshold > 0 && l.healthy_percent() < threshold)
            .collect();
        let total_panic = panic.iter().all(|&p| p);
        let loads = if total_panic {
            spread(levels.iter().map(|l| l.total))
        } else if normalized == 0 {
            // Panic is off and nothing is healthy: the loads must still sum to 100.
            spread(std::iter::once(1).chain(std::iter::repeat(0)).take(levels.len()))
        } else {
            let mut remaining = 100;
            let mut loads: Vec<u32> = health
                .iter()
                .map(|&h| {
                    let load = (h * 100 / normalized).min(remaining);
                    remaining -= load;
                    load
                })
                .collect();
            if let Some(first) = health.iter().position(|&h| h > 0) {
                loads[first] += remaining;
            }
            loads
        };
        PriorityPlan {
            loads,
            panic,
            total_panic,
        }
    }

    /// A level for one request, with probability proportional to its load.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        pick_level(&self.loads, rng)
    }
}

/// `100 · w / Σw` per entry, the remainder to the first non-zero one; P0 gets 100
/// when every weight is 0.
fn spread(weights: impl Iterator<Item = u64> + Clone) -> Vec<u32> {
    let sum: u64 = weights.clone().fold(0, u64::saturating_add);
    if sum == 0 {
        let n = weights.count();
        return (0..n).map(|i| if i == 0 { 100 } else { 0 }).collect();
    }
    let mut loads: Vec<u32> = weights
        .clone()
        .map(|w| u32::try_from(percent(w, 100, sum)).unwrap_or(100))
        .collect();
    let rest = 100 - loads.iter().sum::<u32>().min(100);
    if let Some(first) = weights.clone().position(|w| w > 0) {
        loads[first] += rest;
    }
    loads
}

/// Percent of traffic per priority level with Envoy's defaults (overprovisioning
/// 1.4, panic threshold 50%); sums to 100 for any non-empty input.
pub fn priority_loads(levels: &[LevelHealth]) -> Vec<u32> {
    PriorityPlan::compute(levels, PriorityConfig::default()).loads
}

/// A level index drawn with probability proportional to `loads` (which need not
/// sum to 100). 0 when every load is 0 or there are none.
pub fn pick_level(loads: &[u32], rng: &mut fastrand::Rng) -> usize {
    let sum: u64 = loads.iter().map(|&l| u64::from(l)).sum();
    if sum == 0 {
        return 0;
    }
    let mut r = rng.u64(0..sum);
    for (i, &load) in loads.iter().enumerate() {
        if r < u64::from(load) {
            return i;
        }
        r -= u64::from(load);
    }
    0
}

/// The local-zone rule; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZonePreference {
    /// Healthy share at which the local zone takes all traffic (default 1/1.4, the
    /// same overprovisioning as priority levels).
    pub min_healthy_fraction: f64,
    /// Endpoints a cluster (level) needs before zones matter.
    pub min_endpoints: usize,
}

impl Default for ZonePreference {
    fn default() -> Self {
        ZonePreference {
            min_healthy_fraction: 100.0 / f64::from(DEFAULT_OVERPROVISIONING),
            min_endpoints: 6,
        }
    }
}

impl ZonePreference {
    /// Percent of requests to pick from the local zone, given its health and the
    /// number of endpoints in the level; the rest pick from the whole level.
    pub fn local_percent(&self, local: LevelHealth, endpoints: usize) -> u32 {
        if endpoints < self.min_endpoints || local.total == 0 || local.healthy == 0 {
            return 0;
        }
        let fraction = local.healthy.min(local.total) as f64 / local.total as f64;
        let min = self.min_healthy_fraction;
        if min.is_nan() || min <= 0.0 || fraction >= min {
            return 100;
        }
        (100.0 * fraction / min).floor().clamp(0.0, 100.0) as u32
    }

    /// Whether this request should be picked from the local zone.
    pub fn prefer_local(&self, local: LevelHealth, endpoints: usize, rng: &mut fastrand::Rng) -> bool {
        rng.u32(0..100) < self.local_percent(local, endpoints)
    }
}

#[cfg(test)]
mod tests;
