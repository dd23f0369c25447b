//! A single-threaded "drain started" signal: connections and accept loops
//! await it next to their I/O so a graceful shutdown reaches idle ones at once.

use slab::Slab;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Drain {
    started: Cell<bool>,
    waiters: RefCell<Slab<Waker>>,
}

impl Drain {
    pub fn start(&self) {
        self.started.set(true);
        for waker in self.waiters.borrow_mut().drain() {
            waker.wake();
        }
    }

    pub fn is_started(&self) -> bool {
        self.started.get()
    }

    /// Resolves once `start` has been called.
    pub fn wait(&self) -> DrainWait<'_> {
        DrainWait {
            drain: self,
            slot: None,
        }
    }
}

pub struct DrainWait<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.started.get() {
            self.slot = None;
            return Poll::Ready(());
        }
        let mut waiters = self.drain.waiters.borrow_mut();
        match self.slot {
            Some(slot) if waiters.contains(slot) => waiters[slot].clone_from(cx.waker()),
            _ => {
                let slot = waiters.insert(cx.waker().clone());
                drop(waiters);
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut waiters = self.drain.waiters.borrow_mut();
            if waiters.contains(slot) {
                waiters.remove(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn wakes_waiters_and_forgets_dropped_ones() {
        let drain = Drain::default();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut kept = Box::pin(drain.wait());
        assert!(kept.as_mut().poll(&mut cx).is_pending());
        {
            let mut dropped = Box::pin(drain.wait());
            assert!(dropped.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(drain.waiters.borrow().len(), 1, "dropped waiter removed");
        drain.start();
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(kept.as_mut().poll(&mut cx).is_ready());
        assert!(Box::pin(drain.wait()).as_mut().poll(&mut cx).is_ready());
    }
}

/// How the connections a listener admitted under one set of terms end:
/// started when the listener stops (it is removed, moves, or the worker
/// drains) or when its admission terms change, which may come after a stop.
#[derive(Default)]
pub struct Retirement {
    /// Either.
    ended: Drain,
    terms_changed: Drain,
}

impl Retirement {
    /// The listener stops.
    pub fn stop(&self) {
        self.ended.start();
    }

    /// The terms these connections were admitted under are no longer in force.
    pub fn change_terms(&self) {
        self.terms_changed.start();
        self.ended.start();
    }

    pub fn is_started(&self) -> bool {
        self.ended.is_started()
    }

    /// Whether the connection's admission terms are no longer in force.
    pub fn terms_changed(&self) -> bool {
        self.terms_changed.is_started()
    }

    /// Resolves once started, either way.
    pub fn wait(&self) -> DrainWait<'_> {
        self.ended.wait()
    }

    /// Resolves once the terms change; a stop alone leaves tunnels and
    /// relays to run on to their end or the drain deadline.
    pub fn terms_change(&self) -> DrainWait<'_> {
        self.terms_changed.wait()
    }
}
