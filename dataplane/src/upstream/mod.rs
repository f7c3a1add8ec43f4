//! Upstream connection pools, one per backend identity, surviving table updates.
//!
//! `BackendPool::attempt` sends one attempt to one endpoint: it leases a stream slot under the
//! backend's reuse mode (opening a connection if allowed, waiting if not), sends, and classifies
//! any failure by what the caller may do about it. Retrying is the proxy's job.

mod budget;
mod endpoint;
mod error;
mod h1;
mod h2;
mod io;
mod select;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::Response;

pub(crate) use budget::RetryBudget;
pub(crate) use endpoint::Want;
pub use error::{AttemptError, Failure, SafetyClass};
pub use select::Phase;

use crate::metrics::{BackendMetrics, ProxyMetrics};
use crate::policy::BackendPolicy;
use crate::proxy::body::ProxyBody;
use crate::proxy::replay::AttemptBody;
use crate::table::BackendKey;
use endpoint::{Endpoint, Lease};

/// How often pools close idle and expired connections.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Times one attempt may move to another connection when nothing was sent on the first.
const MAX_REPICKS: usize = 4;

pub struct BackendPool {
    key: BackendKey,
    tls: Option<Arc<crate::table::UpstreamTls>>,
    policy: ArcSwap<BackendPolicy>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    unavailable: ArcSwapOption<String>,
    next: AtomicUsize,
    pending: AtomicUsize,
    pub(crate) budget: RetryBudget,
    pub(crate) metrics: BackendMetrics,
}

impl std::fmt::Debug for BackendPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendPool")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for BackendPool {
    fn drop(&mut self) {
        for endpoint in self.endpoints.load().iter() {
            endpoint.retire();
        }
    }
}

/// Closes idle and expired connections of every live pool, once a second: one task for all
/// pools (a task and a timer per pool cost 10,000 wake-ups a second with 10,000 backends).
/// Pools that drain after leaving the table are swept until they are dropped.
#[derive(Debug, Default)]
pub(crate) struct Sweeper {
    pools: std::sync::Mutex<Vec<Weak<BackendPool>>>,
}

impl Sweeper {
    /// Must be called inside a Tokio runtime; the task ends when the sweeper is dropped.
    pub(crate) fn start() -> Arc<Self> {
        let sweeper = Arc::new(Self::default());
        tokio::spawn(sweep(Arc::downgrade(&sweeper)));
        sweeper
    }

    fn add(&self, pool: Weak<BackendPool>) {
        self.lock().push(pool);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<BackendPool>>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sweeps every live pool once and forgets the dropped ones.
    fn sweep_all(&self) {
        let live: Vec<Arc<BackendPool>> = {
            let mut pools = self.lock();
            pools.retain(|p| p.strong_count() > 0);
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        for pool in live {
            let policy = pool.policy.load();
            for endpoint in pool.endpoints.load().iter() {
                endpoint.sweep(&policy);
            }
        }
    }
}

async fn sweep(sweeper: Weak<Sweeper>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(sweeper) = sweeper.upgrade() else {
            return;
        };
        sweeper.sweep_all();
    }
}

impl BackendPool {
    pub(crate) fn new(
        key: BackendKey,
        policy: Arc<BackendPolicy>,
        tls: Option<crate::table::UpstreamTls>,
        metrics: &ProxyMetrics,
        sweeper: &Sweeper,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            metrics: metrics.backend(&key.to_string()),
            key,
            tls: tls.map(Arc::new),
            policy: ArcSwap::new(policy),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            unavailable: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            budget: RetryBudget::new(),
        });
        sweeper.add(Arc::downgrade(&pool));
        pool
    }

    pub fn key(&self) -> &BackendKey {
        &self.key
    }

    pub(crate) fn policy(&self) -> Arc<BackendPolicy> {
        self.policy.load_full()
    }

    /// Applies a new endpoint set and policy in place. Endpoints that stay keep their
    /// connections; endpoints that leave drain theirs.
    pub(crate) fn update(
        &self,
        addrs: &[SocketAddr],
        unavailable: Option<&str>,
        policy: &Arc<BackendPolicy>,
    ) {
        // Tables built from unchanged objects share the policy itself: no need to compare.
        let same = |current: &Arc<BackendPolicy>| Arc::ptr_eq(current, policy) || current == policy;
        if !same(&self.policy.load()) {
            self.policy.store(policy.clone());
        }
        let reason = self.unavailable.load();
        if reason.as_deref().map(|r| r.as_str()) != unavailable {
            self.unavailable
                .store(unavailable.map(|u| Arc::new(u.to_string())));
        }
        let current = self.endpoints.load();
        if current.len() == addrs.len() && current.iter().zip(addrs).all(|(e, a)| e.addr == *a) {
            // The common case of a table update: this backend did not change.
            return;
        }
        let next: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|addr| {
                current
                    .iter()
                    .find(|e| e.addr == *addr)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Endpoint::new(*addr, self.key.protocol, self.tls.clone()))
                    })
            })
            .collect();
        for gone in current.iter().filter(|e| !addrs.contains(&e.addr)) {
            gone.retire();
        }
        self.endpoints.store(Arc::new(next));
    }

    /// Why there are no endpoints, if the controller said.
    pub fn unavailable_reason(&self) -> Option<Arc<String>> {
        self.unavailable.load_full()
    }

    /// Round-robin, skipping endpoints in `avoid` while others remain.
    pub(crate) fn pick_endpoint(&self, avoid: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let endpoints = self.endpoints.load();
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &endpoints[(start + i) % n])
            .find(|e| !avoid.contains(&e.addr))
            .or_else(|| endpoints.get(start % n))
            .cloned()
    }

    /// The pool's state as JSON, for `/debug/pools`.
    pub fn debug(&self) -> serde_json::Value {
        let endpoints: Vec<serde_json::Value> =
            self.endpoints.load().iter().map(|e| e.debug()).collect();
        serde_json::json!({
            "service": self.key.to_string(),
            "protocol": self.key.protocol,
            "pending": self.pending.load(Ordering::Acquire),
            "endpoints": endpoints,
        })
    }

    /// Open connections across endpoints (all states but closed).
    pub fn connection_count(&self) -> usize {
        self.endpoints
            .load()
            .iter()
            .map(|e| e.connection_count())
            .sum()
    }

    /// Sends one attempt to `endpoint`.
    pub(crate) async fn attempt(
        &self,
        endpoint: &Arc<Endpoint>,
        want: &Want<'_>,
        policy: &BackendPolicy,
        head: &http::request::Parts,
        body: AttemptBody,
    ) -> Result<Response<ProxyBody>, AttemptError> {
        let result = self.attempt_inner(endpoint, want, policy, head, body).await;
        match &result {
            Ok(_) => self.metrics.attempt_ok(),
            Err(e) => self.metrics.attempt_failed(e.failure),
        }
        result
    }

    async fn attempt_inner(
        &self,
        endpoint: &Arc<Endpoint>,
        want: &Want<'_>,
        policy: &BackendPolicy,
        head: &http::request::Parts,
        mut body: AttemptBody,
    ) -> Result<Response<ProxyBody>, AttemptError> {
        let mut last = None;
        for _ in 0..MAX_REPICKS {
            let lease = endpoint
                .lease(want, policy, &self.metrics, &self.pending)
                .await?;
            let outcome = match lease {
                Lease::H2(slot) => match h2::send(slot, head, body).await {
                    Ok(resp) => return Ok(resp),
                    Err(h2::SendError::Failed(e)) => return Err(e),
                    Err(h2::SendError::NotStarted(ns)) => (
                        ns.body,
                        AttemptError::new(ns.failure, Some(endpoint.addr), "connection unusable"),
                    ),
                },
                lease => {
                    let conn = match lease {
                        Lease::H1(conn) => conn,
                        Lease::DialH1 { private } => {
                            let owner = private.then_some(want.session);
                            // Boxed: dialing is the cold path, and its state (connect,
                            // TLS, handshake) would otherwise enlarge every request's future.
                            Box::pin(h1::dial(
                                endpoint,
                                owner,
                                want.session.id(),
                                policy.timeouts.connect,
                                &self.metrics,
                            ))
                            .await?
                        }
                        Lease::H2(_) => unreachable!("handled above"),
                    };
                    match h1::send(conn, head, body, policy.pool.max_requests_per_connection).await
                    {
                        Ok(resp) => return Ok(resp),
                        Err(h1::SendError::Failed(e)) => return Err(e),
                        Err(h1::SendError::NotStarted(b, e)) => (b, e),
                    }
                }
            };
            let (returned, error) = outcome;
            // Nothing was sent. A connection that went away is not the endpoint's fault: take
            // another; a connection that never came up is the attempt's failure.
            if !matches!(error.failure, Failure::NotSent | Failure::GoAway) || endpoint.is_retired()
            {
                return Err(error);
            }
            body = returned;
            last = Some(error);
        }
        Err(last.unwrap_or_else(|| {
            AttemptError::new(
                Failure::NotSent,
                Some(endpoint.addr),
                "no usable connection",
            )
        }))
    }
}
