//! Hand-written HTTP/2 frames (RFC 9113 §4.1 and §6) and a minimal HPACK encoder.
//!
//! [`H2Peer`](super::H2Peer) uses these for the few frames the `h2` crate will not send (a GOAWAY
//! with a chosen last-stream-id, a second SETTINGS, an invalid response HEADERS, frames on a
//! closed stream). Tests use them to drive a connection by hand and look at exact frames.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use h2::Reason;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 9;

/// Frame type codes (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6).
pub mod flag {
    /// DATA, HEADERS: last frame the sender will send on this stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION: the header block ends in this frame.
    pub const END_HEADERS: u8 = 0x4;
}

/// SETTINGS identifiers (RFC 9113 §6.5.2).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
}

/// The fixed 9-byte header in front of every frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    /// Payload length in bytes.
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
}

impl FrameHead {
    /// Parses the header at the start of `bytes`; `None` if fewer than 9 bytes are there.
    pub fn parse(bytes: &[u8]) -> Option<FrameHead> {
        let head: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        Some(FrameHead {
            len: usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]),
            kind: head[3],
            flags: head[4],
            stream_id: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        })
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// One complete frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(kind: u8, flags: u8, stream_id: u32, payload: impl Into<Bytes>) -> Frame {
        Frame {
            kind,
            flags,
            stream_id,
            payload: payload.into(),
        }
    }

    /// SETTINGS carrying `params` (identifier, value) in order.
    pub fn settings(params: &[(u16, u32)]) -> Frame {
        let mut payload = BytesMut::with_capacity(params.len() * 6);
        for &(id, value) in params {
            payload.put_u16(id);
            payload.put_u32(value);
        }
        Frame::new(kind::SETTINGS, 0, 0, payload.freeze())
    }

    /// SETTINGS with the ACK flag.
    pub fn settings_ack() -> Frame {
        Frame::new(kind::SETTINGS, flag::ACK, 0, Bytes::new())
    }

    /// A HEADERS frame holding a whole header block (END_HEADERS set), optionally ending the stream.
    pub fn headers(stream_id: u32, block: Bytes, end_stream: bool) -> Frame {
        let end = if end_stream { flag::END_STREAM } else { 0 };
        Frame::new(kind::HEADERS, flag::END_HEADERS | end, stream_id, block)
    }

    /// A DATA frame without padding.
    pub fn data(stream_id: u32, payload: impl Into<Bytes>, end_stream: bool) -> Frame {
        let end = if end_stream { flag::END_STREAM } else { 0 };
        Frame::new(kind::DATA, end, stream_id, payload)
    }

    pub fn rst_stream(stream_id: u32, reason: Reason) -> Frame {
        Frame::new(
            kind::RST_STREAM,
            0,
            stream_id,
            Bytes::copy_from_slice(&u32::from(reason).to_be_bytes()),
        )
    }

    /// GOAWAY (on stream 0) without debug data.
    pub fn goaway(last_stream_id: u32, reason: Reason) -> Frame {
        let mut payload = BytesMut::with_capacity(8);
        payload.put_u32(last_stream_id & 0x7fff_ffff);
        payload.put_u32(reason.into());
        Frame::new(kind::GOAWAY, 0, 0, payload.freeze())
    }

    pub fn window_update(stream_id: u32, increment: u32) -> Frame {
        Frame::new(
            kind::WINDOW_UPDATE,
            0,
            stream_id,
            Bytes::copy_from_slice(&(increment & 0x7fff_ffff).to_be_bytes()),
        )
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn reason(&self) -> Option<Reason> {
        let at = match self.kind {
            kind::RST_STREAM => 0,
            kind::GOAWAY => 4,
            _ => return None,
        };
        self.be_u32(at).map(Reason::from)
    }

    /// The last-stream-id of a GOAWAY frame.
    pub fn last_stream_id(&self) -> Option<u32> {
        (self.kind == kind::GOAWAY)
            .then(|| self.be_u32(0))
            .flatten()
            .map(|id| id & 0x7fff_ffff)
    }

    /// The window size increment of a WINDOW_UPDATE frame.
    pub fn window_increment(&self) -> Option<u32> {
        (self.kind == kind::WINDOW_UPDATE)
            .then(|| self.be_u32(0))
            .flatten()
            .map(|inc| inc & 0x7fff_ffff)
    }

    /// The last value a (non-ACK) SETTINGS frame gives for `id`.
    pub fn setting(&self, id: u16) -> Option<u32> {
        if self.kind != kind::SETTINGS {
            return None;
        }
        settings_value(&self.payload, id)
    }

    /// The big-endian `u32` at `at` in the payload.
    fn be_u32(&self, at: usize) -> Option<u32> {
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// The frame as it goes on the wire. The payload must be shorter than 16 MiB (a 24-bit
    /// length); a longer one is cut off in the length field, making the frame invalid.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.payload.len());
        let len = u32::try_from(self.payload.len())
            .unwrap_or(u32::MAX)
            .min(0xff_ffff);
        out.put_slice(&len.to_be_bytes()[1..]);
        out.put_u8(self.kind);
        out.put_u8(self.flags);
        out.put_u32(self.stream_id & 0x7fff_ffff);
        out.put_slice(&self.payload);
        out.freeze()
    }

    /// Reads one frame; `Ok(None)` when the stream ends before a complete frame header.
    pub async fn read_from<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Frame>> {
        let mut head = [0u8; HEADER_LEN];
        match reader.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let Some(head) = FrameHead::parse(&head) else {
            return Ok(None);
        };
        let mut payload = vec![0u8; head.len];
        reader.read_exact(&mut payload).await?;
        Ok(Some(Frame::new(
            head.kind,
            head.flags,
            head.stream_id,
            payload,
        )))
    }
}

/// The last value a SETTINGS payload gives for `id`.
pub(super) fn settings_value(payload: &[u8], id: u16) -> Option<u32> {
    payload
        .chunks_exact(6)
        .rev()
        .find(|p| u16::from_be_bytes([p[0], p[1]]) == id)
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
}

/// Encodes `fields` as an HPACK header block using only "literal header field without indexing,
/// new name" representations with raw (non-Huffman) strings (RFC 7541 §6.2.2).
///
/// Such a block never touches either side's dynamic table, so it can be spliced into a connection
/// whose other header blocks are encoded by `h2`. Names and values are written byte for byte, so
/// the block may deliberately be invalid HTTP (upper-case names, missing pseudo-headers).
pub fn hpack_literal(fields: &[(&str, &str)]) -> Bytes {
    let mut block = BytesMut::new();
    for (name, value) in fields {
        block.put_u8(0x00);
        put_string(&mut block, name.as_bytes());
        put_string(&mut block, value.as_bytes());
    }
    block.freeze()
}

/// A raw string literal: H bit clear, 7-bit prefix length, then the bytes.
fn put_string(out: &mut BytesMut, s: &[u8]) {
    put_integer(out, 0x00, 7, s.len());
    out.put_slice(s);
}

/// An HPACK integer with an `prefix_bits`-bit prefix (RFC 7541 §5.1); `first` holds the bits
/// above the prefix.
fn put_integer(out: &mut BytesMut, first: u8, prefix_bits: u32, mut value: usize) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        // Fits in the prefix, so the cast cannot truncate.
        out.put_u8(first | value as u8);
        return;
    }
    out.put_u8(first | max_prefix as u8);
    value -= max_prefix;
    while value >= 0x80 {
        out.put_u8((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_through_its_header() {
        let frame = Frame::goaway(7, Reason::NO_ERROR).encode();
        let head = FrameHead::parse(&frame).expect("nine bytes");
        assert_eq!(
            head,
            FrameHead {
                len: 8,
                kind: kind::GOAWAY,
                flags: 0,
                stream_id: 0
            }
        );
        let parsed = Frame::new(head.kind, head.flags, head.stream_id, frame.slice(9..));
        assert_eq!(parsed.last_stream_id(), Some(7));
        assert_eq!(parsed.reason(), Some(Reason::NO_ERROR));
    }

    #[test]
    fn settings_lookup_takes_the_last_value() {
        let frame = Frame::settings(&[
            (setting::MAX_CONCURRENT_STREAMS, 5),
            (setting::INITIAL_WINDOW_SIZE, 1),
            (setting::MAX_CONCURRENT_STREAMS, 2),
        ]);
        assert_eq!(frame.setting(setting::MAX_CONCURRENT_STREAMS), Some(2));
        assert_eq!(frame.setting(setting::MAX_FRAME_SIZE), None);
    }

    #[test]
    fn hpack_integers_use_continuation_bytes_past_the_prefix() {
        let mut out = BytesMut::new();
        put_integer(&mut out, 0, 5, 1337);
        assert_eq!(&out[..], &[0x1f, 0x9a, 0x0a]); // RFC 7541 §C.1.2
        let block = hpack_literal(&[("a", "bc")]);
        assert_eq!(&block[..], &[0x00, 0x01, b'a', 0x02, b'b', b'c']);
    }
}
