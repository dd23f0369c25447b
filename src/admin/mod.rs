//! The control side, off the worker threads: signal handling (SIGTERM/SIGINT
//! drain, SIGHUP reload) and the one reload path every config change takes:
//! parse → validate → compile → publish. Nothing on the data path imports it.
//!
//! `control` holds the reload path and the signals; `backend` answers the
//! admin API from the running server.
//!
//! The admin HTTP endpoint lives here too, on its own threads: `http` (the
//! server, its limits and connection cap), `conn` (one connection's request
//! loop), `api` (the routes, behind the `AdminBackend` seam the running
//! server implements) and `auth` (the optional bearer token).

mod api;
mod auth;
mod backend;
mod conn;
mod control;
mod http;
#[cfg(test)]
mod tests;

pub use api::{AdminBackend, ConfigRefused, EndpointsRefused};
pub use auth::load_token;
pub use backend::ServerBackend;
pub use control::{apply, catch_signals, run_signals, Rejected};
pub use http::{AdminServer, Limits};
