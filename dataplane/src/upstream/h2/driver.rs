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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{Response, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use super::head::{Block, Collect};
use super::stream::{Stream, StreamError};
use super::H2Conn;
use crate::h2::conn::{
    self as h2conn, conn_error, ConnError, Output, Partial, PeerSettings, RecvWindow, Settings,
};
use crate::h2::frame::{self, flag, kind, setting, Head, Reason};
use crate::h2::hpack::{Decoder, Encoder, DEFAULT_TABLE_SIZE, EMPTY_TABLE};
use crate::h2::message::MAX_HEADER_LIST;
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
    encoder: Arc<Mutex<RequestEncoder>>,
}

/// The connection's request encoder (HPACK against the backend's dynamic table), shared by
/// the requests on it. A header block is encoded and its command queued under the lock, so
/// blocks reach the wire in the order the table moved.
pub(super) struct RequestEncoder {
    pub(super) table: Encoder,
    /// Every block starts with a table size update to 0: the backend lowered its table.
    pub(super) shrunk: bool,
}

impl RequestEncoder {
    /// Starts a header block (with the size update if one is owed).
    pub(super) fn block(&self, capacity: usize) -> Vec<u8> {
        let mut block = Vec::with_capacity(capacity);
        if self.shrunk {
            block.push(EMPTY_TABLE);
        }
        block
    }
}

impl Handle {
    /// False once the connection task is gone.
    pub(super) fn send(&self, command: Command) -> bool {
        self.tx.send(command).is_ok()
    }

    /// Encodes a header block with `encode` and queues the command `wrap` makes of it, under
    /// the encoder's lock; false once the connection task is gone.
    pub(super) fn send_block(
        &self,
        capacity: usize,
        encode: impl FnOnce(&mut Vec<u8>, &mut Encoder),
        wrap: impl FnOnce(Vec<u8>) -> Command,
    ) -> bool {
        let mut enc = self.encoder.lock().unwrap_or_else(|e| e.into_inner());
        let mut block = enc.block(capacity);
        encode(&mut block, &mut enc.table);
        self.tx.send(wrap(block)).is_ok()
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

/// How the task ended; the label for the close metric.
pub(super) type Exit = &'static str;

pub(super) struct Driver<IO> {
    io: IO,
    conn: Arc<H2Conn>,
    rx: mpsc::UnboundedReceiver<Command>,
    rx_closed: bool,
    credit: Arc<AtomicU32>,
    rbuf: BytesMut,
    out: Output,
    decoder: Decoder,
    streams: HashMap<u32, Entry, foldhash::fast::RandomState>,
    /// The next stream id to use; ids below it were opened by us.
    next_id: u32,
    /// Opens beyond the peer's stream limit, waiting for a stream to end.
    waiting: VecDeque<Open>,
    /// Streams with something in `out`, in the order they get to send. Every such stream is
    /// in it (once): `queue` adds it, `fill` puts it back while it has more or is blocked, so
    /// window updates need not look for it.
    sendable: VecDeque<u32>,
    settings_seen: bool,
    peer: PeerSettings,
    conn_send_window: i64,
    recv: RecvWindow,
    partial: Option<Partial>,
    /// The last-stream-id of a GOAWAY the peer sent.
    goaway: Option<u32>,
    pings: VecDeque<(u64, oneshot::Sender<()>)>,
    ping_seq: u64,
    /// The requests' encoder, to follow the backend's table size.
    handle_encoder: Arc<Mutex<RequestEncoder>>,
}

/// Writes the preface and weir's SETTINGS and returns the task and its handle.
pub(super) fn start<IO>(io: IO, conn: Arc<H2Conn>) -> (Driver<IO>, Handle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let credit = Arc::new(AtomicU32::new(0));
    // No indexing until the backend's SETTINGS say how large its table is.
    let encoder = Arc::new(Mutex::new(RequestEncoder {
        table: Encoder::new(0),
        shrunk: false,
    }));
    let mut out = Output::new(READ_CHUNK);
    out.buf.extend_from_slice(frame::PREFACE);
    frame::write_settings(
        &mut out.buf,
        &[
            (setting::ENABLE_PUSH, 0),
            (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
        ],
    );
    frame::write_window_update(&mut out.buf, 0, CONN_WINDOW - frame::DEFAULT_WINDOW as u32);
    let driver = Driver {
        io,
        conn,
        rx,
        rx_closed: false,
        credit: credit.clone(),
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        out,
        decoder: Decoder::new(4096),
        streams: HashMap::default(),
        next_id: 1,
        waiting: VecDeque::new(),
        sendable: VecDeque::new(),
        settings_seen: false,
        peer: PeerSettings::default(),
        conn_send_window: frame::DEFAULT_WINDOW,
        recv: RecvWindow::new(CONN_WINDOW),
        partial: None,
        goaway: None,
        pings: VecDeque::new(),
        ping_seq: 0,
        handle_encoder: encoder.clone(),
    };
    (
        driver,
        Handle {
            tx,
            credit,
            encoder,
        },
    )
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
                    this.out.last_words(&mut this.io, cx, 0, e.reason);
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
            && self.out.idle()
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
        if self.out.pending() < WRITE_HIGH_WATER {
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
        match self.out.poll_send(&mut self.io, cx, 4 * WRITE_HIGH_WATER) {
            Ok(moved) => progress |= moved,
            Err(()) => return Err(Ended::Closed("io-error")),
        }
        // Streams the peer's lower limit held back may fit now.
        if !self.waiting.is_empty() && self.streams.len() < self.peer.max_streams {
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
        self.recv.credit(n, &mut self.out.buf);
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Open(open) => {
                // A cancelled request is still opened (and reset at once): its header block
                // may have added to the backend's HPACK table, which must stay in step.
                if self.goaway.is_some() || self.next_id > HIGHEST_STREAM {
                    open.stream.lock().fail(StreamError {
                        failure: Failure::NotSent,
                        opened: false,
                    });
                    if self.next_id > HIGHEST_STREAM {
                        self.conn.drain();
                    }
                } else if self.streams.len() >= self.peer.max_streams {
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
                                frame::write_window_update(&mut self.out.buf, id, n);
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
                }
                // Not opened yet: it stays in line (its header block must still go out, see
                // `open`), and is reset as soon as it is opened.
            }
            Command::Ping(reply) => {
                self.ping_seq += 1;
                frame::write_ping(&mut self.out.buf, false, self.ping_seq.to_be_bytes());
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
        if open.stream.lock().cancelled {
            // The request gave up before its stream opened. Its header block goes out anyway
            // (without END_STREAM, so the request is never complete) to keep the backend's
            // HPACK table in step, and the stream is reset right after.
            frame::write_headers(
                &mut self.out.buf,
                id,
                &open.block,
                false,
                self.peer.max_frame,
            );
            frame::write_rst_stream(&mut self.out.buf, id, Reason::CANCEL);
            return;
        }
        frame::write_headers(
            &mut self.out.buf,
            id,
            &open.block,
            open.end_stream,
            self.peer.max_frame,
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
                send_window: self.peer.initial_window,
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
        while self.out.pending() < WRITE_HIGH_WATER {
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
                    frame::write_headers(&mut self.out.buf, id, block, true, self.peer.max_frame);
                    e.out.clear();
                    e.sent_end = true;
                }
                Out::Data(data, end) => {
                    let end = *end;
                    let allowed = e
                        .send_window
                        .min(self.conn_send_window)
                        .min(self.peer.max_frame as i64)
                        .max(0) as usize;
                    if !data.is_empty() && allowed == 0 {
                        blocked.push(id);
                        continue;
                    }
                    let n = allowed.min(data.len());
                    let whole = n == data.len();
                    frame::write_data(&mut self.out.buf, id, &data[..n], end && whole);
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
            frame::write_rst_stream(&mut self.out.buf, id, reason);
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
        while let Some((head, payload)) = h2conn::next_frame(&mut self.rbuf, MAX_FRAME)? {
            self.frame(head, payload)?;
        }
        Ok(())
    }

    fn frame(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        h2conn::check_order(self.settings_seen, self.partial.as_ref(), head)?;
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
        self.recv.take(flow)?;
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
        let data = crate::h2::frame::owned(&payload, range);
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
            } else if padding > 0 {
                // Padding is never read: it goes back with the stream's next update, or now
                // if enough of it built up.
                s.unreleased += padding as u32;
                if s.unreleased >= STREAM_WINDOW / 4 {
                    let n = s.take_release();
                    frame::write_window_update(&mut self.out.buf, id, n);
                    e.recv_window += i64::from(n);
                }
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
        if !self.ours(head.stream) && head.stream != 0 {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "HEADERS on a stream weir did not open",
            ));
        }
        match h2conn::headers(&mut self.partial, head, &payload)? {
            Some(f) => self.on_block(f.stream, f.end_stream, f.block),
            None => Ok(()),
        }
    }

    fn on_continuation(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        match h2conn::continuation(&mut self.partial, head, &payload, MAX_BLOCK)? {
            Some(f) => self.on_block(f.stream, f.end_stream, f.block),
            None => Ok(()),
        }
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
        let reason = h2conn::rst_reason(head, payload)?;
        if !self.ours(head.stream) {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
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
        let Settings::Applied { window_delta } = self.peer.apply(head, payload)? else {
            return Ok(());
        };
        for e in self.streams.values_mut() {
            if h2conn::grow(&mut e.send_window, window_delta).is_err() {
                return Err(conn_error(
                    Reason::FLOW_CONTROL_ERROR,
                    "a stream window over 2^31-1",
                ));
            }
        }
        self.adapt_encoder();
        frame::write_settings_ack(&mut self.out.buf);
        self.conn.set_peer_streams(self.peer.max_streams);
        if !self.settings_seen {
            self.settings_seen = true;
            self.conn.mark_ready();
        }
        Ok(())
    }

    /// Follows the backend's table size before its SETTINGS are acknowledged. The first
    /// SETTINGS turn indexing on (unless they shrink the table). A table shrunk below the
    /// default stops indexing for good, and every later block starts with a size update to 0;
    /// blocks already encoded are written out first, so the update is the first thing the
    /// backend reads after the acknowledgement.
    fn adapt_encoder(&mut self) {
        let shrunk = self.peer.table_size < DEFAULT_TABLE_SIZE;
        {
            let mut enc = self
                .handle_encoder
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !shrunk {
                if !self.settings_seen && !enc.shrunk {
                    enc.table = Encoder::new(DEFAULT_TABLE_SIZE as usize);
                }
                return;
            }
            if enc.shrunk {
                return;
            }
            enc.table.disable();
            enc.shrunk = true;
        }
        while let Ok(command) = self.rx.try_recv() {
            self.command(command);
        }
    }

    fn on_ping(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let data = h2conn::ping_payload(head, payload)?;
        if !head.has(flag::ACK) {
            frame::write_ping(&mut self.out.buf, true, data);
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
        let last = h2conn::goaway_last_stream(head, payload)?;
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
        let increment = h2conn::window_increment(payload)?;
        if head.stream == 0 {
            h2conn::grow_connection(&mut self.conn_send_window, increment)?;
            // Streams with data waiting are in `sendable`: the next fill sends.
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
        if let Err(reason) = h2conn::grow_stream(&mut e.send_window, increment) {
            self.reset(id, reason, Some(malformed()));
            return Ok(());
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
