//! One try of a request against one upstream endpoint: check out a pooled or
//! new connection (within the cluster's caps), send the prepared request,
//! stream the rest of the body, read the response head, and stream the
//! response back. A `Request` is prepared once per client request so that a
//! retry can send the same bytes again.

use super::body::{BodyPump, PumpError};
use super::dial::Dial;
use super::io::{Inbound, Stream};
use crate::config::Edits;
use crate::error::{ErrorKind, ProxyError};
use crate::http::{self, Framing, HttpError, Method, ParseStatus, RequestHead, ResponseHead};
use crate::resilience::{BreakerState, LimitKind, Outcome, RetryOn};
use crate::upstream::ConnToken;
use crate::worker::{BufferPool, ClusterGuards, IdleClock, Retirement, Worker};
use monoio::net::TcpStream;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Our Via entry for a message received as HTTP/1.`minor_version`: the
/// received-protocol is the version that came in (RFC 9110 §7.6.3).
pub(super) fn via(minor_version: u8) -> &'static str {
    match minor_version {
        0 => "1.0 ringway",
        _ => "1.1 ringway",
    }
}
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const ATTEMPTS_HEADER: &str = "x-ringway-attempts";
/// How the attempts field starts in a written head, up to its value.
const ATTEMPTS_LINE: &[u8] = b"\r\nx-ringway-attempts: ";

/// What ends a client connection whatever its requests ask. Handed down
/// by reference: the request pipeline's future holds it once.
pub(super) struct ClientEnd {
    /// When the connection's max_connection_duration is up, if it has one.
    pub expires: Option<Instant>,
    /// Started when the listener that admitted it stops (removed, moved,
    /// or its admission terms changed).
    pub stopped: Rc<Retirement>,
}

/// Whether an answer going out now must close its client's connection,
/// whatever the request asked: the worker drains, the connection's
/// listener stopped, or its time is up. Every kind of answer (forwarded,
/// local, error) decides by this, and says so with `Connection: close`.
pub(super) fn client_must_close(worker: &Worker, end: &ClientEnd) -> bool {
    worker.drain.is_started() || end.stopped.is_started() || end.expires.is_some_and(|at| Instant::now() >= at)
}

/// What a request without a route (or a route without edits) changes: nothing.
pub(super) static NO_EDITS: Edits = Edits {
    drop: Vec::new(),
    append: Vec::new(),
    path_prefix: None,
};

/// The codec's view of a route's configured edits.
pub(super) fn route_edits(edits: &Edits) -> http::RouteEdits<'_> {
    http::RouteEdits {
        drop: &edits.drop,
        append: &edits.append,
        path_prefix: edits.path_prefix.as_ref().map(|(m, r)| (m.as_str(), r.as_str())),
    }
}

/// An error, and whether part of a response had already been sent.
pub(super) struct Failure {
    pub error: ProxyError,
    pub response_started: bool,
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

impl Failure {
    /// What a retry policy sees of this failure; None when nothing may be retried.
    pub fn retry_outcome(&self) -> Option<Outcome> {
        if self.response_started {
            return None;
        }
        match self.error.kind {
            ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout | ErrorKind::UpstreamTls => {
                Some(Outcome::ConnectFailure)
            }
            ErrorKind::UpstreamReset | ErrorKind::BadResponse(_) => Some(Outcome::Reset),
            ErrorKind::UpstreamTimeout => Some(Outcome::Timeout),
            ErrorKind::RetryFailed(status) => Some(Outcome::Status(status)),
            _ => None,
        }
    }
}

/// How far a try got, kept even when it fails or times out.
#[derive(Default)]
pub(super) struct Progress {
    /// Part of the response went to the client: an error can no longer be sent.
    pub response_started: bool,
    /// Request sent to response head received, on the connection that answered.
    pub upstream_latency: Option<Duration>,
    /// When the whole request had gone and the answer was awaited, if it
    /// got that far: a try cut then (the client left) took the endpoint
    /// at least this long.
    pub awaited_since: Option<Instant>,
    /// The upstream's status, once its response head arrived.
    pub status: u16,
    /// Response bytes written to the client outside `response_body`
    /// (interim answers, a 100 Continue, a head without a body).
    pub bytes_out: u64,
    /// The final answer's body pump, once it began; it counts the head
    /// written ahead of the body too.
    pub response_body: Option<BodyPump>,
    /// A retriable status went to the client because the retry budget
    /// had nothing left for its retry.
    pub retry_refused: bool,
}

impl Progress {
    /// Response bytes written to the client, heads included.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_out + self.response_body.as_ref().map_or(0, BodyPump::written)
    }
}

/// A retry under way: active in the retry budget, and holding one of the
/// cluster's `max_retries`, until its try has ended (or it is dropped
/// with the request).
pub(super) struct RetryInFlight<'g> {
    budget: &'g std::cell::RefCell<crate::resilience::RetryBudget>,
    _permit: Option<crate::resilience::Permit>,
}

/// Why no retry could start.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RetryRefused {
    /// The retry budget has nothing left.
    Budget,
    /// The cluster's `max_retries` are all under way.
    Cap,
}

impl<'g> RetryInFlight<'g> {
    /// Start a retry, if the budget and the cluster's retry cap allow one now.
    pub(super) fn start(guards: &'g ClusterGuards, now: Instant) -> Result<Self, RetryRefused> {
        if !guards.budget.borrow_mut().try_start_retry(now) {
            return Err(RetryRefused::Budget);
        }
        let permit = match &guards.leases {
            Some(leases) => match leases.try_acquire(LimitKind::Retries) {
                Some(permit) => Some(permit),
                None => {
                    guards.budget.borrow_mut().end_retry();
                    return Err(RetryRefused::Cap);
                }
            },
            None => None,
        };
        Ok(RetryInFlight {
            budget: &guards.budget,
            _permit: permit,
        })
    }
}

impl Drop for RetryInFlight<'_> {
    fn drop(&mut self) {
        self.budget.borrow_mut().end_retry();
    }
}

/// The upstream request: head and as much of the body as is held.
pub(super) struct Request {
    bytes: Vec<u8>,
    body: BodyPump,
    /// Where the attempts header's value sits in `bytes`, when there is one,
    /// and its length.
    attempts_at: Option<usize>,
    attempts_len: usize,
    /// Bodies held for replay may not exceed this (`max_replay_bytes`).
    replay_limit: Option<u64>,
    /// Part of the body went upstream straight from the client, not from
    /// `bytes`: the request cannot be sent again.
    streamed: bool,
    /// A retry policy may send the request again after a try is cut short
    /// (by its per-try timeout): each try then writes a copy of `bytes`, as
    /// a write cut short takes its buffer along.
    write_copies: bool,
    /// Where the head ends in `bytes` and the held body begins.
    head_end: usize,
}

/// How much of a request's body to hold so that it can be sent more than
/// once (retries, a mirror's copy).
#[derive(Debug, Clone, Copy)]
pub(super) struct Hold {
    pub limit: u64,
    /// Number the tries in a header (retries do; a mirror alone does not).
    pub numbered: bool,
    /// A try may be cut short (a per-try timeout) and then retried.
    pub cut_then_retried: bool,
}

impl Request {
    /// Render the upstream request from the head at the start of `client`'s
    /// pending bytes and take the body bytes already read. With `hold`, read
    /// the rest of a body of at most its limit too, so that every try (and a
    /// mirror's copy) can send the whole request, and mark the tries in a
    /// header if it says so.
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare(
        client: &mut Inbound,
        head: &RequestHead,
        head_len: usize,
        forwarded: &http::Forwarded<'_>,
        extra: &[(&str, &[u8])],
        edits: &Edits,
        max_body: Option<u64>,
        hold: Option<Hold>,
        deadline: Instant,
        buffers: &BufferPool,
    ) -> Result<Request, Failure> {
        let numbered = hold.is_some_and(|h| h.numbered);
        let write_copies = hold.is_some_and(|h| h.cut_then_retried);
        let mut bytes = buffers.take();
        // Routes with a retry policy number their tries; a retry writes its
        // number over this one (see `set_attempt`).
        let with_attempts: Vec<(&str, &[u8])>;
        let headers = match numbered {
            true => {
                with_attempts = extra.iter().copied().chain([(ATTEMPTS_HEADER, &b"1"[..])]).collect();
                &with_attempts[..]
            }
            false => extra,
        };
        let forwarded = http::Forwarded {
            client_identity: client.stream.identity(),
            ..*forwarded
        };
        http::write_request_head(
            client.pending(),
            head,
            &forwarded,
            head.framing,
            headers,
            &route_edits(edits),
            &mut bytes,
        );
        // The client's own attempts field never reaches the head, and ours
        // follows every received field: the last such line is ours.
        let attempts_at = numbered.then_some(()).and_then(|()| {
            bytes
                .windows(ATTEMPTS_LINE.len())
                .rposition(|w| w == ATTEMPTS_LINE)
                .map(|i| i + ATTEMPTS_LINE.len())
        });
        client.consume(head_len);
        let head_end = bytes.len();
        let mut body = BodyPump::new(head.framing, head.framing, max_body);
        body.take_pending(client, &mut bytes).map_err(request_error)?;
        let mut request = Request {
            bytes,
            body,
            attempts_at,
            attempts_len: 1,
            replay_limit: hold.map(|h| h.limit),
            streamed: false,
            write_copies,
            head_end,
        };
        if let Some(Hold { limit, .. }) = hold {
            request
                .read_body_for_replay(client, head, limit, deadline, buffers)
                .await?;
        }
        Ok(request)
    }

    /// Read the rest of the body into the request while it stays within
    /// `limit`; a larger body is left to stream (and is not retried). A
    /// client that has not sent it by `deadline` gets a 408.
    async fn read_body_for_replay(
        &mut self,
        client: &mut Inbound,
        head: &RequestHead,
        limit: u64,
        deadline: Instant,
        buffers: &BufferPool,
    ) -> Result<(), Failure> {
        if self.body.is_done() || matches!(head.framing, Framing::Length(n) if n > limit) {
            return Ok(());
        }
        if head.expect_continue && !client.has_pending() {
            let (sent, _) = client.stream.write_all(CONTINUE).await;
            sent.map_err(|_| ErrorKind::ClientIo)?;
        }
        while !self.body.is_done() && self.body.bytes() <= limit {
            let read = monoio::time::timeout_at(deadline.into(), client.fill(buffers, buffers.buffer_size()));
            match read.await {
                Err(_) => return Err(ErrorKind::BodyReadTimeout.into()),
                Ok(Ok(0) | Err(_)) => return Err(ErrorKind::ClientIo.into()),
                Ok(Ok(_)) => self.body.take_pending(client, &mut self.bytes).map_err(request_error)?,
            }
        }
        Ok(())
    }

    /// The body bytes held after the head, framed as they go upstream.
    pub fn held_body(&self) -> &[u8] {
        self.bytes.get(self.head_end..).unwrap_or_default()
    }

    /// Whether all of the client's body has been read (held or sent).
    pub fn body_done(&self) -> bool {
        self.body.is_done()
    }

    /// Whether the body was being read from the client when the try
    /// stopped: a try cut then waited on the client, not the upstream.
    pub fn waits_on_client(&self) -> bool {
        self.body.waits_on_source()
    }

    /// Whether the whole request is held, so it can be sent again.
    pub fn replayable(&self) -> bool {
        self.body.is_done() && !self.streamed && self.replay_limit.is_none_or(|limit| self.body.bytes() <= limit)
    }

    /// Number this try in the attempts header.
    pub fn set_attempt(&mut self, attempt: u32) {
        let Some(at) = self.attempts_at else {
            return;
        };
        // Digits alone: a value compared as text must read "2", not "2 ".
        // Only the tenth try's number is longer, and moves what follows.
        let text = attempt.to_string();
        let end = at + self.attempts_len;
        if end > self.head_end || self.head_end > self.bytes.len() {
            return;
        }
        self.bytes.splice(at..end, text.bytes());
        self.head_end = self.head_end - self.attempts_len + text.len();
        self.attempts_len = text.len();
    }

    /// Request body bytes read from the client.
    pub fn body_bytes(&self) -> u64 {
        self.body.bytes()
    }

    /// Request body bytes as the client sent them, framing included.
    pub fn body_wire_bytes(&self) -> u64 {
        self.body.wire_bytes()
    }

    pub fn recycle(self, buffers: &BufferPool) {
        buffers.give(self.bytes);
    }
}

/// How a try that succeeded left the client connection.
pub(super) enum Reply {
    /// The response went out; whether the connection may take another request.
    Sent { keep_alive: bool },
    /// The upstream switched to WebSocket (101, which went out): from here
    /// the two connections are one tunnel.
    Upgraded(Box<Tunnel>),
}

/// The upstream side of an upgraded connection: early bytes it sent behind
/// the 101 stay pending in `upstream`, and `_token` keeps the connection
/// counted (and within the cluster's caps) while the tunnel lasts.
pub(super) struct Tunnel {
    pub upstream: Inbound,
    pub _token: ConnToken,
}

/// Which statuses a try hands back for a retry rather than forwarding, if
/// a retry can start when one arrives: by then the route's time, the
/// retry budget or the cluster's retry cap may have run out, and then the
/// status is forwarded.
#[derive(Clone, Copy)]
pub(super) struct HoldBack<'a> {
    pub on: &'a RetryOn,
    /// The last moment a retry can start: its backoff must end within the
    /// route's time.
    pub start_before: Instant,
    pub guards: &'a ClusterGuards,
    /// The endpoint this try went to.
    pub endpoint: usize,
}

/// What becomes of a status a retry policy matches.
enum Held<'g> {
    /// Held back for the retry, started here.
    Back(RetryInFlight<'g>),
    /// Forwarded: the policy does not retry it, or no retry could start.
    Forward,
    /// Forwarded for want of retry budget, which counts as refused.
    BudgetSpent,
}

impl<'g> HoldBack<'g> {
    fn holds_back(&self, status: u16) -> Held<'g> {
        if !self.on.matches(Outcome::Status(status)) {
            return Held::Forward;
        }
        let now = Instant::now();
        if now >= self.start_before || !self.breakers_admit_a_retry(status, now) {
            return Held::Forward;
        }
        match RetryInFlight::start(self.guards, now) {
            Ok(retry) => Held::Back(retry),
            Err(RetryRefused::Budget) => Held::BudgetSpent,
            Err(RetryRefused::Cap) => Held::Forward,
        }
    }

    /// Whether the endpoint breakers will let the retry through somewhere,
    /// once this status has counted: another endpoint's breaker is not open,
    /// or this one's is not, nor opens on it (a 5xx counts as a failure).
    /// Health and ejection need no look: with every endpoint down, the
    /// level is in panic and any endpoint the breakers admit is picked.
    fn breakers_admit_a_retry(&self, status: u16, now: Instant) -> bool {
        let Some(breakers) = &self.guards.breakers else {
            return true;
        };
        let admits = breakers.borrow().iter().enumerate().any(|(i, b)| {
            let opens = i == self.endpoint && status >= 500 && b.open_after_failure(now);
            !opens && b.state_at(now) != BreakerState::Open
        });
        admits
    }
}

/// One try against one endpoint.
pub(super) struct Exchange<'a> {
    pub worker: &'a Worker,
    pub head: &'a RequestHead,
    pub dial: Dial<'a>,
    pub response_header_timeout: Option<Duration>,
    /// Added to the response to the client.
    pub response_headers: &'a [(&'a str, &'a [u8])],
    /// What the route changes in the response.
    pub response_edits: &'a Edits,
    /// Statuses to hand back for a retry instead of forwarding them.
    pub retry_on: Option<HoldBack<'a>>,
    /// The request asks to switch to WebSocket: a 101 answer starts a tunnel.
    pub upgrade: bool,
    /// What closes the client connection after this answer.
    pub client_end: &'a ClientEnd,
}

impl<'g> Exchange<'g> {
    /// `started`: when this try began, a moment ago.
    pub async fn run(
        &self,
        client: &mut Inbound,
        request: &mut Request,
        progress: &mut Progress,
        retry: &mut Option<RetryInFlight<'g>>,
        started: Instant,
    ) -> Result<Reply, Failure> {
        let buffers = &self.worker.buffers;
        let head = self.head;
        let mut upstream_head = ResponseHead::default();
        let mut stale_retry = true;
        let mut body_cut = false;
        let mut first = Some(started);
        let (mut upstream, permit, head_len, write_failed) = loop {
            let now = first.take().unwrap_or_else(Instant::now);
            let (stream, permit, reused) = self.dial.checkout(self.worker, now).await?;
            // A pooled connection the upstream closed meanwhile is replaced
            // once, when the request can provably be sent again.
            let may_retry = reused && std::mem::take(&mut stale_retry);
            let mut upstream = Inbound::with_stream(stream);
            // A pooled connection is sent on at once; a new one after connecting.
            let mut sent = if reused { now } else { Instant::now() };
            let out = match request.write_copies {
                true => {
                    let mut copy = buffers.take();
                    copy.extend_from_slice(&request.bytes);
                    copy
                }
                false => std::mem::take(&mut request.bytes),
            };
            let (written, out) = upstream.stream.write_all(out).await;
            match request.write_copies {
                true => buffers.give(out),
                false => request.bytes = out,
            }
            // A write the upstream stopped taking: it may have answered
            // first (413, 401) and closed, and then that answer is the
            // client's. Without one, this is a reset below.
            let mut write_failed = written.is_err();
            if write_failed && may_retry {
                continue;
            }
            if !write_failed && !request.held_body().is_empty() {
                // The upstream answers once the request has ended.
                sent = Instant::now();
            }
            if !write_failed && !request.body.is_done() {
                if head.expect_continue && !client.has_pending() {
                    progress.bytes_out += CONTINUE.len() as u64;
                    let (written, _) = client.stream.write_all(CONTINUE).await;
                    written.map_err(|_| ErrorKind::ClientIo)?;
                }
                request.streamed = true;
                // Boxed: only bodies that stream pay for this state.
                let streamed = self.stream_body(client, &mut request.body, &mut upstream, sent, progress);
                match Box::pin(streamed).await? {
                    Streamed::Whole => {}
                    Streamed::WriteFailed => write_failed = true,
                    Streamed::Refused => body_cut = true,
                    Streamed::Answered(reply) => return Ok(reply),
                }
                // The upstream answers once the request has ended, however
                // long the client took to send it.
                sent = Instant::now();
            }
            // Requests the client pipelined behind this one are owed their
            // answers, in order, whatever it did after sending them: it is
            // not watched while they wait.
            let watch_client = !client.has_pending() && !client.stream.has_buffered();
            progress.awaited_since = Some(sent);
            match self
                .read_response_head(
                    &mut client.stream,
                    &mut upstream,
                    &mut upstream_head,
                    sent,
                    progress,
                    watch_client,
                )
                .await
            {
                Ok(len) => {
                    progress.upstream_latency = Some(sent.elapsed());
                    progress.status = upstream_head.status;
                    break (upstream, permit, len, write_failed);
                }
                // The handshake failed after all: counted and retried as the
                // failed connect it was (the upstream never read the request).
                Err(NoResponse::Alert) if !reused => {
                    self.dial.handshake_refused(self.worker);
                    return Err(ErrorKind::UpstreamTls.into());
                }
                // On a pooled connection, an alert is one more way to end.
                Err(NoResponse::Nothing | NoResponse::Alert)
                    if may_retry && request.replayable() && head.method.is_idempotent() =>
                {
                    continue
                }
                Err(NoResponse::Nothing | NoResponse::Alert | NoResponse::Partial) => {
                    return Err(ErrorKind::UpstreamReset.into())
                }
                Err(NoResponse::Timeout) => return Err(ErrorKind::UpstreamTimeout.into()),
                Err(NoResponse::Malformed(e)) => return Err(ErrorKind::BadResponse(e).into()),
                Err(NoResponse::ClientGone) => return Err(ErrorKind::ClientIo.into()),
            }
        };
        if self.retry_on.is_some() {
            // This try has its answer: the retry it was, if one, has ended.
            *retry = None;
        }
        match self
            .retry_on
            .map(|hold_back| hold_back.holds_back(upstream_head.status))
        {
            // Not forwarded: the caller tries again. The unread body makes
            // the connection unusable, so it closes here.
            Some(Held::Back(next)) => {
                *retry = Some(next);
                return Err(ErrorKind::RetryFailed(upstream_head.status).into());
            }
            Some(Held::BudgetSpent) => progress.retry_refused = true,
            Some(Held::Forward) | None => {}
        }

        if upstream_head.status == 101 {
            return self
                .switch(client, upstream, permit, &upstream_head, head_len, progress)
                .await;
        }

        // An answer that came before the whole body did leaves the rest of
        // the body unread: the connection cannot take another request.
        let close =
            !head.keep_alive || !request.body.is_done() || body_cut || client_must_close(self.worker, self.client_end);
        let close = self
            .forward(
                &mut client.stream,
                &mut upstream,
                &upstream_head,
                head_len,
                close,
                progress,
            )
            .await?;

        // Pool the upstream connection only at a clean message boundary.
        // A 413 says the body was refused, most likely unread: it would
        // wait in the connection ahead of the next request, or be read as
        // one.
        let body_refused = upstream_head.status == 413 && request.body_bytes() > 0;
        let reusable = upstream_head.keep_alive
            && upstream_head.framing != Framing::UntilClose
            && !upstream.has_pending()
            && request.body.is_done()
            && !body_cut
            && !write_failed
            && !body_refused;
        let (stream, buf) = upstream.into_parts();
        buffers.give(buf);
        if reusable {
            self.dial.pool.put(stream, permit, Instant::now());
        }
        Ok(Reply::Sent { keep_alive: !close })
    }

    /// Send the rest of the request body, the head and what was held of it
    /// being sent. An upstream may refuse the body with an answer before
    /// it has read it (a 413, a 401) and then stop reading without closing;
    /// or answer with success while it reads on (an echo, an upload with
    /// progress). Watch for either, so that the answer does not wait behind
    /// the body: a refusal is left pending in `upstream` for `run` to
    /// forward; a success is forwarded here, beside the body (`both_ways`),
    /// as the pump that sends the body lives in this frame.
    async fn stream_body(
        &self,
        client: &mut Inbound,
        body: &mut BodyPump,
        upstream: &mut Inbound,
        sent: Instant,
        progress: &mut Progress,
    ) -> Result<Streamed, Failure> {
        let buffers = &self.worker.buffers;
        let (pumped, early) = {
            let mut watch = upstream.stream.share();
            // Answering both ways needs a second handle on the client too:
            // for TLS the same session, taken now, as the pump holds the
            // client; for plain TCP a descriptor, made only for an answer.
            // Without one (out of descriptors), the body goes whole first.
            let (client_tls, client_fd) = match &client.stream {
                Stream::Plain(tcp) => (None, Some(tcp.as_raw_fd())),
                Stream::Tls(_) => (client.stream.share(), None),
            };
            let mut pump = std::pin::pin!(body.pump(client, &mut upstream.stream, buffers.take(), buffers));
            let mut early = Vec::new();
            let first = match &mut watch {
                // The pump first: an upstream that answers once it has the
                // whole body makes both ready in the same turn, and that
                // answer is no early one.
                Some(watch) => monoio::select! {
                    biased;
                    pumped = &mut pump => First::Pumped(pumped),
                    answer = answer_begins(watch, &mut early, buffers) => First::Answer(answer),
                },
                None => First::Pumped(pump.as_mut().await),
            };
            match first {
                First::Pumped(pumped) => (Some(pumped), early),
                First::Answer(Early::Refused) => (None, early),
                First::Answer(Early::Streams) => match watch.zip(client_tls.or_else(|| Stream::duplicate(&client_fd?)))
                {
                    Some((answers, to_client)) => {
                        let reply = self.both_ways(pump, answers, early, to_client, sent, progress).await?;
                        return Ok(Streamed::Answered(reply));
                    }
                    None => (Some(pump.as_mut().await), early),
                },
            }
        };
        upstream.push_read(early, buffers);
        match pumped {
            Some(Ok(out)) => {
                buffers.give(out);
                Ok(Streamed::Whole)
            }
            Some(Err(PumpError::Sink)) => Ok(Streamed::WriteFailed),
            Some(Err(e)) => Err(request_error(e)),
            // The body stopped part-way (its last write may not have gone,
            // though the pump counted it): the answer goes to the client,
            // and neither connection takes another request.
            None => Ok(Streamed::Refused),
        }
    }

    /// Send the response whose head is pending in `upstream` (`head_len`
    /// bytes) to the client, re-framed for it, its body streamed through.
    /// Returns whether the client's connection closes after it: when
    /// `close` says so, or when the body ends only with the connection.
    async fn forward(
        &self,
        client: &mut Stream,
        upstream: &mut Inbound,
        upstream_head: &ResponseHead,
        head_len: usize,
        close: bool,
        progress: &mut Progress,
    ) -> Result<bool, Failure> {
        let buffers = &self.worker.buffers;
        let head = self.head;
        let to_client = match upstream_head.framing {
            Framing::Chunked if head.minor_version == 0 => Framing::UntilClose,
            other => other,
        };
        let close = close || to_client == Framing::UntilClose;
        let mut out = buffers.take();
        http::write_response_head(
            upstream.pending(),
            upstream_head,
            via(upstream_head.minor_version),
            to_client,
            close,
            head.minor_version == 0 && !close,
            self.response_headers,
            &route_edits(self.response_edits),
            &mut out,
        );
        upstream.consume(head_len);
        // Kept in `progress`, which outlives this try: a body cut by the
        // route's timeout still tells what went out.
        let response_body = progress
            .response_body
            .insert(BodyPump::new(upstream_head.framing, to_client, None));
        // Chunks that came with the head are decoded before anything goes
        // out: if they are malformed, the client still gets a 502.
        if upstream_head.framing == Framing::Chunked {
            if let Err(e) = response_body.take_pending(upstream, &mut out) {
                buffers.give(out);
                let e = match e {
                    PumpError::Framing(e) => e,
                    _ => HttpError::Malformed,
                };
                return Err(ErrorKind::BadResponse(e).into());
            }
        }
        progress.response_started = true;
        // The head goes out with the body's first write.
        let pumped = response_body.pump(upstream, client, out, buffers).await;
        let out = pumped.map_err(|e| {
            let kind = match e {
                PumpError::Sink => ErrorKind::ClientIo,
                PumpError::Framing(e) => ErrorKind::BadResponse(e),
                PumpError::Source | PumpError::TooLarge => ErrorKind::UpstreamReset,
            };
            Failure {
                error: kind.into(),
                response_started: true,
            }
        })?;
        buffers.give(out);
        Ok(close)
    }

    /// The upstream answered with success while the request body still
    /// streams, and reads on (an echo, a transcoder): its answer goes to
    /// the client as it comes, through `answers` and `client` (second
    /// handles on the two connections, see `Stream::share`), while `pump`
    /// sends the body. An answer that ends first ends the body there: the
    /// upstream did not want the rest. Neither connection takes another
    /// request.
    async fn both_ways(
        &self,
        mut pump: Pin<&mut impl Future<Output = Result<Vec<u8>, PumpError>>>,
        answers: Stream,
        early: Vec<u8>,
        mut client: Stream,
        sent: Instant,
        progress: &mut Progress,
    ) -> Result<Reply, Failure> {
        let buffers = &self.worker.buffers;
        let mut upstream = Inbound::with_stream(answers);
        upstream.push_read(early, buffers);
        let answer = async {
            let mut upstream_head = ResponseHead::default();
            // The body still streaming from the client shows if it leaves.
            let head_len = self
                .read_response_head(&mut client, &mut upstream, &mut upstream_head, sent, progress, false)
                .await
                .map_err(|e| match e {
                    NoResponse::Nothing | NoResponse::Alert | NoResponse::Partial => ErrorKind::UpstreamReset,
                    NoResponse::Timeout => ErrorKind::UpstreamTimeout,
                    NoResponse::Malformed(e) => ErrorKind::BadResponse(e),
                    NoResponse::ClientGone => ErrorKind::ClientIo,
                })?;
            progress.upstream_latency = Some(sent.elapsed());
            progress.status = upstream_head.status;
            self.forward(&mut client, &mut upstream, &upstream_head, head_len, true, progress)
                .await
        };
        let answered = {
            let mut answer = std::pin::pin!(answer);
            // The pump first, so that a body that ended as the answer did
            // counts as whole.
            let first = monoio::select! {
                biased;
                pumped = &mut pump => Err(pumped),
                answered = &mut answer => Ok(answered),
            };
            match first {
                Ok(answered) => answered,
                Err(Ok(out)) => {
                    buffers.give(out);
                    answer.await
                }
                // The upstream stopped reading: its answer may still end well.
                Err(Err(PumpError::Sink)) => answer.await,
                Err(Err(e)) => Err(request_error(e)),
            }
        };
        let (_, buf) = upstream.into_parts();
        buffers.give(buf);
        match answered {
            Ok(_) => Ok(Reply::Sent { keep_alive: false }),
            // A body that failed after the answer began cuts the answer.
            Err(failure) => Err(Failure {
                response_started: failure.response_started || progress.response_started,
                ..failure
            }),
        }
    }

    /// Forward the upstream's 101 with the upgrade fields hop-by-hop
    /// filtering took out, and hand the connection over as a tunnel; or
    /// refuse it.
    async fn switch(
        &self,
        client: &mut Inbound,
        mut upstream: Inbound,
        permit: ConnToken,
        upstream_head: &ResponseHead,
        head_len: usize,
        progress: &mut Progress,
    ) -> Result<Reply, Failure> {
        // Only to the WebSocket the client asked for: a client that did not
        // ask would wait for a final answer, and another protocol would
        // carry requests past routing and policy. HTTP/1.0 has no switch.
        let to_websocket = upstream_head
            .header(upstream.pending(), "upgrade")
            .is_some_and(http::names_websocket);
        if !(self.upgrade && to_websocket && upstream_head.minor_version == 1) {
            return Err(ErrorKind::BadResponse(HttpError::UnexpectedSwitch).into());
        }
        let mut fields = self.response_headers.to_vec();
        fields.extend([("Connection", &b"Upgrade"[..]), ("Upgrade", &b"websocket"[..])]);
        let mut out = self.worker.buffers.take();
        http::write_response_head(
            upstream.pending(),
            upstream_head,
            via(upstream_head.minor_version),
            Framing::Empty,
            false,
            false,
            &fields,
            &route_edits(self.response_edits),
            &mut out,
        );
        upstream.consume(head_len);
        progress.response_started = true;
        progress.bytes_out += out.len() as u64;
        let (written, out) = client.stream.write_all(out).await;
        self.worker.buffers.give(out);
        if written.is_err() {
            return Err(Failure {
                error: ErrorKind::ClientIo.into(),
                response_started: true,
            });
        }
        Ok(Reply::Upgraded(Box::new(Tunnel {
            upstream,
            _token: permit,
        })))
    }

    /// Read the upstream's final response head. Interim 1xx ones go on to
    /// an HTTP/1.1 client as they come (RFC 9110 §15.2: 103 Early Hints
    /// are of use only then), but for 100 Continue, which Ringway answers
    /// the client itself. The response header timeout counts from `sent`,
    /// when the request went out. `watch_client`: a client that leaves
    /// meanwhile ends the try (see `client_leaves`).
    async fn read_response_head(
        &self,
        client: &mut Stream,
        upstream: &mut Inbound,
        out: &mut ResponseHead,
        sent: Instant,
        progress: &mut Progress,
        watch_client: bool,
    ) -> Result<usize, NoResponse> {
        let limits = http::Limits::default();
        let deadline = self.response_header_timeout.map(|t| sent + t);
        // Bytes read ahead (while a body streamed) are received too.
        let mut received = upstream.has_pending();
        let mut interim_bytes = 0;
        let mut scanned = http::HeadProgress::default();
        // Once started, the watch goes on across reads of a head that
        // comes in pieces.
        let mut watching = false;
        loop {
            if upstream.has_pending() {
                match http::parse_response_from(upstream.pending(), &limits, self.head.method, out, &mut scanned) {
                    Ok(ParseStatus::Complete(len)) if out.is_informational() => {
                        // A flood of them would hold the try (and the client)
                        // until its timeout, and where they are dropped, take
                        // the CPU their reading costs. Heartbeats (102
                        // Processing) through a long wait stay well within
                        // an allowance that grows with the wait.
                        interim_bytes += len;
                        let waited = usize::try_from(sent.elapsed().as_secs()).unwrap_or(usize::MAX);
                        let allowance = limits
                            .max_header_bytes
                            .saturating_add(waited.saturating_mul(INTERIM_BYTES_PER_SECOND));
                        if interim_bytes > allowance {
                            return Err(NoResponse::Malformed(HttpError::TooManyInterim));
                        }
                        if out.status != 100 && self.head.minor_version == 1 {
                            let mut interim = Vec::new();
                            http::write_response_head(
                                upstream.pending(),
                                out,
                                via(out.minor_version),
                                Framing::Empty,
                                false,
                                false,
                                &[],
                                &route_edits(self.response_edits),
                                &mut interim,
                            );
                            // Cut part-way (by a timeout), it would leave
                            // the client mid-message: counted as started
                            // until it is out whole.
                            progress.response_started = true;
                            progress.bytes_out += interim.len() as u64;
                            let (written, _) = client.write_all(interim).await;
                            written.map_err(|_| NoResponse::ClientGone)?;
                            progress.response_started = false;
                        }
                        upstream.consume(len);
                        scanned = http::HeadProgress::default();
                        continue;
                    }
                    Ok(ParseStatus::Complete(len)) => return Ok(len),
                    Ok(ParseStatus::Partial) => {}
                    Err(e) => return Err(NoResponse::Malformed(e)),
                }
            }
            let read = upstream.fill(&self.worker.buffers, limits.max_header_bytes);
            // A client that closes or resets while its answer is awaited
            // ends the try, as with NGINX and Envoy: no permit, upstream
            // connection or retry is held for a client that has gone.
            let watched = async {
                monoio::select! {
                    read = read => Ok(read),
                    () = client_leaves(&self.worker.idle, client, sent, &mut watching), if watch_client => {
                        Err(NoResponse::ClientGone)
                    }
                }
            };
            let result = match deadline {
                Some(deadline) => monoio::time::timeout_at(deadline.into(), watched)
                    .await
                    .map_err(|_| NoResponse::Timeout)??,
                None => watched.await?,
            };
            match result {
                Ok(0) | Err(_) if received => return Err(NoResponse::Partial),
                Err(e) if crate::tls::is_alert_from_peer(&e) => return Err(NoResponse::Alert),
                Ok(0) | Err(_) => return Err(NoResponse::Nothing),
                Ok(_) => received = true,
            }
        }
    }
}

/// Resolves once the client has closed its side or reset the connection,
/// looked at from the coarse clock's first tick after `sent` on (within a
/// quarter second): quick answers pay for no watch and no timer. Bytes the
/// client sends meanwhile are left where they are. In plain text they are a
/// pipelined request, and the watch ends there: a client that sends is
/// still there. Over TLS they are most likely the close_notify of a client
/// that is leaving, so the watch goes on, for an end behind them.
/// Not used while pipelined requests wait in the client's buffer.
async fn client_leaves(clock: &IdleClock, client: &Stream, sent: Instant, watching: &mut bool) {
    if !*watching {
        clock.wait_until(sent).await;
        *watching = true;
    }
    client_closes(client, clock).await;
}

/// Resolves once the client behind `client` has closed or reset the
/// connection (see `client_leaves`). Boxed, made only for slow answers and
/// retry backoffs: the request pipeline's future is kept small (see
/// `idle_connection_future_is_small`).
pub(super) fn client_closes<'a>(client: &'a Stream, clock: &'a IdleClock) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    Box::pin(closes(client.socket(), client.is_tls().then_some(clock)))
}

/// `tls_clock`: the clock to look again by on each tick when records wait
/// unread, for a TLS client.
async fn closes(socket: &TcpStream, tls_clock: Option<&IdleClock>) {
    loop {
        if socket.readable(false).await.is_err() {
            return;
        }
        match (crate::sys::peer_closed(socket), tls_clock) {
            (Some(true), _) => return,
            (Some(false), None) => std::future::pending::<()>().await,
            // Readable stays true while the records wait: look for the end
            // behind them once a tick (a poll(2) each, for slow answers only).
            (Some(false), Some(clock)) => loop {
                if crate::sys::peer_shut_write(socket) {
                    return;
                }
                clock.wait_until(Instant::now()).await;
            },
            (None, _) => {}
        }
    }
}

/// Return once the upstream's final answer has begun while the body
/// streams, its head whole in `early`: an error or a redirect refuses the
/// rest of the body (RFC 9112 §9.6), as does its end or something
/// malformed; a success answer may stream while the upstream reads on.
/// What arrives is read into `early`, interim (1xx) answers included,
/// which reading the head then forwards.
async fn answer_begins(watch: &mut Stream, early: &mut Vec<u8>, buffers: &BufferPool) -> Early {
    let limits = http::Limits::default();
    let mut head = ResponseHead::default();
    let mut progress = http::HeadProgress::default();
    // Where the head being looked at starts: past the interim ones.
    let mut start = 0;
    loop {
        if watch.readable().await.is_err() {
            return Early::Refused;
        }
        if early.capacity() == 0 {
            *early = buffers.take();
        }
        early.reserve(MIN_READ);
        match watch.read_now(early) {
            Ok(None) => continue,
            Ok(Some(0)) | Err(_) => return Early::Refused,
            Ok(Some(_)) => {}
        }
        loop {
            let unread = early.get(start..).unwrap_or_default();
            match http::parse_response_from(unread, &limits, Method::Get, &mut head, &mut progress) {
                Ok(ParseStatus::Complete(len)) if head.is_informational() => {
                    start += len;
                    progress = http::HeadProgress::default();
                }
                // Not a 101: no switch goes with a body, and reading the
                // head refuses it.
                Ok(ParseStatus::Complete(_)) if (200..300).contains(&head.status) => return Early::Streams,
                Ok(ParseStatus::Partial) => break,
                Ok(ParseStatus::Complete(_)) | Err(_) => return Early::Refused,
            }
        }
        // Interim answers without end (a heartbeat through a long upload):
        // past the head size limit, those held are let go, not forwarded.
        if start > limits.max_header_bytes {
            early.drain(..start);
            start = 0;
        }
    }
}

/// How sending a streamed request body ended.
enum Streamed {
    /// All of it went upstream.
    Whole,
    /// A write to the upstream failed; it may have answered first.
    WriteFailed,
    /// It stopped part-way at the upstream's early refusal.
    Refused,
    /// The upstream answered with success while it read on: the answer
    /// went to the client beside the body, and the exchange is over.
    Answered(Reply),
}

/// What the upstream did first while the request body streamed.
enum First {
    /// It took the whole body (or the pump failed).
    Pumped(Result<Vec<u8>, PumpError>),
    Answer(Early),
}

/// What an answer that came while the body streamed means for the body.
enum Early {
    /// The upstream does not want the rest: an error or a redirect, its
    /// end, or something malformed (which reading the head finds again).
    Refused,
    /// A success answer: it reads on, and its answer may stream meanwhile.
    Streams,
}

/// Room left for each read of an early answer.
const MIN_READ: usize = 4096;

/// Interim answers an upstream may send before its final one, in bytes, for
/// each second of waiting, beyond a head's worth (`max_header_bytes`, which
/// also bounds those held back while a body streamed).
const INTERIM_BYTES_PER_SECOND: usize = 4 * 1024;

enum NoResponse {
    /// The connection ended before a single response byte arrived.
    Nothing,
    /// A TLS alert came before a single response byte; on a new
    /// connection, the upstream refusing our certificate (see
    /// `is_alert_from_peer`).
    Alert,
    /// Writing an interim answer to the client failed.
    ClientGone,
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
