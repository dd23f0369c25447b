//! Service discovery on a control thread: clusters whose endpoints come from
//! an endpoints file (re-read when its modification time or size changes) or
//! a DNS name (re-resolved every `dns_refresh`) get a new generation published
//! whenever the list really changed. Each `dns` name is looked up on a thread
//! of its own, so a resolver that hangs delays only that name (host names in
//! an endpoints file are resolved as the file is read, here; a reload
//! resolves `dns` names as it compiles). Workers never read files or resolve
//! names; endpoints that disappear drain like any removed endpoint
//! (in-flight requests finish, idle connections close).

mod certs;

pub use certs::{apply as apply_rotations, Rotation};

use crate::config::{sources, Endpoint, EndpointSource, Snapshot};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often sources are looked at (files are only read when they changed).
const POLL: Duration = Duration::from_millis(250);

/// The `result` label values of `ringway_discovery_refreshes_total`.
pub const UPDATED: &str = "updated";
pub const UNCHANGED: &str = "unchanged";
pub const FAILED: &str = "failed";
/// Every result, so that a discovered cluster can expose all three from the
/// start and `increase()` sees its first failure.
pub const RESULTS: [&str; 3] = [UPDATED, UNCHANGED, FAILED];

/// What the discovery thread publishes and counts through.
pub struct Publish<C, S, N, R, M> {
    /// The config in force.
    pub current: C,
    /// Replace a cluster's endpoints as a new generation.
    pub set_endpoints: S,
    /// Count a look at a cluster's source: (cluster, result).
    pub count: N,
    /// Put rotated TLS settings in force as a new generation.
    pub rotate: R,
    /// Count a certificate rotation: ok or not.
    pub count_rotation: M,
}

/// Start the discovery thread: endpoint sources, and the TLS files of
/// listeners and clusters (see `certs`).
pub fn spawn_discovery<C, S, N, R, M>(
    publish: Publish<C, S, N, R, M>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>>
where
    C: Fn() -> Arc<Snapshot> + Send + 'static,
    S: Fn(&str, &EndpointSource, Vec<Endpoint>) -> Result<u64, String> + Send + 'static,
    N: Fn(&str, &'static str) + Send + 'static,
    R: Fn(&[Rotation]) -> u64 + Send + 'static,
    M: Fn(bool) + Send + 'static,
{
    let Publish {
        current,
        set_endpoints,
        count,
        rotate,
        count_rotation,
    } = publish;
    std::thread::Builder::new()
        .name("ringway-discovery".into())
        .spawn(move || {
            let mut state = Watch::default();
            let mut certs = certs::CertWatch::default();
            while !stop.load(Ordering::Relaxed) {
                let mut rotations = Vec::new();
                for outcome in certs.poll(&current()) {
                    match outcome.result {
                        Ok(rotation) => rotations.push(rotation),
                        Err(e) => {
                            count_rotation(false);
                            crate::stderr_line!(
                                "ringway: tls: {}: certificates not reloaded, the ones in force stay: {e}",
                                outcome.owner
                            )
                        }
                    }
                }
                if !rotations.is_empty() {
                    let generation = rotate(&rotations);
                    // Counted once published: a rotation counted is one
                    // the workers are taking up.
                    rotations.iter().for_each(|_| count_rotation(true));
                    crate::stderr_line!("ringway: tls: reloaded certificates (generation {generation})");
                }
                let polled = current();
                for (cluster, refresh) in state.poll(&polled) {
                    let source = polled.clusters.iter().find(|c| c.name == cluster).map(|c| &c.source);
                    let result = match (refresh, source) {
                        (Refresh::Updated(endpoints), Some(source)) => match set_endpoints(&cluster, source, endpoints)
                        {
                            Ok(generation) => {
                                crate::stderr_line!(
                                    "ringway: discovery: cluster {cluster} updated (generation {generation})"
                                );
                                UPDATED
                            }
                            Err(e) => {
                                crate::stderr_line!("ringway: discovery: cluster {cluster} not updated: {e}");
                                FAILED
                            }
                        },
                        (Refresh::Updated(_), None) | (Refresh::Failed, _) => FAILED,
                        (Refresh::Unchanged, _) => UNCHANGED,
                    };
                    count(&cluster, result);
                }
                std::thread::sleep(POLL);
            }
        })
}

/// What looking at one cluster's source gave.
#[derive(Debug, PartialEq)]
enum Refresh {
    /// A list different from the one in force, to publish.
    Updated(Vec<Endpoint>),
    /// The list already in force.
    Unchanged,
    /// The source could not be read, parsed or resolved; endpoints are kept.
    Failed,
}

/// Resolves a `HOST:PORT` name; a lookup may block for as long as the
/// system resolver takes, so it runs on a thread of its own.
type Resolver = Arc<dyn Fn(&str) -> Result<Vec<Endpoint>, String> + Send + Sync>;

/// What was last seen of each cluster's source. Per cluster: clusters
/// that share a file or a name are each kept up to date.
struct Watch {
    files: HashMap<(String, PathBuf), crate::tls::FileStamp>,
    /// When each cluster's name was last due: it is due again `dns_refresh`
    /// later, as the config in force has it.
    resolved: HashMap<(String, String), Instant>,
    /// Clusters due whose name's answer has not come yet.
    awaiting: HashSet<(String, String)>,
    /// One lookup at a time per name, each on its own thread, so that a
    /// resolver that hangs holds up neither files, nor certificates, nor
    /// other names.
    lookups: HashMap<String, mpsc::Receiver<Result<Vec<Endpoint>, String>>>,
    /// Lookups finished since the last poll, by name.
    answers: HashMap<String, Result<Vec<Endpoint>, String>>,
    resolve: Resolver,
}

impl Default for Watch {
    fn default() -> Self {
        Watch::with_resolver(Arc::new(sources::resolve_dns))
    }
}

impl Watch {
    fn with_resolver(resolve: Resolver) -> Self {
        Watch {
            files: HashMap::new(),
            resolved: HashMap::new(),
            awaiting: HashSet::new(),
            lookups: HashMap::new(),
            answers: HashMap::new(),
            resolve,
        }
    }

    /// One poll: the outcome for each cluster whose source was looked at.
    /// Files whose stamp did not change, names not yet due and lookups not
    /// yet answered are left out. A file or a name several clusters share is
    /// read once per poll.
    fn poll(&mut self, snapshot: &Snapshot) -> Vec<(String, Refresh)> {
        // Clusters gone from the config, or that changed their name to
        // resolve, are forgotten, and so are lookups no cluster wants.
        let names: HashSet<&str> = snapshot.clusters.iter().map(|c| c.name.as_str()).collect();
        let dns: HashSet<(&str, &str)> = snapshot
            .clusters
            .iter()
            .filter_map(|c| match &c.source {
                EndpointSource::Dns { name, .. } => Some((c.name.as_str(), name.as_str())),
                _ => None,
            })
            .collect();
        let wanted = |(cluster, name): &(String, String)| dns.contains(&(cluster.as_str(), name.as_str()));
        self.files.retain(|(cluster, _), _| names.contains(cluster.as_str()));
        self.resolved.retain(|key, _| wanted(key));
        self.awaiting.retain(|key| wanted(key));
        self.lookups.retain(|name, _| dns.iter().any(|(_, n)| n == name));
        self.collect(None);
        let answers = std::mem::take(&mut self.answers);
        let mut outcomes = Vec::new();
        let mut read: HashMap<&std::path::Path, Result<Vec<Endpoint>, String>> = HashMap::new();
        for cluster in &snapshot.clusters {
            let fresh = match &cluster.source {
                EndpointSource::Static => None,
                EndpointSource::File(path) => self.file_changed(&cluster.name, path).then(|| {
                    read.entry(path.as_path())
                        .or_insert_with(|| sources::read_endpoints_file(path))
                        .clone()
                }),
                EndpointSource::Dns { name, refresh, family } => {
                    let due = self.dns_due(&cluster.name, name, *refresh);
                    let key = (cluster.name.clone(), name.clone());
                    match answers.get(name.as_str()) {
                        // One lookup per name; each cluster takes its family.
                        Some(answer) if self.awaiting.remove(&key) => {
                            Some(answer.clone().map(|found| family.pick(found)))
                        }
                        _ => {
                            if due {
                                self.look_up(name);
                            }
                            None
                        }
                    }
                }
            };
            let refresh = match fresh {
                None => continue,
                Some(Err(e)) => {
                    crate::stderr_line!(
                        "ringway: discovery: cluster {}: {e}; keeping its endpoints",
                        cluster.name
                    );
                    Refresh::Failed
                }
                Some(Ok(endpoints)) if endpoints == cluster.endpoints => Refresh::Unchanged,
                Some(Ok(endpoints)) => Refresh::Updated(endpoints),
            };
            outcomes.push((cluster.name.clone(), refresh));
        }
        outcomes
    }

    /// Whether the file changed since this cluster last looked.
    fn file_changed(&mut self, cluster: &str, path: &std::path::Path) -> bool {
        // With the inode: a file replaced by rename within the clock's
        // granularity, at the same size, is still seen.
        let stamp = crate::tls::stamp(path);
        let last = self.files.insert((cluster.to_string(), path.to_path_buf()), stamp);
        last != Some(stamp)
    }

    /// Whether this cluster's name is due to be resolved (and if so, it
    /// waits for the name's next answer from now on).
    fn dns_due(&mut self, cluster: &str, name: &str, refresh: Duration) -> bool {
        let now = Instant::now();
        let key = (cluster.to_string(), name.to_string());
        if self.resolved.get(&key).is_some_and(|last| now < *last + refresh) {
            return false;
        }
        self.resolved.insert(key.clone(), now);
        self.awaiting.insert(key);
        true
    }

    /// Start a lookup of `name` unless one is under way.
    fn look_up(&mut self, name: &str) {
        if self.lookups.contains_key(name) {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let resolve = self.resolve.clone();
        let owned = name.to_string();
        let started = std::thread::Builder::new().name("ringway-dns".into()).spawn(move || {
            // The receiver may be gone: the cluster left the config.
            let _ = tx.send(resolve(&owned));
        });
        match started {
            Ok(_) => {
                self.lookups.insert(name.to_string(), rx);
            }
            // No thread to spare: it is a failed look, tried again when due.
            Err(e) => {
                let (tx, rx) = mpsc::channel();
                let _ = tx.send(Err(format!("cannot start a lookup of {name:?}: {e}")));
                self.lookups.insert(name.to_string(), rx);
            }
        }
    }

    /// Take the answers of finished lookups, waiting up to `wait` for each
    /// one still under way (tests wait; the discovery thread does not).
    fn collect(&mut self, wait: Option<Duration>) {
        let answers = &mut self.answers;
        self.lookups.retain(|name, rx| {
            let answer = match wait {
                None => rx.try_recv().map_err(|e| e == mpsc::TryRecvError::Disconnected),
                Some(wait) => rx
                    .recv_timeout(wait)
                    .map_err(|e| e == mpsc::RecvTimeoutError::Disconnected),
            };
            match answer {
                Ok(answer) => {
                    answers.insert(name.clone(), answer);
                    false
                }
                Err(false) => true,
                Err(true) => {
                    answers.insert(
                        name.clone(),
                        Err(format!("the lookup of {name:?} ended without an answer")),
                    );
                    false
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoints file of this test's own, holding one endpoint.
    fn endpoints_file(test: &str) -> PathBuf {
        let file = std::env::temp_dir().join(format!("ringway-discovery-{test}-{}.json", std::process::id()));
        std::fs::write(&file, r#"[{"address": "127.0.0.1:1001"}]"#).expect("write");
        file
    }

    /// A config of `clusters` (config text), its listener routed to the first.
    fn snapshot(clusters: &[(&str, String)]) -> Snapshot {
        let mut toml = format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[listener.route]]\ncluster = \"{}\"\n",
            clusters[0].0
        );
        for (name, source) in clusters {
            toml.push_str(&format!("[[cluster]]\nname = \"{name}\"\n{source}\n"));
        }
        crate::config::parse(&toml, "t", 1).expect("valid")
    }

    fn from_file(file: &std::path::Path) -> String {
        format!("endpoints_file = \"{}\"", file.display())
    }

    const FROM_DNS: &str = "dns = \"localhost:9\"\ndns_refresh = \"1h\"";

    #[test]
    fn each_look_at_a_file_has_one_outcome() {
        let file = endpoints_file("looks");
        let mut snap = snapshot(&[("c", from_file(&file))]);
        assert_eq!(snap.clusters[0].endpoints.len(), 1, "read at compile time");
        let mut watch = Watch::default();
        let c = || "c".to_string();
        assert_eq!(
            watch.poll(&snap),
            [(c(), Refresh::Unchanged)],
            "first look: the compiled list"
        );
        assert!(watch.poll(&snap).is_empty(), "an untouched file is not looked at");

        let two = r#"[{"address": "127.0.0.1:1001"}, {"address": "127.0.0.1:1002", "weight": 3}]"#;
        std::fs::write(&file, two).expect("write");
        let endpoints = sources::read_endpoints_file(&file).expect("valid");
        assert_eq!(endpoints.len(), 2);
        assert_eq!(watch.poll(&snap), [(c(), Refresh::Updated(endpoints.clone()))]);
        snap.clusters[0].endpoints = endpoints;
        assert!(
            watch.poll(&snap).is_empty(),
            "published: nothing more until the file changes"
        );

        // Same endpoints, other bytes: the stamp moves, the list does not.
        std::fs::write(&file, two.replace(", ", ",\n  ")).expect("write");
        assert_eq!(watch.poll(&snap), [(c(), Refresh::Unchanged)]);

        std::fs::write(&file, "[ not json").expect("write");
        assert_eq!(
            watch.poll(&snap),
            [(c(), Refresh::Failed)],
            "a broken file keeps the endpoints"
        );
        assert!(watch.poll(&snap).is_empty(), "and is not re-read until it changes");
        let _ = std::fs::remove_file(file);
    }

    /// A file rewritten in place at the same size, its modification time
    /// then set back (as `cp -p` and `rsync -t --inplace` do), is seen by
    /// its change time.
    #[test]
    fn a_rewrite_with_its_modification_time_restored_is_seen() {
        let file = endpoints_file("restored");
        let snap = snapshot(&[("c", from_file(&file))]);
        let mut watch = Watch::default();
        assert_eq!(watch.poll(&snap), [("c".to_string(), Refresh::Unchanged)]);
        let modified = std::fs::metadata(&file).and_then(|m| m.modified()).expect("mtime");
        let before = std::fs::read_to_string(&file).expect("read");
        let after = before.replace("127.0.0.1:1001", "127.0.0.1:1009");
        assert_eq!(before.len(), after.len(), "the same size");
        std::fs::write(&file, &after).expect("rewrite in place");
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(modified))
            .expect("restore the modification time");
        let endpoints = sources::read_endpoints_file(&file).expect("valid");
        assert_eq!(watch.poll(&snap), [("c".to_string(), Refresh::Updated(endpoints))]);
        let _ = std::fs::remove_file(file);
    }

    /// Clusters that share a file or a name are each kept up to date, and a
    /// shorter dns_refresh holds from the next poll.
    #[test]
    fn shared_sources_refresh_every_cluster() {
        let file = endpoints_file("shared");
        let mut snap = snapshot(&[
            ("a", from_file(&file)),
            ("b", from_file(&file)),
            ("c", FROM_DNS.to_string()),
            ("d", FROM_DNS.to_string()),
        ]);
        let mut watch = Watch::default();
        let looked = |outcomes: Vec<(String, Refresh)>| {
            let mut names: Vec<String> = outcomes.into_iter().map(|(name, _)| name).collect();
            names.sort();
            names
        };
        assert_eq!(
            looked(watch.poll(&snap)),
            ["a", "b"],
            "files at once, names once answered"
        );
        watch.collect(Some(Duration::from_secs(10)));
        assert_eq!(looked(watch.poll(&snap)), ["c", "d"], "one lookup answers both");
        assert!(watch.poll(&snap).is_empty());
        std::fs::write(&file, r#"[{"address": "127.0.0.1:1002"}]"#).expect("rewrite");
        assert_eq!(looked(watch.poll(&snap)), ["a", "b"], "both see the change");
        for cluster in &mut snap.clusters[2..] {
            if let EndpointSource::Dns { refresh, .. } = &mut cluster.source {
                *refresh = Duration::ZERO;
            }
        }
        assert!(watch.poll(&snap).is_empty(), "due at once: looked up");
        watch.collect(Some(Duration::from_secs(10)));
        assert_eq!(
            looked(watch.poll(&snap)),
            ["c", "d"],
            "the shorter refresh holds at once"
        );
        let _ = std::fs::remove_file(file);
    }

    /// One lookup of a name with addresses of both families answers each
    /// cluster with the family it asked for.
    #[test]
    fn each_cluster_takes_its_family_of_a_shared_lookup() {
        let mut snap = snapshot(&[
            ("default", FROM_DNS.to_string()),
            ("v6", format!("{FROM_DNS}\ndns_family = \"v6_preferred\"")),
            ("all", format!("{FROM_DNS}\ndns_family = \"all\"")),
        ]);
        let endpoint = |address: &str| Endpoint {
            address: address.parse().expect("address"),
            weight: 1,
            zone: None,
            priority: 0,
        };
        let both = vec![endpoint("127.0.0.1:9"), endpoint("[::1]:9")];
        let answer = both.clone();
        let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = lookups.clone();
        let resolver: Resolver = Arc::new(move |_name: &str| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(answer.clone())
        });
        // Whatever this host's resolver made of the name at compile time.
        for cluster in &mut snap.clusters {
            cluster.endpoints.clear();
        }
        let mut watch = Watch::with_resolver(resolver);
        assert!(watch.poll(&snap).is_empty(), "looked up");
        watch.collect(Some(Duration::from_secs(10)));
        let mut outcomes = watch.poll(&snap);
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            outcomes,
            [
                ("all".to_string(), Refresh::Updated(both.clone())),
                ("default".to_string(), Refresh::Updated(vec![both[0].clone()])),
                ("v6".to_string(), Refresh::Updated(vec![both[1].clone()])),
            ]
        );
        assert_eq!(
            lookups.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one lookup for the name"
        );
    }

    /// A lookup that hangs holds up neither an endpoints file nor another
    /// lookup of the same name.
    #[test]
    fn a_hanging_lookup_holds_nothing_up() {
        let file = endpoints_file("hang");
        let mut snap = snapshot(&[("f", from_file(&file)), ("n", FROM_DNS.to_string())]);
        if let EndpointSource::Dns { refresh, .. } = &mut snap.clusters[1].source {
            *refresh = Duration::ZERO;
        }
        let (release, gate) = mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate);
        let (starts, started) = mpsc::channel::<()>();
        let starts = std::sync::Mutex::new(starts);
        let resolver: Resolver = Arc::new(move |_name: &str| {
            let _ = starts.lock().map(|s| s.send(()));
            let _ = gate.lock().map(|g| g.recv());
            Ok(Vec::new())
        });
        let mut watch = Watch::with_resolver(resolver);
        assert_eq!(watch.poll(&snap), [("f".to_string(), Refresh::Unchanged)]);
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the lookup started");
        std::fs::write(&file, r#"[{"address": "127.0.0.1:1002"}]"#).expect("rewrite");
        assert!(
            matches!(watch.poll(&snap)[..], [(ref name, Refresh::Updated(_))] if name == "f"),
            "the file is read while the name hangs"
        );
        assert!(watch.poll(&snap).is_empty(), "due again, still under way");
        release.send(()).expect("release");
        watch.collect(Some(Duration::from_secs(10)));
        assert_eq!(watch.poll(&snap), [("n".to_string(), Refresh::Updated(Vec::new()))]);
        assert!(started.try_recv().is_err(), "one lookup of a name at a time");
        drop(release);
        let _ = std::fs::remove_file(file);
    }
}
