//! Per-key rate limits (one bucket per client IP or header value) that hold for the
//! whole process, in bounded memory, with no lock.
//!
//! # How the global rate is kept
//!
//! Dividing the rate by the worker count would give a client whose connections all
//! land on one core a quarter of its rate on four cores (DESIGN.md §1 forbids that),
//! so keys share state across workers:
//!
//! - A [`KeyedReservoir`] is a process-wide table of `slots` words (a power of two,
//!   64 to 2^20; 8 bytes each). Each word packs a 12-bit key tag with that key's
//!   GCRA TAT (the same bucket as [`Reservoir`](super::Reservoir), 52 bits in units of
//!   1/8 µs: 17 years of uptime). A key hashes — SipHash seeded per table, so clients
//!   cannot aim collisions — to two candidate slots and a tag.
//! - A key uses the candidate carrying its tag. Otherwise it claims a candidate whose
//!   bucket is full (TAT ≤ now): a full bucket holds no state, so giving it to another
//!   key loses nothing, and an idle key's slot is free for reuse without any sweep.
//! - Only when both candidates belong to other keys that have drained part of their
//!   burst does a key share its first candidate with that key. While they share, the
//!   two together stay within one key's rate (tighter, never looser); what the
//!   newcomer spent there is not remembered if it later finds a free slot. With `K`
//!   keys draining at once in `S` slots this happens to roughly `(K/S)²` of keys.
//! - Per worker, a [`KeyedLimiter`] keeps per-key token caches (the same batching
//!   as [`LocalBucket`](super::LocalBucket)) in an LRU of fixed capacity. Evicting a
//!   key gives its unspent tokens back; the shared slot keeps the key's debt, so an
//!   evicted client that comes back is still limited.
//!
//! So each key gets its configured rate process-wide within the bounds documented in
//! `ratelimit`, memory is `8·S` bytes shared plus `capacity` small entries per worker
//! whatever the number of distinct keys, and the per-request cost is a hash, an LRU
//! lookup and, once per batch of that key (often every request: per-key rates are
//! small), one uncontended CAS on that key's slot. Rounding each take down to 1/8 µs
//! errs towards admitting ≤ 1% more at per-key rates up to 80,000 rps.

use std::{
    collections::hash_map::{DefaultHasher, RandomState},
    hash::{BuildHasher, Hash, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{
    lru::Lru,
    ratelimit::{min_take, Gcra, TokenCache},
    RateLimit,
};

const TAG_BITS: u32 = 12;
const TAT_BITS: u32 = 64 - TAG_BITS;
const TAT_MASK: u64 = (1 << TAT_BITS) - 1;
/// TAT units a second: 125 ns each.
const UNITS_PER_SEC: u64 = 8_000_000;
const MIN_SLOTS: usize = 64;
/// Slot indices come from hash bits 0..20 and 26..46, the tag from bits 52..64.
const MAX_SLOTS: usize = 1 << 20;

fn tag_of_hash(hash: u64) -> u64 {
    hash >> TAT_BITS
}

fn tag_of(word: u64) -> u64 {
    word >> TAT_BITS
}

fn tat_of(word: u64) -> u64 {
    word & TAT_MASK
}

fn pack(tag: u64, tat: u64) -> u64 {
    (tag << TAT_BITS) | tat.min(TAT_MASK)
}

/// Which slot a key's bucket lives in right now.
#[derive(Clone, Copy, Debug)]
struct Placement {
    slot: usize,
    /// The word read from it.
    word: u64,
    /// The tag to write back: the key's own when it owns or claims the slot.
    tag: u64,
}

/// The process-wide table of per-key buckets for one keyed rate limit; share it as
/// `Arc<KeyedReservoir>` and give each worker a [`KeyedLimiter`] over it.
#[derive(Debug)]
pub struct KeyedReservoir {
    limit: RateLimit,
    gcra: Gcra,
    batch: u32,
    epoch: Instant,
    /// Secret prefix for key hashing, so slot and tag collisions cannot be aimed.
    seed: u64,
    slots: Box<[AtomicU64]>,
}

impl KeyedReservoir {
    /// A table of about `slots` buckets (rounded up to a power of two in 64..=2^20)
    /// for `limit` per key, shared by `workers` workers.
    pub fn new(limit: RateLimit, slots: usize, workers: usize, now: Instant) -> Self {
        Self::with_seed(limit, slots, workers, now, RandomState::new().hash_one(0u64))
    }

    /// As [`KeyedReservoir::new`] with a fixed hash seed (tests, reproducible runs).
    pub fn with_seed(limit: RateLimit, slots: usize, workers: usize, now: Instant, seed: u64) -> Self {
        let n = slots.clamp(MIN_SLOTS, MAX_SLOTS).next_power_of_two();
        KeyedReservoir {
            limit,
            gcra: Gcra::new(limit, UNITS_PER_SEC),
            batch: limit.batch(workers),
            epoch: now,
            seed,
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Tokens a worker's per-key cache takes at once.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// The key's identity in this table: callers may hash once and pass the hash.
    pub fn hash_key(&self, key: &[u8]) -> u64 {
        let mut h = DefaultHasher::new();
        self.seed.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }

    /// Whole tokens the key's bucket holds now (a key without a slot has a full one).
    pub fn available(&self, hash: u64, now: Instant) -> u64 {
        let p = self.place(hash, self.units(now));
        self.gcra.available(self.tat(p), self.units(now))
    }

    /// Takes between `min` and `max` tokens from the key's bucket; see
    /// [`Reservoir::take_between`](super::Reservoir::take_between).
    pub fn take_between(&self, hash: u64, min: u32, max: u32, now: Instant) -> Result<u32, Instant> {
        let now_u = self.units(now);
        loop {
            let p = self.place(hash, now_u);
            let (tat, n) = self
                .gcra
                .take(self.tat(p), now_u, u64::from(min), u64::from(max))
                .map_err(|at| self.instant(at))?;
            if self.slots[p.slot]
                .compare_exchange_weak(p.word, pack(p.tag, tat), Relaxed, Relaxed)
                .is_ok()
            {
                return Ok(u32::try_from(n).unwrap_or(max));
            }
        }
    }

    /// Returns unspent tokens to the key's bucket, if the key still owns a slot.
    pub fn give_back(&self, hash: u64, n: u32) {
        if n == 0 {
            return;
        }
        let tag = tag_of_hash(hash);
        let (a, b) = self.candidates(hash);
        for slot in [a, b] {
            let back = |w: u64| (tag_of(w) == tag).then(|| pack(tag, self.gcra.give_back(tat_of(w), u64::from(n))));
            if self.slots[slot].fetch_update(Relaxed, Relaxed, back).is_ok() {
                return;
            }
        }
    }

    /// When `n` tokens will be in the key's bucket if nobody takes any meanwhile.
    pub fn ready_at(&self, hash: u64, n: u32, now: Instant) -> Instant {
        let now_u = self.units(now);
        let n = u64::from(n);
        match self.gcra.take(self.tat(self.place(hash, now_u)), now_u, n, n) {
            Ok(_) => now,
            Err(at) => self.instant(at),
        }
    }

    fn candidates(&self, hash: u64) -> (usize, usize) {
        let mask = self.slots.len() - 1;
        // Truncation is the point: slot bits come from the low and middle of the hash.
        let a = (hash as usize) & mask;
        let b = ((hash >> 26) as usize) & mask;
        (a, if b == a { a ^ 1 } else { b })
    }

    /// The key's own slot, else a free (full) candidate to claim, else its first
    /// candidate shared with the key that owns it.
    fn place(&self, hash: u64, now_u: u64) -> Placement {
        let tag = tag_of_hash(hash);
        let (a, b) = self.candidates(hash);
        let wa = self.slots[a].load(Relaxed);
        let wb = self.slots[b].load(Relaxed);
        let mine = |slot, word| Placement { slot, word, tag };
        if tag_of(wa) == tag {
            mine(a, wa)
        } else if tag_of(wb) == tag {
            mine(b, wb)
        } else if tat_of(wa) <= now_u {
            mine(a, wa)
        } else if tat_of(wb) <= now_u {
            mine(b, wb)
        } else {
            Placement {
                slot: a,
                word: wa,
                tag: tag_of(wa),
            }
        }
    }

    /// The TAT to compute with: a claimed slot is full whatever its old owner left.
    fn tat(&self, p: Placement) -> u64 {
        if tag_of(p.word) == p.tag {
            tat_of(p.word)
        } else {
            0
        }
    }

    fn units(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos / u128::from(1_000_000_000 / UNITS_PER_SEC)).unwrap_or(TAT_MASK)
    }

    fn instant(&self, units: u64) -> Instant {
        let nanos = units.saturating_mul(1_000_000_000 / UNITS_PER_SEC);
        self.epoch
            .checked_add(Duration::from_nanos(nanos))
            .unwrap_or(self.epoch)
    }
}

/// One worker's view of a keyed limit: per-key token caches in a bounded LRU.
#[derive(Debug)]
pub struct KeyedLimiter {
    shared: Arc<KeyedReservoir>,
    cache: Lru<TokenCache>,
}

impl KeyedLimiter {
    /// A limiter remembering at most `capacity` keys on this worker (at least 1).
    pub fn new(shared: Arc<KeyedReservoir>, capacity: usize) -> Self {
        KeyedLimiter {
            shared,
            cache: Lru::new(capacity),
        }
    }

    pub fn reservoir(&self) -> &Arc<KeyedReservoir> {
        &self.shared
    }

    /// Admits one request for `key` or refuses it.
    pub fn try_acquire(&mut self, key: &[u8], now: Instant) -> bool {
        let hash = self.shared.hash_key(key);
        self.try_acquire_hashed(hash, now)
    }

    /// As [`KeyedLimiter::try_acquire`], for a key already hashed with
    /// [`KeyedReservoir::hash_key`].
    pub fn try_acquire_hashed(&mut self, hash: u64, now: Instant) -> bool {
        let shared = &*self.shared;
        let (cache, evicted) = self.cache.get_or_insert_with(hash, TokenCache::default);
        if let Some((old, mut old_cache)) = evicted {
            shared.give_back(old, old_cache.drain());
        }
        cache.acquire(
            now,
            shared.batch(),
            |min, max| shared.take_between(hash, min, max, now),
            |n| shared.give_back(hash, n),
        )
    }

    /// How long a refused client of `key` should wait (for `retry-after`).
    pub fn retry_after(&self, key: &[u8], now: Instant) -> Duration {
        let hash = self.shared.hash_key(key);
        self.shared
            .ready_at(hash, min_take(self.shared.batch()), now)
            .saturating_duration_since(now)
    }

    /// Keys this worker currently remembers.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.len() == 0
    }

    /// The most keys this worker remembers before evicting the least recently used.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Gives every key's unspent tokens back (drain, snapshot swap).
    pub fn flush(&mut self) {
        for (hash, cache) in self.cache.iter_mut() {
            self.shared.give_back(hash, cache.drain());
        }
    }
}

impl Drop for KeyedLimiter {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests;
