//! The admin API answered from the running server. Every change goes through
//! `control::apply`, so an endpoint update obeys exactly the rules of a full
//! config push: the cluster's endpoints are replaced in the TOML in force and
//! the result is parsed, validated, compiled and published as one generation.

use super::api::{AdminBackend, ConfigRefused, EndpointsRefused};
use super::control::{apply, apply_edit, EditError, Rejected};
use crate::config::endpoint_list::JsonEndpoint;
use crate::config::ConfigErrors;
use crate::resilience::BreakerState;
use crate::worker::{EndpointView, Server};
use serde_json::{json, Value};
use std::sync::Arc;

pub struct ServerBackend {
    server: Arc<Server>,
}

impl ServerBackend {
    pub fn new(server: Arc<Server>) -> Self {
        ServerBackend { server }
    }
}

impl AdminBackend for ServerBackend {
    fn ready(&self) -> bool {
        self.server.shared().ready()
    }

    fn config(&self) -> (u64, Arc<str>) {
        let snapshot = self.server.shared().load();
        (snapshot.generation, snapshot.source.clone())
    }

    fn put_config(&self, toml: &str) -> Result<u64, ConfigRefused> {
        apply(&self.server, toml, "admin:/config").map_err(|e| match e {
            Rejected::Invalid(errors) => ConfigRefused::Invalid(errors.to_string()),
            Rejected::Draining => ConfigRefused::Draining,
        })
    }

    fn count_unreadable_config(&self) {
        self.server.shared().count_reload(false);
    }

    fn put_endpoints(&self, cluster: &str, endpoints: Vec<JsonEndpoint>) -> Result<u64, EndpointsRefused> {
        let origin = format!("admin:/clusters/{cluster}/endpoints");
        apply_edit(&self.server, &origin, |source| {
            with_endpoints(source, cluster, &endpoints)
        })
        .map_err(|e| match e {
            EditError::Refused(refused) => refused,
            EditError::Draining => EndpointsRefused::Draining,
            EditError::Invalid { source, errors } => {
                EndpointsRefused::Invalid(about_endpoints(&source, cluster, &errors))
            }
        })
    }

    fn clusters(&self) -> Value {
        let snapshot = self.server.shared().load();
        let health = self.server.shared().health.all();
        let views = self.server.endpoint_views();
        let clusters: Vec<Value> = snapshot
            .clusters
            .iter()
            .map(|c| {
                let endpoints: Vec<Value> = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let healthy = health
                            .iter()
                            .find(|(n, a, _)| *n == c.name && *a == e.address)
                            .map(|h| h.2);
                        let seen: Vec<&EndpointView> = views
                            .iter()
                            .filter(|v| v.cluster == c.name && v.address == e.address)
                            .collect();
                        json!({
                            "address": e.address.to_string(),
                            "weight": e.weight,
                            "zone": e.zone,
                            "priority": e.priority,
                            // null: not actively checked.
                            "healthy": healthy,
                            // Each worker keeps its own: how many eject it,
                            // the worst breaker state (null: no breaker), the
                            // mean latency estimate, requests in flight.
                            "ejected_on_workers": seen.iter().filter(|v| v.ejected).count(),
                            "breaker": seen.iter().filter_map(|v| v.breaker).max_by_key(|b| breaker_rank(*b)).map(BreakerState::as_str),
                            "ewma_ms": mean_ewma_ms(&seen),
                            "active": seen.iter().map(|v| u64::from(v.active)).sum::<u64>(),
                        })
                    })
                    .collect();
                json!({
                    "name": c.name,
                    "lb": c.lb.name(),
                    "health_checked": c.health_check.is_some(),
                    "endpoints": endpoints,
                })
            })
            .collect();
        json!({ "generation": snapshot.generation, "clusters": clusters })
    }

    fn metrics(&self) -> String {
        self.server.metrics()
    }

    fn drain(&self) {
        self.server.drain();
    }
}

/// Worse is higher: open, then half-open, then closed.
fn breaker_rank(state: BreakerState) -> u8 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

/// The latency estimates of the workers that have measured one, averaged,
/// to the microsecond; null when none has.
fn mean_ewma_ms(seen: &[&EndpointView]) -> Option<f64> {
    let measured: Vec<f64> = seen.iter().filter_map(|v| v.ewma_ms).collect();
    if measured.is_empty() {
        return None;
    }
    let mean = measured.iter().sum::<f64>() / measured.len() as f64;
    Some((mean * 1000.0).round() / 1000.0)
}

/// The TOML `source` with the endpoints of `cluster` replaced. The text is
/// re-serialized from its parsed form, so comments and layout are not kept.
fn with_endpoints(source: &str, cluster: &str, endpoints: &[JsonEndpoint]) -> Result<String, EndpointsRefused> {
    let whole = |message: String| EndpointsRefused::Invalid(vec![(None, message)]);
    let mut doc: toml::Table =
        toml::from_str(source).map_err(|e| whole(format!("the config in force does not parse: {e}")))?;
    let clusters = doc.get_mut("cluster").and_then(|c| c.as_array_mut());
    let target = clusters
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_table_mut())
        .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(cluster))
        .ok_or(EndpointsRefused::UnknownCluster)?;
    if let Some(source) = ["dns", "endpoints_file"].into_iter().find(|k| target.contains_key(*k)) {
        return Err(EndpointsRefused::Conflict(format!(
            "cluster {cluster:?} takes its endpoints from `{source}`; only a list of endpoints can be replaced"
        )));
    }
    let list = endpoints
        .iter()
        .map(|e| {
            let mut t = toml::Table::new();
            t.insert("address".into(), e.address.clone().into());
            t.insert("weight".into(), i64::from(e.weight).into());
            if let Some(zone) = &e.zone {
                t.insert("zone".into(), zone.clone().into());
            }
            t.insert("priority".into(), i64::from(e.priority).into());
            toml::Value::Table(t)
        })
        .collect();
    target.insert("endpoints".into(), toml::Value::Array(list));
    toml::to_string(&doc).map_err(|e| whole(format!("cannot write the updated config: {e}")))
}

/// The errors of the config `with_endpoints` wrote, each about the body's
/// endpoint whose address it points at, if it does: the user sent JSON, and
/// positions in a TOML text they never saw would tell them nothing.
fn about_endpoints(source: &str, cluster: &str, errors: &ConfigErrors) -> Vec<(Option<usize>, String)> {
    let addresses = crate::config::endpoint_positions(source, cluster);
    errors
        .errors
        .iter()
        .map(|e| {
            let index = addresses.iter().position(|&at| at == (e.line, e.column));
            (index, e.message.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_one_clusters_endpoints_only() {
        let source = "[[cluster]]\nname = \"a\"\nendpoints = [ { address = \"127.0.0.1:1\" } ]\n\
                      [[cluster]]\nname = \"b\"\nendpoints = [ { address = \"127.0.0.1:2\" } ]\n";
        let update = vec![JsonEndpoint {
            address: "127.0.0.1:9".into(),
            weight: 3,
            zone: Some("z".into()),
            priority: 1,
        }];
        let out = with_endpoints(source, "b", &update).expect("rewritten");
        let snapshot = crate::config::parse(&out, "t", 1).expect("still valid");
        assert_eq!(
            snapshot.clusters[0].endpoints[0].address.port(),
            1,
            "other cluster untouched"
        );
        let b = &snapshot.clusters[1].endpoints[0];
        assert_eq!(
            (b.address.port(), b.weight, b.zone.as_deref(), b.priority),
            (9, 3, Some("z"), 1)
        );
        assert_eq!(
            with_endpoints(source, "c", &update).expect_err("unknown"),
            EndpointsRefused::UnknownCluster
        );
    }

    #[test]
    fn errors_point_at_the_endpoint_they_are_about() {
        let source = "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[listener.route]]\ncluster = \"b\"\n\
                      [[cluster]]\nname = \"a\"\nendpoints = [ { address = \"127.0.0.1:1\" } ]\n\
                      [[cluster]]\nname = \"b\"\nendpoints = [ { address = \"127.0.0.1:2\" } ]\n";
        let update: Vec<JsonEndpoint> = ["127.0.0.1:1", "127.0.0.1:3", "127.0.0.1:1", "127.0.0.1"]
            .iter()
            .map(|a| JsonEndpoint {
                address: a.to_string(),
                weight: 1,
                zone: None,
                priority: 0,
            })
            .collect();
        let written = with_endpoints(source, "b", &update).expect("written");
        let errors = crate::config::parse(&written, "t", 1).expect_err("a duplicate and a bad name");
        let about = about_endpoints(&written, "b", &errors);
        assert_eq!(about.len(), 2, "{about:?}");
        assert_eq!(about[0].0, Some(2), "{about:?}");
        assert!(about[0].1.contains("listed twice"), "{about:?}");
        assert_eq!(about[1].0, Some(3), "{about:?}");
        assert!(about[1].1.contains("is not HOST:PORT"), "{about:?}");
    }

    #[test]
    fn endpoints_from_dns_or_a_file_are_not_replaced() {
        let update = vec![JsonEndpoint {
            address: "127.0.0.1:9".into(),
            weight: 1,
            zone: None,
            priority: 0,
        }];
        for from in ["dns = \"localhost:80\"", "endpoints_file = \"/x.json\""] {
            let source = format!("[[cluster]]\nname = \"a\"\n{from}\n");
            match with_endpoints(&source, "a", &update) {
                Err(EndpointsRefused::Conflict(why)) => assert!(why.contains("takes its endpoints from"), "{why}"),
                other => panic!("{from}: {other:?}"),
            }
        }
    }
}
