//! The health-check thread: its own small monoio runtime, one probe task per
//! checked endpoint, reconciled with each new config generation (tasks for
//! removed endpoints or changed settings stop; new ones start).

use super::{HealthTable, Thresholds};
use crate::config::{HealthCheck, ListenerKind, Snapshot};
use crate::tls::{Carries, ClientTls, Stream};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the thread looks for a new config generation.
const CONFIG_POLL: Duration = Duration::from_millis(100);
/// A health response head larger than this is a failed check.
const MAX_HEAD: usize = 16 * 1024;

/// Start the checker. `snapshot` returns the config in force; the thread ends
/// soon after `stop` is set.
pub fn spawn_checker(
    snapshot: impl Fn() -> Arc<Snapshot> + Send + 'static,
    table: Arc<HealthTable>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ringway-health".into())
        .spawn(move || {
            let runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build();
            match runtime {
                Ok(mut rt) => rt.block_on(run(snapshot, table, stop)),
                Err(e) => crate::stderr_line!("ringway: health checks disabled, cannot build their runtime: {e}"),
            }
        })
}

type Key = (String, SocketAddr);

async fn run(snapshot: impl Fn() -> Arc<Snapshot>, table: Arc<HealthTable>, stop: Arc<AtomicBool>) {
    let mut tasks: HashMap<Key, (Probe, Rc<Cell<bool>>)> = HashMap::new();
    let mut generation = None;
    // From the OS: the sidecars of a fleet must not jitter their checks in step.
    let mut seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8);
    while !stop.load(Ordering::Relaxed) {
        let snap = snapshot();
        if generation != Some(snap.generation) {
            generation = Some(snap.generation);
            let mut wanted: HashMap<Key, Probe> = HashMap::new();
            let carried = carried_by_cluster(&snap);
            for (cluster, carries) in snap.clusters.iter().zip(carried) {
                let Some(check) = &cluster.health_check else { continue };
                let probe = Probe {
                    check: check.clone(),
                    tls: cluster.tls.clone(),
                    // An HTTP check speaks HTTP; a TCP check shakes hands
                    // as the cluster's own traffic does.
                    carries: match check.http_path {
                        Some(_) => Carries::Http,
                        None => carries,
                    },
                };
                for endpoint in &cluster.endpoints {
                    wanted.insert((cluster.name.clone(), endpoint.address), probe.clone());
                }
            }
            let mut restarted = HashSet::new();
            tasks.retain(|key, (check, stopped)| {
                let keep = wanted.get(key) == Some(check);
                if !keep {
                    stopped.set(true);
                    restarted.insert(key.clone());
                }
                keep
            });
            for (key, check) in wanted {
                if tasks.contains_key(&key) {
                    continue;
                }
                let stopped = Rc::new(Cell::new(false));
                seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                // A restarted check resumes from the published state; a
                // new endpoint's first result decides.
                let published = table.handle(&key.0, key.1).is_healthy();
                let thresholds = match restarted.contains(&key) {
                    true => Thresholds::starting(published),
                    false => Thresholds::unchecked(published),
                };
                let task = check_loop(
                    key.clone(),
                    check.clone(),
                    thresholds,
                    table.clone(),
                    stopped.clone(),
                    seed,
                );
                monoio::spawn(task);
                tasks.insert(key, (check, stopped));
            }
        }
        // Each look, not only on a new generation: an endpoint whose flag a
        // worker still held then goes once the worker has a new plan.
        table.retain(|key| tasks.contains_key(key));
        monoio::time::sleep(CONFIG_POLL).await;
    }
    for (_, stopped) in tasks.values() {
        stopped.set(true);
    }
}

/// What each cluster's connections carry: bytes only for a cluster that
/// tcp listeners alone use; HTTP for any that a route (or a mirror) uses.
fn carried_by_cluster(snap: &Snapshot) -> Vec<Carries> {
    let mut carried = vec![None; snap.clusters.len()];
    let mut mark = |cluster: usize, carries: Carries| {
        if let Some(slot) = carried.get_mut(cluster) {
            if *slot != Some(Carries::Http) {
                *slot = Some(carries);
            }
        }
    };
    for listener in &snap.listeners {
        match &listener.kind {
            ListenerKind::Tcp { cluster } => mark(*cluster, Carries::Bytes),
            ListenerKind::Http { routes } => {
                for route in routes {
                    for c in route
                        .target
                        .clusters()
                        .into_iter()
                        .chain(route.mirror.as_ref().map(|m| m.cluster))
                    {
                        mark(c, Carries::Http);
                    }
                }
            }
        }
    }
    carried.into_iter().map(|c| c.unwrap_or(Carries::Http)).collect()
}

/// What checking an endpoint takes: the check, and the cluster's TLS.
#[derive(Clone)]
struct Probe {
    check: HealthCheck,
    tls: Option<ClientTls>,
    carries: Carries,
}

impl PartialEq for Probe {
    /// A reload compiles TLS anew: the same settings read from unchanged
    /// files count as unchanged, so that reloads do not restart checks (a
    /// restarted check resumes from the published state, but counts its
    /// thresholds from zero: reloads more frequent than healthy_threshold ×
    /// interval would keep an endpoint from ever coming back).
    fn eq(&self, other: &Probe) -> bool {
        let same_tls = match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&a.config, &b.config) || a.same_source(b),
            _ => false,
        };
        self.check == other.check && same_tls && self.carries == other.carries
    }
}

async fn check_loop(
    key: Key,
    probe_with: Probe,
    mut state: Thresholds,
    table: Arc<HealthTable>,
    stopped: Rc<Cell<bool>>,
    seed: u64,
) {
    let Probe { check, tls, carries } = probe_with;
    let (cluster, addr) = key;
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stopped.get() {
        let verdict = probe(addr, &check, tls.as_ref(), carries).await;
        if stopped.get() {
            break;
        }
        // A check we could not make (out of descriptors) has no verdict.
        let observed = verdict.and_then(|ok| state.observe(ok, check.healthy_threshold, check.unhealthy_threshold));
        if let Some(healthy) = observed {
            table.set(&cluster, addr, healthy);
            let word = if healthy { "healthy" } else { "unhealthy" };
            crate::stderr_line!("ringway: health: cluster {cluster} endpoint {addr} is {word}");
        }
        let jitter_ns = u64::try_from(check.jitter.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(if jitter_ns == 0 { 0 } else { rng.u64(0..=jitter_ns) });
        monoio::time::sleep(check.interval + jitter).await;
    }
}

/// One check: a TCP connect (with the TLS handshake for a TLS cluster), or
/// an HTTP GET whose status must be expected. None when it could not be
/// made: Ringway was out of descriptors or memory.
async fn probe(addr: SocketAddr, check: &HealthCheck, tls: Option<&ClientTls>, carries: Carries) -> Option<bool> {
    let attempt = async {
        let stream = match crate::upstream::connect(addr, check.timeout, tls, carries).await {
            Ok(stream) => stream,
            Err(e) if !e.reached_endpoint() => return None,
            Err(_) => return Some(false),
        };
        let Some(path) = &check.http_path else {
            return Some(true);
        };
        Some(http_check(stream, addr, path, check).await.unwrap_or(false))
    };
    // Out of time, the endpoint failed the check.
    monoio::time::timeout(check.timeout, attempt)
        .await
        .unwrap_or(Some(false))
}

/// The Host a check sends by default: the endpoint's address, without the
/// zone of a link-local IPv6 one (`[fe80::1%2]:80`), which no Host can carry.
fn default_host(addr: SocketAddr) -> String {
    SocketAddr::new(addr.ip(), addr.port()).to_string()
}

/// GET `path` on `stream`: whether the answer's status is expected; None
/// when the exchange failed.
async fn http_check(mut stream: Stream, addr: SocketAddr, path: &str, check: &HealthCheck) -> Option<bool> {
    let host = check.host.clone().unwrap_or_else(|| default_host(addr));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringway-health-check\r\nConnection: close\r\n\r\n");
    let (written, _) = stream.write_all(request.into_bytes()).await;
    written.ok()?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return Some(response.code.is_some_and(|c| check.expected_statuses.contains(&c)));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Some(false),
        }
        buf.reserve(1024);
        if stream.read(&mut buf).await.ok()? == 0 {
            return Some(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn the_default_host_is_the_address_without_a_zone() {
        let host = |addr: &str| default_host(addr.parse().expect("address"));
        assert_eq!(host("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(host("[::1]:8080"), "[::1]:8080");
        assert_eq!(host("[fe80::1%2]:8080"), "[fe80::1]:8080");
    }

    fn config(endpoint: &str, generation: u64) -> Arc<Snapshot> {
        let source = format!(
            r#"
[[listener]]
name = "web"
address = "127.0.0.1:0"
  [[listener.route]]
  match = {{ path_prefix = "/" }}
  cluster = "c"

[[cluster]]
name = "c"
endpoints = [ {{ address = "{endpoint}" }} ]
health_check = {{ protocol = "tcp", interval = "60s" }}
"#
        );
        match crate::config::parse(&source, "test.toml", generation) {
            Ok(snapshot) => Arc::new(snapshot),
            Err(e) => panic!("test config: {e}"),
        }
    }

    fn listed(table: &HealthTable, addr: SocketAddr) -> bool {
        table.all().iter().any(|(cluster, a, _)| cluster == "c" && *a == addr)
    }

    /// Wait, a look at a time, until `cond` holds; false after `limit`.
    async fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while !cond() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    #[test]
    fn a_removed_endpoint_is_forgotten_once_no_plan_holds_it() {
        let old: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let new: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let in_force = Rc::new(RefCell::new(config("127.0.0.1:1", 1)));
        let table = Arc::new(HealthTable::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut rt = match monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        };
        rt.block_on(async {
            let snapshot = {
                let in_force = in_force.clone();
                move || in_force.borrow().clone()
            };
            let checker = monoio::spawn(run(snapshot, table.clone(), stop.clone()));
            assert!(
                eventually(Duration::from_secs(5), || listed(&table, old)).await,
                "a checked endpoint gets its flag when its check starts"
            );
            // A worker's plan holds the flag while the next generation
            // drops the endpoint.
            let held = table.handle("c", old);
            *in_force.borrow_mut() = config("127.0.0.1:2", 2);
            // The checker starts the new endpoint's check and then looks at
            // the table within the same pass, with the old flag held.
            assert!(eventually(Duration::from_secs(5), || listed(&table, new)).await);
            assert!(listed(&table, old), "held by a plan: kept");
            // The worker moves to a new plan; no new generation follows.
            drop(held);
            assert!(
                eventually(Duration::from_secs(5), || !listed(&table, old)).await,
                "forgotten at a later look, not only on a new generation"
            );
            stop.store(true, Ordering::Relaxed);
            checker.await;
        });
    }
}
