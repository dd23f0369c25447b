//! A per-worker pool of I/O buffers. Connections take a buffer only while a
//! request is in progress and give it back when they go idle, so an idle
//! keep-alive connection costs a socket and a small task, not a read buffer.

use std::cell::RefCell;

pub struct BufferPool {
    free: RefCell<Vec<Vec<u8>>>,
    size: usize,
    keep: usize,
}

impl BufferPool {
    /// `size`: capacity of each buffer; `keep`: most free buffers retained.
    pub fn new(size: usize, keep: usize) -> Self {
        BufferPool {
            free: RefCell::new(Vec::new()),
            size,
            keep,
        }
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
        let pool = BufferPool::new(1024, 1);
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
        let pool = BufferPool::new(1024, 4);
        pool.give(Vec::with_capacity(64 * 1024));
        assert!(pool.free.borrow().is_empty(), "oversized buffers are dropped");
    }
}
