//! THE request path, top to bottom: for each request on a client connection,
//! decode → route → limit → pick → checkout → forward → record → respond.
//! Errors from any stage come back here and become a response in one place.

use super::body::{BodyPump, PumpError};
use super::io::Inbound;
use crate::cluster::hash_bytes;
use crate::config::{LbKind, ListenerKind, LogTarget, Target};
use crate::error::{ErrorKind, ProxyError};
use crate::http::{self, Framing, HttpError, Method, ParseStatus, RequestHead, ResponseHead};
use crate::metrics::{EndpointKey, Shard};
use crate::router::{HeaderLookup, RouteRequest};
use crate::telemetry::trace::TRACEPARENT_LEN;
use crate::telemetry::{new_request_id, parse_traceparent, write_json_line, AccessRecord, TraceContext, NO_REASON};
use crate::upstream::{self, EndpointPool};
use crate::worker::{ConnectionGuard, Drain, Plan, Worker};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

const VIA: &str = "1.1 ringway";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// How long a connection that just finished a request keeps a read buffer
/// posted for the next one before it counts as idle.
const HOT_WINDOW: Duration = Duration::from_millis(25);
/// Balancer penalty for an attempt that failed before any response.
const FAILURE_RTT: Duration = Duration::from_secs(1);

/// Serve one client connection until it closes, idles out, or a drain begins.
/// `stopped` fires when the connection's listener leaves the config: like a
/// drain, the request in progress finishes and the connection then closes.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Rc<str>,
    stopped: Rc<Drain>,
    worker: Rc<Worker>,
    _guard: ConnectionGuard,
) {
    let worker = &*worker;
    let mut client = Inbound::new(stream);
    loop {
        // Boxed, so that this future (all an idle connection costs besides its
        // socket) does not carry the size of the request pipeline's state.
        // Past the drain deadline a request still in progress is abandoned.
        let step = Box::pin(async {
            monoio::select! {
                step = serve_next(worker, &listener, peer, &mut client) => step,
                _ = worker.abort.wait() => Step::Close,
            }
        })
        .await;
        match step {
            Step::Next => {}
            Step::Close => break,
            Step::Idle(idle_timeout) => {
                client.release(&worker.buffers);
                let readable = monoio::select! {
                    r = client.stream.readable(false) => r.is_ok(),
                    _ = worker.idle.wait_until(Instant::now() + idle_timeout) => false,
                    _ = worker.drain.wait() => false,
                    _ = stopped.wait() => false,
                };
                if !readable {
                    break;
                }
            }
        }
    }
    client.release(&worker.buffers);
}

enum Step {
    /// Serve the next request on this connection.
    Next,
    /// Nothing arrived within the hot window: wait buffer-less this long.
    Idle(Duration),
    Close,
}

/// Wait briefly for, then serve, the next request on the connection.
async fn serve_next(worker: &Worker, listener_name: &str, peer: SocketAddr, client: &mut Inbound) -> Step {
    let mut head = RequestHead::default();
    let head = &mut head;
    if !client.has_pending() {
        // A busy client sends its next request within moments: read it
        // straight into a buffer. Past the hot window the connection is idle.
        let plan = worker.plan();
        let Some(idle_timeout) = plan
            .listener(listener_name)
            .map(|i| plan.snapshot.listeners[i].limits.idle_timeout)
        else {
            return Step::Close;
        };
        let hot = HOT_WINDOW.min(idle_timeout);
        match client.fill_within(&worker.buffers, hot).await {
            Some(Ok(0)) | Some(Err(_)) => return Step::Close,
            Some(Ok(_)) => {}
            None => return Step::Idle(idle_timeout.saturating_sub(hot)),
        }
    }
    // Taken once the request is here, so it sees every swap published before.
    let plan = worker.plan();
    let Some(listener) = plan.listener(listener_name) else {
        return Step::Close; // the listener left the config: finish with this connection
    };
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let head_len = match read_head(worker, &plan, listener, client, head).await {
        Ok(Some(len)) => len,
        Ok(None) => return Step::Close,
        Err(e) => {
            outcome.fail(&e);
            respond_error(client, &e, true, false).await;
            record(worker, &plan, listener, &outcome, started.elapsed());
            return Step::Close;
        }
    };
    outcome.bytes_in = head_len as u64;
    let result = handle_request(worker, &plan, listener, peer, client, head, head_len, &mut outcome).await;
    let keep_alive = match result {
        Ok(keep_alive) => keep_alive,
        Err(failure) => {
            // Safe to keep the connection only if nothing of the request is
            // left unread and no response byte went out yet.
            let clean = !failure.response_started
                && head.framing == Framing::Empty
                && head.keep_alive
                && !failure.error.must_close()
                && !worker.drain.is_started();
            if failure.response_started {
                outcome.reason = failure.error.reason();
            } else {
                outcome.fail(&failure.error);
                if failure.error.can_respond() {
                    respond_error(client, &failure.error, !clean, head.method == Method::Head).await;
                }
            }
            clean
        }
    };
    record(worker, &plan, listener, &outcome, started.elapsed());
    if keep_alive && !worker.drain.is_started() {
        Step::Next
    } else {
        Step::Close
    }
}

/// What happened to one request, filled in as the pipeline goes and recorded
/// once at the end: metrics, and the access log line.
struct Outcome {
    status: u16,
    /// Why the proxy answered itself (`x-ringway-error`), or `NO_REASON`.
    reason: &'static str,
    route: Option<usize>,
    cluster: Option<usize>,
    upstream: Option<SocketAddr>,
    attempts: u32,
    bytes_in: u64,
    bytes_out: u64,
    trace: Option<TraceContext>,
    /// What the access log needs from the head, copied before the head is
    /// consumed; only when the access log is on.
    logged: Option<LoggedRequest>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            status: 0,
            reason: NO_REASON,
            route: None,
            cluster: None,
            upstream: None,
            attempts: 0,
            bytes_in: 0,
            bytes_out: 0,
            trace: None,
            logged: None,
        }
    }
}

impl Outcome {
    fn fail(&mut self, error: &ProxyError) {
        self.status = error.status();
        self.reason = error.reason();
    }
}

struct LoggedRequest {
    method: Vec<u8>,
    authority: Vec<u8>,
    path: Vec<u8>,
    request_id: Vec<u8>,
}

/// The one recording point: the worker's metric shard, and the access log.
fn record(worker: &Worker, plan: &Plan, listener: usize, outcome: &Outcome, elapsed: Duration) {
    let route_key = match (outcome.route, outcome.cluster) {
        (Some(route), Some(cluster)) => plan.keys.route(listener, route, cluster),
        _ => None,
    };
    {
        let mut metrics = worker.metrics.borrow_mut();
        match route_key {
            Some(key) if outcome.reason == NO_REASON => metrics.request(key, outcome.status, elapsed),
            Some(key) => metrics.route_local_reply(key, outcome.reason, outcome.status, elapsed),
            None => {
                if let Some(key) = plan.keys.listeners.get(listener) {
                    metrics.local_reply(*key, outcome.reason, outcome.status);
                }
            }
        }
    }
    if plan.snapshot.access_log.target == LogTarget::Off {
        return;
    }
    let trace_id = outcome.trace.as_ref().map(|t| t.trace_id_hex());
    let logged = outcome.logged.as_ref();
    let field = |f: fn(&LoggedRequest) -> &[u8]| logged.map_or(&b""[..], f);
    let route = outcome
        .route
        .and_then(|r| match &plan.snapshot.listeners[listener].kind {
            ListenerKind::Http { routes } => routes.get(r).map(|r| r.name.as_str()),
            ListenerKind::Tcp { .. } => None,
        });
    let record = AccessRecord {
        time: std::time::SystemTime::now(),
        trace_id: trace_id
            .as_ref()
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or(""),
        request_id: field(|l| &l.request_id),
        method: field(|l| &l.method),
        authority: field(|l| &l.authority),
        path: field(|l| &l.path),
        status: outcome.status,
        reason: outcome.reason,
        route: route.unwrap_or(""),
        cluster: outcome.cluster.map_or("", |c| plan.snapshot.clusters[c].name.as_str()),
        upstream: outcome.upstream,
        attempts: outcome.attempts,
        bytes_in: outcome.bytes_in,
        bytes_out: outcome.bytes_out,
        duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
    };
    let mut line = Vec::with_capacity(512);
    write_json_line(&record, &mut line);
    let mut log = worker.log.borrow_mut();
    log.push(&line);
    let half_full = log.len() > log.capacity() / 2;
    drop(log);
    if half_full {
        worker.flush_log();
    }
}

/// An error, and whether part of a response had already been sent.
struct Failure {
    error: ProxyError,
    response_started: bool,
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        Failure {
            error,
            response_started: false,
        }
    }
}

impl From<ErrorKind> for Failure {
    fn from(kind: ErrorKind) -> Self {
        ProxyError::new(kind).into()
    }
}

/// Read until a whole request head is buffered. Ok(None): the client closed.
async fn read_head(
    worker: &Worker,
    plan: &Plan,
    listener: usize,
    client: &mut Inbound,
    head: &mut RequestHead,
) -> Result<Option<usize>, ProxyError> {
    let Some(config) = plan.snapshot.listeners.get(listener) else {
        return Ok(None);
    };
    let limits = http::Limits {
        max_header_bytes: config.limits.max_header_bytes,
        ..http::Limits::default()
    };
    let deadline = Instant::now() + config.limits.header_read_timeout;
    loop {
        if client.has_pending() {
            match http::parse_request(client.pending(), &limits, head) {
                Ok(ParseStatus::Complete(len)) => return Ok(Some(len)),
                Ok(ParseStatus::Partial) => {}
                Err(e) => return Err(ErrorKind::Malformed(e).into()),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, client.fill(&worker.buffers, limits.max_header_bytes)).await {
            Err(_) => return Err(ErrorKind::HeaderReadTimeout.into()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
            Ok(Ok(_)) => {}
        }
    }
}

/// The pipeline for one request whose head is at the start of `client`'s
/// pending bytes. Ok(keep_alive) once the response has been fully sent.
#[allow(clippy::too_many_arguments)]
async fn handle_request(
    worker: &Worker,
    plan: &Plan,
    listener: usize,
    peer: SocketAddr,
    client: &mut Inbound,
    head: &RequestHead,
    head_len: usize,
    outcome: &mut Outcome,
) -> Result<bool, Failure> {
    if plan.snapshot.access_log.target != LogTarget::Off {
        let buf = client.pending();
        outcome.logged = Some(LoggedRequest {
            method: head.method_bytes(buf).to_vec(),
            authority: head.host_bytes(buf).unwrap_or_default().to_vec(),
            path: head.path_bytes(buf).to_vec(),
            request_id: head.header(buf, "x-request-id").unwrap_or_default().to_vec(),
        });
    }
    // Decode → route → limit → pick. A refusal here has read nothing past the
    // head: drop the head, and the connection can go on to the next request.
    let choice = match choose(worker, plan, listener, peer, client.pending(), head) {
        Ok(choice) => choice,
        Err(e) => {
            client.consume(head_len);
            return Err(e.into());
        }
    };
    let Choice {
        route,
        route_timeout,
        cluster: cluster_index,
        endpoint,
        max_body,
    } = choice;
    let cluster = &plan.snapshot.clusters[cluster_index];
    let state = &plan.clusters[cluster_index];
    outcome.route = Some(route);
    outcome.cluster = Some(cluster_index);
    outcome.upstream = Some(state.pools[endpoint].addr);

    // Trace context: continue the client's trace with a new span for this
    // hop (keeping its sampled flag), or start one; name the request.
    let buf = client.pending();
    let (trace, generated_id) = worker.with_rng(|rng| {
        let trace = match head.header(buf, "traceparent").and_then(parse_traceparent) {
            Some(parent) => parent.child(rng),
            None => TraceContext::new_root(rng, true),
        };
        let generated = head.header(buf, "x-request-id").is_none().then(|| new_request_id(rng));
        (trace, generated)
    });
    let mut traceparent = Vec::with_capacity(TRACEPARENT_LEN);
    trace.write_traceparent(&mut traceparent);
    outcome.trace = Some(trace);
    if let (Some(logged), Some(id)) = (&mut outcome.logged, &generated_id) {
        logged.request_id = id.to_vec();
    }
    let mut request_headers: Vec<(&str, &[u8])> = vec![("traceparent", &traceparent)];
    let mut response_headers: Vec<(&str, &[u8])> = Vec::new();
    if let Some(id) = &generated_id {
        request_headers.push(("x-request-id", id));
        response_headers.push(("x-request-id", id));
    }

    // Checkout, forward, respond — all within the route's time budget.
    state.balancer.borrow_mut().on_start(endpoint);
    let started = Instant::now();
    let exchange = Exchange {
        worker,
        peer,
        head,
        head_len,
        pool: &state.pools[endpoint],
        connect_timeout: cluster.connect_timeout,
        response_header_timeout: cluster.response_header_timeout,
        max_body,
        request_headers: &request_headers,
        response_headers: &response_headers,
        endpoint_key: plan.keys.endpoint(cluster_index, endpoint),
    };
    let mut progress = Progress::default();
    let result = monoio::time::timeout(route_timeout, exchange.run(client, &mut progress)).await;
    outcome.status = progress.status;
    outcome.attempts = progress.attempts;
    outcome.bytes_in += progress.bytes_in;
    outcome.bytes_out = progress.bytes_out;
    let result = match result {
        Ok(r) => r,
        Err(_) => Err(Failure {
            error: ErrorKind::UpstreamTimeout.into(),
            response_started: progress.response_started,
        }),
    };

    // Record: the balancer learns the upstream's own latency (request sent to
    // response head, without connect time), or a penalty when it gave none.
    let rtt = match progress.upstream_latency {
        Some(latency) => latency,
        None => started.elapsed().max(FAILURE_RTT),
    };
    worker.record(plan, cluster_index, endpoint, rtt);
    result
}

/// Where a request goes, decided before any I/O.
struct Choice {
    route: usize,
    route_timeout: Duration,
    cluster: usize,
    endpoint: usize,
    max_body: Option<u64>,
}

/// Route the request, apply the listener's limits, pick the cluster (weighted
/// split) and the endpoint (the cluster's balancer on this worker).
fn choose(
    worker: &Worker,
    plan: &Plan,
    listener: usize,
    peer: SocketAddr,
    buf: &[u8],
    head: &RequestHead,
) -> Result<Choice, ProxyError> {
    let listener_config = &plan.snapshot.listeners[listener];

    // What this proxy does not speak is refused before routing. Other upgrade
    // offers (h2c) may be ignored: Upgrade is hop-by-hop and stripped.
    if head.upgrade
        && head
            .header(buf, "upgrade")
            .is_some_and(|v| v.to_ascii_lowercase().windows(9).any(|w| w == b"websocket"))
    {
        return Err(ErrorKind::Malformed(HttpError::UpgradeNotSupported).into());
    }

    // Route.
    let router = plan.routers[listener].as_ref().ok_or(ErrorKind::NoRoute)?;
    let host = match head.host_bytes(buf) {
        Some(raw) => Some(http::host_for_routing(raw).ok_or(ErrorKind::Malformed(HttpError::BadHost))?),
        None => None,
    };
    let request = RouteRequest {
        host: host.as_deref(),
        path: std::str::from_utf8(head.path_bytes(buf)).unwrap_or(""),
        method: std::str::from_utf8(head.method_bytes(buf)).unwrap_or(""),
        headers: &HeadHeaders { head, buf },
    };
    let (_, &route_index) = router.lookup(&request).ok_or(ErrorKind::NoRoute)?;
    let ListenerKind::Http { routes } = &listener_config.kind else {
        return Err(ErrorKind::NoRoute.into());
    };
    let route = &routes[route_index];

    // Limit.
    let max_body = listener_config.limits.max_body_bytes;
    if let (Framing::Length(n), Some(max)) = (head.framing, max_body) {
        if n > max {
            return Err(ErrorKind::BodyTooLarge.into());
        }
    }

    // Pick the cluster (weighted split), then the endpoint.
    let cluster_index = match &route.target {
        Target::Cluster(c) => *c,
        Target::Split(parts) => {
            let total: u64 = parts.iter().map(|p| u64::from(p.weight)).sum();
            let mut ticket = worker.with_rng(|rng| rng.u64(0..total.max(1)));
            parts
                .iter()
                .find(|p| {
                    let hit = ticket < u64::from(p.weight);
                    ticket = ticket.saturating_sub(u64::from(p.weight));
                    hit
                })
                .map_or(parts[0].cluster, |p| p.cluster)
        }
    };
    let cluster = &plan.snapshot.clusters[cluster_index];
    let state = &plan.clusters[cluster_index];
    let hash = (cluster.lb == LbKind::RingHash).then(|| match &cluster.hash_header {
        Some(name) => hash_bytes(head.header(buf, name).unwrap_or_default()),
        None => hash_bytes(peer.ip().to_string().as_bytes()),
    });
    state.refresh_active(worker.shared.health.version(), &cluster.endpoints);
    let eligible = |i: usize| state.eligible(i, &cluster.endpoints);
    let endpoint = worker
        .with_rng(|rng| state.balancer.borrow_mut().pick(Instant::now(), hash, rng, &eligible))
        .ok_or(ErrorKind::NoEndpoint)?;
    Ok(Choice {
        route: route_index,
        route_timeout: route.timeout,
        cluster: cluster_index,
        endpoint,
        max_body,
    })
}

/// How far an exchange got, kept even when it fails or times out.
#[derive(Default)]
struct Progress {
    /// Part of the response went to the client: an error can no longer be sent.
    response_started: bool,
    /// Request sent to response head received, on the connection that answered.
    upstream_latency: Option<Duration>,
    /// The upstream's status, once its response head arrived.
    status: u16,
    /// Connections the request was sent on (a stale pooled one adds one).
    attempts: u32,
    /// Request body bytes read from the client.
    bytes_in: u64,
    /// Response bytes written to the client, head included.
    bytes_out: u64,
}

/// One request's exchange with one upstream endpoint.
struct Exchange<'a> {
    worker: &'a Worker,
    peer: SocketAddr,
    head: &'a RequestHead,
    head_len: usize,
    pool: &'a EndpointPool,
    connect_timeout: Duration,
    response_header_timeout: Option<Duration>,
    max_body: Option<u64>,
    /// Added to the upstream request (trace context, request id), replacing
    /// the client's fields of the same name.
    request_headers: &'a [(&'a str, &'a [u8])],
    /// Added to the response to the client.
    response_headers: &'a [(&'a str, &'a [u8])],
    endpoint_key: Option<EndpointKey>,
}

impl Exchange<'_> {
    /// Count something against this exchange's endpoint in the worker's shard.
    fn count(&self, f: impl FnOnce(&mut Shard, EndpointKey)) {
        if let Some(key) = self.endpoint_key {
            f(&mut self.worker.metrics.borrow_mut(), key);
        }
    }

    async fn run(&self, client: &mut Inbound, progress: &mut Progress) -> Result<bool, Failure> {
        let buffers = &self.worker.buffers;
        let head = self.head;
        let mut out = buffers.take();
        let forwarded = http::Forwarded {
            client_ip: self.peer.ip(),
            proto: "http",
            via: VIA,
        };
        http::write_request_head(
            client.pending(),
            head,
            &forwarded,
            head.framing,
            self.request_headers,
            &mut out,
        );
        client.consume(self.head_len);
        let mut request_body = BodyPump::new(head.framing, head.framing, self.max_body);
        request_body.take_pending(client, &mut out).map_err(request_error)?;
        // Everything sent in the first write is still in `out`, so a stale
        // pooled connection can be replaced and the write replayed once.
        let whole_request_buffered = request_body.is_done();

        let mut upstream_head = ResponseHead::default();
        let mut attempt = 0;
        let (mut upstream, head_len) = loop {
            attempt += 1;
            progress.attempts = attempt;
            let pooled = self.pool.take(Instant::now());
            self.count(|m, key| m.pool(key, pooled.is_some()));
            let (stream, reused) = match pooled {
                Some(stream) => (stream, true),
                None => {
                    let connected = upstream::connect(self.pool.addr, self.connect_timeout).await;
                    self.count(|m, key| m.upstream_connect(key, connected.is_ok()));
                    (connected?, false)
                }
            };
            let may_retry = reused && attempt == 1;
            let mut upstream = Inbound::new(stream);
            let sent = Instant::now();
            let (written, buf) = upstream.stream.write_all(out).await;
            out = buf;
            if written.is_err() {
                if may_retry {
                    continue;
                }
                return Err(ErrorKind::UpstreamReset.into());
            }
            if !request_body.is_done() {
                if head.expect_continue && !client.has_pending() {
                    let (sent, _) = client.stream.write_all(CONTINUE).await;
                    sent.map_err(|_| ErrorKind::ClientIo)?;
                }
                out.clear();
                out = request_body
                    .pump(client, &mut upstream.stream, out, buffers)
                    .await
                    .map_err(request_error)?;
            }
            match self.read_response_head(&mut upstream, &mut upstream_head).await {
                Ok(len) => {
                    progress.upstream_latency = Some(sent.elapsed());
                    progress.status = upstream_head.status;
                    break (upstream, len);
                }
                Err(NoResponse::Nothing) if may_retry && whole_request_buffered && head.method.is_idempotent() => {
                    continue;
                }
                Err(NoResponse::Nothing) | Err(NoResponse::Partial) => return Err(ErrorKind::UpstreamReset.into()),
                Err(NoResponse::Timeout) => return Err(ErrorKind::UpstreamTimeout.into()),
                Err(NoResponse::Malformed(e)) => return Err(ErrorKind::BadResponse(e).into()),
            }
        };

        // Respond: re-frame for this client and stream the body through.
        let to_client = match upstream_head.framing {
            Framing::Chunked if head.minor_version == 0 => Framing::UntilClose,
            other => other,
        };
        let close = !head.keep_alive || to_client == Framing::UntilClose || self.worker.drain.is_started();
        out.clear();
        http::write_response_head(
            upstream.pending(),
            &upstream_head,
            VIA,
            to_client,
            close,
            head.minor_version == 0 && !close,
            self.response_headers,
            &mut out,
        );
        upstream.consume(head_len);
        progress.response_started = true;
        progress.bytes_in = request_body.bytes();
        let head_bytes = out.len() as u64;
        let mut response_body = BodyPump::new(upstream_head.framing, to_client, None);
        let out = match response_body
            .pump(&mut upstream, &mut client.stream, out, buffers)
            .await
        {
            Ok(out) => out,
            Err(PumpError::Sink) => {
                return Err(Failure {
                    error: ErrorKind::ClientIo.into(),
                    response_started: true,
                })
            }
            Err(PumpError::Framing(e)) => {
                return Err(Failure {
                    error: ErrorKind::BadResponse(e).into(),
                    response_started: true,
                })
            }
            Err(PumpError::Source | PumpError::TooLarge) => {
                return Err(Failure {
                    error: ErrorKind::UpstreamReset.into(),
                    response_started: true,
                })
            }
        };
        buffers.give(out);
        progress.bytes_out = head_bytes + response_body.bytes();

        // Pool the upstream connection only at a clean message boundary.
        let reusable =
            upstream_head.keep_alive && upstream_head.framing != Framing::UntilClose && !upstream.has_pending();
        let (stream, buf) = upstream.into_parts();
        buffers.give(buf);
        if reusable {
            self.pool.put(stream, Instant::now());
        }
        Ok(!close)
    }

    /// Read the upstream's final response head, skipping interim 1xx ones.
    async fn read_response_head(&self, upstream: &mut Inbound, out: &mut ResponseHead) -> Result<usize, NoResponse> {
        let limits = http::Limits::default();
        let deadline = self.response_header_timeout.map(|t| Instant::now() + t);
        let mut received = false;
        loop {
            if upstream.has_pending() {
                match http::parse_response(upstream.pending(), &limits, self.head.method, out) {
                    Ok(ParseStatus::Complete(len)) if out.is_informational() => {
                        upstream.consume(len);
                        continue;
                    }
                    Ok(ParseStatus::Complete(len)) => return Ok(len),
                    Ok(ParseStatus::Partial) => {}
                    Err(e) => return Err(NoResponse::Malformed(e)),
                }
            }
            let read = upstream.fill(&self.worker.buffers, limits.max_header_bytes);
            let result = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    monoio::time::timeout(left, read)
                        .await
                        .map_err(|_| NoResponse::Timeout)?
                }
                None => read.await,
            };
            match result {
                Ok(0) | Err(_) if received => return Err(NoResponse::Partial),
                Ok(0) | Err(_) => return Err(NoResponse::Nothing),
                Ok(_) => received = true,
            }
        }
    }
}

enum NoResponse {
    /// The connection ended before a single response byte arrived.
    Nothing,
    Partial,
    Timeout,
    Malformed(HttpError),
}

fn request_error(e: PumpError) -> Failure {
    match e {
        PumpError::Source => ErrorKind::ClientIo.into(),
        PumpError::Sink => ErrorKind::UpstreamReset.into(),
        PumpError::Framing(e) => ErrorKind::Malformed(e).into(),
        PumpError::TooLarge => ErrorKind::BodyTooLarge.into(),
    }
}

async fn respond_error(client: &mut Inbound, error: &ProxyError, close: bool, head_request: bool) {
    let mut out = Vec::with_capacity(256);
    error.write_response(close, head_request, &mut out);
    let _ = client.stream.write_all(out).await;
}

/// Route matching reads header values straight out of the parsed head.
struct HeadHeaders<'a> {
    head: &'a RequestHead,
    buf: &'a [u8],
}

impl HeaderLookup for HeadHeaders<'_> {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.head.header(self.buf, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::Shared;
    use std::sync::Arc;

    /// An idle connection costs its task's future plus its socket; the budget
    /// for all of it is 1 KiB, so the future must stay well under that (the
    /// per-request state is boxed and exists only while a request is served).
    #[test]
    fn idle_connection_future_is_small() {
        let toml = "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[listener.route]]\ncluster = \"c\"\n[[cluster]]\nname = \"c\"\nendpoints = []\n";
        let snapshot = crate::config::parse(toml, "t", 1).expect("config");
        let (log_writer, _log_rx) = flume::bounded(1);
        let shared = Arc::new(Shared::new(snapshot, 1, log_writer));
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let worker = Rc::new(crate::worker::Worker::new(0, shared).expect("worker"));
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let _client = TcpStream::connect_addr(addr).await.expect("connect");
            let (stream, peer) = listener.accept().await.expect("accept");
            let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let guard = ConnectionGuard::open(&worker, counter, None).expect("guard");
            let future = serve(
                stream,
                peer,
                Rc::from("l"),
                Rc::new(Drain::default()),
                worker.clone(),
                guard,
            );
            let size = std::mem::size_of_val(&future);
            assert!(size <= 640, "serve future is {size} bytes");
        });
    }
}
