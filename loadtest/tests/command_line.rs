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

/// Runs the binary and returns its exit status and stdout.
fn run(args: &[&str]) -> io::Result<(Option<i32>, String)> {
    let out = Command::new(BIN).args(args).stdin(Stdio::null()).output()?;
    Ok((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned()))
}

#[test]
fn exit_status_says_whether_anything_was_answered() -> io::Result<()> {
    let server = ringway_load::spawn_serve(ringway_load::ServeOptions::named("up"))?;
    let up = format!("http://{}/", server.local_addr());
    // A port that was just released: nothing listens there any more.
    let gone = ringway_load::spawn_serve(ringway_load::ServeOptions::named("gone"))?;
    let down = format!("http://{}/", gone.local_addr());
    gone.stop();

    let (code, out) = run(&["-n", "5", "-c", "1", "-t", "1", "--json", &up])?;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["-n", "5", "-c", "1", "-t", "1", "--json", &down])?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("{\"requests\":0,") && out.contains("\"connect\":5"),
        "{out}"
    );
    let (code, out) = run(&["-n", "5", "-c", "1", "-t", "1", &down])?;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("0 requests in"), "{out}");
    let (code, _) = run(&["-c", "0", &up])?;
    assert_eq!(code, Some(2));
    Ok(())
}
