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
    let mut next = config::parse(source, origin, current.generation + 1)?;
    // Port 0 means "any free port": on a reload, the one the listener has.
    for l in next.listeners.iter_mut().filter(|l| l.address.port() == 0) {
        if let Some(running) = current
            .listeners
            .iter()
            .find(|c| c.name == l.name && c.address.ip() == l.address.ip())
        {
            l.address = running.address;
        }
    }
    check_restart_only_settings(&current, &next).map_err(|message| ConfigErrors {
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

/// What a reload cannot change, and new listeners that could not bind: both
/// are refused before anything is published.
fn check_restart_only_settings(current: &Snapshot, next: &Snapshot) -> Result<(), String> {
    if current.admin != next.admin {
        return Err("the [admin] section changes only with a restart".to_string());
    }
    if current.runtime.workers != next.runtime.workers || current.runtime.pin_cores != next.runtime.pin_cores {
        return Err("runtime.workers and runtime.pin_cores change only with a restart".to_string());
    }
    for l in &next.listeners {
        let running = current
            .listeners
            .iter()
            .any(|c| c.name == l.name && c.address == l.address);
        if running {
            continue;
        }
        if l.address.port() == 0 {
            return Err(format!(
                "listener {}: a listener added by a reload needs an explicit port",
                l.name
            ));
        }
        probe_bind(l.address).map_err(|e| format!("listener {}: cannot listen on {}: {e}", l.name, l.address))?;
    }
    Ok(())
}

/// Workers bind with SO_REUSEPORT, so a probe that does the same fails only
/// when something else holds the address. It binds without listening, so it
/// never takes a connection meant for anyone.
fn probe_bind(addr: std::net::SocketAddr) -> io::Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
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
