//! Where a try's upstream connection comes from: the endpoint's pool, or a
//! new connection within the cluster's caps. Requests and their mirrored
//! copies check out connections the same way, so shadow traffic reuses
//! connections and counts against the same caps and metrics.

use super::exchange::Failure;
use super::io::Stream;
use crate::error::{ErrorKind, ProxyError};
use crate::metrics::{EndpointKey, Shard};
use crate::resilience::{Leases, LimitKind, Permit};
use crate::tls::{Carries, ClientTls};
use crate::upstream::{self, ConnToken, EndpointPool};
use crate::worker::Worker;
use std::time::{Duration, Instant};

/// One endpoint of a cluster, as a source of connections.
pub(super) struct Dial<'a> {
    pub pool: &'a EndpointPool,
    pub connect_timeout: Duration,
    /// TLS to the endpoint, when the cluster has it.
    pub tls: Option<&'a ClientTls>,
    pub endpoint_key: Option<EndpointKey>,
    /// The cluster's process-wide caps, when it has a circuit breaker.
    pub leases: Option<&'a Leases>,
    /// A request (not a mirrored copy) may open the worker's first
    /// connection to the endpoint past `max_connections`.
    pub first_past_cap: bool,
}

impl Dial<'_> {
    /// Count something against this endpoint in the worker's shard.
    fn count(&self, worker: &Worker, f: impl FnOnce(&mut Shard, EndpointKey)) {
        if let Some(key) = self.endpoint_key {
            f(&mut worker.metrics.borrow_mut(), key);
        }
    }

    fn lease(&self, kind: LimitKind) -> Result<Option<Permit>, Failure> {
        match self.leases {
            None => Ok(None),
            Some(leases) => leases
                .try_acquire(kind)
                .map(Some)
                .ok_or_else(|| ErrorKind::Overflow.into()),
        }
    }

    /// The endpoint refused the TLS session of a connection counted as
    /// connected (its alert came after our side of the handshake was done).
    pub fn handshake_refused(&self, worker: &Worker) {
        self.count(worker, |m, key| m.upstream_handshake_refused(key));
    }

    /// A pooled connection, or a new one within the cluster's caps; and
    /// whether it was pooled (a pooled one may have gone stale).
    pub async fn checkout(&self, worker: &Worker, now: Instant) -> Result<(Stream, ConnToken, bool), Failure> {
        let pooled = self.pool.take(now);
        self.count(worker, |m, key| m.pool(key, pooled.is_some()));
        if let Some((stream, token)) = pooled {
            return Ok((stream, token, true));
        }
        let connection = match self.lease(LimitKind::Connections) {
            Ok(permit) => permit,
            // As Envoy does: an endpoint this worker holds no connection to
            // (open or being opened) gets one past the cap, so that idle
            // pooled connections to other endpoints, or on other workers,
            // cannot strand its requests.
            Err(_) if self.first_past_cap && self.pool.open_connections() == 0 => None,
            Err(refused) => return Err(refused),
        };
        let pending = self.lease(LimitKind::Pending)?;
        // Counted as open while it connects: another request meanwhile
        // finds this endpoint's first connection under way.
        let token = self.pool.token(connection);
        let connected = upstream::connect(self.pool.addr, self.connect_timeout, self.tls, Carries::Http).await;
        drop(pending);
        // A connect we could not even begin (out of descriptors) tells
        // nothing of the endpoint.
        let attempted = connected.as_ref().err().is_none_or(ProxyError::reached_endpoint);
        if attempted {
            self.count(worker, |m, key| m.upstream_connect(key, connected.is_ok()));
        }
        let stream = connected?;
        Ok((stream, token, false))
    }
}
