//! Resilience policy for the request path, as pure code: rate limits, concurrency
//! limits, endpoint circuit breakers, outlier ejection, retry policy and budget, and
//! priority/zone load computation.
//!
//! Every type here is a small synchronous struct. Nothing touches monoio, reads a
//! clock or owns an rng: `now: Instant` and `&mut fastrand::Rng` come in as
//! arguments, so every test is deterministic (DESIGN.md §2, STYLE.md pattern 5).
//! Per-worker state is plain `&mut self` (or `Rc`/`Cell` where a drop guard needs to
//! reach it). The only cross-core state is where DESIGN.md §1 asks for a limit that
//! holds for the whole process (a route's rate, a cluster's caps): there a shared
//! pool of atomics is drawn from in batches, so the per-request path is a local
//! decrement and the shared atomic is touched once per batch.
//!
//! Files:
//! - `ratelimit`: process-wide token bucket ([`Reservoir`]) with per-worker batch
//!   caches ([`LocalBucket`]).
//! - `keyed`: per-key rate limits (client IP, header value) over a shared table of
//!   tagged slots, with a per-worker LRU of local caches ([`KeyedLimiter`]).
//! - `lru`: the bounded, O(1) LRU map that `keyed` uses.
//! - `limits`: process-wide caps on connections, pending, requests and retries,
//!   leased per worker in batches ([`Leases`], [`Permit`]).
//! - `breaker`: the per-endpoint error-rate breaker, Closed → Open → HalfOpen
//!   ([`EndpointBreaker`]).
//! - `outlier`: consecutive-failure outlier ejection per cluster per worker
//!   ([`OutlierDetector`]).
//! - `retry`: what to retry and how long to back off ([`RetryPolicy`], [`RetryOn`]).
//! - `budget`: how many retries a worker may add on top of requests ([`RetryBudget`]).
//! - `fault`: the delays and aborts a route injects, drawn per request ([`FaultPolicy`]).
//! - `priority`: Envoy's priority loads and panic mode, and a simple local-zone
//!   preference ([`PriorityPlan`], [`ZonePreference`]).
//!
//! The pipeline (`proxy::http`) decides *when* to consult each of these; nothing here
//! sends a response or knows about HTTP beyond status codes.

mod breaker;
mod budget;
mod fault;
mod keyed;
mod limits;
mod lru;
mod outlier;
mod priority;
mod ratelimit;
mod retry;

pub use breaker::{BreakerConfig, BreakerState, EndpointBreaker};
pub use budget::{BudgetCounters, RetryBudget, RetryBudgetConfig};
pub use fault::{Chance, FaultPolicy, Injected};
pub use keyed::{KeyedLimiter, KeyedReservoir};
pub use limits::{ClusterLimits, Leases, LimitKind, Permit, SharedLimits};
pub use outlier::{OutlierConfig, OutlierDetector};
pub use priority::{
    pick_level, priority_loads, LevelHealth, PriorityConfig, PriorityPlan, ZonePreference, DEFAULT_OVERPROVISIONING,
    DEFAULT_PANIC_THRESHOLD,
};
pub use ratelimit::{LocalBucket, RateLimit, Reservoir, LOCAL_TTL};
pub use retry::{Outcome, ParseRetryOnError, RetryOn, RetryPolicy};
