//! The byte pipe between `h2`'s server connection and the TCP socket.
//!
//! `h2` writes its frames into [`SpliceIo`], which keeps only complete frames (and complete
//! header blocks) in its outgoing buffer. Every point of that buffer is therefore a frame
//! boundary, so [`Wire::inject`] can put a hand-written frame between two of h2's frames without
//! corrupting the stream. On the way in, `SpliceIo` reads frame headers and removes what `h2` must
//! not see: the SETTINGS ACK that answers an injected SETTINGS, and the connection-level
//! WINDOW_UPDATE credit that refunds injected DATA (which `h2` never counted as sent). Until
//! such a refund arrives `h2` believes the client's connection window is larger than it is, so
//! the outgoing buffer tracks the real window and holds back DATA frames that would overrun it.
//!
//! [`Wire`] also records what crossed the connection per stream. Handlers wait on it, because
//! `h2` discards still-queued frames of a stream when it is reset: "the END_STREAM is written,
//! now send RST_STREAM" needs to know when the END_STREAM actually left `h2`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::wire::{flag, kind, setting, settings_value, Frame, FrameHead, HEADER_LEN, PREFACE};

/// Above this many buffered outgoing bytes, writes from `h2` wait for the socket.
const OUT_HIGH_WATER: usize = 256 * 1024;
/// How much to read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Initial connection-level flow-control window (RFC 9113 §6.9.2).
const DEFAULT_WINDOW: u32 = 65_535;

/// What one request stream has seen on the wire so far.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct StreamWire {
    /// The server wrote a frame with END_STREAM (response or trailers, `h2`'s or injected).
    pub server_ended: bool,
    /// The client sent END_STREAM: the request body is complete.
    pub client_ended: bool,
    /// A RST_STREAM went either way.
    pub reset: bool,
    /// Payload bytes of DATA frames `h2` wrote on the stream.
    pub data_sent: usize,
}

impl StreamWire {
    /// The server will send nothing more on the stream (by protocol, not by choice).
    pub fn server_done(&self) -> bool {
        self.server_ended || self.reset
    }
}

/// A SETTINGS frame the server wrote and the client has not acknowledged yet.
struct SentSettings {
    /// Hand-written, so `h2` does not expect the ACK and must not see it.
    injected: bool,
    max_concurrent_streams: Option<u32>,
}

/// Per-connection state shared by the IO adapter (driven by the connection task) and handlers.
pub(super) struct Wire {
    state: Mutex<WireState>,
    changed: Notify,
}

struct WireState {
    /// Complete frames waiting for the socket.
    out: Outbox,
    /// Bytes from `h2` that do not form a complete frame yet.
    pending: BytesMut,
    /// An `h2` header block still waiting for its END_HEADERS frame; nothing may be put inside it.
    header_block: Option<BytesMut>,
    /// The connection task, woken to write injected frames.
    conn_task: Option<Waker>,
    /// Parameters added to `h2`'s first SETTINGS frame.
    first_settings_extra: Vec<(u16, u32)>,
    seen_first_settings: bool,
    unacked_settings: VecDeque<SentSettings>,
    /// `(id, limit)`: MAX_CONCURRENT_STREAMS = `limit` binds streams above `id`, the highest
    /// stream the client had opened when it acknowledged the SETTINGS carrying it.
    limits: Vec<(u32, u32)>,
    highest_client_stream: u32,
    /// Connection window the client spent on injected DATA; taken back from its WINDOW_UPDATEs.
    window_debt: u32,
    streams: HashMap<u32, StreamWire>,
    /// Accepted request streams on which the server is not done yet.
    open: BTreeSet<u32>,
    idle_since: Option<Instant>,
}

impl Wire {
    /// `first_settings_extra` is appended to the parameters of `h2`'s first SETTINGS frame.
    pub fn new(first_settings_extra: Vec<(u16, u32)>) -> Arc<Wire> {
        Arc::new(Wire {
            state: Mutex::new(WireState::new(first_settings_extra)),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, WireState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues hand-written frames at the next frame boundary, after everything `h2` has written
    /// so far, and wakes the connection task to send them.
    pub fn inject(&self, frames: &[Frame]) {
        let mut state = self.lock();
        for frame in frames {
            state.push_frame(BytesMut::from(&frame.encode()[..]), true);
        }
        if let Some(task) = &state.conn_task {
            task.wake_by_ref();
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Registers an accepted request stream as open; returns how many are open now, or `None` if
    /// the stream is already over (reset by the client before it was accepted).
    pub fn open_stream(&self, id: u32) -> Option<usize> {
        let mut state = self.lock();
        if state.stream(id).server_done() {
            return None;
        }
        state.open.insert(id);
        state.idle_since = None;
        Some(state.open.len())
    }

    /// Open request streams, lowest id first.
    pub fn open_streams(&self) -> Vec<u32> {
        self.lock().open.iter().copied().collect()
    }

    /// The MAX_CONCURRENT_STREAMS the client had acknowledged before it opened stream `id`.
    pub fn limit_for(&self, id: u32) -> Option<u32> {
        let state = self.lock();
        state
            .limits
            .iter()
            .rev()
            .find(|(above, _)| id > *above)
            .map(|&(_, limit)| limit)
    }

    pub fn stream(&self, id: u32) -> StreamWire {
        self.lock().stream(id)
    }

    /// Since when no request stream has been open, if none is.
    pub fn idle_since(&self) -> Option<Instant> {
        self.lock().idle_since
    }

    /// The server is done with every one of `ids` and all it wrote has reached the socket.
    pub fn finished(&self, ids: impl IntoIterator<Item = u32>) -> bool {
        let state = self.lock();
        state.out.is_empty()
            && state.pending.is_empty()
            && state.header_block.is_none()
            && ids.into_iter().all(|id| state.stream(id).server_done())
    }

    /// Resolves at the next change to anything [`Wire`] reports. Enable it (or poll it once)
    /// before checking the state to avoid missing a change in between.
    pub fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    /// Waits until stream `id` satisfies `done`.
    pub async fn wait_for(&self, id: u32, done: impl Fn(&StreamWire) -> bool) {
        loop {
            let changed = self.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.stream(id)) {
                return;
            }
            changed.await;
        }
    }
}

impl WireState {
    fn new(first_settings_extra: Vec<(u16, u32)>) -> WireState {
        WireState {
            out: Outbox::new(),
            pending: BytesMut::new(),
            header_block: None,
            conn_task: None,
            first_settings_extra,
            seen_first_settings: false,
            unacked_settings: VecDeque::new(),
            limits: Vec::new(),
            highest_client_stream: 0,
            window_debt: 0,
            streams: HashMap::new(),
            open: BTreeSet::new(),
            idle_since: Some(Instant::now()),
        }
    }

    fn stream(&self, id: u32) -> StreamWire {
        self.streams.get(&id).copied().unwrap_or_default()
    }

    fn update(&mut self, id: u32, change: impl FnOnce(&mut StreamWire)) {
        let entry = self.streams.entry(id).or_default();
        change(entry);
        if entry.server_done() && self.open.remove(&id) && self.open.is_empty() {
            self.idle_since = Some(Instant::now());
        }
    }

    /// Takes bytes written by `h2` and moves every frame they complete to `out`.
    fn push_from_h2(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while let Some(head) = FrameHead::parse(&self.pending) {
            let frame_len = HEADER_LEN + head.len;
            if self.pending.len() < frame_len {
                break;
            }
            let frame = self.pending.split_to(frame_len);
            self.push_frame(frame, false);
        }
    }

    /// Records a complete outgoing frame and appends it to `out` (or to the open header block).
    fn push_frame(&mut self, mut frame: BytesMut, injected: bool) {
        let Some(head) = FrameHead::parse(&frame) else {
            return;
        };
        match head.kind {
            kind::SETTINGS if !head.has(flag::ACK) => {
                if !injected && !self.seen_first_settings {
                    self.seen_first_settings = true;
                    append_settings(&mut frame, &self.first_settings_extra);
                }
                let max_concurrent_streams =
                    settings_value(&frame[HEADER_LEN..], setting::MAX_CONCURRENT_STREAMS);
                self.unacked_settings.push_back(SentSettings {
                    injected,
                    max_concurrent_streams,
                });
            }
            kind::DATA if injected => {
                let len = u32::try_from(head.len).unwrap_or(u32::MAX);
                self.window_debt = self.window_debt.saturating_add(len);
            }
            kind::DATA => self.update(head.stream_id, |s| s.data_sent += head.len),
            kind::RST_STREAM => self.update(head.stream_id, |s| s.reset = true),
            _ => {}
        }
        let ends_stream = matches!(head.kind, kind::DATA | kind::HEADERS);
        if ends_stream && head.has(flag::END_STREAM) {
            self.update(head.stream_id, |s| s.server_ended = true);
        }

        if injected {
            self.out.push(frame.freeze());
            return;
        }
        match (&mut self.header_block, head.kind) {
            (Some(block), _) => {
                block.extend_from_slice(&frame);
                if head.kind == kind::CONTINUATION && head.has(flag::END_HEADERS) {
                    let block = std::mem::take(block);
                    self.header_block = None;
                    self.out.push(block.freeze());
                }
            }
            (None, kind::HEADERS | kind::PUSH_PROMISE) if !head.has(flag::END_HEADERS) => {
                self.header_block = Some(frame);
            }
            (None, _) => self.out.push(frame.freeze()),
        }
    }

    /// Decides what to do with a frame from the client whose header starts `raw`.
    fn on_client_frame(&mut self, head: &FrameHead, raw: &[u8]) -> Verdict {
        match head.kind {
            kind::HEADERS => {
                self.highest_client_stream = self.highest_client_stream.max(head.stream_id);
                if head.has(flag::END_STREAM) {
                    self.update(head.stream_id, |s| s.client_ended = true);
                }
            }
            kind::DATA if head.has(flag::END_STREAM) => {
                self.update(head.stream_id, |s| s.client_ended = true);
            }
            kind::RST_STREAM => self.update(head.stream_id, |s| s.reset = true),
            kind::SETTINGS if head.has(flag::ACK) && head.len == 0 => {
                if let Some(acked) = self.unacked_settings.pop_front() {
                    if let Some(limit) = acked.max_concurrent_streams {
                        self.limits.push((self.highest_client_stream, limit));
                    }
                    if acked.injected {
                        return Verdict::Drop;
                    }
                }
            }
            kind::WINDOW_UPDATE if head.stream_id == 0 && head.len == 4 => {
                let Some(payload) = raw.get(HEADER_LEN..HEADER_LEN + 4) else {
                    return Verdict::NeedMore;
                };
                let increment =
                    u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff;
                self.out.credit(increment);
                if self.window_debt == 0 {
                    return Verdict::Pass;
                }
                let repaid = increment.min(self.window_debt);
                self.window_debt -= repaid;
                return match increment - repaid {
                    0 => Verdict::Drop,
                    rest => Verdict::Replace(Frame::window_update(0, rest)),
                };
            }
            _ => {}
        }
        Verdict::Pass
    }
}

/// Adds `params` to a complete SETTINGS frame, fixing its length field.
fn append_settings(frame: &mut BytesMut, params: &[(u16, u32)]) {
    if params.is_empty() {
        return;
    }
    for &(id, value) in params {
        frame.put_u16(id);
        frame.put_u32(value);
    }
    let len = u32::try_from(frame.len() - HEADER_LEN).unwrap_or(u32::MAX);
    frame[..3].copy_from_slice(&len.to_be_bytes()[1..]);
}

/// Complete frames (or header blocks) waiting for the socket, and the client's connection
/// flow-control window, which DATA frames must fit in before they are written.
struct Outbox {
    chunks: VecDeque<Outgoing>,
    /// Bytes of the front chunk already written.
    written: usize,
    len: usize,
    /// The client's connection-level receive window (RFC 9113 §6.9), as far as it is known here.
    window: i64,
}

struct Outgoing {
    bytes: Bytes,
    /// Flow-controlled length: the payload length of a DATA frame, else 0.
    flow: u32,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            chunks: VecDeque::new(),
            written: 0,
            len: 0,
            window: i64::from(DEFAULT_WINDOW),
        }
    }

    fn push(&mut self, bytes: Bytes) {
        let flow = match FrameHead::parse(&bytes) {
            Some(head) if head.kind == kind::DATA => u32::try_from(head.len).unwrap_or(u32::MAX),
            _ => 0,
        };
        self.len += bytes.len();
        self.chunks.push_back(Outgoing { bytes, flow });
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The client granted `increment` more bytes of connection window.
    fn credit(&mut self, increment: u32) {
        self.window += i64::from(increment);
    }

    /// Writes chunks in order until all are written, the socket is full, or the next DATA frame
    /// does not fit in the client's window (then it waits for a WINDOW_UPDATE, read elsewhere).
    fn poll_write_to(&mut self, socket: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(front) = self.chunks.front() {
            let flow = i64::from(front.flow);
            if self.written == 0 && flow > self.window {
                return Poll::Pending;
            }
            ready!(socket.poll_write_ready(cx))?;
            match socket.try_write(&front.bytes[self.written..]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    if self.written == 0 {
                        self.window -= flow;
                    }
                    self.written += n;
                    self.len -= n;
                    if self.written == front.bytes.len() {
                        self.chunks.pop_front();
                        self.written = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    #[cfg(test)]
    fn contents(&self) -> Vec<u8> {
        self.chunks
            .iter()
            .flat_map(|c| c.bytes.iter().copied())
            .collect()
    }
}

/// What happens to a frame from the client on its way to `h2`.
enum Verdict {
    Pass,
    /// Removed; only returned once the whole frame is buffered.
    Drop,
    /// Swapped for another frame; only returned once the whole frame is buffered.
    Replace(Frame),
    /// More bytes are needed to decide.
    NeedMore,
}

/// Client bytes between the socket and `h2`.
struct Inbound {
    /// Read from the socket, not yet judged.
    raw: BytesMut,
    /// Judged and waiting for `h2` to read.
    cooked: BytesMut,
    preface_left: usize,
    /// Payload bytes of the current frame still to pass through unjudged.
    payload_left: usize,
    eof: bool,
}

impl Inbound {
    fn new() -> Inbound {
        Inbound {
            raw: BytesMut::new(),
            cooked: BytesMut::new(),
            preface_left: PREFACE.len(),
            payload_left: 0,
            eof: false,
        }
    }

    /// Moves as much of `raw` to `cooked` as can be judged.
    fn process(&mut self, state: &mut WireState) {
        loop {
            let passthrough = self.preface_left + self.payload_left;
            if passthrough > 0 {
                let n = passthrough.min(self.raw.len());
                if n == 0 {
                    return;
                }
                let from_preface = n.min(self.preface_left);
                self.preface_left -= from_preface;
                self.payload_left -= n - from_preface;
                self.cooked.extend_from_slice(&self.raw.split_to(n));
                continue;
            }
            let Some(head) = FrameHead::parse(&self.raw) else {
                return;
            };
            match state.on_client_frame(&head, &self.raw) {
                Verdict::Pass => {
                    self.cooked
                        .extend_from_slice(&self.raw.split_to(HEADER_LEN));
                    self.payload_left = head.len;
                }
                Verdict::Drop => self.raw.advance(HEADER_LEN + head.len),
                Verdict::Replace(frame) => {
                    self.raw.advance(HEADER_LEN + head.len);
                    self.cooked.extend_from_slice(&frame.encode());
                }
                Verdict::NeedMore => return,
            }
        }
    }

    /// The client closed its side: hand whatever is left to `h2` as it is.
    fn finish(&mut self) {
        let rest = self.raw.split();
        self.cooked.extend_from_slice(&rest);
        self.eof = true;
    }
}

/// The IO object `h2` runs on. See the module docs.
pub(super) struct SpliceIo {
    socket: Arc<TcpStream>,
    wire: Arc<Wire>,
    /// Nothing is written before this fires (models a slow server).
    hold: Option<Pin<Box<Sleep>>>,
    inbound: Inbound,
}

impl SpliceIo {
    /// `hold`: write nothing (the server's SETTINGS included) for this long.
    pub fn new(socket: Arc<TcpStream>, wire: Arc<Wire>, hold: Option<Duration>) -> SpliceIo {
        SpliceIo {
            socket,
            wire,
            hold: hold.map(|delay| Box::pin(tokio::time::sleep(delay))),
            inbound: Inbound::new(),
        }
    }

    /// Writes buffered frames to the socket; `Ready(Ok)` once the buffer is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(hold) = self.hold.as_mut() {
            ready!(hold.as_mut().poll(cx));
            self.hold = None;
        }
        let mut state = self.wire.lock();
        if !state
            .conn_task
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()))
        {
            state.conn_task = Some(cx.waker().clone());
        }
        if state.out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(state.out.poll_write_to(&self.socket, cx))?;
        drop(state);
        self.wire.changed.notify_waiters();
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for SpliceIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // `h2` always polls its reader, so this also writes frames injected while it is idle,
            // and DATA that waited for the WINDOW_UPDATE just read.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            let inbound = &mut this.inbound;
            if !inbound.cooked.is_empty() {
                let n = inbound.cooked.len().min(buf.remaining());
                buf.put_slice(&inbound.cooked.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if inbound.eof {
                return Poll::Ready(Ok(()));
            }
            ready!(this.socket.poll_read_ready(cx))?;
            inbound.raw.reserve(READ_CHUNK);
            match this.socket.try_read_buf(&mut inbound.raw) {
                Ok(0) => inbound.finish(),
                Ok(_) => {
                    inbound.process(&mut this.wire.lock());
                    this.wire.changed.notify_waiters();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SpliceIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        if this.wire.lock().out.len() >= OUT_HIGH_WATER {
            // `poll_drain` left the socket's (or the hold timer's) waker registered, or is waiting
            // for a WINDOW_UPDATE, which `h2`'s reading will bring in.
            return Poll::Pending;
        }
        this.wire.lock().push_from_h2(bytes);
        this.wire.changed.notify_waiters();
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    /// Flushes only: the connection task sends the FIN once `h2` has let go of the socket.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use h2::Reason;

    fn state() -> WireState {
        WireState::new(vec![(setting::MAX_CONCURRENT_STREAMS, 2)])
    }

    #[test]
    fn injected_frames_never_split_h2_frames_or_header_blocks() {
        let mut state = state();
        let data = Frame::data(1, &b"hello"[..], true).encode();
        // Half a DATA frame from h2, then an injection: it must wait for the frame to complete.
        state.push_from_h2(&data[..6]);
        assert!(state.out.is_empty());
        state.push_from_h2(&data[6..]);
        assert_eq!(state.out.contents(), &data[..]);
        assert!(state.stream(1).server_ended);

        // A header block split over HEADERS + CONTINUATION stays contiguous.
        let headers = Frame::new(kind::HEADERS, 0, 3, &b"ab"[..]).encode();
        let continuation =
            Frame::new(kind::CONTINUATION, flag::END_HEADERS, 3, &b"cd"[..]).encode();
        state.out = Outbox::new();
        state.push_from_h2(&headers);
        state.push_frame(
            BytesMut::from(&Frame::goaway(1, Reason::NO_ERROR).encode()[..]),
            true,
        );
        state.push_from_h2(&continuation);
        let goaway = Frame::goaway(1, Reason::NO_ERROR).encode();
        let expected = [&goaway[..], &headers[..], &continuation[..]].concat();
        assert_eq!(state.out.contents(), expected);
    }

    #[test]
    fn first_settings_gets_extra_parameters_and_its_ack_sets_the_limit() {
        let mut state = state();
        state.push_from_h2(&Frame::settings(&[(setting::INITIAL_WINDOW_SIZE, 1)]).encode());
        let out = state.out.contents();
        let head = FrameHead::parse(&out).expect("frame written");
        assert_eq!(head.len, 12);
        assert_eq!(
            settings_value(&out[HEADER_LEN..], setting::MAX_CONCURRENT_STREAMS),
            Some(2)
        );

        let mut inbound = Inbound::new();
        inbound.raw.extend_from_slice(PREFACE);
        inbound
            .raw
            .extend_from_slice(&Frame::headers(1, Default::default(), true).encode());
        inbound
            .raw
            .extend_from_slice(&Frame::settings_ack().encode());
        inbound.process(&mut state);
        // h2's own SETTINGS: the ACK goes through, and the limit binds streams after stream 1.
        assert_eq!(inbound.cooked.len(), PREFACE.len() + 2 * HEADER_LEN);
        assert_eq!(state.limits, vec![(1, 2)]);
    }

    #[test]
    fn acks_of_injected_settings_and_refunds_of_injected_data_are_hidden_from_h2() {
        let mut state = state();
        state.push_frame(
            BytesMut::from(&Frame::settings(&[(setting::MAX_CONCURRENT_STREAMS, 1)]).encode()[..]),
            true,
        );
        state.push_frame(
            BytesMut::from(&Frame::data(1, &b"stray"[..], false).encode()[..]),
            true,
        );
        let mut inbound = Inbound::new();
        inbound.preface_left = 0;
        inbound
            .raw
            .extend_from_slice(&Frame::settings_ack().encode());
        inbound
            .raw
            .extend_from_slice(&Frame::window_update(0, 3).encode());
        inbound
            .raw
            .extend_from_slice(&Frame::window_update(0, 10).encode());
        inbound.process(&mut state);
        assert_eq!(
            &inbound.cooked[..],
            &Frame::window_update(0, 8).encode()[..]
        );
        assert_eq!(state.window_debt, 0);
        assert_eq!(
            state.out.window,
            65_535 + 13,
            "the real window counts all credit"
        );
        assert_eq!(state.limits, vec![(0, 1)]);
    }
}
