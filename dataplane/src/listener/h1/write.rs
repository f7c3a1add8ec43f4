//! Writing a response body to the client in the framing its head announced. Frames are
//! gathered into the connection's write buffer while the body has them ready, so a small
//! response goes out with its head in one write.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use super::response::{allowed_trailers, Framing};
use super::Conn;
use crate::http1::{chunk, last_chunk};
use crate::proxy::body::ProxyBody;

/// Buffered bytes past which the writer writes before taking more frames.
const HIGH_WATER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    #[error("writing to the client: {0}")]
    Io(#[from] std::io::Error),
    #[error("response body: {0}")]
    Body(String),
    #[error("response body longer than its Content-Length")]
    TooLong,
    #[error("response body shorter than its Content-Length")]
    TooShort,
    #[error("the client closed the connection")]
    ClientGone,
}

pub(super) struct Writer {
    /// `None` once the body has ended (or when the framing carries none).
    body: Option<ProxyBody>,
    framing: Framing,
    /// Body bytes written, for `Content-Length` framing.
    sent: u64,
    /// The body failed; what is buffered goes out, then the connection is dropped.
    failed: Option<WriteError>,
}

impl Writer {
    pub(super) fn new(body: ProxyBody, framing: Framing) -> Self {
        let body = (framing != Framing::Empty).then_some(body);
        Self {
            body,
            framing,
            sent: 0,
            failed: None,
        }
    }

    /// Writes the head already in the buffer and the whole body; `Ready(Ok)` once all of it
    /// is written and flushed.
    pub(super) fn poll<I: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<I>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            let mut body_pending = false;
            while self.failed.is_none() && conn.wbuf.len() - conn.wpos < HIGH_WATER {
                let Some(body) = self.body.as_mut() else {
                    break;
                };
                match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => {
                        body_pending = true;
                        break;
                    }
                    Poll::Ready(None) => self.end(&mut conn.wbuf, None),
                    Poll::Ready(Some(Err(e))) => {
                        self.body = None;
                        self.failed = Some(WriteError::Body(e.to_string()));
                    }
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => self.data(&mut conn.wbuf, &data),
                        Err(frame) => {
                            let trailers = frame.into_trailers().ok();
                            self.end(&mut conn.wbuf, trailers);
                        }
                    },
                }
            }
            match conn.poll_write_all(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Ready(Ok(())) => {}
            }
            if let Some(e) = self.failed.take() {
                return Poll::Ready(Err(e));
            }
            if self.body.is_none() {
                return Poll::Ready(Ok(()));
            }
            if body_pending {
                return Poll::Pending;
            }
        }
    }

    fn data(&mut self, out: &mut Vec<u8>, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match &self.framing {
            Framing::Length(len) => {
                let room = len - self.sent;
                if data.len() as u64 > room {
                    out.extend_from_slice(&data[..room as usize]);
                    self.sent = *len;
                    self.body = None;
                    self.failed = Some(WriteError::TooLong);
                    return;
                }
                out.extend_from_slice(data);
                self.sent += data.len() as u64;
            }
            Framing::Chunked(_) => chunk(out, data),
            Framing::UntilClose => out.extend_from_slice(data),
            Framing::Empty => {}
        }
    }

    /// The body's end, with its trailers if it had any.
    fn end(&mut self, out: &mut Vec<u8>, trailers: Option<http::HeaderMap>) {
        self.body = None;
        match &self.framing {
            Framing::Length(len) if self.sent < *len => self.failed = Some(WriteError::TooShort),
            Framing::Chunked(allowed) => {
                let sent = trailers
                    .filter(|_| !allowed.is_empty())
                    .map(|t| allowed_trailers(&t, allowed))
                    .filter(|t| !t.is_empty());
                last_chunk(out, sent.as_ref());
            }
            _ => {}
        }
    }
}
