//! The load run. [`run_load`] resolves the target and serializes the
//! requests once, then starts one monoio runtime per thread. Each thread
//! opens its share of the connections, waits for the common start, and runs
//! one loop per connection: closed loop (next request as soon as the last
//! response is complete, like wrk) or open loop (a fixed schedule per
//! connection, latency from the intended send time, like wrk2). The
//! per-thread tallies are merged into a [`Report`] at the end.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::time::Instant;

use crate::framing::ResponseParser;
use crate::options::LoadOptions;
use crate::progress::{self, Live};
use crate::report::{ErrorKind, Report, Stats};
use crate::request::{self, Target};
use crate::runtime::{self, StartSync, StopSignal};

/// Read buffer per connection; a response head must fit in it.
const READ_BUF: usize = 32 * 1024;
/// Pause after a failed connect in closed-loop mode, so a down server is
/// reported as errors instead of spinning a core.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);
/// monoio's timer rounds deadlines up to whole milliseconds and can fire up
/// to ~2 ms late. Open-loop sends wake this much early (at most half an
/// interval) so that timer lateness is not reported as server latency.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Everything the threads share, fixed before the run starts.
struct Plan {
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    order: Vec<usize>,
    connections: usize,
    threads: usize,
    /// Per-connection send interval in nanoseconds (open loop only).
    interval_ns: Option<f64>,
    duration: Option<Duration>,
    requests_total: Option<u64>,
    warmup: Duration,
    timeout: Duration,
    head_request: bool,
    count_header: Option<String>,
    cpus: Vec<usize>,
}

/// A thread's tallies and when it finished; `None` when the start was
/// called off because another thread could not take part.
type ThreadOutput = io::Result<Option<(Stats, std::time::Instant)>>;

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

fn plan(opts: &LoadOptions) -> io::Result<Plan> {
    if opts.connections == 0 || opts.threads == 0 {
        return Err(invalid("connections and threads must be at least 1"));
    }
    if opts.requests == Some(0) {
        return Err(invalid("the request count must be at least 1"));
    }
    if opts.requests.is_none() && opts.duration.is_zero() {
        return Err(invalid("the duration must be above zero"));
    }
    if opts.timeout.is_zero() {
        return Err(invalid("the timeout must be above zero"));
    }
    let interval_ns = match opts.rate {
        Some(r) if r.is_finite() && r > 0.0 => Some(opts.connections as f64 * 1e9 / r),
        Some(_) => return Err(invalid("the rate must be a positive number")),
        None => None,
    };
    // core_affinity cannot say which cpus the mask allows on every system;
    // where it cannot, a pin that fails still stops the run before its load.
    if let Some(allowed) = core_affinity::get_core_ids() {
        if let Some(cpu) = opts.cpus.iter().find(|&&cpu| !allowed.iter().any(|c| c.id == cpu)) {
            return Err(invalid(&format!(
                "cannot pin a thread to cpu {cpu}: not among the cpus this process may run on"
            )));
        }
    }
    let target = Target::parse(&opts.url)?;
    let set = request::build(opts, &target)?;
    Ok(Plan {
        addr: target.resolve(opts.timeout)?,
        requests: set.requests,
        order: set.order,
        connections: opts.connections,
        threads: opts.threads.min(opts.connections),
        interval_ns,
        duration: opts.requests.is_none().then_some(opts.duration),
        requests_total: opts.requests,
        warmup: opts.warmup,
        timeout: opts.timeout,
        // Methods are case-sensitive (RFC 9110 §9.1): a server answers `head`
        // as an unknown method, with a body, so only `HEAD` expects none.
        head_request: opts.method == "HEAD",
        count_header: opts.count_header.clone(),
        cpus: opts.cpus.clone(),
    })
}

/// Ends a load run early, from any thread: see [`run_load_until`].
#[derive(Debug, Clone, Default)]
pub struct LoadStop(Arc<StopSignal>);

impl LoadStop {
    /// Stops the run: each thread stops sending at once, responses still
    /// due are not waited for, and the run reports what it measured so far.
    pub fn stop(&self) {
        self.0.stop();
    }

    /// Whether [`LoadStop::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.0.is_stopped()
    }
}

/// Checks `opts` as a run would (the URL, the mix, the cpus, the target's
/// address) without sending anything. An `InvalidInput` error is a bad
/// option; any other, the target's address not resolving.
pub fn check_load(opts: &LoadOptions) -> io::Result<()> {
    plan(opts).map(drop)
}

/// Runs a load test and blocks until it is over.
pub fn run_load(opts: LoadOptions) -> io::Result<Report> {
    run_load_until(opts, &LoadStop::default())
}

/// Runs a load test and blocks until it is over or `stop` is raised (as on
/// Ctrl-C), whichever comes first. A stopped run reports what it measured,
/// over the time it actually ran.
pub fn run_load_until(opts: LoadOptions, stop: &LoadStop) -> io::Result<Report> {
    let plan = Arc::new(plan(&opts)?);
    let sync = Arc::new(StartSync::default());
    let lives: Vec<Arc<Live>> = (0..plan.threads).map(|_| Arc::default()).collect();
    let mut handles = Vec::with_capacity(plan.threads);
    for (t, live) in lives.iter().enumerate() {
        let (plan, shared, live, stop) = (plan.clone(), sync.clone(), live.clone(), stop.0.clone());
        let progress = opts.progress;
        let spawned = std::thread::Builder::new()
            .name(format!("ringway-load-{t}"))
            .spawn(move || thread_main(&plan, t, &shared, &live, progress, &stop));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                sync.abort();
                for h in handles {
                    let _ = h.join();
                }
                return Err(e);
            }
        }
    }
    let Some(start) = sync.start_when_ready(plan.threads) else {
        // A thread could not take part: no load was sent; report why.
        let mut failure = None;
        for h in handles {
            match h.join() {
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(io::Error::other("a load thread panicked"))),
                Ok(Ok(_)) => {}
            }
        }
        return Err(failure.unwrap_or_else(|| io::Error::other("the run was called off before it started")));
    };
    let measure_start = start + plan.warmup;
    if opts.progress {
        progress::watch(&handles, &lives, start, plan.warmup);
    }
    let mut parts = Vec::with_capacity(handles.len());
    let mut end = measure_start;
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(Some((stats, finished)))) => {
                end = end.max(finished);
                parts.push(stats);
            }
            // Only before the start, which has happened.
            Ok(Ok(None)) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some(io::Error::other("a load thread panicked"))),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    // With -d the recording window is the duration, or longer when the last
    // responses arrived after it; with -n it ends at the last response; a
    // stopped run's window ends where it stopped.
    let elapsed = end.saturating_duration_since(measure_start);
    let duration = match plan.duration {
        Some(d) if !stop.is_stopped() => d.max(elapsed),
        _ => elapsed,
    };
    Report::merge(parts, duration, plan.count_header.is_some())
}

fn thread_main(
    plan: &Arc<Plan>,
    t: usize,
    sync: &StartSync,
    live: &Arc<Live>,
    progress: bool,
    stop: &Arc<StopSignal>,
) -> ThreadOutput {
    let per_thread = plan.connections.div_ceil(plan.threads) as u32;
    let setup = match plan.cpus.get(t % plan.cpus.len().max(1)) {
        Some(&cpu) => runtime::pin_current(cpu),
        None => Ok(()),
    }
    .and_then(|()| runtime::build_runtime(per_thread.saturating_mul(4).next_power_of_two()));
    let mut rt = match setup {
        Ok(rt) => rt,
        Err(e) => {
            // Call the start off: the others must not run without this
            // thread's share, and the user hear of it only at the end.
            sync.abort();
            return Err(e);
        }
    };
    rt.block_on(run_thread(plan.clone(), t, sync, live.clone(), progress, stop))
}

/// State shared by the connection loops of one thread.
struct Ctx {
    plan: Arc<Plan>,
    stats: RefCell<Stats>,
    requests: Vec<Rc<Vec<u8>>>,
    start: Instant,
    measure_start: Instant,
    deadline: Option<Instant>,
    budget: Option<Cell<u64>>,
    /// What the progress line reads, when there is one.
    live: Option<Arc<Live>>,
}

async fn run_thread(
    plan: Arc<Plan>,
    t: usize,
    sync: &StartSync,
    live: Arc<Live>,
    progress: bool,
    stop: &Arc<StopSignal>,
) -> ThreadOutput {
    let mine: Vec<usize> = (t..plan.connections).step_by(plan.threads).collect();
    let mut opening = Vec::with_capacity(mine.len());
    for _ in &mine {
        opening.push(monoio::spawn(connect(plan.addr, plan.timeout)));
    }
    let opened = async {
        let mut conns = Vec::with_capacity(mine.len());
        for h in opening {
            conns.push(h.await.ok().map(Conn::new));
        }
        conns
    };
    // A stop while connecting (to a server that does not accept) need not
    // wait out the connect timeout; no connection, no loop then.
    let conns = monoio::select! {
        conns = opened => conns,
        _ = stop.wait() => Vec::new(),
    };
    // Blocking here is fine: this thread has nothing else to run yet.
    let Some(start) = sync.arrive_and_wait() else {
        return Ok(None);
    };
    let start = Instant::from_std(start);
    let measure_start = start + plan.warmup;
    let budget = plan.requests_total.map(|n| {
        let share = |c: &usize| n / plan.connections as u64 + u64::from((*c as u64) < n % plan.connections as u64);
        Cell::new(mine.iter().map(share).sum())
    });
    let ctx = Rc::new(Ctx {
        requests: plan.requests.iter().map(|r| Rc::new(r.clone())).collect(),
        stats: RefCell::new(Stats::new()?),
        start,
        measure_start,
        deadline: plan.duration.map(|d| measure_start + d),
        budget,
        plan,
        live: progress.then(|| live.clone()),
    });
    let loops: Vec<_> = mine
        .iter()
        .zip(conns)
        .map(|(&global, conn)| monoio::spawn(conn_loop(ctx.clone(), global, conn)))
        .collect();
    let all = async {
        for h in loops {
            h.await;
        }
    };
    let ticker = async {
        if !progress {
            return std::future::pending().await;
        }
        loop {
            monoio::time::sleep(Duration::from_millis(500)).await;
            live.publish(&ctx.stats.borrow());
        }
    };
    // A stop leaves the connection loops where they are: the tallies are
    // taken before they run again, and they end with the runtime.
    monoio::select! {
        _ = all => {},
        _ = ticker => {},
        _ = stop.wait() => {},
    }
    let finished = std::time::Instant::now();
    let stats = ctx.stats.replace(Stats::new()?);
    Ok(Some((stats, finished)))
}

impl Ctx {
    /// Records a response, and publishes the counts for the progress line.
    fn response(&self, status: u16, latency: Duration, counted: Option<Option<&[u8]>>) {
        self.stats.borrow_mut().response(status, latency, counted);
        self.publish_counts();
    }

    /// Records an error, and publishes the counts for the progress line.
    fn error(&self, kind: ErrorKind) {
        self.stats.borrow_mut().error(kind);
        self.publish_counts();
    }

    fn publish_counts(&self) {
        if let Some(live) = &self.live {
            live.count(&self.stats.borrow());
        }
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = monoio::time::timeout(timeout, TcpStream::connect_addr(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An open connection and its read buffer (`buf[pos..]` is unparsed).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(READ_BUF),
            pos: 0,
        }
    }
}

/// Sends the requests of one connection until the run is over.
async fn conn_loop(ctx: Rc<Ctx>, global: usize, mut conn: Option<Conn>) {
    let plan = &ctx.plan;
    let mut parser = ResponseParser::new(plan.head_request, plan.count_header.clone());
    let mut pos = global % plan.order.len();
    let mut slot = global as f64 / plan.connections as f64;
    let early = plan.interval_ns.map_or(Duration::ZERO, |iv| {
        Duration::from_nanos((iv / 2.0) as u64).min(TIMER_SLACK)
    });
    let mut connected_before = conn.is_some();
    loop {
        let (intended, wake) = match plan.interval_ns {
            Some(iv) => {
                let t = ctx.start + Duration::from_nanos((slot * iv) as u64);
                slot += 1.0;
                (t, t.checked_sub(early))
            }
            None => (Instant::now(), None),
        };
        if ctx.deadline.is_some_and(|d| intended >= d) {
            break;
        }
        let recording = intended >= ctx.measure_start;
        if let (true, Some(budget)) = (recording, &ctx.budget) {
            match budget.get() {
                0 => break,
                n => budget.set(n - 1),
            }
        }
        if let Some(wake) = wake.filter(|&w| w > Instant::now()) {
            monoio::time::sleep_until(wake).await;
        }
        // Behind the schedule at the end (a server that stalled), requests
        // due before it are still sent and measured from when they were
        // due, each at most `timeout` late: leaving them unsent would drop
        // the very latencies the stall caused. A request already later than
        // that counts as a timeout unsent, and a connect for one is given
        // only what is left of its time, so the run ends at most `timeout`
        // after `-d`.
        let open_loop = plan.interval_ns.is_some();
        let time_left = (intended + plan.timeout).saturating_duration_since(Instant::now());
        if open_loop && time_left.is_zero() {
            if recording {
                ctx.error(ErrorKind::Timeout);
            }
            continue;
        }
        let connect_within = if open_loop { time_left } else { plan.timeout };
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(plan.addr, connect_within).await {
                Ok(stream) => {
                    if recording && connected_before {
                        ctx.stats.borrow_mut().reconnects += 1;
                    }
                    connected_before = true;
                    conn.insert(Conn::new(stream))
                }
                Err(_) => {
                    if recording {
                        ctx.error(ErrorKind::Connect);
                    }
                    if plan.interval_ns.is_none() {
                        monoio::time::sleep(CONNECT_BACKOFF).await;
                    }
                    continue;
                }
            },
        };
        let req = ctx.requests[plan.order[pos]].clone();
        pos = (pos + 1) % plan.order.len();
        let sent = Instant::now();
        // A request already later than its timeout (behind the schedule, or
        // after a slow reconnect) is one, unsent.
        if plan.interval_ns.is_some() && sent >= intended + plan.timeout {
            if recording {
                ctx.error(ErrorKind::Timeout);
            }
            continue;
        }
        // Open loop: from the intended time, so any lag behind the schedule
        // counts (coordinated omission); a send slightly ahead of schedule
        // is measured from when it really went.
        let from = match plan.interval_ns {
            Some(_) => intended.min(sent),
            None => sent,
        };
        let result = monoio::time::timeout_at(from + plan.timeout, exchange(c, req, &mut parser)).await;
        let outcome = match result {
            Ok(Ok(())) => Ok(parser.keep_alive),
            Ok(Err(kind)) => Err(kind),
            Err(_) => Err(ErrorKind::Timeout),
        };
        if !matches!(outcome, Ok(true)) {
            conn = None;
        }
        if !recording {
            continue;
        }
        match outcome {
            Ok(_) => {
                let counted = plan.count_header.is_some().then(|| parser.counted());
                ctx.response(parser.status, Instant::now() - from, counted);
            }
            Err(kind) => ctx.error(kind),
        }
    }
}

/// Writes one request and reads its whole response.
async fn exchange(c: &mut Conn, req: Rc<Vec<u8>>, parser: &mut ResponseParser) -> Result<(), ErrorKind> {
    let (res, _) = c.stream.write_all(req).await;
    res.map_err(|_| ErrorKind::Reset)?;
    parser.reset();
    loop {
        if c.pos < c.buf.len() {
            let p = parser.advance(&c.buf[c.pos..]).map_err(|_| ErrorKind::Parse)?;
            c.pos += p.consumed;
            if p.done {
                if c.pos == c.buf.len() {
                    c.buf.clear();
                    c.pos = 0;
                }
                return Ok(());
            }
        }
        if c.pos >= c.buf.len() {
            c.buf.clear();
        } else if c.pos > 0 {
            c.buf.copy_within(c.pos.., 0);
            c.buf.truncate(c.buf.len() - c.pos);
        }
        c.pos = 0;
        if c.buf.len() >= c.buf.capacity() {
            // Only a head can fill the buffer: body bytes are consumed as read.
            return Err(ErrorKind::Parse);
        }
        let buf = std::mem::take(&mut c.buf);
        let len = buf.len();
        let (res, slice) = c.stream.read(buf.slice_mut(len..)).await;
        c.buf = slice.into_inner();
        match res {
            Ok(0) if parser.finish_on_eof() => return Ok(()),
            Ok(0) | Err(_) => return Err(ErrorKind::Reset),
            Ok(_) => {}
        }
    }
}
