//! The per-worker idle connection pool of one upstream endpoint. Only the
//! worker that owns it touches it, so it is a plain `RefCell<Vec>`; the newest
//! connection is reused first (warm, least likely to have been closed).

use crate::config::{ConnectionLife, PoolSettings};
use crate::resilience::Permit;
use crate::tls::Stream;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What an upstream connection carries besides its socket: the cluster
/// cap's permit, if the cluster has one, and its place in the open count,
/// both released when the connection is dropped, wherever that happens;
/// and how much of its life is used.
pub struct ConnToken {
    _permit: Option<Permit>,
    _open: OpenGuard,
    opened: Instant,
    served: u64,
}

struct OpenGuard(Rc<Cell<i64>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

struct Idle {
    stream: Stream,
    token: ConnToken,
    since: Instant,
}

pub struct EndpointPool {
    pub addr: SocketAddr,
    idle: RefCell<Vec<Idle>>,
    max_idle: Cell<usize>,
    idle_timeout: Cell<Duration>,
    life: Cell<ConnectionLife>,
    /// Set when the endpoint left the config: in-flight requests finish, but
    /// their connections are closed instead of pooled.
    retired: Cell<bool>,
    /// Connections to this endpoint open on this worker, pooled or in use.
    open: Rc<Cell<i64>>,
}

impl EndpointPool {
    pub fn new(addr: SocketAddr, settings: PoolSettings) -> Self {
        EndpointPool {
            addr,
            idle: RefCell::new(Vec::new()),
            max_idle: Cell::new(settings.max_idle_per_endpoint),
            idle_timeout: Cell::new(settings.idle_timeout),
            life: Cell::new(settings.connection_life),
            retired: Cell::new(false),
            open: Rc::new(Cell::new(0)),
        }
    }

    /// Apply new settings after a config swap, trimming what no longer fits.
    pub fn configure(&self, settings: PoolSettings) {
        self.max_idle.set(settings.max_idle_per_endpoint);
        self.idle_timeout.set(settings.idle_timeout);
        self.life.set(settings.connection_life);
        let mut idle = self.idle.borrow_mut();
        let excess = idle.len().saturating_sub(settings.max_idle_per_endpoint);
        idle.drain(..excess);
    }

    /// Count a new connection as open until its token is dropped.
    pub fn token(&self, permit: Option<Permit>) -> ConnToken {
        self.open.set(self.open.get() + 1);
        ConnToken {
            _permit: permit,
            _open: OpenGuard(self.open.clone()),
            opened: Instant::now(),
            served: 0,
        }
    }

    pub fn open_connections(&self) -> i64 {
        self.open.get()
    }

    /// The newest idle connection that has not outlived the idle timeout and
    /// is still clean: an upstream that closed it meanwhile would fail a
    /// request that cannot be replayed, and bytes it sent unasked would be
    /// taken for the next response. Costs one non-blocking peek (for TLS, a
    /// non-blocking read that takes in session tickets), about 2.5%
    /// of a saturated worker's profile, kept even for a connection reused at once:
    /// unsolicited bytes can arrive at any moment (response queue poisoning).
    pub fn take(&self, now: Instant) -> Option<(Stream, ConnToken)> {
        let timeout = self.idle_timeout.get();
        let life = self.life.get();
        let mut idle = self.idle.borrow_mut();
        while let Some(conn) = idle.pop() {
            let idle_for = now.saturating_duration_since(conn.since);
            let age = now.saturating_duration_since(conn.token.opened);
            if idle_for >= timeout || !life.allows_another(conn.token.served, age) {
                continue;
            }
            let mut conn = conn;
            if !conn.stream.idle_alive() {
                continue;
            }
            return Some((conn.stream, conn.token));
        }
        None
    }

    /// Keep a connection whose last exchange ended cleanly, if there is
    /// room and it has life left.
    pub fn put(&self, mut stream: Stream, mut token: ConnToken, now: Instant) {
        token.served += 1;
        let age = now.saturating_duration_since(token.opened);
        if !self.life.get().allows_another(token.served, age) {
            return;
        }
        stream.release();
        let mut idle = self.idle.borrow_mut();
        if !self.retired.get() && idle.len() < self.max_idle.get() {
            idle.push(Idle {
                stream,
                token,
                since: now,
            });
        }
    }

    /// Close connections idle for longer than the timeout (oldest are
    /// first), and those past their max_connection_duration.
    pub fn sweep(&self, now: Instant) {
        let timeout = self.idle_timeout.get();
        let mut idle = self.idle.borrow_mut();
        let expired = idle
            .iter()
            .take_while(|c| now.saturating_duration_since(c.since) >= timeout)
            .count();
        idle.drain(..expired);
        let life = self.life.get();
        if life.max_duration.is_some() {
            idle.retain(|c| life.allows_another(c.token.served, now.saturating_duration_since(c.token.opened)));
        }
    }

    /// The endpoint left the config: close idle connections, pool no more.
    pub fn retire(&self) {
        self.retired.set(true);
        self.idle.borrow_mut().clear();
    }

    /// Close every idle connection (shutting down).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }

    pub fn idle_len(&self) -> usize {
        self.idle.borrow().len()
    }
}
