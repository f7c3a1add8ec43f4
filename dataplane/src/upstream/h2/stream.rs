//! One stream as its request sees it: the state the connection task fills in (response head,
//! data, trailers, the end or the failure) and what the request hands the task (body data,
//! credit for data it consumed). The two sides meet in a small mutex-guarded slot; the task
//! owns everything else about the stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::future::poll_fn;
use http::{HeaderMap, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::driver::{Command, Handle, CONN_WINDOW, STREAM_WINDOW};
use super::Slot;
use crate::h2::frame::Reason;
use crate::h2::hpack::encode_trailers;
use crate::proxy::body::{BoxError, ProxyBody};
use crate::proxy::replay::AttemptBody;
use crate::upstream::error::Failure;

/// Request body bytes queued at the connection task before the upload waits.
const UPLOAD_HIGH_WATER: usize = 64 << 10;

/// How the stream ended without a (complete) response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StreamError {
    pub(super) failure: Failure,
    /// Whether the request's HEADERS went out: if not, the request was never sent.
    pub(super) opened: bool,
}

#[derive(Default)]
pub(super) struct Slotted {
    pub(super) opened: bool,
    pub(super) head: Option<Response<()>>,
    pub(super) data: VecDeque<Bytes>,
    pub(super) trailers: Option<HeaderMap>,
    /// END_STREAM arrived: what is queued is all there is.
    pub(super) recv_end: bool,
    /// Our END_STREAM went out (or the request had no body).
    pub(super) sent_end: bool,
    pub(super) error: Option<StreamError>,
    reader: Option<Waker>,
    /// Request body bytes handed to the task and not yet written.
    pub(super) queued: usize,
    uploader: Option<Waker>,
    /// Received bytes the reader consumed that the task has not credited back yet.
    pub(super) unreleased: u32,
    release_asked: bool,
    /// No more request data is taken: the request gave up on the stream (its future or body
    /// was dropped), or the stream closed.
    pub(super) cancelled: bool,
}

impl Slotted {
    pub(super) fn wake_reader(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    pub(super) fn wake_uploader(&mut self) {
        if let Some(w) = self.uploader.take() {
            w.wake();
        }
    }

    /// Ends the stream with `error` unless it already ended; wakes both sides.
    pub(super) fn fail(&mut self, error: StreamError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self.wake_reader();
        self.wake_uploader();
    }

    /// Takes what the reader consumed, for a stream WINDOW_UPDATE.
    pub(super) fn take_release(&mut self) -> u32 {
        self.release_asked = false;
        std::mem::take(&mut self.unreleased)
    }
}

pub(super) struct Stream {
    /// Assigned by the connection task when it opens the stream; 0 until then.
    pub(super) id: AtomicU32,
    slot: Mutex<Slotted>,
    /// Bytes consumed on all of the connection's streams, not yet credited back.
    credit: Arc<AtomicU32>,
}

impl Stream {
    pub(super) fn new(credit: Arc<AtomicU32>, sent_end: bool) -> Arc<Self> {
        Arc::new(Self {
            id: AtomicU32::new(0),
            slot: Mutex::new(Slotted {
                sent_end,
                ..Slotted::default()
            }),
            credit,
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Slotted> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the request's HEADERS went out (so its body may follow).
    pub(super) async fn opened(&self) -> Result<(), StreamError> {
        poll_fn(|cx| {
            let mut s = self.lock();
            if let Some(e) = s.error {
                return Poll::Ready(Err(e));
            }
            if s.opened {
                return Poll::Ready(Ok(()));
            }
            s.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Waits for the final response head.
    pub(super) async fn head(&self) -> Result<(Response<()>, bool), StreamError> {
        poll_fn(|cx| {
            let mut s = self.lock();
            if let Some(head) = s.head.take() {
                let empty = s.recv_end && s.data.is_empty() && s.trailers.is_none();
                return Poll::Ready(Ok((head, empty)));
            }
            if let Some(e) = s.error {
                return Poll::Ready(Err(e));
            }
            s.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Returns `n` consumed bytes to the flow-control windows, asking the task to send
    /// WINDOW_UPDATEs once enough has built up.
    fn consumed(&self, s: &mut Slotted, n: usize, handle: &Handle, me: &Arc<Stream>) {
        let n = n as u32;
        let before = self.credit.fetch_add(n, Ordering::AcqRel);
        let conn_due = before < CONN_WINDOW / 4 && before + n >= CONN_WINDOW / 4;
        let mut stream_due = false;
        if !s.recv_end {
            s.unreleased += n;
            if s.unreleased >= STREAM_WINDOW / 4 && !s.release_asked {
                s.release_asked = true;
                stream_due = true;
            }
        }
        if stream_due {
            handle.send(Command::Release(me.clone()));
        } else if conn_due {
            handle.send(Command::Credit);
        }
    }
}

/// Resets the stream when the request gives up on it before it completed.
pub(super) struct Cancel {
    pub(super) stream: Arc<Stream>,
    pub(super) handle: Handle,
    pub(super) armed: bool,
}

impl Cancel {
    pub(super) fn disarm(mut self) -> (Arc<Stream>, Handle) {
        self.armed = false;
        (self.stream.clone(), self.handle.clone())
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        if self.armed {
            cancel(&self.stream, &self.handle);
        }
    }
}

fn cancel(stream: &Arc<Stream>, handle: &Handle) {
    let (complete, unread) = {
        let mut s = stream.lock();
        s.cancelled = true;
        // Data that arrived and will never be read still holds connection window.
        let unread: usize = s.data.drain(..).map(|d| d.len()).sum();
        ((s.recv_end && s.sent_end) || s.error.is_some(), unread)
    };
    if unread > 0 {
        let n = unread as u32;
        let before = stream.credit.fetch_add(n, Ordering::AcqRel);
        if before < CONN_WINDOW / 4 && before + n >= CONN_WINDOW / 4 {
            handle.send(Command::Credit);
        }
    }
    if !complete {
        handle.send(Command::Reset(stream.clone(), Reason::CANCEL));
    }
}

/// A response body from an HTTP/2 backend. Credits flow control as data is read, and frees
/// the stream slot when it ends (proving the connection) or is dropped.
pub(super) struct H2Body {
    pub(super) stream: Arc<Stream>,
    pub(super) handle: Handle,
    pub(super) slot: Option<Slot>,
    pub(super) pump: Option<PumpGuard>,
    pub(super) done: bool,
}

impl H2Body {
    fn finish(&mut self, completed: bool) {
        self.done = true;
        self.pump = None;
        if !completed {
            cancel(&self.stream, &self.handle);
        } else {
            let sent_end = self.stream.lock().sent_end;
            if !sent_end {
                // The backend answered before the request body was done: stop the upload.
                self.handle
                    .send(Command::Reset(self.stream.clone(), Reason::CANCEL));
            }
        }
        if let Some(mut slot) = self.slot.take() {
            slot.completed = completed;
        }
    }
}

impl Drop for H2Body {
    fn drop(&mut self) {
        if !self.done {
            self.finish(false);
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let stream = this.stream.clone();
        let mut s = stream.lock();
        if let Some(data) = s.data.pop_front() {
            stream.consumed(&mut s, data.len(), &this.handle, &stream);
            let last = s.recv_end && s.data.is_empty() && s.trailers.is_none();
            drop(s);
            if last {
                this.finish(true);
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = s.trailers.take() {
            drop(s);
            this.finish(true);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if s.recv_end {
            drop(s);
            this.finish(true);
            return Poll::Ready(None);
        }
        if let Some(e) = s.error {
            drop(s);
            this.finish(false);
            return Poll::Ready(Some(Err(format!(
                "HTTP/2 backend stream failed: {}",
                e.failure.label()
            )
            .into())));
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

pub(super) fn response_body(
    head: Response<()>,
    empty: bool,
    stream: Arc<Stream>,
    handle: Handle,
    slot: Slot,
    pump: Option<PumpGuard>,
) -> Response<ProxyBody> {
    let mut body = H2Body {
        stream,
        handle,
        slot: Some(slot),
        pump,
        done: false,
    };
    if empty {
        body.finish(true);
    }
    head.map(|()| ProxyBody::new(body))
}

/// Aborts the upload when the attempt is over.
pub(super) struct PumpGuard(pub(super) tokio::task::JoinHandle<()>);

impl Drop for PumpGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands the request body to the connection task, at most [`UPLOAD_HIGH_WATER`] ahead of
/// what it wrote. Marks `failed` if the client's body broke (the stream is then reset).
pub(super) async fn pump(
    mut body: AttemptBody,
    stream: Arc<Stream>,
    handle: Handle,
    failed: Arc<AtomicBool>,
) {
    loop {
        let Some(frame) = body.frame().await else {
            handle.send(Command::Data(stream, Bytes::new(), true));
            return;
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(_) => {
                failed.store(true, Ordering::Release);
                handle.send(Command::Reset(stream, Reason::CANCEL));
                return;
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    continue;
                }
                let room = poll_fn(|cx| {
                    let mut s = stream.lock();
                    if s.error.is_some() || s.cancelled {
                        return Poll::Ready(false);
                    }
                    if s.queued < UPLOAD_HIGH_WATER {
                        s.queued += data.len();
                        return Poll::Ready(true);
                    }
                    s.uploader = Some(cx.waker().clone());
                    Poll::Pending
                })
                .await;
                if !room {
                    return;
                }
                handle.send(Command::Data(stream.clone(), data, false));
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    handle.send_block(
                        64,
                        |block, _| encode_trailers(block, &trailers),
                        |block| Command::Trailers(stream, block),
                    );
                    return;
                }
            }
        }
    }
}
