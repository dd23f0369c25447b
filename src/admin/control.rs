//! The one path every config change takes (PUT /config, SIGHUP, endpoint
//! updates): parse → validate → compile → publish; and signal handling.

use crate::config::{self, ConfigErrors, EndpointSource, Snapshot};
use crate::worker::Server;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Compile `source` as the next generation and publish it. On any error the
/// running config stays as it is.
pub fn apply(server: &Server, source: &str, origin: &str) -> Result<u64, Rejected> {
    let whole = |_: &str| Ok::<_, std::convert::Infallible>(source.to_string());
    apply_edit(server, origin, whole).map_err(|e| match e {
        EditError::Invalid { errors, .. } => Rejected::Invalid(errors),
        EditError::Draining => Rejected::Draining,
        EditError::Refused(never) => match never {},
    })
}

/// Why a whole config was not applied.
#[derive(Debug)]
pub enum Rejected {
    /// It does not compile, or cannot take effect: located errors.
    Invalid(ConfigErrors),
    /// A drain began: the config in force is the last this process serves
    /// (a new one would bind no listener and outlive nothing).
    Draining,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Invalid(errors) => errors.fmt(f),
            Rejected::Draining => f.write_str("the proxy is draining: it takes no new config\n"),
        }
    }
}

impl std::error::Error for Rejected {}

/// Why an edit of the config in force changed nothing.
#[derive(Debug)]
pub enum EditError<R> {
    /// The edit itself was refused: nothing compiled.
    Refused(R),
    /// The edited config does not compile; `errors` locate in `source`.
    Invalid { source: String, errors: ConfigErrors },
    /// A drain began (see [`Rejected::Draining`]).
    Draining,
}

/// How many times a change is compiled outside the publisher's lock before,
/// as others keep landing meanwhile, it waits its turn under the lock.
const UNLOCKED_ATTEMPTS: usize = 4;

/// As [`apply`], for a change to the config in force: `edit` turns its
/// source into the next one.
///
/// The change is compiled (files read, names resolved) before the
/// publisher's lock is taken, so that a slow lookup holds up no other
/// change; what depends on the config in force is settled under it. Should
/// another generation land meanwhile (an edit, a push, or discovery's
/// fresher endpoints, which a compile from before would undo), it is made
/// again on that one.
pub fn apply_edit<R>(
    server: &Server,
    origin: &str,
    edit: impl Fn(&str) -> Result<String, R>,
) -> Result<u64, EditError<R>> {
    // The listeners before and after the generation that lands, to log
    // what it opens and closes.
    let (mut replaced, mut landed) = (Vec::new(), Vec::new());
    let mut settled = None;
    for _ in 0..UNLOCKED_ATTEMPTS {
        let base = server.shared().load();
        let source = edit(&base.source).map_err(EditError::Refused)?;
        let compiled = config::parse_next(&source, origin, &base);
        // Err(None): another generation landed first.
        let attempt = server.update(|current| {
            if server.shared().is_draining() {
                return Err(Some(EditError::Draining));
            }
            if current.generation != base.generation {
                return Err(None);
            }
            replaced = listener_addresses(current);
            compiled
                .and_then(|next| settle(current, next, &source, origin))
                .inspect(|next| landed = listener_addresses(next))
                .map_err(|errors| Some(EditError::Invalid { source, errors }))
        });
        match attempt {
            Err(None) => continue,
            Ok(generation) => settled = Some(Ok(generation)),
            Err(Some(refused)) => settled = Some(Err(refused)),
        }
        break;
    }
    let result = settled.unwrap_or_else(|| {
        server.update(|current| {
            if server.shared().is_draining() {
                return Err(EditError::Draining);
            }
            let source = edit(&current.source).map_err(EditError::Refused)?;
            replaced = listener_addresses(current);
            config::parse_next(&source, origin, current)
                .and_then(|next| settle(current, next, &source, origin))
                .inspect(|next| landed = listener_addresses(next))
                .map_err(|errors| EditError::Invalid { source, errors })
        })
    });
    // An edit refused before anything compiled (an unknown cluster, a
    // drain) is not a reload that failed.
    if !matches!(result, Err(EditError::Refused(_) | EditError::Draining)) {
        server.shared().count_reload(result.is_ok());
    }
    log_reload(origin, &result, &replaced, &landed);
    result
}

/// One line for what became of a reload, and one for each listener it
/// opened, renamed or closed (`before` and `after` its generation).
fn log_reload<R>(
    origin: &str,
    result: &Result<u64, EditError<R>>,
    before: &[(String, SocketAddr)],
    after: &[(String, SocketAddr)],
) {
    match result {
        Ok(generation) => {
            crate::stderr_line!("ringway: reloaded {origin} as generation {generation}");
            // Listeners are their addresses: a new name on one is a rename.
            let named_at = |list: &[(String, SocketAddr)], at: SocketAddr| {
                list.iter().find(|(_, a)| *a == at).map(|(n, _)| n.clone())
            };
            for (name, address) in after {
                match named_at(before, *address) {
                    None => crate::stderr_line!("ringway: listener {name} on {address}"),
                    Some(was) if was != *name => {
                        crate::stderr_line!("ringway: listener {was} on {address} renamed {name}")
                    }
                    Some(_) => {}
                }
            }
            for (name, address) in before.iter().filter(|(_, a)| named_at(after, *a).is_none()) {
                crate::stderr_line!("ringway: listener {name} on {address} closed");
            }
        }
        Err(EditError::Invalid { errors, .. }) => {
            crate::stderr_line!("ringway: reload rejected, the running config stays:\n{errors}")
        }
        Err(EditError::Draining) => crate::stderr_line!("ringway: reload of {origin} refused: the proxy is draining"),
        // Nothing compiled: the caller's answer says why.
        Err(EditError::Refused(_)) => {}
    }
}

fn listener_addresses(snapshot: &Snapshot) -> Vec<(String, SocketAddr)> {
    snapshot.listeners.iter().map(|l| (l.name.clone(), l.address)).collect()
}

/// The compiled `next` as the generation after `current`: what a reload
/// keeps from the running config, and what it may not change.
fn settle(current: &Snapshot, mut next: Snapshot, source: &str, origin: &str) -> Result<Snapshot, ConfigErrors> {
    next.generation = current.generation + 1;
    // Port 0 means "any free port": on a reload, the one the listener has.
    for l in next.listeners.iter_mut().filter(|l| l.address.port() == 0) {
        let running = current
            .listeners
            .iter()
            .find(|c| c.name == l.name && c.address.ip() == l.address.ip());
        if let Some(running) = running {
            l.address = running.address;
        }
    }
    keep_dns_endpoints(current, &mut next);
    check_restart_only_settings(current, &next)
        .map_err(|(section, message)| config::error_at(source, origin, section.offset(source), message))?;
    // Validation admits only what the route tables take; should the two
    // ever disagree, the config is refused here rather than published
    // without tables.
    crate::worker::compile_routes(&next).map_err(|message| config::error_at(source, origin, 0, message))?;
    Ok(next)
}

/// A DNS cluster whose name did not resolve while the config compiled
/// keeps the endpoints last resolved for the same name, as a failed
/// refresh does, rather than none until discovery's next look.
fn keep_dns_endpoints(current: &Snapshot, next: &mut Snapshot) {
    for cluster in next.clusters.iter_mut().filter(|c| c.endpoints.is_empty()) {
        let EndpointSource::Dns { name, family, .. } = &cluster.source else {
            continue;
        };
        let resolved_before = current.clusters.iter().find(|c| {
            c.name == cluster.name
                && matches!(&c.source, EndpointSource::Dns { name: before, family: was, .. } if before == name && was == family)
        });
        if let Some(before) = resolved_before {
            cluster.endpoints = before.endpoints.clone();
        }
    }
}

/// Where in the new source a reload's refusal points.
enum Section<'a> {
    Admin,
    Runtime,
    Listener(&'a str),
}

impl Section<'_> {
    /// Byte offset of the section's table in `source` (0 when it has none).
    fn offset(&self, source: &str) -> usize {
        #[derive(serde::Deserialize)]
        struct Tables {
            runtime: Option<toml::Spanned<toml::Table>>,
            admin: Option<toml::Spanned<toml::Table>>,
            #[serde(default)]
            listener: Vec<toml::Spanned<toml::Table>>,
        }
        let Ok(tables) = toml::from_str::<Tables>(source) else {
            return 0;
        };
        let span = match self {
            Section::Admin => tables.admin.map(|t| t.span()),
            Section::Runtime => tables.runtime.map(|t| t.span()),
            Section::Listener(name) => tables
                .listener
                .iter()
                .find(|l| l.get_ref().get("name").and_then(|n| n.as_str()) == Some(name))
                .map(|l| l.span()),
        };
        span.map_or(0, |s| s.start)
    }
}

/// What a reload cannot change, and new listeners that could not bind: both
/// are refused before anything is published.
fn check_restart_only_settings<'a>(current: &Snapshot, next: &'a Snapshot) -> Result<(), (Section<'a>, String)> {
    if current.admin != next.admin {
        return Err((
            Section::Admin,
            "the [admin] section changes only with a restart".to_string(),
        ));
    }
    if current.runtime.workers != next.runtime.workers || current.runtime.pin_cores != next.runtime.pin_cores {
        return Err((
            Section::Runtime,
            "runtime.workers and runtime.pin_cores change only with a restart".to_string(),
        ));
    }
    let running: Vec<SocketAddr> = current.listeners.iter().map(|c| c.address).collect();
    for l in &next.listeners {
        // A running listener is its address: renamed, it keeps its socket.
        // (Port 0 here is a new listener's: a kept one has its port by now.)
        if l.address.port() != 0 && current.listeners.iter().any(|c| c.address == l.address) {
            continue;
        }
        let at = Section::Listener(&l.name);
        if l.address.port() == 0 {
            let message = format!(
                "listener {}: a listener added by a reload needs an explicit port",
                l.name
            );
            return Err((at, message));
        }
        // Any other address must be free, but for Ringway's own sockets.
        if let Err(e) = crate::listener::probe(l.address, &running) {
            return Err((at, format!("listener {}: {e}", l.name)));
        }
    }
    Ok(())
}

/// Take over the signals `run_signals` handles, before the start: one that
/// comes while the listeners bind (which can wait for an address in use)
/// is held for then, rather than ending the process by its default action.
pub fn catch_signals() -> io::Result<Signals> {
    Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
}

/// Handle `signals` on a thread of their own: SIGHUP reloads `config_path`,
/// SIGUSR1 reopens the access log file;
/// SIGTERM or SIGINT starts a graceful drain, and a second one exits at once.
pub fn run_signals(mut signals: Signals, server: Arc<Server>, config_path: PathBuf) -> io::Result<()> {
    std::thread::Builder::new()
        .name("ringway-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => reload_file(&server, &config_path),
                    SIGUSR1 => server.reopen_log(),
                    _ if server.shared().is_draining() => {
                        crate::stderr_line!("ringway: second signal {signal} during the drain, exiting now");
                        std::process::exit(1);
                    }
                    _ => {
                        crate::stderr_line!("ringway: draining (signal {signal})");
                        server.drain();
                    }
                }
            }
        })?;
    Ok(())
}

fn reload_file(server: &Server, path: &Path) {
    let origin = path.display().to_string();
    match crate::config::read_file(path) {
        // `apply` logs what became of it.
        Ok(source) => {
            let _ = apply(server, &source, &origin);
        }
        Err(errors) => {
            // A reload that failed, as one that does not compile: the
            // RingwayConfigReloadFailed alert is for both.
            server.shared().count_reload(false);
            crate::stderr_line!("ringway: reload rejected, the running config stays:\n{errors}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_next(current: &Snapshot, source: &str, origin: &str) -> Result<Snapshot, ConfigErrors> {
        settle(current, config::parse_next(source, origin, current)?, source, origin)
    }

    fn dns_cluster(name: &str) -> Snapshot {
        let toml = format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[listener.route]]\ncluster = \"c\"\n\
             [[cluster]]\nname = \"c\"\ndns = \"{name}\"\n"
        );
        config::parse(&toml, "t", 1).expect("valid")
    }

    /// What a reload may not change is refused where it is written.
    #[test]
    fn restart_only_changes_point_at_their_section() {
        // `l` as a running one is: on its port (kept, never bound again).
        let source = |workers: usize, listeners: &str| {
            format!(
                "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:45678\"\n[[listener.route]]\ncluster = \"c\"\n\
                 {listeners}\n[[cluster]]\nname = \"c\"\nendpoints = [{{ address = \"127.0.0.1:1\" }}]\n\n\
                 [runtime]\nworkers = {workers}\n"
            )
        };
        let line_of = |text: &str, what: &str| text[..text.find(what).expect("present")].matches('\n').count() + 1;
        let current = config::parse(&source(1, ""), "t", 1).expect("valid");
        let more_workers = source(2, "");
        let e = compile_next(&current, &more_workers, "t").expect_err("workers change");
        let at = (e.errors[0].line, e.errors[0].column);
        assert_eq!(at, (line_of(&more_workers, "[runtime]"), 1), "the [runtime] table: {e}");
        let added = source(
            1,
            "[[listener]]\nname = \"extra\"\naddress = \"127.0.0.1:0\"\n[[listener.route]]\ncluster = \"c\"\n",
        );
        let e = compile_next(&current, &added, "t").expect_err("a new listener on port 0");
        let at = (e.errors[0].line, e.errors[0].column);
        assert_eq!(
            at,
            (line_of(&added, "[[listener]]\nname = \"extra\""), 1),
            "the new listener: {e}"
        );
    }

    /// A reload compiled while the name does not resolve keeps what it
    /// resolved to before; a cluster that now names another host does not.
    #[test]
    fn a_failed_lookup_on_reload_keeps_the_endpoints_resolved_before() {
        let current = dns_cluster("localhost:8080");
        assert!(!current.clusters[0].endpoints.is_empty(), "localhost resolves");
        let mut next = current.clone();
        next.clusters[0].endpoints.clear();
        keep_dns_endpoints(&current, &mut next);
        assert_eq!(next.clusters[0].endpoints, current.clusters[0].endpoints);

        let mut renamed = dns_cluster("localhost:9090");
        renamed.clusters[0].endpoints.clear();
        keep_dns_endpoints(&current, &mut renamed);
        assert!(
            renamed.clusters[0].endpoints.is_empty(),
            "another name, other endpoints"
        );
    }
}
