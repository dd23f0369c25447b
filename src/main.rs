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
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut command = None;
    let mut file = PathBuf::from("config/ringway.toml");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "run" | "check" | "demo" if command.is_none() => command = Some(arg),
            "-c" | "--config" => file = args.next().ok_or("-c needs a file")?.into(),
            "-V" | "--version" => return Err(format!("ringway {}", env!("CARGO_PKG_VERSION"))),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
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
            let is_info = message.starts_with("ringway ") || message.starts_with("usage");
            println!("{message}");
            return if is_info { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
    };
    let result = match command {
        Command::Check(path) => config::load_file(&path, 1)
            .map(|s| {
                println!(
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
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> Result<(), String> {
    let snapshot = config::load_file(&path, 1).map_err(|e| e.to_string())?;
    let admin_settings = snapshot.admin.clone();
    let server = Arc::new(Server::start(snapshot).map_err(|e| format!("ringway: cannot start: {e}"))?);
    for (name, addr) in server.listeners() {
        eprintln!("ringway: listener {name} on {addr}");
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
            eprintln!("ringway: admin on {}", admin.local_addr());
            Some(admin)
        }
        None => None,
    };
    admin::run_signals(server.clone(), path).map_err(|e| format!("ringway: signals: {e}"))?;
    eprintln!("ringway: {} workers ready", server.worker_count());
    server.wait();
    eprintln!("ringway: drained, bye");
    Ok(())
}
