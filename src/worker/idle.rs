//! A coarse per-worker clock for idle keep-alive timeouts. A timer per idle
//! connection would cost more memory than the connection itself, so idle
//! connections register a deadline here and one maintenance task expires them
//! (precision: the tick, a fraction of a second, ample for idle timeouts).

use slab::Slab;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

struct Entry {
    deadline: Instant,
    waker: Option<Waker>,
    expired: bool,
}

#[derive(Default)]
pub struct IdleClock {
    entries: RefCell<Slab<Entry>>,
}

impl IdleClock {
    /// Resolves at (or up to one tick after) `deadline`.
    pub fn wait_until(&self, deadline: Instant) -> IdleWait<'_> {
        IdleWait {
            clock: self,
            deadline,
            slot: None,
        }
    }

    /// Wake every waiter whose deadline has passed.
    pub fn expire(&self, now: Instant) {
        for (_, entry) in self.entries.borrow_mut().iter_mut() {
            if !entry.expired && entry.deadline <= now {
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
    deadline: Instant,
    slot: Option<usize>,
}

impl Future for IdleWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut entries = self.clock.entries.borrow_mut();
        match self.slot {
            Some(slot) => match entries.get_mut(slot) {
                Some(entry) if entry.expired => {
                    entries.remove(slot);
                    drop(entries);
                    self.slot = None;
                    Poll::Ready(())
                }
                Some(entry) => {
                    entry.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                None => Poll::Ready(()),
            },
            None => {
                let deadline = self.deadline;
                let slot = entries.insert(Entry {
                    deadline,
                    waker: Some(cx.waker().clone()),
                    expired: false,
                });
                drop(entries);
                self.slot = Some(slot);
                Poll::Pending
            }
        }
    }
}

impl Drop for IdleWait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut entries = self.clock.entries.borrow_mut();
            if entries.contains(slot) {
                entries.remove(slot);
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
