//! Request mirroring (shadowing): a copy of a share of a route's requests
//! goes to another cluster, as Istio's `mirror` and Envoy's request mirror
//! policy send it: Host suffixed with `-shadow`, fire and forget. The copy
//! runs as its own task; the client's request never waits for it, and its
//! answer is read to the end and dropped. Each copy opens its own
//! connection (`Connection: close`), bounded by the route's timeout and the
//! worker's drain deadline, and at most [`MAX_MIRRORS_IN_FLIGHT`] run at once.

use super::exchange::route_edits;
use crate::config::Edits;
use crate::http::{self, RequestHead};
use crate::resilience::Outcome;
use crate::tls::Carries;
use crate::upstream;
use crate::worker::{Plan, Worker, MAX_MIRRORS_IN_FLIGHT};
use std::rc::Rc;
use std::time::Instant;

/// The largest body a mirrored request carries when the route has no retry
/// policy of its own to say (the retry default): bigger ones are not copied.
pub(super) const MIRROR_MAX_BODY: u64 = 64 * 1024;

/// Head bytes the copy's answer may take before it is abandoned.
const MAX_ANSWER_HEAD: usize = 64 * 1024;

/// The copy's head: the request as it goes upstream, with the Host marked
/// as a shadow's and the connection closed after the answer.
pub(super) fn head(
    buf: &[u8],
    head: &RequestHead,
    forwarded: &http::Forwarded<'_>,
    extra: &[(&str, &[u8])],
    edits: &Edits,
) -> Vec<u8> {
    let configured = edits.append.iter().find(|(n, _)| n.eq_ignore_ascii_case("host"));
    let host = configured.map_or_else(|| head.host_bytes(buf).unwrap_or_default(), |(_, v)| v.as_slice());
    let shadow = shadow_host(host);
    let mut fields: Vec<(&str, &[u8])> = extra.to_vec();
    fields.extend([("Host", &shadow[..]), ("Connection", &b"close"[..])]);
    let mut out = Vec::with_capacity(512);
    http::write_request_head(
        buf,
        head,
        forwarded,
        head.framing,
        &fields,
        &route_edits(edits),
        &mut out,
    );
    out
}

/// `name-shadow`, the port (if any) kept after it, as Envoy writes it.
fn shadow_host(host: &[u8]) -> Vec<u8> {
    let port_at = match host.iter().rposition(|&b| b == b':') {
        // A colon inside brackets belongs to an IPv6 address.
        Some(i) if !host[i..].contains(&b']') => i,
        _ => host.len(),
    };
    let mut out = Vec::with_capacity(host.len() + 7);
    out.extend_from_slice(&host[..port_at]);
    out.extend_from_slice(b"-shadow");
    out.extend_from_slice(&host[port_at..]);
    out
}

/// Send `copy` (head and whole body) to an endpoint of `cluster` on a task
/// of its own; counted in `ringway_mirror_requests_total` when it ends.
pub(super) fn send(worker: &Worker, plan: &Rc<Plan>, cluster: usize, copy: Vec<u8>, deadline: Instant) {
    let in_flight = worker.mirrors_in_flight.get();
    let Some(handle) = worker.handle().filter(|_| in_flight < MAX_MIRRORS_IN_FLIGHT) else {
        worker.count_mirrored(plan, cluster, "skipped");
        return;
    };
    worker.mirrors_in_flight.set(in_flight + 1);
    monoio::spawn(run(handle, plan.clone(), cluster, copy, deadline));
}

async fn run(worker: Rc<Worker>, plan: Rc<Plan>, cluster: usize, copy: Vec<u8>, deadline: Instant) {
    let result = mirror(&worker, &plan, cluster, copy, deadline).await;
    worker.count_mirrored(&plan, cluster, result);
    worker
        .mirrors_in_flight
        .set(worker.mirrors_in_flight.get().saturating_sub(1));
}

/// Pick an endpoint as a request to the cluster would, send the copy, and
/// let the balancer, outlier detection and breakers learn from the answer:
/// to the mirror cluster, shadow traffic is traffic.
async fn mirror(worker: &Worker, plan: &Plan, cluster: usize, copy: Vec<u8>, deadline: Instant) -> &'static str {
    let Some(state) = plan.clusters.get(cluster) else {
        return "skipped";
    };
    let Ok(endpoint) = super::choose::pick_endpoint(worker, plan, cluster, None, &[], Instant::now()) else {
        return "skipped";
    };
    state.balancer.borrow_mut().on_start(endpoint);
    let started = Instant::now();
    let answer = monoio::select! {
        r = monoio::time::timeout_at(deadline.into(), exchange(worker, plan, cluster, endpoint, copy)) => {
            r.unwrap_or(Err(Outcome::Timeout))
        }
        _ = worker.abort.wait() => Err(Outcome::Timeout),
    };
    worker.record(plan, cluster, endpoint, started.elapsed());
    match answer {
        Ok(status) => {
            worker.observe_result(plan, cluster, endpoint, None, status);
            match status {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            }
        }
        Err(failure) => {
            worker.observe_result(plan, cluster, endpoint, Some(failure), 0);
            "failed"
        }
    }
}

/// Send the copy on a new connection and read the answer to its end: its
/// status, once it is all in.
async fn exchange(
    worker: &Worker,
    plan: &Plan,
    cluster: usize,
    endpoint: usize,
    copy: Vec<u8>,
) -> Result<u16, Outcome> {
    let config = &plan.snapshot.clusters[cluster];
    let addr = plan.clusters[cluster].pools[endpoint].addr;
    let connected = upstream::connect(addr, config.connect_timeout, config.tls.as_ref(), Carries::Http).await;
    if let Some(key) = plan.keys.endpoint(cluster, endpoint) {
        worker.metrics.borrow_mut().upstream_connect(key, connected.is_ok());
    }
    let mut stream = connected.map_err(|_| Outcome::ConnectFailure)?;
    if stream.write_all(copy).await.0.is_err() {
        return Err(Outcome::Reset);
    }
    let mut buf = worker.buffers.take();
    let mut status = None;
    loop {
        if status.is_none() {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buf) {
                // An interim answer (100 Continue) is followed by the real one.
                Ok(httparse::Status::Complete(len)) if response.code.is_some_and(|c| c < 200) => {
                    buf.drain(..len);
                    continue;
                }
                Ok(httparse::Status::Complete(_)) => {
                    status = response.code.filter(|c| (200..=599).contains(c));
                    if status.is_none() {
                        break;
                    }
                    buf.clear();
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_ANSWER_HEAD => {}
                _ => break,
            }
        } else {
            // The rest of the answer is only read to its end, then dropped.
            buf.clear();
        }
        buf.reserve(4096);
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    worker.buffers.give(buf);
    status.ok_or(Outcome::Reset)
}

#[cfg(test)]
mod tests {
    use super::shadow_host;

    #[test]
    fn shadow_hosts_keep_the_port_after_the_suffix() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"api.local", b"api.local-shadow"),
            (b"api.local:8080", b"api.local-shadow:8080"),
            (b"[::1]:443", b"[::1]-shadow:443"),
            (b"[::1]", b"[::1]-shadow"),
            (b"", b"-shadow"),
        ];
        for (host, want) in cases {
            assert_eq!(shadow_host(host), want, "{}", String::from_utf8_lossy(host));
        }
    }
}
