//! The request body as every attempt sees it. The client's body is read once; what has been read
//! is kept (up to `maxReplayBytes`) so a retry can send it again byte for byte, then continues
//! from the client. A body over the cap is streamed without keeping it, and the request is no
//! longer replayable. Attempts run one after another, so one attempt reads at a time.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::body::{BoxError, ProxyBody};

struct State {
    source: ProxyBody,
    /// Data frames kept for replay, in order.
    kept: Vec<Bytes>,
    kept_bytes: u64,
    /// Data frames read from the client so far (kept or not).
    read: usize,
    cap: u64,
    overflowed: bool,
    trailers: Option<HeaderMap>,
    finished: bool,
    failed: bool,
    exact_len: Option<u64>,
}

/// The shared, replayable request body of one request.
#[derive(Clone)]
pub(crate) struct Replay(Arc<Mutex<State>>);

impl Replay {
    pub(crate) fn new(source: ProxyBody, cap: u64) -> Self {
        let hint = source.size_hint();
        let finished = source.is_end_stream();
        Self(Arc::new(Mutex::new(State {
            source,
            kept: Vec::new(),
            kept_bytes: 0,
            read: 0,
            cap,
            overflowed: false,
            trailers: None,
            finished,
            failed: false,
            exact_len: hint.exact(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a new attempt can still send the whole body.
    pub(crate) fn replayable(&self) -> bool {
        let s = self.lock();
        !s.overflowed && !s.failed
    }

    /// A fresh cursor from the start of the body.
    pub(crate) fn attempt(&self) -> AttemptBody {
        AttemptBody {
            replay: self.clone(),
            next: 0,
            sent: 0,
            trailers_sent: false,
        }
    }
}

/// After a final response that came before the whole request body (an early 413, say), the rest
/// of the body is read and discarded for at most this long and this much, so an HTTP/1.1 client
/// can finish its upload and read the response instead of having the connection closed under it.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: u64 = 64 << 20;

impl Drop for State {
    fn drop(&mut self) {
        if self.finished || self.failed || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut source = std::mem::replace(&mut self.source, super::body::full(Bytes::new()));
        tokio::spawn(async move {
            let drain = async {
                let mut read = 0u64;
                while let Some(Ok(frame)) = source.frame().await {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if read > LINGER_BYTES {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        });
    }
}

/// One attempt's view of the request body.
pub(crate) struct AttemptBody {
    replay: Replay,
    /// Index of the next data frame this attempt sends.
    next: usize,
    sent: u64,
    trailers_sent: bool,
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut s = this.replay.lock();
        if this.next < s.read {
            if s.overflowed {
                return Poll::Ready(Some(Err("request body exceeded the replay buffer".into())));
            }
            let chunk = s.kept[this.next].clone();
            this.next += 1;
            this.sent += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.finished {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        if s.failed {
            return Poll::Ready(Some(Err("request body failed".into())));
        }
        match Pin::new(&mut s.source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.finished = true;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    s.read += 1;
                    this.next += 1;
                    this.sent += data.len() as u64;
                    if !s.overflowed {
                        s.kept_bytes += data.len() as u64;
                        if s.kept_bytes > s.cap {
                            s.overflowed = true;
                            s.kept = Vec::new();
                        } else {
                            s.kept.push(data.clone());
                        }
                    }
                    if s.source.is_end_stream() {
                        s.finished = true;
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    s.finished = true;
                    this.trailers_sent = true;
                    if let Ok(t) = frame.into_trailers() {
                        s.trailers = Some(t.clone());
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.replay.lock();
        s.finished && self.next >= s.read && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.replay.lock();
        match s.exact_len {
            Some(len) => SizeHint::with_exact(len.saturating_sub(self.sent)),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn source(chunks: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        ProxyBody::new(StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn second_attempt_replays_and_continues() {
        let replay = Replay::new(source(&["ab", "cd", "ef"]), 1024);
        let mut first = replay.attempt();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        drop(first);
        assert!(replay.replayable());
        let all = replay.attempt().collect().await.unwrap().to_bytes();
        assert_eq!(all, "abcdef");
        // A third attempt gets the same bytes from memory.
        let again = replay.attempt().collect().await.unwrap().to_bytes();
        assert_eq!(again, "abcdef");
    }

    #[tokio::test]
    async fn over_the_cap_is_not_replayable() {
        let replay = Replay::new(source(&["abc", "def"]), 4);
        let all = replay.attempt().collect().await.unwrap().to_bytes();
        assert_eq!(all, "abcdef", "the first attempt still gets everything");
        assert!(!replay.replayable());
        assert!(replay.attempt().collect().await.is_err());
    }

    #[tokio::test]
    async fn empty_body_is_end_of_stream() {
        let replay = Replay::new(
            ProxyBody::new(http_body_util::Empty::new().map_err(|n| match n {})),
            10,
        );
        assert!(replay.attempt().is_end_stream());
    }
}
