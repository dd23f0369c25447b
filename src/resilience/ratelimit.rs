//! A token bucket whose rate holds for the whole process, not per core (DESIGN.md §1),
//! with no lock and no contended atomic per request.
//!
//! # Model
//!
//! A [`Reservoir`] is the one process-wide bucket of a rate limit (`rps`, `burst`). It
//! is GCRA, the "generic cell rate algorithm": a single `AtomicU64` holds the
//! *theoretical arrival time* (TAT), the instant at which the bucket would be full
//! again. Taking `n` tokens moves the TAT `n` emission intervals (1/rps each) past
//! `max(TAT, now)`, and succeeds when the new TAT is at most `burst` intervals ahead
//! of `now`. That is exactly a token bucket of capacity `burst` refilled at `rps`,
//! refilled lazily from elapsed time, in one word — so one CAS takes a whole batch.
//!
//! Each worker owns a [`LocalBucket`] that takes tokens from the reservoir in batches.
//! Per request it decrements a local count; only when that count is empty does it go
//! to the reservoir, with one CAS for the next batch. After a refusal it remembers
//! when the reservoir can next yield a batch and refuses locally until then, so an
//! overloaded route costs no atomic traffic per rejected request either.
//!
//! # Accuracy
//!
//! - Never over the rate: every admitted request spends a token that left the
//!   reservoir, so over any window `w` the process admits at most
//!   `rps · (w + LOCAL_TTL) + burst`, wherever the connections landed.
//! - Under the rate by at most the tokens sitting in other workers' caches:
//!   `batch = max(1, min(rps / 50 / workers, burst / workers))`, so at most
//!   `workers · batch ≤ max(workers, 2% of rps)` tokens are ever stranded. A cache is
//!   only trusted for [`LOCAL_TTL`]; stale tokens are given back to the reservoir (not
//!   spent late), and dropping a `LocalBucket` gives back what it holds.
//! - A worker takes up to a batch and at least half of one, so under overload the
//!   reservoir sees at most two CASes per batch admitted rather than one per token;
//!   fewer tokens than that wait at most half a batch interval in the reservoir.
//!   `batch ≤ burst / workers` keeps a full reservoir able to serve every worker.
//! - Time is kept in whole nanoseconds; the cost of `n` tokens, `n · 1e9 / rps`, is
//!   rounded down, which errs towards admitting at most 1 ns worth more per batch.
//!   The rate is kept in thousandths of a request a second, so that rates under
//!   one a second (a few a minute) can be set too.
//!
//! A rate or `burst` of 0 is treated as the least there is: config validation should
//! reject them, and here they must neither divide by zero nor lock the route shut
//! forever.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

/// How long a worker trusts a batch it took: long enough to spend a batch at any
/// realistic share of the rate, short enough that an idle worker's cache cannot be
/// spent long after the reservoir it came from ran dry.
pub const LOCAL_TTL: Duration = Duration::from_millis(50);

/// Share of one second's tokens that all workers' caches may hold together: 1/50 = 2%.
const STRANDED_DIVISOR: u64 = 50;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Thousandths of a request a second in a request a second.
pub const MILLI: u64 = 1_000;

/// A configured rate limit: sustained requests per second and the bucket capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// The sustained rate, in thousandths of a request a second.
    pub milli_rps: u64,
    pub burst: u32,
}

impl RateLimit {
    /// `rps` whole requests a second.
    pub const fn new(rps: u32, burst: u32) -> Self {
        RateLimit::milli(rps as u64 * MILLI, burst)
    }

    /// `milli_rps` thousandths of a request a second.
    pub const fn milli(milli_rps: u64, burst: u32) -> Self {
        RateLimit { milli_rps, burst }
    }

    /// Tokens a worker cache takes at once when `workers` workers share this limit.
    pub fn batch(self, workers: usize) -> u32 {
        let workers = u64::try_from(workers.max(1)).unwrap_or(u64::MAX);
        let by_rate = self.milli_rps() / MILLI / STRANDED_DIVISOR / workers;
        let by_burst = u64::from(self.burst()) / workers;
        u32::try_from(by_rate.min(by_burst).max(1)).unwrap_or(u32::MAX)
    }

    pub(super) fn milli_rps(self) -> u64 {
        self.milli_rps.max(1)
    }

    pub(super) fn burst(self) -> u32 {
        self.burst.max(1)
    }
}

/// GCRA arithmetic over a TAT measured in abstract units, `per_sec` of them a second.
#[derive(Clone, Copy, Debug)]
pub(super) struct Gcra {
    /// Units of time in a thousand seconds, over the rate in thousandths:
    /// a token costs `per_ks / milli_rps` units.
    per_ks: u128,
    milli_rps: u128,
    /// Burst tolerance: how far past `now` the TAT may run, `burst` intervals.
    tau: u64,
}

impl Gcra {
    pub(super) fn new(limit: RateLimit, per_sec: u64) -> Self {
        let mut g = Gcra {
            per_ks: u128::from(per_sec) * u128::from(MILLI),
            milli_rps: u128::from(limit.milli_rps()),
            tau: 0,
        };
        g.tau = g.cost(u64::from(limit.burst()));
        g
    }

    /// Units of time `n` tokens take to earn, rounded down (at least 1 unit a token).
    pub(super) fn cost(&self, n: u64) -> u64 {
        let exact = u128::from(n) * self.per_ks / self.milli_rps;
        u64::try_from(exact).unwrap_or(u64::MAX).max(n)
    }

    /// Takes between `min` and `max` tokens (as many as there are, up to `max`) from a
    /// bucket at `tat`: the new TAT and the count, or the time at which `min` tokens
    /// will be there if nobody takes any meanwhile.
    pub(super) fn take(&self, tat: u64, now: u64, min: u64, max: u64) -> Result<(u64, u64), u64> {
        let have = self.available(tat, now);
        if have < min.max(1) {
            let ready = tat
                .max(now)
                .saturating_add(self.cost(min.max(1)))
                .saturating_sub(self.tau);
            return Err(ready.max(now));
        }
        let n = have.min(max.max(min));
        Ok((tat.max(now).saturating_add(self.cost(n)), n))
    }

    /// The TAT after giving `n` unspent tokens back.
    pub(super) fn give_back(&self, tat: u64, n: u64) -> u64 {
        tat.saturating_sub(self.cost(n))
    }

    /// Whole tokens in the bucket at `now`: the largest `k` with `cost(k)` within the
    /// room left under the burst tolerance (so `take` and `available` never disagree).
    pub(super) fn available(&self, tat: u64, now: u64) -> u64 {
        let room = self.tau.saturating_sub(tat.saturating_sub(now));
        let k = ((u128::from(room) + 1) * self.milli_rps - 1) / self.per_ks;
        u64::try_from(k).unwrap_or(u64::MAX).min(room)
    }
}

/// The process-wide bucket of one rate limit. Share it as `Arc<Reservoir>`; workers
/// draw from it through their own [`LocalBucket`].
#[derive(Debug)]
pub struct Reservoir {
    limit: RateLimit,
    gcra: Gcra,
    /// Batch size for this limit's worker caches, fixed at construction.
    batch: u32,
    /// Time zero for `tat`; a TAT of 0 means "full".
    epoch: Instant,
    /// Theoretical arrival time in nanoseconds since `epoch`.
    tat: AtomicU64,
}

impl Reservoir {
    /// A full bucket for `limit`, shared by `workers` workers.
    pub fn new(limit: RateLimit, workers: usize, now: Instant) -> Self {
        Reservoir {
            limit,
            gcra: Gcra::new(limit, NANOS_PER_SEC),
            batch: limit.batch(workers),
            epoch: now,
            tat: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Tokens a [`LocalBucket`] takes at once.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// Takes exactly `n` tokens or none; on refusal, says when `n` will be there.
    pub fn try_take(&self, n: u32, now: Instant) -> Result<(), Instant> {
        self.take_between(n, n, now).map(|_| ())
    }

    /// Takes as many tokens as there are, up to `max`, if there are at least `min`:
    /// the count taken, or when `min` will be there if nobody takes any meanwhile.
    ///
    /// One CAS when uncontended. Relaxed ordering is enough: the TAT is the only
    /// shared datum and publishes nothing else; its modification order is total.
    pub fn take_between(&self, min: u32, max: u32, now: Instant) -> Result<u32, Instant> {
        let now_ns = self.nanos(now);
        let mut tat = self.tat.load(Relaxed);
        loop {
            let (new, n) = self
                .gcra
                .take(tat, now_ns, u64::from(min), u64::from(max))
                .map_err(|at| self.instant(at))?;
            match self.tat.compare_exchange_weak(tat, new, Relaxed, Relaxed) {
                Ok(_) => return Ok(u32::try_from(n).unwrap_or(max)),
                Err(current) => tat = current,
            }
        }
    }

    /// Returns `n` unspent tokens; a full bucket stays full.
    pub fn give_back(&self, n: u32) {
        if n > 0 {
            let _ = self
                .tat
                .fetch_update(Relaxed, Relaxed, |tat| Some(self.gcra.give_back(tat, u64::from(n))));
        }
    }

    /// Whole tokens in the reservoir now (excluding workers' caches).
    pub fn available(&self, now: Instant) -> u64 {
        self.gcra.available(self.tat.load(Relaxed), self.nanos(now))
    }

    /// When `n` tokens will be there if nobody takes any meanwhile (`now` if already).
    pub fn ready_at(&self, n: u32, now: Instant) -> Instant {
        let n = u64::from(n);
        match self.gcra.take(self.tat.load(Relaxed), self.nanos(now), n, n) {
            Ok(_) => now,
            Err(at) => self.instant(at),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.epoch
            .checked_add(Duration::from_nanos(nanos))
            .unwrap_or(self.epoch)
    }
}

/// One worker's cache of tokens from some shared bucket: the per-request fast path
/// shared by [`LocalBucket`] and the per-key caches of `keyed`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TokenCache {
    /// Tokens taken from the shared bucket and not yet spent.
    tokens: u32,
    /// Until when `tokens` may be spent; after that they go back.
    expires: Option<Instant>,
    /// Refused by the shared bucket: nothing worth taking is there before this.
    retry_at: Option<Instant>,
}

impl TokenCache {
    /// Spends a cached token, or refills from the shared bucket with
    /// `take(min, max)` (half a batch to a batch). Stale tokens are handed to
    /// `give_back` first, never spent.
    pub(super) fn acquire(
        &mut self,
        now: Instant,
        batch: u32,
        take: impl FnOnce(u32, u32) -> Result<u32, Instant>,
        give_back: impl FnOnce(u32),
    ) -> bool {
        if self.tokens > 0 {
            if self.expires.is_some_and(|e| now < e) {
                self.tokens -= 1;
                return true;
            }
            give_back(self.drain());
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        match take(min_take(batch), batch) {
            Ok(n) => {
                self.tokens = n.saturating_sub(1);
                self.expires = now.checked_add(LOCAL_TTL);
                self.retry_at = None;
                true
            }
            Err(at) => {
                self.retry_at = Some(at);
                false
            }
        }
    }

    pub(super) fn tokens(&self) -> u32 {
        self.tokens
    }

    /// Empties the cache, returning what it held for the caller to give back.
    pub(super) fn drain(&mut self) -> u32 {
        self.expires = None;
        std::mem::take(&mut self.tokens)
    }
}

/// The fewest tokens a worker bothers to take: half a batch, so an overloaded route
/// costs at most two CASes per batch while a nearly drained bucket still serves.
pub(super) fn min_take(batch: u32) -> u32 {
    batch.div_ceil(2)
}

/// One worker's cache of tokens from a shared [`Reservoir`]. Not shared; `&mut self`.
#[derive(Debug)]
pub struct LocalBucket {
    reservoir: Arc<Reservoir>,
    cache: TokenCache,
}

impl LocalBucket {
    pub fn new(reservoir: Arc<Reservoir>) -> Self {
        LocalBucket {
            reservoir,
            cache: TokenCache::default(),
        }
    }

    pub fn reservoir(&self) -> &Arc<Reservoir> {
        &self.reservoir
    }

    /// Admits one request or refuses it. A local decrement, except once per batch.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        let r = &self.reservoir;
        self.cache.acquire(
            now,
            r.batch(),
            |min, max| r.take_between(min, max, now),
            |n| r.give_back(n),
        )
    }

    /// How long a refused client should wait before this worker can admit it again,
    /// for the 429's `retry-after` (which counts whole seconds: round up, at least 1).
    pub fn retry_after(&self, now: Instant) -> Duration {
        if self.cache.tokens() > 0 {
            return Duration::ZERO;
        }
        self.reservoir
            .ready_at(min_take(self.reservoir.batch()), now)
            .saturating_duration_since(now)
    }

    /// Tokens held in this worker's cache.
    pub fn cached(&self) -> u32 {
        self.cache.tokens()
    }

    /// Gives unspent tokens back to the reservoir (idle tick, drain, snapshot swap).
    pub fn flush(&mut self) {
        self.reservoir.give_back(self.cache.drain());
    }
}

impl Drop for LocalBucket {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests;
