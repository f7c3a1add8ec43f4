//! HTTP/1.1 wire pieces both sides of the proxy share (RFC 9112): field limits, the
//! `Content-Length` rule, the end of a head, and the chunked coding. Pure: bytes in, values out.

pub(crate) mod chunked;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::HeaderMap;
use http::Version;
use tokio::io::AsyncRead;

use crate::proxy::headers::is_hop_by_hop_field;

/// Most header fields a head may carry (hyper's default).
pub(crate) const MAX_HEADERS: usize = 100;
/// Largest head accepted; a bigger one is malformed.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What the `Content-Length` fields say: `None` when there is none, `Some(None)` when one is
/// invalid or they disagree, else the length (repeated identical values count as one).
pub(crate) fn declared_length<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Option<Option<u64>> {
    let mut found = None;
    for value in values {
        let len = parse_length(value);
        found = Some(match found {
            None => len,
            Some(prev) if prev == len => len,
            Some(_) => None,
        });
    }
    found
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    // `Content-Length: 5, 5` is a list of identical values; anything else is invalid.
    for (parts, part) in value.split(|b| *b == b',').enumerate() {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = part.iter().try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        if parts > 0 && v != n {
            return None;
        }
        n = v;
    }
    Some(n)
}

/// Read buffer growth step.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Reads more of a peer's bytes into `buf`, growing it by [`READ_CHUNK`] when little room is
/// left; `Ok(0)` is the end of the stream.
pub(crate) fn poll_read_more<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// What the framing and connection fields of a head say, read from its raw fields.
pub(crate) struct Fields<'b> {
    /// `Connection: close`.
    pub(crate) close: bool,
    /// `Connection: keep-alive`.
    pub(crate) keep_alive: bool,
    /// `Transfer-Encoding` present: whether its last coding is `chunked`.
    pub(crate) chunked: Option<bool>,
    /// Transfer codings named over every `Transfer-Encoding` field.
    pub(crate) codings: usize,
    /// `Content-Length` present: its value, `None` if invalid or inconsistent.
    pub(crate) length: Option<Option<u64>>,
    /// Other field names the `Connection` header lists (rare).
    named: Vec<&'b str>,
}

impl<'b> Fields<'b> {
    pub(crate) fn read(raw: &[httparse::Header<'b>]) -> Self {
        let mut f = Fields {
            close: false,
            keep_alive: false,
            chunked: None,
            codings: 0,
            length: None,
            named: Vec::new(),
        };
        for h in raw {
            if h.name.eq_ignore_ascii_case("connection") {
                let value = std::str::from_utf8(h.value).unwrap_or_default();
                for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if token.eq_ignore_ascii_case("close") {
                        f.close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        f.keep_alive = true;
                    } else if !is_hop_by_hop_field(token) {
                        f.named.push(token);
                    }
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let value = String::from_utf8_lossy(h.value);
                let mut last = None;
                for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    f.codings += 1;
                    last = Some(coding);
                }
                match last {
                    Some(coding) => f.chunked = Some(coding.eq_ignore_ascii_case("chunked")),
                    None => {
                        f.chunked.get_or_insert(false);
                    }
                }
            }
        }
        let lengths = raw
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
        f.length = declared_length(lengths.map(|h| h.value));
        f
    }

    /// The transfer coding is exactly `chunked`, once (the only one weir reads).
    pub(crate) fn only_chunked(&self) -> bool {
        self.codings == 1 && self.chunked == Some(true)
    }

    /// The sender allows another message on the connection after this one.
    pub(crate) fn keep_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }

    /// Whether the `Connection` header names `name` (as hop-by-hop).
    pub(crate) fn named_by_connection(&self, name: &str) -> bool {
        !self.named.is_empty() && self.named.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// What is left once the fields are read: everything but the names, which borrow the head.
    pub(crate) fn into_framing(self) -> Fields<'static> {
        Fields {
            named: Vec::new(),
            ..self
        }
    }
}

/// Where a field sits in a head: its name and value as byte ranges of the buffer the head was
/// parsed from, so that the values can become slices of that buffer once it is split off.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

impl Span {
    /// The field `name: value`, both slices of `base`.
    pub(crate) fn of(base: &[u8], name: &[u8], value: &[u8]) -> Self {
        Span {
            name: range(base, name),
            value: range(base, value),
        }
    }

    pub(crate) fn name<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.name.0 as usize..self.name.1 as usize]
    }

    pub(crate) fn value(&self, head: &Bytes) -> Bytes {
        head.slice(self.value.0 as usize..self.value.1 as usize)
    }
}

/// Where `part`, a slice of `base`, sits in it. Heads are at most [`MAX_HEAD_BYTES`] long.
pub(crate) fn range(base: &[u8], part: &[u8]) -> (u32, u32) {
    let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
    (start as u32, (start + part.len()) as u32)
}

/// One chunk carrying `data` (not empty: an empty chunk is the last one).
pub(crate) fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, with the trailers (if any) as its trailer section.
pub(crate) fn last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        write_fields(out, trailers);
    }
    out.extend_from_slice(b"\r\n");
}

/// `name: value` lines, one per field.
pub(crate) fn write_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether `buf` holds the blank line that ends a head, looking from `from` on (bytes before
/// it were searched already). Bare LF line ends count, as the parser accepts them.
pub(crate) fn has_head_end(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2).min(buf.len());
    buf[start..]
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .any(|(i, _)| matches!(&buf[start + i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    #[test]
    fn chunks_and_trailers() {
        let mut out = Vec::new();
        chunk(&mut out, &[b'a'; 255]);
        assert!(out.starts_with(b"ff\r\naaa"));
        assert!(out.ends_with(b"aaa\r\n"));
        assert_eq!(out.len(), 4 + 255 + 2);
        out.clear();
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        last_chunk(&mut out, Some(&t));
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\n\r\n");
    }

    #[test]
    fn head_end_is_found_across_reads() {
        let full = b"HTTP/1.1 200 OK\r\nx: y\r\n\r\n";
        assert!(has_head_end(full, 0));
        assert!(!has_head_end(&full[..full.len() - 1], 0));
        // Searched up to the middle of the blank line before: still found.
        for cut in 0..full.len() {
            assert!(has_head_end(full, cut), "from {cut}");
        }
        assert!(has_head_end(b"HTTP/1.1 200 OK\n\n", 0), "bare LF");
        assert!(!has_head_end(b"HTTP/1.1 200 OK\r\n", 0));
    }
}
