//! A client's request body, handed from the connection to the request path one frame at a
//! time. The connection reads the socket only when the request path asks for the next frame
//! ([`Feed::poll_want`]), so a body is never buffered whole, and the first ask is when
//! `100 Continue` goes out.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::proxy::body::BoxError;

#[derive(Debug, thiserror::Error)]
#[error("client request body: {0}")]
pub(super) struct BodyError(pub(super) String);

#[derive(Default)]
struct Slot {
    frame: Option<Result<Frame<Bytes>, BodyError>>,
    /// The request path waits for a frame.
    wanted: bool,
    /// The connection has sent the last frame (or an error).
    ended: bool,
    /// The request path dropped the body.
    dropped: bool,
    /// The connection went away with a frame still waiting: this error comes after it.
    error_after: Option<BodyError>,
    reader: Option<Waker>,
    feeder: Option<Waker>,
}

fn lock(shared: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // A panic while holding the lock leaves a slot that is still consistent.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Changes the slot under its lock, then wakes the other side if `change` handed back its
/// waker (after the lock is released).
fn update<T>(shared: &Mutex<Slot>, change: impl FnOnce(&mut Slot) -> (T, Option<Waker>)) -> T {
    let (out, waker) = change(&mut lock(shared));
    if let Some(w) = waker {
        w.wake();
    }
    out
}

/// Keeps `cx`'s waker in `slot`, cloning it only when it changed.
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// The connection's end.
pub(super) struct Feed {
    shared: Arc<Mutex<Slot>>,
}

/// The request path's end: an `http_body::Body`.
pub(super) struct RequestBody {
    shared: Arc<Mutex<Slot>>,
    /// Bytes still to come when the length is known.
    remaining: Option<u64>,
}

pub(super) fn channel(length: Option<u64>) -> (Feed, RequestBody) {
    let shared = Arc::new(Mutex::new(Slot::default()));
    (
        Feed {
            shared: shared.clone(),
        },
        RequestBody {
            shared,
            remaining: length,
        },
    )
}

/// What the request path wants from the connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Want {
    /// The next frame.
    Frame,
    /// Nothing more: the body was dropped.
    Nothing,
}

impl Feed {
    /// Ready when the request path asks for a frame and none is waiting, or has let go.
    pub(super) fn poll_want(&self, cx: &mut Context<'_>) -> Poll<Want> {
        let mut slot = lock(&self.shared);
        if slot.dropped {
            return Poll::Ready(Want::Nothing);
        }
        if slot.wanted && slot.frame.is_none() {
            return Poll::Ready(Want::Frame);
        }
        register(&mut slot.feeder, cx);
        Poll::Pending
    }

    pub(super) fn send(&self, frame: Frame<Bytes>, last: bool) {
        self.put(Ok(frame), last);
    }

    pub(super) fn fail(&self, error: BodyError) {
        self.put(Err(error), true);
    }

    /// The body ended without a final frame to carry it.
    pub(super) fn end(&self) {
        update(&self.shared, |slot| {
            slot.ended = true;
            ((), slot.reader.take())
        });
    }

    fn put(&self, frame: Result<Frame<Bytes>, BodyError>, last: bool) {
        update(&self.shared, |slot| {
            slot.frame = Some(frame);
            slot.wanted = false;
            slot.ended |= last;
            ((), slot.reader.take())
        });
    }
}

impl Drop for Feed {
    /// A connection that goes away before the end of the body fails it.
    fn drop(&mut self) {
        update(&self.shared, |slot| {
            if slot.ended {
                return ((), None);
            }
            slot.ended = true;
            let error = BodyError("the client connection closed before the end of the body".into());
            if slot.frame.is_none() {
                slot.frame = Some(Err(error));
            } else {
                slot.error_after = Some(error);
            }
            ((), slot.reader.take())
        });
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = update(&self.shared, |slot| match slot.frame.take() {
            Some(frame) => (Poll::Ready(Some(frame.map_err(BoxError::from))), None),
            None if slot.ended => match slot.error_after.take() {
                Some(error) => (Poll::Ready(Some(Err(BoxError::from(error)))), None),
                None => (Poll::Ready(None), None),
            },
            None => {
                slot.wanted = true;
                register(&mut slot.reader, cx);
                (Poll::Pending, slot.feeder.take())
            }
        });
        if let Poll::Ready(Some(Ok(frame))) = &poll {
            if let (Some(rest), Some(data)) = (self.remaining.as_mut(), frame.data_ref()) {
                *rest = rest.saturating_sub(data.len() as u64);
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        update(&self.shared, |slot| {
            slot.dropped = true;
            ((), slot.feeder.take())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn frames_flow_only_when_asked_for() {
        let (feed, mut body) = channel(Some(5));
        assert!(feed.poll_want(&mut cx()).is_pending(), "nobody asked yet");
        assert!(Pin::new(&mut body).poll_frame(&mut cx()).is_pending());
        assert_eq!(feed.poll_want(&mut cx()), Poll::Ready(Want::Frame));
        feed.send(Frame::data(Bytes::from_static(b"hel")), false);
        assert!(
            feed.poll_want(&mut cx()).is_pending(),
            "one frame at a time"
        );
        let Poll::Ready(Some(Ok(f))) = Pin::new(&mut body).poll_frame(&mut cx()) else {
            panic!("a frame")
        };
        assert_eq!(f.into_data().unwrap(), "hel");
        assert_eq!(body.size_hint().exact(), Some(2));
        assert!(Pin::new(&mut body).poll_frame(&mut cx()).is_pending());
        feed.send(Frame::data(Bytes::from_static(b"lo")), true);
        assert!(Pin::new(&mut body).poll_frame(&mut cx()).is_ready());
        assert!(body.is_end_stream());
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx()),
            Poll::Ready(None)
        ));
    }

    #[test]
    fn a_closed_connection_fails_the_body_and_a_dropped_body_stops_the_feed() {
        let (feed, mut body) = channel(None);
        drop(feed);
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx()),
            Poll::Ready(Some(Err(_)))
        ));
        let (feed, mut body) = channel(None);
        assert!(Pin::new(&mut body).poll_frame(&mut cx()).is_pending());
        feed.send(Frame::data(Bytes::from_static(b"part")), false);
        drop(feed);
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx()),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(
            matches!(
                Pin::new(&mut body).poll_frame(&mut cx()),
                Poll::Ready(Some(Err(_)))
            ),
            "a cut-off body never looks complete"
        );
        let (feed, body) = channel(None);
        drop(body);
        assert_eq!(feed.poll_want(&mut cx()), Poll::Ready(Want::Nothing));
    }
}
