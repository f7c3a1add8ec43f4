//! weir's HTTP/2 server for client connections (RFC 9113).
//!
//! One task per connection owns the socket and every stream's protocol state. It runs the
//! proxy's handler for each request stream itself, then polls the response body, both with a
//! waker that names the stream: what woke is polled on the same task, without a hand-off, and
//! a stream that ends early simply drops its handler. Request bodies reach the handler through a
//! small slot per stream (`body`); what handlers and bodies need to tell the task travels in
//! `shared`.

mod body;
mod frames;
mod request;
mod respond;
mod shared;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::poll_fn;
use http::Response;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::h2::conn::{ConnError, Output, Partial, PeerSettings, RecvWindow};
use crate::h2::frame::{self, setting, Reason};
use crate::h2::hpack::{Decoder, Encoder};
use crate::h2::message::MAX_HEADER_LIST;
use crate::proxy::body::ProxyBody;
use crate::proxy::{ClientConn, Refused};
use crate::state::Dataplane;
use shared::Shared;

/// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
const MAX_STREAMS: usize = 256;
/// The receive window announced for each stream (SETTINGS_INITIAL_WINDOW_SIZE).
pub(super) const STREAM_WINDOW: u32 = 1 << 20;
/// The connection's receive window, raised from 65,535 right after weir's SETTINGS.
pub(super) const CONN_WINDOW: u32 = 4 << 20;
const MAX_FRAME: usize = frame::DEFAULT_MAX_FRAME;
const MAX_BLOCK: usize = 2 * MAX_HEADER_LIST;
const WRITE_HIGH_WATER: usize = 256 << 10;
const READ_CHUNK: usize = 16 << 10;
/// Rounds of work before the task yields to others on its thread.
const BUDGET: usize = 32;
/// Idle time before a PING checks that the client is still there, and how long its ACK may take.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Frames that do nothing (empty DATA, unknown types, stray frames on closed streams)
/// tolerated per [`USELESS_WINDOW`] before the connection is closed with ENHANCE_YOUR_CALM.
const MAX_USELESS_FRAMES: u32 = 10_000;
const USELESS_WINDOW: Duration = Duration::from_secs(10);
/// Streams the client may reset before their response, beyond the ones it completed
/// (a guard against the rapid-reset attack, CVE-2023-44487).
const MAX_EARLY_RESETS: u32 = 200;
/// How long closing may take at each step: flushing the last frames, shutting the sending
/// side, and lingering to read what the client still sends (at most [`LINGER_BYTES`]).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 << 10;

/// The proxy's work on one request, polled by the connection's task.
type Handler = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Refused>> + Send>>;

/// Serves one HTTP/2 client connection until it ends or, after `drain`, its streams are done.
pub(super) async fn serve<I>(
    io: I,
    client: ClientConn,
    dataplane: Arc<Dataplane>,
    drain: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = client.addr;
    let mut conn = Conn::new(io, client, dataplane, drain);
    match poll_fn(|cx| conn.poll_serve(cx)).await {
        Ended::Finished => conn.close().await,
        Ended::Broken(why) => {
            tracing::debug!(client = %addr, why, "HTTP/2 client broke the protocol");
            conn.close().await;
        }
        Ended::Gone(why) if !why.is_empty() => {
            tracing::debug!(client = %addr, why, "HTTP/2 client connection ended");
        }
        Ended::Gone(_) => {}
    }
}

/// What a stream's response side is doing.
enum Sending {
    /// The handler is working on the response (dropping it cancels the request).
    Handling(Handler),
    /// Streaming the response body; a chunk the windows did not let out yet.
    Body {
        body: ProxyBody,
        held: Option<Bytes>,
    },
    Done,
}

struct Stream {
    /// The request body's slot, while the client is still sending it.
    inbound: Option<body::Slot>,
    recv_window: i64,
    recv_end: bool,
    expected: Option<u64>,
    received: u64,
    send_window: i64,
    sending: Sending,
    /// Wakes the connection's task for this stream (its handler or its response body).
    waker: Waker,
}

enum Keepalive {
    /// Waiting out the idle interval; `active` notes traffic since it was armed.
    Idle { active: bool },
    /// A PING is out; the client has until the timer fires to answer it.
    Pinged,
}

struct Conn<IO> {
    io: IO,
    dataplane: Arc<Dataplane>,
    client: Arc<ClientConn>,
    shared: Arc<Shared>,
    drain: Pin<Box<WaitForCancellationFutureOwned>>,
    rbuf: BytesMut,
    out: Output,
    scratch: Vec<u8>,
    preface_done: bool,
    settings_seen: bool,
    decoder: Decoder,
    /// The client's dynamic table as weir's response encoder fills it.
    encoder: Encoder,
    streams: HashMap<u32, Stream, foldhash::fast::RandomState>,
    /// Streams whose response body is to be polled this round.
    ready: Vec<u32>,
    /// Streams waiting for the connection's send window to open.
    conn_blocked: Vec<u32>,
    /// The highest stream id the client opened.
    last_id: u32,
    peer: PeerSettings,
    conn_send_window: i64,
    recv: RecvWindow,
    partial: Option<Partial>,
    /// The last-stream-id of the GOAWAY weir sent when draining.
    goaway_sent: Option<u32>,
    keepalive: Keepalive,
    timer: Pin<Box<Sleep>>,
    useless: u32,
    useless_since: tokio::time::Instant,
    early_resets: u32,
    completed: u32,
    /// Recently closed streams, and whether weir reset them (frames still in flight on those
    /// are ignored; on the others they are an error).
    closed: VecDeque<(u32, bool)>,
}

/// How many closed streams are remembered: twice the streams that may be open at once.
const CLOSED_MEMORY: usize = 2 * MAX_STREAMS;

/// Why the connection ends abnormally.
type End = &'static str;

enum Stop {
    Conn(ConnError),
    Closed(End),
}

impl From<ConnError> for Stop {
    fn from(e: ConnError) -> Self {
        Stop::Conn(e)
    }
}

impl<IO> Conn<IO> {
    fn new(
        io: IO,
        client: ClientConn,
        dataplane: Arc<Dataplane>,
        drain: CancellationToken,
    ) -> Self {
        let mut out = Output::new(READ_CHUNK);
        frame::write_settings(
            &mut out.buf,
            &[
                (setting::MAX_CONCURRENT_STREAMS, MAX_STREAMS as u32),
                (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
            ],
        );
        frame::write_window_update(&mut out.buf, 0, CONN_WINDOW - frame::DEFAULT_WINDOW as u32);
        Conn {
            io,
            dataplane,
            client: Arc::new(client),
            shared: Arc::new(Shared::default()),
            drain: Box::pin(drain.cancelled_owned()),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            out,
            scratch: Vec::with_capacity(256),
            preface_done: false,
            settings_seen: false,
            decoder: Decoder::new(4096),
            encoder: Encoder::new(4096),
            streams: HashMap::default(),
            ready: Vec::new(),
            conn_blocked: Vec::new(),
            last_id: 0,
            peer: PeerSettings::default(),
            conn_send_window: frame::DEFAULT_WINDOW,
            recv: RecvWindow::new(CONN_WINDOW),
            partial: None,
            goaway_sent: None,
            keepalive: Keepalive::Idle { active: false },
            timer: Box::pin(tokio::time::sleep(KEEPALIVE_INTERVAL)),
            useless: 0,
            useless_since: tokio::time::Instant::now(),
            early_resets: 0,
            completed: 0,
            closed: VecDeque::with_capacity(CLOSED_MEMORY),
        }
    }

    /// Draining, and nothing is left to answer or write.
    fn finished(&self) -> bool {
        self.goaway_sent.is_some() && self.streams.is_empty() && self.out.idle()
    }
}

/// How serving a connection ended.
enum Ended {
    /// Drained and every stream answered: close politely.
    Finished,
    /// A protocol error; GOAWAY is queued: get it out, then close.
    Broken(&'static str),
    /// The client closed, the socket failed, or the keepalive went unanswered.
    Gone(&'static str),
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        for _ in 0..BUDGET {
            match self.round(cx) {
                Ok(true) => continue,
                Ok(false) if self.finished() => return Poll::Ready(Ended::Finished),
                Ok(false) => return Poll::Pending,
                Err(Stop::Conn(e)) => {
                    let last = self.goaway_sent.unwrap_or(self.last_id);
                    frame::write_goaway(&mut self.out.buf, last, e.reason);
                    return Poll::Ready(Ended::Broken(e.why));
                }
                Err(Stop::Closed(why)) => return Poll::Ready(Ended::Gone(why)),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Ends a connection weir closes: what is queued (a GOAWAY last) goes out, the sending
    /// side shuts (TLS close_notify), and what the client still sends is read and dropped for
    /// a moment, so unread bytes do not make the kernel reset the connection over the last
    /// frames before the client has read them.
    async fn close(&mut self) {
        self.abandon_all();
        let flush = poll_fn(|cx| loop {
            match self.out.poll_send(&mut self.io, cx, 4 * WRITE_HIGH_WATER) {
                Err(()) => return Poll::Ready(false),
                Ok(_) if self.out.idle() => return Poll::Ready(true),
                Ok(true) => continue,
                Ok(false) => return Poll::Pending,
            }
        });
        if !matches!(tokio::time::timeout(CLOSE_GRACE, flush).await, Ok(true)) {
            return;
        }
        if tokio::time::timeout(CLOSE_GRACE, self.io.shutdown())
            .await
            .is_err()
        {
            return;
        }
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        let linger = async {
            while left > 0 {
                match self.io.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, linger).await;
    }

    /// Every stream fails now: its handler stops, its request body reports the close.
    fn abandon_all(&mut self) {
        self.fail_bodies();
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    fn round(&mut self, cx: &mut Context<'_>) -> Result<bool, Stop> {
        let mut progress = false;
        self.shared.register(cx.waker());
        if self.goaway_sent.is_none() && self.drain.as_mut().poll(cx).is_ready() {
            self.start_drain();
            progress = true;
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.on_timer()?;
            progress = true;
        }
        self.events();
        if !self.ready.is_empty() {
            progress |= self.pump_ready();
        }
        if self.out.pending() < WRITE_HIGH_WATER {
            if self.rbuf.capacity() - self.rbuf.len() < MAX_FRAME / 2 {
                self.rbuf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => return Err(Stop::Closed("")),
                Poll::Ready(Ok(_)) => {
                    if let Keepalive::Idle { active } = &mut self.keepalive {
                        *active = true;
                    }
                    self.frames()?;
                    progress = true;
                }
                Poll::Ready(Err(_)) => return Err(Stop::Closed("read failed")),
                Poll::Pending => {}
            }
        }
        match self.out.poll_send(&mut self.io, cx, 4 * WRITE_HIGH_WATER) {
            Ok(moved) => progress |= moved,
            Err(()) => return Err(Stop::Closed("write failed")),
        }
        Ok(progress)
    }

    /// GOAWAY naming the last stream the client opened: those are answered, later ones not.
    fn start_drain(&mut self) {
        self.goaway_sent = Some(self.last_id);
        frame::write_goaway(&mut self.out.buf, self.last_id, Reason::NO_ERROR);
    }

    fn on_timer(&mut self) -> Result<(), Stop> {
        match self.keepalive {
            Keepalive::Idle { active: true } => {
                self.keepalive = Keepalive::Idle { active: false };
                self.timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + KEEPALIVE_INTERVAL);
            }
            Keepalive::Idle { active: false } => {
                frame::write_ping(&mut self.out.buf, false, *b"weir-ka\0");
                self.keepalive = Keepalive::Pinged;
                self.timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + KEEPALIVE_TIMEOUT);
            }
            Keepalive::Pinged => return Err(Stop::Closed("keepalive PING unanswered")),
        }
        Ok(())
    }

    /// Credit the request bodies handed back, and queue the response bodies that woke.
    fn events(&mut self) {
        let (ready, release) = {
            let mut ev = self.shared.events();
            (
                std::mem::take(&mut ev.ready),
                std::mem::take(&mut ev.release),
            )
        };
        for id in release {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            let Some(inbound) = &s.inbound else { continue };
            let n = body::lock(inbound).take_release();
            if n > 0 && !s.recv_end {
                frame::write_window_update(&mut self.out.buf, id, n);
                s.recv_window += i64::from(n);
            }
        }
        let n = self.shared.credit.swap(0, Ordering::AcqRel);
        self.credit_conn(n);
        if self.ready.is_empty() {
            self.ready = ready;
        } else {
            self.ready.extend(ready);
        }
    }

    fn credit_conn(&mut self, n: u32) {
        self.recv.credit(n, &mut self.out.buf);
    }

    /// Forgets stream `id` once both sides are done.
    fn maybe_remove(&mut self, id: u32) {
        if let Some(s) = self.streams.get(&id) {
            if s.recv_end && matches!(s.sending, Sending::Done) {
                self.streams.remove(&id);
                self.remember_closed(id, false);
            }
        }
    }

    fn remember_closed(&mut self, id: u32, reset_by_us: bool) {
        if self.closed.len() == CLOSED_MEMORY {
            self.closed.pop_front();
        }
        self.closed.push_back((id, reset_by_us));
    }

    /// For a closed stream: `Some(true)` if weir reset it, `Some(false)` if it closed
    /// otherwise, `None` if it is not remembered.
    fn closed_how(&self, id: u32) -> Option<bool> {
        self.closed
            .iter()
            .rev()
            .find(|(c, _)| *c == id)
            .map(|(_, r)| *r)
    }

    /// Ends stream `id` now: RST_STREAM with `reason`, the handler (if any) stopped, the
    /// request body told why.
    fn reset(&mut self, id: u32, reason: Reason, why: &'static str) {
        if let Some(s) = self.streams.remove(&id) {
            frame::write_rst_stream(&mut self.out.buf, id, reason);
            self.remember_closed(id, true);
            let early = !matches!(s.sending, Sending::Done);
            let clients_doing = !matches!(
                reason,
                Reason::NO_ERROR | Reason::REFUSED_STREAM | Reason::INTERNAL_ERROR
            );
            if early && clients_doing {
                // The client made weir reset a stream it had started working on.
                self.early_resets += 1;
            }
            self.abandon(s, why);
        }
    }

    fn abandon(&mut self, s: Stream, why: &'static str) {
        if let Some(inbound) = &s.inbound {
            let mut b = body::lock(inbound);
            if !b.end {
                b.error = Some(why);
            }
            b.wake();
        }
    }
}

impl<IO> Drop for Conn<IO> {
    fn drop(&mut self) {
        self.fail_bodies();
    }
}

impl<IO> Conn<IO> {
    /// The connection is gone: request bodies still being read fail instead of waiting.
    fn fail_bodies(&mut self) {
        for (_, s) in self.streams.drain() {
            if let Some(inbound) = &s.inbound {
                let mut b = body::lock(inbound);
                if !b.end {
                    b.error = Some("client connection closed");
                }
                b.wake();
            }
        }
    }
}
