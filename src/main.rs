//! The `ringway` command line: parse arguments, load the config, start the
//! workers and the control thread, and wait for the drain to finish.

use ringway::{admin, config, demo, worker::Server};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage:
  ringway [run] [-c FILE]   run the proxy (default FILE: config/ringway.toml)
  ringway check -c FILE     validate FILE; errors print as FILE:LINE:COL: message
  ringway demo              in-process upstreams + proxy + load, then a summary
  ringway --version";

enum Command {
    Run(PathBuf),
    Check(PathBuf),
    Demo,
    Help,
    Version,
}

/// The command the arguments ask for, or what is wrong with them.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut command = None;
    let mut file = PathBuf::from("config/ringway.toml");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "run" | "check" | "demo" if command.is_none() => command = Some(arg),
            "-c" | "--config" => file = args.next().ok_or("-c needs a file")?.into(),
            "-V" | "--version" => return Ok(Command::Version),
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(match command.as_deref() {
        Some("check") => Command::Check(file),
        Some("demo") => Command::Demo,
        _ => Command::Run(file),
    })
}

fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(message) => {
            // A usage error is the caller's to see, not output to parse.
            ringway::stderr_line!("ringway: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            ringway::stdout_line!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            ringway::stdout_line!("ringway {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Check(path) => config::load_file(&path, 1)
            .map(|s| {
                ringway::stdout_line!(
                    "{}: ok ({} listeners, {} clusters)",
                    path.display(),
                    s.listeners.len(),
                    s.clusters.len()
                )
            })
            .map_err(|e| e.to_string()),
        Command::Run(path) => run(path),
        Command::Demo => demo::run().map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            ringway::stderr_line!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> Result<(), String> {
    let signals = admin::catch_signals().map_err(|e| format!("ringway: signals: {e}"))?;
    let snapshot = config::load_file(&path, 1).map_err(|e| e.to_string())?;
    let admin_settings = snapshot.admin.clone();
    let server = Arc::new(Server::start(snapshot).map_err(|e| format!("ringway: cannot start: {e}"))?);
    for (name, addr) in server.listeners() {
        ringway::stderr_line!("ringway: listener {name} on {addr}");
    }
    let _admin = match admin_settings {
        Some(settings) => {
            let token = match &settings.token_file {
                Some(file) => Some(admin::load_token(file).map_err(|e| format!("ringway: admin token: {e}"))?),
                None => None,
            };
            let backend = Arc::new(admin::ServerBackend::new(server.clone()));
            let admin = admin::AdminServer::start(settings.address, token, backend)
                .map_err(|e| format!("ringway: admin endpoint on {}: {e}", settings.address))?;
            ringway::stderr_line!("ringway: admin on {}", admin.local_addr());
            Some(admin)
        }
        None => None,
    };
    admin::run_signals(signals, server.clone(), path).map_err(|e| format!("ringway: signals: {e}"))?;
    ringway::stderr_line!("ringway: {} workers ready", server.worker_count());
    server.wait();
    ringway::stderr_line!("ringway: drained, bye");
    Ok(())
}
