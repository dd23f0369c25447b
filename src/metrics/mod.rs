//! Metrics: one name table, per-worker single-writer shards, Prometheus text.
//!
//! Each worker owns a [`Shard`] (in a `RefCell`, never shared) and interns its
//! label sets once, when it builds its plan: [`Shard::route_key`],
//! [`Shard::listener_key`], [`Shard::cluster_key`], [`Shard::endpoint_key`]
//! return small `Copy` keys. Recording with a key is an index into a vector:
//! no atomics, no locks, no string work. At scrape time the control thread
//! collects a clone of every worker's shard, folds them into one with
//! [`Shard::merge`] (by label values, since keys differ between workers) and
//! calls [`render`] with the [`Gauges`] it owns itself.
//!
//! This module is a leaf: no monoio, no IO, no clock. Files: `names` (the
//! table), `shard` (recording and merging), `slots` (series storage whose
//! slots can be released and reused), `latency` (duration histograms and
//! their `le` buckets), `render` (the exposition text).

mod latency;
pub mod names;
mod render;
mod shard;
mod slots;

#[cfg(test)]
mod tests;

pub use render::{render, Gauges};
pub use shard::{ClusterKey, EndpointKey, ListenerKey, RouteKey, Shard};
