//! The task that owns one HTTP/2 connection to a backend: it frames requests, applies the
//! peer's SETTINGS and flow control, decodes responses into their streams' slots, and decides
//! what each way a connection or stream can end means for the requests on it.
//!
//! Requests talk to it through an unbounded command queue (bounded in practice by the stream
//! slots and the upload high-water mark); it answers through each stream's slot.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{Response, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use super::head::{Block, Collect, MAX_HEADER_LIST};
use super::stream::{Stream, StreamError};
use super::H2Conn;
use crate::h2::frame::{self, flag, kind, setting, Head, Reason};
use crate::h2::hpack::{Decoder, TableUpdate};
use crate::upstream::error::Failure;

/// The receive window weir announces for each stream (SETTINGS_INITIAL_WINDOW_SIZE).
pub(super) const STREAM_WINDOW: u32 = 1 << 20;
/// The connection's receive window, raised from 65,535 right after the preface.
pub(super) const CONN_WINDOW: u32 = 4 << 20;
/// The largest frame weir accepts: the default, as it announces no other.
const MAX_FRAME: usize = frame::DEFAULT_MAX_FRAME;
/// The most bytes a header block may take across its HEADERS and CONTINUATION frames.
const MAX_BLOCK: usize = 2 * MAX_HEADER_LIST;
/// Frames are not taken from streams' queues while this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 256 << 10;
const READ_CHUNK: usize = 16 << 10;
/// Rounds of work before the task yields to others on its thread.
const BUDGET: usize = 32;
const HIGHEST_STREAM: u32 = (1 << 31) - 1;

/// What a request asks of the connection.
pub(super) enum Command {
    Open(Open),
    /// Request body data, or (empty, true) to end the request.
    Data(Arc<Stream>, Bytes, bool),
    /// A trailer block, already encoded; ends the request.
    Trailers(Arc<Stream>, Vec<u8>),
    /// Send the stream's consumed bytes back as a WINDOW_UPDATE.
    Release(Arc<Stream>),
    /// The connection-level credit built up: send it.
    Credit,
    Reset(Arc<Stream>, Reason),
    /// A keepalive PING; answered when its ACK arrives.
    Ping(oneshot::Sender<()>),
}

pub(super) struct Open {
    pub(super) block: Vec<u8>,
    pub(super) end_stream: bool,
    pub(super) head_request: bool,
    pub(super) stream: Arc<Stream>,
}

/// The requests' side of the command queue.
#[derive(Clone)]
pub(super) struct Handle {
    tx: mpsc::UnboundedSender<Command>,
    pub(super) credit: Arc<AtomicU32>,
}

impl Handle {
    /// False once the connection task is gone.
    pub(super) fn send(&self, command: Command) -> bool {
        self.tx.send(command).is_ok()
    }
}

/// What is waiting to go out on a stream, in order.
enum Out {
    Data(Bytes, bool),
    Trailers(Vec<u8>),
}

struct Entry {
    stream: Arc<Stream>,
    send_window: i64,
    recv_window: i64,
    out: VecDeque<Out>,
    sent_end: bool,
    recv_end: bool,
    head_seen: bool,
    head_request: bool,
    /// The response's Content-Length, checked against its DATA.
    expected: Option<u64>,
    received: u64,
}

/// An error that ends the connection: GOAWAY with `reason`.
#[derive(Debug)]
struct ConnError {
    reason: Reason,
    why: &'static str,
}

fn conn_error(reason: Reason, why: &'static str) -> ConnError {
    ConnError { reason, why }
}

/// How the task ended; the label for the close metric.
pub(super) type Exit = &'static str;

/// A header block being collected across CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: BytesMut,
}

pub(super) struct Driver<IO> {
    io: IO,
    conn: Arc<H2Conn>,
    rx: mpsc::UnboundedReceiver<Command>,
    rx_closed: bool,
    credit: Arc<AtomicU32>,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    wpos: usize,
    needs_flush: bool,
    decoder: Decoder,
    streams: HashMap<u32, Entry, foldhash::fast::RandomState>,
    /// The next stream id to use; ids below it were opened by us.
    next_id: u32,
    /// Opens beyond the peer's stream limit, waiting for a stream to end.
    waiting: VecDeque<Open>,
    /// Streams with something in `out`, in the order they get to send.
    sendable: VecDeque<u32>,
    settings_seen: bool,
    peer_max_streams: usize,
    peer_initial_window: i64,
    peer_max_frame: usize,
    conn_send_window: i64,
    conn_recv_window: i64,
    /// Connection credit collected and not yet sent.
    conn_credit: u32,
    partial: Option<Partial>,
    /// The last-stream-id of a GOAWAY the peer sent.
    goaway: Option<u32>,
    pings: VecDeque<(u64, oneshot::Sender<()>)>,
    ping_seq: u64,
    table_update: TableUpdate,
}

/// Writes the preface and weir's SETTINGS and returns the task and its handle.
pub(super) fn start<IO>(io: IO, conn: Arc<H2Conn>) -> (Driver<IO>, Handle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let credit = Arc::new(AtomicU32::new(0));
    let mut wbuf = Vec::with_capacity(READ_CHUNK);
    wbuf.extend_from_slice(frame::PREFACE);
    frame::write_settings(
        &mut wbuf,
        &[
            (setting::ENABLE_PUSH, 0),
            (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
        ],
    );
    frame::write_window_update(&mut wbuf, 0, CONN_WINDOW - frame::DEFAULT_WINDOW as u32);
    let driver = Driver {
        io,
        conn,
        rx,
        rx_closed: false,
        credit: credit.clone(),
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        wbuf,
        wpos: 0,
        needs_flush: false,
        decoder: Decoder::new(4096),
        streams: HashMap::default(),
        next_id: 1,
        waiting: VecDeque::new(),
        sendable: VecDeque::new(),
        settings_seen: false,
        peer_max_streams: usize::MAX,
        peer_initial_window: frame::DEFAULT_WINDOW,
        peer_max_frame: frame::DEFAULT_MAX_FRAME,
        conn_send_window: frame::DEFAULT_WINDOW,
        conn_recv_window: i64::from(CONN_WINDOW),
        conn_credit: 0,
        partial: None,
        goaway: None,
        pings: VecDeque::new(),
        ping_seq: 0,
        table_update: TableUpdate::NotNeeded,
    };
    (driver, Handle { tx, credit })
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Future for Driver<IO> {
    type Output = Exit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Exit> {
        let this = &mut *self;
        for _ in 0..BUDGET {
            match this.round(cx) {
                Ok(true) => continue,
                Ok(false) => {
                    if this.finished() {
                        return Poll::Ready(if this.goaway.is_some() {
                            "goaway"
                        } else {
                            "no-requests"
                        });
                    }
                    return Poll::Pending;
                }
                Err(Ended::Conn(e)) => {
                    tracing::debug!(addr = %this.conn.addr, why = e.why, "HTTP/2 backend broke the protocol");
                    this.fail_all(Failure::Malformed);
                    // A client accepts no streams from the server: last-stream-id 0.
                    frame::write_goaway(&mut this.wbuf, 0, e.reason);
                    // One attempt to tell the peer why; the connection closes either way.
                    let _ = Pin::new(&mut this.io).poll_write(cx, &this.wbuf[this.wpos..]);
                    let _ = Pin::new(&mut this.io).poll_flush(cx);
                    return Poll::Ready("protocol-error");
                }
                Err(Ended::Closed(exit)) => {
                    this.fail_all(this.closed_failure());
                    return Poll::Ready(exit);
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

enum Ended {
    Conn(ConnError),
    /// The peer closed the connection, or it failed.
    Closed(Exit),
}

impl From<ConnError> for Ended {
    fn from(e: ConnError) -> Self {
        Ended::Conn(e)
    }
}

impl<IO> Drop for Driver<IO> {
    fn drop(&mut self) {
        // Aborted (the pool closed the connection) or finished: nothing may wait on it.
        let failure = self.closed_failure();
        self.fail_all(failure);
    }
}

impl<IO> Driver<IO> {
    /// What a stream learns when the connection closes under it before its response.
    fn closed_failure(&self) -> Failure {
        if self.settings_seen {
            Failure::EmptyResponse
        } else {
            Failure::ClosedBeforeSettings
        }
    }

    /// Ends every stream: those whose HEADERS went out with `opened`, the rest as not sent.
    fn fail_all(&mut self, opened: Failure) {
        let unsent = if self.settings_seen {
            Failure::NotSent
        } else {
            Failure::ClosedBeforeSettings
        };
        for (_, e) in self.streams.drain() {
            e.stream.lock().fail(StreamError {
                failure: opened,
                opened: true,
            });
        }
        for open in self.waiting.drain(..) {
            open.stream.lock().fail(StreamError {
                failure: unsent,
                opened: false,
            });
        }
        self.rx.close();
        while let Ok(command) = self.rx.try_recv() {
            if let Command::Open(open) = command {
                open.stream.lock().fail(StreamError {
                    failure: unsent,
                    opened: false,
                });
            }
        }
    }

    /// Nothing left to do: the requests are gone (or the peer sent GOAWAY) and no stream is
    /// open or waiting.
    fn finished(&self) -> bool {
        (self.rx_closed || self.goaway.is_some())
            && self.streams.is_empty()
            && self.waiting.is_empty()
            && self.wpos >= self.wbuf.len()
            && !self.needs_flush
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Driver<IO> {
    /// One round of commands, reads and writes; whether anything moved.
    fn round(&mut self, cx: &mut Context<'_>) -> Result<bool, Ended> {
        let mut progress = false;
        while !self.rx_closed {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(command)) => {
                    self.command(command);
                    progress = true;
                }
                Poll::Ready(None) => self.rx_closed = true,
                Poll::Pending => break,
            }
        }
        self.collect_credit();
        if self.wbuf.len() - self.wpos < WRITE_HIGH_WATER {
            if self.rbuf.capacity() - self.rbuf.len() < MAX_FRAME / 2 {
                self.rbuf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => return Err(Ended::Closed("peer-closed")),
                Poll::Ready(Ok(_)) => {
                    self.frames()?;
                    progress = true;
                }
                Poll::Ready(Err(_)) => return Err(Ended::Closed("io-error")),
                Poll::Pending => {}
            }
        }
        self.fill();
        while self.wpos < self.wbuf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(Ended::Closed("io-error")),
                Poll::Ready(Ok(n)) => {
                    self.wpos += n;
                    progress = true;
                }
                Poll::Pending => break,
            }
        }
        if self.wpos > 0 && self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > 4 * WRITE_HIGH_WATER {
                self.wbuf.shrink_to(READ_CHUNK);
            }
            self.needs_flush = true;
        }
        if self.needs_flush {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(_)) => return Err(Ended::Closed("io-error")),
                Poll::Pending => {}
            }
        }
        // Streams the peer's lower limit held back may fit now.
        if !self.waiting.is_empty() && self.streams.len() < self.peer_max_streams {
            progress = true;
            if let Some(open) = self.waiting.pop_front() {
                self.open(open);
            }
        }
        Ok(progress)
    }

    fn collect_credit(&mut self) {
        let n = self.credit.swap(0, Ordering::AcqRel);
        self.credit_conn(n);
    }

    /// Returns `n` bytes to the connection's receive window, in batches.
    fn credit_conn(&mut self, n: u32) {
        self.conn_credit = self.conn_credit.saturating_add(n);
        if self.conn_credit >= CONN_WINDOW / 4 {
            frame::write_window_update(&mut self.wbuf, 0, self.conn_credit);
            self.conn_recv_window += i64::from(self.conn_credit);
            self.conn_credit = 0;
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Open(open) => {
                if open.stream.lock().cancelled {
                    return;
                }
                if self.goaway.is_some() || self.next_id > HIGHEST_STREAM {
                    open.stream.lock().fail(StreamError {
                        failure: Failure::NotSent,
                        opened: false,
                    });
                    if self.next_id > HIGHEST_STREAM {
                        self.conn.drain();
                    }
                } else if self.streams.len() >= self.peer_max_streams {
                    self.waiting.push_back(open);
                } else {
                    self.open(open);
                }
            }
            Command::Data(stream, data, end) => {
                if let Some(id) = self.id_of(&stream) {
                    self.queue(id, Out::Data(data, end));
                }
            }
            Command::Trailers(stream, block) => {
                if let Some(id) = self.id_of(&stream) {
                    self.queue(id, Out::Trailers(block));
                }
            }
            Command::Release(stream) => {
                let n = stream.lock().take_release();
                if let Some(id) = self.id_of(&stream) {
                    if n > 0 {
                        if let Some(e) = self.streams.get_mut(&id) {
                            if !e.recv_end {
                                frame::write_window_update(&mut self.wbuf, id, n);
                                e.recv_window += i64::from(n);
                            }
                        }
                    }
                }
            }
            Command::Credit => self.collect_credit(),
            Command::Reset(stream, reason) => {
                if let Some(id) = self.id_of(&stream) {
                    self.reset(id, reason, None);
                } else {
                    // Not opened yet: drop it from the queue of waiting opens.
                    self.waiting.retain(|o| !Arc::ptr_eq(&o.stream, &stream));
                }
            }
            Command::Ping(reply) => {
                self.ping_seq += 1;
                frame::write_ping(&mut self.wbuf, false, self.ping_seq.to_be_bytes());
                self.pings.push_back((self.ping_seq, reply));
            }
        }
    }

    /// The id of a stream that is still open here.
    fn id_of(&self, stream: &Arc<Stream>) -> Option<u32> {
        let id = stream.id.load(Ordering::Acquire);
        self.streams
            .get(&id)
            .filter(|e| Arc::ptr_eq(&e.stream, stream))
            .map(|_| id)
    }

    fn open(&mut self, open: Open) {
        let id = self.next_id;
        self.next_id += 2;
        let block = self.table_update.apply(&open.block);
        frame::write_headers(
            &mut self.wbuf,
            id,
            &block,
            open.end_stream,
            self.peer_max_frame,
        );
        open.stream.id.store(id, Ordering::Release);
        {
            let mut s = open.stream.lock();
            s.opened = true;
            s.wake_reader();
        }
        self.streams.insert(
            id,
            Entry {
                stream: open.stream,
                send_window: self.peer_initial_window,
                recv_window: i64::from(STREAM_WINDOW),
                out: VecDeque::new(),
                sent_end: open.end_stream,
                recv_end: false,
                head_seen: false,
                head_request: open.head_request,
                expected: None,
                received: 0,
            },
        );
    }

    fn queue(&mut self, id: u32, out: Out) {
        if let Some(e) = self.streams.get_mut(&id) {
            if e.sent_end {
                return;
            }
            if e.out.is_empty() {
                self.sendable.push_back(id);
            }
            e.out.push_back(out);
        }
    }

    /// Moves queued request data into the write buffer as far as the windows allow.
    fn fill(&mut self) {
        let mut blocked = Vec::new();
        while self.wbuf.len() - self.wpos < WRITE_HIGH_WATER {
            let Some(id) = self.sendable.pop_front() else {
                break;
            };
            let Some(e) = self.streams.get_mut(&id) else {
                continue;
            };
            let Some(out) = e.out.front_mut() else {
                continue;
            };
            match out {
                Out::Trailers(block) => {
                    let block = self.table_update.apply(block);
                    frame::write_headers(&mut self.wbuf, id, &block, true, self.peer_max_frame);
                    e.out.clear();
                    e.sent_end = true;
                }
                Out::Data(data, end) => {
                    let end = *end;
                    let allowed = e
                        .send_window
                        .min(self.conn_send_window)
                        .min(self.peer_max_frame as i64)
                        .max(0) as usize;
                    if !data.is_empty() && allowed == 0 {
                        blocked.push(id);
                        continue;
                    }
                    let n = allowed.min(data.len());
                    let whole = n == data.len();
                    frame::write_data(&mut self.wbuf, id, &data[..n], end && whole);
                    data.advance(n);
                    e.send_window -= n as i64;
                    self.conn_send_window -= n as i64;
                    if whole {
                        e.out.pop_front();
                        e.sent_end |= end;
                    }
                    let mut s = e.stream.lock();
                    s.queued = s.queued.saturating_sub(n);
                    s.sent_end |= e.sent_end;
                    s.wake_uploader();
                }
            }
            let done = e.sent_end && e.recv_end;
            let more = !e.out.is_empty() && !e.sent_end;
            if done {
                self.streams.remove(&id);
            } else if more {
                self.sendable.push_back(id);
            }
        }
        // Window-blocked streams go back in line; a WINDOW_UPDATE calls fill again.
        self.sendable.extend(blocked);
    }

    /// Resets stream `id`: sends RST_STREAM and ends the request with `error`, if any.
    fn reset(&mut self, id: u32, reason: Reason, error: Option<StreamError>) {
        if let Some(e) = self.streams.remove(&id) {
            frame::write_rst_stream(&mut self.wbuf, id, reason);
            self.retire(e, error);
        }
    }

    /// A stream left the table: credit back what its reader will never consume (all of it,
    /// when the stream failed or the request gave up; a complete response is still read).
    fn retire(&mut self, e: Entry, error: Option<StreamError>) {
        let mut s = e.stream.lock();
        // A response that arrived whole is still read to its end; only the upload stops.
        let error = if s.recv_end { None } else { error };
        let unread: usize = if error.is_some() || s.cancelled {
            s.data.drain(..).map(|d| d.len()).sum()
        } else {
            0
        };
        s.cancelled = true;
        if let Some(error) = error {
            s.fail(error);
        } else {
            s.wake_reader();
            s.wake_uploader();
        }
        drop(s);
        self.credit_conn(unread as u32);
    }

    /// Handles every whole frame in the read buffer.
    fn frames(&mut self) -> Result<(), ConnError> {
        while self.rbuf.len() >= frame::HEADER_LEN {
            let head = Head::parse(&self.rbuf);
            if head.len > MAX_FRAME {
                return Err(conn_error(
                    Reason::FRAME_SIZE_ERROR,
                    "frame over SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            if self.rbuf.len() < frame::HEADER_LEN + head.len {
                self.rbuf
                    .reserve(frame::HEADER_LEN + head.len - self.rbuf.len());
                break;
            }
            self.rbuf.advance(frame::HEADER_LEN);
            let payload = self.rbuf.split_to(head.len).freeze();
            self.frame(head, payload)?;
        }
        Ok(())
    }

    fn frame(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if !self.settings_seen && head.kind != kind::SETTINGS {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "first frame is not SETTINGS",
            ));
        }
        if let Some(partial) = &self.partial {
            if head.kind != kind::CONTINUATION || head.stream != partial.stream {
                return Err(conn_error(
                    Reason::PROTOCOL_ERROR,
                    "header block interrupted",
                ));
            }
        }
        match head.kind {
            kind::DATA => self.on_data(head, payload),
            kind::HEADERS => self.on_headers(head, payload),
            kind::CONTINUATION => self.on_continuation(head, payload),
            kind::PRIORITY => {
                if head.stream == 0 {
                    return Err(conn_error(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
                }
                if payload.len() != 5 {
                    self.reset(head.stream, Reason::FRAME_SIZE_ERROR, Some(malformed()));
                }
                Ok(())
            }
            kind::RST_STREAM => self.on_rst_stream(head, &payload),
            kind::SETTINGS => self.on_settings(head, &payload),
            kind::PUSH_PROMISE => Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "PUSH_PROMISE with push disabled",
            )),
            kind::PING => self.on_ping(head, &payload),
            kind::GOAWAY => self.on_goaway(head, &payload),
            kind::WINDOW_UPDATE => self.on_window_update(head, &payload),
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    /// Whether `id` is a stream we opened (now open or closed), rather than an idle one.
    fn ours(&self, id: u32) -> bool {
        id % 2 == 1 && id < self.next_id
    }

    fn on_data(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        if !self.ours(head.stream) {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
        }
        let flow = payload.len() as i64;
        self.conn_recv_window -= flow;
        if self.conn_recv_window < 0 {
            return Err(conn_error(
                Reason::FLOW_CONTROL_ERROR,
                "DATA over the connection window",
            ));
        }
        let Some(range) = frame::unpad(head, &payload) else {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "padding longer than the frame",
            ));
        };
        let id = head.stream;
        let Some(e) = self.streams.get_mut(&id) else {
            // A stream that already closed: ignored, but its bytes count (and come back).
            self.credit_conn(flow as u32);
            return Ok(());
        };
        let data = crate::h2::frame::own_small(&payload, range);
        let padding = flow as usize - data.len();
        let end = head.has(flag::END_STREAM);
        e.recv_window -= flow;
        e.received += data.len() as u64;
        let refusal = if e.recv_window < 0 {
            Some(Reason::FLOW_CONTROL_ERROR)
        } else if e.recv_end {
            Some(Reason::STREAM_CLOSED)
        } else if !e.head_seen {
            Some(Reason::PROTOCOL_ERROR)
        } else {
            match e.expected {
                Some(n) if e.received > n || (end && e.received != n) => {
                    Some(Reason::PROTOCOL_ERROR)
                }
                _ => None,
            }
        };
        if let Some(reason) = refusal {
            self.credit_conn(flow as u32);
            self.reset(id, reason, Some(malformed()));
            return Ok(());
        }
        {
            let mut s = e.stream.lock();
            if !data.is_empty() {
                s.data.push_back(data);
            }
            if end {
                s.recv_end = true;
            } else {
                // Padding is never read: it goes back with the stream's next update.
                s.unreleased += padding as u32;
            }
            s.wake_reader();
        }
        if padding > 0 {
            self.credit_conn(padding as u32);
        }
        if end {
            self.end_recv(id);
        }
        Ok(())
    }

    /// The peer ended its side of stream `id`.
    fn end_recv(&mut self, id: u32) {
        let Some(e) = self.streams.get_mut(&id) else {
            return;
        };
        e.recv_end = true;
        if e.sent_end {
            if let Some(e) = self.streams.remove(&id) {
                e.stream.lock().wake_reader();
            }
        }
    }

    fn on_headers(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        if !self.ours(head.stream) {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "HEADERS on a stream weir did not open",
            ));
        }
        let Some(range) = frame::unpad(head, &payload) else {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "padding longer than the frame",
            ));
        };
        let mut fragment = payload.slice(range);
        if head.has(flag::PRIORITY) {
            if fragment.len() < 5 {
                return Err(conn_error(
                    Reason::FRAME_SIZE_ERROR,
                    "HEADERS too short for its priority",
                ));
            }
            fragment.advance(5);
        }
        let end_stream = head.has(flag::END_STREAM);
        if head.has(flag::END_HEADERS) {
            return self.on_block(head.stream, end_stream, fragment);
        }
        let mut block = BytesMut::with_capacity(fragment.len() * 2);
        block.extend_from_slice(&fragment);
        self.partial = Some(Partial {
            stream: head.stream,
            end_stream,
            block,
        });
        Ok(())
    }

    fn on_continuation(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        let Some(partial) = self.partial.as_mut() else {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS",
            ));
        };
        if partial.block.len() + payload.len() > MAX_BLOCK {
            return Err(conn_error(
                Reason::ENHANCE_YOUR_CALM,
                "header block too large",
            ));
        }
        partial.block.extend_from_slice(&payload);
        if !head.has(flag::END_HEADERS) {
            return Ok(());
        }
        let Some(partial) = self.partial.take() else {
            return Ok(());
        };
        self.on_block(partial.stream, partial.end_stream, partial.block.freeze())
    }

    /// A whole header block for stream `id`.
    fn on_block(&mut self, id: u32, end_stream: bool, block: Bytes) -> Result<(), ConnError> {
        let trailers = self.streams.get(&id).map(|e| e.head_seen);
        let mut collect = Collect::new(trailers.unwrap_or(false));
        self.decoder
            .decode(&block, |f| collect.field(f))
            .map_err(|_| conn_error(Reason::COMPRESSION_ERROR, "undecodable header block"))?;
        let Some(trailers) = trailers else {
            // Decoded only to keep the table in step: the stream is closed.
            return Ok(());
        };
        let Some(e) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if e.recv_end {
            self.reset(id, Reason::STREAM_CLOSED, Some(malformed()));
            return Ok(());
        }
        let block = match collect.finish() {
            Ok(block) => block,
            Err(m) => {
                tracing::debug!(addr = %self.conn.addr, why = m.0, "malformed response from HTTP/2 backend");
                self.reset(id, Reason::PROTOCOL_ERROR, Some(malformed()));
                return Ok(());
            }
        };
        match block {
            Block::Interim if end_stream => {
                self.reset(id, Reason::PROTOCOL_ERROR, Some(malformed()));
            }
            Block::Interim => {}
            Block::Response {
                status,
                headers,
                content_length,
            } => {
                let bodyless = e.head_request || status == http::StatusCode::NOT_MODIFIED;
                if end_stream && !bodyless && matches!(content_length, Some(n) if n > 0) {
                    self.reset(id, Reason::PROTOCOL_ERROR, Some(malformed()));
                    return Ok(());
                }
                e.head_seen = true;
                e.expected = if bodyless { Some(0) } else { content_length };
                e.head_request = false;
                let mut response = Response::new(());
                *response.status_mut() = status;
                *response.version_mut() = Version::HTTP_2;
                *response.headers_mut() = headers;
                let mut s = e.stream.lock();
                s.head = Some(response);
                if end_stream {
                    s.recv_end = true;
                }
                s.wake_reader();
                drop(s);
                if end_stream {
                    self.end_recv(id);
                }
            }
            Block::Trailers(_) if !end_stream || !trailers => {
                self.reset(id, Reason::PROTOCOL_ERROR, Some(malformed()));
            }
            Block::Trailers(map) => {
                if let Some(n) = e.expected {
                    if e.received != n {
                        self.reset(id, Reason::PROTOCOL_ERROR, Some(malformed()));
                        return Ok(());
                    }
                }
                let mut s = e.stream.lock();
                s.trailers = Some(map);
                s.recv_end = true;
                s.wake_reader();
                drop(s);
                self.end_recv(id);
            }
        }
        Ok(())
    }

    fn on_rst_stream(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if payload.len() != 4 {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "RST_STREAM of the wrong size",
            ));
        }
        if head.stream == 0 || !self.ours(head.stream) {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "RST_STREAM on stream 0 or an idle stream",
            ));
        }
        let reason = Reason(u32::from_be_bytes([
            payload[0], payload[1], payload[2], payload[3],
        ]));
        let Some(e) = self.streams.remove(&head.stream) else {
            return Ok(());
        };
        let failure = if reason == Reason::REFUSED_STREAM {
            self.conn.metrics.refused.inc();
            Failure::RefusedStream
        } else {
            Failure::Reset
        };
        // After a complete response, a reset only stops our upload (RFC 9113 §8.1).
        let error = (!e.recv_end).then_some(StreamError {
            failure,
            opened: true,
        });
        self.retire(e, error);
        Ok(())
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                return Err(conn_error(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS ACK with a payload",
                ));
            }
            return Ok(());
        }
        if payload.len() % 6 != 0 {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS of the wrong size",
            ));
        }
        for s in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(conn_error(
                        Reason::PROTOCOL_ERROR,
                        "SETTINGS_ENABLE_PUSH over 1",
                    ));
                }
                setting::MAX_CONCURRENT_STREAMS => self.peer_max_streams = value as usize,
                setting::INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return Err(conn_error(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
                        ));
                    }
                    let delta = value - self.peer_initial_window;
                    self.peer_initial_window = value;
                    for (id, e) in self.streams.iter_mut() {
                        e.send_window += delta;
                        if e.send_window > frame::MAX_WINDOW {
                            return Err(conn_error(
                                Reason::FLOW_CONTROL_ERROR,
                                "a stream window over 2^31-1",
                            ));
                        }
                        if delta > 0 && !e.out.is_empty() && !self.sendable.contains(id) {
                            self.sendable.push_back(*id);
                        }
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME as u32..=frame::MAX_FRAME_LIMIT).contains(&value)
                    {
                        return Err(conn_error(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = value as usize;
                }
                setting::HEADER_TABLE_SIZE => self.table_update.on_setting(value),
                // MAX_HEADER_LIST_SIZE
                // is advisory. Unknown settings are ignored.
                _ => {}
            }
        }
        frame::write_settings_ack(&mut self.wbuf);
        self.conn.set_peer_streams(self.peer_max_streams);
        if !self.settings_seen {
            self.settings_seen = true;
            self.conn.mark_ready();
        }
        Ok(())
    }

    fn on_ping(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "PING on a stream"));
        }
        let Ok(data) = <[u8; 8]>::try_from(payload) else {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "PING of the wrong size",
            ));
        };
        if !head.has(flag::ACK) {
            frame::write_ping(&mut self.wbuf, true, data);
            return Ok(());
        }
        let seq = u64::from_be_bytes(data);
        if let Some(at) = self.pings.iter().position(|(s, _)| *s == seq) {
            if let Some((_, reply)) = self.pings.remove(at) {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    fn on_goaway(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
        }
        if payload.len() < 8 {
            return Err(conn_error(Reason::FRAME_SIZE_ERROR, "GOAWAY too short"));
        }
        let last =
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
        let last = self.goaway.map_or(last, |prev| prev.min(last));
        self.goaway = Some(last);
        // Streams above the last-stream-id were not processed: safe to retry anywhere.
        let refused: Vec<u32> = self
            .streams
            .keys()
            .copied()
            .filter(|id| *id > last)
            .collect();
        for id in refused {
            if let Some(e) = self.streams.remove(&id) {
                self.retire(
                    e,
                    Some(StreamError {
                        failure: Failure::GoAway,
                        opened: true,
                    }),
                );
            }
        }
        for open in self.waiting.drain(..) {
            open.stream.lock().fail(StreamError {
                failure: Failure::NotSent,
                opened: false,
            });
        }
        self.conn.on_goaway();
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if payload.len() != 4 {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "WINDOW_UPDATE of the wrong size",
            ));
        }
        let increment = i64::from(
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
        );
        if head.stream == 0 {
            if increment == 0 {
                return Err(conn_error(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0"));
            }
            self.conn_send_window += increment;
            if self.conn_send_window > frame::MAX_WINDOW {
                return Err(conn_error(
                    Reason::FLOW_CONTROL_ERROR,
                    "connection window over 2^31-1",
                ));
            }
            // Every stream with data waiting may go on now.
            for (id, e) in &self.streams {
                if !e.out.is_empty() && !self.sendable.contains(id) {
                    self.sendable.push_back(*id);
                }
            }
            return Ok(());
        }
        if !self.ours(head.stream) {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let id = head.stream;
        let Some(e) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if increment == 0 {
            self.reset(id, Reason::PROTOCOL_ERROR, Some(malformed()));
            return Ok(());
        }
        e.send_window += increment;
        if e.send_window > frame::MAX_WINDOW {
            self.reset(id, Reason::FLOW_CONTROL_ERROR, Some(malformed()));
            return Ok(());
        }
        if !e.out.is_empty() && !self.sendable.contains(&id) {
            self.sendable.push_back(id);
        }
        Ok(())
    }
}

fn malformed() -> StreamError {
    StreamError {
        failure: Failure::Malformed,
        opened: true,
    }
}
