//! Listening sockets: one SO_REUSEPORT socket per listener per worker (the
//! kernel spreads connections), the accept loop that enforces the
//! process-wide connection cap and hands each connection (after the TLS
//! handshake on a TLS listener) to its protocol's handler on this worker, and reconciliation of the running listeners with
//! each new snapshot: new ones bound; removed ones stop accepting, their
//! HTTP connections ending after the request in progress (tcp relays go on);
//! and a listener whose connection terms changed ends the connections it
//! admitted before (tcp relays at once).

use crate::config::{ListenerKind, Snapshot};
use crate::metrics::ListenerKey;
use crate::proxy;
use crate::tls::{Stream, TlsStream};
use crate::worker::{retire_changed, ConnectionGuard, Drain, MovedAway, Plan, Retirement, RunningListener, Worker};
use monoio::net::{TcpListener, TcpStream};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// One worker's socket for `addr`: every worker binds one with
/// SO_REUSEPORT, and the kernel spreads connections over them.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket_for(addr)?;
    socket.set_reuse_port(true)?;
    // Non-blocking for the epoll fallback alone, as monoio sets it: kernels
    // before 5.18 complete an io_uring accept on a non-blocking socket with
    // EAGAIN instead of waiting.
    if !monoio::utils::detect_uring() {
        socket.set_nonblocking(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// A TCP socket for listening on `addr`, with SO_REUSEADDR. An IPv6 one
/// takes IPv6 clients only, as NGINX and Envoy listen by default, whatever
/// the host's net.ipv6.bindv6only: `[::]:80` beside `0.0.0.0:80` are two
/// listeners, each for its family, and a client's address is never the
/// IPv4-mapped form of another listener's.
pub fn socket_for(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Whether Ringway can take `addr`, checked before its workers bind it (an
/// address a running listener holds is kept, never bound again). It binds
/// without SO_REUSEPORT: the workers' own SO_REUSEPORT would join a group
/// another process of the same user started with SO_REUSEPORT, and quietly
/// take a share of its connections, while a bind without it fails as long
/// as anyone listens there. It binds without listening, so it never takes
/// a connection meant for anyone. `running` are the addresses Ringway
/// listens on already (none at start): beside one of them on its port,
/// that bind would meet Ringway's own socket (see `probe_beside_own`).
pub fn probe(addr: SocketAddr, running: &[SocketAddr]) -> io::Result<()> {
    if running.iter().any(|r| overlap(*r, addr)) {
        return probe_beside_own(addr);
    }
    socket_for(addr)?.bind(&addr.into()).map_err(|e| cannot_listen(addr, e))
}

fn cannot_listen(addr: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
}

/// `probe` for an address beside one of Ringway's own sockets on its port
/// (see `overlap`), which a bind without SO_REUSEPORT would meet. This one
/// binds with it, so that it passes Ringway's sockets but still finds an
/// address this host does not have, or one a socket without SO_REUSEPORT
/// (or another user's) holds; and it refuses an address where any socket
/// already listens, which, new to Ringway, is another process's group.
fn probe_beside_own(addr: SocketAddr) -> io::Result<()> {
    let taken = |e: io::Error| cannot_listen(addr, e);
    let socket = socket_for(addr)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into()).map_err(taken)?;
    drop(socket);
    if crate::sys::listening_at(addr)? {
        let e = io::Error::new(io::ErrorKind::AddrInUse, "another process listens there");
        return Err(taken(e));
    }
    Ok(())
}

/// Whether `a` and `b` are distinct addresses of one port that a bind of
/// the one meets the other's socket at: the same family, and one of them
/// that family's wildcard (`0.0.0.0:80` and `127.0.0.1:80`).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a != b && a.port() == b.port() && a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Bind and start the listeners of `snapshot` this worker does not run yet,
/// stop those it no longer has, and retire the connections of those whose
/// admission terms changed. Returns the first bind error (after the rest is
/// done: a listener that cannot bind leaves the others' terms up to date).
pub fn reconcile(worker: &Rc<Worker>, snapshot: &Snapshot) -> io::Result<()> {
    let mut running = worker.listeners.borrow_mut();
    // A running listener is its address: one the config still has keeps
    // its socket, its backlog and its connections, under a new name too
    // (as NGINX and HAProxy keep listening sockets by address). Those of
    // names no longer in the config are forgotten: removal stops a
    // listener, which leaves its tunnels and relays to run out.
    let mut moved_away = std::mem::take(&mut *worker.unbound_moves.borrow_mut());
    running.retain(|address, r| {
        if let Some(l) = snapshot.listeners.iter().find(|l| l.address == *address) {
            l.name.clone_into(&mut r.name);
            return true;
        }
        // Moving to another address stops the listener, which leaves its
        // tunnels and relays running: unless its terms change, now or
        // later (the listener taking its name keeps track of them).
        if let Some(l) = snapshot.listeners.iter().find(|l| l.name == r.name) {
            r.admit_under(l, snapshot.generation);
            let earlier: &mut MovedAway = moved_away.entry(r.name.clone()).or_default();
            earlier.append(&mut r.moved_away);
            earlier.push((r.terms.clone(), Rc::downgrade(&r.retired)));
        }
        r.stop();
        false
    });
    let mut first_error = None;
    for l in &snapshot.listeners {
        if let Some(r) = running.get_mut(&l.address) {
            r.admit_under(l, snapshot.generation);
            continue;
        }
        let terms = l.connection_terms();
        let mut earlier = moved_away.remove(&l.name).unwrap_or_default();
        // Kept since an earlier config: the terms may have changed since.
        retire_changed(&mut earlier, &terms);
        let socket = match bind(l.address) {
            Ok(socket) => socket,
            Err(e) => {
                if !earlier.is_empty() {
                    worker.unbound_moves.borrow_mut().insert(l.name.clone(), earlier);
                }
                let message = format!("listener {} on {}: {e}", l.name, l.address);
                first_error = Some(io::Error::new(e.kind(), message));
                continue;
            }
        };
        let stop = Rc::new(Drain::default());
        running.insert(
            l.address,
            RunningListener {
                name: l.name.clone(),
                stop_accepting: stop.clone(),
                terms,
                terms_generation: snapshot.generation,
                retired: Rc::new(Retirement::default()),
                moved_away: earlier,
            },
        );
        monoio::spawn(accept_loop(socket, Rc::new(l.address), stop, worker.clone()));
    }
    worker.listeners_generation.set(snapshot.generation);
    first_error.map_or(Ok(()), Err)
}

async fn accept_loop(listener: TcpListener, address: Rc<SocketAddr>, stop: Rc<Drain>, worker: Rc<Worker>) {
    let counter = worker.shared.connection_counter(*address);
    let mut failures = FailureLog::default();
    loop {
        let mut accept = std::pin::pin!(listener.accept());
        let accepted = monoio::select! {
            r = &mut accept => Some(r),
            _ = worker.drain.wait() => None,
            _ = stop.wait() => None,
        };
        let Some(accepted) = accepted else {
            // The kernel may have accepted a connection meanwhile: dropping
            // the operation would lose its descriptor for good. Shutting the
            // listening socket down (which also resets what waits in its
            // backlog) ends the accept at once; a connection it still
            // returns is closed.
            let _ = crate::sys::stop_reading(&listener);
            drop(accept.await);
            break;
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                if let Some(unlogged) = failures.failed(Instant::now()) {
                    let more = match unlogged {
                        0 => String::new(),
                        n => format!(" ({n} more since the last such line)"),
                    };
                    crate::stderr_line!("ringway: worker {}: accept failed: {e}{more}", worker.id);
                }
                monoio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let plan = worker.plan();
        let Some(index) = plan.listener_at(&address) else {
            continue;
        };
        let config = &plan.snapshot.listeners[index];
        // The connection ends with the terms it is admitted under: this
        // plan's, which may be newer than the worker's last reconcile.
        let retired = match worker.listeners.borrow_mut().get_mut(&*address) {
            Some(r) => r.admit_under(config, plan.snapshot.generation),
            None => continue,
        };
        let key = plan.keys.listeners.get(index).copied().unwrap_or(ListenerKey::NONE);
        let Some(guard) = ConnectionGuard::open(&worker, counter.clone(), config.limits.max_connections, key) else {
            // Over the cap: reset, not closed with a FIN that would read
            // as a server that took the connection and hung up.
            let _ = crate::sys::reset_on_close(&stream);
            if plan.snapshot.runtime.metrics {
                worker.metrics.borrow_mut().downstream_cx_overflow(key);
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        if config.tls.is_some() {
            monoio::spawn(serve_tls(
                stream,
                peer,
                plan.clone(),
                index,
                address.clone(),
                retired,
                worker.clone(),
                guard,
            ));
            continue;
        }
        match config.kind {
            ListenerKind::Http { .. } => {
                monoio::spawn(proxy::http::serve(
                    proxy::Inbound::new(stream),
                    peer,
                    address.clone(),
                    retired,
                    guard,
                ));
            }
            ListenerKind::Tcp { .. } => {
                monoio::spawn(proxy::tcp::serve(
                    Stream::Plain(stream),
                    peer,
                    plan.clone(),
                    index,
                    retired,
                    worker.clone(),
                    guard,
                ));
            }
        }
    }
}

/// A connection on a TLS listener: the handshake first, within the
/// listener's header read timeout (a client that stalls in it is cut like
/// one that stalls in a head) and abandoned if the listener stops or its
/// terms change (`retired`); then the
/// listener's protocol over the session, as for a plain connection. The TLS
/// settings are those of `plan`, the config it was accepted under.
#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    tcp: TcpStream,
    peer: SocketAddr,
    plan: Rc<Plan>,
    index: usize,
    address: Rc<SocketAddr>,
    retired: Rc<Retirement>,
    worker: Rc<Worker>,
    guard: ConnectionGuard,
) {
    let config = &plan.snapshot.listeners[index];
    let Some(tls) = &config.tls else { return };
    // Boxed: the handshake holds a whole TLS session; inline, its size would
    // stay in this task for as long as the connection lives.
    let handshake = Box::pin(TlsStream::accept(tcp, tls.config.clone()));
    let accepted = monoio::select! {
        r = monoio::time::timeout(config.limits.header_read_timeout, handshake) => r.ok().and_then(Result::ok),
        _ = retired.wait() => None,
    };
    let Some(session) = accepted else {
        worker.count_tls_handshake_failure(&plan, index);
        return;
    };
    let stream = Stream::Tls(std::rc::Rc::new(session));
    match config.kind {
        ListenerKind::Http { .. } => {
            // An HTTP connection takes each request's plan as it comes.
            drop(plan);
            drop(worker);
            proxy::http::serve(proxy::Inbound::with_stream(stream), peer, address, retired, guard).await;
        }
        ListenerKind::Tcp { .. } => proxy::tcp::serve(stream, peer, plan, index, retired, worker, guard).await,
    }
}

/// Accept failures come in runs (out of descriptors, twenty a second while
/// it lasts): one line, then one every `EVERY` with the count between.
#[derive(Default)]
struct FailureLog {
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl FailureLog {
    const EVERY: Duration = Duration::from_secs(5);

    /// A failure at `now`: Some(failures left unlogged before it) when it
    /// is to be logged.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        match self.logged_at {
            Some(at) if now.duration_since(at) < Self::EVERY => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.logged_at = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{overlap, probe_beside_own, socket_for, FailureLog};
    use std::time::{Duration, Instant};

    /// Beside Ringway's own sockets the probe still finds what the plain
    /// one would: an address the host lacks, and another process's group.
    #[test]
    fn the_probe_beside_own_sockets_finds_other_holders() {
        let squatter = socket_for("127.0.0.1:0".parse().expect("address")).expect("socket");
        squatter.set_reuse_port(true).expect("reuseport");
        squatter
            .bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().expect("address").into())
            .expect("bind");
        squatter.listen(16).expect("listen");
        let taken = squatter.local_addr().ok().and_then(|a| a.as_socket()).expect("address");
        let refused = probe_beside_own(taken).map_err(|e| e.to_string());
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("another process listens there")),
            "{refused:?}"
        );
        drop(squatter);
        assert!(probe_beside_own(taken).is_ok(), "free again");
        // 192.0.2.0/24 is for documentation: on no interface of this host.
        let elsewhere = std::net::SocketAddr::from(([192, 0, 2, 1], taken.port()));
        assert!(probe_beside_own(elsewhere).is_err());
    }

    /// `[::]:80` takes IPv6 clients only, whatever net.ipv6.bindv6only says.
    #[test]
    fn ipv6_listening_sockets_are_ipv6_only() {
        let socket = socket_for("[::1]:0".parse().expect("address")).expect("socket");
        assert_eq!(socket.only_v6().ok(), Some(true));
    }

    #[test]
    fn a_wildcard_overlaps_the_addresses_of_its_family_on_its_port() {
        let at = |text: &str| text.parse().expect("address");
        for (a, b, expected) in [
            ("0.0.0.0:80", "127.0.0.1:80", true),
            ("127.0.0.1:80", "0.0.0.0:80", true),
            ("[::]:80", "[::1]:80", true),
            ("0.0.0.0:80", "[::1]:80", false),
            ("[::]:80", "127.0.0.1:80", false),
            ("0.0.0.0:80", "127.0.0.1:81", false),
            ("127.0.0.1:80", "127.0.0.2:80", false),
            ("0.0.0.0:80", "0.0.0.0:80", false),
        ] {
            assert_eq!(overlap(at(a), at(b)), expected, "{a} {b}");
        }
    }

    #[test]
    fn a_run_of_accept_failures_logs_a_line_every_few_seconds() {
        let mut log = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(log.failed(t0), Some(0), "the first is logged");
        for i in 1..=99 {
            assert_eq!(log.failed(t0 + Duration::from_millis(50 * i)), None);
        }
        assert_eq!(log.failed(t0 + FailureLog::EVERY), Some(99), "with the count between");
        assert_eq!(log.failed(t0 + FailureLog::EVERY * 3), Some(0));
    }
}
