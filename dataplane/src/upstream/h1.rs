//! HTTP/1.1 upstream connections: one request at a time, kept alive between requests.
//! An idle connection has always completed an exchange, so every idle connection is proven.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::endpoint::Endpoint;
use super::error::{AttemptError, Failure};
use super::select::{Candidate, Phase};
use crate::metrics::BackendMetrics;
use crate::proxy::body::ProxyBody;
use crate::proxy::replay::AttemptBody;
use crate::session::Session;

/// An open HTTP/1.1 connection, idle in the pool or checked out by one request.
pub(crate) struct H1Conn {
    sender: http1::SendRequest<AttemptBody>,
    pub(crate) owner: Option<(u64, Weak<Session>)>,
    pub(crate) dialed_for: u64,
    requests: u64,
    created: Instant,
    pub(crate) idle_since: Instant,
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

    /// Not closed. A connection whose last response just ended may need a moment to become
    /// ready again; `send` waits for that.
    pub(crate) fn is_usable(&self) -> bool {
        !self.sender.is_closed()
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
}

/// Opens a connection; the connection task keeps the endpoint's counts and metrics right.
pub(crate) async fn dial(
    endpoint: &Arc<Endpoint>,
    owner: Option<&Arc<Session>>,
    dialed_for: u64,
    connect_timeout: Duration,
    metrics: &BackendMetrics,
) -> Result<H1Conn, AttemptError> {
    let addr: SocketAddr = endpoint.addr;
    metrics.opened.inc();
    metrics.transition(None, Phase::Connecting);
    let fail = |error: AttemptError, reason| {
        metrics.transition(Some(Phase::Connecting), Phase::Closed);
        metrics.closed(reason, 0);
        endpoint.open.fetch_sub(1, Ordering::AcqRel);
        endpoint.wake.notify_waiters();
        error
    };
    let tls = endpoint.tls.as_deref();
    let stream = match super::io::connect(addr, connect_timeout, tls, b"http/1.1").await {
        Ok(io) => io,
        Err(e) => return Err(fail(e.error, e.reason)),
    };
    let (sender, conn) = match http1::Builder::new().handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => {
            let error = AttemptError::new(Failure::Connect, Some(addr), e);
            return Err(fail(error, "handshake-failed"));
        }
    };
    metrics.transition(Some(Phase::Connecting), Phase::Ready);
    let endpoint_ref = endpoint.clone();
    let metrics_ref = metrics.clone();
    tokio::spawn(async move {
        let reason = match conn.await {
            Ok(()) => "closed",
            Err(e) if e.is_incomplete_message() => "peer-closed",
            Err(_) => "io-error",
        };
        metrics_ref.transition(Some(Phase::Ready), Phase::Closed);
        metrics_ref.closed(reason, 0);
        endpoint_ref.open.fetch_sub(1, Ordering::AcqRel);
        endpoint_ref.wake.notify_waiters();
    });
    Ok(H1Conn {
        sender,
        owner: owner.map(|s| (s.id(), Arc::downgrade(s))),
        dialed_for,
        requests: 0,
        created: Instant::now(),
        idle_since: Instant::now(),
    })
}

pub(crate) enum SendError {
    /// Nothing was written: the body comes back for another connection.
    NotStarted(AttemptBody, AttemptError),
    Failed(AttemptError),
}

/// Sends one request; the connection returns to the endpoint's idle list once the response
/// body has been read to the end.
pub(crate) async fn send(
    endpoint: &Arc<Endpoint>,
    mut conn: H1Conn,
    req: Request<AttemptBody>,
    max_requests: Option<u64>,
) -> Result<Response<ProxyBody>, SendError> {
    let addr = endpoint.addr;
    if conn.sender.ready().await.is_err() {
        let error = AttemptError::new(Failure::NotSent, Some(addr), "connection closed while idle");
        return Err(SendError::NotStarted(req.into_body(), error));
    }
    match conn.sender.try_send_request(req).await {
        Ok(resp) => {
            conn.requests += 1;
            let reuse = max_requests.is_none_or(|m| conn.requests < m);
            let endpoint = endpoint.clone();
            Ok(resp.map(|inner| {
                ProxyBody::new(H1Body {
                    inner,
                    conn: reuse.then_some((conn, endpoint)),
                })
            }))
        }
        Err(mut err) => {
            let unsent = err.take_message();
            let error = err.into_error();
            match unsent {
                Some(req) => Err(SendError::NotStarted(
                    req.into_body(),
                    AttemptError::new(Failure::NotSent, Some(addr), &error),
                )),
                None => {
                    let failure = if error.is_parse() || error.is_parse_status() {
                        Failure::Malformed
                    } else if error.is_body_write_aborted() || error.is_user() {
                        Failure::RequestBody
                    } else {
                        Failure::EmptyResponse
                    };
                    Err(SendError::Failed(AttemptError::new(
                        failure,
                        Some(addr),
                        &error,
                    )))
                }
            }
        }
    }
}

/// A response body from an HTTP/1.1 backend. When it has been read to the end, its connection
/// goes straight back to the endpoint's idle list, so the client's next request finds it.
struct H1Body {
    inner: hyper::body::Incoming,
    conn: Option<(H1Conn, Arc<Endpoint>)>,
}

impl H1Body {
    fn release(&mut self) {
        if let Some((mut conn, endpoint)) = self.conn.take() {
            conn.idle_since = Instant::now();
            endpoint.put_idle(conn);
        }
    }
}

impl http_body::Body for H1Body {
    type Data = bytes::Bytes;
    type Error = crate::proxy::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            std::task::Poll::Ready(None) => self.release(),
            // With a known length the last data frame is the end: release before the client,
            // which now has the whole response, sends its next request.
            std::task::Poll::Ready(Some(Ok(_))) if http_body::Body::is_end_stream(&self.inner) => {
                self.release()
            }
            // An error leaves the connection unusable: it closes when dropped.
            std::task::Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        poll.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body nobody read (HEAD, 204, 304) is complete all the same.
        if http_body::Body::is_end_stream(&self.inner) {
            self.release();
        }
    }
}
