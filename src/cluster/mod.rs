//! Load balancing over one cluster's endpoints, per worker: pure code.
//!
//! Each worker owns one [`Balancer`] per cluster and drives it through `&mut self`:
//! no atomics, no locks, no IO, no clock and no global rng. `now` and the rng come
//! in as arguments, so every test is deterministic (DESIGN.md §1, §2).
//!
//! The caller decides which endpoints *may* take a request (health, outlier ejection,
//! "not the one that just failed") through the `eligible` predicate; the balancer
//! decides which of those *does*. Endpoint indices are positions in the
//! [`EndpointSpec`] slice given to [`Balancer::new`] / [`Balancer::rebuild`];
//! identity across config swaps is the spec's `key`, so per-endpoint state
//! (outstanding requests, latency estimate, WRR position) survives a swap.
//!
//! Files: `p2c` (two-choice candidate sampling), `ewma` (peak-EWMA latency),
//! `wrr` (round robin, smooth WRR), `random` (weighted random), `ring` (consistent
//! hash ring), `hash` (the stable hash used for ring points and request keys).
//! Cross-policy tests live in `tests`.

mod ewma;
mod hash;
mod p2c;
mod random;
mod ring;
mod wrr;

#[cfg(test)]
mod tests;

use std::{
    cmp::Ordering,
    collections::HashMap,
    fmt,
    str::FromStr,
    time::{Duration, Instant},
};

pub use ewma::{DEFAULT_DECAY, DEFAULT_RTT};
pub use hash::{hash_bytes, hash_joined};

use ewma::PeakEwma;
use p2c::Candidates;
use random::WeightedRandom;
use ring::Ring;

/// How a cluster spreads requests over its endpoints (`lb` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LbPolicy {
    /// Next eligible endpoint in turn; weights ignored.
    RoundRobin,
    /// nginx's smooth weighted round robin.
    WeightedRoundRobin,
    /// Two random choices, fewer outstanding requests per unit of weight wins.
    LeastRequest,
    /// Two random choices, lower peak-EWMA latency × (outstanding + 1) / weight wins.
    P2cEwma,
    /// Random, proportional to weight.
    Random,
    /// Consistent hashing of the request's hash key; random without one.
    RingHash,
}

impl LbPolicy {
    pub const ALL: [LbPolicy; 6] = [
        LbPolicy::RoundRobin,
        LbPolicy::WeightedRoundRobin,
        LbPolicy::LeastRequest,
        LbPolicy::P2cEwma,
        LbPolicy::Random,
        LbPolicy::RingHash,
    ];

    /// The config spelling, also used for metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::WeightedRoundRobin => "weighted_round_robin",
            LbPolicy::LeastRequest => "least_request",
            LbPolicy::P2cEwma => "p2c_ewma",
            LbPolicy::Random => "random",
            LbPolicy::RingHash => "ring_hash",
        }
    }
}

impl fmt::Display for LbPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `lb` value that names no policy; its message lists the valid ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseLbPolicyError(String);

impl fmt::Display for ParseLbPolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown load-balancing policy {:?}, expected one of: ", self.0)?;
        for (i, p) in LbPolicy::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseLbPolicyError {}

impl FromStr for LbPolicy {
    type Err = ParseLbPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LbPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ParseLbPolicyError(s.to_owned()))
    }
}

/// One endpoint as the config describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointSpec {
    /// Stable identity (derived by the caller from the address): state follows the
    /// key across swaps, not the position in the list. Keys should be unique; with
    /// duplicates only the first occurrence inherits state.
    pub key: u64,
    /// Relative share, ≥ 1. Config validation rejects 0; here a 0 is treated as 1 so
    /// a bad spec can neither divide by zero nor vanish from the ring.
    pub weight: u32,
}

/// Per-endpoint state that outlives config swaps.
#[derive(Clone, Debug)]
struct Endpoint {
    key: u64,
    weight: u32,
    /// Requests sent and not yet completed: the load signal for P2C.
    outstanding: u32,
    /// Latency signal for `p2c_ewma`.
    ewma: PeakEwma,
    /// Smooth WRR position; carried so a swap does not restart the schedule.
    wrr_current: i64,
}

impl Endpoint {
    fn fresh(spec: EndpointSpec, now: Instant) -> Self {
        Endpoint {
            key: spec.key,
            weight: spec.weight.max(1),
            outstanding: 0,
            ewma: PeakEwma::new(now),
            wrr_current: 0,
        }
    }
}

/// One worker's load balancer for one cluster.
#[derive(Clone, Debug)]
pub struct Balancer {
    policy: LbPolicy,
    endpoints: Vec<Endpoint>,
    /// Round-robin positions, one per lane (see [`Balancer::pick_in`]);
    /// each `None` until its first pick places it at random.
    cursors: Vec<(u64, Option<usize>)>,
    /// Cumulative weights, for `random` and for `ring_hash` without a hash key.
    random: WeightedRandom,
    /// Built only for `ring_hash`: the ring is the one sizeable structure here.
    ring: Ring,
    /// EWMA decay time constant.
    tau: Duration,
}

impl Balancer {
    pub fn new(policy: LbPolicy, endpoints: &[EndpointSpec], now: Instant) -> Self {
        let endpoints = endpoints.iter().map(|&s| Endpoint::fresh(s, now)).collect();
        Self::assemble(policy, endpoints, Vec::new(), DEFAULT_DECAY)
    }

    /// Sets the EWMA decay time constant (default [`DEFAULT_DECAY`], floor 1 ms).
    #[must_use]
    pub fn with_ewma_decay(mut self, tau: Duration) -> Self {
        self.tau = tau.max(ewma::MIN_DECAY);
        self
    }

    /// A balancer for a new policy and endpoint list that keeps the outstanding
    /// count, EWMA and WRR position of every endpoint whose key survives; new keys
    /// start fresh and removed keys are dropped. O(n + ring points · log).
    pub fn rebuild(&self, policy: LbPolicy, endpoints: &[EndpointSpec], now: Instant) -> Self {
        let mut old: HashMap<u64, &Endpoint> = HashMap::with_capacity(self.endpoints.len());
        for ep in &self.endpoints {
            old.entry(ep.key).or_insert(ep);
        }
        let endpoints = endpoints
            .iter()
            .map(|&spec| {
                let mut ep = Endpoint::fresh(spec, now);
                // `remove`, so a duplicated key cannot inherit the same in-flight
                // count twice and never drain back to zero.
                if let Some(prev) = old.remove(&spec.key) {
                    ep.outstanding = prev.outstanding;
                    ep.ewma = prev.ewma.clone();
                    ep.wrr_current = prev.wrr_current;
                }
                ep
            })
            .collect();
        Self::assemble(policy, endpoints, self.cursors.clone(), self.tau)
    }

    fn assemble(policy: LbPolicy, endpoints: Vec<Endpoint>, cursors: Vec<(u64, Option<usize>)>, tau: Duration) -> Self {
        let random = WeightedRandom::new(endpoints.iter().map(|e| e.weight));
        let ring = if policy == LbPolicy::RingHash {
            Ring::new(&endpoints.iter().map(|e| (e.key, e.weight)).collect::<Vec<_>>())
        } else {
            Ring::default()
        };
        Balancer {
            policy,
            endpoints,
            cursors,
            random,
            ring,
            tau,
        }
    }

    /// Picks an endpoint index among those for which `eligible(i)` is true; `None`
    /// only when none is. `hash` is the request's key for `ring_hash`, typically
    /// [`hash_bytes`] of a header or the client address; it is re-mixed inside, so
    /// any u64 will do. Without one, `ring_hash` picks like `random`; other policies
    /// ignore it. `eligible` must answer the same for an index throughout one call.
    ///
    /// O(1) or O(log n) while most endpoints are eligible, except smooth WRR, which
    /// is O(n) like nginx's (see `wrr`); sampling falls back to an O(n) scan only
    /// when many endpoints are ineligible.
    pub fn pick(
        &mut self,
        now: Instant,
        hash: Option<u64>,
        rng: &mut fastrand::Rng,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        self.pick_in(0, now, hash, rng, eligible)
    }

    /// As [`Balancer::pick`], for requests that may use only some endpoints
    /// (one priority level, one zone), named by `lane`. Round robin keeps a
    /// cursor per lane: one cursor shared by lanes would stop after the last
    /// endpoint of one and start the next lane's pick at its first, which
    /// then took most of that lane's share.
    pub fn pick_in(
        &mut self,
        lane: u64,
        now: Instant,
        hash: Option<u64>,
        rng: &mut fastrand::Rng,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.endpoints.len();
        match self.policy {
            LbPolicy::RoundRobin => {
                let slot = match self.cursors.iter().position(|(l, _)| *l == lane) {
                    Some(slot) => slot,
                    None => {
                        self.cursors.push((lane, None));
                        self.cursors.len() - 1
                    }
                };
                let (_, cursor) = self.cursors.get_mut(slot)?;
                wrr::round_robin(cursor, n, rng, eligible)
            }
            LbPolicy::WeightedRoundRobin => wrr::smooth(&mut self.endpoints, eligible),
            LbPolicy::LeastRequest => self.p2c(rng, eligible, |a, b| {
                // outstanding/weight compared exactly, by cross-multiplication.
                let la = u64::from(a.outstanding) * u64::from(b.weight);
                let lb = u64::from(b.outstanding) * u64::from(a.weight);
                la.cmp(&lb)
            }),
            LbPolicy::P2cEwma => {
                let tau = self.tau;
                self.p2c(rng, eligible, |a, b| {
                    // An endpoint that has never answered is probed with one
                    // request at a time: free while idle, so a new or long-unused
                    // endpoint is not starved by warm ones at light load, and
                    // priced at the default RTT while its probe is out, so it is
                    // not flooded before it has shown its latency.
                    let cost = |e: &Endpoint| {
                        if !e.ewma.is_observed() && e.outstanding == 0 {
                            return 0.0;
                        }
                        e.ewma.get_ms(now, tau) * (f64::from(e.outstanding) + 1.0) / f64::from(e.weight)
                    };
                    cost(a).partial_cmp(&cost(b)).unwrap_or(Ordering::Equal)
                })
            }
            LbPolicy::Random => self.random.pick(rng, eligible),
            LbPolicy::RingHash => match hash {
                Some(h) => self.ring.pick(h, n, eligible),
                None => self.random.pick(rng, eligible),
            },
        }
    }

    fn p2c(
        &self,
        rng: &mut fastrand::Rng,
        eligible: &dyn Fn(usize) -> bool,
        order: impl Fn(&Endpoint, &Endpoint) -> Ordering,
    ) -> Option<usize> {
        match p2c::candidates(self.endpoints.len(), rng, eligible) {
            Candidates::None => None,
            Candidates::One(a) => Some(a),
            Candidates::Two(a, b) => {
                let (ea, eb) = (self.endpoints.get(a)?, self.endpoints.get(b)?);
                Some(p2c::choose((a, ea.weight), (b, eb.weight), order(ea, eb), rng))
            }
        }
    }

    /// A request was sent to `idx`. Out-of-range indices are ignored.
    pub fn on_start(&mut self, idx: usize) {
        if let Some(ep) = self.endpoints.get_mut(idx) {
            ep.outstanding = ep.outstanding.saturating_add(1);
        }
    }

    /// The request sent to `idx` completed after `rtt`. A failed request may be
    /// reported with a penalty `rtt`: as a new peak it steers `p2c_ewma` away at once.
    /// Out-of-range indices are ignored.
    pub fn on_end(&mut self, idx: usize, rtt: Duration, now: Instant) {
        let tau = self.tau;
        if let Some(ep) = self.endpoints.get_mut(idx) {
            ep.outstanding = ep.outstanding.saturating_sub(1);
            ep.ewma.observe(rtt, now, tau);
        }
    }

    /// The request sent to `idx` ended without telling its latency (the
    /// client left or was slow, the caps refused it). Out-of-range indices
    /// are ignored.
    pub fn on_abandon(&mut self, idx: usize) {
        if let Some(ep) = self.endpoints.get_mut(idx) {
            ep.outstanding = ep.outstanding.saturating_sub(1);
        }
    }

    /// Whether `idx` has answered (or failed) since it joined: before, its
    /// latency estimate is the default, not a measurement.
    pub fn observed(&self, idx: usize) -> bool {
        self.endpoints.get(idx).is_some_and(|e| e.ewma.is_observed())
    }

    /// Requests in flight to `idx` (0 for an unknown index).
    pub fn outstanding(&self, idx: usize) -> u32 {
        self.endpoints.get(idx).map_or(0, |e| e.outstanding)
    }

    /// Peak-EWMA latency of `idx` projected to `now`, in ms ([`DEFAULT_RTT`] until
    /// the first reply; 0.0 for an unknown index).
    pub fn ewma_ms(&self, idx: usize, now: Instant) -> f64 {
        self.endpoints.get(idx).map_or(0.0, |e| e.ewma.get_ms(now, self.tau))
    }

    /// The index now holding `key`, for a request that started before a swap and
    /// completes after it. O(n); swaps are rare.
    pub fn index_of(&self, key: u64) -> Option<usize> {
        self.endpoints.iter().position(|e| e.key == key)
    }

    /// The key of the endpoint at `idx`.
    pub fn key(&self, idx: usize) -> Option<u64> {
        self.endpoints.get(idx).map(|e| e.key)
    }

    pub fn policy(&self) -> LbPolicy {
        self.policy
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}
