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

/// What was last seen of each source.
#[derive(Default)]
struct Watch {
    files: HashMap<PathBuf, crate::tls::FileStamp>,
    dns_due: HashMap<String, Instant>,
}

impl Watch {
    /// One poll: the outcome for each cluster whose source was looked at.
    /// Files whose stamp did not change and names not yet due are left out.
    fn poll(&mut self, snapshot: &Snapshot) -> Vec<(String, Refresh)> {
        let mut outcomes = Vec::new();
        for cluster in &snapshot.clusters {
            let fresh = match &cluster.source {
                EndpointSource::Static => None,
                EndpointSource::File(path) => self.read_if_changed(path),
                EndpointSource::Dns { name, refresh } => self.resolve_if_due(name, *refresh),
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

    /// The file's endpoints, or `None` when its stamp is the one last seen.
    fn read_if_changed(&mut self, path: &PathBuf) -> Option<Result<Vec<Endpoint>, String>> {
        // With the inode: a file replaced by rename within the clock's
        // granularity, at the same size, is still seen.
        let stamp = crate::tls::stamp(path);
        let last = self.files.insert(path.clone(), stamp);
        if last == Some(stamp) {
            return None;
        }
        Some(sources::read_endpoints_file(path))
    }

    /// The name's endpoints, or `None` when it is not due yet.
    fn resolve_if_due(&mut self, name: &str, refresh: Duration) -> Option<Result<Vec<Endpoint>, String>> {
        let now = Instant::now();
        if self.dns_due.get(name).is_some_and(|due| now < *due) {
            return None;
        }
        self.dns_due.insert(name.to_string(), now + refresh);
        Some(sources::resolve_dns(name))
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
}
