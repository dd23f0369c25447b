//! Outlier ejection, per cluster per worker: an endpoint that fails several times in
//! a row leaves the rotation for a while (Envoy's `consecutive_5xx` and
//! `consecutive_local_origin_failure` detectors).
//!
//! - Two counters per endpoint: consecutive 5xx-class results (a 5xx status, a
//!   reset, a timeout) and consecutive connect failures. Any other response resets
//!   both; a reset, timeout or 5xx resets the connect counter (the connection worked).
//!   A threshold of 0 turns its detector off.
//! - An ejection lasts `base_ejection × n`, capped at `max_ejection`, where `n` counts
//!   the endpoint's ejections. `n` drops by one for each `base_ejection` the endpoint
//!   then spends in rotation without being ejected (Envoy decrements it per interval),
//!   so one that recovered for good starts again from `base_ejection`.
//! - At most `max(1, endpoints × max_ejection_percent / 100)` endpoints are out at
//!   once (Envoy ejects at least one whatever the percentage), and never all of
//!   them: with two or more endpoints, at least one always stays. The exception is
//!   a cluster of one, whose endpoint can be ejected: traffic can then fail over to
//!   another priority level, and where there is none the pipeline's panic mode (see
//!   `priority`: 0% healthy is below any panic threshold) still routes to it.
//!   `max_ejection_percent = 0` turns ejection off.
//! - An ejected endpoint comes back by itself when its time is up
//!   ([`OutlierDetector::is_ejected`] turns false); its counters were cleared when it
//!   went out, so it takes a fresh run of failures to eject it again. Results that
//!   arrive while it is out (requests sent before) are ignored.
//! - [`OutlierDetector::rebuild`] carries state across endpoint-list changes by key,
//!   as the balancer does; indices are positions in the key slice.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::Outcome;

/// Outlier-detection tuning (`outlier = { ... }` in a cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutlierConfig {
    pub consecutive_5xx: u32,
    pub consecutive_connect_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    /// Envoy's defaults.
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: 5,
            consecutive_connect_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10,
        }
    }
}

#[derive(Clone, Debug)]
struct Endpoint {
    key: u64,
    errors: u32,
    connect_failures: u32,
    /// The ejection multiplier `n`.
    times_ejected: u32,
    /// End of the current or last ejection.
    ejected_until: Option<Instant>,
}

impl Endpoint {
    fn fresh(key: u64) -> Self {
        Endpoint {
            key,
            errors: 0,
            connect_failures: 0,
            times_ejected: 0,
            ejected_until: None,
        }
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }
}

/// One worker's outlier state for one cluster; see the module docs.
#[derive(Clone, Debug)]
pub struct OutlierDetector {
    cfg: OutlierConfig,
    endpoints: Vec<Endpoint>,
}

impl OutlierDetector {
    pub fn new(cfg: OutlierConfig, keys: &[u64]) -> Self {
        OutlierDetector {
            cfg,
            endpoints: keys.iter().map(|&k| Endpoint::fresh(k)).collect(),
        }
    }

    /// A detector for a new config and endpoint list that keeps the counters and
    /// ejections of every key that survives; new keys start fresh. With duplicate
    /// keys only the first occurrence inherits. The new config holds for the
    /// ejections carried over too: none lasts past `now` + its max_ejection, and
    /// beyond its cap (a lower max_ejection_percent, fewer endpoints) those due
    /// back soonest come back now.
    pub fn rebuild(&self, cfg: OutlierConfig, keys: &[u64], now: Instant) -> Self {
        let mut old: HashMap<u64, &Endpoint> = HashMap::with_capacity(self.endpoints.len());
        for ep in &self.endpoints {
            old.entry(ep.key).or_insert(ep);
        }
        let endpoints = keys
            .iter()
            .map(|&k| old.remove(&k).cloned().unwrap_or_else(|| Endpoint::fresh(k)))
            .collect();
        let mut detector = OutlierDetector { cfg, endpoints };
        let longest = now + cfg.max_ejection.max(cfg.base_ejection);
        for ep in detector.endpoints.iter_mut().filter(|ep| ep.is_ejected(now)) {
            ep.ejected_until = ep.ejected_until.map(|until| until.min(longest));
        }
        let excess = detector.ejected_count(now).saturating_sub(detector.max_ejected());
        let mut out: Vec<&mut Endpoint> = detector.endpoints.iter_mut().filter(|ep| ep.is_ejected(now)).collect();
        out.sort_by_key(|ep| ep.ejected_until);
        for ep in out.into_iter().take(excess) {
            ep.ejected_until = Some(now);
        }
        detector
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Records how a try to endpoint `idx` ended; `true` when this ejected it.
    pub fn record(&mut self, idx: usize, outcome: Outcome, now: Instant) -> bool {
        let Some(ep) = self.endpoints.get_mut(idx) else {
            return false;
        };
        if ep.is_ejected(now) {
            return false;
        }
        match outcome {
            Outcome::ConnectFailure => ep.connect_failures = ep.connect_failures.saturating_add(1),
            Outcome::Reset | Outcome::Timeout | Outcome::Status(500..=599) => {
                ep.errors = ep.errors.saturating_add(1);
                ep.connect_failures = 0;
            }
            Outcome::Status(_) => {
                ep.errors = 0;
                ep.connect_failures = 0;
            }
        }
        let over = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
        let tripped = over(ep.errors, self.cfg.consecutive_5xx)
            || over(ep.connect_failures, self.cfg.consecutive_connect_failures);
        if tripped && self.ejected_count(now) < self.max_ejected() {
            self.eject(idx, now);
            return true;
        }
        false
    }

    /// Whether endpoint `idx` is out of the rotation at `now`.
    pub fn is_ejected(&self, idx: usize, now: Instant) -> bool {
        self.endpoints.get(idx).is_some_and(|ep| ep.is_ejected(now))
    }

    /// When endpoint `idx` comes back, if it is out at `now` (for the admin API).
    pub fn ejected_until(&self, idx: usize, now: Instant) -> Option<Instant> {
        self.endpoints
            .get(idx)
            .filter(|ep| ep.is_ejected(now))
            .and_then(|ep| ep.ejected_until)
    }

    /// Endpoint `idx`'s ejection multiplier, for the admin API.
    pub fn times_ejected(&self, idx: usize) -> u32 {
        self.endpoints.get(idx).map_or(0, |ep| ep.times_ejected)
    }

    pub fn ejected_count(&self, now: Instant) -> usize {
        self.endpoints.iter().filter(|ep| ep.is_ejected(now)).count()
    }

    /// How many endpoints may be out at once; see the module docs.
    pub fn max_ejected(&self) -> usize {
        let n = self.endpoints.len();
        let pct = usize::try_from(self.cfg.max_ejection_percent.min(100)).unwrap_or(100);
        match (n, pct) {
            (_, 0) | (0, _) => 0,
            (1, _) => 1,
            _ => (n * pct / 100).max(1).min(n - 1),
        }
    }

    fn eject(&mut self, idx: usize, now: Instant) {
        let base = self.cfg.base_ejection;
        let max = self.cfg.max_ejection.max(base);
        let max_multiplier = if base.is_zero() {
            1
        } else {
            u32::try_from(max.as_nanos().div_ceil(base.as_nanos())).unwrap_or(u32::MAX)
        };
        let Some(ep) = self.endpoints.get_mut(idx) else {
            return;
        };
        if let Some(back) = ep.ejected_until.filter(|_| !base.is_zero()) {
            let quiet = now.saturating_duration_since(back).as_nanos() / base.as_nanos();
            ep.times_ejected = ep
                .times_ejected
                .saturating_sub(u32::try_from(quiet).unwrap_or(u32::MAX));
        }
        ep.times_ejected = ep.times_ejected.saturating_add(1).min(max_multiplier.max(1));
        let ejection = base.saturating_mul(ep.times_ejected).min(max);
        ep.ejected_until = Some(now.checked_add(ejection).unwrap_or(now));
        ep.errors = 0;
        ep.connect_failures = 0;
    }
}

#[cfg(test)]
mod tests;
