//! The control side, off the worker threads: signal handling (SIGTERM/SIGINT
//! drain, SIGHUP reload) and the one reload path every config change takes:
//! parse → validate → compile → publish. Nothing on the data path imports it.
//!
//! The admin HTTP endpoint lives here too, on its own threads: `http` (the
//! server, its limits and connection cap), `conn` (one connection's request
//! loop), `api` (the routes, behind the `AdminBackend` seam the running
//! server implements) and `auth` (the optional bearer token).

mod api;
mod auth;
mod conn;
mod http;
#[cfg(test)]
mod tests;

pub use api::{AdminBackend, EndpointUpdate};
pub use auth::load_token;
pub use http::{AdminServer, Limits};

use crate::config::{self, ConfigErrors, Snapshot};
use crate::worker::Server;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Compile `source` as the next generation and publish it. On any error the
/// running config stays as it is.
pub fn apply(server: &Server, source: &str, origin: &str) -> Result<u64, ConfigErrors> {
    let current = server.shared().load();
    let next = config::parse(source, origin, current.generation + 1)?;
    check_listeners_unchanged(&current, &next).map_err(|message| ConfigErrors {
        origin: origin.to_string(),
        errors: vec![config::ConfigError {
            line: 1,
            column: 1,
            message,
        }],
    })?;
    let generation = next.generation;
    server.publish(next);
    Ok(generation)
}

/// Workers bind their sockets at start, so a reload may change routes,
/// clusters and limits but not the set of listeners.
fn check_listeners_unchanged(current: &Snapshot, next: &Snapshot) -> Result<(), String> {
    let same = current.listeners.len() == next.listeners.len()
        && current.listeners.iter().zip(&next.listeners).all(|(a, b)| {
            a.name == b.name
                && (a.address == b.address || b.address.port() == 0)
                && std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind)
        });
    if same {
        Ok(())
    } else {
        Err("adding, removing or re-addressing listeners needs a restart".to_string())
    }
}

/// Handle signals until a drain is requested: SIGHUP reloads `config_path`.
/// Returns once SIGTERM or SIGINT started the drain.
pub fn run_signals(server: Arc<Server>, config_path: PathBuf) -> io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    for signal in signals.forever() {
        match signal {
            SIGHUP => reload_file(&server, &config_path),
            _ => {
                eprintln!("ringway: draining (signal {signal})");
                server.drain();
                return Ok(());
            }
        }
    }
    Ok(())
}

fn reload_file(server: &Server, path: &Path) {
    let origin = path.display().to_string();
    let result = std::fs::read_to_string(path)
        .map_err(|e| format!("{origin}: cannot read: {e}"))
        .and_then(|source| apply(server, &source, &origin).map_err(|e| e.to_string()));
    match result {
        Ok(generation) => eprintln!("ringway: reloaded {origin} as generation {generation}"),
        Err(e) => eprintln!("ringway: reload rejected, the running config stays:\n{e}"),
    }
}
