//! The `ringway-load` binary as a shell runs it: its output when the reader
//! goes away, and its exit status.

use std::io::{self, Read as _};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ringway-load");

/// Runs the binary with stdout on a pipe whose reader is already gone.
fn with_stdout_gone(args: &[&str]) -> io::Result<(Option<i32>, String)> {
    let (reader, writer) = io::pipe()?;
    drop(reader);
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr)?;
    }
    Ok((child.wait()?.code(), stderr))
}

#[test]
fn a_reader_that_went_away_ends_the_output_quietly() -> io::Result<()> {
    let server = ringway_load::spawn_serve(ringway_load::ServeOptions::named("gone"))?;
    let url = format!("http://{}/", server.local_addr());
    for args in [
        &["--help"][..],
        &["-n", "5", "-c", "1", "-t", "1", "--json", &url],
        &["-n", "5", &url],
    ] {
        let (code, stderr) = with_stdout_gone(args)?;
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
    Ok(())
}
