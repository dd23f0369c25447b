//! A coarse per-worker clock for idle keep-alive timeouts, and for when to
//! start watching a client whose answer is slow. A timer per idle connection
//! would cost more memory than the connection itself, and one per request
//! more time than the rest of its bookkeeping, so waiters register a deadline
//! here and one maintenance task expires them (precision: the tick, a
//! fraction of a second, ample for both).

use slab::Slab;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Kept small: one per idle connection. Deadlines are milliseconds since the
/// clock's epoch (u32: 49 days, beyond any idle timeout; longer ones saturate).
struct Entry {
    waker: Option<Waker>,
    deadline_ms: u32,
    expired: bool,
}

pub struct IdleClock {
    epoch: Instant,
    entries: RefCell<Slab<Entry>>,
}

impl Default for IdleClock {
    fn default() -> Self {
        IdleClock {
            epoch: Instant::now(),
            entries: RefCell::new(Slab::new()),
        }
    }
}

const NO_SLOT: u32 = u32::MAX;

impl IdleClock {
    /// Resolves at (or up to one tick after) `deadline`.
    pub fn wait_until(&self, deadline: Instant) -> IdleWait<'_> {
        IdleWait {
            clock: self,
            deadline_ms: self.millis(deadline),
            slot: NO_SLOT,
        }
    }

    fn millis(&self, at: Instant) -> u32 {
        let ms = at.saturating_duration_since(self.epoch).as_millis();
        u32::try_from(ms).unwrap_or(u32::MAX)
    }

    /// Wake every waiter whose deadline has passed.
    pub fn expire(&self, now: Instant) {
        let now = self.millis(now);
        for (_, entry) in self.entries.borrow_mut().iter_mut() {
            if !entry.expired && entry.deadline_ms <= now {
                entry.expired = true;
                if let Some(waker) = entry.waker.take() {
                    waker.wake();
                }
            }
        }
    }

    pub fn waiting(&self) -> usize {
        self.entries.borrow().len()
    }
}

pub struct IdleWait<'a> {
    clock: &'a IdleClock,
    deadline_ms: u32,
    /// Index in the clock's slab once registered, else NO_SLOT.
    slot: u32,
}

impl Future for IdleWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut entries = self.clock.entries.borrow_mut();
        if self.slot == NO_SLOT {
            let entry = Entry {
                waker: Some(cx.waker().clone()),
                deadline_ms: self.deadline_ms,
                expired: false,
            };
            let slot = entries.insert(entry);
            match u32::try_from(slot) {
                Ok(slot) if slot != NO_SLOT => {
                    drop(entries);
                    self.slot = slot;
                    return Poll::Pending;
                }
                // Four billion waiters: cannot happen with file descriptors
                // as the limit; expire at once rather than misbehave.
                _ => {
                    entries.remove(slot);
                    return Poll::Ready(());
                }
            }
        }
        let slot = self.slot as usize;
        match entries.get_mut(slot) {
            Some(entry) if entry.expired => {
                entries.remove(slot);
                drop(entries);
                self.slot = NO_SLOT;
                Poll::Ready(())
            }
            Some(entry) => {
                entry.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            None => Poll::Ready(()),
        }
    }
}

impl Drop for IdleWait<'_> {
    fn drop(&mut self) {
        if self.slot != NO_SLOT {
            let mut entries = self.clock.entries.borrow_mut();
            if entries.contains(self.slot as usize) {
                entries.remove(self.slot as usize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expires_only_past_deadlines_and_cleans_up() {
        let clock = IdleClock::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let start = Instant::now();
        let mut soon = Box::pin(clock.wait_until(start + Duration::from_secs(1)));
        let mut later = Box::pin(clock.wait_until(start + Duration::from_secs(60)));
        assert!(soon.as_mut().poll(&mut cx).is_pending());
        assert!(later.as_mut().poll(&mut cx).is_pending());
        clock.expire(start + Duration::from_secs(2));
        assert!(soon.as_mut().poll(&mut cx).is_ready());
        assert!(later.as_mut().poll(&mut cx).is_pending());
        drop(later);
        assert_eq!(clock.waiting(), 0, "finished and dropped waits leave no entry");
    }
}
