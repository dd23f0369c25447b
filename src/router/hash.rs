//! A small FxHash-style hasher for the route table's lookup maps.
//!
//! Every request hashes its host, its dotted tails when wildcard routes exist,
//! and its path, so the hasher sits on the hot path (on bench/router.rs, std's
//! `RandomState` made lookups 20–35% slower). std's SipHash is built to resist
//! collision flooding, which these maps do not need: their keys come from the
//! config alone, and a hashbrown lookup's probe length depends on what is in
//! the table, not on the key being looked up. An attacker who picks request
//! hosts and paths can therefore only make lookups miss, never make them slow.
//!
//! Nothing here is a general-purpose hasher: do not use it for maps whose keys
//! come from the network.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The multiplier from Firefox's and rustc's FxHash: odd, with its bits spread
/// so that one multiply mixes each input word into the high half of the state.
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// A `HashMap` keyed from config, looked up with request data.
pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Word-at-a-time multiply-rotate hasher. Not collision resistant; see the
/// module docs for why that is acceptable here.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        let n = rest.len();
        // The tail is read with fixed-size loads (two overlapping 4-byte ones,
        // or first/middle/last byte) rather than copied into a padded word:
        // a variable-length copy is a memcpy call, and dropping it took about
        // 20 ns off every lookup in bench/router.rs. Mixing in `n` keeps tails
        // like "ab" and "abb", which read the same bytes, apart.
        let word = if n >= 4 {
            u64::from(read_u32(&rest[..4])) | u64::from(read_u32(&rest[n - 4..])) << 32
        } else if n > 0 {
            u64::from(rest[0]) | u64::from(rest[n / 2]) << 8 | u64::from(rest[n - 1]) << 16
        } else {
            return;
        };
        self.add(word ^ (n as u64) << 61);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Multiplying only carries entropy upwards, yet hashbrown picks the
        // bucket from the low bits: keys that differ in their last bytes (like
        // /svc/001 and /svc/002) would share buckets. Folding the high half of
        // a 128-bit product back onto the low half spreads every bit down.
        let product = u128::from(self.hash) * u128::from(SEED);
        (product as u64) ^ ((product >> 64) as u64)
    }
}

/// `bytes` must be 4 long; callers slice exactly that.
#[inline]
fn read_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(bytes);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
        BuildHasherDefault::<FxHasher>::default().hash_one(value)
    }

    #[test]
    fn equal_keys_hash_equal_and_near_keys_differ() {
        assert_eq!(hash_of("/api/v1/users"), hash_of("/api/v1/users"));
        assert_ne!(hash_of("/api/v1/users"), hash_of("/api/v1/userz"));
        assert_ne!(hash_of(&b"ab"[..]), hash_of(&b"ab\0"[..]));
        // Tails that read the same bytes but differ in length.
        assert_ne!(hash_of("ab"), hash_of("abb"));
        assert_ne!(hash_of("abcde"), hash_of("abcdde"));
    }

    #[test]
    fn low_bits_spread_for_keys_differing_only_at_the_end() {
        // Paths such as /svc/000 … /svc/255 differ only in their last word;
        // they must not pile into a handful of buckets.
        let buckets: std::collections::HashSet<u64> = (0..256)
            .map(|i| hash_of(format!("/svc/{i:03}").as_str()) & 0xff)
            .collect();
        assert!(buckets.len() > 128, "only {} of 256 buckets", buckets.len());
    }
}
