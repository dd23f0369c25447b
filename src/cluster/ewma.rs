//! Peak-EWMA latency estimate for one endpoint, as in Finagle and linkerd2-proxy.
//!
//! A plain moving average reacts slowly when an endpoint turns slow, which is exactly
//! when the balancer must move traffic away. Peak-EWMA takes any observation above the
//! current estimate at once and lets good news in only gradually. Averaging is by
//! elapsed time, not by sample count: weight `1 - exp(-elapsed/tau)` goes to the new
//! sample, so a burst of replies at one instant counts no more than a single one, and
//! the same `tau` means the same memory whatever the request rate.
//!
//! Reads project the estimate forward as if zero-latency samples had been seen since
//! the last update (`value * exp(-elapsed/tau)`), like `Ewma::get_at` in linkerd and
//! tower's `PeakEwma` decay: an endpoint that was slow once and then stopped being
//! picked slowly becomes cheap again and gets re-probed instead of being shunned
//! forever. Reads never mutate, so candidates can be costed freely.
//!
//! Pure: time comes in as `now`; nothing here reads a clock.

use std::time::{Duration, Instant};

/// RTT assumed for an endpoint that has never answered. High enough that a new
/// endpoint is not flooded the moment it appears (at zero cost it would win every
/// comparison until its first reply), low enough that it gets probed as soon as the
/// established endpoints are busy or slower than this.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// Default decay time constant: after `tau` without samples an estimate has decayed
/// to 1/e of its value (linkerd and Finagle use 10 s).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// Floor for `tau`, so `elapsed / tau` can never divide by zero.
pub(super) const MIN_DECAY: Duration = Duration::from_millis(1);

#[derive(Clone, Debug)]
pub(super) struct PeakEwma {
    /// Estimate in milliseconds as of `stamp`.
    value_ms: f64,
    /// When `value_ms` was last updated; the origin for decay.
    stamp: Instant,
    /// False until the first reply: until then the estimate is the fixed default and
    /// does not decay, and the first real sample replaces it outright instead of being
    /// blended into a guess (a time-weighted blend right after creation would barely
    /// move off the default).
    observed: bool,
}

impl PeakEwma {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            value_ms: DEFAULT_RTT.as_secs_f64() * 1e3,
            stamp: now,
            observed: false,
        }
    }

    /// Whether any reply has been observed yet.
    pub(super) fn is_observed(&self) -> bool {
        self.observed
    }

    /// The estimate projected to `now`, in milliseconds; does not mutate.
    pub(super) fn get_ms(&self, now: Instant, tau: Duration) -> f64 {
        if !self.observed {
            return self.value_ms;
        }
        self.value_ms * decay_factor(now.saturating_duration_since(self.stamp), tau)
    }

    /// Records one request's round-trip time observed at `now`.
    pub(super) fn observe(&mut self, rtt: Duration, now: Instant, tau: Duration) {
        let rtt_ms = rtt.as_secs_f64() * 1e3;
        if !self.observed {
            self.observed = true;
            self.value_ms = rtt_ms;
            self.stamp = now;
            return;
        }
        // A sample stamped before the last update (completions reported out of order)
        // counts as zero elapsed time: it can still raise the peak but not blend.
        let decay = decay_factor(now.saturating_duration_since(self.stamp), tau);
        let projected = self.value_ms * decay;
        self.value_ms = if rtt_ms > projected {
            rtt_ms
        } else {
            projected + rtt_ms * (1.0 - decay)
        };
        self.stamp = self.stamp.max(now);
    }
}

/// `exp(-elapsed/tau)`: the weight the old estimate keeps after `elapsed`.
fn decay_factor(elapsed: Duration, tau: Duration) -> f64 {
    let tau = tau.max(MIN_DECAY).as_secs_f64();
    (-elapsed.as_secs_f64() / tau).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = DEFAULT_DECAY;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn fresh_endpoint_holds_the_default_without_decaying() {
        let t0 = Instant::now();
        let e = PeakEwma::new(t0);
        assert_eq!(e.get_ms(t0, TAU), 30.0);
        assert_eq!(e.get_ms(t0 + Duration::from_secs(3600), TAU), 30.0);
    }

    #[test]
    fn first_sample_replaces_the_default_even_when_lower() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(ms(2), t0 + ms(1), TAU);
        assert_eq!(e.get_ms(t0 + ms(1), TAU), 2.0);
    }

    #[test]
    fn higher_sample_is_taken_at_once() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(ms(10), t0, TAU);
        e.observe(ms(500), t0 + ms(1), TAU);
        assert_eq!(e.get_ms(t0 + ms(1), TAU), 500.0);
    }

    #[test]
    fn lower_sample_blends_by_elapsed_time() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(ms(100), t0, TAU);
        // One tau later: old weight e^-1, new sample weight 1 - e^-1.
        e.observe(ms(10), t0 + TAU, TAU);
        let w = (-1.0f64).exp();
        assert!(close(e.get_ms(t0 + TAU, TAU), 100.0 * w + 10.0 * (1.0 - w)));
    }

    #[test]
    fn lower_sample_at_the_same_instant_does_not_move_it() {
        // Time-weighted: zero elapsed time gives the new sample zero weight.
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(ms(100), t0, TAU);
        e.observe(ms(1), t0, TAU);
        assert_eq!(e.get_ms(t0, TAU), 100.0);
    }

    #[test]
    fn reads_decay_towards_zero_without_mutating() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(ms(80), t0, TAU);
        let half = Duration::from_secs_f64(TAU.as_secs_f64() * std::f64::consts::LN_2);
        assert!(close(e.get_ms(t0 + half, TAU), 40.0));
        assert!(close(e.get_ms(t0 + TAU, TAU), 80.0 * (-1.0f64).exp()));
        // Reading did not move the stamp: the same projection again.
        assert!(close(e.get_ms(t0 + half, TAU), 40.0));
        assert!(e.get_ms(t0 + Duration::from_secs(3600), TAU) < 1e-9);
    }

    #[test]
    fn peak_is_judged_against_the_decayed_value() {
        // 100 ms decays to ~13.5 ms after 2 tau; a 20 ms sample is then a new peak.
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(ms(100), t0, TAU);
        e.observe(ms(20), t0 + 2 * TAU, TAU);
        assert_eq!(e.get_ms(t0 + 2 * TAU, TAU), 20.0);
    }

    #[test]
    fn out_of_order_sample_neither_panics_nor_rewinds() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(ms(10), t0 + ms(50), TAU);
        e.observe(ms(5), t0, TAU);
        assert_eq!(e.get_ms(t0 + ms(50), TAU), 10.0);
        e.observe(ms(40), t0, TAU);
        assert_eq!(e.get_ms(t0 + ms(50), TAU), 40.0);
    }

    #[test]
    fn zero_tau_is_clamped() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(ms(10), t0, Duration::ZERO);
        e.observe(ms(1), t0 + ms(1), Duration::ZERO);
        let v = e.get_ms(t0 + ms(2), Duration::ZERO);
        assert!(v.is_finite() && v >= 0.0);
    }
}
