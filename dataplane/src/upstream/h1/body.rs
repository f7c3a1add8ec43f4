//! A response body read straight from its HTTP/1.1 connection as the client side polls it.
//! When the body ends, a reusable connection goes back to the endpoint's idle list at once,
//! so the client's next request finds it; a body dropped before its end closes the connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};

use super::codec::{ResponseFraming, ResponseHead};
use super::exchange::{Error, Upload};
use super::H1Conn;
use crate::http1::chunked::{Decoded, Decoder};
use crate::proxy::body::{BoxError, ProxyBody};

enum State {
    Length(u64),
    Chunked(Decoder),
    UntilClose,
    Done,
}

struct H1Body {
    /// `None` once released or closed.
    conn: Option<Box<H1Conn>>,
    state: State,
    /// The rest of the request, when the response came before all of it was written.
    upload: Option<Upload>,
    /// The response allows another request on the connection (the request must be whole too).
    reusable: bool,
}

/// The response, its body reading from `conn`.
pub(super) fn response(
    conn: Box<H1Conn>,
    head: ResponseHead,
    upload: Upload,
    reusable: bool,
) -> Response<ProxyBody> {
    let state = match head.framing {
        ResponseFraming::Empty | ResponseFraming::Length(0) => State::Done,
        ResponseFraming::Length(n) => State::Length(n),
        ResponseFraming::Chunked => State::Chunked(Decoder::new()),
        ResponseFraming::UntilClose => State::UntilClose,
    };
    // A response that came before the whole request: even if the rest goes out while the
    // response is read, the backend may not have read it, and the connection is not reused.
    let sent = upload.is_sent();
    let mut body = H1Body {
        conn: Some(conn),
        state,
        upload: (!sent).then_some(upload),
        reusable: reusable && sent,
    };
    if matches!(body.state, State::Done) {
        body.finish();
    }
    let mut resp = Response::new(ProxyBody::new(body));
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    resp
}

#[derive(Debug, thiserror::Error)]
#[error("response body from the backend: {0}")]
struct BodyError(String);

impl H1Body {
    /// The body is complete: release the connection if it can carry another request. Bytes
    /// after the body mean the backend sent more than one response: never reuse that.
    fn finish(&mut self) {
        self.state = State::Done;
        self.upload = None;
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.rbuf.is_empty() {
                conn.release();
            }
        }
    }

    fn fail(&mut self, detail: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(BodyError(detail).into())))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(upload) = this.upload.as_mut() {
                if let Err(e) = upload.poll_rest(conn, cx) {
                    let detail = match e {
                        Error::Failed(_, detail) | Error::NotStarted(_, detail) => detail,
                    };
                    return this.fail(format!("request body: {detail}"));
                }
            }
            match &mut this.state {
                State::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(rest) if !conn.rbuf.is_empty() => {
                    let take = usize::try_from(*rest)
                        .unwrap_or(usize::MAX)
                        .min(conn.rbuf.len());
                    let data = conn.rbuf.split_to(take).freeze();
                    *rest -= take as u64;
                    if *rest == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.rbuf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(e.to_string()),
                },
                State::UntilClose if !conn.rbuf.is_empty() => {
                    let data = conn.rbuf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Length(_) | State::UntilClose => {}
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(this.state, State::UntilClose) {
                        // The close is the end of this body; the connection is finished.
                        this.state = State::Done;
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    return this.fail("connection closed before the end of the body".into());
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(e.to_string()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
