//! One request on an HTTP/1.1 connection, up to the final response head: the head and body go
//! out while the connection is watched for the response, which a backend may send before it
//! has read the whole body (an early 413, say). Informational responses are skipped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Method;
use http_body::Body;
use tokio::io::AsyncWrite;

use super::codec::{self, RequestFraming, ResponseHead};
use super::H1Conn;
use crate::http1;
use crate::proxy::replay::AttemptBody;
use crate::upstream::error::Failure;

pub(super) enum Error {
    /// Not one byte of the request reached the socket.
    NotStarted(AttemptBody, String),
    Failed(Failure, String),
}

pub(super) struct Exchange<'a> {
    conn: &'a mut H1Conn,
    method: Method,
    upload: Upload,
    /// Bytes of the read buffer already searched for the end of the response head.
    scanned: usize,
}

/// The request going out: the head (already in the connection's write buffer), then the body.
/// A backend may answer before the body is done (an echo, or an early error), so the response
/// body keeps sending the rest while the client reads the response.
pub(super) struct Upload {
    /// Kept whole until the first byte is written, so a request that never went out can go
    /// to another connection with its body.
    body: Option<AttemptBody>,
    framing: RequestFraming,
    body_done: bool,
    body_sent: u64,
    /// Progress through `conn.wbuf`.
    pos: usize,
    flushed: bool,
    written_any: bool,
    /// The whole request is written and flushed.
    sent: bool,
    /// A write failed after part of the request went out: only the response can still come.
    write_failed: Option<String>,
}

impl<'a> Exchange<'a> {
    pub(super) fn new(
        conn: &'a mut H1Conn,
        head: &http::request::Parts,
        body: AttemptBody,
    ) -> Self {
        let framing = RequestFraming::choose(
            &head.headers,
            body.is_end_stream(),
            body.size_hint().exact(),
        );
        let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
        conn.wbuf.clear();
        codec::encode_head(&mut conn.wbuf, &head.method, target, &head.headers, framing);
        let upload = Upload {
            body: Some(body),
            body_done: framing == RequestFraming::Empty,
            framing,
            body_sent: 0,
            pos: 0,
            flushed: false,
            written_any: false,
            sent: false,
            write_failed: None,
        };
        Self {
            conn,
            method: head.method.clone(),
            upload,
            scanned: 0,
        }
    }

    /// Reads until a final response head is complete.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<ResponseHead, Error>> {
        loop {
            // Parse only once the blank line that ends a head is in: a head that trickles in
            // byte by byte is scanned once, not parsed again from the start on every read.
            let buffered = self.conn.rbuf.len();
            if buffered > 0 && crate::http1::has_head_end(&self.conn.rbuf, self.scanned) {
                match codec::parse_head(&mut self.conn.rbuf, &self.method) {
                    Ok(Some(head)) => {
                        self.scanned = 0;
                        if head.status.is_informational() {
                            continue;
                        }
                        return Poll::Ready(Ok(head));
                    }
                    Ok(None) => self.scanned = buffered,
                    Err(e) => {
                        return Poll::Ready(Err(Error::Failed(Failure::Malformed, e.to_string())))
                    }
                }
            } else if buffered > crate::http1::MAX_HEAD_BYTES {
                let e = codec::HeadError::TooLarge;
                return Poll::Ready(Err(Error::Failed(Failure::Malformed, e.to_string())));
            } else {
                self.scanned = buffered;
            }
            match self.conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    let (failure, what) = if self.conn.rbuf.is_empty() {
                        (
                            Failure::EmptyResponse,
                            "connection closed before a response",
                        )
                    } else {
                        (
                            Failure::Malformed,
                            "connection closed in the middle of the response head",
                        )
                    };
                    let detail = match &self.upload.write_failed {
                        Some(w) => format!("{what} (writing the request failed: {w})"),
                        None => what.to_string(),
                    };
                    return Poll::Ready(Err(Error::Failed(failure, detail)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(Error::Failed(Failure::EmptyResponse, e.to_string())))
                }
            }
        }
    }
}

impl Exchange<'_> {
    /// The upload, for the response body to finish.
    pub(super) fn into_upload(self) -> Upload {
        self.upload
    }
}

impl Future for Exchange<'_> {
    /// The final response head.
    type Output = Result<ResponseHead, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Err(e) = this.upload.poll_rest(this.conn, cx) {
            // The client's body failed; a response the backend already sent still counts.
            if this.upload.written_any {
                if let Poll::Ready(Ok(head)) = this.poll_head(cx) {
                    return Poll::Ready(Ok(head));
                }
            }
            return Poll::Ready(Err(e));
        }
        // Nothing on the wire yet: no response can come.
        if !this.upload.written_any {
            return Poll::Pending;
        }
        this.poll_head(cx)
    }
}

impl Upload {
    /// Writes what is buffered, then the next body frame, until something would block.
    /// `Ready(Err)` ends the exchange; `Ready(Ok)` means the request is all written.
    fn poll_send(&mut self, conn: &mut H1Conn, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            while self.pos < conn.wbuf.len() {
                let written = Pin::new(&mut conn.io).poll_write(cx, &conn.wbuf[self.pos..]);
                match written {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(self.write_error("wrote zero bytes".into()))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.pos += n;
                        self.written_any = true;
                        self.flushed = false;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(self.write_error(e.to_string())),
                }
            }
            conn.wbuf.clear();
            self.pos = 0;
            if !self.flushed {
                match Pin::new(&mut conn.io).poll_flush(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => self.flushed = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(self.write_error(e.to_string())),
                }
            }
            if self.body_done {
                return Poll::Ready(Ok(()));
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    // Said once; the upload is over (a response may still be read).
                    self.write_failed = Some(format!("the client's request body failed: {e}"));
                    return Poll::Ready(Err(Error::Failed(Failure::RequestBody, e.to_string())));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => self.encode_data(conn, &data)?,
                    Err(frame) => {
                        // Trailers end the body; only the chunked coding can carry them.
                        if self.framing == RequestFraming::Chunked {
                            http1::last_chunk(&mut conn.wbuf, frame.trailers_ref());
                        }
                        self.end_body()?;
                    }
                },
                Poll::Ready(None) => {
                    if self.framing == RequestFraming::Chunked {
                        http1::last_chunk(&mut conn.wbuf, None);
                    }
                    self.end_body()?;
                }
            }
        }
    }

    fn encode_data(&mut self, conn: &mut H1Conn, data: &[u8]) -> Result<(), Error> {
        self.body_sent += data.len() as u64;
        match self.framing {
            RequestFraming::Length(len) if self.body_sent > len => {
                return Err(Error::Failed(
                    Failure::RequestBody,
                    "request body longer than its Content-Length".into(),
                ))
            }
            RequestFraming::Chunked => {
                http1::chunk(&mut conn.wbuf, data);
                return Ok(());
            }
            _ => {}
        }
        conn.wbuf.extend_from_slice(data);
        Ok(())
    }

    fn end_body(&mut self) -> Result<(), Error> {
        self.body_done = true;
        match self.framing {
            RequestFraming::Length(len) if self.body_sent < len => Err(Error::Failed(
                Failure::RequestBody,
                "request body shorter than its Content-Length".into(),
            )),
            _ => Ok(()),
        }
    }

    fn write_error(&mut self, detail: String) -> Result<(), Error> {
        if !self.written_any {
            if let Some(body) = self.body.take() {
                return Err(Error::NotStarted(body, detail));
            }
        }
        // Part of the request is out; the backend may still answer (it may have stopped
        // reading because it already has).
        self.write_failed = Some(detail);
        Ok(())
    }

    /// The whole request is written and flushed.
    pub(super) fn is_sent(&self) -> bool {
        self.sent
    }

    /// Drives the rest of the request while the response is being read. `Err` is a failure of
    /// the client's body; a failed write only stops the upload.
    pub(super) fn poll_rest(
        &mut self,
        conn: &mut H1Conn,
        cx: &mut Context<'_>,
    ) -> Result<(), Error> {
        if self.sent || self.write_failed.is_some() {
            return Ok(());
        }
        if let Poll::Ready(result) = self.poll_send(conn, cx) {
            result?;
            self.sent = self.write_failed.is_none();
        }
        Ok(())
    }
}
