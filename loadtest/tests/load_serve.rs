//! End-to-end checks over loopback: `spawn_serve` on port 0 driven by
//! `run_load`, closed loop by count, open loop at a modest rate, connection
//! close and reconnects, request mixes with a counted header, error kinds,
//! and that a stopped server really stops listening.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringway_load::{run_load, run_load_until, spawn_serve, LoadOptions, LoadStop, MixEntry, ServeHandle, ServeOptions};

fn serve(opts: ServeOptions) -> io::Result<ServeHandle> {
    spawn_serve(ServeOptions {
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..opts
    })
}

fn url(h: &ServeHandle, path: &str) -> String {
    format!("http://{}{path}", h.local_addr())
}

#[test]
fn closed_loop_by_count() -> io::Result<()> {
    let server = serve(ServeOptions {
        threads: 2,
        ..ServeOptions::default()
    })?;
    assert_ne!(server.local_addr().port(), 0);
    let report = run_load(LoadOptions {
        url: url(&server, "/"),
        connections: 4,
        threads: 2,
        requests: Some(2000),
        ..LoadOptions::default()
    })?;
    assert_eq!(report.requests, 2000);
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert_eq!(report.status.get(&200), Some(&2000));
    assert_eq!(report.status.len(), 1);
    assert_eq!(report.histogram.len(), 2000);
    assert!(report.to_json().starts_with("{\"requests\":2000,"));
    Ok(())
}

#[test]
fn open_loop_holds_the_rate() -> io::Result<()> {
    let server = serve(ServeOptions::default())?;
    let target = 400.0;
    let report = run_load(LoadOptions {
        url: url(&server, "/"),
        connections: 4,
        threads: 1,
        rate: Some(target),
        duration: Duration::from_millis(1500),
        ..LoadOptions::default()
    })?;
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    let rps = report.rps();
    assert!(
        (rps - target).abs() <= target * 0.1,
        "achieved {rps:.1} req/s for a target of {target}"
    );
    Ok(())
}

/// A connection that falls ever further behind its schedule (a server
/// slower than the rate asks) accounts for exactly the run's slots: a
/// request later than its timeout before it could go counts as a timeout,
/// and those still due at the end are sent, not dropped with their
/// latencies.
#[test]
fn open_loop_behind_the_schedule_counts_every_slot() -> io::Result<()> {
    let server = serve(ServeOptions {
        delay: Duration::from_millis(50),
        threads: 1,
        ..ServeOptions::default()
    })?;
    let report = run_load(LoadOptions {
        url: url(&server, "/"),
        connections: 1,
        threads: 1,
        rate: Some(100.0),
        duration: Duration::from_secs(1),
        timeout: Duration::from_millis(200),
        ..LoadOptions::default()
    })?;
    assert!(report.errors.timeout > 0, "{:?}", report.errors);
    // The server answers 20 a second: sending every slot however late, as
    // before, answered all 100 (in 5 s).
    assert!(report.requests < 50, "{} answered", report.requests);
    assert_eq!(
        report.requests + report.errors.total(),
        100,
        "the run's 100 slots: {} answered and {:?}",
        report.requests,
        report.errors
    );
    Ok(())
}

#[test]
fn connection_close_bodies_and_reconnects() -> io::Result<()> {
    let server = serve(ServeOptions {
        body_size: 100_000,
        status: 503,
        ..ServeOptions::default()
    })?;
    let report = run_load(LoadOptions {
        url: url(&server, "/upload"),
        connections: 2,
        threads: 1,
        requests: Some(50),
        method: "POST".into(),
        body: vec![b'x'; 10_000],
        headers: vec![("Connection".into(), "close".into())],
        ..LoadOptions::default()
    })?;
    assert_eq!(report.requests, 50);
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert_eq!(report.status.get(&503), Some(&50));
    assert_eq!(report.reconnects, 48);
    assert!(report.summary().contains("status 5xx 50"));
    Ok(())
}

#[test]
fn mix_with_counted_header() -> io::Result<()> {
    let server = serve(ServeOptions {
        name: Some("blue".into()),
        ..ServeOptions::default()
    })?;
    let report = run_load(LoadOptions {
        url: url(&server, "/"),
        connections: 3,
        threads: 1,
        requests: Some(300),
        mix: vec![
            MixEntry {
                weight: 2,
                path: "/a".into(),
                headers: vec![],
            },
            MixEntry {
                weight: 1,
                path: "/b".into(),
                headers: vec![("x-canary".into(), "1".into())],
            },
        ],
        count_header: Some("X-Served-By".into()),
        ..LoadOptions::default()
    })?;
    assert_eq!(report.requests, 300);
    let counts = report.header_counts.clone().unwrap_or_default();
    assert_eq!(counts.get("blue"), Some(&300));
    assert!(report.to_json().ends_with(",\"header_counts\":{\"blue\":300}}"));
    Ok(())
}

#[test]
fn errors_are_counted_by_kind() -> io::Result<()> {
    let slow = serve(ServeOptions {
        delay: Duration::from_millis(400),
        ..ServeOptions::default()
    })?;
    let report = run_load(LoadOptions {
        url: url(&slow, "/"),
        connections: 2,
        threads: 1,
        requests: Some(4),
        timeout: Duration::from_millis(100),
        ..LoadOptions::default()
    })?;
    assert_eq!((report.requests, report.errors.timeout), (0, 4));

    // A port that was just released: nothing listens there any more.
    let gone = serve(ServeOptions::default())?;
    let addr = gone.local_addr();
    gone.stop();
    assert!(TcpStream::connect(addr).is_err(), "stopped server still accepts");
    let report = run_load(LoadOptions {
        url: format!("http://{addr}/"),
        connections: 2,
        threads: 1,
        requests: Some(6),
        ..LoadOptions::default()
    })?;
    assert_eq!((report.requests, report.errors.connect), (0, 6));
    Ok(())
}

#[test]
fn bad_options_are_rejected() {
    let bad = |opts: LoadOptions| run_load(opts).is_err();
    assert!(bad(LoadOptions {
        url: "https://127.0.0.1:1/".into(),
        ..LoadOptions::default()
    }));
    assert!(bad(LoadOptions {
        url: "http://127.0.0.1:1/".into(),
        connections: 0,
        ..LoadOptions::default()
    }));
    assert!(spawn_serve(ServeOptions {
        status: 100,
        ..ServeOptions::default()
    })
    .is_err());
}

/// Methods are case-sensitive: `serve` answers `head` (not a HEAD) with a
/// body, which the client must read rather than take for the next response.
#[test]
fn lowercase_head_is_not_head() -> io::Result<()> {
    let server = serve(ServeOptions::default())?;
    for method in ["head", "HEAD"] {
        let report = run_load(LoadOptions {
            url: url(&server, "/"),
            connections: 1,
            threads: 1,
            requests: Some(20),
            method: method.into(),
            ..LoadOptions::default()
        })?;
        assert_eq!(report.errors.total(), 0, "{method}: {:?}", report.errors);
        assert_eq!((report.requests, report.reconnects), (20, 0), "{method}");
    }
    Ok(())
}

/// A thread that cannot be pinned calls the run off before any load: the
/// other threads do not run their share first, to fail only at the end.
#[test]
fn a_missing_cpu_fails_before_the_load() -> io::Result<()> {
    // A target that never answers, and shows whether anything was sent.
    let target = std::net::TcpListener::bind("127.0.0.1:0")?;
    let result = run_load(LoadOptions {
        url: format!("http://{}/", target.local_addr()?),
        connections: 2,
        threads: 2,
        requests: Some(2),
        timeout: Duration::from_millis(100),
        cpus: vec![0, 1023],
        ..LoadOptions::default()
    });
    let err = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("cpu 1023"), "{err:?}");
    target.set_nonblocking(true)?;
    while let Ok((mut conn, _)) = target.accept() {
        conn.set_nonblocking(false)?;
        let mut sent = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut sent)?;
        assert_eq!(String::from_utf8_lossy(&sent), "", "a request went out");
    }
    Ok(())
}

/// A stopped run ends early, whenever the stop comes (before the start,
/// while connecting or loading), and reports the time it ran.
#[test]
fn a_stop_ends_the_run_with_what_was_measured() -> io::Result<()> {
    let server = serve(ServeOptions::default())?;
    let stop = LoadStop::default();
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || stop.stop())
    };
    let hour = Duration::from_secs(3600);
    let report = run_load_until(
        LoadOptions {
            url: url(&server, "/"),
            connections: 2,
            threads: 2,
            duration: hour,
            ..LoadOptions::default()
        },
        &stop,
    )?;
    let _ = stopper.join();
    assert!(report.duration < hour, "{:?}", report.duration);
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert_eq!(report.histogram.len(), report.requests);
    Ok(())
}
