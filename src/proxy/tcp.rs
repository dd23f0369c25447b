//! L4 proxying: pick an endpoint of the listener's cluster as HTTP tries do
//! (health, zones, ejection, breakers), connect within the cluster's caps
//! (with TLS when the cluster has `tls`), and copy bytes both ways until
//! each side has closed its half or the connection has been quiet for the
//! listener's idle timeout. Each connection is one access log line when it
//! ends.

use super::choose::pick_endpoint;
use super::record::{log, Outcome};
use crate::addr_text::IpText;
use crate::config::ListenerKind;
use crate::error::{ErrorKind, ProxyError};
use crate::metrics::ListenerKey;
use crate::resilience::LimitKind;
use crate::tls::{Carries, Stream};
use crate::upstream;
use crate::worker::{ConnectionGuard, Plan, Retirement, Worker};
use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use monoio::net::TcpStream;
use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The read a quiet direction waits with: one small message's worth.
const QUIET_READ: usize = 2048;

/// Serve one connection accepted on `plan`'s listener `listener`. The
/// connection keeps that plan to its end, whatever swaps meanwhile: its
/// cluster, idle timeout and metric keys are that plan's.
pub async fn serve(
    client: Stream,
    peer: SocketAddr,
    plan: Rc<Plan>,
    listener: usize,
    retired: Rc<Retirement>,
    worker: Rc<Worker>,
    _guard: ConnectionGuard,
) {
    let Some(config) = plan.snapshot.listeners.get(listener) else {
        return;
    };
    let ListenerKind::Tcp { cluster } = config.kind else {
        return;
    };
    let started = Instant::now();
    let mut outcome = Outcome {
        cluster: Some(cluster),
        ..Outcome::default()
    };
    let idle_timeout = config.limits.idle_timeout;
    if let Some(id) = client.identity() {
        outcome.peer_identity = Some(id.into());
    }
    // Counted in the listener's metrics as it goes (bytes) and as it ends.
    let metered = plan
        .keys
        .listeners
        .get(listener)
        .zip(plan.snapshot.clusters.get(cluster));
    let relayed = match metered {
        Some((key, c)) if plan.snapshot.runtime.metrics => Relayed::metered(*key, &c.name),
        _ => Relayed::default(),
    };
    if config
        .allow_principals
        .as_ref()
        .is_some_and(|p| !p.allows(client.identity()))
    {
        refused(&client, &mut outcome, ProxyError::new(ErrorKind::Forbidden).reason());
        relayed.ended(outcome.reason, &worker);
        log(&worker, &plan, listener, peer, &outcome, started.elapsed());
        return;
    }
    // Past the drain deadline, or the listener's max_connection_duration,
    // the connection is dropped, whatever it was doing; what it moved until
    // then is still logged.
    let max_duration = config.limits.connection_life.max_duration;
    let aged = async {
        match max_duration {
            Some(max) => monoio::time::sleep_until((started + max).into()).await,
            None => std::future::pending().await,
        }
    };
    monoio::select! {
        _ = proxy_connection(client, peer, &plan, cluster, idle_timeout, &worker, &mut outcome, &relayed) => {},
        _ = relayed.cut_at(worker.abort.wait()) => outcome.reason = "drain-timeout",
        _ = relayed.cut_at(aged) => outcome.reason = "max-connection-duration",
        _ = relayed.cut_at(retired.terms_change()) => outcome.reason = "listener-changed",
    }
    outcome.bytes_in = relayed.bytes_in.get();
    outcome.bytes_out = relayed.bytes_out.get();
    relayed.ended(outcome.reason, &worker);
    log(&worker, &plan, listener, peer, &outcome, started.elapsed());
}

/// Every way out closes the client: L4 has no error to answer with, so the
/// access log's `reason` says why.
#[allow(clippy::too_many_arguments)]
async fn proxy_connection(
    client: Stream,
    peer: SocketAddr,
    plan: &Plan,
    cluster_index: usize,
    idle_timeout: Duration,
    worker: &Worker,
    outcome: &mut Outcome,
    relayed: &Relayed,
) {
    let (Some(cluster), Some(state)) = (
        plan.snapshot.clusters.get(cluster_index),
        plan.clusters.get(cluster_index),
    ) else {
        return;
    };
    let refuse = |client: &Stream, outcome: &mut Outcome, kind: ErrorKind| {
        refused(client, outcome, ProxyError::new(kind).reason());
    };
    // The cluster's caps on open and pending connections, as for HTTP; taken
    // first, so that a refusal leaves no breaker probe unanswered.
    let lease = |kind| match &state.guards.leases {
        None => Ok(None),
        Some(leases) => leases.try_acquire(kind).map(Some).ok_or(()),
    };
    let (Ok(connection), Ok(pending)) = (lease(LimitKind::Connections), lease(LimitKind::Pending)) else {
        worker.count_overflow(plan, cluster_index);
        return refuse(&client, outcome, ErrorKind::Overflow);
    };
    let hash = Some(crate::cluster::hash_bytes(IpText::new(peer.ip()).as_bytes()));
    let endpoint = match pick_endpoint(worker, plan, cluster_index, hash, &[], Instant::now()) {
        Ok(endpoint) => endpoint,
        Err(kind) => return refuse(&client, outcome, kind), // no endpoint, or every breaker open
    };

    let pool = &state.pools[endpoint];
    let endpoint_key = plan.keys.endpoint(cluster_index, endpoint);
    outcome.upstream = Some(pool.addr);
    outcome.attempts = 1;
    state.balancer.borrow_mut().on_start(endpoint);
    let started = Instant::now();
    // The balancer counts the connection until it ends, however it ends:
    // a drain or the connection's max duration drops this future mid-way.
    let record = Record {
        worker,
        plan,
        cluster: cluster_index,
        endpoint,
        rtt: Cell::new(None),
    };
    // With the cluster's TLS, the bytes go to the endpoint inside a session
    // that proves both sides' identities (a mesh's mTLS for any protocol).
    let connected = upstream::connect(pool.addr, cluster.connect_timeout, cluster.tls.as_ref(), Carries::Bytes).await;
    drop(pending);
    // The balancer learns the connect time, the one latency L4 can see; a
    // failed connect costs the endpoint a penalty, as a failed request does.
    // One we could not even begin (out of descriptors) tells nothing of it.
    let attempted = connected.as_ref().err().is_none_or(ProxyError::reached_endpoint);
    if attempted {
        let connect_time = match connected {
            Ok(_) => started.elapsed(),
            Err(_) => started.elapsed().max(super::http::FAILURE_RTT),
        };
        record.rtt.set(Some(connect_time));
        if let Some(key) = endpoint_key {
            worker.metrics.borrow_mut().upstream_connect(key, connected.is_ok());
        }
        worker.observe_connect(plan, cluster_index, endpoint, connected.is_ok());
    }
    match connected {
        Ok(upstream) => {
            // Counted open (ringway_upstream_cx_active) while it lasts.
            let _open = pool.token(connection);
            relay_streams(client, upstream, idle_timeout, worker, relayed).await;
            if relayed.went_quiet.get() {
                outcome.reason = "idle-timeout";
            }
        }
        Err(e) => refused(&client, outcome, e.reason()),
    }
}

/// No relay for this client: its connection is reset, not closed with a
/// FIN that would read as an upstream that took it and hung up.
fn refused(client: &Stream, outcome: &mut Outcome, reason: &'static str) {
    let _ = crate::sys::reset_on_close(client.socket());
    outcome.reason = reason;
}

/// Ends a relay's count in its endpoint's balancer when dropped, with the
/// connect time as its latency (none if it was cut before: a connect
/// dropped part-way tells nothing of the endpoint).
struct Record<'a> {
    worker: &'a Worker,
    plan: &'a Plan,
    cluster: usize,
    endpoint: usize,
    rtt: Cell<Option<Duration>>,
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        self.worker
            .record(self.plan, self.cluster, self.endpoint, self.rtt.get());
    }
}

/// What a relay moved, and whether it ended for quiet: counted as it goes,
/// so that a relay cut short (a drain, a connection's max duration) still
/// tells what it moved.
#[derive(Default)]
pub(super) struct Relayed {
    /// Client to upstream.
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub went_quiet: Cell<bool>,
    /// A tcp listener's relay also counts in the worker's metrics (a
    /// WebSocket tunnel's bytes go to its request's access log).
    metered: Option<(ListenerKey, Rc<str>)>,
    /// The client's and the upstream's sockets while a relay holds them.
    sockets: Cell<Option<(RawFd, RawFd)>>,
}

impl Relayed {
    /// A relay of `listener`'s connection to `cluster`, counted in
    /// `ringway_tcp_bytes_total` as it goes and `ringway_tcp_connections_total`
    /// when it ends.
    fn metered(listener: ListenerKey, cluster: &str) -> Relayed {
        Relayed {
            metered: Some((listener, cluster.into())),
            ..Relayed::default()
        }
    }

    /// The connection ended, for `reason` (the access log's).
    fn ended(&self, reason: &'static str, worker: &Worker) {
        if let Some((listener, cluster)) = &self.metered {
            worker
                .metrics
                .borrow_mut()
                .tcp_connection_ended(*listener, cluster, reason);
        }
    }

    /// `n` bytes read from the client (`from_client`) or the upstream.
    fn moved(&self, from_client: bool, n: usize, worker: &Worker) {
        let total = if from_client { &self.bytes_in } else { &self.bytes_out };
        total.set(total.get() + n as u64);
        if let Some((listener, cluster)) = &self.metered {
            worker
                .metrics
                .borrow_mut()
                .tcp_bytes(*listener, cluster, from_client, n as u64);
        }
    }

    /// Make the relay's sockets known to [`Relayed::cut_at`] while the
    /// returned guard lives. It must be dropped in the same future as the
    /// streams, with no await between: a number kept past its socket's
    /// close could name another connection by the time a cut comes.
    fn hold(&self, client: RawFd, upstream: RawFd) -> Holding<'_> {
        self.sockets.set(Some((client, upstream)));
        Holding(self)
    }

    /// Wait for `cut`, then reset both connections of the relay, if one
    /// runs: it is about to be dropped part-way, and a FIN would tell each
    /// peer that the other ended its stream whole.
    pub async fn cut_at(&self, cut: impl std::future::Future<Output = ()>) {
        cut.await;
        self.abort_both();
    }

    /// Reset both connections of the relay, if one runs.
    fn abort_both(&self) {
        if let Some((client, upstream)) = self.sockets.take() {
            for socket in [client, upstream] {
                // Failing that, the reset goes at the close.
                if crate::sys::abort_connection(&socket).is_err() {
                    let _ = crate::sys::reset_on_close(&socket);
                }
            }
        }
    }
}

/// Keeps a relay's sockets known until dropped, with them.
struct Holding<'a>(&'a Relayed);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.sockets.set(None);
    }
}

/// Copy both ways; each direction ends by shutting the other side's write
/// half, so a half-close passes through. Stops early when no bytes moved
/// either way for `idle_timeout`. Also the tunnel of an upgraded HTTP
/// connection.
async fn relay(client: TcpStream, upstream: TcpStream, idle_timeout: Duration, worker: &Worker, relayed: &Relayed) {
    // The sockets as the halves share them: to pass on a reset.
    let (client_fd, upstream_fd) = (client.as_raw_fd(), upstream.as_raw_fd());
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    let last_active = Cell::new(Instant::now());
    let (from_client, from_upstream) = (|n| relayed.moved(true, n, worker), |n| relayed.moved(false, n, worker));
    let both_ways = async {
        monoio::join!(
            pipe(
                &mut client_read,
                &mut up_write,
                upstream_fd,
                &from_client,
                &last_active,
                worker
            ),
            pipe(
                &mut up_read,
                &mut client_write,
                client_fd,
                &from_upstream,
                &last_active,
                worker
            ),
        )
    };
    let quiet = async {
        let mut delivered = Delivered::new([client_fd, upstream_fd]);
        loop {
            let due = last_active.get() + idle_timeout;
            monoio::time::sleep_until(due.into()).await;
            if last_active.get() + idle_timeout > Instant::now() {
                continue;
            }
            if !delivered.grew() {
                break;
            }
            last_active.set(Instant::now());
        }
    };
    let went_quiet = monoio::select! {
        _ = both_ways => false,
        _ = quiet => true,
    };
    relayed.went_quiet.set(went_quiet);
    if went_quiet {
        // Cut, perhaps with bytes read and not yet written: a FIN would
        // tell each peer the stream ended whole.
        relayed.abort_both();
    }
    // Rejoined, each socket closes without the FIN that dropping a write
    // half sends: a reset set on it goes out alone (a FIN first would end
    // the peer's stream as if whole). Each direction sent its FIN already
    // where it ended cleanly.
    drop(client_read.reunite(client_write));
    drop(up_read.reunite(up_write));
}

/// Bytes a side may have waiting to be written before the relay stops
/// reading the other side: enough to keep both directions moving, and the
/// most a peer that stops reading can make the relay hold for it.
const BACKLOG: usize = 64 * 1024;
/// Room made for each read that does not wait.
const READ_CHUNK: usize = 16 * 1024;

/// What the peers of a relay have acknowledged, as of the last look: the
/// relay's own reads and writes stop while the kernel still delivers what
/// it holds to a slow reader (a writer waits for much of it to drain),
/// and that is bytes moving too.
struct Delivered {
    sockets: [RawFd; 2],
    acked: [u64; 2],
}

impl Delivered {
    fn new(sockets: [RawFd; 2]) -> Delivered {
        let mut delivered = Delivered { sockets, acked: [0; 2] };
        delivered.grew();
        delivered
    }

    /// Whether either peer still has bytes on their way to it and took
    /// some since the last look. (A relay with none on their way is quiet
    /// whatever came before.)
    fn grew(&mut self) -> bool {
        let mut grew = false;
        for (socket, acked) in self.sockets.iter().zip(self.acked.iter_mut()) {
            let now = crate::sys::bytes_acked(socket).unwrap_or(*acked);
            let on_their_way = crate::sys::unacked_bytes(socket).is_ok_and(|n| n > 0);
            grew |= now > *acked && on_their_way;
            *acked = now;
        }
        grew
    }
}

/// Write all of `buf`, a part at a time as `to` takes it: bytes a slow
/// reader takes are bytes moving, and keep the relay from going quiet.
/// False when the write failed.
async fn write_counting(to: &mut impl AsyncWriteRent, buf: Vec<u8>, last_active: &Cell<Instant>) -> (bool, Vec<u8>) {
    let mut buf = buf;
    let mut at = 0;
    while at < buf.len() {
        let (written, slice) = to.write(buf.slice(at..)).await;
        buf = slice.into_inner();
        match written {
            Ok(n) if n > 0 => {
                at += n;
                last_active.set(Instant::now());
            }
            _ => return (false, buf),
        }
    }
    (true, buf)
}

/// Relay a connection where either side may be TLS. A TLS session cannot
/// be split into halves that move at once, so one loop moves both
/// directions without waiting (reads and writes that take what the sockets
/// hold or accept now), then waits for whichever socket can move more.
/// Each direction has its own bounded backlog, so a peer that writes a
/// large batch before it reads (a pipelining database client) never stops
/// the other direction: reading stops only for a direction whose writes
/// are stuck. Half-closes pass through (close_notify, then FIN); it stops
/// early when nothing moved for `idle_timeout`. Both plain: the split
/// relay above.
pub(super) async fn relay_streams(
    client: Stream,
    upstream: Stream,
    idle_timeout: Duration,
    worker: &Worker,
    relayed: &Relayed,
) {
    // Dropped with the streams (below, or in `relay`), whichever way this ends.
    let _held = relayed.hold(client.socket().as_raw_fd(), upstream.socket().as_raw_fd());
    let (client, upstream) = match (client, upstream) {
        (Stream::Plain(client), Stream::Plain(upstream)) => {
            return relay(client, upstream, idle_timeout, worker, relayed).await;
        }
        either => either,
    };
    let mut delivered = Delivered::new([client.socket().as_raw_fd(), upstream.socket().as_raw_fd()]);
    let mut sides = [Side::new(client), Side::new(upstream)];
    let wait_read = |side: &Side, other: &Side| side.reading && other.backlog.len() < BACKLOG;
    loop {
        let [client, upstream] = &mut sides;
        pump(client, upstream, &|n| relayed.moved(true, n, worker));
        pump(upstream, client, &|n| relayed.moved(false, n, worker));
        for side in sides.iter_mut() {
            let written = side.backlog.is_empty() && !side.stream.wants_write();
            if side.closing == Closing::Queued && written {
                let _ = side.stream.shutdown_socket().await;
                side.closing = Closing::Done;
            }
            if side.closing == Closing::Aborted && written {
                // The reset goes out when the relay drops the socket.
                super::io::reset_when_delivered(side.stream.socket()).await;
                side.closing = Closing::Reset;
            }
        }
        let [client, upstream] = &mut sides;
        let over = |side: &Side| !side.reading && side.closing == Closing::Done;
        let reset = |side: &Side| side.closing == Closing::Reset;
        if (over(client) && over(upstream)) || reset(client) || reset(upstream) {
            break;
        }
        // Bytes a TLS session decrypted while the other side's backlog was
        // full: no socket readiness will announce them, so go round again.
        if (wait_read(client, upstream) && client.stream.has_buffered())
            || (wait_read(upstream, client) && upstream.stream.has_buffered())
        {
            continue;
        }
        let [client, upstream] = &sides;
        // Not for a side whose writing is over (its socket failed): the
        // records its session still holds will never go, and its socket,
        // writable at once, would spin this loop.
        let wait_write =
            |side: &Side| side.closing != Closing::Done && (!side.backlog.is_empty() || side.stream.wants_write());
        // Readiness errors surface in the next non-blocking call.
        monoio::select! {
            _ = client.stream.socket().readable(false), if wait_read(client, upstream) => {},
            _ = upstream.stream.socket().readable(false), if wait_read(upstream, client) => {},
            _ = client.stream.socket().writable(false), if wait_write(client) => {},
            _ = upstream.stream.socket().writable(false), if wait_write(upstream) => {},
            _ = monoio::time::sleep(idle_timeout) => {
                if delivered.grew() {
                    continue;
                }
                relayed.went_quiet.set(true);
                relayed.abort_both();
                break;
            }
        }
    }
}

/// One side of [`relay_streams`].
struct Side {
    stream: Stream,
    /// No end of stream (or read error) from this side yet.
    reading: bool,
    /// Bytes from the other side that this one has not taken yet.
    backlog: Vec<u8>,
    closing: Closing,
}

/// How far a side's write direction has been ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    /// The other side ended: end this one's writes once its backlog is out.
    Wanted,
    /// The other side ended without close_notify (TLS): end this one's
    /// writes without a close_notify, which would vouch for it.
    Cut,
    /// The other side failed (a reset): reset this one once its backlog is
    /// out, as a FIN would tell its peer the stream ended whole.
    Aborted,
    /// close_notify queued (TLS); FIN once the session has sent it.
    Queued,
    Done,
    /// To be reset: the relay ends, as nothing more goes either way (the
    /// peer's counterpart is gone).
    Reset,
}

impl Side {
    fn new(stream: Stream) -> Side {
        Side {
            stream,
            reading: true,
            backlog: Vec::new(),
            closing: Closing::Open,
        }
    }

    /// Write what this side takes now; once its backlog is out, begin
    /// ending its writes if the other side ended.
    fn flush(&mut self) -> std::io::Result<()> {
        if matches!(self.closing, Closing::Done | Closing::Reset) {
            return Ok(());
        }
        while !self.backlog.is_empty() {
            match self.stream.write_now(&self.backlog)? {
                0 => break,
                n => drop(self.backlog.drain(..n)),
            }
        }
        self.stream.flush_now()?;
        if self.backlog.is_empty() {
            // A quiet connection keeps no buffer.
            self.backlog = Vec::new();
            if self.closing == Closing::Wanted {
                self.stream.queue_close();
                self.stream.flush_now()?;
            }
            if matches!(self.closing, Closing::Wanted | Closing::Cut) {
                self.closing = Closing::Queued;
            }
        }
        Ok(())
    }
}

/// Move what `from` holds now into `to`'s backlog (while it has room), then
/// write what `to` takes now. `moved` counts the bytes read. When `to`
/// fails a write, this direction is over; the other goes on.
fn pump(from: &mut Side, to: &mut Side, moved: &dyn Fn(usize)) {
    while from.reading && to.backlog.len() < BACKLOG {
        to.backlog.reserve(READ_CHUNK);
        match from.stream.read_now(&mut to.backlog) {
            Ok(None) => break,
            Ok(Some(n)) if n > 0 => moved(n),
            Ok(Some(_)) => {
                from.reading = false;
                to.closing = match from.stream.closed_cleanly() {
                    true => Closing::Wanted,
                    false => Closing::Cut,
                };
            }
            Err(_) => {
                from.reading = false;
                to.closing = Closing::Aborted;
            }
        }
    }
    if to.flush().is_err() {
        from.reading = false;
        to.backlog = Vec::new();
        to.closing = Closing::Done;
    }
}

/// Copy `from` into `to` until `from` ends or either fails, then shut `to`'s
/// write half; or, when `from` was reset, reset `to` (the socket `to_fd`):
/// a FIN would tell its peer the stream ended whole. `moved` counts the
/// bytes read.
///
/// A direction waits for its next bytes with a small read posted, so a quiet
/// connection (a database client's, say) holds 2 × `QUIET_READ`, not two
/// pool buffers; small messages still take one read each. A read that fills
/// the small buffer means more is queued: the rest moves a pool buffer at a
/// time until a read comes back short, and the pool buffer goes back.
async fn pipe(
    from: &mut impl AsyncReadRent,
    to: &mut impl AsyncWriteRent,
    to_fd: RawFd,
    moved: &dyn Fn(usize),
    last_active: &Cell<Instant>,
    worker: &Worker,
) {
    let mut buf = Vec::with_capacity(QUIET_READ);
    // The small buffer, set aside while a pool buffer is in use.
    let mut quiet: Option<Vec<u8>> = None;
    loop {
        buf.clear();
        let (read, back) = from.read(buf).await;
        buf = back;
        let n = match read {
            Ok(n) if n > 0 => n,
            Ok(_) => break,
            Err(_) => {
                if quiet.is_some() {
                    worker.buffers.give(buf);
                }
                // Reset at the close once what went to it has arrived, and
                // stop reading it, so that the other direction ends too (its
                // peer is gone with this one).
                super::io::reset_when_delivered(&to_fd).await;
                let _ = crate::sys::stop_reading(&to_fd);
                return;
            }
        };
        moved(n);
        last_active.set(Instant::now());
        let filled = n == buf.capacity();
        let (written, back) = write_counting(to, buf, last_active).await;
        buf = back;
        if !written {
            break;
        }
        match (filled, quiet.take()) {
            (true, None) => quiet = Some(std::mem::replace(&mut buf, worker.buffers.take())),
            (false, Some(small)) => worker.buffers.give(std::mem::replace(&mut buf, small)),
            (_, parked) => quiet = parked,
        }
    }
    if quiet.is_some() {
        worker.buffers.give(buf);
    }
    let _ = to.shutdown().await;
}
