//! Responses to the client: the head once the handler is done, then the body, polled with
//! the stream's own waker and framed as far as the client's windows allow.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conn, Sending, WRITE_HIGH_WATER};
use crate::h2::frame::{self, Reason};
use crate::h2::hpack::{encode_response_indexed, encode_trailers, TableUpdate};
use crate::proxy::body::ProxyBody;
use crate::proxy::Refused;

/// Body frames one stream may write in a row before the others get their turn.
const FRAMES_PER_TURN: usize = 8;

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// The handler finished stream `id`: write the head; the body follows.
    fn respond(&mut self, id: u32, result: Result<Response<ProxyBody>, Refused>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let response = match result {
            Ok(r) => r,
            Err(Refused) => {
                // The backend provably did not process it: the client may retry.
                self.reset(id, Reason::REFUSED_STREAM, "refused");
                return;
            }
        };
        let (head, body) = response.into_parts();
        self.scratch.clear();
        if self.peer.table == TableUpdate::Due {
            // The client lowered its table: the update to 0 goes out first, then no indexing.
            self.encoder.disable();
        }
        encode_response_indexed(
            &mut self.scratch,
            &mut self.encoder,
            head.status,
            &head.headers,
        );
        let end = body.is_end_stream();
        let block = self.peer.table.apply(&self.scratch);
        frame::write_headers(&mut self.out.buf, id, &block, end, self.peer.max_frame);
        if end {
            s.sending = Sending::Done;
            self.finish(id);
            return;
        }
        // `pump`, which called this, goes on with the body.
        s.sending = Sending::Body { body, held: None };
    }

    /// The response on stream `id` is complete.
    fn finish(&mut self, id: u32) {
        self.completed = self.completed.saturating_add(1);
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if !s.recv_end {
            // The request body is no longer needed (RFC 9113 §8.1).
            self.reset(
                id,
                Reason::NO_ERROR,
                "response complete before the request body",
            );
            return;
        }
        self.maybe_remove(id);
    }

    /// Polls the response bodies that woke (or got window), fairly, while there is room;
    /// whether any of them moved (wrote a frame or ended).
    pub(super) fn pump_ready(&mut self) -> bool {
        if self.out.pending() >= WRITE_HIGH_WATER {
            // They wait for the socket: the next write that frees room brings them back here.
            return false;
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.sort_unstable();
        ready.dedup();
        let mut later = Vec::new();
        let mut moved = false;
        for id in ready {
            if self.out.pending() >= WRITE_HIGH_WATER {
                later.push(id);
                continue;
            }
            match self.pump(id) {
                Turn::Idle => {}
                Turn::Moved => moved = true,
                Turn::More => {
                    moved = true;
                    later.push(id);
                }
            }
        }
        // Whatever was pushed meanwhile (window updates) goes after the leftovers.
        later.append(&mut self.ready);
        self.ready = later;
        moved
    }

    /// Writes what stream `id`'s body has, within the windows. A body is polled even with no
    /// window left, so its end and trailers (which need none) go out at once; data it yields
    /// then waits, held, for a WINDOW_UPDATE.
    fn pump(&mut self, id: u32) -> Turn {
        let mut moved = false;
        for _ in 0..FRAMES_PER_TURN {
            let Some(s) = self.streams.get_mut(&id) else {
                return Turn::from(moved);
            };
            if let Sending::Handling(handler) = &mut s.sending {
                let mut cx = Context::from_waker(&s.waker);
                match handler.as_mut().poll(&mut cx) {
                    Poll::Pending => return Turn::from(moved),
                    Poll::Ready(result) => {
                        self.respond(id, result);
                        moved = true;
                        continue;
                    }
                }
            }
            let Sending::Body { body, held } = &mut s.sending else {
                return Turn::from(moved);
            };
            let window = s
                .send_window
                .min(self.conn_send_window)
                .min(self.peer.max_frame as i64)
                .max(0) as usize;
            if let Some(chunk) = held {
                if window == 0 && !chunk.is_empty() {
                    if self.conn_send_window <= 0 && !self.conn_blocked.contains(&id) {
                        // A connection WINDOW_UPDATE brings it back; a stream one would too.
                        self.conn_blocked.push(id);
                    }
                    return Turn::from(moved);
                }
                let n = window.min(chunk.len());
                let last = n == chunk.len();
                let end = last && body.is_end_stream();
                frame::write_data(&mut self.out.buf, id, &chunk[..n], end);
                let _ = chunk.split_to(n);
                s.send_window -= n as i64;
                self.conn_send_window -= n as i64;
                moved = true;
                if last {
                    *held = None;
                }
                if end {
                    s.sending = Sending::Done;
                    self.finish(id);
                    return Turn::Moved;
                }
                continue;
            }
            let mut cx = Context::from_waker(&s.waker);
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Pending => return Turn::from(moved),
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(data) => {
                        if data.is_empty() && !body.is_end_stream() {
                            continue;
                        }
                        *held = Some(data);
                    }
                    Err(f) => {
                        let trailers = f.into_trailers().unwrap_or_default();
                        self.scratch.clear();
                        encode_trailers(&mut self.scratch, &trailers);
                        let block = self.peer.table.apply(&self.scratch);
                        frame::write_headers(
                            &mut self.out.buf,
                            id,
                            &block,
                            true,
                            self.peer.max_frame,
                        );
                        s.sending = Sending::Done;
                        self.finish(id);
                        return Turn::Moved;
                    }
                },
                Poll::Ready(None) => {
                    frame::write_data(&mut self.out.buf, id, &[], true);
                    s.sending = Sending::Done;
                    self.finish(id);
                    return Turn::Moved;
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::debug!(stream = id, %error, "response body failed: resetting the client's stream");
                    self.reset(id, Reason::INTERNAL_ERROR, "response body failed");
                    return Turn::Moved;
                }
            }
        }
        Turn::More
    }
}

/// What one stream's turn at the write buffer did.
enum Turn {
    /// Nothing: its body had nothing, or it waits for window.
    Idle,
    Moved,
    /// Its turn ran out with more to send.
    More,
}

impl From<bool> for Turn {
    fn from(moved: bool) -> Self {
        if moved {
            Turn::Moved
        } else {
            Turn::Idle
        }
    }
}
