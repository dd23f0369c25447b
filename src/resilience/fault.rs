//! Fault injection, as a mesh offers it for testing how callers cope: a
//! route delays a share of its requests before forwarding them and answers
//! a share itself with an error status, each share drawn per request.

use std::time::Duration;

/// A share of requests, in parts per million.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chance(u32);

impl Chance {
    const WHOLE: u32 = 1_000_000;

    /// From a percentage; out-of-range values are clamped to 0..=100.
    pub fn percent(p: f64) -> Chance {
        let ppm = (p.clamp(0.0, 100.0) * 10_000.0).round();
        // In 0..=1e6 after the clamp, so the cast is exact.
        Chance(ppm as u32)
    }

    pub fn hits(self, rng: &mut fastrand::Rng) -> bool {
        self.0 >= Self::WHOLE || (self.0 > 0 && rng.u32(0..Self::WHOLE) < self.0)
    }
}

/// A route's faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPolicy {
    pub delay: Option<(Duration, Chance)>,
    /// The status to answer with (an error: 400..=599).
    pub abort: Option<(u16, Chance)>,
}

/// What one request drew.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// Wait this long before going on.
    pub delay: Option<Duration>,
    /// Then answer with this status instead of forwarding.
    pub abort: Option<u16>,
}

impl FaultPolicy {
    /// Draw both faults independently, as Envoy does: a request may be
    /// delayed and then aborted.
    pub fn draw(&self, rng: &mut fastrand::Rng) -> Injected {
        Injected {
            delay: self.delay.filter(|(_, c)| c.hits(rng)).map(|(d, _)| d),
            abort: self.abort.filter(|(_, c)| c.hits(rng)).map(|(s, _)| s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(policy: &FaultPolicy, n: u32) -> (u32, u32) {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = (0, 0);
        for _ in 0..n {
            let drawn = policy.draw(&mut rng);
            counts.0 += u32::from(drawn.delay.is_some());
            counts.1 += u32::from(drawn.abort.is_some());
        }
        counts
    }

    #[test]
    fn none_and_all_are_exact() {
        let policy = FaultPolicy {
            delay: Some((Duration::from_millis(5), Chance::percent(100.0))),
            abort: Some((503, Chance::percent(0.0))),
        };
        assert_eq!(share(&policy, 10_000), (10_000, 0));
        let drawn = policy.draw(&mut fastrand::Rng::with_seed(1));
        assert_eq!(drawn.delay, Some(Duration::from_millis(5)));
        assert_eq!(drawn.abort, None);
    }

    #[test]
    fn shares_follow_the_percentages() {
        let policy = FaultPolicy {
            delay: Some((Duration::from_millis(1), Chance::percent(10.0))),
            abort: Some((503, Chance::percent(2.5))),
        };
        // A fixed seed: the counts are the same on every run.
        let (delayed, aborted) = share(&policy, 200_000);
        assert!((19_000..21_000).contains(&delayed), "{delayed}");
        assert!((4_500..5_500).contains(&aborted), "{aborted}");
    }

    #[test]
    fn percentages_round_to_parts_per_million_and_clamp() {
        assert_eq!(Chance::percent(0.0001), Chance(1));
        assert_eq!(Chance::percent(33.3333333), Chance(333_333));
        assert_eq!(Chance::percent(250.0), Chance(1_000_000));
        assert_eq!(Chance::percent(-1.0), Chance(0));
        assert_eq!(Chance::percent(f64::NAN), Chance(0));
    }
}
