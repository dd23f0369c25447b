//! The admin HTTP server: one blocking accept thread plus one thread per
//! admin connection, all off the worker loops (admin traffic is a handful of
//! requests, and a scrape or a config compile must never stall a worker).
//! Bounded by a connection cap and the deadlines in `Limits`. The routes are
//! in `api`, one connection's request loop in `conn`.

use super::api::{AdminBackend, Response};
use super::{auth, conn};
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The admin endpoint's bounds. The defaults suit a config of 10,000 routes
/// and an operator plus a scraper or two.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Admin connections served at once. One more takes the slot of the
    /// oldest connection waiting for a request, or, when every one is
    /// answering a request, gets a 503 and is closed.
    pub max_connections: usize,
    /// Request line plus headers.
    pub max_head_bytes: usize,
    /// Request bodies above this get a 413 (PUT /config carries whole configs).
    pub max_body_bytes: usize,
    /// From a head's first byte (or the accept) to its last.
    pub head_timeout: Duration,
    /// To read a whole body.
    pub body_timeout: Duration,
    /// A kept-alive connection's wait for its next request.
    pub idle_timeout: Duration,
    /// Each write of a response.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16,
            max_head_bytes: 16 * 1024,
            max_body_bytes: 8 * 1024 * 1024,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// A running admin endpoint. Dropping it stops it, as `stop` does.
pub struct AdminServer {
    shared: Arc<Shared>,
    address: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

/// What the accept thread and the connection threads share.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn AdminBackend>,
    pub(crate) token: Option<Vec<u8>>,
    pub(crate) limits: Limits,
    /// It listens on a loopback address: requests must name it by address
    /// or as localhost (see `conn`'s `host_by_name`).
    pub(crate) on_loopback: bool,
    pub(crate) stopping: AtomicBool,
    /// Requests answered, for `ringway_admin_requests_total`.
    pub(crate) calls: AtomicU64,
    /// The open connections, so the cap can be checked and `stop` can wake
    /// them; `ended` is signalled whenever one goes.
    live: Mutex<Live>,
    ended: Condvar,
}

struct Live {
    next_id: u64,
    streams: HashMap<u64, Slot>,
}

/// One open connection, as the cap sees it.
struct Slot {
    stream: TcpStream,
    /// A request is under way: past its head and, with a token, its
    /// authorization. Only such a connection keeps its slot against one
    /// that arrives at the cap.
    answering: bool,
    /// Shut down to make room; its thread is ending.
    evicted: bool,
}

/// Whether the endpoint listens on loopback, where the Host rule applies:
/// `::ffff:127.0.0.1` is loopback too.
pub(super) fn on_loopback(address: SocketAddr) -> bool {
    address.ip().to_canonical().is_loopback()
}

impl AdminServer {
    /// Bind `address` (port 0 picks one), start serving with the default
    /// limits, and return once the socket listens. With a `token`, every
    /// request needs `Authorization: Bearer <token>`.
    pub fn start(
        address: SocketAddr,
        token: Option<String>,
        backend: Arc<dyn AdminBackend>,
    ) -> io::Result<AdminServer> {
        AdminServer::start_with_limits(address, token, backend, Limits::default())
    }

    /// `start` with explicit bounds.
    pub fn start_with_limits(
        address: SocketAddr,
        token: Option<String>,
        backend: Arc<dyn AdminBackend>,
        limits: Limits,
    ) -> io::Result<AdminServer> {
        let invalid = |message: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("admin: {message}"));
        if let Some(token) = &token {
            auth::check_token(token).map_err(invalid)?;
        }
        let timeouts = [
            limits.head_timeout,
            limits.body_timeout,
            limits.idle_timeout,
            limits.write_timeout,
        ];
        if limits.max_connections == 0 || timeouts.iter().any(Duration::is_zero) {
            return Err(invalid("the connection cap and every timeout must be above zero"));
        }
        // As the proxy's listeners: an IPv6 address takes IPv6 clients only.
        let socket = crate::listener::socket_for(address)?;
        socket.bind(&address.into())?;
        socket.listen(128)?;
        let listener = TcpListener::from(socket);
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            backend,
            token: token.map(String::into_bytes),
            limits,
            on_loopback: on_loopback(address),
            stopping: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            live: Mutex::new(Live {
                next_id: 0,
                streams: HashMap::new(),
            }),
            ended: Condvar::new(),
        });
        let accepting = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("ringway-admin".to_string())
            .spawn(move || accept_loop(listener, &accepting))?;
        Ok(AdminServer {
            shared,
            address,
            accept: Some(accept),
        })
    }

    /// The address the endpoint listens on (with the port picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Requests the endpoint has answered so far.
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// Stop accepting, wake idle connections, and wait (boundedly) for
    /// requests in progress to be answered.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::Release);
        if wake(self.address) {
            let _ = accept.join();
        }
        let mut live = self.shared.lock_live();
        for slot in live.streams.values() {
            let _ = slot.stream.shutdown(Shutdown::Read);
        }
        // A request in progress finishes within the body and write timeouts;
        // past this grace its thread is left to end on its own.
        let deadline = Instant::now() + self.shared.limits.write_timeout;
        while !live.streams.is_empty() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            live = match self.shared.ended.wait_timeout(live, remaining) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    /// The registry stays usable if a connection thread panicked holding it.
    fn lock_live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Connection `id` began (true) or finished (false) answering a request.
    pub(crate) fn set_answering(&self, id: u64, answering: bool) {
        if let Some(slot) = self.lock_live().streams.get_mut(&id) {
            slot.answering = answering;
        }
    }
}

impl Live {
    /// Room for one more connection under `cap`: there is some, or the
    /// oldest connection waiting for a request (its first or its next) is
    /// shut down to make it. So sockets that send nothing, or nothing
    /// authorized, cannot lock callers out (the readiness probe among
    /// them); only requests under way hold their slots.
    fn make_room(&mut self, cap: usize) -> bool {
        if self.streams.values().filter(|s| !s.evicted).count() < cap {
            return true;
        }
        let waiting = self
            .streams
            .iter_mut()
            .filter(|(_, s)| !s.answering && !s.evicted)
            .min_by_key(|(id, _)| **id);
        let Some((_, slot)) = waiting else {
            return false;
        };
        slot.evicted = true;
        let _ = slot.stream.shutdown(Shutdown::Both);
        true
    }
}

/// Unblock the accept thread by connecting to it; false if that failed (the
/// thread then ends at its next accept).
fn wake(address: SocketAddr) -> bool {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    TcpStream::connect_timeout(&SocketAddr::new(ip, address.port()), Duration::from_secs(1)).is_ok()
}

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        match incoming {
            Ok(stream) => admit(stream, shared),
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                crate::stderr_line!("ringway: admin accept: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Register and serve `stream` on its own thread, or refuse it with a 503
/// when every slot under the cap is answering a request.
fn admit(stream: TcpStream, shared: &Arc<Shared>) {
    let registration = {
        let mut live = shared.lock_live();
        if shared.stopping.load(Ordering::Acquire) || !live.make_room(shared.limits.max_connections) {
            Err("too many admin connections\n".to_string())
        } else {
            match stream.try_clone() {
                Ok(clone) => {
                    let id = live.next_id;
                    live.next_id += 1;
                    let slot = Slot {
                        stream: clone,
                        answering: false,
                        evicted: false,
                    };
                    live.streams.insert(id, slot);
                    Ok(Registration {
                        shared: Arc::clone(shared),
                        id,
                    })
                }
                // Out of descriptors, most likely: say so, not "too many".
                Err(e) => Err(format!("cannot take the connection: {e}\n")),
            }
        }
    };
    let registration = match registration {
        Ok(registration) => registration,
        Err(why) => return refuse(&stream, &why),
    };
    let serving = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("ringway-admin-conn".to_string())
        .spawn(move || {
            // Deregister before the socket closes, so a client that saw the
            // close finds its slot free.
            let stream = stream;
            let registration = registration;
            conn::serve(&stream, &serving, registration.id);
            drop(registration);
        });
    if let Err(e) = spawned {
        crate::stderr_line!("ringway: admin: cannot start a connection thread: {e}");
    }
}

/// A 503 saying `why` (past the cap, out of descriptors). Written from the
/// accept thread, so the write is short and bounded; the request, if any,
/// is not read.
fn refuse(mut stream: &TcpStream, why: &str) {
    let response = Response::text(503, why).with_header("retry-after", "1");
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = stream.write_all(&conn::encode(response, true, false, false));
}

/// A connection's place in the registry, released on drop (also on panic).
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.lock_live().streams.remove(&self.id);
        self.shared.ended.notify_all();
    }
}
