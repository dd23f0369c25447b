//! Service discovery on a control thread: clusters whose endpoints come from
//! an endpoints file (re-read when its modification time or size changes) or
//! a DNS name (re-resolved every `dns_refresh`) get a new generation published
//! whenever the list really changed. Workers never read files or resolve names;
//! endpoints that disappear drain like any removed endpoint (in-flight
//! requests finish, idle connections close).

mod certs;

pub use certs::{apply as apply_rotations, Rotation};

use crate::config::{sources, Endpoint, EndpointSource, Snapshot};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
                    count_rotation(outcome.result.is_ok());
                    match outcome.result {
                        Ok(rotation) => rotations.push(rotation),
                        Err(e) => eprintln!(
                            "ringway: tls: {}: certificates not reloaded, the ones in force stay: {e}",
                            outcome.owner
                        ),
                    }
                }
                if !rotations.is_empty() {
                    let generation = rotate(&rotations);
                    eprintln!("ringway: tls: reloaded certificates (generation {generation})");
                }
                let polled = current();
                for (cluster, refresh) in state.poll(&polled) {
                    let source = polled.clusters.iter().find(|c| c.name == cluster).map(|c| &c.source);
                    let result = match (refresh, source) {
                        (Refresh::Updated(endpoints), Some(source)) => match set_endpoints(&cluster, source, endpoints)
                        {
                            Ok(generation) => {
                                eprintln!("ringway: discovery: cluster {cluster} updated (generation {generation})");
                                UPDATED
                            }
                            Err(e) => {
                                eprintln!("ringway: discovery: cluster {cluster} not updated: {e}");
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

/// What was last seen of each cluster's source. Per cluster: clusters
/// that share a file or a name are each kept up to date.
#[derive(Default)]
struct Watch {
    files: HashMap<(String, PathBuf), crate::tls::FileStamp>,
    /// When each cluster's name was last resolved: it is due again
    /// `dns_refresh` later, as the config in force has it.
    resolved: HashMap<(String, String), Instant>,
}

impl Watch {
    /// One poll: the outcome for each cluster whose source was looked at.
    /// Files whose stamp did not change and names not yet due are left out.
    /// A file or a name several clusters share is read once per poll.
    fn poll(&mut self, snapshot: &Snapshot) -> Vec<(String, Refresh)> {
        // Clusters gone from the config are forgotten.
        let names: std::collections::HashSet<&str> = snapshot.clusters.iter().map(|c| c.name.as_str()).collect();
        self.files.retain(|(cluster, _), _| names.contains(cluster.as_str()));
        self.resolved.retain(|(cluster, _), _| names.contains(cluster.as_str()));
        let mut outcomes = Vec::new();
        let mut read: HashMap<&std::path::Path, Result<Vec<Endpoint>, String>> = HashMap::new();
        let mut resolved: HashMap<&str, Result<Vec<Endpoint>, String>> = HashMap::new();
        for cluster in &snapshot.clusters {
            let fresh = match &cluster.source {
                EndpointSource::Static => None,
                EndpointSource::File(path) => self.file_changed(&cluster.name, path).then(|| {
                    read.entry(path.as_path())
                        .or_insert_with(|| sources::read_endpoints_file(path))
                        .clone()
                }),
                EndpointSource::Dns { name, refresh } => self.dns_due(&cluster.name, name, *refresh).then(|| {
                    resolved
                        .entry(name.as_str())
                        .or_insert_with(|| sources::resolve_dns(name))
                        .clone()
                }),
            };
            let refresh = match fresh {
                None => continue,
                Some(Err(e)) => {
                    eprintln!(
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

    /// Whether this cluster's name is due to be resolved (and if so, it is
    /// counted as resolved now).
    fn dns_due(&mut self, cluster: &str, name: &str, refresh: Duration) -> bool {
        let now = Instant::now();
        let key = (cluster.to_string(), name.to_string());
        if self.resolved.get(&key).is_some_and(|last| now < *last + refresh) {
            return false;
        }
        self.resolved.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(file: &std::path::Path) -> Snapshot {
        let toml = format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[listener.route]]\ncluster = \"c\"\n\
             [[cluster]]\nname = \"c\"\nendpoints_file = \"{}\"\n",
            file.display()
        );
        crate::config::parse(&toml, "t", 1).expect("valid")
    }

    #[test]
    fn each_look_at_a_file_has_one_outcome() {
        let file = std::env::temp_dir().join(format!("ringway-discovery-{}.json", std::process::id()));
        std::fs::write(&file, r#"[{"address": "127.0.0.1:1001"}]"#).expect("write");
        let mut snap = snapshot(&file);
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

    /// Clusters that share a file or a name are each kept up to date, and a
    /// shorter dns_refresh holds from the next poll.
    #[test]
    fn shared_sources_refresh_every_cluster() {
        let file = std::env::temp_dir().join(format!("ringway-discovery-shared-{}.json", std::process::id()));
        std::fs::write(&file, r#"[{"address": "127.0.0.1:1001"}]"#).expect("write");
        let toml = format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[listener.route]]\ncluster = \"a\"\n\
             [[cluster]]\nname = \"a\"\nendpoints_file = \"{f}\"\n\
             [[cluster]]\nname = \"b\"\nendpoints_file = \"{f}\"\n\
             [[cluster]]\nname = \"c\"\ndns = \"localhost:9\"\ndns_refresh = \"1h\"\n\
             [[cluster]]\nname = \"d\"\ndns = \"localhost:9\"\ndns_refresh = \"1h\"\n",
            f = file.display()
        );
        let mut snap = crate::config::parse(&toml, "t", 1).expect("valid");
        let mut watch = Watch::default();
        let looked = |outcomes: Vec<(String, Refresh)>| {
            let mut names: Vec<String> = outcomes.into_iter().map(|(name, _)| name).collect();
            names.sort();
            names
        };
        assert_eq!(looked(watch.poll(&snap)), ["a", "b", "c", "d"], "first look at each");
        assert!(watch.poll(&snap).is_empty());
        std::fs::write(&file, r#"[{"address": "127.0.0.1:1002"}]"#).expect("rewrite");
        assert_eq!(looked(watch.poll(&snap)), ["a", "b"], "both see the change");
        for cluster in &mut snap.clusters[2..] {
            if let EndpointSource::Dns { refresh, .. } = &mut cluster.source {
                *refresh = Duration::ZERO;
            }
        }
        assert_eq!(
            looked(watch.poll(&snap)),
            ["c", "d"],
            "the shorter refresh holds at once"
        );
        let _ = std::fs::remove_file(file);
    }
}
