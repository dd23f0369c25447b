//! The `ringway-load` command: parses the arguments and runs either a load
//! test (summary or JSON on stdout) or the `serve` upstream.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use ringway_load::cli::{self, Command};
use ringway_load::request::Target;
use ringway_load::{run_load, spawn_serve, LoadOptions};

fn describe(o: &LoadOptions) -> String {
    let stop = match o.requests {
        Some(n) => format!("{n} requests"),
        None => format!("{:?}", o.duration),
    };
    let mode = match o.rate {
        Some(r) => format!("open loop at {r} req/s"),
        None => "closed loop".to_string(),
    };
    format!(
        "ringway-load: {} connections on {} thread(s), {stop}, {mode}, {} {}",
        o.connections, o.threads, o.method, o.url
    )
}

fn main() -> ExitCode {
    let command = match cli::parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("ringway-load: {msg}\n(see ringway-load --help)");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => print!("{}", cli::USAGE),
        Command::Version => println!("ringway-load {}", env!("CARGO_PKG_VERSION")),
        Command::Load { mut opts, json } => {
            // Reject a bad URL before printing the banner.
            if let Err(e) = Target::parse(&opts.url) {
                eprintln!("ringway-load: {e}");
                return ExitCode::from(2);
            }
            opts.progress = std::io::stderr().is_terminal();
            if !json {
                println!("{}", describe(&opts));
            }
            match run_load(opts) {
                Ok(report) if json => println!("{}", report.to_json()),
                Ok(report) => print!("{}", report.summary()),
                Err(e) => {
                    eprintln!("ringway-load: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Serve(opts) => {
            let threads = opts.threads;
            match spawn_serve(opts) {
                Ok(handle) => {
                    eprintln!(
                        "ringway-load serve: listening on {} ({threads} thread(s))",
                        handle.local_addr()
                    );
                    handle.wait();
                }
                Err(e) => {
                    eprintln!("ringway-load serve: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}
