//! HTTP/2 upstream connections, on weir's own HTTP/2 client.
//!
//! Life cycle: Connecting → Handshaking (preface sent) → Ready (the peer's SETTINGS applied) →
//! Draining (GOAWAY, request or age limit: no new streams) → Closed. Until the SETTINGS
//! arrive a conservative stream limit applies; afterwards the peer's current
//! SETTINGS_MAX_CONCURRENT_STREAMS. The connection task (`driver`) owns the socket and the
//! protocol state; requests reach it through a [`driver::Handle`] and wait on their stream's
//! slot (`stream`).

mod driver;
mod head;
mod stream;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Method, Response};
use http_body::Body;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use self::driver::{Command, Handle, Open};
use self::stream::{Cancel, PumpGuard, Stream};
use super::error::{AttemptError, Failure};
use super::select::Phase;
use crate::h2::hpack::encode_request_indexed;
use crate::metrics::BackendMetrics;
use crate::policy::Keepalive;
use crate::proxy::body::ProxyBody;
use crate::proxy::replay::AttemptBody;
use crate::session::Session;
use crate::table::UpstreamTls;

/// Streams allowed on a connection whose SETTINGS have not arrived yet: the peer's limit may
/// be 1, and it must never be exceeded.
pub(crate) const CONSERVATIVE_STREAMS: usize = 1;

#[derive(Clone)]
enum State {
    Connecting,
    Handshaking(Handle),
    Ready(Handle),
    Draining,
    /// Closed; the failure to report for requests that were waiting on it.
    Closed(Failure),
}

impl State {
    fn phase(&self) -> Phase {
        match self {
            State::Connecting => Phase::Connecting,
            State::Handshaking(_) => Phase::Handshaking,
            State::Ready(_) => Phase::Ready,
            State::Draining => Phase::Draining,
            State::Closed(_) => Phase::Closed,
        }
    }
}

pub(crate) struct H2Conn {
    pub(crate) addr: SocketAddr,
    /// `never` mode: the client connection that owns it.
    pub(crate) owner: Option<(u64, Weak<Session>)>,
    pub(crate) dialed_for: u64,
    state: watch::Sender<State>,
    active: AtomicUsize,
    started: AtomicU64,
    completed: AtomicU64,
    created: Instant,
    idle_since: Mutex<Instant>,
    saw_settings: AtomicBool,
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS, once its SETTINGS arrived.
    peer_streams: AtomicUsize,
    goaway: AtomicBool,
    driver: Mutex<Option<AbortHandle>>,
    metrics: BackendMetrics,
    wake: Arc<Notify>,
    /// Where a connection that never came up reports why, for requests waiting on it.
    failures: Arc<Mutex<Option<(Instant, Failure)>>>,
}

impl H2Conn {
    pub(crate) fn new(
        addr: SocketAddr,
        owner: Option<&Arc<Session>>,
        dialed_for: u64,
        metrics: BackendMetrics,
        wake: Arc<Notify>,
        failures: Arc<Mutex<Option<(Instant, Failure)>>>,
    ) -> Arc<Self> {
        metrics.transition(None, Phase::Connecting);
        metrics.opened.inc();
        Arc::new(Self {
            addr,
            owner: owner.map(|s| (s.id(), Arc::downgrade(s))),
            dialed_for,
            state: watch::Sender::new(State::Connecting),
            active: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            created: Instant::now(),
            idle_since: Mutex::new(Instant::now()),
            saw_settings: AtomicBool::new(false),
            peer_streams: AtomicUsize::new(CONSERVATIVE_STREAMS),
            goaway: AtomicBool::new(false),
            driver: Mutex::new(None),
            metrics,
            wake,
            failures,
        })
    }

    pub(crate) fn phase(&self) -> Phase {
        self.state.borrow().phase()
    }

    pub(crate) fn proven(&self) -> bool {
        self.completed.load(Ordering::Acquire) > 0
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    pub(crate) fn age(&self) -> Duration {
        self.created.elapsed()
    }

    pub(crate) fn idle_for(&self) -> Option<Duration> {
        (self.active() == 0).then(|| {
            self.idle_since
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
        })
    }

    /// Current stream limit: ours, and the peer's once its SETTINGS arrived.
    fn limit(&self, cap: u32) -> usize {
        let cap = cap as usize;
        match &*self.state.borrow() {
            State::Ready(_) => cap.min(self.peer_streams.load(Ordering::Acquire)),
            State::Connecting | State::Handshaking(_) => cap.min(CONSERVATIVE_STREAMS),
            State::Draining | State::Closed(_) => 0,
        }
    }

    pub(crate) fn has_free_slot(&self, cap: u32) -> bool {
        self.active() < self.limit(cap)
    }

    /// Takes a stream slot if one is free under the current limit.
    pub(crate) fn try_reserve(self: &Arc<Self>, cap: u32) -> Option<Slot> {
        let limit = self.limit(cap);
        let mut current = self.active();
        loop {
            if current >= limit {
                return None;
            }
            match self.active.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.started.fetch_add(1, Ordering::AcqRel);
                    return Some(Slot {
                        conn: self.clone(),
                        completed: false,
                    });
                }
                Err(now) => current = now,
            }
        }
    }

    fn transition(&self, f: impl FnOnce(&State) -> Option<State>) -> bool {
        let mut changed = None;
        self.state.send_if_modified(|state| match f(state) {
            Some(next) => {
                changed = Some((state.phase(), next.phase()));
                *state = next;
                true
            }
            None => false,
        });
        if let Some((from, to)) = changed {
            self.metrics.transition(Some(from), to);
            self.wake.notify_waiters();
            true
        } else {
            false
        }
    }

    fn set_peer_streams(&self, limit: usize) {
        self.peer_streams.store(limit, Ordering::Release);
        self.wake.notify_waiters();
    }

    fn mark_ready(&self) {
        self.saw_settings.store(true, Ordering::Release);
        self.transition(|s| match s {
            State::Handshaking(send) => Some(State::Ready(send.clone())),
            _ => None,
        });
    }

    /// No new streams; the connection closes once its streams are done.
    pub(crate) fn drain(&self) {
        if self.phase() == Phase::Connecting {
            // Nothing to drain yet: give up the dial (the handshake task sees it and stops).
            return self.close("retired-while-connecting");
        }
        self.transition(|s| match s {
            State::Handshaking(_) | State::Ready(_) => Some(State::Draining),
            _ => None,
        });
        if self.active() == 0 {
            self.close("drained");
        }
    }

    fn on_goaway(&self) {
        if !self.goaway.swap(true, Ordering::AcqRel) {
            self.metrics.goaway.inc();
        }
        self.drain();
    }

    /// Closes the connection now; streams still open on it fail.
    pub(crate) fn close(&self, reason: &'static str) {
        let failure = if self.saw_settings.load(Ordering::Acquire) {
            Failure::NotSent
        } else {
            Failure::ClosedBeforeSettings
        };
        self.close_with(reason, failure);
    }

    fn close_with(&self, reason: &'static str, failure: Failure) {
        if !self.saw_settings.load(Ordering::Acquire) {
            *self.failures.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), failure));
        }
        if self.transition(|s| (!matches!(s, State::Closed(_))).then_some(State::Closed(failure))) {
            if let Some(driver) = self.driver.lock().unwrap_or_else(|e| e.into_inner()).take() {
                driver.abort();
            }
            self.metrics.closed(reason, self.started());
            tracing::debug!(addr = %self.addr, reason, streams = self.started(), "upstream HTTP/2 connection closed");
        }
    }

    fn release(&self, completed: bool) {
        if completed {
            self.completed.fetch_add(1, Ordering::AcqRel);
        }
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            if self.phase() == Phase::Draining {
                self.close("drained");
            }
        }
        self.wake.notify_waiters();
    }
}

/// Opens the TCP connection and starts the connection task, then watches for the peer's
/// SETTINGS and runs the keepalive, so requests waiting on the connection are not tied to
/// the one that dialed it.
pub(crate) fn establish(
    conn: Arc<H2Conn>,
    connect_timeout: Duration,
    keepalive: Option<Keepalive>,
    tls: Option<Arc<UpstreamTls>>,
) {
    tokio::spawn(async move {
        let io = match super::io::connect(conn.addr, connect_timeout, tls.as_deref(), b"h2").await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(addr = %conn.addr, error = %e.error, "upstream connect failed");
                return conn.close_with(e.reason, e.error.failure);
            }
        };
        let (task, handle) = driver::start(io, conn.clone());
        let keepalive_handle = handle.clone();
        if !conn.transition(|s| matches!(s, State::Connecting).then(|| State::Handshaking(handle)))
        {
            // Closed while connecting (retired, or its pool went away): the task never runs.
            return;
        }
        // Handshaking before the task runs, so the peer's SETTINGS always find it there.
        let on_exit = CloseOnExit(conn.clone());
        let driver = tokio::spawn(async move {
            let reason = task.await;
            on_exit.0.close(reason);
        });
        *conn.driver.lock().unwrap_or_else(|e| e.into_inner()) = Some(driver.abort_handle());
        if conn.phase() == Phase::Closed {
            // Closed before the abort handle was stored: close_with found nothing to stop.
            driver.abort();
            return;
        }
        let mut rx = conn.state.subscribe();
        let settled = rx.wait_for(|s| !matches!(s, State::Handshaking(_)));
        if tokio::time::timeout(connect_timeout, settled)
            .await
            .is_err()
        {
            return conn.close("settings-timeout");
        }
        drop(rx);
        let Some(keepalive) = keepalive else { return };
        loop {
            tokio::time::sleep(keepalive.interval).await;
            if conn.phase() == Phase::Closed {
                return;
            }
            let (tx, ack) = oneshot::channel();
            if !keepalive_handle.send(Command::Ping(tx)) {
                return;
            }
            match tokio::time::timeout(keepalive.timeout, ack).await {
                Ok(Ok(())) => {}
                _ => return conn.close("keepalive-timeout"),
            }
        }
    });
}

/// Closes the connection however its task ends: with the task's own reason when it returns,
/// and also if it panics or is aborted (closing twice is harmless), so the pool never keeps a
/// connection whose task is gone.
struct CloseOnExit(Arc<H2Conn>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close("task-ended");
    }
}

/// A reserved stream slot; released when dropped.
pub(crate) struct Slot {
    conn: Arc<H2Conn>,
    completed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conn.release(self.completed);
    }
}

/// The attempt did not open a stream: its body is handed back untouched.
pub(crate) struct NotStarted {
    pub(crate) body: AttemptBody,
    pub(crate) failure: Failure,
}

pub(crate) enum SendError {
    NotStarted(NotStarted),
    Failed(AttemptError),
}

/// Sends one request on `slot`'s connection.
pub(crate) async fn send(
    slot: Slot,
    head: &http::request::Parts,
    body: AttemptBody,
) -> Result<Response<ProxyBody>, SendError> {
    let conn = slot.conn.clone();
    let not_started = |body, failure| Err(SendError::NotStarted(NotStarted { body, failure }));
    let handle = {
        let mut rx = conn.state.subscribe();
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                State::Connecting => {
                    if rx.changed().await.is_err() {
                        return not_started(body, Failure::NotSent);
                    }
                }
                State::Handshaking(h) | State::Ready(h) => break h,
                State::Draining => return not_started(body, Failure::NotSent),
                State::Closed(failure) => return not_started(body, failure),
            }
        }
    };
    let end_stream = body.is_end_stream();
    let uri = &head.uri;
    let stream = Stream::new(handle.credit.clone(), end_stream);
    let opened = handle.send_block(
        128,
        |block, table| {
            encode_request_indexed(
                block,
                table,
                &head.method,
                uri.scheme_str().unwrap_or("http"),
                uri.authority().map_or("", |a| a.as_str()),
                uri.path_and_query().map_or("/", |p| p.as_str()),
                &head.headers,
            )
        },
        |block| {
            Command::Open(Open {
                block,
                end_stream,
                head_request: head.method == Method::HEAD,
                stream: stream.clone(),
            })
        },
    );
    if !opened {
        return not_started(body, Failure::NotSent);
    }
    let cancel = Cancel {
        stream: stream.clone(),
        handle: handle.clone(),
        armed: true,
    };
    let failed = Arc::new(AtomicBool::new(false));
    let mut pump = None;
    let mut unsent_body = None;
    if end_stream {
        unsent_body = Some(body);
    } else {
        if let Err(e) = stream.opened().await {
            return not_started(body, e.failure);
        }
        pump = Some(PumpGuard(tokio::spawn(stream::pump(
            body,
            stream.clone(),
            handle.clone(),
            failed.clone(),
        ))));
    }
    match stream.head().await {
        Ok((response, empty)) => {
            let (stream, handle) = cancel.disarm();
            Ok(stream::response_body(
                response, empty, stream, handle, slot, pump,
            ))
        }
        Err(e) => {
            if let (false, Some(body)) = (e.opened, unsent_body) {
                return not_started(body, e.failure);
            }
            let failure = if failed.load(Ordering::Acquire) {
                // We reset the stream because the client's body failed.
                Failure::RequestBody
            } else {
                e.failure
            };
            Err(SendError::Failed(AttemptError::new(
                failure,
                Some(conn.addr),
                format!("HTTP/2 stream: {}", failure.label()),
            )))
        }
    }
}
