//! HTTP/2 upstream connections on the `h2` crate.
//!
//! Life cycle: Connecting → Handshaking (preface sent) → Ready (the peer's SETTINGS seen) →
//! Draining (GOAWAY, request or age limit: no new streams) → Closed. SETTINGS arrival is
//! observed with a PING sent right after the preface: the peer must send SETTINGS before
//! anything else, so its PING ACK proves the SETTINGS were applied. Until then a conservative
//! stream limit applies; afterwards the peer's current SETTINGS_MAX_CONCURRENT_STREAMS.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::future::poll_fn;
use h2::client::SendRequest;
use h2::{Ping, Reason, RecvStream, SendStream};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::error::{AttemptError, Failure};
use super::select::Phase;
use crate::metrics::BackendMetrics;
use crate::policy::Keepalive;
use crate::proxy::body::{BoxError, ProxyBody};
use crate::proxy::replay::AttemptBody;
use crate::session::Session;
use crate::table::UpstreamTls;

/// Streams allowed on a connection whose SETTINGS have not arrived yet: the peer's limit may
/// be 1, and it must never be exceeded.
pub(crate) const CONSERVATIVE_STREAMS: usize = 1;

#[derive(Clone)]
enum State {
    Connecting,
    Handshaking(SendRequest<Bytes>),
    Ready(SendRequest<Bytes>),
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
            State::Ready(s) => cap.min(s.current_max_send_streams()),
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

    /// What an h2 error on this connection means for the attempt.
    fn classify(&self, e: &h2::Error, stream_opened: bool) -> Failure {
        if e.is_go_away() && e.is_remote() {
            self.on_goaway();
            return if stream_opened {
                Failure::GoAway
            } else {
                Failure::NotSent
            };
        }
        if e.is_reset() && e.is_remote() {
            if e.reason() == Some(Reason::REFUSED_STREAM) {
                self.metrics.refused.inc();
                return Failure::RefusedStream;
            }
            return Failure::Reset;
        }
        if e.is_reset() || e.is_go_away() {
            // h2 itself reset the stream or connection: the peer broke the protocol.
            return Failure::Malformed;
        }
        if !self.saw_settings.load(Ordering::Acquire) {
            Failure::ClosedBeforeSettings
        } else if !stream_opened {
            Failure::NotSent
        } else {
            Failure::EmptyResponse
        }
    }
}

/// Opens the TCP connection and runs the HTTP/2 handshake, keepalive and driver in the
/// background, so requests waiting on the connection are not tied to the one that dialed it.
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
        let mut builder = h2::client::Builder::new();
        builder
            .initial_max_send_streams(CONSERVATIVE_STREAMS)
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .max_send_buffer_size(1 << 20);
        let (send, mut connection) = match builder.handshake::<_, Bytes>(io).await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(addr = %conn.addr, %error, "upstream HTTP/2 handshake failed");
                return conn.close_with("handshake-failed", Failure::ClosedBeforeSettings);
            }
        };
        let ping_pong = connection.ping_pong();
        let on_exit = conn.clone();
        let driver = tokio::spawn(async move {
            let reason = match connection.await {
                Ok(()) => "peer-closed",
                Err(e) if e.is_go_away() && e.is_remote() => {
                    on_exit.on_goaway();
                    "goaway"
                }
                Err(e) if e.is_io() => "io-error",
                Err(_) => "protocol-error",
            };
            on_exit.close(reason);
        });
        *conn.driver.lock().unwrap_or_else(|e| e.into_inner()) = Some(driver.abort_handle());
        if !conn.transition(|s| matches!(s, State::Connecting).then(|| State::Handshaking(send))) {
            // Closed while connecting (retired, or its pool went away): close_with has already
            // run and found no driver to stop, so stop it here.
            driver.abort();
            return;
        }
        let Some(mut ping_pong) = ping_pong else {
            return conn.mark_ready();
        };
        match tokio::time::timeout(connect_timeout, ping_pong.ping(Ping::opaque())).await {
            Ok(Ok(_)) => conn.mark_ready(),
            Ok(Err(_)) => return conn.close("closed-before-settings"),
            Err(_) => return conn.close("settings-timeout"),
        }
        let Some(keepalive) = keepalive else { return };
        loop {
            tokio::time::sleep(keepalive.interval).await;
            if conn.phase() == Phase::Closed {
                return;
            }
            match tokio::time::timeout(keepalive.timeout, ping_pong.ping(Ping::opaque())).await {
                Ok(Ok(_)) => {}
                _ => return conn.close("keepalive-timeout"),
            }
        }
    });
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
    head: http::request::Parts,
    body: AttemptBody,
) -> Result<Response<ProxyBody>, SendError> {
    let conn = slot.conn.clone();
    let not_started = |body, failure| Err(SendError::NotStarted(NotStarted { body, failure }));
    let mut rx = conn.state.subscribe();
    let sender = loop {
        let state = rx.borrow_and_update().clone();
        match state {
            State::Connecting => {
                if rx.changed().await.is_err() {
                    return not_started(body, Failure::NotSent);
                }
            }
            State::Handshaking(s) | State::Ready(s) => break s,
            State::Draining => return not_started(body, Failure::NotSent),
            State::Closed(failure) => return not_started(body, failure),
        }
    };
    let mut sender = match sender.ready().await {
        Ok(s) => s,
        Err(e) => return not_started(body, conn.classify(&e, false)),
    };
    let end_of_stream = body.is_end_stream();
    let (response, stream) = match sender.send_request(Request::from_parts(head, ()), end_of_stream)
    {
        Ok(pair) => pair,
        Err(e) => return not_started(body, conn.classify(&e, false)),
    };
    let body_failed = Arc::new(AtomicBool::new(false));
    let pump =
        (!end_of_stream).then(|| PumpGuard(tokio::spawn(pump(body, stream, body_failed.clone()))));
    match response.await {
        Ok(resp) => Ok(resp.map(|recv| {
            ProxyBody::new(H2Body {
                recv,
                slot: Some(slot),
                pump,
                data_done: false,
            })
        })),
        Err(e) => {
            let failure = if body_failed.load(Ordering::Acquire) {
                // We reset the stream because the client's body failed.
                Failure::RequestBody
            } else {
                conn.classify(&e, true)
            };
            Err(SendError::Failed(AttemptError::new(
                failure,
                Some(conn.addr),
                e,
            )))
        }
    }
}

/// The stream went away (reset, or the response completed first).
struct StreamGone;

/// Aborts the upload when the attempt is over.
struct PumpGuard(tokio::task::JoinHandle<Result<(), StreamGone>>);

impl Drop for PumpGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Copies the request body into the stream, honouring the peer's flow control.
async fn pump(
    mut body: AttemptBody,
    mut stream: SendStream<Bytes>,
    body_failed: Arc<AtomicBool>,
) -> Result<(), StreamGone> {
    loop {
        let Some(frame) = body.frame().await else {
            return stream.send_data(Bytes::new(), true).map_err(|_| StreamGone);
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(_) => {
                body_failed.store(true, Ordering::Release);
                stream.send_reset(Reason::CANCEL);
                return Ok(());
            }
        };
        match frame.into_data() {
            Ok(mut data) => {
                while data.has_remaining() {
                    stream.reserve_capacity(data.len());
                    let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                        Some(Ok(n)) if n > 0 => n,
                        Some(Ok(_)) => continue,
                        _ => return Err(StreamGone),
                    };
                    let chunk = data.split_to(granted.min(data.len()));
                    stream.send_data(chunk, false).map_err(|_| StreamGone)?;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return stream.send_trailers(trailers).map_err(|_| StreamGone);
                }
            }
        }
    }
}

/// A response body from an HTTP/2 backend. Returns flow-control credit as data is read, and
/// frees the stream slot when it ends (proving the connection) or is dropped.
struct H2Body {
    recv: RecvStream,
    slot: Option<Slot>,
    pump: Option<PumpGuard>,
    data_done: bool,
}

impl H2Body {
    fn finish(&mut self) {
        if let Some(mut slot) = self.slot.take() {
            slot.completed = true;
        }
        self.pump = None;
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if this.recv.is_end_stream() {
                        // END_STREAM with the last data: the exchange is complete now.
                        this.data_done = true;
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => this.data_done = true,
            }
        }
        let trailers: Result<Option<HeaderMap>, h2::Error> = ready!(this.recv.poll_trailers(cx));
        this.finish();
        match trailers {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
