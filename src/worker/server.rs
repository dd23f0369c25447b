//! Starting and stopping the worker threads: pick cores from the process
//! affinity mask, spawn one pinned thread per worker, wait until each has
//! bound its listeners, and fan control messages (refresh, drain) out to them.

use super::{Shared, Worker};
use crate::config::{Endpoint, EndpointSource, LogTarget};
use crate::config::{Snapshot, Workers};
use crate::listener;
use crate::metrics::{render, Gauges, Shard};
use crate::telemetry::{self, spawn_log_writer, LogMessage};
use monoio::time::{sleep, TimeDriver};
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub enum Control {
    /// A new snapshot was published: take it now rather than at the next request.
    Refresh,
    /// Send a copy of the worker's metric shard (a scrape).
    Collect(flume::Sender<Shard>),
    /// Send the worker's view of every endpoint (GET /clusters).
    Endpoints(flume::Sender<Vec<super::EndpointView>>),
    /// Stop accepting, finish in-flight requests, close idle connections, exit.
    Drain,
}

/// Publishes snapshots one at a time and tells every worker to take them.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    controls: Vec<flume::Sender<Control>>,
    lock: Arc<Mutex<()>>,
}

impl Publisher {
    pub fn update<E>(&self, next: impl FnOnce(&Snapshot) -> Result<Snapshot, E>) -> Result<u64, E> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.shared.load();
        let snapshot = next(&current)?;
        let generation = snapshot.generation;
        if current.access_log.target != snapshot.access_log.target {
            let target = log_target(&snapshot.access_log.target);
            let _ = self.shared.log_writer.control.send(LogMessage::Retarget(target));
        }
        self.shared.publish(snapshot);
        for c in &self.controls {
            let _ = c.send(Control::Refresh);
        }
        Ok(generation)
    }

    /// Begin the drain between two updates: an admin change either landed
    /// before it or sees it (and is refused), never half of each.
    fn start_draining(&self) {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.start_draining();
    }

    /// Replace one cluster's endpoints (discovery) as the next generation,
    /// found by looking at `source`: not if a reload has given the cluster
    /// another source since (its endpoints are that source's now).
    pub fn set_endpoints(
        &self,
        cluster: &str,
        source: &EndpointSource,
        endpoints: Vec<Endpoint>,
    ) -> Result<u64, String> {
        self.update(|current| {
            let mut next = current.clone();
            next.generation = current.generation + 1;
            let target = next.clusters.iter_mut().find(|c| c.name == cluster);
            let target = target.ok_or_else(|| format!("cluster {cluster} is gone"))?;
            if target.source != *source {
                return Err(format!("cluster {cluster} changed its endpoint source meanwhile"));
            }
            target.endpoints = endpoints;
            Ok(next)
        })
    }
}

pub struct Server {
    shared: Arc<Shared>,
    publisher: Publisher,
    discovery: Mutex<Option<JoinHandle<()>>>,
    health_checker: Mutex<Option<JoinHandle<()>>>,
    log_thread: Mutex<Option<JoinHandle<()>>>,
    started: std::time::SystemTime,
    stop_health: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    workers: usize,
    controls: Vec<flume::Sender<Control>>,
    /// Bound address of each listener, by listener index (port 0 resolved).
    addresses: Vec<(String, SocketAddr)>,
}

impl Server {
    /// Spawn the workers and return once every one of them accepts on every
    /// listener, or the first error if any could not start.
    pub fn start(mut snapshot: Snapshot) -> io::Result<Server> {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let workers = match snapshot.runtime.workers {
            Workers::Count(n) => n,
            Workers::Auto => cores.len().max(1),
        };
        // One wait for all of them: a start is not held up once per address.
        let deadline = Instant::now() + START_BIND_WAIT;
        for l in snapshot.listeners.iter().filter(|l| l.address.port() != 0) {
            probe_at_start(l.address, deadline)?;
        }
        // Port 0 means "any free port": reserve one port per listener so that
        // every worker's SO_REUSEPORT socket joins the same group.
        let reservations = reserve_ports(&mut snapshot)?;
        let addresses: Vec<(String, SocketAddr)> =
            snapshot.listeners.iter().map(|l| (l.name.clone(), l.address)).collect();
        let pin = snapshot.runtime.pin_cores && !cores.is_empty();
        let (log_writer, log_thread) = spawn_log_writer(log_target(&snapshot.access_log.target))?;
        let shared = Arc::new(Shared::new(snapshot, workers, log_writer));

        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(workers);
        let mut controls = Vec::with_capacity(workers);
        for id in 0..workers {
            let core = if pin {
                cores.get(id % cores.len()).copied()
            } else {
                None
            };
            let (tx, rx) = flume::unbounded();
            controls.push(tx);
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ringway-worker-{id}"))
                .spawn(move || run_worker(id, core, shared, rx, ready))?;
            threads.push(thread);
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some("a worker exited during start".to_string())),
            }
        }
        drop(reservations);
        let stop_health = Arc::new(AtomicBool::new(false));
        let published = shared.clone();
        let health_checker =
            crate::health::spawn_checker(move || published.load(), shared.health.clone(), stop_health.clone())?;
        let publisher = Publisher {
            shared: shared.clone(),
            controls: controls.clone(),
            lock: Arc::new(Mutex::new(())),
        };
        let (watched, updater, counts) = (shared.clone(), publisher.clone(), shared.clone());
        let (rotator, rotation_counts) = (publisher.clone(), shared.clone());
        let discovery = crate::discovery::spawn_discovery(
            crate::discovery::Publish {
                current: move || watched.load(),
                set_endpoints: move |cluster: &str, source: &_, endpoints| {
                    updater.set_endpoints(cluster, source, endpoints)
                },
                count: move |cluster: &str, result| counts.count_discovery_refresh(cluster, result),
                rotate: move |rotations: &[crate::discovery::Rotation]| {
                    rotator
                        .update(|current| {
                            Ok::<_, std::convert::Infallible>(crate::discovery::apply_rotations(current, rotations))
                        })
                        .unwrap_or_else(|never| match never {})
                },
                count_rotation: move |ok| rotation_counts.count_cert_rotation(ok),
            },
            stop_health.clone(),
        )?;
        let server = Server {
            shared,
            health_checker: Mutex::new(Some(health_checker)),
            publisher,
            discovery: Mutex::new(Some(discovery)),
            log_thread: Mutex::new(Some(log_thread)),
            started: std::time::SystemTime::now(),
            stop_health,
            workers: threads.len(),
            threads: Mutex::new(threads),
            controls,
            addresses,
        };
        if let Some(e) = failure {
            server.drain();
            server.wait();
            return Err(io::Error::other(e));
        }
        Ok(server)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn worker_count(&self) -> usize {
        self.workers
    }

    /// Every listener's name and bound address.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.addresses
    }

    /// The bound address of a listener (useful when it was configured with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        let started = self.addresses.iter().find(|(n, _)| n == listener).map(|(_, a)| *a);
        started.or_else(|| {
            self.shared
                .load()
                .listeners
                .iter()
                .find(|l| l.name == listener)
                .map(|l| l.address)
        })
    }

    /// Publish a new snapshot and tell every worker to take it now.
    pub fn publish(&self, snapshot: Snapshot) {
        let _ = self.publisher.update(|_| Ok::<_, std::convert::Infallible>(snapshot));
    }

    /// Compute the next snapshot from the one in force and publish it, with
    /// no other publication in between (control threads may race).
    pub fn update<E>(&self, next: impl FnOnce(&Snapshot) -> Result<Snapshot, E>) -> Result<u64, E> {
        self.publisher.update(next)
    }

    /// Every worker's view of every endpoint (see [`super::EndpointView`]),
    /// from the workers that answer within a moment.
    pub fn endpoint_views(&self) -> Vec<super::EndpointView> {
        self.ask_workers(Control::Endpoints).into_iter().flatten().collect()
    }

    /// Ask every worker (between its requests) and collect the answers of
    /// those that reply within 2 s: a worker busy past that is left out
    /// rather than holding up the admin.
    fn ask_workers<T>(&self, ask: impl Fn(flume::Sender<T>) -> Control) -> Vec<T> {
        let (tx, rx) = flume::unbounded();
        let asked = self.controls.iter().filter(|c| c.send(ask(tx.clone())).is_ok()).count();
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(2);
        (0..asked).map_while(|_| rx.recv_deadline(deadline).ok()).collect()
    }

    /// Prometheus text for /metrics: every worker's shard, copied between its
    /// requests and merged here, off the data path, plus process-wide gauges.
    pub fn metrics(&self) -> String {
        let mut merged = Shard::new();
        for shard in self.ask_workers(Control::Collect) {
            merged.merge(&shard);
        }
        merged.add_access_log_dropped(self.shared.log_writer.lost.load(Ordering::Relaxed));
        let snapshot = self.shared.load();
        let (reloads_ok, reloads_failed) = self.shared.reloads();
        let (cert_rotations_ok, cert_rotations_failed) = self.shared.cert_rotations();
        // Zero entries for every discovered cluster, so its failed series
        // exists before the first failure and increase() can see that one;
        // clusters no longer discovered (removed, or made static) leave.
        let discovered: HashSet<&str> = snapshot
            .clusters
            .iter()
            .filter(|c| c.source != EndpointSource::Static)
            .map(|c| c.name.as_str())
            .collect();
        let mut discovery_refreshes: Vec<_> = discovered
            .iter()
            .flat_map(|name| crate::discovery::RESULTS.map(|result| (name.to_string(), result, 0)))
            .collect();
        let counts = self.shared.discovery_refresh_counts().into_iter();
        discovery_refreshes.extend(counts.filter(|(cluster, _, _)| discovered.contains(cluster.as_str())));
        // Health is reported for the endpoints checked in the config in force.
        let checked: std::collections::HashSet<(&str, SocketAddr)> = snapshot
            .clusters
            .iter()
            .filter(|c| c.health_check.is_some())
            .flat_map(|c| c.endpoints.iter().map(|e| (c.name.as_str(), e.address)))
            .collect();
        let gauges = Gauges {
            config_generation: snapshot.generation,
            reloads_ok,
            reloads_failed,
            cert_rotations_ok,
            cert_rotations_failed,
            discovery_refreshes,
            endpoint_healthy: self
                .shared
                .health
                .all()
                .into_iter()
                .filter(|(cluster, addr, _)| checked.contains(&(cluster.as_str(), *addr)))
                .map(|(cluster, addr, healthy)| (cluster, addr.to_string(), healthy))
                .collect(),
            circuit_breaker_open: merged.breakers().to_vec(),
            workers: self.workers,
            start_time_seconds: self
                .started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        render(&merged, &gauges)
    }

    /// Ask the access log writer to reopen its file (SIGUSR1, after logrotate).
    pub fn reopen_log(&self) {
        let _ = self.shared.log_writer.control.send(LogMessage::Reopen);
    }

    /// Begin a graceful drain on every worker.
    pub fn drain(&self) {
        self.publisher.start_draining();
        for c in &self.controls {
            let _ = c.send(Control::Drain);
        }
    }

    /// Wait until every worker thread has finished (after a drain, from any
    /// source: a signal, the admin API, or `drain`).
    pub fn wait(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        self.stop_health.store(true, Ordering::Relaxed);
        if let Some(checker) = self.health_checker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = checker.join();
        }
        if let Some(discovery) = self.discovery.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = discovery.join();
        }
        // Workers flushed their last lines before exiting; let them reach
        // the file, for a while: a sink that stalls must not keep the
        // process from exiting.
        let _ = self.shared.log_writer.control.send(LogMessage::Stop);
        if let Some(writer) = self.log_thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let deadline = Instant::now() + LOG_FLUSH_WAIT;
            while !writer.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            match writer.is_finished() {
                true => drop(writer.join()),
                false => crate::stderr_line!("ringway: access log: the last lines were not written in time"),
            }
        }
    }
}

/// How long the end of a run waits for the access log's last lines.
const LOG_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// How long a start waits for an address in use to come free.
const START_BIND_WAIT: Duration = Duration::from_secs(2);

/// `listener::probe` at start, waiting until `deadline` for an address in
/// use. A Ringway that has just exited can hold its listening
/// sockets for some milliseconds more (its io_uring is torn down after the
/// process), and a restart at once would find them, as NGINX retries its
/// bind() for the same reason.
fn probe_at_start(addr: SocketAddr, deadline: Instant) -> io::Result<()> {
    let mut said = false;
    loop {
        match listener::probe(addr, &[]) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !said {
                    crate::stderr_line!("ringway: {addr} is in use; trying again for up to {START_BIND_WAIT:?}");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            done => return done,
        }
    }
}

fn reserve_ports(snapshot: &mut Snapshot) -> io::Result<Vec<socket2::Socket>> {
    let mut held = Vec::new();
    for l in snapshot.listeners.iter_mut().filter(|l| l.address.port() == 0) {
        let socket = crate::listener::socket_for(l.address)?;
        socket.set_reuse_port(true)?;
        socket.bind(&l.address.into())?;
        if let Some(addr) = socket.local_addr()?.as_socket() {
            l.address = addr;
        }
        held.push(socket);
    }
    Ok(held)
}

/// The worker's runtime. Its io_uring runs completions cooperatively (Linux
/// 5.19+): when the worker next enters the kernel, instead of each one
/// interrupting it with an inter-processor interrupt from the core that
/// made the socket ready. Under load that was ~8,000 interrupts a second per
/// worker, each a VM exit on virtual machines. Older kernels refuse the flag
/// and get a plain ring.
fn build_runtime() -> io::Result<FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>> {
    let build = |uring: io_uring::Builder| {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .with_entries(4096)
            .uring_builder(uring)
            .enable_timer()
            .build()
    };
    let mut cooperative = io_uring::IoUring::builder();
    cooperative.setup_coop_taskrun();
    build(cooperative).or_else(|_| build(io_uring::IoUring::builder()))
}

fn run_worker(
    id: usize,
    core: Option<core_affinity::CoreId>,
    shared: Arc<Shared>,
    control: flume::Receiver<Control>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    // A sandbox may refuse the affinity call; then the log says so rather
    // than claim a pinning that did not happen.
    let pinned = match core {
        Some(c) if core_affinity::set_for_current(c) => format!(" pinned to core {}", c.id),
        Some(c) => format!(" (pinning to core {} refused)", c.id),
        None => String::new(),
    };
    let driver = if monoio::utils::detect_uring() {
        "io_uring"
    } else {
        "epoll (io_uring unavailable)"
    };
    let mut runtime = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("worker {id}: cannot build the runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let worker = match Worker::new(id, shared.clone()) {
            Ok(w) => w,
            Err(e) => {
                let _ = ready.send(Err(format!("worker {id}: {e}")));
                return;
            }
        };
        // The worker's own plan: the newest snapshot it could build.
        if let Err(e) = listener::reconcile(&worker, &worker.plan().snapshot) {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
        crate::stderr_line!("ringway: worker {id} started on the {driver} driver{pinned}");
        monoio::spawn(maintain(worker.clone()));
        let _ = ready.send(Ok(()));

        loop {
            match control.recv_async().await {
                Ok(Control::Refresh) => {
                    worker.refresh();
                    let plan = worker.plan();
                    if let Err(e) = listener::reconcile(&worker, &plan.snapshot) {
                        crate::stderr_line!("ringway: worker {id}: {e}");
                    }
                    shared.mark_in_use(id, plan.snapshot.generation);
                }
                Ok(Control::Endpoints(reply)) => {
                    let _ = reply.send(worker.endpoint_views());
                }
                Ok(Control::Collect(reply)) => {
                    let dropped = worker.log.borrow().dropped();
                    worker.release_removed_series();
                    worker.report_open_connections();
                    worker.report_breakers();
                    let mut shard = worker.metrics.borrow_mut();
                    shard.set_access_log_dropped(dropped);
                    let _ = reply.send(shard.clone());
                }
                Ok(Control::Drain) | Err(_) => break,
            }
        }
        for running in worker.listeners.borrow().values() {
            running.stop();
        }
        worker.drain.start();
        worker.close_idle_pools();
        // The config in force when the drain begins says how long it waits.
        let deadline = Instant::now() + worker.plan().snapshot.runtime.drain_timeout;
        while worker.connections.get() > 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        if worker.connections.get() > 0 {
            crate::stderr_line!(
                "ringway: worker {id}: drain timeout, closing {} connections",
                worker.connections.get()
            );
            worker.abort.start();
            // Aborted connection tasks close their sockets when next polled.
            let grace = Instant::now() + Duration::from_secs(1);
            while worker.connections.get() > 0 && Instant::now() < grace {
                sleep(Duration::from_millis(1)).await;
            }
        }
        worker.close_idle_pools();
        worker.flush_log();
    });
}

/// Per-worker housekeeping: move the coarse clock (idle client connections,
/// watches of clients awaiting slow answers) every tick and close pooled
/// upstream connections that idled out every few ticks. It runs until the
/// worker ends, its drain included: requests still in flight then are
/// watched too.
async fn maintain(worker: Rc<Worker>) {
    const TICK: Duration = Duration::from_millis(250);
    let mut ticks = 0u32;
    let mut trim = TrimAfterWaves::default();
    loop {
        sleep(TICK).await;
        worker.idle.expire(Instant::now());
        worker.flush_log();
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(4) {
            worker.sweep_pools();
            if trim.second(worker.buffers.take_released()) {
                crate::sys::return_free_memory();
            }
        }
    }
}

/// When to give freed memory back to the kernel: once a wave of requests
/// beyond what the buffer pool keeps has passed (a burst of clients, all
/// served), not while it goes on, when the memory is about to be used
/// again and would only be faulted back in.
#[derive(Default)]
struct TrimAfterWaves {
    /// Bytes released since the last trim.
    pending: usize,
}

impl TrimAfterWaves {
    /// Trim once this much was released...
    const AFTER: usize = 4 << 20;
    /// ...and the last second released less than this.
    const QUIET: usize = 1 << 20;

    /// One second went by, releasing `released` bytes: whether to trim now.
    fn second(&mut self, released: usize) -> bool {
        self.pending = self.pending.saturating_add(released);
        let trim = self.pending >= Self::AFTER && released < Self::QUIET;
        if trim {
            self.pending = 0;
        }
        trim
    }
}

/// The writer's target for the configured one.
pub(super) fn log_target(target: &LogTarget) -> telemetry::LogTarget {
    match target {
        LogTarget::Off => telemetry::LogTarget::Off,
        LogTarget::Stdout => telemetry::LogTarget::Stdout,
        LogTarget::File(path) => telemetry::LogTarget::File(path.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::TrimAfterWaves;

    #[test]
    fn trims_once_a_wave_has_passed() {
        let mut trim = TrimAfterWaves::default();
        assert!(!trim.second(0), "nothing released");
        assert!(!trim.second(32 << 20), "not while the wave goes on");
        assert!(!trim.second(8 << 20), "nor while it recedes fast");
        assert!(trim.second(0), "once it has passed");
        assert!(!trim.second(0), "and once only");
        // Small releases add up to a trim in a quiet second.
        for _ in 0..7 {
            assert!(!trim.second(512 << 10));
        }
        assert!(trim.second(512 << 10), "4 MiB in quiet seconds");
    }
}
