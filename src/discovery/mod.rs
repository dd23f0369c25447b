//! Service discovery on a control thread: clusters whose endpoints come from
//! an endpoints file (re-read when its modification time or size changes) or
//! a DNS name (re-resolved every `dns_refresh`) get a new generation published
//! whenever the list really changed. Workers never read files or resolve names;
//! endpoints that disappear drain like any removed endpoint (in-flight
//! requests finish, idle connections close).

use crate::config::{sources, Endpoint, EndpointSource, Snapshot};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How often sources are looked at (files are only read when they changed).
const POLL: Duration = Duration::from_millis(250);

/// Start the discovery thread. `current` returns the config in force;
/// `set_endpoints(cluster, endpoints)` publishes a new generation.
pub fn spawn_discovery(
    current: impl Fn() -> Arc<Snapshot> + Send + 'static,
    set_endpoints: impl Fn(&str, Vec<Endpoint>) -> Result<u64, String> + Send + 'static,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ringway-discovery".into())
        .spawn(move || {
            let mut state = Watch::default();
            while !stop.load(Ordering::Relaxed) {
                for (cluster, endpoints) in state.changes(&current()) {
                    match set_endpoints(&cluster, endpoints) {
                        Ok(generation) => {
                            eprintln!("ringway: discovery: cluster {cluster} updated (generation {generation})")
                        }
                        Err(e) => eprintln!("ringway: discovery: cluster {cluster} not updated: {e}"),
                    }
                }
                std::thread::sleep(POLL);
            }
        })
}

/// What was last seen of each source.
#[derive(Default)]
struct Watch {
    files: HashMap<PathBuf, Option<(SystemTime, u64)>>,
    dns_due: HashMap<String, Instant>,
}

impl Watch {
    /// Clusters whose source now yields a list different from the snapshot's.
    fn changes(&mut self, snapshot: &Snapshot) -> Vec<(String, Vec<Endpoint>)> {
        let mut changed = Vec::new();
        for cluster in &snapshot.clusters {
            let fresh = match &cluster.source {
                EndpointSource::Static => None,
                EndpointSource::File(path) => self.read_if_changed(path, &cluster.name),
                EndpointSource::Dns { name, refresh } => self.resolve_if_due(name, *refresh, &cluster.name),
            };
            if let Some(endpoints) = fresh.filter(|e| *e != cluster.endpoints) {
                changed.push((cluster.name.clone(), endpoints));
            }
        }
        changed
    }

    fn read_if_changed(&mut self, path: &PathBuf, cluster: &str) -> Option<Vec<Endpoint>> {
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        let last = self.files.insert(path.clone(), stamp);
        if last == Some(stamp) {
            return None;
        }
        match sources::read_endpoints_file(path) {
            Ok(endpoints) => Some(endpoints),
            Err(e) => {
                eprintln!("ringway: discovery: cluster {cluster}: {e}; keeping its endpoints");
                None
            }
        }
    }

    fn resolve_if_due(&mut self, name: &str, refresh: Duration, cluster: &str) -> Option<Vec<Endpoint>> {
        let now = Instant::now();
        if self.dns_due.get(name).is_some_and(|due| now < *due) {
            return None;
        }
        self.dns_due.insert(name.to_string(), now + refresh);
        match sources::resolve_dns(name) {
            Ok(endpoints) => Some(endpoints),
            Err(e) => {
                eprintln!("ringway: discovery: cluster {cluster}: {e}; keeping its endpoints");
                None
            }
        }
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
    fn file_changes_are_noticed_once() {
        let file = std::env::temp_dir().join(format!("ringway-discovery-{}.json", std::process::id()));
        std::fs::write(&file, r#"[{"address": "127.0.0.1:1001"}]"#).expect("write");
        let mut snap = snapshot(&file);
        assert_eq!(snap.clusters[0].endpoints.len(), 1, "read at compile time");
        let mut watch = Watch::default();
        assert!(watch.changes(&snap).is_empty(), "same list: nothing to publish");
        std::fs::write(
            &file,
            r#"[{"address": "127.0.0.1:1001"}, {"address": "127.0.0.1:1002", "weight": 3}]"#,
        )
        .expect("write");
        let changes = watch.changes(&snap);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1.len(), 2);
        snap.clusters[0].endpoints = changes[0].1.clone();
        assert!(
            watch.changes(&snap).is_empty(),
            "unchanged file is not re-read into a change"
        );
        std::fs::write(&file, "[ not json").expect("write");
        assert!(watch.changes(&snap).is_empty(), "a broken file keeps the endpoints");
        let _ = std::fs::remove_file(file);
    }
}
