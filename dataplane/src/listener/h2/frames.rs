//! Frames from the client: parsing them out of the read buffer and what each does to the
//! connection and its streams (RFC 9113 §5, §6).

use std::sync::Arc;
use std::task::Waker;

use bytes::{Buf, Bytes};
use http::Request;
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::{self, Inbound, RequestBody};
use super::request::{Block, Collect};
use super::shared::StreamWaker;
use super::{
    Conn, Keepalive, Sending, Stream, MAX_BLOCK, MAX_EARLY_RESETS, MAX_FRAME, MAX_STREAMS,
    MAX_USELESS_FRAMES, STREAM_WINDOW, USELESS_WINDOW,
};
use crate::h2::conn::{self as h2conn, conn_error, ConnError, Fragment, Settings};
use crate::h2::frame::{self, flag, kind, Head, Reason};
use crate::proxy::body::{self as proxy_body, ProxyBody};

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// Handles the preface and every whole frame in the read buffer.
    pub(super) fn frames(&mut self) -> Result<(), ConnError> {
        if !self.preface_done {
            let n = self.rbuf.len().min(frame::PREFACE.len());
            if self.rbuf[..n] != frame::PREFACE[..n] {
                return Err(conn_error(
                    Reason::PROTOCOL_ERROR,
                    "not an HTTP/2 connection preface",
                ));
            }
            if n < frame::PREFACE.len() {
                return Ok(());
            }
            self.rbuf.advance(n);
            self.preface_done = true;
        }
        while let Some((head, payload)) = h2conn::next_frame(&mut self.rbuf, MAX_FRAME)? {
            self.frame(head, payload)?;
            self.calm()?;
        }
        Ok(())
    }

    fn frame(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        h2conn::check_order(self.settings_seen, self.partial.as_ref(), head)?;
        match head.kind {
            kind::DATA => self.on_data(head, payload),
            kind::HEADERS => self.on_headers(head, payload),
            kind::CONTINUATION => self.on_continuation(head, payload),
            kind::PRIORITY => self.on_priority(head, &payload),
            kind::RST_STREAM => self.on_rst_stream(head, &payload),
            kind::SETTINGS => self.on_settings(head, &payload),
            kind::PUSH_PROMISE => Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "PUSH_PROMISE from a client",
            )),
            kind::PING => self.on_ping(head, &payload),
            kind::GOAWAY => self.on_goaway(head, &payload),
            kind::WINDOW_UPDATE => self.on_window_update(head, &payload),
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => self.useless(),
        }
    }

    /// Counts a frame that did nothing; too many of them within a window of time close the
    /// connection (a flood), while a long-lived connection's occasional strays never add up.
    fn useless(&mut self) -> Result<(), ConnError> {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.useless_since) > USELESS_WINDOW {
            self.useless_since = now;
            self.useless = 0;
        }
        self.useless += 1;
        if self.useless > MAX_USELESS_FRAMES {
            return Err(conn_error(
                Reason::ENHANCE_YOUR_CALM,
                "too many frames that do nothing",
            ));
        }
        Ok(())
    }

    /// Resets a stream that never started (no handler ran): RST_STREAM, remembered as reset
    /// by weir so what the client still sends on it is ignored.
    fn refuse(&mut self, id: u32, reason: Reason) -> Result<(), ConnError> {
        frame::write_rst_stream(&mut self.out.buf, id, reason);
        self.remember_closed(id, true);
        if reason != Reason::REFUSED_STREAM {
            self.early_resets += 1;
        }
        self.calm()
    }

    /// Streams reset before their response, by the client or by weir because of what the client
    /// sent, beyond those completed: too many is an attack (rapid reset, CVE-2023-44487, and
    /// "made you reset", CVE-2025-8671).
    pub(super) fn calm(&self) -> Result<(), ConnError> {
        if self.early_resets > MAX_EARLY_RESETS && self.early_resets > self.completed {
            return Err(conn_error(
                Reason::ENHANCE_YOUR_CALM,
                "too many streams reset early",
            ));
        }
        Ok(())
    }

    /// A stream id the client has not opened yet.
    fn idle(&self, id: u32) -> bool {
        id > self.last_id
    }

    fn on_data(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        let id = head.stream;
        if id == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        if self.idle(id) {
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
        let end = head.has(flag::END_STREAM);
        let Some(s) = self.streams.get_mut(&id) else {
            // Closed: its bytes still count for the connection, and come back at once. A
            // stream weir reset may still have frames in flight: those are ignored.
            self.credit_conn(flow as u32);
            if self.closed_how(id) == Some(true) {
                return Ok(());
            }
            frame::write_rst_stream(&mut self.out.buf, id, Reason::STREAM_CLOSED);
            return self.useless();
        };
        if s.recv_end {
            self.credit_conn(flow as u32);
            self.reset(id, Reason::STREAM_CLOSED, "DATA after END_STREAM");
            return Ok(());
        }
        let data = crate::h2::frame::owned(&payload, range);
        s.recv_window -= flow;
        s.received += data.len() as u64;
        if s.recv_window < 0 {
            self.credit_conn(flow as u32);
            self.reset(
                id,
                Reason::FLOW_CONTROL_ERROR,
                "DATA over the stream window",
            );
            return Ok(());
        }
        let length_ok = match s.expected {
            Some(n) => s.received <= n && (!end || s.received == n),
            None => true,
        };
        if !length_ok {
            self.credit_conn(flow as u32);
            self.reset(
                id,
                Reason::PROTOCOL_ERROR,
                "body length differs from content-length",
            );
            return Ok(());
        }
        let padding = flow as usize - data.len();
        let mut discarded = padding;
        if let Some(inbound) = &s.inbound {
            let mut b = body::lock(inbound);
            if b.dropped {
                discarded += data.len();
            } else if !data.is_empty() {
                b.data.push_back(data);
            }
            if !end && padding > 0 {
                // Padding is never read: it goes back with the stream's next update, or now
                // if enough of it built up.
                b.unreleased += padding as u32;
                if b.unreleased >= STREAM_WINDOW / 4 {
                    let n = b.take_release();
                    frame::write_window_update(&mut self.out.buf, id, n);
                    s.recv_window += i64::from(n);
                }
            }
            if end {
                b.end = true;
            }
            b.wake();
        } else {
            discarded += data.len();
        }
        if end {
            s.recv_end = true;
            s.inbound = None;
        }
        if discarded > 0 {
            self.credit_conn(discarded as u32);
        }
        if flow == 0 && !end {
            self.useless()?;
        }
        if end {
            self.maybe_remove(id);
        }
        Ok(())
    }

    fn on_headers(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        match h2conn::headers(&mut self.partial, head, &payload)? {
            Some(f) => self.on_block(f),
            None => Ok(()),
        }
    }

    fn on_continuation(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if self.partial.is_some() && payload.is_empty() && !head.has(flag::END_HEADERS) {
            self.useless()?;
        }
        match h2conn::continuation(&mut self.partial, head, &payload, MAX_BLOCK)? {
            Some(f) => self.on_block(f),
            None => Ok(()),
        }
    }

    /// A whole header block on stream `id`: a new request, or trailers.
    fn on_block(&mut self, fragment: Fragment) -> Result<(), ConnError> {
        let Fragment {
            stream: id,
            end_stream,
            depends_on,
            block,
        } = fragment;
        let existing = self.streams.contains_key(&id);
        let opening = self.idle(id);
        if !existing && !opening {
            // A stream that is closed: decode to keep the table in step, then refuse.
            self.decoder
                .decode(&block, |_| {})
                .map_err(|_| conn_error(Reason::COMPRESSION_ERROR, "undecodable header block"))?;
            return Err(match self.closed_how(id) {
                // Weir reset it: the client may have sent these before it learned (§5.1).
                Some(true) => return Ok(()),
                Some(false) => conn_error(Reason::STREAM_CLOSED, "HEADERS on a closed stream"),
                None => conn_error(
                    Reason::PROTOCOL_ERROR,
                    "stream id lower than one already opened",
                ),
            });
        }
        if opening && id % 2 == 0 {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "client stream with an even id",
            ));
        }
        let mut collect = Collect::new(existing);
        self.decoder
            .decode(&block, |f| collect.field(f))
            .map_err(|_| conn_error(Reason::COMPRESSION_ERROR, "undecodable header block"))?;
        if existing {
            return self.on_trailers(id, end_stream, collect);
        }
        self.last_id = id;
        if depends_on == Some(id) {
            return self.refuse(id, Reason::PROTOCOL_ERROR);
        }
        if self.goaway_sent.is_some() {
            // Opened after our GOAWAY: not processed, and the client knows it may retry.
            return Ok(());
        }
        if self.streams.len() >= MAX_STREAMS {
            return self.refuse(id, Reason::REFUSED_STREAM);
        }
        let (head, content_length) = match collect.finish() {
            Ok(Block::Request {
                head,
                content_length,
            }) => (head, content_length),
            Ok(Block::Trailers(_)) | Err(_) => return self.refuse(id, Reason::PROTOCOL_ERROR),
        };
        if end_stream && matches!(content_length, Some(n) if n > 0) {
            return self.refuse(id, Reason::PROTOCOL_ERROR);
        }
        let (inbound, body) = if end_stream {
            (None, proxy_body::empty())
        } else {
            let slot = Arc::new(std::sync::Mutex::new(Inbound::default()));
            let body = RequestBody {
                id,
                slot: slot.clone(),
                shared: self.shared.clone(),
                remaining: content_length,
                done: false,
            };
            (Some(slot), ProxyBody::new(body))
        };
        let dataplane = self.dataplane.clone();
        let client = self.client.clone();
        let req = Request::from_parts(head, body);
        let handler: super::Handler =
            crate::boxed::in_place(|| async move { dataplane.handle(req, &client).await });
        let waker = Waker::from(Arc::new(StreamWaker {
            id,
            shared: self.shared.clone(),
        }));
        self.ready.push(id);
        self.streams.insert(
            id,
            Stream {
                inbound,
                recv_window: i64::from(STREAM_WINDOW),
                recv_end: end_stream,
                expected: content_length,
                received: 0,
                send_window: self.peer.initial_window,
                sending: Sending::Handling(handler),
                waker,
            },
        );
        Ok(())
    }

    fn on_trailers(
        &mut self,
        id: u32,
        end_stream: bool,
        collect: Collect,
    ) -> Result<(), ConnError> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if s.recv_end {
            self.reset(id, Reason::STREAM_CLOSED, "HEADERS after END_STREAM");
            return Ok(());
        }
        let trailers = match collect.finish() {
            Ok(Block::Trailers(t)) if end_stream => t,
            _ => {
                self.reset(id, Reason::PROTOCOL_ERROR, "malformed trailers");
                return Ok(());
            }
        };
        if matches!(s.expected, Some(n) if n != s.received) {
            self.reset(
                id,
                Reason::PROTOCOL_ERROR,
                "body length differs from content-length",
            );
            return Ok(());
        }
        if let Some(inbound) = s.inbound.take() {
            let mut b = body::lock(&inbound);
            b.trailers = Some(trailers);
            b.end = true;
            b.wake();
        }
        s.recv_end = true;
        self.maybe_remove(id);
        Ok(())
    }

    fn on_priority(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
        }
        if payload.len() != 5 {
            if self.streams.contains_key(&head.stream) {
                self.reset(
                    head.stream,
                    Reason::FRAME_SIZE_ERROR,
                    "PRIORITY of the wrong size",
                );
            } else {
                frame::write_rst_stream(&mut self.out.buf, head.stream, Reason::FRAME_SIZE_ERROR);
            }
            return self.calm();
        }
        let dep =
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
        if dep == head.stream {
            if self.streams.contains_key(&head.stream) {
                self.reset(
                    head.stream,
                    Reason::PROTOCOL_ERROR,
                    "stream depends on itself",
                );
            } else {
                frame::write_rst_stream(&mut self.out.buf, head.stream, Reason::PROTOCOL_ERROR);
            }
            return self.calm();
        }
        // Priorities are advisory (RFC 9113 §5.3.2): weir does not reorder responses. Not
        // counted as useless: clients send them as a matter of course.
        Ok(())
    }

    fn on_rst_stream(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        h2conn::rst_reason(head, payload)?;
        if self.idle(head.stream) {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
        let Some(s) = self.streams.remove(&head.stream) else {
            // Closed already: ignored (both ends may reset at once).
            return Ok(());
        };
        self.remember_closed(head.stream, false);
        if !matches!(s.sending, Sending::Done) {
            self.early_resets += 1;
        }
        self.abandon(s, "stream reset by the client");
        self.calm()
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let Settings::Applied { window_delta } = self.peer.apply(head, payload)? else {
            return Ok(());
        };
        for (id, st) in self.streams.iter_mut() {
            if h2conn::grow(&mut st.send_window, window_delta).is_err() {
                return Err(conn_error(
                    Reason::FLOW_CONTROL_ERROR,
                    "a stream window over 2^31-1",
                ));
            }
            if window_delta > 0 && matches!(st.sending, Sending::Body { .. }) {
                self.ready.push(*id);
            }
        }
        frame::write_settings_ack(&mut self.out.buf);
        self.settings_seen = true;
        Ok(())
    }

    fn on_ping(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let data = h2conn::ping_payload(head, payload)?;
        if head.has(flag::ACK) {
            if matches!(self.keepalive, Keepalive::Pinged) {
                self.keepalive = Keepalive::Idle { active: true };
            }
            return Ok(());
        }
        frame::write_ping(&mut self.out.buf, true, data);
        Ok(())
    }

    fn on_goaway(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        // Checked, and otherwise informational: the client's last-stream-id is about streams
        // weir would open, and weir opens none. Nothing closes because of it (whatever its
        // code, RFC 9113 §7): the connection ends when the client closes it, or when weir
        // drains, and until then its frames are answered.
        h2conn::goaway_last_stream(head, payload)?;
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let increment = h2conn::window_increment(payload)?;
        if head.stream == 0 {
            let was_shut = self.conn_send_window <= 0;
            h2conn::grow_connection(&mut self.conn_send_window, increment)?;
            if was_shut && self.conn_send_window > 0 {
                // Only the streams the connection window stopped: not all of them per frame.
                let blocked = std::mem::take(&mut self.conn_blocked);
                self.ready.extend(blocked);
            }
            return Ok(());
        }
        if self.idle(head.stream) {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let id = head.stream;
        let Some(st) = self.streams.get_mut(&id) else {
            // Closed: clients credit what they read even after the end (ignored, cheaply).
            return Ok(());
        };
        if let Err(reason) = h2conn::grow_stream(&mut st.send_window, increment) {
            self.reset(id, reason, "bad stream WINDOW_UPDATE");
            return Ok(());
        }
        if matches!(st.sending, Sending::Body { .. }) {
            self.ready.push(id);
        }
        Ok(())
    }
}
