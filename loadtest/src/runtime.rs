//! Per-thread plumbing shared by the load run and `serve`: building a monoio
//! runtime (io_uring, or epoll where io_uring is unavailable, with the timer
//! enabled), pinning a thread to a core, the start handshake of a load run,
//! and a stop signal that a plain thread can raise to wake monoio tasks on
//! other threads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use monoio::time::TimeDriver;
use monoio::{FusionDriver, FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

/// The runtime every thread of this crate runs.
pub type Runtime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Builds a runtime with room for `entries` in-flight operations (io_uring
/// ring size, clamped to 256..=32768), falling back to epoll on its own.
///
/// The ring runs completions cooperatively (Linux 5.19+), when this thread
/// next enters the kernel. Without that, every socket event of this thread
/// made the sending core (the proxy under test) interrupt it with an
/// inter-processor interrupt, charging the proxy's CPU for the load
/// generator's bookkeeping. Older kernels refuse the flag and get a plain ring.
pub fn build_runtime(entries: u32) -> io::Result<Runtime> {
    let build = |uring: io_uring::Builder| {
        RuntimeBuilder::<FusionDriver>::new()
            .with_entries(entries.clamp(256, 32768))
            .uring_builder(uring)
            .enable_timer()
            .build()
    };
    let mut cooperative = io_uring::IoUring::builder();
    cooperative.setup_coop_taskrun();
    build(cooperative).or_else(|_| build(io_uring::IoUring::builder()))
}

/// Most cpus an affinity mask holds (glibc's `CPU_SETSIZE`); core_affinity
/// indexes past its end, and aborts the process, for a higher id.
pub const MAX_CPUS: usize = 1024;

/// Pins the calling thread to `cpu`.
pub fn pin_current(cpu: usize) -> io::Result<()> {
    if cpu < MAX_CPUS && core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot pin a thread to cpu {cpu}"),
        ))
    }
}

/// A one-way flag: raised once from any thread, awaited on monoio threads.
#[derive(Debug, Default)]
pub struct StopSignal {
    stopped: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl StopSignal {
    /// Raises the flag and wakes every waiting task.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }

    /// Whether [`StopSignal::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Resolves once the flag is raised.
    pub fn wait(self: &Arc<Self>) -> StopWait {
        StopWait(self.clone())
    }
}

/// Future returned by [`StopSignal::wait`].
#[derive(Debug)]
pub struct StopWait(Arc<StopSignal>);

impl Future for StopWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let signal = &self.0;
        if signal.is_stopped() {
            return Poll::Ready(());
        }
        let mut wakers = signal.wakers.lock().unwrap_or_else(|e| e.into_inner());
        // Checked again under the lock: stop() sets the flag before taking it.
        if signal.is_stopped() {
            return Poll::Ready(());
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The start handshake: every thread connects, then all start together.
#[derive(Default)]
pub struct StartSync {
    state: Mutex<StartState>,
    changed: Condvar,
}

#[derive(Default)]
struct StartState {
    arrived: usize,
    start: Option<std::time::Instant>,
    aborted: bool,
}

impl StartSync {
    fn lock(&self) -> MutexGuard<'_, StartState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A thread is ready; returns the common start, or `None` when aborted.
    pub fn arrive_and_wait(&self) -> Option<std::time::Instant> {
        let mut st = self.lock();
        st.arrived += 1;
        self.changed.notify_all();
        while st.start.is_none() && !st.aborted {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.start
    }

    /// Waits for `threads` arrivals, then starts them all now; `None` when
    /// the start was aborted instead.
    pub fn start_when_ready(&self, threads: usize) -> Option<std::time::Instant> {
        let mut st = self.lock();
        while st.arrived < threads && !st.aborted {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.aborted {
            return None;
        }
        let now = std::time::Instant::now();
        st.start = Some(now);
        self.changed.notify_all();
        now.into()
    }

    /// Calls the start off: releases every waiting thread, and the one
    /// waiting in [`StartSync::start_when_ready`], without a start time.
    /// For a thread that cannot take part, instead of arriving.
    pub fn abort(&self) {
        self.lock().aborted = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aborted_start_releases_everyone_without_a_start() {
        let sync = Arc::new(StartSync::default());
        let waiter = {
            let sync = sync.clone();
            std::thread::spawn(move || sync.arrive_and_wait())
        };
        // One of two threads arrived; the other cannot take part.
        sync.abort();
        assert_eq!(sync.start_when_ready(2), None);
        assert_eq!(waiter.join().ok(), Some(None));
        assert_eq!(sync.arrive_and_wait(), None);
    }

    #[test]
    fn a_start_once_all_arrived() {
        let sync = Arc::new(StartSync::default());
        let waiter = {
            let sync = sync.clone();
            std::thread::spawn(move || sync.arrive_and_wait())
        };
        let start = sync.start_when_ready(1);
        assert!(start.is_some());
        assert_eq!(waiter.join().ok(), Some(start));
    }

    #[test]
    fn cpus_past_the_mask_are_refused() {
        assert!(pin_current(MAX_CPUS).is_err());
        assert!(pin_current(usize::MAX).is_err());
    }
}
