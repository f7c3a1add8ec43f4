//! What both ends of weir's HTTP/2 connections do the same way: reading whole frames out of
//! the read buffer, writing the write buffer out, applying the peer's SETTINGS, collecting
//! header blocks across CONTINUATION frames, and checking the fixed-size control frames.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use super::frame::{self, flag, setting, Head, Reason};
use super::hpack::TableUpdate;

/// A connection error: GOAWAY with `reason`, then close (RFC 9113 §5.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnError {
    pub(crate) reason: Reason,
    pub(crate) why: &'static str,
}

pub(crate) fn conn_error(reason: Reason, why: &'static str) -> ConnError {
    ConnError { reason, why }
}

/// The next whole frame in `rbuf`, if one is there; frames over `max` bytes are an error.
pub(crate) fn next_frame(
    rbuf: &mut BytesMut,
    max: usize,
) -> Result<Option<(Head, Bytes)>, ConnError> {
    if rbuf.len() < frame::HEADER_LEN {
        return Ok(None);
    }
    let head = Head::parse(rbuf);
    if head.len > max {
        return Err(conn_error(
            Reason::FRAME_SIZE_ERROR,
            "frame over SETTINGS_MAX_FRAME_SIZE",
        ));
    }
    if rbuf.len() < frame::HEADER_LEN + head.len {
        rbuf.reserve(frame::HEADER_LEN + head.len - rbuf.len());
        return Ok(None);
    }
    rbuf.advance(frame::HEADER_LEN);
    Ok(Some((head, rbuf.split_to(head.len).freeze())))
}

/// Frames that may not come now: anything before the peer's first SETTINGS, and anything but
/// the CONTINUATION of a header block in progress (RFC 9113 §3.4, §6.10).
pub(crate) fn check_order(
    settings_seen: bool,
    partial: Option<&Partial>,
    head: Head,
) -> Result<(), ConnError> {
    if !settings_seen && head.kind != frame::kind::SETTINGS {
        return Err(conn_error(
            Reason::PROTOCOL_ERROR,
            "first frame is not SETTINGS",
        ));
    }
    if let Some(p) = partial {
        if head.kind != frame::kind::CONTINUATION || head.stream != p.stream() {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "header block interrupted",
            ));
        }
    }
    Ok(())
}

/// The connection's receive window: what the peer may still send, and the credit for bytes
/// read (or discarded) that has not gone back yet.
pub(crate) struct RecvWindow {
    window: i64,
    credit: u32,
    batch: u32,
}

impl RecvWindow {
    /// A window of `size` bytes, credited back a quarter at a time.
    pub(crate) fn new(size: u32) -> Self {
        Self {
            window: i64::from(size),
            credit: 0,
            batch: size / 4,
        }
    }

    /// DATA of `n` bytes (padding included) arrived.
    pub(crate) fn take(&mut self, n: i64) -> Result<(), ConnError> {
        self.window -= n;
        if self.window < 0 {
            return Err(conn_error(
                Reason::FLOW_CONTROL_ERROR,
                "DATA over the connection window",
            ));
        }
        Ok(())
    }

    /// `n` bytes are done with: a WINDOW_UPDATE goes into `out` once a batch has built up.
    pub(crate) fn credit(&mut self, n: u32, out: &mut Vec<u8>) {
        self.credit = self.credit.saturating_add(n);
        if self.credit >= self.batch {
            frame::write_window_update(out, 0, self.credit);
            self.window += i64::from(self.credit);
            self.credit = 0;
        }
    }
}

/// Bytes waiting to be written, and whether a flush is owed (TLS buffers inside).
pub(crate) struct Output {
    pub(crate) buf: Vec<u8>,
    pos: usize,
    needs_flush: bool,
}

impl Output {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            pos: 0,
            needs_flush: false,
        }
    }

    /// Bytes not written yet.
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Everything written and flushed.
    pub(crate) fn idle(&self) -> bool {
        self.pending() == 0 && !self.needs_flush
    }

    /// Writes (and flushes) as much as the socket takes; whether anything moved. An error
    /// means the connection is gone.
    pub(crate) fn poll_send<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        shrink_over: usize,
    ) -> Result<bool, ()> {
        let mut progress = false;
        while self.pos < self.buf.len() {
            match Pin::new(&mut *io).poll_write(cx, &self.buf[self.pos..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(()),
                Poll::Ready(Ok(n)) => {
                    self.pos += n;
                    progress = true;
                }
                Poll::Pending => break,
            }
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > shrink_over {
                self.buf.shrink_to(shrink_over / 4);
            }
            self.needs_flush = true;
        }
        if self.needs_flush {
            match Pin::new(&mut *io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    /// Appends GOAWAY and makes one attempt to get everything out: the connection is closing.
    pub(crate) fn last_words<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        last_stream: u32,
        reason: Reason,
    ) {
        frame::write_goaway(&mut self.buf, last_stream, reason);
        let _ = Pin::new(&mut *io).poll_write(cx, &self.buf[self.pos..]);
        let _ = Pin::new(&mut *io).poll_flush(cx);
    }
}

/// The peer's SETTINGS as they concern sending to it.
pub(crate) struct PeerSettings {
    pub(crate) initial_window: i64,
    pub(crate) max_frame: usize,
    pub(crate) max_streams: usize,
    pub(crate) table: TableUpdate,
    /// The peer decoder's table size as it last announced it.
    pub(crate) table_size: u32,
}

impl Default for PeerSettings {
    fn default() -> Self {
        Self {
            initial_window: frame::DEFAULT_WINDOW,
            max_frame: frame::DEFAULT_MAX_FRAME,
            max_streams: usize::MAX,
            table: TableUpdate::NotNeeded,
            table_size: super::hpack::DEFAULT_TABLE_SIZE,
        }
    }
}

/// What a SETTINGS frame asks of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settings {
    /// An acknowledgement of ours.
    Ack,
    /// New values applied; every stream's send window moves by `window_delta`. Answer with
    /// SETTINGS ACK.
    Applied { window_delta: i64 },
}

impl PeerSettings {
    /// Checks and applies a SETTINGS frame (RFC 9113 §6.5).
    pub(crate) fn apply(&mut self, head: Head, payload: &[u8]) -> Result<Settings, ConnError> {
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
            return Ok(Settings::Ack);
        }
        if !payload.len().is_multiple_of(6) {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS of the wrong size",
            ));
        }
        let before = self.initial_window;
        for s in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                setting::HEADER_TABLE_SIZE => {
                    self.table.on_setting(value);
                    self.table_size = value;
                }
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(conn_error(
                        Reason::PROTOCOL_ERROR,
                        "SETTINGS_ENABLE_PUSH over 1",
                    ));
                }
                setting::MAX_CONCURRENT_STREAMS => self.max_streams = value as usize,
                setting::INITIAL_WINDOW_SIZE => {
                    if i64::from(value) > frame::MAX_WINDOW {
                        return Err(conn_error(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
                        ));
                    }
                    self.initial_window = i64::from(value);
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME as u32..=frame::MAX_FRAME_LIMIT).contains(&value)
                    {
                        return Err(conn_error(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.max_frame = value as usize;
                }
                // MAX_HEADER_LIST_SIZE is advisory; unknown settings are ignored.
                _ => {}
            }
        }
        Ok(Settings::Applied {
            window_delta: self.initial_window - before,
        })
    }
}

/// Moves a send window by a WINDOW_UPDATE or SETTINGS change; `Err` if it passes 2^31-1.
pub(crate) fn grow(window: &mut i64, by: i64) -> Result<(), ()> {
    *window += by;
    if *window > frame::MAX_WINDOW {
        Err(())
    } else {
        Ok(())
    }
}

/// A connection-level WINDOW_UPDATE of `increment` (RFC 9113 §6.9).
pub(crate) fn grow_connection(window: &mut i64, increment: i64) -> Result<(), ConnError> {
    if increment == 0 {
        return Err(conn_error(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0"));
    }
    grow(window, increment)
        .map_err(|()| conn_error(Reason::FLOW_CONTROL_ERROR, "connection window over 2^31-1"))
}

/// A stream-level WINDOW_UPDATE of `increment`; `Err` is the reason to reset the stream with.
pub(crate) fn grow_stream(window: &mut i64, increment: i64) -> Result<(), Reason> {
    if increment == 0 {
        return Err(Reason::PROTOCOL_ERROR);
    }
    grow(window, increment).map_err(|()| Reason::FLOW_CONTROL_ERROR)
}

/// A WINDOW_UPDATE's increment (0 is for the caller to refuse, per stream or connection).
pub(crate) fn window_increment(payload: &[u8]) -> Result<i64, ConnError> {
    let b = <[u8; 4]>::try_from(payload)
        .map_err(|_| conn_error(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size"))?;
    Ok(i64::from(u32::from_be_bytes(b) & 0x7fff_ffff))
}

/// A RST_STREAM's error code.
pub(crate) fn rst_reason(head: Head, payload: &[u8]) -> Result<Reason, ConnError> {
    let b = <[u8; 4]>::try_from(payload)
        .map_err(|_| conn_error(Reason::FRAME_SIZE_ERROR, "RST_STREAM of the wrong size"))?;
    if head.stream == 0 {
        return Err(conn_error(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
    }
    Ok(Reason(u32::from_be_bytes(b)))
}

/// A PING's payload.
pub(crate) fn ping_payload(head: Head, payload: &[u8]) -> Result<[u8; 8], ConnError> {
    if head.stream != 0 {
        return Err(conn_error(Reason::PROTOCOL_ERROR, "PING on a stream"));
    }
    <[u8; 8]>::try_from(payload)
        .map_err(|_| conn_error(Reason::FRAME_SIZE_ERROR, "PING of the wrong size"))
}

/// A GOAWAY's last-stream-id.
pub(crate) fn goaway_last_stream(head: Head, payload: &[u8]) -> Result<u32, ConnError> {
    if head.stream != 0 {
        return Err(conn_error(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
    }
    if payload.len() < 8 {
        return Err(conn_error(Reason::FRAME_SIZE_ERROR, "GOAWAY too short"));
    }
    Ok(u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff)
}

/// A header block's first fragment, from its HEADERS frame.
pub(crate) struct Fragment {
    pub(crate) stream: u32,
    pub(crate) end_stream: bool,
    /// The stream the priority fields say it depends on, if the frame carries them.
    pub(crate) depends_on: Option<u32>,
    pub(crate) block: Bytes,
}

/// Strips a HEADERS frame's padding and priority fields.
pub(crate) fn headers_fragment(head: Head, payload: &Bytes) -> Result<Fragment, ConnError> {
    if head.stream == 0 {
        return Err(conn_error(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
    }
    let range = frame::unpad(head, payload).ok_or(conn_error(
        Reason::PROTOCOL_ERROR,
        "padding longer than the frame",
    ))?;
    let mut block = payload.slice(range);
    let mut depends_on = None;
    if head.has(flag::PRIORITY) {
        if block.len() < 5 {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "HEADERS too short for its priority",
            ));
        }
        depends_on =
            Some(u32::from_be_bytes([block[0], block[1], block[2], block[3]]) & 0x7fff_ffff);
        block.advance(5);
    }
    Ok(Fragment {
        stream: head.stream,
        end_stream: head.has(flag::END_STREAM),
        depends_on,
        block,
    })
}

/// A header block being collected across CONTINUATION frames.
pub(crate) struct Partial {
    first: Fragment,
    block: BytesMut,
}

/// Where a header block stands after a HEADERS or CONTINUATION frame.
enum Assembly {
    Complete(Fragment),
    /// More CONTINUATION frames are to come.
    Partial(Partial),
}

impl Partial {
    pub(crate) fn stream(&self) -> u32 {
        self.first.stream
    }
}

/// A HEADERS frame: the whole block if it ends here, else `None` and the block waits in
/// `partial` for its CONTINUATION frames.
pub(crate) fn headers(
    partial: &mut Option<Partial>,
    head: Head,
    payload: &Bytes,
) -> Result<Option<Fragment>, ConnError> {
    Ok(settle(partial, start_block(head, payload)?))
}

/// A CONTINUATION frame for the block in `partial`: the whole block once it ends.
pub(crate) fn continuation(
    partial: &mut Option<Partial>,
    head: Head,
    payload: &[u8],
    max: usize,
) -> Result<Option<Fragment>, ConnError> {
    let Some(p) = partial.take() else {
        return Err(conn_error(
            Reason::PROTOCOL_ERROR,
            "CONTINUATION without HEADERS",
        ));
    };
    Ok(settle(partial, continue_block(p, head, payload, max)?))
}

fn settle(partial: &mut Option<Partial>, assembly: Assembly) -> Option<Fragment> {
    match assembly {
        Assembly::Complete(f) => Some(f),
        Assembly::Partial(p) => {
            *partial = Some(p);
            None
        }
    }
}

/// Starts a header block from a HEADERS frame.
fn start_block(head: Head, payload: &Bytes) -> Result<Assembly, ConnError> {
    let first = headers_fragment(head, payload)?;
    if head.has(flag::END_HEADERS) {
        return Ok(Assembly::Complete(first));
    }
    let mut block = BytesMut::with_capacity(first.block.len() * 2);
    block.extend_from_slice(&first.block);
    Ok(Assembly::Partial(Partial { first, block }))
}

/// Adds a CONTINUATION frame to `partial`; blocks over `max` bytes are refused.
fn continue_block(
    mut partial: Partial,
    head: Head,
    payload: &[u8],
    max: usize,
) -> Result<Assembly, ConnError> {
    if partial.block.len() + payload.len() > max {
        return Err(conn_error(
            Reason::ENHANCE_YOUR_CALM,
            "header block too large",
        ));
    }
    partial.block.extend_from_slice(payload);
    if !head.has(flag::END_HEADERS) {
        return Ok(Assembly::Partial(partial));
    }
    let mut first = partial.first;
    first.block = partial.block.freeze();
    Ok(Assembly::Complete(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::frame::kind;

    fn head(kind: u8, flags: u8, stream: u32, len: usize) -> Head {
        Head {
            len,
            kind,
            flags,
            stream,
        }
    }

    #[test]
    fn frames_come_out_whole() {
        let mut rbuf = BytesMut::new();
        head(kind::PING, 0, 0, 8).write(&mut Vec::new());
        let mut wire = Vec::new();
        head(kind::PING, 0, 0, 8).write(&mut wire);
        wire.extend_from_slice(b"12345678");
        rbuf.extend_from_slice(&wire[..12]);
        assert!(next_frame(&mut rbuf, 16_384).expect("fine").is_none());
        rbuf.extend_from_slice(&wire[12..]);
        let (h, payload) = next_frame(&mut rbuf, 16_384).expect("fine").expect("whole");
        assert_eq!((h.kind, &payload[..]), (kind::PING, &b"12345678"[..]));
        let mut big = BytesMut::new();
        let mut w = Vec::new();
        head(kind::DATA, 0, 1, 16_385).write(&mut w);
        big.extend_from_slice(&w);
        assert_eq!(
            next_frame(&mut big, 16_384).err().map(|e| e.reason),
            Some(Reason::FRAME_SIZE_ERROR)
        );
    }

    #[test]
    fn settings_are_checked_and_applied() {
        let mut peer = PeerSettings::default();
        let settings = |pairs: &[(u16, u32)]| {
            let mut p = Vec::new();
            for (id, v) in pairs {
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&v.to_be_bytes());
            }
            p
        };
        let h = head(kind::SETTINGS, 0, 0, 0);
        let applied = peer.apply(h, &settings(&[(4, 100_000), (3, 8), (1, 0)]));
        assert_eq!(
            applied,
            Ok(Settings::Applied {
                window_delta: 100_000 - 65_535
            })
        );
        assert_eq!(peer.max_streams, 8);
        assert_eq!(peer.table, TableUpdate::Due);
        let err = |peer: &mut PeerSettings, p: &[u8]| peer.apply(h, p).err().map(|e| e.reason);
        assert_eq!(
            err(&mut peer, &settings(&[(4, 1 << 31)])),
            Some(Reason::FLOW_CONTROL_ERROR)
        );
        assert_eq!(
            err(&mut peer, &settings(&[(5, 100)])),
            Some(Reason::PROTOCOL_ERROR)
        );
        assert_eq!(
            err(&mut peer, &settings(&[(2, 2)])),
            Some(Reason::PROTOCOL_ERROR)
        );
        assert_eq!(err(&mut peer, &[0; 5]), Some(Reason::FRAME_SIZE_ERROR));
        let ack = head(kind::SETTINGS, flag::ACK, 0, 0);
        assert_eq!(peer.apply(ack, &[]), Ok(Settings::Ack));
        assert!(peer.apply(ack, &[0; 6]).is_err());
        assert!(peer.apply(head(kind::SETTINGS, 0, 1, 0), &[]).is_err());
    }

    #[test]
    fn header_blocks_continue_and_are_bounded() {
        let payload = Bytes::from_static(b"abc");
        let h = head(kind::HEADERS, flag::END_STREAM, 3, 3);
        let Ok(Assembly::Partial(p)) = start_block(h, &payload) else {
            panic!("partial expected")
        };
        assert_eq!(p.stream(), 3);
        let c = head(kind::CONTINUATION, flag::END_HEADERS, 3, 2);
        let Ok(Assembly::Complete(f)) = continue_block(p, c, b"de", 100) else {
            panic!("complete expected")
        };
        assert_eq!((&f.block[..], f.end_stream), (&b"abcde"[..], true));
        let Ok(Assembly::Partial(p)) = start_block(h, &payload) else {
            panic!("partial expected")
        };
        assert!(continue_block(p, c, b"de", 4).is_err());
        // Priority fields are stripped and reported.
        let mut prio = vec![0, 0, 0, 1, 16];
        prio.extend_from_slice(b"xy");
        let h = head(
            kind::HEADERS,
            flag::END_HEADERS | flag::PRIORITY,
            3,
            prio.len(),
        );
        let Ok(Assembly::Complete(f)) = start_block(h, &Bytes::from(prio)) else {
            panic!("complete expected")
        };
        assert_eq!((f.depends_on, &f.block[..]), (Some(1), &b"xy"[..]));
    }
}
