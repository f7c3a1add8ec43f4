//! A client's request body as the proxy reads it: data the connection task received on the
//! stream, handed over through a small slot, with flow-control credit going back as it is read.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::shared::Shared;
use super::{CONN_WINDOW, STREAM_WINDOW};
use crate::proxy::body::BoxError;

#[derive(Default)]
pub(super) struct Inbound {
    pub(super) data: VecDeque<Bytes>,
    pub(super) trailers: Option<HeaderMap>,
    /// END_STREAM arrived: what is queued is all there is.
    pub(super) end: bool,
    pub(super) error: Option<&'static str>,
    reader: Option<Waker>,
    /// Read bytes not yet credited back to the stream's window.
    pub(super) unreleased: u32,
    release_asked: bool,
    /// The proxy dropped the body: what still arrives is discarded.
    pub(super) dropped: bool,
}

impl Inbound {
    pub(super) fn wake(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    pub(super) fn take_release(&mut self) -> u32 {
        self.release_asked = false;
        std::mem::take(&mut self.unreleased)
    }
}

pub(super) type Slot = Arc<Mutex<Inbound>>;

pub(super) fn lock(slot: &Slot) -> MutexGuard<'_, Inbound> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) struct RequestBody {
    pub(super) id: u32,
    pub(super) slot: Slot,
    pub(super) shared: Arc<Shared>,
    /// What the request's Content-Length says is still to come.
    pub(super) remaining: Option<u64>,
    pub(super) done: bool,
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut s = lock(&self.slot);
        s.dropped = true;
        let unread: usize = s.data.drain(..).map(|d| d.len()).sum();
        drop(s);
        if unread > 0 {
            self.shared.credit(unread as u32, CONN_WINDOW / 4);
        }
    }
}

impl Body for RequestBody {
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
        let mut s = lock(&this.slot);
        if let Some(data) = s.data.pop_front() {
            let n = data.len() as u32;
            this.remaining = this.remaining.map(|r| r.saturating_sub(u64::from(n)));
            let mut ask = false;
            if !s.end {
                s.unreleased += n;
                if s.unreleased >= STREAM_WINDOW / 4 && !s.release_asked {
                    s.release_asked = true;
                    ask = true;
                }
            }
            if s.end && s.data.is_empty() && s.trailers.is_none() {
                this.done = true;
            }
            drop(s);
            this.shared.credit(n, CONN_WINDOW / 4);
            if ask {
                this.shared.ask_release(this.id);
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = s.trailers.take() {
            this.done = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if let Some(why) = s.error {
            this.done = true;
            return Poll::Ready(Some(Err(format!("client request body: {why}").into())));
        }
        if s.end {
            this.done = true;
            return Poll::Ready(None);
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
