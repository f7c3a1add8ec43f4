//! weir's HTTP/1.1 server side: one client connection, its requests one after another
//! (pipelined ones in order). The connection's own task reads each head, runs the request on
//! the proxy, and writes the response; there is no task or channel per request. The request
//! body is read from the socket only as the request path asks for it, and keeps moving while
//! the response is written (a backend may answer before it has the whole body).

mod body;
mod feed;
mod request;
mod response;
mod write;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::{Method, Request};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::http1::{has_head_end, poll_read_more, MAX_HEAD_BYTES, READ_CHUNK};
use crate::proxy::body::{empty, ProxyBody};
use crate::proxy::ClientConn;
use crate::state::Dataplane;
use feed::Feeder;
use request::{Rejection, RequestHead};
use response::{Answering, BodyHint};
use write::Writer;

/// Bytes of pipelined requests read ahead while one is being served; beyond that the
/// connection stops reading until the current response is written.
const MAX_READ_AHEAD: usize = MAX_HEAD_BYTES;
/// How long a closing connection reads (and discards) what the client still sends, so that
/// the response is not destroyed by a reset for unread data.
const LINGER: Duration = Duration::from_secs(2);
/// Buffer capacity a connection keeps between requests; a larger one (left by a large
/// response or body) is given back, so that idle keep-alive connections stay small.
const IDLE_CAPACITY: usize = 2 * READ_CHUNK;
/// How long the rest of an unwanted request body may take to arrive before the connection
/// is closed instead of kept.
const DISCARD_TIME: Duration = Duration::from_secs(10);

/// The connection's socket and buffers.
struct Conn<I> {
    io: I,
    /// Bytes read from the client and not yet consumed.
    rbuf: BytesMut,
    /// Bytes to write: interim responses, the response head and body.
    wbuf: Vec<u8>,
    /// Progress through `wbuf`.
    wpos: usize,
    /// The client closed its side, or reading failed.
    read_closed: bool,
    /// The client closed its sending side with requests still to be answered.
    half_closed: bool,
    /// The request being served was already in the buffer when the previous response was
    /// done: the client pipelines, and a close of its sending side is a half-close.
    pipelined: bool,
}

impl<I> Conn<I> {
    /// Another request may still come: the client has not closed, or has but complete
    /// requests are still buffered (a pipelining client that half-closed after sending).
    fn more_may_come(&self) -> bool {
        !self.read_closed || !self.rbuf.is_empty()
    }

    fn shrink_idle(&mut self) {
        if self.wbuf.capacity() > IDLE_CAPACITY {
            self.wbuf = Vec::with_capacity(1024);
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > IDLE_CAPACITY {
            self.rbuf = BytesMut::new();
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<I> {
    /// Reads more of the client's bytes; `Ready(false)` when the client has closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.read_closed {
            return Poll::Ready(false);
        }
        match poll_read_more(&mut self.io, &mut self.rbuf, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(n)) if n > 0 => Poll::Ready(true),
            Poll::Ready(result) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "reading from the client failed");
                }
                self.read_closed = true;
                Poll::Ready(false)
            }
        }
    }

    /// Writes all of `wbuf`, then flushes.
    fn poll_write_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.wpos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

/// How waiting for a request head ended. Not boxed: the head moves once, into the request,
/// and a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
enum HeadRead {
    Request(RequestHead),
    Refused(Rejection),
    /// The client closed, the wait timed out, or the server is draining an idle connection.
    Closed,
}

/// What the connection does after an exchange.
enum Next {
    KeepAlive,
    /// Close after the last response (`linger`: the client may still be sending), or at
    /// once when no request is in progress.
    Close {
        linger: bool,
    },
    /// Drop the connection at once: the client is gone or the response could not be written.
    Abort,
}

/// Serves one client connection. `rbuf` holds what was read while telling HTTP/1.1 from
/// HTTP/2; `first_deadline` is when the first request head must be in (counted from the
/// accept); `drain` tells an idle connection to close and a busy one to close after its
/// response.
pub(super) async fn serve<I>(
    io: I,
    rbuf: BytesMut,
    client: ClientConn,
    dataplane: Arc<Dataplane>,
    drain: CancellationToken,
    header_timeout: Duration,
    first_deadline: Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        io,
        rbuf,
        wbuf: Vec::with_capacity(1024),
        wpos: 0,
        read_closed: false,
        half_closed: false,
        pipelined: false,
    };
    let mut waits = Waits {
        timeout: header_timeout,
        timer: Box::pin(tokio::time::sleep_until(first_deadline)),
        deadline: first_deadline,
        first: Some(first_deadline),
        drained: Box::pin(drain.cancelled_owned()),
        registered: false,
    };
    loop {
        conn.shrink_idle();
        let head = read_head(&mut conn, &mut waits, &dataplane).await;
        let next = match head {
            HeadRead::Request(head) => exchange(&mut conn, head, &client, &dataplane).await,
            HeadRead::Refused(rejection) => {
                tracing::debug!(client = %client.addr, %rejection, "refused a request head");
                conn.wbuf.clear();
                conn.wpos = 0;
                response::refusal(&mut conn.wbuf, rejection.status());
                Next::Close { linger: true }
            }
            HeadRead::Closed => Next::Close { linger: false },
        };
        match next {
            Next::KeepAlive => continue,
            Next::Close { linger } => return close(&mut conn, linger).await,
            Next::Abort => return,
        }
    }
}

/// What a connection waits on between requests, kept cheap to re-arm for each request: the
/// timer is only moved when it fires before the current deadline, and the drain signal is
/// registered once (the flag is read on every wait).
struct Waits {
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    deadline: Instant,
    /// The first head's deadline, counted from the accept.
    first: Option<Instant>,
    drained: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: bool,
}

impl Waits {
    /// The connection is idle and the server is draining.
    fn poll_drained(&mut self, cx: &mut Context<'_>, dataplane: &Dataplane) -> bool {
        if dataplane.is_draining() {
            return true;
        }
        if !self.registered {
            self.registered = true;
            return self.drained.as_mut().poll(cx).is_ready();
        }
        false
    }

    fn poll_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= self.deadline {
                return true;
            }
            let deadline = self.deadline;
            self.timer.as_mut().reset(deadline);
        }
        false
    }
}

/// Waits for the next complete request head. The header timeout runs from the first time
/// the wait would block (a pipelined head costs no timer at all).
async fn read_head<I: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<I>,
    waits: &mut Waits,
    dataplane: &Dataplane,
) -> HeadRead {
    let mut scanned = 0;
    let mut armed = false;
    let first = waits.first.take();
    // The first head's bytes were read by the protocol sniff; later ones already buffered
    // when the previous response ended were pipelined.
    let buffered_before = first.is_none() && !conn.rbuf.is_empty();
    poll_fn(|cx| loop {
        let buffered = conn.rbuf.len();
        if buffered > 0 && has_head_end(&conn.rbuf, scanned) {
            match request::parse(&mut conn.rbuf) {
                Ok(Some(head)) => {
                    conn.pipelined = buffered_before;
                    return Poll::Ready(HeadRead::Request(head));
                }
                Ok(None) => scanned = buffered,
                Err(rejection) => return Poll::Ready(HeadRead::Refused(rejection)),
            }
        } else if buffered > MAX_HEAD_BYTES {
            return Poll::Ready(HeadRead::Refused(Rejection::TooLarge));
        } else {
            scanned = buffered;
        }
        // Draining closes a connection between requests, not in the middle of a head.
        if conn.rbuf.is_empty() && waits.poll_drained(cx, dataplane) {
            return Poll::Ready(HeadRead::Closed);
        }
        match conn.poll_fill(cx) {
            Poll::Ready(true) => continue,
            Poll::Ready(false) => return Poll::Ready(HeadRead::Closed),
            Poll::Pending => {
                if !armed {
                    waits.deadline = first.unwrap_or_else(|| Instant::now() + waits.timeout);
                    armed = true;
                }
                if waits.poll_timed_out(cx) {
                    return Poll::Ready(HeadRead::Closed);
                }
                return Poll::Pending;
            }
        }
    })
    .await
}

/// One request: handed to the proxy with its body streaming from the socket, then the
/// response written.
async fn exchange<I: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<I>,
    head: RequestHead,
    client: &ClientConn,
    dataplane: &Dataplane,
) -> Next {
    let RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue,
    } = head;
    let head_method = parts.method == Method::HEAD;
    // A CONNECT is answered (405) and the connection closed: what follows is not HTTP.
    let connect = parts.method == Method::CONNECT;
    let version = parts.version;
    let (mut feeder, body) = match Feeder::start(framing, expect_continue) {
        Some((feeder, body)) => (Some(feeder), ProxyBody::new(body)),
        None => (None, empty()),
    };
    let mut dispatch = pin!(dataplane.handle(Request::from_parts(parts, body), client));
    let answer = poll_fn(|cx| {
        if let Poll::Ready(answer) = dispatch.as_mut().poll(cx) {
            return Poll::Ready(Some(answer));
        }
        match while_dispatching(conn, feeder.as_mut(), cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    let resp = match answer {
        Some(Ok(resp)) => resp,
        // Only an HTTP/2 client stream is ever refused; nothing to say to this one.
        Some(Err(_)) => return Next::Close { linger: true },
        None => {
            tracing::debug!(client = %client.addr, "client left before its response");
            return Next::Abort;
        }
    };

    let (parts, resp_body) = resp.into_parts();
    // Whether another request can follow is decided before the head, which says so.
    let body_spoilt = feeder.as_ref().is_some_and(Feeder::spoils_connection);
    let answering = Answering {
        version,
        head_method,
        keep_alive: keep_alive
            && !connect
            && !body_spoilt
            && conn.more_may_come()
            && !dataplane.is_draining(),
    };
    let hint = BodyHint {
        end_stream: resp_body.is_end_stream(),
        exact: resp_body.size_hint().exact(),
    };
    let (framing, keep_alive) = response::encode_head(
        &mut conn.wbuf,
        parts.status,
        &parts.headers,
        answering,
        hint,
    );
    let mut writer = Writer::new(resp_body, framing);
    let written = poll_fn(|cx| {
        // The rest of the request body keeps flowing while the response goes out; a client
        // that closes ends the response (a stream it no longer reads).
        if poll_client(conn, feeder.as_mut(), cx, false).is_ready() {
            return Poll::Ready(Err(write::WriteError::ClientGone));
        }
        writer.poll(conn, cx)
    })
    .await;
    if let Err(error) = written {
        tracing::debug!(client = %client.addr, %error, "response to the client not completed");
        return Next::Abort;
    }
    let body_read = match feeder.as_mut() {
        None => true,
        // Only worth reading on for a connection that is kept; a closing one lingers.
        Some(feeder) if !feeder.is_over() && keep_alive => finish_body(conn, feeder).await,
        Some(feeder) => feeder.is_complete(),
    };
    if keep_alive && body_read && conn.more_may_come() {
        Next::KeepAlive
    } else {
        Next::Close { linger: true }
    }
}

/// While the proxy works on a request: [`poll_client`], and write a pending `100 Continue`.
/// `Ready` when the client is gone.
fn while_dispatching<I: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<I>,
    feeder: Option<&mut Feeder>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let gone = poll_client(conn, feeder, cx, true);
    if !conn.wbuf.is_empty() {
        if let Poll::Ready(Err(_)) = conn.poll_write_all(cx) {
            return Poll::Ready(());
        }
    }
    gone
}

/// While a request is served: keep its body coming, and once it is in, watch for the client
/// closing (reading any pipelined requests). `Ready` when the client is gone.
fn poll_client<I: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<I>,
    feeder: Option<&mut Feeder>,
    cx: &mut Context<'_>,
    may_continue: bool,
) -> Poll<()> {
    if let Some(feeder) = feeder {
        if feeder.poll(conn, cx, may_continue).is_pending() {
            return Poll::Pending;
        }
    }
    // Whether a close (also one that cut the body short) means the client is gone is
    // read_ahead's rule: not when it pipelined.
    read_ahead(conn, cx)
}

/// Reads what the client sends after a request whose body is in (pipelined requests), up to
/// [`MAX_READ_AHEAD`]; `Ready` when the client has closed.
fn read_ahead<I: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<I>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    while conn.rbuf.len() < MAX_READ_AHEAD {
        match conn.poll_fill(cx) {
            Poll::Ready(true) => continue,
            // A close with requests still buffered is a client that only closed its sending
            // side after pipelining them: they are all served, then the connection closes.
            Poll::Ready(false) if conn.rbuf.is_empty() && !conn.half_closed && !conn.pipelined => {
                return Poll::Ready(())
            }
            Poll::Ready(false) => {
                conn.half_closed = true;
                return Poll::Pending;
            }
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Pending
}

/// After an early answer, reads the rest of the request body: handed on while the request
/// path still reads it, else dropped, so that the connection can carry the next request.
/// True if all of it came in time.
async fn finish_body<I: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<I>,
    feeder: &mut Feeder,
) -> bool {
    let rest = poll_fn(|cx| feeder.poll(conn, cx, false));
    matches!(
        tokio::time::timeout(DISCARD_TIME, rest).await,
        Ok(feed::End::Complete)
    )
}

/// Closes after the last response: writes what is left, shuts the write side, and, with
/// `linger`, reads and discards what the client still sends until it closes too (for
/// [`LINGER`] at most), so that its unread bytes do not turn the close into a reset that
/// destroys the response (RFC 9112 §9.6).
async fn close<I: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<I>, linger: bool) {
    let finish = async {
        if poll_fn(|cx| conn.poll_write_all(cx)).await.is_err() {
            return;
        }
        let _ = conn.io.shutdown().await;
        if linger && !conn.read_closed {
            let mut sink = vec![0u8; READ_CHUNK];
            while let Ok(1..) = conn.io.read(&mut sink).await {}
        }
    };
    let _ = tokio::time::timeout(LINGER, finish).await;
}
