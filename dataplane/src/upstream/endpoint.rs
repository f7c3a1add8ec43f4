//! One endpoint's connections and the rules for getting a stream slot on one of them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::error::{AttemptError, Failure};
use super::h1::H1Conn;
use super::h2::{H2Conn, Slot};
use super::select::{self, Candidate, Phase, Pick};
use crate::metrics::{BackendMetrics, PickKind};
use crate::policy::{BackendPolicy, Reuse};
use crate::session::Session;
use crate::table::{Protocol, UpstreamTls};

pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) protocol: Protocol,
    pub(crate) tls: Option<Arc<UpstreamTls>>,
    /// HTTP/2 connections in every phase but closed.
    h2: Mutex<Vec<Arc<H2Conn>>>,
    /// Idle HTTP/1.1 connections. Boxed: a connection moves from here into a request, its
    /// response body and back, and a pointer is cheaper to move than the connection.
    #[allow(clippy::vec_box)]
    h1_idle: Mutex<Vec<Box<H1Conn>>>,
    /// Open HTTP/1.1 connections (idle or busy), for the per-endpoint limit.
    open: AtomicUsize,
    /// Woken when a slot frees, a connection changes phase, or one closes.
    wake: Arc<Notify>,
    /// The last HTTP/2 connection that failed to come up, and when.
    failures: Arc<Mutex<Option<(Instant, Failure)>>>,
    /// Removed from its backend: no new connections (set under the connection-list locks).
    retired: AtomicBool,
}

/// A place to send one request.
pub(crate) enum Lease {
    H2(Slot),
    H1(Box<H1Conn>),
    /// Open a new HTTP/1.1 connection (already counted in `open`).
    DialH1 {
        private: bool,
    },
}

/// One request counted in a pool's `pending` (uncounted on drop).
struct Pending<'a>(&'a AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the request brings to connection selection.
pub(crate) struct Want<'a> {
    pub(crate) session: &'a Arc<Session>,
    pub(crate) first: bool,
    pub(crate) race_is_retried: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr, protocol: Protocol, tls: Option<Arc<UpstreamTls>>) -> Self {
        Self {
            addr,
            protocol,
            tls,
            h2: Mutex::new(Vec::new()),
            h1_idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            wake: Arc::new(Notify::new()),
            failures: Arc::new(Mutex::new(None)),
            retired: AtomicBool::new(false),
        }
    }

    fn pick_kind(candidate: &Candidate) -> PickKind {
        if candidate.private_to.is_some() {
            PickKind::Private
        } else if matches!(candidate.phase, Phase::Connecting | Phase::Handshaking) {
            PickKind::StillConnecting
        } else if candidate.proven {
            PickKind::Proven
        } else {
            PickKind::Shared
        }
    }

    /// Finds or creates a stream slot for a request, waiting (bounded by the policy) when the
    /// connection limit is reached or a dial that it may use is in flight.
    pub(crate) async fn lease(
        self: &Arc<Self>,
        want: &Want<'_>,
        policy: &BackendPolicy,
        metrics: &BackendMetrics,
        pending: &AtomicUsize,
    ) -> Result<Lease, AttemptError> {
        // Fast path: a free slot (or a dial to start) right away, with no waiter registration.
        if !self.retired.load(Ordering::Acquire) {
            if let Some(lease) = self.try_lease(want, policy, metrics) {
                return Ok(lease);
            }
        }
        Box::pin(self.lease_slow(want, policy, metrics, pending)).await
    }

    /// Waits for a slot: registered on the endpoint's wake-ups before every re-check, so a
    /// release between the check and the wait is never missed.
    async fn lease_slow(
        self: &Arc<Self>,
        want: &Want<'_>,
        policy: &BackendPolicy,
        metrics: &BackendMetrics,
        pending: &AtomicUsize,
    ) -> Result<Lease, AttemptError> {
        let started = Instant::now();
        let deadline = started + policy.pool.pending_timeout;
        // Counted in `pending` while waiting; the guard uncounts it however the wait ends,
        // the attempt being dropped included.
        let mut waiting: Option<Pending<'_>> = None;
        loop {
            if self.retired.load(Ordering::Acquire) {
                break Err(AttemptError::new(
                    Failure::NotSent,
                    Some(self.addr),
                    "endpoint removed",
                ));
            }
            // A connection this request was waiting for failed to come up: the endpoint is not
            // answering, and the request has not been sent. Fail so it can go elsewhere.
            if waiting.is_some() {
                if let Some((at, failure)) = *lock(&self.failures) {
                    if at >= started {
                        break Err(AttemptError::new(
                            failure,
                            Some(self.addr),
                            "connection failed to come up",
                        ));
                    }
                }
            }
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_lease(want, policy, metrics) {
                Some(lease) => break Ok(lease),
                None => {
                    if waiting.is_none() {
                        let counted = Pending(pending);
                        if pending.fetch_add(1, Ordering::AcqRel)
                            >= policy.pool.max_pending_requests as usize
                        {
                            return Err(AttemptError::new(
                                Failure::PoolExhausted,
                                Some(self.addr),
                                "too many pending requests",
                            ));
                        }
                        waiting = Some(counted);
                    }
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        break Err(AttemptError::new(
                            Failure::PoolExhausted,
                            Some(self.addr),
                            "timed out waiting for a connection",
                        ));
                    }
                }
            }
        }
    }

    fn can_dial(&self, open: usize, policy: &BackendPolicy) -> bool {
        policy
            .pool
            .max_connections_per_endpoint
            .is_none_or(|max| open < max as usize)
    }

    fn request(want: &Want<'_>, mode: Reuse) -> select::Request {
        select::Request {
            mode,
            first: want.first,
            session: want.session.id(),
            race_is_retried: want.race_is_retried,
        }
    }

    fn try_lease(
        self: &Arc<Self>,
        want: &Want<'_>,
        policy: &BackendPolicy,
        metrics: &BackendMetrics,
    ) -> Option<Lease> {
        match self.protocol {
            Protocol::H2c | Protocol::H2 => self.try_lease_h2(want, policy, metrics).map(Lease::H2),
            Protocol::Http1 | Protocol::Https => self.try_lease_h1(want, policy, metrics),
        }
    }

    fn try_lease_h2(
        self: &Arc<Self>,
        want: &Want<'_>,
        policy: &BackendPolicy,
        metrics: &BackendMetrics,
    ) -> Option<Slot> {
        let cap = policy.pool.max_streams_per_connection;
        let mut conns = lock(&self.h2);
        if self.retired.load(Ordering::Acquire) {
            return None;
        }
        conns.retain(|c| c.phase() != Phase::Closed);
        let candidates: Vec<Candidate> = conns
            .iter()
            .map(|c| Candidate {
                phase: c.phase(),
                proven: c.proven(),
                private_to: c.owner.as_ref().map(|(id, _)| *id),
                dialed_for: c.dialed_for,
                free_slot: c.has_free_slot(cap),
            })
            .collect();
        let req = Self::request(want, policy.pool.reuse);
        match select::pick(req, &candidates) {
            Pick::Use(i) => {
                let slot = conns[i].try_reserve(cap)?;
                metrics.pick(Self::pick_kind(&candidates[i]));
                self.after_reserve(&conns[i], policy);
                Some(slot)
            }
            Pick::Dial { private } => {
                // One dial in flight per endpoint unless more are needed: a request waits for a
                // connection it may use that is still starting (its client connection's own in
                // `never` mode, any shared one otherwise) instead of opening another.
                let starting =
                    |c: &Candidate| matches!(c.phase, Phase::Connecting | Phase::Handshaking);
                let wait_for_starting = if private {
                    candidates
                        .iter()
                        .any(|c| c.private_to == Some(want.session.id()) && starting(c))
                } else {
                    let needs_own =
                        want.first && !want.race_is_retried && req.mode != Reuse::Always;
                    !needs_own
                        && candidates
                            .iter()
                            .any(|c| c.private_to.is_none() && starting(c))
                };
                if wait_for_starting || !self.can_dial(conns.len(), policy) {
                    return None;
                }
                let owner = private.then_some(want.session);
                let conn = H2Conn::new(
                    self.addr,
                    owner,
                    want.session.id(),
                    metrics.clone(),
                    self.wake.clone(),
                    self.failures.clone(),
                );
                let slot = conn.try_reserve(cap)?;
                metrics.pick(if private {
                    PickKind::Private
                } else {
                    PickKind::New
                });
                conns.push(conn.clone());
                drop(conns);
                super::h2::establish(
                    conn.clone(),
                    policy.timeouts.connect,
                    policy.pool.keepalive,
                    self.tls.clone(),
                );
                self.after_reserve(&conn, policy);
                Some(slot)
            }
        }
    }

    /// A connection that reached its request limit takes no more streams.
    fn after_reserve(&self, conn: &Arc<H2Conn>, policy: &BackendPolicy) {
        if policy
            .pool
            .max_requests_per_connection
            .is_some_and(|max| conn.started() >= max)
        {
            conn.drain();
        }
    }

    fn try_lease_h1(
        &self,
        want: &Want<'_>,
        policy: &BackendPolicy,
        metrics: &BackendMetrics,
    ) -> Option<Lease> {
        let mut idle = lock(&self.h1_idle);
        let candidates: Vec<Candidate> = idle.iter().map(|c| c.candidate()).collect();
        match select::pick(Self::request(want, policy.pool.reuse), &candidates) {
            Pick::Use(i) => {
                let mut conn = idle.swap_remove(i);
                // Only the chosen connection is checked; one the backend closed while it sat
                // idle is dropped here and the choice is made again.
                if !conn.is_usable() {
                    drop(idle);
                    drop(conn);
                    return self.try_lease_h1(want, policy, metrics);
                }
                metrics.pick(Self::pick_kind(&candidates[i]));
                Some(Lease::H1(conn))
            }
            Pick::Dial { private } => {
                let open = self.open.load(Ordering::Acquire);
                if !self.can_dial(open, policy) {
                    // Every connection allowed is open. Idle ones this request may not use (a
                    // first request under `safe`, another client's in `never`) would hold their
                    // slots until their idle timeout: close the one idle longest instead, when
                    // that makes room (not when a lowered limit left more open than allowed).
                    let at_limit = policy.pool.max_connections_per_endpoint == Some(open as u32);
                    if !at_limit {
                        return None;
                    }
                    let oldest = (0..idle.len()).min_by_key(|&i| idle[i].idle_since)?;
                    let mut evicted = idle.swap_remove(oldest);
                    evicted.close_reason = "evicted";
                    drop(evicted);
                    if !self.can_dial(self.open.load(Ordering::Acquire), policy) {
                        return None;
                    }
                }
                self.open.fetch_add(1, Ordering::AcqRel);
                metrics.pick(if private {
                    PickKind::Private
                } else {
                    PickKind::New
                });
                Some(Lease::DialH1 { private })
            }
        }
    }

    pub(crate) fn put_idle(&self, conn: Box<H1Conn>) {
        let mut idle = lock(&self.h1_idle);
        if !self.retired.load(Ordering::Acquire) {
            idle.push(conn);
        }
        drop(idle);
        self.wake.notify_waiters();
    }

    /// One HTTP/1.1 connection (or dial) fewer: its slot is free for a waiting request.
    pub(crate) fn h1_closed(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_waiters();
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Housekeeping: idle timeouts, age limits, connections whose owner is gone.
    pub(crate) fn sweep(&self, policy: &BackendPolicy) {
        let pool = &policy.pool;
        let conns: Vec<Arc<H2Conn>> = lock(&self.h2).clone();
        for conn in conns {
            let owner_gone = conn
                .owner
                .as_ref()
                .is_some_and(|(_, w)| w.strong_count() == 0);
            if owner_gone || pool.max_connection_age.is_some_and(|max| conn.age() >= max) {
                conn.drain();
            } else if conn
                .idle_for()
                .is_some_and(|idle| idle >= pool.idle_timeout)
            {
                conn.close("idle-timeout");
            }
        }
        lock(&self.h2).retain(|c| c.phase() != Phase::Closed);
        lock(&self.h1_idle).retain_mut(|c| {
            if !c.is_usable() {
                return false;
            }
            if c.idle_since.elapsed() >= pool.idle_timeout {
                c.close_reason = "idle-timeout";
                return false;
            }
            let spent = c.owner_gone()
                || pool.max_connection_age.is_some_and(|max| c.age() >= max)
                || pool
                    .max_requests_per_connection
                    .is_some_and(|max| c.requests() >= max);
            if spent {
                c.close_reason = "drained";
            }
            !spent
        });
    }

    /// Closes every connection (the endpoint left the backend); in-flight streams finish.
    pub(crate) fn retire(&self) {
        let conns: Vec<Arc<H2Conn>> = {
            let conns = lock(&self.h2);
            self.retired.store(true, Ordering::Release);
            conns.clone()
        };
        for conn in conns {
            conn.drain();
        }
        let mut idle = lock(&self.h1_idle);
        self.retired.store(true, Ordering::Release);
        idle.clear();
        drop(idle);
        self.wake.notify_waiters();
    }

    /// The endpoint's connections, for `/debug/pools`.
    pub(crate) fn debug(&self) -> serde_json::Value {
        let h2: Vec<serde_json::Value> = lock(&self.h2)
            .iter()
            .map(|c| {
                serde_json::json!({
                    "phase": format!("{:?}", c.phase()).to_lowercase(),
                    "active_streams": c.active(),
                    "requests": c.started(),
                    "proven": c.proven(),
                    "private": c.owner.is_some(),
                })
            })
            .collect();
        serde_json::json!({
            "address": self.addr.to_string(),
            "h2_connections": h2,
            "h1_open": self.open.load(Ordering::Acquire),
            "h1_idle": lock(&self.h1_idle).len(),
        })
    }

    /// Connections in any phase but closed.
    pub(crate) fn connection_count(&self) -> usize {
        match self.protocol {
            Protocol::H2c | Protocol::H2 => lock(&self.h2)
                .iter()
                .filter(|c| c.phase() != Phase::Closed)
                .count(),
            Protocol::Http1 | Protocol::Https => self.open.load(Ordering::Acquire),
        }
    }
}
