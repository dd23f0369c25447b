//! The `ringway-load` binary as a shell runs it: its output when the reader
//! goes away, and its exit status.

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;

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
    // Options found wrong only against the machine or a file are usage
    // errors too, reported before the banner that says the run began.
    let (code, out) = run(&["-n", "5", "--cpus", "1023", &up])?;
    assert_eq!((code, out.as_str()), (Some(2), ""), "a cpu this process cannot use");
    let mix = std::env::temp_dir().join(format!("ringway-load-mix-{}", std::process::id()));
    std::fs::write(&mix, "100000 /a\n1 /b\n")?;
    let (code, out) = run(&["-n", "5", "--mix", &mix.display().to_string(), &up])?;
    let _ = std::fs::remove_file(&mix);
    assert_eq!((code, out.as_str()), (Some(2), ""), "a mix too fine-grained");
    Ok(())
}

/// A one-connection HTTP/1.1 server that says on `answered` when a second
/// request comes: the client recorded the first response before sending it.
fn answering_server(answered: mpsc::Sender<()>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || -> io::Result<()> {
        let (conn, _) = listener.accept()?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut conn = conn;
        let mut requests = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                requests += 1;
                if requests == 2 {
                    let _ = answered.send(());
                }
                conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
            }
        }
    });
    Ok(addr)
}

/// Like wrk, SIGINT (Ctrl-C) or SIGTERM stops the run and reports it; the
/// exit status is a normal run's.
#[test]
fn a_signal_reports_the_run_so_far() -> io::Result<()> {
    for signal in ["-INT", "-TERM"] {
        let (answered, first_response) = mpsc::channel();
        let url = format!("http://{}/", answering_server(answered)?);
        let mut child = Command::new(BIN)
            .args(["-d", "1h", "-c", "1", "-t", "1", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or(io::ErrorKind::BrokenPipe);
        if first_response.recv().is_err() {
            let _ = child.kill();
            panic!("the server saw no second request");
        }
        let killed = Command::new("kill").args([signal, &child.id().to_string()]).status()?;
        assert!(killed.success());
        let mut summary = String::new();
        stdout?.read_to_string(&mut summary)?;
        let status = child.wait()?;
        assert_eq!(status.code(), Some(0), "{signal}: {summary}");
        assert!(
            summary.contains(" requests in ") && summary.contains("latency:    p50"),
            "{summary}"
        );
        // The time run, not the hour asked for.
        assert!(!summary.contains("3600.00s"), "{summary}");
    }
    Ok(())
}
