//! Certificate rotation: each listener's and cluster's TLS settings remember
//! what their files looked like when they were read (modification and
//! change time, size, inode), and when the files no longer look so, the
//! settings are built again from them. Short-lived certificates (a mesh issues them for hours)
//! then roll over without a reload. A rotation caught half-written fails,
//! keeps the settings in force, and is tried again when a file changes again.

use crate::config::Snapshot;
use crate::tls::{stamp, ClientTls, FileStamp, ServerTls};
use std::collections::HashMap;

/// TLS settings built again from changed files.
#[derive(Debug)]
pub enum Rotation {
    Listener(String, ServerTls),
    Cluster(String, ClientTls),
}

/// What one look found for one listener or cluster.
#[derive(Debug)]
pub struct Outcome {
    /// "listener NAME" or "cluster NAME", for the log.
    pub owner: String,
    pub result: Result<Rotation, String>,
}

/// Files that failed to make usable settings, by owner, as they looked
/// then: not tried again until they change.
#[derive(Default)]
pub struct CertWatch {
    failed: HashMap<String, Vec<FileStamp>>,
}

impl CertWatch {
    /// One poll: an outcome for each listener and cluster whose files
    /// changed since its settings were built (and since a failed attempt).
    pub fn poll(&mut self, snapshot: &Snapshot) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for l in &snapshot.listeners {
            if let Some(tls) = l.tls.as_ref().filter(|t| t.files_changed()) {
                let owner = format!("listener {}", l.name);
                let result = self.attempt(&owner, tls.paths(), || {
                    tls.reload().map(|t| Rotation::Listener(l.name.clone(), t))
                });
                outcomes.extend(result.map(|result| Outcome { owner, result }));
            }
        }
        for c in &snapshot.clusters {
            if let Some(tls) = c.tls.as_ref().filter(|t| t.files_changed()) {
                let owner = format!("cluster {}", c.name);
                let result = self.attempt(&owner, tls.paths(), || {
                    tls.reload().map(|t| Rotation::Cluster(c.name.clone(), t))
                });
                outcomes.extend(result.map(|result| Outcome { owner, result }));
            }
        }
        outcomes
    }

    /// Rebuild, unless these very files failed before.
    fn attempt(
        &mut self,
        owner: &str,
        paths: Vec<&str>,
        rebuild: impl FnOnce() -> Result<Rotation, String>,
    ) -> Option<Result<Rotation, String>> {
        let now: Vec<FileStamp> = paths.iter().map(stamp).collect();
        if self.failed.get(owner) == Some(&now) {
            return None;
        }
        let result = rebuild();
        match &result {
            Ok(_) => self.failed.remove(owner),
            Err(_) => self.failed.insert(owner.to_string(), now),
        };
        Some(result)
    }
}

/// `current` with the rotated settings in place, as the next generation.
/// A listener or cluster that meanwhile left, or now reads other files (a
/// reload raced the rotation), keeps what it has.
pub fn apply(current: &Snapshot, rotations: &[Rotation]) -> Snapshot {
    let mut next = current.clone();
    next.generation = current.generation + 1;
    for rotation in rotations {
        match rotation {
            Rotation::Listener(name, fresh) => {
                let target = next.listeners.iter_mut().find(|l| &l.name == name);
                if let Some(tls) = target.and_then(|l| l.tls.as_mut()) {
                    if tls.paths() == fresh.paths() {
                        *tls = fresh.clone();
                    }
                }
            }
            Rotation::Cluster(name, fresh) => {
                let target = next.clusters.iter_mut().find(|c| &c.name == name);
                if let Some(tls) = target.and_then(|c| c.tls.as_mut()) {
                    if tls.paths() == fresh.paths() {
                        *tls = fresh.clone();
                    }
                }
            }
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    /// A self-signed certificate and its key for `name`, written to `dir`
    /// as `{prefix}cert.pem` and `{prefix}key.pem`.
    fn write_pair(dir: &Path, prefix: &str, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join(format!("{prefix}cert.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{prefix}key.pem")), key.serialize_pem()).unwrap();
    }

    #[test]
    fn changed_files_rebuild_their_owners_and_half_rotations_fail() {
        let dir = std::env::temp_dir().join(format!("ringway-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_pair(&dir, "", "one.local");
        let toml = format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n\
             tls = {{ cert = {:?}, key = {:?} }}\n\
             [[listener.route]]\ncluster = \"c\"\n[[cluster]]\nname = \"c\"\nendpoints = []\n\
             tls = {{ ca = {:?} }}\n",
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("cert.pem"),
        );
        let snapshot = crate::config::parse(&toml, "t", 1).expect("valid");
        let mut watch = CertWatch::default();
        assert!(watch.poll(&snapshot).is_empty(), "nothing changed");

        // A new key alone (the certificate not yet written): no usable pair.
        write_pair(&dir, "next-", "two.local");
        std::fs::rename(dir.join("next-key.pem"), dir.join("key.pem")).unwrap();
        let half = watch.poll(&snapshot);
        let owners: Vec<&str> = half.iter().map(|o| o.owner.as_str()).collect();
        assert_eq!(owners, ["listener l"], "only the key changed: {half:?}");
        assert!(half[0].result.is_err(), "{half:?}");
        assert!(watch.poll(&snapshot).is_empty(), "not tried again as it is");

        // Then the certificate: both the listener and the cluster (whose CA
        // it is) are rebuilt, and applying them makes a new generation.
        std::fs::rename(dir.join("next-cert.pem"), dir.join("cert.pem")).unwrap();
        let whole = watch.poll(&snapshot);
        let owners: Vec<&str> = whole.iter().map(|o| o.owner.as_str()).collect();
        assert_eq!(owners, ["listener l", "cluster c"]);
        let rotations: Vec<Rotation> = whole.into_iter().map(|o| o.result.unwrap()).collect();
        let next = apply(&snapshot, &rotations);
        assert_eq!(next.generation, 2);
        let (was, now) = (&snapshot.listeners[0].tls, &next.listeners[0].tls);
        let same = |a: &Option<ServerTls>, b: &Option<ServerTls>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a.config, &b.config),
            _ => false,
        };
        assert!(!same(was, now), "the listener has the new certificate");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_rotation_is_counted_once_it_is_in_force() {
        use crate::discovery::{spawn_discovery, Publish};
        use std::sync::atomic::AtomicBool;
        use std::sync::{mpsc, Mutex};
        use std::time::Duration;

        let dir = std::env::temp_dir().join(format!("ringway-certs-counted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_pair(&dir, "", "one.local");
        let toml = format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n\
             tls = {{ cert = {:?}, key = {:?} }}\n\
             [[listener.route]]\ncluster = \"c\"\n[[cluster]]\nname = \"c\"\nendpoints = []\n",
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        let in_force = Arc::new(Mutex::new(Arc::new(
            crate::config::parse(&toml, "t", 1).expect("valid"),
        )));
        // What the counter saw in force when it counted an ok rotation.
        let (counted, seen) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let publish = Publish {
            current: {
                let in_force = in_force.clone();
                move || in_force.lock().unwrap().clone()
            },
            set_endpoints: |_: &str, _: &crate::config::EndpointSource, _| Ok(0),
            count: |_: &str, _: &'static str| {},
            rotate: {
                let in_force = in_force.clone();
                move |rotations: &[Rotation]| {
                    let mut current = in_force.lock().unwrap();
                    *current = Arc::new(apply(&current, rotations));
                    current.generation
                }
            },
            count_rotation: {
                let in_force = in_force.clone();
                move |ok: bool| {
                    let generation = in_force.lock().unwrap().generation;
                    let _ = counted.send((ok, generation));
                }
            },
        };
        let thread = spawn_discovery(publish, stop.clone()).unwrap();

        write_pair(&dir, "next-", "two.local");
        std::fs::rename(dir.join("next-key.pem"), dir.join("key.pem")).unwrap();
        std::fs::rename(dir.join("next-cert.pem"), dir.join("cert.pem")).unwrap();
        // A poll may catch the pair half-renamed (counted as failed); the
        // ok count that follows must find the new generation in force.
        let ok = loop {
            match seen
                .recv_timeout(Duration::from_secs(10))
                .expect("the rotation is counted")
            {
                (true, generation) => break generation,
                (false, _) => continue,
            }
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        thread.join().unwrap();
        assert_eq!(ok, 2, "counted while generation {ok} was in force");
        let _ = std::fs::remove_dir_all(dir);
    }
}
