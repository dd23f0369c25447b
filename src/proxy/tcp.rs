//! L4 proxying: pick an endpoint of the listener's cluster as HTTP tries do
//! (health, zones, ejection, breakers), connect within the cluster's caps,
//! and copy bytes both ways until each side has closed its half or the
//! connection has been quiet for the listener's idle timeout.

use super::choose::pick_endpoint;
use crate::addr_text::IpText;
use crate::resilience::LimitKind;
use crate::upstream;
use crate::worker::{ConnectionGuard, Worker};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    cluster_index: usize,
    idle_timeout: Duration,
    worker: Rc<Worker>,
    _guard: ConnectionGuard,
) {
    // Past the drain deadline the connection is dropped, whatever it was doing.
    monoio::select! {
        _ = proxy_connection(client, peer, cluster_index, idle_timeout, &worker) => {},
        _ = worker.abort.wait() => {},
    }
}

/// Every way out closes the client: L4 has no error to answer with.
async fn proxy_connection(
    client: TcpStream,
    peer: SocketAddr,
    cluster_index: usize,
    idle_timeout: Duration,
    worker: &Worker,
) {
    let plan = worker.plan();
    let (Some(cluster), Some(state)) = (
        plan.snapshot.clusters.get(cluster_index),
        plan.clusters.get(cluster_index),
    ) else {
        return;
    };
    // The cluster's caps on open and pending connections, as for HTTP; taken
    // first, so that a refusal leaves no breaker probe unanswered.
    let lease = |kind| match &state.guards.leases {
        None => Ok(None),
        Some(leases) => leases.try_acquire(kind).map(Some).ok_or(()),
    };
    let (Ok(connection), Ok(pending)) = (lease(LimitKind::Connections), lease(LimitKind::Pending)) else {
        worker.count_overflow(&plan, cluster_index);
        return;
    };
    let hash = Some(crate::cluster::hash_bytes(IpText::new(peer.ip()).as_bytes()));
    let Ok(endpoint) = pick_endpoint(worker, &plan, cluster_index, hash, &[], Instant::now()) else {
        return; // no endpoint, or every breaker open
    };

    let pool = &state.pools[endpoint];
    let endpoint_key = plan.keys.endpoint(cluster_index, endpoint);
    state.balancer.borrow_mut().on_start(endpoint);
    let started = Instant::now();
    let connected = upstream::connect(pool.addr, cluster.connect_timeout).await;
    drop(pending);
    // The balancer learns the connect time: the one latency L4 can see.
    let connect_time = started.elapsed();
    if let Some(key) = endpoint_key {
        worker.metrics.borrow_mut().upstream_connect(key, connected.is_ok());
    }
    worker.observe_connect(&plan, cluster_index, endpoint, connected.is_ok());
    if let Ok(upstream) = connected {
        // Counted open (ringway_upstream_cx_active) while it lasts.
        let _open = pool.token(connection);
        relay(client, upstream, idle_timeout, worker).await;
    }
    worker.record(&plan, cluster_index, endpoint, connect_time);
}

/// Copy both ways; each direction ends by shutting the other side's write
/// half, so a half-close passes through. Stops early when no bytes moved
/// either way for `idle_timeout`.
async fn relay(client: TcpStream, upstream: TcpStream, idle_timeout: Duration, worker: &Worker) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    let last_active = Cell::new(Instant::now());
    let both_ways = async {
        monoio::join!(
            pipe(&mut client_read, &mut up_write, &last_active, worker),
            pipe(&mut up_read, &mut client_write, &last_active, worker),
        )
    };
    let quiet = async {
        loop {
            let due = last_active.get() + idle_timeout;
            monoio::time::sleep_until(due.into()).await;
            if last_active.get() + idle_timeout <= Instant::now() {
                break;
            }
        }
    };
    monoio::select! {
        _ = both_ways => {},
        _ = quiet => {},
    }
}

/// Copy `from` into `to` until `from` ends or either fails, then shut `to`'s
/// write half.
async fn pipe(
    from: &mut impl AsyncReadRent,
    to: &mut impl AsyncWriteRent,
    last_active: &Cell<Instant>,
    worker: &Worker,
) {
    let mut buf = worker.buffers.take();
    loop {
        buf.clear();
        let (read, back) = from.read(buf).await;
        buf = back;
        if !matches!(read, Ok(n) if n > 0) {
            break;
        }
        last_active.set(Instant::now());
        let (written, back) = to.write_all(buf).await;
        buf = back;
        if written.is_err() {
            break;
        }
    }
    worker.buffers.give(buf);
    let _ = to.shutdown().await;
}
