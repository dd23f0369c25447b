//! A per-worker retry budget, so retries cannot turn an upstream's trouble into a
//! multiple of its load.
//!
//! The model is Finagle's `RetryBudget`, which linkerd uses: every request deposits
//! `ratio` of a token, every retry withdraws a whole one, deposits and withdrawals
//! older than `ttl` expire, and a floor of `min_retries_per_sec` lets a quiet
//! worker retry at all. In a storm where every try fails, upstream tries stay
//! within `(1 + ratio) · requests` plus the floor, however many attempts the
//! routes allow.
//!
//! Chosen over Envoy's concurrency budget (`active retries < max(min, ratio · active
//! requests)`) because it bounds the *count* of extra tries directly, which is what
//! protects the upstream; a concurrency bound lets short retries repeat freely. The
//! active-retry count is still kept ([`RetryBudget::end_retry`]) as a gauge.
//!
//! The deposits are per worker: each worker's requests pay for its own retries,
//! with no shared state per request. The floor is one for the whole process (a
//! [`Reservoir`] of `min_retries_per_sec`, `min_retries_per_sec · ttl` of them at
//! once, as Finagle's standing reserve), taken from only when a worker's own
//! deposits are spent: one atomic operation per such retry, and the floor holds
//! however many cores there are and wherever the connections landed. The window
//! is ten buckets of `ttl / 10`; tokens are counted in thousandths, so `ratio`
//! has three decimals.

use super::ratelimit::{RateLimit, Reservoir};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BUCKETS: usize = 10;
/// Thousandths of a token per token.
const MILLI: u64 = 1_000;

/// Budget tuning (per cluster or route in the config).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per request, over time (0.2: one retry per five requests).
    pub ratio: f64,
    /// Retries a second allowed regardless of request volume.
    pub min_retries_per_sec: u32,
    /// How long a deposit counts.
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    /// linkerd's defaults.
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.2,
            min_retries_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// Totals since the budget was created, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetCounters {
    pub requests: u64,
    /// Retries the budget allowed.
    pub retries: u64,
    /// Retries the budget refused.
    pub denied: u64,
    /// Retries started and not yet ended.
    pub active_retries: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    epoch: u64,
    /// Thousandths of a token deposited by requests.
    deposited: u64,
    /// Retries withdrawn.
    withdrawn: u64,
}

/// One worker's retry budget; see the module docs.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    deposit: u64,
    /// The process-wide floor; none when `min_retries_per_sec` is 0.
    floor: Option<Arc<Reservoir>>,
    start: Instant,
    bucket_ns: u64,
    buckets: [Bucket; BUCKETS],
    counters: BudgetCounters,
}

impl RetryBudgetConfig {
    /// The process-wide floor these settings ask for, as the rate of the
    /// [`Reservoir`] the workers' budgets share: `min_retries_per_sec`,
    /// `· ttl` of them at once. None without a floor.
    pub fn floor(&self) -> Option<RateLimit> {
        let per_sec = self.min_retries_per_sec;
        let at_once = u32::try_from(u128::from(per_sec) * self.ttl.as_millis() / 1_000).unwrap_or(u32::MAX);
        (per_sec > 0).then(|| RateLimit::new(per_sec, at_once.max(1)))
    }
}

impl RetryBudget {
    pub fn new(cfg: RetryBudgetConfig, floor: Option<Arc<Reservoir>>, now: Instant) -> Self {
        let ratio = if cfg.ratio.is_finite() {
            cfg.ratio.clamp(0.0, 1_000.0)
        } else {
            0.0
        };
        let ttl_ns = u64::try_from(cfg.ttl.as_nanos()).unwrap_or(u64::MAX);
        RetryBudget {
            deposit: (ratio * MILLI as f64).round() as u64,
            floor,
            start: now,
            bucket_ns: (ttl_ns / BUCKETS as u64).max(1),
            buckets: [Bucket::default(); BUCKETS],
            counters: BudgetCounters::default(),
        }
    }

    /// Take new settings (a reload), keeping what was deposited and
    /// withdrawn, and the counters, while the window stays the same.
    pub fn reconfigure(&mut self, cfg: RetryBudgetConfig, floor: Option<Arc<Reservoir>>, now: Instant) {
        let fresh = RetryBudget::new(cfg, floor, now);
        self.deposit = fresh.deposit;
        self.floor = fresh.floor;
        if fresh.bucket_ns != self.bucket_ns {
            self.start = fresh.start;
            self.bucket_ns = fresh.bucket_ns;
            self.buckets = fresh.buckets;
        }
    }

    /// Records an original request (not a retry): its deposit.
    pub fn on_request(&mut self, now: Instant) {
        self.counters.requests += 1;
        let deposit = self.deposit;
        let b = self.bucket(now);
        b.deposited = b.deposited.saturating_add(deposit);
    }

    /// Whether one more retry fits the budget; if so it is withdrawn and counted as
    /// active until [`RetryBudget::end_retry`].
    pub fn try_start_retry(&mut self, now: Instant) -> bool {
        if self.balance(now) >= MILLI {
            self.bucket(now).withdrawn += 1;
        } else if self.floor.as_ref().is_none_or(|f| f.try_take(1, now).is_err()) {
            self.counters.denied += 1;
            return false;
        }
        self.counters.retries += 1;
        self.counters.active_retries += 1;
        true
    }

    /// A retry that [`RetryBudget::try_start_retry`] allowed has finished.
    pub fn end_retry(&mut self) {
        self.counters.active_retries = self.counters.active_retries.saturating_sub(1);
    }

    /// Whole retries the budget would allow right now: this worker's
    /// deposits, then the process-wide floor.
    pub fn available(&self, now: Instant) -> u64 {
        let floor = self.floor.as_ref().map_or(0, |f| f.available(now));
        self.balance(now) / MILLI + floor
    }

    pub fn counters(&self) -> BudgetCounters {
        self.counters
    }

    /// Thousandths of a token this worker's requests paid in: live deposits
    /// − live retries taken from them.
    fn balance(&self, now: Instant) -> u64 {
        let epoch = self.epoch(now);
        let (deposited, withdrawn) = self
            .buckets
            .iter()
            .filter(|b| b.epoch <= epoch && epoch - b.epoch < BUCKETS as u64)
            .fold((0u64, 0u64), |(d, w), b| {
                (d.saturating_add(b.deposited), w.saturating_add(b.withdrawn))
            });
        deposited.saturating_sub(withdrawn.saturating_mul(MILLI))
    }

    fn epoch(&self, now: Instant) -> u64 {
        let ns = now.saturating_duration_since(self.start).as_nanos();
        u64::try_from(ns / u128::from(self.bucket_ns)).unwrap_or(u64::MAX)
    }

    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let epoch = self.epoch(now);
        let b = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        b
    }
}

#[cfg(test)]
mod tests;
