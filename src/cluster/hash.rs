//! A stable 64-bit hash for ring points and request hash keys.
//!
//! It must give the same value on every build, platform and process, because ring
//! positions are recomputed on every config swap and on every worker and must agree;
//! std's `DefaultHasher` promises none of that. FNV-1a is tiny and byte-at-a-time,
//! but its high bits mix poorly on short inputs, so the result goes through
//! MurmurHash3's 64-bit finalizer (`fmix64`), which spreads every input bit over the
//! whole word. Not a defence against hash flooding: nothing here is keyed by
//! attacker-chosen data in a table that could degrade.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Stable, well-mixed 64-bit hash of `data` (FNV-1a, then murmur3's `fmix64`).
pub fn hash_bytes(data: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// [`hash_bytes`] of `parts` joined by `separator`, without joining them:
/// for a field sent on several lines, which hashes as its combined value.
pub fn hash_joined<'a>(parts: impl Iterator<Item = &'a [u8]>, separator: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for (i, part) in parts.enumerate() {
        let before: &[u8] = if i == 0 { &[] } else { separator };
        for &b in before.iter().chain(part) {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    fmix64(h)
}

/// MurmurHash3's 64-bit finalizer: a bijection, so it never adds collisions, and
/// every output bit depends on every input bit. Used alone to re-mix request hashes
/// that callers may have built from small or sequential numbers.
pub(super) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_parts_hash_as_the_joined_bytes() {
        let parts: [&[u8]; 3] = [b"a", b"", b"bc"];
        assert_eq!(hash_joined(parts.into_iter(), b", "), hash_bytes(b"a, , bc"));
        assert_eq!(hash_joined(std::iter::empty(), b", "), hash_bytes(b""));
        assert_eq!(hash_joined([&b"x"[..]].into_iter(), b", "), hash_bytes(b"x"));
    }

    #[test]
    fn values_are_pinned() {
        // Ring placement depends on these exact values; a change here silently remaps
        // every ring_hash key on upgrade, so it must be a deliberate one.
        assert_eq!(hash_bytes(b""), fmix64(FNV_OFFSET));
        assert_eq!(hash_bytes(b"a"), fmix64(0xaf63_dc4c_8601_ec8c));
        assert_eq!(hash_bytes(b"foobar"), fmix64(0x8594_4171_f739_67e8));
        assert_eq!(fmix64(0), 0);
        assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
    }

    #[test]
    fn one_bit_flips_about_half_the_output() {
        // Avalanche check over short inputs, the case plain FNV is weak at.
        let mut total = 0u32;
        let mut samples = 0u32;
        for i in 0u32..256 {
            let base = hash_bytes(&i.to_le_bytes());
            for bit in 0..32 {
                let flipped = hash_bytes(&(i ^ (1 << bit)).to_le_bytes());
                total += (base ^ flipped).count_ones();
                samples += 1;
            }
        }
        let mean = f64::from(total) / f64::from(samples);
        assert!((30.0..34.0).contains(&mean), "mean flipped bits {mean}");
    }

    #[test]
    fn fmix64_spreads_sequential_inputs() {
        // Sequential request keys must not crowd one arc of the ring.
        let top_bytes: std::collections::HashSet<u64> = (0u64..1000).map(|i| fmix64(i) >> 56).collect();
        assert!(top_bytes.len() > 200, "only {} distinct top bytes", top_bytes.len());
    }
}
