//! The live progress line. Each load thread publishes its counts as they
//! change and its p99 twice a second into its own [`Live`] (single writer,
//! relaxed stores, so nothing is contended); the main thread reads them
//! once a second and redraws one line on stderr: rate over the last second,
//! errors so far and p99 so far.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::report::{fmt_us, Stats};

/// One thread's published figures, on cache lines of their own: each
/// thread writes its own after every request.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Live {
    requests: AtomicU64,
    errors: AtomicU64,
    p99_us: AtomicU64,
}

impl Live {
    /// Publishes the thread's counts so far: after every request, so that a
    /// second's rate is that second's.
    pub(crate) fn count(&self, stats: &Stats) {
        self.requests.store(stats.requests, Ordering::Relaxed);
        self.errors.store(stats.errors.total(), Ordering::Relaxed);
    }

    /// Publishes the thread's tallies so far, p99 included.
    pub(crate) fn publish(&self, stats: &Stats) {
        self.count(stats);
        let p99 = if stats.hist.is_empty() {
            0
        } else {
            stats.hist.value_at_quantile(0.99)
        };
        self.p99_us.store(p99, Ordering::Relaxed);
    }
}

/// Redraws the progress line each second until every thread has finished,
/// then clears it.
pub fn watch<T>(handles: &[JoinHandle<T>], lives: &[Arc<Live>], start: Instant, warmup: Duration) {
    let mut stderr = std::io::stderr();
    let mut last_requests = 0;
    let mut last_tick = start;
    let mut next_tick = start + Duration::from_secs(1);
    while !handles.iter().all(JoinHandle::is_finished) {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if now < next_tick {
            continue;
        }
        next_tick += Duration::from_secs(1);
        let elapsed = now.duration_since(start).as_secs();
        // Nothing is counted before the warm-up ends: the rate is over the
        // part of the second after it, once there is some of it.
        let measured_from = start + warmup;
        let line = if now < measured_from + Duration::from_millis(100) {
            format!("[{elapsed:>4}s] warming up")
        } else {
            let requests: u64 = lives.iter().map(|l| l.requests.load(Ordering::Relaxed)).sum();
            let errors: u64 = lives.iter().map(|l| l.errors.load(Ordering::Relaxed)).sum();
            // Threads share the load evenly, so the worst thread's p99 is a
            // fair (slightly pessimistic) stand-in for the merged one.
            let p99 = lives
                .iter()
                .map(|l| l.p99_us.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            let secs = now.duration_since(last_tick.max(measured_from)).as_secs_f64().max(1e-3);
            let rate = requests.saturating_sub(last_requests) as f64 / secs;
            last_requests = requests;
            last_tick = now;
            format!(
                "[{elapsed:>4}s] {rate:>10.0} req/s  errors {errors}  p99 {}",
                fmt_us(p99)
            )
        };
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
    }
    let _ = write!(stderr, "\r\x1b[2K");
    let _ = stderr.flush();
}
