//! Body types on the request path. Bodies stream frame by frame; nothing here buffers a body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use super::access_log::{rfc3339, AccessLog};
use super::retry::AttemptRecord;
use crate::metrics::{Code, RequestMetrics};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used on both sides of the proxy.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body with nothing in it (no allocation: the box holds a zero-sized value).
pub fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// The access-log fields of one request (only gathered when the log is on).
pub(crate) struct LogFields {
    pub(crate) log: AccessLog,
    pub(crate) time: std::time::SystemTime,
    pub(crate) client: std::net::SocketAddr,
    pub(crate) method: String,
    pub(crate) authority: String,
    pub(crate) path: String,
    pub(crate) attempts: Vec<AttemptRecord>,
}

/// Records a request's metrics (and access-log line) when its response body is finished or
/// dropped, so the duration covers the whole response and an aborted response is counted too.
pub(crate) struct Completion {
    pub(crate) metrics: std::sync::Arc<RequestMetrics>,
    pub(crate) code: Code,
    pub(crate) start: Instant,
    pub(crate) bytes: u64,
    pub(crate) log: Option<Box<LogFields>>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        self.metrics.record(self.code, elapsed);
        if let Some(f) = self.log.take() {
            let endpoint = f
                .attempts
                .last()
                .and_then(|a| a.endpoint)
                .map(|e| e.to_string());
            let attempts: Vec<String> = f.attempts.iter().map(AttemptRecord::summary).collect();
            let line = serde_json::json!({
                "time": rfc3339(f.time),
                "client": f.client.to_string(),
                "method": f.method,
                "authority": f.authority,
                "path": f.path,
                "route": self.metrics.route,
                "service": &*self.metrics.service,
                "endpoint": endpoint,
                "status": self.code.label(),
                "bytes": self.bytes,
                "duration": elapsed.as_secs_f64(),
                "attempts": attempts,
            });
            f.log.write(line.to_string());
        }
    }
}

/// A response body that carries the request's [`Completion`].
pub(crate) struct Metered {
    inner: ProxyBody,
    completion: Option<Completion>,
}

impl Metered {
    pub(crate) fn new(inner: ProxyBody, completion: Completion) -> Self {
        Self {
            inner,
            completion: Some(completion),
        }
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(c)) = (frame.data_ref(), self.completion.as_mut()) {
                    c.bytes += data.len() as u64;
                }
            }
            // Record as soon as the body ends rather than when the connection drops it.
            Poll::Ready(None) => drop(self.completion.take()),
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Aborts a response body that sends nothing for `timeout` (the backend's `timeouts.idle`).
pub(crate) struct IdleTimeout {
    inner: ProxyBody,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeout {
    pub(crate) fn new(inner: ProxyBody, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = Instant::now() + this.timeout;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err("backend response body idle timeout".into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
