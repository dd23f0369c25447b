//! A worker's bounded access log buffer. The worker pushes whole lines; a
//! flush takes the filled buffer and ships it to the writer thread, which does
//! the blocking file IO (DESIGN.md §1: nothing that could block runs on a
//! worker loop).
//!
//! The buffer never holds more than its capacity and `push` never blocks or
//! reallocates: when a line does not fit it is dropped and counted, so a slow
//! disk costs log lines, not latency or memory. Lines are stored whole or not
//! at all, so a taken buffer always ends at a line boundary.

/// Per-worker access log buffer; see the module docs.
#[derive(Debug)]
pub struct LogBuffer {
    buf: Vec<u8>,
    capacity: usize,
    dropped: u64,
}

impl LogBuffer {
    /// A buffer for up to `capacity` bytes; memory is taken on the first push.
    pub fn new(capacity: usize) -> Self {
        LogBuffer {
            buf: Vec::new(),
            capacity,
            dropped: 0,
        }
    }

    /// Append one complete line (with its `\n`). Returns `false`, and counts a
    /// drop, when it does not fit in the space left.
    pub fn push(&mut self, line: &[u8]) -> bool {
        if line.len() > self.capacity.saturating_sub(self.buf.len()) {
            self.dropped += 1;
            return false;
        }
        if self.buf.capacity() < self.capacity {
            // One exact allocation per flush cycle; extends below never grow it.
            self.buf.reserve_exact(self.capacity - self.buf.len());
        }
        self.buf.extend_from_slice(line);
        true
    }

    /// Everything pushed since the last take, for the writer thread.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Hand back a buffer the writer has finished with, to save the next
    /// allocation. Ignored unless this buffer is unallocated and `spare` is no
    /// larger than the capacity, so memory stays bounded.
    pub fn recycle(&mut self, mut spare: Vec<u8>) {
        if self.buf.capacity() == 0 && spare.capacity() <= self.capacity {
            spare.clear();
            self.buf = spare;
        }
    }

    /// Count the lines of a batch the writer could not take as dropped.
    pub fn count_dropped_batch(&mut self, batch: &[u8]) {
        self.dropped += batch.iter().filter(|b| **b == b'\n').count() as u64;
    }

    /// Lines dropped because the buffer was full, since creation.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes waiting to be taken.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A reload's new size: what is held stays (taken at the next flush);
    /// lines from now on must fit the new capacity.
    pub fn set_capacity(&mut self, capacity: usize) {
        if capacity < self.buf.capacity() && self.buf.is_empty() {
            self.buf = Vec::new();
        }
        self.capacity = capacity;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_capacity_keeps_what_is_held_and_bounds_what_comes() {
        let mut b = LogBuffer::new(16);
        assert!(b.push(b"0123456789\n"));
        b.set_capacity(8);
        assert_eq!(b.len(), 11, "held lines stay for the next flush");
        assert!(!b.push(b"x\n"), "over the smaller capacity already");
        assert_eq!(b.take(), b"0123456789\n");
        assert!(b.push(b"1234567\n"));
        assert!(!b.push(b"y\n"));
        b.set_capacity(64);
        assert!(b.push(b"a longer line than before\n"));
        assert_eq!(b.dropped(), 2);
    }

    #[test]
    fn full_buffer_drops_and_counts() {
        let mut b = LogBuffer::new(10);
        assert!(b.push(b"abcd\n"));
        assert!(b.push(b"efgh\n"), "exactly full is fine");
        assert!(!b.push(b"\n"));
        assert_eq!((b.len(), b.dropped()), (10, 1));
        assert_eq!(b.take(), b"abcd\nefgh\n");
        assert!(b.is_empty());
        assert!(b.push(b"ijkl\n"), "space is back after a take");
        assert!(!b.push(b"0123456789a\n"), "a line longer than the capacity never fits");
        assert_eq!(b.dropped(), 2);
    }

    #[test]
    fn never_grows_past_capacity() {
        let mut b = LogBuffer::new(64);
        for i in 0..100u8 {
            b.push(&[b'a' + i % 26; 7]);
            assert!(b.len() <= 64);
        }
        let taken = b.take();
        assert_eq!(taken.len(), 63);
        assert!(taken.capacity() <= 64, "{}", taken.capacity());
        assert_eq!(b.dropped(), 91);
    }

    #[test]
    fn recycled_buffers_are_reused_only_when_small_enough() {
        let mut b = LogBuffer::new(32);
        b.push(b"line\n");
        let spare = b.take();
        let ptr = spare.as_ptr();
        b.recycle(spare);
        assert!(b.is_empty());
        b.push(b"next\n");
        let again = b.take();
        assert_eq!(again.as_ptr(), ptr, "the recycled allocation was reused");
        b.recycle(Vec::with_capacity(1024));
        b.push(b"x\n");
        assert!(b.take().capacity() <= 32);
    }

    #[test]
    fn zero_capacity_drops_everything() {
        let mut b = LogBuffer::new(0);
        assert!(!b.push(b"x\n"));
        assert!(b.push(b""), "an empty push fits and changes nothing");
        assert_eq!((b.len(), b.dropped()), (0, 1));
    }
}
