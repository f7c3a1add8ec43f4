//! The connection's side of a request body: reads and de-frames the client's bytes when the
//! request path asks for the next frame, and sends `100 Continue` on the first ask.

use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::{self, BodyError, Feed, RequestBody, Want};
use super::request::BodyFraming;
use super::Conn;
use crate::http1::chunked::{Decoded, Decoder};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Data pieces smaller than this are copied out of the read buffer: a slice would keep the
/// whole buffer allocation alive for as long as the piece is kept (the retry replay keeps
/// pieces for the whole request), so many small pieces could pin many buffers.
const COPY_BELOW: usize = 1024;

fn small_copy(data: Bytes) -> Bytes {
    if data.len() < COPY_BELOW {
        Bytes::copy_from_slice(&data)
    } else {
        data
    }
}

enum Decode {
    Length(u64),
    Chunked(Decoder),
}

/// How the body ended, as far as the connection is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// All of it was read and handed on.
    Complete,
    /// The request path let go of the body before its end, and the client is still waiting
    /// for `100 Continue`: the rest is unread (and may never come).
    Abandoned,
    /// The client sent bytes that are not a valid body.
    Invalid,
    /// The client closed before the end of the body.
    ClientGone,
}

pub(super) struct Feeder {
    feed: Feed,
    decode: Decode,
    /// `100 Continue` is owed on the first ask.
    owe_continue: bool,
    /// The request path let go of the body: the rest is read and dropped, so that the
    /// connection can carry the next request.
    discard: bool,
    end: Option<End>,
}

impl Feeder {
    /// The connection's and the request path's ends of a request body; `None` when the
    /// request has none.
    pub(super) fn start(
        framing: BodyFraming,
        expect_continue: bool,
    ) -> Option<(Self, RequestBody)> {
        let (decode, length) = match framing {
            BodyFraming::Empty => return None,
            BodyFraming::Length(n) => (Decode::Length(n), Some(n)),
            BodyFraming::Chunked => (Decode::Chunked(Decoder::new()), None),
        };
        let (feed, body) = body::channel(length);
        let feeder = Self {
            feed,
            decode,
            owe_continue: expect_continue,
            discard: false,
            end: None,
        };
        Some((feeder, body))
    }

    /// The whole body was read off the connection.
    pub(super) fn is_complete(&self) -> bool {
        self.end == Some(End::Complete)
    }

    /// The connection cannot carry another request after this one: the body ended short of
    /// its end (invalid, the client left, or let go of while `100 Continue` was owed), or
    /// the client still waits for a `100 Continue` that was never sent and may never send
    /// the body.
    pub(super) fn spoils_connection(&self) -> bool {
        match self.end {
            Some(End::Complete) => false,
            Some(End::Invalid | End::ClientGone | End::Abandoned) => true,
            None => self.owe_continue,
        }
    }

    /// Nothing more will be read for this body.
    pub(super) fn is_over(&self) -> bool {
        self.end.is_some()
    }

    /// Moves the body along: `Ready` once it is over. `may_continue` is false once the final
    /// response head is out, after which `100 Continue` must not be sent.
    pub(super) fn poll<I: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<I>,
        cx: &mut Context<'_>,
        may_continue: bool,
    ) -> Poll<End> {
        loop {
            if let Some(end) = self.end {
                return Poll::Ready(end);
            }
            if !self.discard {
                match self.feed.poll_want(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Want::Nothing) if self.owe_continue => {
                        self.end = Some(End::Abandoned);
                        continue;
                    }
                    Poll::Ready(Want::Nothing) => self.discard = true,
                    Poll::Ready(Want::Frame) => {}
                }
            }
            if self.owe_continue {
                if !may_continue && conn.rbuf.is_empty() {
                    // The final answer is out without a `100 Continue`: the client need not
                    // send the body, and reading for it could wait forever.
                    self.feed.fail(BodyError(
                        "answered before the client was asked to send its body".into(),
                    ));
                    self.end = Some(End::Abandoned);
                    continue;
                }
                self.owe_continue = false;
                // Not when the client sent the body without waiting, nor after the answer.
                if may_continue && conn.rbuf.is_empty() {
                    conn.wbuf.extend_from_slice(CONTINUE);
                }
            }
            if let Some(end) = self.decode_buffered(conn) {
                self.end = end;
                continue;
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(true) => {}
                Poll::Ready(false) => {
                    self.feed.fail(BodyError(
                        "the client closed the connection before the end of the body".into(),
                    ));
                    self.end = Some(End::ClientGone);
                }
            }
        }
    }

    /// Hands on the next frame the buffer holds. `None`: the buffer had nothing usable;
    /// `Some(end)`: a frame went (and `end` says whether it was the last).
    fn decode_buffered<I>(&mut self, conn: &mut Conn<I>) -> Option<Option<End>> {
        match &mut self.decode {
            Decode::Length(rest) => {
                if conn.rbuf.is_empty() {
                    return None;
                }
                let take = usize::try_from(*rest)
                    .unwrap_or(usize::MAX)
                    .min(conn.rbuf.len());
                let data = small_copy(conn.rbuf.split_to(take).freeze());
                *rest -= take as u64;
                let last = *rest == 0;
                if !self.discard {
                    self.feed.send(Frame::data(data), last);
                }
                Some(last.then_some(End::Complete))
            }
            Decode::Chunked(decoder) => {
                let decoded = decoder.decode(&mut conn.rbuf);
                let (frame, end) = match decoded {
                    Ok(Decoded::Data(data)) => (Some(Frame::data(small_copy(data))), None),
                    Ok(Decoded::Trailers(trailers)) => {
                        (Some(Frame::trailers(trailers)), Some(End::Complete))
                    }
                    Ok(Decoded::End) => (None, Some(End::Complete)),
                    Ok(Decoded::NeedMore) => return None,
                    Err(e) => {
                        if !self.discard {
                            self.feed.fail(BodyError(e.to_string()));
                        }
                        return Some(Some(End::Invalid));
                    }
                };
                if !self.discard {
                    match frame {
                        Some(frame) => self.feed.send(frame, end.is_some()),
                        None => self.feed.end(),
                    }
                }
                Some(end)
            }
        }
    }
}
