//! `serve` as a plain HTTP/1.1 peer sees it over std sockets: pipelined
//! requests with Content-Length and chunked bodies, HEAD, Connection: close,
//! malformed requests, the `x-served-by` header, and stop() closing idle
//! keep-alive connections.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringway_load::{spawn_serve, ServeHandle, ServeOptions};

fn serve(name: Option<&str>) -> io::Result<ServeHandle> {
    spawn_serve(ServeOptions {
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        body_size: 5,
        name: name.map(String::from),
        ..ServeOptions::default()
    })
}

fn connect(h: &ServeHandle) -> io::Result<TcpStream> {
    let s = TcpStream::connect(h.local_addr())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Reads until the peer closes the connection.
fn read_to_close(s: &mut TcpStream) -> io::Result<String> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn pipelined_requests_with_bodies() -> io::Result<()> {
    let server = serve(Some("green"))?;
    let mut s = connect(&server)?;
    s.write_all(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )?;
    let text = read_to_close(&mut s)?;
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{text}");
    assert_eq!(text.matches("x-served-by: green\r\n").count(), 4);
    // Three bodies: the HEAD response has none.
    assert_eq!(text.matches("\r\n\r\nHello").count(), 3);
    assert!(text.ends_with("connection: close\r\n\r\nHello"));
    Ok(())
}

#[test]
fn malformed_requests_get_400_and_close() -> io::Result<()> {
    let server = serve(None)?;
    let mut s = connect(&server)?;
    s.write_all(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")?;
    assert!(read_to_close(&mut s)?.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    let mut s = connect(&server)?;
    s.write_all(b"NOT HTTP\r\n\r\n")?;
    assert!(read_to_close(&mut s)?.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    Ok(())
}

#[test]
fn stop_closes_idle_connections() -> io::Result<()> {
    let server = serve(None)?;
    let mut s = connect(&server)?;
    s.write_all(b"GET / HTTP/1.1\r\n\r\n")?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf)?;
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    server.stop();
    // The kept-alive connection is closed rather than left hanging.
    assert_eq!(s.read(&mut buf)?, 0);
    Ok(())
}

#[test]
fn signed_content_length_gets_400() -> io::Result<()> {
    let server = serve(None)?;
    let mut s = connect(&server)?;
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello")?;
    let text = read_to_close(&mut s)?;
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    Ok(())
}

/// serve's threads share their port through SO_REUSEPORT; another process's
/// listener there must not let a second serve join it and take a share of
/// the connections.
#[test]
fn a_port_in_use_is_refused() -> io::Result<()> {
    let first = serve(None)?;
    let second = spawn_serve(ServeOptions {
        address: first.local_addr(),
        threads: 2,
        ..ServeOptions::default()
    });
    let err = second.err().map(|e| e.kind());
    assert_eq!(err, Some(io::ErrorKind::AddrInUse));
    // A plain listener (wrk's target, another server) counts as well.
    let plain = std::net::TcpListener::bind("127.0.0.1:0")?;
    let third = spawn_serve(ServeOptions {
        address: plain.local_addr()?,
        ..ServeOptions::default()
    });
    assert_eq!(third.err().map(|e| e.kind()), Some(io::ErrorKind::AddrInUse));
    Ok(())
}

/// An HTTP/1.0 client that asked for keep-alive (ab -k) keeps the
/// connection only when the response says so; one that did not gets a close.
#[test]
fn http_1_0_keep_alive_is_answered_in_kind() -> io::Result<()> {
    let server = serve(None)?;
    let mut s = connect(&server)?;
    s.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n")?;
    let text = read_to_close(&mut s)?;
    let (first, second) = text.split_once("Hello").unwrap_or_default();
    assert!(first.contains("\r\nconnection: keep-alive\r\n"), "{text}");
    assert!(second.contains("\r\nconnection: close\r\n"), "{text}");
    Ok(())
}

/// Pipelined requests with a delay are all answered, in order, each with
/// its own response.
#[test]
fn pipelined_requests_with_a_delay() -> io::Result<()> {
    let server = spawn_serve(ServeOptions {
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        delay: Duration::from_millis(50),
        name: Some("slow".into()),
        ..ServeOptions::default()
    })?;
    let mut s = connect(&server)?;
    s.write_all(
        b"GET /1 HTTP/1.1\r\n\r\nHEAD /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n\
          GET /4 HTTP/1.1\r\nConnection: close\r\n\r\n",
    )?;
    let text = read_to_close(&mut s)?;
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{text}");
    assert_eq!(text.matches("\r\n\r\nHello").count(), 3, "{text}");
    assert!(text.ends_with("connection: close\r\n\r\nHello, world!"), "{text}");
    Ok(())
}
