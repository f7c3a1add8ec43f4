//! HTTP/2 frame layout (RFC 9113 §4, §6): the 9-byte frame header, the frame types and
//! flags weir uses, error codes, and writers for the frames weir sends.

/// What a client sends first (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub(crate) const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value and lower bound.
pub(crate) const DEFAULT_MAX_FRAME: usize = 16_384;
pub(crate) const MAX_FRAME_LIMIT: u32 = (1 << 24) - 1;
/// Initial window of every stream and of the connection (RFC 9113 §6.9.2).
pub(crate) const DEFAULT_WINDOW: i64 = 65_535;
pub(crate) const MAX_WINDOW: i64 = (1 << 31) - 1;

pub(crate) mod kind {
    pub(crate) const DATA: u8 = 0x0;
    pub(crate) const HEADERS: u8 = 0x1;
    pub(crate) const PRIORITY: u8 = 0x2;
    pub(crate) const RST_STREAM: u8 = 0x3;
    pub(crate) const SETTINGS: u8 = 0x4;
    pub(crate) const PUSH_PROMISE: u8 = 0x5;
    pub(crate) const PING: u8 = 0x6;
    pub(crate) const GOAWAY: u8 = 0x7;
    pub(crate) const WINDOW_UPDATE: u8 = 0x8;
    pub(crate) const CONTINUATION: u8 = 0x9;
}

pub(crate) mod flag {
    pub(crate) const END_STREAM: u8 = 0x1;
    pub(crate) const ACK: u8 = 0x1;
    pub(crate) const END_HEADERS: u8 = 0x4;
    pub(crate) const PADDED: u8 = 0x8;
    pub(crate) const PRIORITY: u8 = 0x20;
}

pub(crate) mod setting {
    pub(crate) const HEADER_TABLE_SIZE: u16 = 0x1;
    pub(crate) const ENABLE_PUSH: u16 = 0x2;
    pub(crate) const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub(crate) const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub(crate) const MAX_FRAME_SIZE: u16 = 0x5;
    pub(crate) const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// An HTTP/2 error code (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reason(pub(crate) u32);

impl Reason {
    pub(crate) const NO_ERROR: Reason = Reason(0x0);
    pub(crate) const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub(crate) const INTERNAL_ERROR: Reason = Reason(0x2);
    pub(crate) const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub(crate) const STREAM_CLOSED: Reason = Reason(0x5);
    pub(crate) const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub(crate) const REFUSED_STREAM: Reason = Reason(0x7);
    pub(crate) const CANCEL: Reason = Reason(0x8);
    pub(crate) const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub(crate) const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
}

/// A frame's 9-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) len: usize,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
}

impl Head {
    /// Reads the header at the start of `b`, which holds at least [`HEADER_LEN`] bytes.
    pub(crate) fn parse(b: &[u8]) -> Self {
        Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            // The reserved bit is ignored on receipt.
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub(crate) fn write(self, out: &mut Vec<u8>) {
        let len = self.len as u32;
        out.extend_from_slice(&[
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            self.kind,
            self.flags,
        ]);
        out.extend_from_slice(&self.stream.to_be_bytes());
    }

    pub(crate) fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The payload of a PADDED frame without its padding: `None` if the padding does not fit.
pub(crate) fn unpad(head: Head, payload: &[u8]) -> Option<std::ops::Range<usize>> {
    if !head.has(flag::PADDED) {
        return Some(0..payload.len());
    }
    let pad = usize::from(*payload.first()?);
    let end = payload.len().checked_sub(pad)?;
    (end >= 1).then_some(1..end)
}

/// The bytes of `payload` in `range`, copied out of the read buffer: a slice would keep the
/// whole buffer allocation alive for as long as the data waits to be read, so a peer's small
/// frames could pin many times the memory its flow-control window allows.
pub(crate) fn owned(payload: &[u8], range: std::ops::Range<usize>) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&payload[range])
}

pub(crate) fn write_settings(out: &mut Vec<u8>, settings: &[(u16, u32)]) {
    Head {
        len: settings.len() * 6,
        kind: kind::SETTINGS,
        flags: 0,
        stream: 0,
    }
    .write(out);
    for &(id, value) in settings {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub(crate) fn write_settings_ack(out: &mut Vec<u8>) {
    Head {
        len: 0,
        kind: kind::SETTINGS,
        flags: flag::ACK,
        stream: 0,
    }
    .write(out);
}

pub(crate) fn write_ping(out: &mut Vec<u8>, ack: bool, payload: [u8; 8]) {
    Head {
        len: 8,
        kind: kind::PING,
        flags: if ack { flag::ACK } else { 0 },
        stream: 0,
    }
    .write(out);
    out.extend_from_slice(&payload);
}

pub(crate) fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    Head {
        len: 4,
        kind: kind::WINDOW_UPDATE,
        flags: 0,
        stream,
    }
    .write(out);
    out.extend_from_slice(&increment.to_be_bytes());
}

pub(crate) fn write_rst_stream(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    Head {
        len: 4,
        kind: kind::RST_STREAM,
        flags: 0,
        stream,
    }
    .write(out);
    out.extend_from_slice(&reason.0.to_be_bytes());
}

pub(crate) fn write_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason) {
    Head {
        len: 8,
        kind: kind::GOAWAY,
        flags: 0,
        stream: 0,
    }
    .write(out);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&reason.0.to_be_bytes());
}

/// A header block as HEADERS plus as many CONTINUATION frames as `max_frame` requires.
pub(crate) fn write_headers(
    out: &mut Vec<u8>,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let mut chunks = block.chunks(max_frame.max(1));
    let first = chunks.next().unwrap_or(&[]);
    let mut rest = chunks.peekable();
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if rest.peek().is_none() {
        flags |= flag::END_HEADERS;
    }
    Head {
        len: first.len(),
        kind: kind::HEADERS,
        flags,
        stream,
    }
    .write(out);
    out.extend_from_slice(first);
    while let Some(chunk) = rest.next() {
        let flags = if rest.peek().is_none() {
            flag::END_HEADERS
        } else {
            0
        };
        Head {
            len: chunk.len(),
            kind: kind::CONTINUATION,
            flags,
            stream,
        }
        .write(out);
        out.extend_from_slice(chunk);
    }
}

pub(crate) fn write_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    Head {
        len: data.len(),
        kind: kind::DATA,
        flags: if end_stream { flag::END_STREAM } else { 0 },
        stream,
    }
    .write(out);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip_and_ignore_the_reserved_bit() {
        let head = Head {
            len: 0x01_02_03,
            kind: kind::HEADERS,
            flags: flag::END_HEADERS | flag::END_STREAM,
            stream: 0x7fff_fffe,
        };
        let mut out = Vec::new();
        head.write(&mut out);
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(Head::parse(&out), head);
        out[5] |= 0x80;
        assert_eq!(Head::parse(&out).stream, 0x7fff_fffe);
    }

    #[test]
    fn padding_is_checked() {
        let padded = |flags| Head {
            len: 0,
            kind: kind::DATA,
            flags,
            stream: 1,
        };
        assert_eq!(unpad(padded(0), b"abc"), Some(0..3));
        assert_eq!(unpad(padded(flag::PADDED), &[2, b'a', 0, 0]), Some(1..2));
        assert_eq!(unpad(padded(flag::PADDED), &[3, b'a', 0, 0]), Some(1..1));
        assert_eq!(unpad(padded(flag::PADDED), &[4, b'a', 0, 0]), None);
        assert_eq!(unpad(padded(flag::PADDED), &[]), None);
    }

    #[test]
    fn long_header_blocks_continue() {
        let block = vec![7u8; 40];
        let mut out = Vec::new();
        write_headers(&mut out, 3, &block, true, 16);
        let first = Head::parse(&out);
        assert_eq!(
            (first.len, first.kind, first.flags),
            (16, kind::HEADERS, flag::END_STREAM)
        );
        let second = Head::parse(&out[25..]);
        assert_eq!(
            (second.len, second.kind, second.flags),
            (16, kind::CONTINUATION, 0)
        );
        let third = Head::parse(&out[50..]);
        assert_eq!(
            (third.len, third.kind, third.flags),
            (8, kind::CONTINUATION, flag::END_HEADERS)
        );
        assert_eq!(out.len(), 3 * HEADER_LEN + 40);
    }
}
