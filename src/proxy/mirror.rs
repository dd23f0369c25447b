//! Request mirroring (shadowing): a copy of a share of a route's requests
//! goes to another cluster, as Istio's `mirror` and Envoy's request mirror
//! policy send it: Host suffixed with `-shadow`, fire and forget. The copy
//! runs as its own task; the client's request never waits for it, and its
//! answer is read to the end and dropped. Copies take connections from the
//! mirror cluster's pools (or open them within its caps) and give them
//! back, as requests do; each is bounded by the route's timeout (and cut
//! at the drain deadline, or dropped with the worker once its connections
//! are done); at most [`MAX_MIRRORS_IN_FLIGHT`] run at once.

use super::dial::Dial;
use super::exchange::route_edits;
use crate::config::Edits;
use crate::http::{self, Chunk, ChunkedDecoder, Framing, Method, ParseStatus, RequestHead, ResponseHead};
use crate::resilience::Outcome;
use crate::tls::Stream;
use crate::worker::{Plan, Worker, MAX_MIRRORS_IN_FLIGHT};
use std::rc::Rc;
use std::time::Instant;

/// The largest body a mirrored request carries (the retry default): bigger
/// ones are not copied.
pub(super) const MIRROR_MAX_BODY: u64 = 64 * 1024;

/// Head bytes the copy's answer may take before it is abandoned.
const MAX_ANSWER_HEAD: usize = 64 * 1024;

/// Whether this request is copied, and to which cluster: drawn against the
/// route's share. A mirror alone never holds a request back, so unless a
/// retry policy holds the body anyway (`held_anyway`), only a body already
/// read whole (`buffered` bytes are) is copied; a drawn copy that cannot be
/// made is counted as skipped.
pub(super) fn draw(
    worker: &Worker,
    plan: &Plan,
    listener: usize,
    route: usize,
    head: &RequestHead,
    buffered: usize,
    held_anyway: bool,
) -> Option<usize> {
    let (cluster, chance) = plan.mirrors.get(listener)?.get(route).copied().flatten()?;
    if !worker.with_rng(|rng| chance.hits(rng)) {
        return None;
    }
    let at_hand = match head.framing {
        Framing::Empty => true,
        Framing::Length(n) => n <= MIRROR_MAX_BODY && n <= buffered as u64,
        Framing::Chunked | Framing::UntilClose => false,
    };
    if at_hand || held_anyway {
        Some(cluster)
    } else {
        worker.count_mirrored(plan, cluster, "skipped");
        None
    }
}

/// The copy's head: the request as it goes upstream, with the Host marked
/// as a shadow's.
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
    fields.push(("Host", &shadow[..]));
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

/// `name-shadow`, the port (if any) kept after it, as Envoy writes it. An
/// IP literal in brackets (`[::1]:8080`) has no name to mark, and a suffix
/// would make it no authority at all; nor has an empty Host (HTTP/1.0
/// without one): both go as they are.
fn shadow_host(host: &[u8]) -> Vec<u8> {
    if host.is_empty() || host.first() == Some(&b'[') {
        return host.to_vec();
    }
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

/// Send `copy` (head and whole body of a `method` request) to an endpoint
/// of `cluster` on a task of its own; counted in
/// `ringway_mirror_requests_total` when it ends.
pub(super) fn send(worker: &Worker, plan: &Rc<Plan>, cluster: usize, method: Method, copy: Vec<u8>, deadline: Instant) {
    let in_flight = worker.mirrors_in_flight.get();
    let Some(handle) = worker.handle().filter(|_| in_flight < MAX_MIRRORS_IN_FLIGHT) else {
        worker.count_mirrored(plan, cluster, "skipped");
        return;
    };
    let counted = InFlight::new(handle);
    monoio::spawn(run(counted, plan.clone(), cluster, method, copy, deadline));
}

/// A copy in flight on its worker, for as long as its task lives.
struct InFlight(Rc<Worker>);

impl InFlight {
    fn new(worker: Rc<Worker>) -> InFlight {
        worker.mirrors_in_flight.set(worker.mirrors_in_flight.get() + 1);
        InFlight(worker)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let count = &self.0.mirrors_in_flight;
        count.set(count.get().saturating_sub(1));
    }
}

async fn run(counted: InFlight, plan: Rc<Plan>, cluster: usize, method: Method, copy: Vec<u8>, deadline: Instant) {
    let worker = &counted.0;
    let result = mirror(worker, &plan, cluster, method, copy, deadline).await;
    worker.count_mirrored(&plan, cluster, result);
}

/// Pick an endpoint as a request to the cluster would, send the copy, and
/// let the balancer, outlier detection and breakers learn from the answer:
/// to the mirror cluster, shadow traffic is traffic. Cut short at the drain
/// deadline, it teaches them nothing.
async fn mirror(
    worker: &Worker,
    plan: &Plan,
    cluster: usize,
    method: Method,
    copy: Vec<u8>,
    deadline: Instant,
) -> &'static str {
    let (Some(state), Some(config)) = (plan.clusters.get(cluster), plan.snapshot.clusters.get(cluster)) else {
        return "skipped";
    };
    let Ok(endpoint) = super::choose::pick_endpoint(worker, plan, cluster, None, &[], Instant::now()) else {
        return "skipped";
    };
    let Some(pool) = state.pools.get(endpoint) else {
        return "skipped";
    };
    let dial = Dial {
        pool,
        connect_timeout: config.connect_timeout,
        tls: config.tls.as_ref(),
        endpoint_key: plan.keys.endpoint(cluster, endpoint),
        leases: state.guards.leases.as_ref(),
        // A copy that finds the caps full is skipped, never let past them.
        first_past_cap: false,
    };
    state.balancer.borrow_mut().on_start(endpoint);
    let started = Instant::now();
    let answer = monoio::select! {
        r = monoio::time::timeout_at(deadline.into(), exchange(worker, &dial, method, copy)) => {
            Some(r.unwrap_or(Err(Some(Outcome::Timeout))))
        }
        _ = worker.abort.wait() => None,
    };
    // As for a request, a copy the endpoint failed costs it a penalty; one
    // skipped at the caps or cut at the drain deadline teaches nothing.
    let rtt = match answer {
        Some(Ok(_)) => Some(started.elapsed()),
        Some(Err(Some(_))) => Some(started.elapsed().max(super::http::FAILURE_RTT)),
        Some(Err(None)) | None => None,
    };
    worker.record(plan, cluster, endpoint, rtt);
    match answer {
        Some(Ok(status)) => {
            worker.observe_result(plan, cluster, endpoint, None, status);
            match status {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            }
        }
        Some(Err(Some(failure))) => {
            worker.observe_result(plan, cluster, endpoint, Some(failure), 0);
            "failed"
        }
        // The cluster's connection caps are full: shadow traffic waits for nobody.
        Some(Err(None)) => "skipped",
        None => "failed",
    }
}

/// Send the copy on a pooled or new connection and read the answer through
/// its end, by its framing: its status. A pooled connection the endpoint
/// closed meanwhile is replaced once, as for a request. The connection
/// goes back to the pool when the answer ended cleanly. Err(None): no
/// connection within the cluster's caps.
async fn exchange(worker: &Worker, dial: &Dial<'_>, method: Method, mut copy: Vec<u8>) -> Result<u16, Option<Outcome>> {
    let mut stale_retry = true;
    loop {
        let (mut stream, token, reused) = dial
            .checkout(worker, Instant::now())
            .await
            .map_err(|failure| failure.retry_outcome())?;
        let may_retry = reused && std::mem::take(&mut stale_retry);
        let (written, back) = stream.write_all(copy).await;
        copy = back;
        if written.is_err() {
            if may_retry {
                continue;
            }
            return Err(Some(Outcome::Reset));
        }
        let mut buf = worker.buffers.take();
        let answer = read_answer(&mut stream, &mut buf, method).await;
        worker.buffers.give(buf);
        return match answer {
            Answer::Nothing if may_retry && method.is_idempotent() => continue,
            Answer::Nothing | Answer::Malformed => Err(Some(Outcome::Reset)),
            Answer::Status { status, reusable } => {
                if reusable {
                    dial.pool.put(stream, token, Instant::now());
                }
                Ok(status)
            }
        };
    }
}

/// How the copy's answer went.
enum Answer {
    /// The connection ended before a single byte of an answer.
    Nothing,
    Malformed,
    /// A final status; `reusable` when its body ended where its framing
    /// said and the connection may take another request.
    Status {
        status: u16,
        reusable: bool,
    },
}

async fn read_answer(stream: &mut Stream, buf: &mut Vec<u8>, method: Method) -> Answer {
    let limits = http::Limits::default();
    let mut head = ResponseHead::default();
    let mut received = false;
    let head_len = loop {
        match http::parse_response(buf, &limits, method, &mut head) {
            // An interim answer (100 Continue) comes before the real one.
            // (A 101 is final: what follows it is not HTTP.)
            Ok(ParseStatus::Complete(len)) if head.is_informational() => drop(buf.drain(..len)),
            Ok(ParseStatus::Complete(len)) => break len,
            Ok(ParseStatus::Partial) => match fill(stream, buf).await {
                Some(()) => received = true,
                None if received => return Answer::Malformed,
                None => return Answer::Nothing,
            },
            Err(_) => return Answer::Malformed,
        }
    };
    let status = head.status;
    buf.drain(..head_len);
    // The body is only read to its end, then dropped; an answer cut short
    // still answered, but leaves the connection unusable, as do bytes
    // after the body's end.
    let ended_cleanly = match head.framing {
        Framing::Empty => buf.is_empty(),
        Framing::Length(n) => {
            let mut left = n;
            loop {
                let got = buf.len() as u64;
                if got > left {
                    break false;
                }
                left -= got;
                if left == 0 {
                    break true;
                }
                buf.clear();
                if fill(stream, buf).await.is_none() {
                    break false;
                }
            }
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            'body: loop {
                let mut at = 0;
                while at < buf.len() {
                    match decoder.decode(&buf[at..]) {
                        Ok((used, Chunk::End)) => break 'body at + used == buf.len(),
                        Err(_) => break 'body false,
                        Ok((0, _)) => break,
                        Ok((used, _)) => at += used,
                    }
                }
                buf.drain(..at);
                if fill(stream, buf).await.is_none() {
                    break false;
                }
            }
        }
        Framing::UntilClose => loop {
            buf.clear();
            if fill(stream, buf).await.is_none() {
                break false;
            }
        },
    };
    Answer::Status {
        status,
        reusable: ended_cleanly && head.keep_alive,
    }
}

/// Read more of the answer into `buf`; None at its end or on an error.
async fn fill(stream: &mut Stream, buf: &mut Vec<u8>) -> Option<()> {
    if buf.len() >= MAX_ANSWER_HEAD {
        return None;
    }
    buf.reserve(4096);
    match stream.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(()),
    }
}

#[cfg(test)]
mod tests {
    use super::shadow_host;

    #[test]
    fn shadow_hosts_mark_names_and_keep_the_port() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"api.local", b"api.local-shadow"),
            (b"api.local:8080", b"api.local-shadow:8080"),
            (b"10.0.0.1:8080", b"10.0.0.1-shadow:8080"),
            // No name to mark: left as they are.
            (b"[::1]:443", b"[::1]:443"),
            (b"[::1]", b"[::1]"),
            (b"", b""),
        ];
        for (host, want) in cases {
            assert_eq!(shadow_host(host), want, "{}", String::from_utf8_lossy(host));
        }
    }
}
