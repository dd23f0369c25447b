//! The `ringway-load` command: parses the arguments and runs either a load
//! test (summary or JSON on stdout) or the `serve` upstream.

use std::io::{self, IsTerminal as _, Write as _};
use std::process::ExitCode;

use ringway_load::cli::{self, Command};
use ringway_load::{check_load, run_load_until, spawn_serve, LoadOptions, LoadStop};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

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
        "ringway-load: {} connections on {} thread(s), {stop}, {mode}, {} {}\n",
        o.connections, o.threads, o.method, o.url
    )
}

/// A message on stderr. Unlike `eprintln!`, it cannot panic: with stderr
/// gone there is no one left to tell.
fn warn(msg: &str) {
    let _ = writeln!(io::stderr(), "ringway-load: {msg}");
}

/// Writes `text` to stdout. `Ok(false)` when the reader has gone (as when
/// piped into `head`): the output then ends quietly, as a program killed by
/// SIGPIPE would, where `println!` panicked.
fn print_out(text: &str) -> Result<bool, ExitCode> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => {
            warn(&format!("cannot write the output: {e}"));
            Err(ExitCode::FAILURE)
        }
    }
}

/// Like wrk, SIGINT (Ctrl-C) or SIGTERM stops the run and the results so
/// far are reported; a second one ends the process at once, as the signal
/// would have without this.
fn stop_on_signals() -> io::Result<LoadStop> {
    let stop = LoadStop::default();
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let raised = stop.clone();
    std::thread::Builder::new()
        .name("ringway-load-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if raised.is_stopped() {
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    std::process::exit(128 + signal);
                }
                raised.stop();
            }
        })?;
    Ok(stop)
}

fn main() -> ExitCode {
    let command = match cli::parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(msg) => {
            warn(&format!("{msg}\n(see ringway-load --help)"));
            return ExitCode::from(2);
        }
    };
    let printed = match command {
        Command::Help => print_out(cli::USAGE),
        Command::Version => print_out(&format!("ringway-load {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Load { opts, json } => return load(opts, json),
        Command::Serve(opts) => return serve(opts),
    };
    printed.err().unwrap_or(ExitCode::SUCCESS)
}

fn load(mut opts: LoadOptions, json: bool) -> ExitCode {
    // Reject bad options before printing the banner.
    if let Err(e) = check_load(&opts) {
        warn(&e.to_string());
        return exit_code_of(&e);
    }
    opts.progress = io::stderr().is_terminal();
    // Before the banner, which tells a script the run has begun.
    let stop = match stop_on_signals() {
        Ok(stop) => stop,
        Err(e) => {
            warn(&format!("cannot handle signals: {e}"));
            return ExitCode::FAILURE;
        }
    };
    if !json {
        match print_out(&describe(&opts)) {
            Ok(true) => {}
            // No one is left to read the results: do not run.
            Ok(false) => return ExitCode::SUCCESS,
            Err(code) => return code,
        }
    }
    let report = match run_load_until(opts, &stop) {
        Ok(report) => report,
        Err(e) => {
            warn(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        format!("{}\n", report.to_json())
    } else {
        report.summary()
    };
    if let Err(code) = print_out(&text) {
        return code;
    }
    // As wrk: a run that got not a single response failed, whatever its
    // errors were (refused, timed out, reset), and scripts should see it.
    if report.requests == 0 {
        warn("no response was received");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// 2 for a bad option (as for a bad command line), 1 for anything else.
fn exit_code_of(e: &io::Error) -> ExitCode {
    match e.kind() {
        io::ErrorKind::InvalidInput => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

fn serve(opts: ringway_load::ServeOptions) -> ExitCode {
    let threads = opts.threads;
    match spawn_serve(opts) {
        Ok(handle) => {
            let _ = writeln!(
                io::stderr(),
                "ringway-load serve: listening on {} ({threads} thread(s))",
                handle.local_addr()
            );
            handle.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(io::stderr(), "ringway-load serve: {e}");
            exit_code_of(&e)
        }
    }
}
