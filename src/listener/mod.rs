//! Listening sockets: one SO_REUSEPORT socket per listener per worker (the
//! kernel spreads connections), and the accept loop that enforces the
//! process-wide connection cap, hands each connection to its protocol's
//! handler on this worker, and stops when a drain begins.

use crate::config::ListenerKind;
use crate::proxy;
use crate::worker::{ConnectionGuard, Worker};
use monoio::net::{ListenerOpts, TcpListener};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let opts = ListenerOpts::new().reuse_port(true).reuse_addr(true).backlog(4096);
    TcpListener::bind_with_config(addr, &opts)
}

pub async fn accept_loop(listener: TcpListener, index: usize, worker: Rc<Worker>) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => Some(r),
            _ = worker.drain.wait() => None,
        };
        let Some(accepted) = accepted else { break };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                eprintln!("ringway: worker {}: accept failed: {e}", worker.id);
                monoio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let plan = worker.plan();
        let Some(config) = plan.snapshot.listeners.get(index) else {
            continue;
        };
        let Some(guard) = ConnectionGuard::open(&worker, index, config.limits.max_connections) else {
            continue; // over the cap: dropping the stream closes it
        };
        let _ = stream.set_nodelay(true);
        match config.kind {
            ListenerKind::Http { .. } => {
                monoio::spawn(proxy::http::serve(stream, peer, index, worker.clone(), guard));
            }
            ListenerKind::Tcp { cluster } => {
                monoio::spawn(proxy::tcp::serve(stream, peer, cluster, worker.clone(), guard));
            }
        }
    }
}
