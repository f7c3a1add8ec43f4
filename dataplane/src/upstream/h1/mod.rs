//! HTTP/1.1 upstream connections: one request at a time, kept alive between requests.
//! An idle connection has always completed an exchange, so every idle connection is proven.
//!
//! The request's own task writes the request and reads the response head on the connection;
//! the response body reads the rest as the client side polls it. There is no connection task
//! and no channel between the request and its connection.

mod body;
mod codec;
mod exchange;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::Response;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

use super::endpoint::Endpoint;
use super::error::{AttemptError, Failure};
use super::io::Io;
use super::select::{Candidate, Phase};
use crate::metrics::BackendMetrics;
use crate::proxy::body::ProxyBody;
use crate::proxy::replay::AttemptBody;
use crate::session::Session;

/// An open HTTP/1.1 connection, idle in the pool or checked out by one request. Dropping it
/// closes the socket and settles the endpoint's connection count and metrics.
pub(crate) struct H1Conn {
    io: Io,
    addr: SocketAddr,
    /// Bytes read from the backend and not yet consumed.
    rbuf: BytesMut,
    /// Bytes to write, reused between requests.
    wbuf: Vec<u8>,
    pub(crate) owner: Option<(u64, Weak<Session>)>,
    pub(crate) dialed_for: u64,
    requests: u64,
    created: Instant,
    pub(crate) idle_since: Instant,
    endpoint: Weak<Endpoint>,
    metrics: BackendMetrics,
    /// The `reason` label this connection closes with.
    pub(crate) close_reason: &'static str,
}

impl H1Conn {
    pub(crate) fn candidate(&self) -> Candidate {
        Candidate {
            phase: Phase::Ready,
            proven: true,
            private_to: self.owner.as_ref().map(|(id, _)| *id),
            dialed_for: self.dialed_for,
            free_slot: true,
        }
    }

    /// Still open and quiet. An idle connection has nothing to say: if it is readable, the
    /// backend closed it (or sent bytes nobody asked for) and it cannot carry a request. The
    /// check is a readiness poll, a system call only when the socket became readable.
    pub(crate) fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        match Pin::new(&mut self.io).poll_read(&mut cx, &mut buf) {
            Poll::Pending => self.rbuf.is_empty(),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                self.close_reason = "peer-closed";
                false
            }
            Poll::Ready(Ok(())) => {
                self.close_reason = "unexpected-data";
                false
            }
            Poll::Ready(Err(_)) => {
                self.close_reason = "io-error";
                false
            }
        }
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests
    }

    pub(crate) fn age(&self) -> Duration {
        self.created.elapsed()
    }

    pub(crate) fn owner_gone(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|(_, w)| w.strong_count() == 0)
    }

    /// Reads more of the backend's bytes into the buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let poll = crate::http1::poll_read_more(&mut self.io, &mut self.rbuf, cx);
        match &poll {
            Poll::Ready(Ok(0)) => self.close_reason = "peer-closed",
            Poll::Ready(Err(_)) => self.close_reason = "io-error",
            _ => {}
        }
        poll
    }

    /// Back to the endpoint's idle list, if the endpoint is still there.
    fn release(mut self: Box<Self>) {
        self.idle_since = Instant::now();
        self.wbuf.clear();
        if let Some(endpoint) = self.endpoint.upgrade() {
            endpoint.put_idle(self);
        }
    }
}

impl Drop for H1Conn {
    fn drop(&mut self) {
        self.metrics.transition(Some(Phase::Ready), Phase::Closed);
        self.metrics.closed(self.close_reason, self.requests);
        if let Some(endpoint) = self.endpoint.upgrade() {
            endpoint.h1_closed();
        }
    }
}

/// Opens a connection (already counted in the endpoint's `open`).
pub(crate) async fn dial(
    endpoint: &Arc<Endpoint>,
    owner: Option<&Arc<Session>>,
    dialed_for: u64,
    connect_timeout: Duration,
    metrics: &BackendMetrics,
) -> Result<Box<H1Conn>, AttemptError> {
    let addr: SocketAddr = endpoint.addr;
    metrics.opened.inc();
    metrics.transition(None, Phase::Connecting);
    // Settles the count if the connect fails, or if the attempt is dropped while connecting
    // (a per-try timeout, the client going away).
    let mut dialing = Dialing {
        endpoint,
        metrics,
        reason: Some("connect-cancelled"),
    };
    let tls = endpoint.tls.as_deref();
    let io = match super::io::connect(addr, connect_timeout, tls, b"http/1.1").await {
        Ok(io) => io,
        Err(e) => {
            dialing.reason = Some(e.reason);
            return Err(e.error);
        }
    };
    // From here the connection's own Drop settles the count.
    dialing.reason = None;
    metrics.transition(Some(Phase::Connecting), Phase::Ready);
    Ok(Box::new(H1Conn {
        io,
        addr,
        rbuf: BytesMut::new(),
        wbuf: Vec::new(),
        owner: owner.map(|s| (s.id(), Arc::downgrade(s))),
        dialed_for,
        requests: 0,
        created: Instant::now(),
        idle_since: Instant::now(),
        endpoint: Arc::downgrade(endpoint),
        metrics: metrics.clone(),
        close_reason: "closed",
    }))
}

/// A dial in progress: counted in the endpoint's `open` and in the connecting gauge.
struct Dialing<'a> {
    endpoint: &'a Endpoint,
    metrics: &'a BackendMetrics,
    /// `Some`: the dial did not produce a connection, closed with this reason.
    reason: Option<&'static str>,
}

impl Drop for Dialing<'_> {
    fn drop(&mut self) {
        if let Some(reason) = self.reason {
            self.metrics
                .transition(Some(Phase::Connecting), Phase::Closed);
            self.metrics.closed(reason, 0);
            self.endpoint.h1_closed();
        }
    }
}

pub(crate) enum SendError {
    /// Nothing was written: the body comes back for another connection.
    NotStarted(AttemptBody, AttemptError),
    Failed(AttemptError),
}

/// Sends one request; the connection returns to the endpoint's idle list once the response
/// body has been read to the end (at once for a response without a body).
pub(crate) async fn send(
    mut conn: Box<H1Conn>,
    head: &http::request::Parts,
    body: AttemptBody,
    max_requests: Option<u64>,
) -> Result<Response<ProxyBody>, SendError> {
    let addr = Some(conn.addr);
    let mut exchange = exchange::Exchange::new(&mut conn, head, body);
    let result = (&mut exchange).await;
    let upload = exchange.into_upload();
    let resp = match result {
        Ok(resp) => resp,
        Err(exchange::Error::NotStarted(body, error)) => {
            return Err(SendError::NotStarted(
                body,
                AttemptError::new(Failure::NotSent, addr, error),
            ))
        }
        Err(exchange::Error::Failed(failure, detail)) => {
            return Err(SendError::Failed(AttemptError::new(failure, addr, detail)))
        }
    };
    conn.requests += 1;
    let reusable = resp.keep_alive && max_requests.is_none_or(|m| conn.requests < m);
    Ok(body::response(conn, resp, upload, reusable))
}
