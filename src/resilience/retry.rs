//! What to retry, how many times, and how long to wait in between.
//!
//! Retry is a loop in the pipeline, not a layer (STYLE.md pattern 7): after each
//! failed try it asks [`RetryPolicy::should_retry`], then the worker's
//! [`RetryBudget`](super::RetryBudget), sleeps [`RetryPolicy::backoff`], and re-picks
//! an endpoint.
//!
//! `retry.on` words, as in Envoy's `retry_on` (each [`Outcome`] a word matches):
//!
//! | word              | connect failure | reset | timeout | status                 |
//! |-------------------|-----------------|-------|---------|------------------------|
//! | `connect-failure` | yes             |       |         |                        |
//! | `reset`           | yes             | yes   |         |                        |
//! | `timeout`         |                 |       | yes     |                        |
//! | `5xx`             | yes             | yes   | yes     | 500–599                |
//! | `gateway-error`   | yes             | yes   | yes     | 502, 503, 504          |
//! | `retriable-4xx`   |                 |       |         | 409                    |
//! | `503` (any code)  |                 |       |         | that code, as answered |
//!
//! A code matches only a status the upstream actually answered, not the 502/504 the
//! proxy itself would send for a failure (name `reset`/`timeout` for those).
//!
//! Idempotency: a connect failure never reached the upstream, so it is retried for
//! any method. Any other outcome may have been processed, so it is retried only for
//! an idempotent request or when the route allows non-idempotent retries (NGINX's
//! `non_idempotent`). Whether the body can be replayed is the pipeline's to know.

use std::{fmt, str::FromStr, time::Duration};

/// How one try ended, as far as retries and outlier detection care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// No connection: the request never left the proxy.
    ConnectFailure,
    /// The connection died before a complete response head arrived.
    Reset,
    /// The try ran out of its time (`per_try_timeout` or the route's timeout).
    Timeout,
    /// The upstream answered with this status.
    Status(u16),
}

const CONNECT_FAILURE: u8 = 1 << 0;
const RESET: u8 = 1 << 1;
const TIMEOUT: u8 = 1 << 2;
const STATUS_5XX: u8 = 1 << 3;
const GATEWAY_ERROR: u8 = 1 << 4;
const RETRIABLE_4XX: u8 = 1 << 5;

const WORDS: [(&str, u8); 6] = [
    ("connect-failure", CONNECT_FAILURE),
    ("reset", RESET),
    ("timeout", TIMEOUT),
    ("5xx", STATUS_5XX),
    ("gateway-error", GATEWAY_ERROR),
    ("retriable-4xx", RETRIABLE_4XX),
];

/// The set of outcomes a route retries (`retry.on`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RetryOn {
    flags: u8,
    /// Specific statuses, sorted and unique.
    codes: Vec<u16>,
}

/// A `retry.on` word that is neither a known word nor a status code 100–599.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseRetryOnError(String);

impl fmt::Display for ParseRetryOnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown retry condition {:?}, expected a status code (three digits, 100-599) or one of: ",
            self.0
        )?;
        for (i, (word, _)) in WORDS.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{word}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseRetryOnError {}

impl RetryOn {
    /// Parses a list of words (the config's array).
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Self, ParseRetryOnError> {
        let mut on = RetryOn::default();
        for word in words {
            on.add(word)?;
        }
        Ok(on)
    }

    /// Adds one word or status code (surrounding whitespace ignored).
    pub fn add(&mut self, word: &str) -> Result<(), ParseRetryOnError> {
        let word = word.trim();
        if let Some(&(_, flag)) = WORDS.iter().find(|(w, _)| *w == word) {
            self.flags |= flag;
            return Ok(());
        }
        let is_code = word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit());
        match word.parse::<u16>() {
            Ok(code) if is_code && (100..=599).contains(&code) => {
                if let Err(at) = self.codes.binary_search(&code) {
                    self.codes.insert(at, code);
                }
                Ok(())
            }
            _ => Err(ParseRetryOnError(word.to_owned())),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.flags == 0 && self.codes.is_empty()
    }

    /// Whether a try that ended in `outcome` is one this set retries.
    pub fn matches(&self, outcome: Outcome) -> bool {
        let any = |mask: u8| self.flags & mask != 0;
        match outcome {
            Outcome::ConnectFailure => any(CONNECT_FAILURE | RESET | STATUS_5XX | GATEWAY_ERROR),
            Outcome::Reset => any(RESET | STATUS_5XX | GATEWAY_ERROR),
            Outcome::Timeout => any(TIMEOUT | STATUS_5XX | GATEWAY_ERROR),
            Outcome::Status(code) => {
                (any(STATUS_5XX) && (500..=599).contains(&code))
                    || (any(GATEWAY_ERROR) && matches!(code, 502..=504))
                    || (any(RETRIABLE_4XX) && code == 409)
                    || self.codes.binary_search(&code).is_ok()
            }
        }
    }
}

impl FromStr for RetryOn {
    type Err = ParseRetryOnError;

    /// A comma-separated list, as in Envoy's `x-envoy-retry-on` header.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RetryOn::parse(s.split(',').filter(|w| !w.trim().is_empty()))
    }
}

/// A route's retry policy (`retry = { attempts, on, per_try_timeout, ... }`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    /// Tries in all, the first included: 1 means never retry.
    pub attempts: u32,
    pub on: RetryOn,
    /// Deadline for each try; `None` leaves only the route's timeout.
    pub per_try_timeout: Option<Duration>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    /// No retries; Envoy's backoff (25 ms base, 10× cap) once attempts are raised.
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            on: RetryOn::default(),
            per_try_timeout: None,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }
}

impl RetryPolicy {
    /// Whether to try again after try number `attempt` (1 for the first) ended in
    /// `outcome`. The budget is asked separately, after this says yes.
    pub fn should_retry(&self, outcome: Outcome, attempt: u32, idempotent: bool, allow_non_idempotent: bool) -> bool {
        attempt < self.attempts
            && self.on.matches(outcome)
            && (outcome == Outcome::ConnectFailure || idempotent || allow_non_idempotent)
    }

    /// How long to wait before retry number `attempt` (0 for the first retry): "full
    /// jitter", uniform in `[0, min(backoff_max, backoff_base · 2^attempt)]`, so
    /// clients that failed together do not come back together.
    pub fn backoff(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        Duration::from_nanos(rng.u64(0..=self.backoff_ceiling(attempt)))
    }

    /// The upper end of [`RetryPolicy::backoff`]'s range, in nanoseconds.
    pub fn backoff_ceiling(&self, attempt: u32) -> u64 {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let grown = match 1u64.checked_shl(attempt) {
            Some(factor) => nanos(self.backoff_base).saturating_mul(factor),
            None if self.backoff_base.is_zero() => 0,
            None => u64::MAX,
        };
        grown.min(nanos(self.backoff_max))
    }
}

#[cfg(test)]
mod tests;
