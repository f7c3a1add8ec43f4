//! One request stream: what the peer reads from it and writes to it.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tokio::sync::watch;

use super::splice::{StreamWire, Wire};
use super::wire::{hpack_literal, Frame};
use super::{pattern, ActiveBehaviour, Malformation, Shared};

/// Largest DATA payload the peer hands to `h2` at once.
const CHUNK: usize = 16 * 1024;

/// The special paths of normal mode (see the [module docs](super)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Echo,
    Slow(Duration),
    Bytes(u64),
    Status(StatusCode),
    Grpc,
    Early413,
    Informational,
    /// A special path whose number does not parse: answered with 400.
    BadPath,
}

impl Route {
    pub fn parse(path: &str) -> Route {
        if let Some(ms) = path.strip_prefix("/slow/") {
            return ms
                .parse()
                .map_or(Route::BadPath, |ms| Route::Slow(Duration::from_millis(ms)));
        }
        if let Some(n) = path.strip_prefix("/bytes/") {
            return n.parse().map_or(Route::BadPath, Route::Bytes);
        }
        if let Some(code) = path.strip_prefix("/status/") {
            return code
                .parse::<u16>()
                .ok()
                .filter(|code| (200..600).contains(code))
                .and_then(|code| StatusCode::from_u16(code).ok())
                .map_or(Route::BadPath, Route::Status);
        }
        match path {
            "/grpc" => Route::Grpc,
            "/early-413" => Route::Early413,
            "/1xx" => Route::Informational,
            _ => Route::Echo,
        }
    }
}

/// What a stream handler needs from its connection.
pub(super) struct StreamCtx {
    pub id: u32,
    pub conn_index: usize,
    pub peer: Arc<Shared>,
    pub behaviour: Arc<ActiveBehaviour>,
    pub wire: Arc<Wire>,
    /// The last-stream-id of the GOAWAY this connection sent, once it has sent one.
    pub goaway: watch::Receiver<Option<u32>>,
}

/// `h2` handles of a stream the peer deliberately leaves unanswered. Dropping them would make
/// `h2` reset the stream (RST_STREAM(CANCEL)), so the connection keeps them until it closes.
pub(super) struct Kept {
    _respond: SendResponse<Bytes>,
    _body: RecvStream,
}

/// Serves one request stream; returns the handles to keep if the stream is left unanswered.
pub(super) async fn serve(
    ctx: StreamCtx,
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) -> Option<Kept> {
    let exchange = Exchange {
        path: request.uri().path().to_owned(),
        body: request.into_body(),
        respond,
        ctx,
    };
    // An error means the client reset the stream or the connection failed: nothing left to do.
    exchange.run().await.ok().flatten()
}

struct Exchange {
    ctx: StreamCtx,
    path: String,
    body: RecvStream,
    respond: SendResponse<Bytes>,
}

type Result<T> = std::result::Result<T, h2::Error>;

impl Exchange {
    async fn run(mut self) -> Result<Option<Kept>> {
        if !self.passes_goaway().await? {
            return Ok(Some(self.keep()));
        }
        let behaviour = Arc::clone(&self.ctx.behaviour);
        let behaviour = &behaviour.behaviour;
        if behaviour.malformed_response_on.as_deref() == Some(self.path.as_str()) {
            return self.malformed(behaviour.malformation).await.map(Some);
        }
        let completed = if let Some(code) = behaviour.fail_all {
            self.read_body().await?;
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = format!("h2peer: fail_all {}\n", status.as_u16());
            self.reply(status, body.into()).await?;
            true
        } else if behaviour.reset_after_headers {
            self.reset_after_headers().await?;
            false
        } else if behaviour.reset_no_error_after_response {
            self.early_response(StatusCode::OK, b"h2peer: early response\n")
                .await?;
            true
        } else {
            self.route().await?;
            true
        };
        if let (true, Some(delay)) = (completed, behaviour.stray_frames_after_close) {
            self.stray_frames(delay).await;
        }
        Ok(None)
    }

    /// Whether a GOAWAY sent on this connection lets the stream be answered. With
    /// `goaway_in_flight` every stream waits until that GOAWAY has been sent.
    async fn passes_goaway(&mut self) -> Result<bool> {
        if self.ctx.behaviour.behaviour.goaway_in_flight.is_some() {
            let goaway = &mut self.ctx.goaway;
            let respond = &mut self.respond;
            tokio::select! {
                sent = goaway.wait_for(Option::is_some) => {
                    if sent.is_err() {
                        return Err(Reason::CANCEL.into());
                    }
                }
                reset = poll_fn(|cx| respond.poll_reset(cx)) => return Err(reset_error(reset)),
            }
        }
        let last = *self.ctx.goaway.borrow();
        Ok(last.is_none_or(|last| self.ctx.id <= last))
    }

    async fn route(&mut self) -> Result<()> {
        match Route::parse(&self.path) {
            Route::Echo => {
                let body = self.read_body().await?;
                self.reply(StatusCode::OK, body).await
            }
            Route::Slow(delay) => {
                let body = self.read_body().await?;
                self.sleep(delay).await?;
                self.reply(StatusCode::OK, body).await
            }
            Route::Bytes(len) => {
                self.read_body().await?;
                let end_now = len == 0;
                let mut send = self
                    .respond
                    .send_response(self.head(StatusCode::OK), end_now)?;
                if !end_now {
                    send_body(&mut send, len, true, pattern).await?;
                }
                self.ctx.peer.record_completed();
                Ok(())
            }
            Route::Status(status) => {
                self.read_body().await?;
                let body = if matches!(status.as_u16(), 204 | 304) {
                    Bytes::new()
                } else {
                    format!("h2peer: status {}\n", status.as_u16()).into()
                };
                self.reply(status, body).await
            }
            Route::Grpc => self.grpc().await,
            Route::Early413 => {
                self.early_response(StatusCode::PAYLOAD_TOO_LARGE, b"h2peer: body refused\n")
                    .await
            }
            Route::Informational => {
                self.respond
                    .send_informational(informational(StatusCode::CONTINUE))?;
                let mut hints = informational(StatusCode::EARLY_HINTS);
                hints.headers_mut().insert(
                    "link",
                    HeaderValue::from_static("</h2peer.css>; rel=preload; as=style"),
                );
                self.respond.send_informational(hints)?;
                let body = self.read_body().await?;
                self.reply(StatusCode::OK, body).await
            }
            Route::BadPath => {
                self.read_body().await?;
                let body = Bytes::from_static(b"h2peer: bad number in path\n");
                self.reply(StatusCode::BAD_REQUEST, body).await
            }
        }
    }

    /// Reads the whole request body, returning flow-control credit as it goes.
    async fn read_body(&mut self) -> Result<Bytes> {
        let mut body = BytesMut::new();
        while let Some(chunk) = self.body.data().await {
            let chunk = chunk?;
            self.body.flow_control().release_capacity(chunk.len())?;
            body.extend_from_slice(&chunk);
        }
        let body = body.freeze();
        self.ctx.peer.record_body(body.clone());
        Ok(body)
    }

    /// Response head with the `x-peer-conn` and `x-peer-stream` headers.
    fn head(&self, status: StatusCode) -> Response<()> {
        let mut head = Response::new(());
        *head.status_mut() = status;
        let headers = head.headers_mut();
        headers.insert("x-peer-conn", HeaderValue::from(self.ctx.conn_index));
        headers.insert("x-peer-stream", HeaderValue::from(self.ctx.id));
        head
    }

    /// A complete response: HEADERS, then `body` in DATA frames, the last with END_STREAM.
    async fn reply(&mut self, status: StatusCode, body: Bytes) -> Result<()> {
        let end_now = body.is_empty();
        let mut send = self.respond.send_response(self.head(status), end_now)?;
        if !end_now {
            send_bytes(&mut send, body, true).await?;
        }
        self.ctx.peer.record_completed();
        Ok(())
    }

    /// `/grpc`: echoes the body as a gRPC response ending in `grpc-status: 0` trailers.
    async fn grpc(&mut self) -> Result<()> {
        let body = self.read_body().await?;
        let mut head = self.head(StatusCode::OK);
        head.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        let mut send = self.respond.send_response(head, false)?;
        send_bytes(&mut send, body, false).await?;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
        send.send_trailers(trailers)?;
        self.ctx.peer.record_completed();
        Ok(())
    }

    /// Answers without reading the request body (RFC 9113 §8.1): a complete response, then,
    /// if the client is still sending, RST_STREAM(NO_ERROR) once the response is on the wire.
    async fn early_response(&mut self, status: StatusCode, body: &'static [u8]) -> Result<()> {
        let mut send = self.respond.send_response(self.head(status), false)?;
        send_bytes(&mut send, Bytes::from_static(body), true).await?;
        self.ctx.peer.record_completed();
        let (wire, id) = (&self.ctx.wire, self.ctx.id);
        // `h2` drops still-queued frames of a stream it resets, so wait for them to leave.
        wire.wait_for(id, StreamWire::server_done).await;
        if !wire.stream(id).client_ended {
            send.send_reset(Reason::NO_ERROR);
            // The handler ends once the RST_STREAM left h2 (or the body turned out complete and
            // h2 had nothing to reset), so a closing connection does not cut it off.
            wire.wait_for(id, |s| s.reset || s.client_ended).await;
        }
        Ok(())
    }

    /// HEADERS (200), one DATA frame, then RST_STREAM(INTERNAL_ERROR).
    async fn reset_after_headers(&mut self) -> Result<()> {
        self.read_body().await?;
        let partial = Bytes::from_static(b"h2peer: partial response\n");
        let len = partial.len();
        let mut send = self
            .respond
            .send_response(self.head(StatusCode::OK), false)?;
        send_bytes(&mut send, partial, false).await?;
        let (wire, id) = (&self.ctx.wire, self.ctx.id);
        wire.wait_for(id, |s| s.data_sent >= len || s.reset).await;
        send.send_reset(Reason::INTERNAL_ERROR);
        wire.wait_for(id, |s| s.reset).await;
        Ok(())
    }

    /// Reads the body, then writes an invalid response HEADERS (with END_STREAM) by hand.
    async fn malformed(mut self, malformation: Malformation) -> Result<Kept> {
        self.read_body().await?;
        let block = malformation.header_block();
        self.ctx
            .wire
            .inject(&[Frame::headers(self.ctx.id, block, true)]);
        Ok(self.keep())
    }

    /// Once the stream is over on the wire, waits `delay`, then writes a WINDOW_UPDATE and a
    /// DATA frame on it anyway.
    async fn stray_frames(&self, delay: Duration) {
        let (wire, id) = (&self.ctx.wire, self.ctx.id);
        wire.wait_for(id, StreamWire::server_done).await;
        tokio::time::sleep(delay).await;
        wire.inject(&[
            Frame::window_update(id, 1024),
            Frame::data(id, Bytes::from_static(b"stray"), false),
        ]);
    }

    /// Sleeps, unless the client resets the stream first.
    async fn sleep(&mut self, delay: Duration) -> Result<()> {
        let respond = &mut self.respond;
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            reset = poll_fn(|cx| respond.poll_reset(cx)) => Err(reset_error(reset)),
        }
    }

    fn keep(self) -> Kept {
        Kept {
            _respond: self.respond,
            _body: self.body,
        }
    }
}

impl Malformation {
    /// The HPACK block of the invalid response.
    fn header_block(self) -> Bytes {
        match self {
            Malformation::MissingStatus => hpack_literal(&[
                ("content-type", "text/plain"),
                ("x-peer-malformed", "missing-status"),
            ]),
            Malformation::ConnectionHeader => {
                hpack_literal(&[(":status", "200"), ("connection", "close")])
            }
            Malformation::UppercaseName => {
                hpack_literal(&[(":status", "200"), ("X-Peer-Malformed", "upper-case")])
            }
        }
    }
}

fn informational(status: StatusCode) -> Response<()> {
    let mut head = Response::new(());
    *head.status_mut() = status;
    head
}

/// The error a handler ends with when the client resets its stream.
fn reset_error(reset: Result<Reason>) -> h2::Error {
    reset.map_or_else(|e| e, h2::Error::from)
}

async fn send_bytes(send: &mut SendStream<Bytes>, body: Bytes, end_stream: bool) -> Result<()> {
    let len = body.len() as u64;
    send_body(send, len, end_stream, |offset, n| {
        // `offset + n <= len`, which came from a `usize`.
        let start = offset as usize;
        body.slice(start..start + n)
    })
    .await
}

/// Sends `len` bytes, produced by `chunk(offset, n)`, as DATA frames as fast as the client's
/// flow-control windows allow: reserve capacity, wait for `h2` to assign it, send what was
/// assigned. With `len == 0` it only ends the stream (if asked to), with an empty DATA frame.
async fn send_body(
    send: &mut SendStream<Bytes>,
    len: u64,
    end_stream: bool,
    chunk: impl Fn(u64, usize) -> Bytes,
) -> Result<()> {
    if len == 0 {
        if end_stream {
            send.send_data(Bytes::new(), true)?;
        }
        return Ok(());
    }
    let mut offset = 0;
    while offset < len {
        let wanted = usize::try_from(len - offset)
            .unwrap_or(usize::MAX)
            .min(CHUNK);
        send.reserve_capacity(wanted);
        let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(granted) => granted?,
            None => return Err(Reason::STREAM_CLOSED.into()),
        };
        let n = granted.min(wanted);
        if n == 0 {
            continue;
        }
        let last = offset + n as u64 == len;
        send.send_data(chunk(offset, n), end_stream && last)?;
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_paths_parse() {
        assert_eq!(
            Route::parse("/slow/250"),
            Route::Slow(Duration::from_millis(250))
        );
        assert_eq!(Route::parse("/bytes/70000"), Route::Bytes(70_000));
        assert_eq!(
            Route::parse("/status/503"),
            Route::Status(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(Route::parse("/status/101"), Route::BadPath);
        assert_eq!(Route::parse("/slow/soon"), Route::BadPath);
        assert_eq!(Route::parse("/grpc"), Route::Grpc);
        assert_eq!(Route::parse("/early-413"), Route::Early413);
        assert_eq!(Route::parse("/1xx"), Route::Informational);
        assert_eq!(Route::parse("/anything/else"), Route::Echo);
    }
}
