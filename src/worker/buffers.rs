//! A per-worker pool of I/O buffers. Connections take a buffer only while a
//! request is in progress and give it back when they go idle, so an idle
//! keep-alive connection costs a socket and a small task, not a read buffer.

use std::cell::{Cell, RefCell};

pub struct BufferPool {
    free: RefCell<Vec<Vec<u8>>>,
    size: usize,
    keep: usize,
    /// Connections now waiting for their next request with a buffer posted,
    /// and the most allowed to.
    waiting: Cell<usize>,
    max_waiting: usize,
}

/// Leave to wait for data with a buffer posted; given back on drop.
pub struct WaitSlot<'a>(&'a Cell<usize>);

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl BufferPool {
    /// `size`: capacity of each buffer; `keep`: most free buffers retained;
    /// `max_waiting`: most connections waiting with a buffer posted.
    pub fn new(size: usize, keep: usize, max_waiting: usize) -> Self {
        BufferPool {
            free: RefCell::new(Vec::new()),
            size,
            keep,
            waiting: Cell::new(0),
            max_waiting,
        }
    }

    /// Leave for one connection to wait for data with a buffer posted, while
    /// fewer than `max_waiting` do: past that, connections wait for
    /// readability without one, so a burst of connections going idle
    /// together (10,000 clients connecting at once) holds a bounded number
    /// of buffers, and memory per idle connection stays a socket and a task.
    pub fn wait_slot(&self) -> Option<WaitSlot<'_>> {
        let waiting = self.waiting.get();
        if waiting >= self.max_waiting {
            return None;
        }
        self.waiting.set(waiting + 1);
        Some(WaitSlot(&self.waiting))
    }

    pub fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Return a buffer. Buffers grown past twice the standard size (a large
    /// head) are dropped so the pool's memory stays bounded.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < self.size || buf.capacity() > self.size * 2 {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < self.keep {
            buf.clear();
            free.push(buf);
        }
    }

    pub fn buffer_size(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let pool = BufferPool::new(1024, 1, 1);
        let mut a = pool.take();
        a.extend_from_slice(b"hello");
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take();
        assert_eq!(b.as_ptr(), ptr, "buffer reused");
        assert!(b.is_empty(), "returned buffers are cleared");
        pool.give(b);
        pool.give(Vec::with_capacity(1024));
        assert_eq!(pool.free.borrow().len(), 1, "keeps at most `keep`");
        let pool = BufferPool::new(1024, 4, 4);
        pool.give(Vec::with_capacity(64 * 1024));
        assert!(pool.free.borrow().is_empty(), "oversized buffers are dropped");
    }

    #[test]
    fn wait_slots_are_bounded_and_returned() {
        let pool = BufferPool::new(1024, 2, 2);
        let a = pool.wait_slot();
        let b = pool.wait_slot();
        assert!(a.is_some() && b.is_some());
        assert!(pool.wait_slot().is_none(), "no more than `max_waiting` at once");
        drop(a);
        assert!(pool.wait_slot().is_some(), "a dropped slot is given back");
    }
}
