//! A per-endpoint circuit breaker driven by the endpoint's recent error rate, one per
//! endpoint per worker (DESIGN.md §1: breakers are per-core state).
//!
//! - `Closed`: requests flow and their results land in a rolling window of `window`
//!   (ten buckets). It opens when the window holds at least `min_requests` results and
//!   the share of failures is at least `failure_ratio`, or after
//!   `consecutive_failures` failures in a row, whichever comes first.
//! - `Open`: requests are refused (the pipeline re-picks, or answers 503 "circuit
//!   open") until `open_for` has passed. Each reopening without a close in between
//!   doubles the time, up to `max_open_for`.
//! - `HalfOpen`: up to `probes` requests go through as trials. One failure reopens it
//!   (for longer); `probes` successes close it and forget the window and the backoff.
//!   A probe whose result never comes (a cancelled request) is presumed lost once
//!   `open_for` has passed since the last probe went out, and another is let through,
//!   so the breaker cannot wedge half-open.
//!
//! Which request a result belongs to is not tracked: a result from before the breaker
//! opened is ignored while `Open`, and while `HalfOpen` counts as a probe's (a late
//! failure reopens, the safe direction; a late success is evidence of health anyway).
//! `failure_ratio` outside `(0, 1]` or `consecutive_failures == 0` turn that trigger
//! off; `probes == 0` means 1.

use std::time::{Duration, Instant};

const BUCKETS: usize = 10;

/// Breaker tuning (per cluster in the config).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    pub failure_ratio: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub consecutive_failures: u32,
    pub open_for: Duration,
    pub max_open_for: Duration,
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            consecutive_failures: 5,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            probes: 1,
        }
    }
}

/// The conventional breaker states (`Closed` lets traffic through).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// For metric labels and the admin API.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        /// Probes let through in this round.
        issued: u32,
        succeeded: u32,
        /// When the last probe went out, to presume lost probes.
        last_issued: Instant,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Which bucket-length interval since `Window::start` these counts belong to.
    epoch: u64,
    ok: u32,
    failed: u32,
}

/// Results over the last `window`, in ten buckets that age out one at a time.
#[derive(Clone, Debug)]
struct Window {
    start: Instant,
    bucket_ns: u64,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    fn new(window: Duration, now: Instant) -> Self {
        let ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Window {
            start: now,
            bucket_ns: (ns / BUCKETS as u64).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_nanos() / u128::from(self.bucket_ns))
            .unwrap_or(u64::MAX)
    }

    fn record(&mut self, now: Instant, success: bool) {
        let epoch = self.epoch(now);
        let b = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        if success {
            b.ok = b.ok.saturating_add(1);
        } else {
            b.failed = b.failed.saturating_add(1);
        }
    }

    /// (results, failures) within the window ending at `now`.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let epoch = self.epoch(now);
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && epoch - b.epoch < BUCKETS as u64)
            .fold((0, 0), |(n, f), b| {
                (n + u64::from(b.ok) + u64::from(b.failed), f + u64::from(b.failed))
            })
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

/// One endpoint's breaker on one worker; see the module docs.
#[derive(Clone, Debug)]
pub struct EndpointBreaker {
    cfg: BreakerConfig,
    state: State,
    window: Window,
    consecutive: u32,
    /// Times opened since the last close: the exponent of the open time.
    opened: u32,
}

impl EndpointBreaker {
    pub fn new(cfg: BreakerConfig, now: Instant) -> Self {
        EndpointBreaker {
            cfg,
            state: State::Closed,
            window: Window::new(cfg.window, now),
            consecutive: 0,
            opened: 0,
        }
    }

    /// New tuning (a config swap) keeping the state; the window restarts if its
    /// length changed.
    pub fn set_config(&mut self, cfg: BreakerConfig, now: Instant) {
        if cfg.window != self.cfg.window {
            self.window = Window::new(cfg.window, now);
        }
        // An open breaker stays open no longer than the new settings allow.
        if let State::Open { until } = &mut self.state {
            *until = (*until).min(now + cfg.max_open_for.max(cfg.open_for));
        }
        self.cfg = cfg;
    }

    /// Whether one more failed result at `now` leaves this breaker open.
    pub fn open_after_failure(&self, now: Instant) -> bool {
        let mut next = self.clone();
        next.on_result(now, false);
        next.state_at(now) == BreakerState::Open
    }

    /// Whether a request may go to this endpoint now. In `HalfOpen` a `true` is a
    /// probe: the caller must send it (and report its result).
    pub fn allow(&mut self, now: Instant) -> bool {
        let probes = self.cfg.probes.max(1);
        match &mut self.state {
            State::Closed => true,
            State::Open { until } if now < *until => false,
            State::Open { .. } => {
                self.state = State::HalfOpen {
                    issued: 1,
                    succeeded: 0,
                    last_issued: now,
                };
                true
            }
            State::HalfOpen {
                issued, last_issued, ..
            } => {
                let lost = now.saturating_duration_since(*last_issued) >= self.cfg.open_for;
                if *issued < probes || lost {
                    *issued = if lost { 1 } else { *issued + 1 };
                    *last_issued = now;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Reports how a request this breaker allowed ended.
    pub fn on_result(&mut self, now: Instant, success: bool) {
        match &mut self.state {
            State::Closed => {
                self.window.record(now, success);
                self.consecutive = if success { 0 } else { self.consecutive.saturating_add(1) };
                if self.should_open(now) {
                    self.open(now);
                }
            }
            State::Open { .. } => {}
            State::HalfOpen { succeeded, .. } => {
                if !success {
                    self.open(now);
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.cfg.probes.max(1) {
                        self.close();
                    }
                }
            }
        }
    }

    /// The state as of the last call; an `Open` breaker whose time is up turns
    /// `HalfOpen` on the next [`EndpointBreaker::allow`].
    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The state as it stands at `now`: an `Open` breaker whose time is up
    /// already lets the next request probe, so it reads `HalfOpen`.
    pub fn state_at(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Open { until } if until <= now => BreakerState::HalfOpen,
            _ => self.state(),
        }
    }

    /// Until when an `Open` breaker refuses.
    pub fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    fn should_open(&self, now: Instant) -> bool {
        let c = &self.cfg;
        if c.consecutive_failures > 0 && self.consecutive >= c.consecutive_failures {
            return true;
        }
        if !(c.failure_ratio > 0.0 && c.failure_ratio <= 1.0) {
            return false;
        }
        let (n, failed) = self.window.totals(now);
        n > 0 && n >= u64::from(c.min_requests) && failed as f64 >= c.failure_ratio * n as f64
    }

    fn open(&mut self, now: Instant) {
        self.opened = self.opened.saturating_add(1);
        let factor = 1u32.checked_shl(self.opened - 1).unwrap_or(u32::MAX);
        let ceiling = self.cfg.max_open_for.max(self.cfg.open_for);
        let open_for = self.cfg.open_for.saturating_mul(factor).min(ceiling);
        self.state = State::Open {
            until: now.checked_add(open_for).unwrap_or(now),
        };
        self.consecutive = 0;
        self.window.clear();
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.opened = 0;
        self.consecutive = 0;
        self.window.clear();
    }
}

#[cfg(test)]
mod tests;
