//! Load balancing over one cluster's endpoints, per worker: pure code.
//!
//! No atomics, no locks, no IO, no clock and no global rng: `now` and the rng come
//! in as arguments, so every test is deterministic (DESIGN.md §1, §2).

mod hash;

pub use hash::hash_bytes;
