//! HTTP/1.1 upstream connections: one request at a time, kept alive between requests.
//! An idle connection has always completed an exchange, so every idle connection is proven.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
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

    pub(crate) fn is_usable(&self) -> bool {
        self.sender.is_ready()
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
    let connected = tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await;
    let fail = |failure, detail: String, reason| {
        metrics.transition(Some(Phase::Connecting), Phase::Closed);
        metrics.closed(reason, 0);
        endpoint.open.fetch_sub(1, Ordering::AcqRel);
        endpoint.wake.notify_waiters();
        AttemptError::new(failure, Some(addr), detail)
    };
    let stream = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(fail(Failure::Connect, e.to_string(), "connect-failed")),
        Err(_) => {
            return Err(fail(
                Failure::ConnectTimeout,
                String::new(),
                "connect-timeout",
            ))
        }
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = match http1::Builder::new().handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return Err(fail(Failure::Connect, e.to_string(), "handshake-failed")),
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
    match conn.sender.try_send_request(req).await {
        Ok(resp) => {
            conn.requests += 1;
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                if conn.sender.ready().await.is_ok()
                    && max_requests.is_none_or(|m| conn.requests < m)
                {
                    conn.idle_since = Instant::now();
                    endpoint.put_idle(conn);
                }
            });
            Ok(resp.map(crate::proxy::body::incoming))
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
