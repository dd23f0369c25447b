//! A bounded map from 64-bit keys to values that evicts the least recently used entry.
//!
//! Per-key state (keyed rate limits) must not grow with the number of distinct keys a
//! client can invent, so the map has a fixed capacity and every operation is O(1): a
//! `HashMap` from key to slot plus a doubly linked recency list threaded through a
//! `Vec` of slots by index. Nothing is allocated after the map fills up; an eviction
//! reuses the evicted slot.
//!
//! Keys are expected to be outputs of a keyed hash already, so the map hashes them
//! with the identity function instead of hashing twice.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

const NIL: u32 = u32::MAX;

/// Passes a `u64` key through unchanged; keys are already uniformly distributed.
#[derive(Default)]
pub(super) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug)]
struct Node<V> {
    key: u64,
    value: V,
    /// Towards the most recently used end.
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
}

/// A fixed-capacity LRU map; see the module docs.
#[derive(Debug)]
pub(super) struct Lru<V> {
    map: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    nodes: Vec<Node<V>>,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next to go.
    tail: u32,
    capacity: usize,
}

impl<V> Lru<V> {
    /// A map holding at most `capacity` entries (at least 1).
    pub(super) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, NIL as usize - 1);
        Lru {
            map: HashMap::default(),
            nodes: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The value for `key`, marked most recently used. (The limiter always inserts on
    /// a miss, so only the tests look up without inserting.)
    #[cfg(test)]
    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        let i = *self.map.get(&key)?;
        self.touch(i);
        Some(&mut self.nodes[i as usize].value)
    }

    /// The value for `key`, inserting `make()` (as most recently used) when absent.
    /// When the insert had to evict, the evicted key and value come back too.
    pub(super) fn get_or_insert_with(&mut self, key: u64, make: impl FnOnce() -> V) -> (&mut V, Option<(u64, V)>) {
        if let Some(&i) = self.map.get(&key) {
            self.touch(i);
            return (&mut self.nodes[i as usize].value, None);
        }
        let (i, evicted) = if self.nodes.len() < self.capacity {
            let i = self.nodes.len() as u32;
            self.nodes.push(Node {
                key,
                value: make(),
                prev: NIL,
                next: NIL,
            });
            (i, None)
        } else {
            let i = self.tail;
            self.unlink(i);
            let node = &mut self.nodes[i as usize];
            self.map.remove(&node.key);
            let old_key = std::mem::replace(&mut node.key, key);
            let old_value = std::mem::replace(&mut node.value, make());
            (i, Some((old_key, old_value)))
        };
        self.map.insert(key, i);
        self.push_front(i);
        (&mut self.nodes[i as usize].value, evicted)
    }

    /// Every entry, in no particular order.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut V)> {
        self.nodes.iter_mut().map(|n| (n.key, &mut n.value))
    }

    fn touch(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old_head = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old_head;
        }
        match old_head {
            NIL => self.tail = i,
            h => self.nodes[h as usize].prev = i,
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut lru = Lru::new(3);
        for k in 1..=3 {
            assert!(lru.get_or_insert_with(k, || k * 10).1.is_none());
        }
        // Touch 1, so 2 is now the oldest.
        assert_eq!(lru.get_mut(1).copied(), Some(10));
        let (v, evicted) = lru.get_or_insert_with(4, || 40);
        assert_eq!(*v, 40);
        assert_eq!(evicted, Some((2, 20)));
        assert!(lru.get_mut(2).is_none());
        assert_eq!(lru.len(), 3);
        // An existing key is found, not replaced.
        let (v, evicted) = lru.get_or_insert_with(3, || 99);
        assert_eq!((*v, evicted), (30, None));
    }

    #[test]
    fn capacity_zero_means_one() {
        let mut lru = Lru::new(0);
        assert_eq!(lru.capacity(), 1);
        lru.get_or_insert_with(1, || ());
        assert_eq!(lru.get_or_insert_with(2, || ()).1, Some((1, ())));
        assert_eq!(lru.len(), 1);
    }

    proptest! {
        /// Agrees with a naive model (a queue ordered by recency) on every operation.
        #[test]
        fn matches_a_naive_model(cap in 1usize..8, ops in proptest::collection::vec((0u64..12, any::<bool>()), 0..300)) {
            let mut lru = Lru::new(cap);
            let mut model: VecDeque<(u64, u64)> = VecDeque::new();
            for (step, (key, insert)) in ops.into_iter().enumerate() {
                let pos = model.iter().position(|&(k, _)| k == key);
                if insert {
                    let (v, evicted) = lru.get_or_insert_with(key, || step as u64);
                    let got = *v;
                    match pos {
                        Some(p) => {
                            let e = model.remove(p).unwrap_or_default();
                            prop_assert_eq!(got, e.1);
                            prop_assert_eq!(evicted, None);
                            model.push_front(e);
                        }
                        None => {
                            let expect = if model.len() == cap { model.pop_back() } else { None };
                            prop_assert_eq!(evicted, expect);
                            prop_assert_eq!(got, step as u64);
                            model.push_front((key, step as u64));
                        }
                    }
                } else {
                    let got = lru.get_mut(key).copied();
                    prop_assert_eq!(got, pos.map(|p| model[p].1));
                    if let Some(p) = pos {
                        let e = model.remove(p).unwrap_or_default();
                        model.push_front(e);
                    }
                }
                prop_assert_eq!(lru.len(), model.len());
            }
        }
    }
}
