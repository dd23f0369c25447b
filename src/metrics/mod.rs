//! Metrics: one name table, per-worker single-writer shards, Prometheus text.
//!
//! Files: `names` (the table of every metric family).

pub mod names;
