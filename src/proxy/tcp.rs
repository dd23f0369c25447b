//! L4 proxying: pick an endpoint of the listener's cluster, connect, and copy
//! bytes both ways until each side has closed its half.

use crate::addr_text::IpText;
use crate::error::ProxyError;
use crate::upstream;
use crate::worker::{ConnectionGuard, Worker};
use monoio::io::{AsyncWriteRent, Splitable};
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

pub async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    cluster_index: usize,
    worker: Rc<Worker>,
    _guard: ConnectionGuard,
) {
    // Past the drain deadline the connection is dropped, whatever it was doing.
    monoio::select! {
        _ = proxy_connection(client, peer, cluster_index, &worker) => {},
        _ = worker.abort.wait() => {},
    }
}

async fn proxy_connection(client: TcpStream, peer: SocketAddr, cluster_index: usize, worker: &Worker) {
    let plan = worker.plan();
    let (Some(cluster), Some(state)) = (
        plan.snapshot.clusters.get(cluster_index),
        plan.clusters.get(cluster_index),
    ) else {
        return;
    };
    let hash = Some(crate::cluster::hash_bytes(IpText::new(peer.ip()).as_bytes()));
    let zone = plan.snapshot.runtime.zone.as_deref();
    let now = Instant::now();
    state.refresh_active(worker.shared.health.version(), &cluster.endpoints, zone, now);
    let level = worker.with_rng(|rng| state.choose_level(rng));
    let eligible = |i: usize| state.eligible(i, &cluster.endpoints, &level, zone, now);
    let Some(endpoint) = worker.with_rng(|rng| state.balancer.borrow_mut().pick(Instant::now(), hash, rng, &eligible))
    else {
        return; // no endpoint: closing is the only answer L4 has
    };
    state.balancer.borrow_mut().on_start(endpoint);
    let started = Instant::now();
    let connected: Result<TcpStream, ProxyError> =
        upstream::connect(state.pools[endpoint].addr, cluster.connect_timeout).await;
    if let Ok(up) = connected {
        let (mut client_read, mut client_write) = client.into_split();
        let (mut up_read, mut up_write) = up.into_split();
        monoio::join!(
            async {
                let _ = monoio::io::copy(&mut client_read, &mut up_write).await;
                let _ = up_write.shutdown().await;
            },
            async {
                let _ = monoio::io::copy(&mut up_read, &mut client_write).await;
                let _ = client_write.shutdown().await;
            }
        );
    }
    worker.record(&plan, cluster_index, endpoint, started.elapsed());
}
