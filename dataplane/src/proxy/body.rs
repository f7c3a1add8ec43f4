//! Body types on the request path. Bodies stream frame by frame; nothing here buffers a body.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::metrics::ProxyMetrics;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used on both sides of the proxy.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn incoming(body: Incoming) -> ProxyBody {
    body.map_err(BoxError::from).boxed()
}

/// Records a request's metrics when its response body is finished or dropped, so the duration
/// covers the whole response and an aborted response is counted too.
pub(crate) struct Completion {
    pub(crate) metrics: ProxyMetrics,
    pub(crate) route: String,
    pub(crate) service: String,
    pub(crate) code: u16,
    pub(crate) start: Instant,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let labels = [self.route.as_str(), self.service.as_str()];
        self.metrics
            .duration
            .with_label_values(&labels)
            .observe(self.start.elapsed().as_secs_f64());
        let code = self.code.to_string();
        self.metrics
            .requests
            .with_label_values(&[&self.route, &self.service, &code])
            .inc();
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
        if let Poll::Ready(None) = poll {
            // Record as soon as the body ends rather than when the connection drops it.
            self.completion.take();
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
