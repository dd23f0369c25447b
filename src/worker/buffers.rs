//! A per-worker pool of I/O buffers. Connections take a buffer only while a
//! request is in progress and give it back when they go idle, so an idle
//! keep-alive connection costs a socket and a small task, not a read buffer.

use std::cell::{Cell, RefCell};

pub struct BufferPool {
    free: RefCell<Vec<Vec<u8>>>,
    size: usize,
    keep: usize,
    /// Large buffers, for bodies passed through in few, large reads.
    free_large: RefCell<Vec<Vec<u8>>>,
    large_size: usize,
    keep_large: usize,
    /// Connections now waiting for their next request with a buffer posted,
    /// and the most allowed to.
    waiting: Cell<usize>,
    max_waiting: usize,
    /// Bytes of buffers given back to the allocator (not kept), since
    /// `take_released` last asked.
    released: Cell<usize>,
}

/// Leave to wait for data with a buffer posted; given back on drop.
pub struct WaitSlot<'a>(&'a Cell<usize>);

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// How many buffers of each kind a pool keeps, and their sizes.
pub struct PoolSizes {
    pub size: usize,
    pub keep: usize,
    pub large_size: usize,
    pub keep_large: usize,
    /// Most connections waiting with a buffer posted.
    pub max_waiting: usize,
}

impl BufferPool {
    pub fn new(sizes: PoolSizes) -> Self {
        BufferPool {
            free: RefCell::new(Vec::new()),
            size: sizes.size,
            keep: sizes.keep,
            free_large: RefCell::new(Vec::new()),
            large_size: sizes.large_size.max(sizes.size),
            keep_large: sizes.keep_large,
            waiting: Cell::new(0),
            max_waiting: sizes.max_waiting,
            released: Cell::new(0),
        }
    }

    pub fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    pub fn take_large(&self) -> Vec<u8> {
        self.free_large
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.large_size))
    }

    /// Return a buffer of either kind. Buffers grown past twice their
    /// kind's size (a large head) are dropped so the pool's memory stays
    /// bounded, as are those beyond what it keeps.
    pub fn give(&self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        let (free, keep) = if (self.size..=self.size * 2).contains(&capacity) {
            (&self.free, self.keep)
        } else if (self.large_size..=self.large_size * 2).contains(&capacity) {
            (&self.free_large, self.keep_large)
        } else {
            self.released.set(self.released.get() + capacity);
            return;
        };
        let mut free = free.borrow_mut();
        if free.len() < keep {
            buf.clear();
            free.push(buf);
        } else {
            self.released.set(self.released.get() + capacity);
        }
    }

    /// Bytes of buffers dropped rather than kept since the last call: the
    /// wave of a burst of requests receding.
    pub fn take_released(&self) -> usize {
        self.released.replace(0)
    }

    pub fn buffer_size(&self) -> usize {
        self.size
    }

    pub fn large_buffer_size(&self) -> usize {
        self.large_size
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(keep: usize, keep_large: usize, max_waiting: usize) -> BufferPool {
        BufferPool::new(PoolSizes {
            size: 1024,
            keep,
            large_size: 8192,
            keep_large,
            max_waiting,
        })
    }

    #[test]
    fn reuses_and_bounds() {
        let pool = pool(1, 1, 1);
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
        pool.give(Vec::with_capacity(4096));
        pool.give(Vec::with_capacity(64 * 1024));
        assert_eq!(pool.free.borrow().len(), 1, "grown buffers are dropped");
        assert!(pool.free_large.borrow().is_empty(), "oversized buffers are dropped");
        assert_eq!(
            pool.take_released(),
            1024 + 4096 + 64 * 1024,
            "what was dropped is told"
        );
        assert_eq!(pool.take_released(), 0, "once");
    }

    #[test]
    fn large_buffers_come_back_to_their_own_list() {
        let pool = pool(4, 1, 1);
        let large = pool.take_large();
        assert!(large.capacity() >= 8192);
        let ptr = large.as_ptr();
        pool.give(large);
        assert!(pool.free.borrow().is_empty(), "not mixed with standard buffers");
        let again = pool.take_large();
        assert_eq!(again.as_ptr(), ptr, "large buffer reused");
        pool.give(Vec::with_capacity(8192));
        pool.give(Vec::with_capacity(8192));
        assert_eq!(pool.free_large.borrow().len(), 1, "keeps at most `keep_large`");
    }

    #[test]
    fn wait_slots_are_bounded_and_returned() {
        let pool = pool(2, 0, 2);
        let a = pool.wait_slot();
        let b = pool.wait_slot();
        assert!(a.is_some() && b.is_some());
        assert!(pool.wait_slot().is_none(), "no more than `max_waiting` at once");
        drop(a);
        assert!(pool.wait_slot().is_some(), "a dropped slot is given back");
    }
}
