//! The chunked transfer coding of a response body (RFC 9112 §7.1), decoded in place from the
//! connection's read buffer: data comes out as slices of that buffer, without copying.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::{MAX_HEADERS, MAX_HEAD_BYTES};
use crate::proxy::headers::is_hop_by_hop_field;

/// Longest chunk-size line (size plus extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
    Done,
}

#[derive(Debug)]
pub(crate) struct Decoder {
    state: State,
}

/// What the buffer yielded.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// The trailer section (the body has ended).
    Trailers(HeaderMap),
    /// The body has ended, without trailers.
    End,
    /// The buffer holds no complete next piece: read more.
    NeedMore,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body: {0}")]
pub(crate) struct ChunkError(&'static str);

impl Decoder {
    pub(crate) fn new() -> Self {
        Self { state: State::Size }
    }

    #[cfg(test)]
    fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes the next piece from the front of `buf`, consuming what it used.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Size => {
                    let Some(end) = find_crlf(buf, MAX_SIZE_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_size(&buf[..end])?;
                    let _ = buf.split_to(end + 2);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(rest) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(rest).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let rest = rest - take as u64;
                    self.state = if rest == 0 {
                        State::DataEnd
                    } else {
                        State::Data(rest)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields {
                                // Framing and hop-by-hop fields never travel on as trailers
                                // (an HTTP/2 client's stream would be reset for them), and
                                // fields that are not valid header fields are dropped.
                                if is_hop_by_hop_field(f.name)
                                    || f.name.eq_ignore_ascii_case("content-length")
                                {
                                    continue;
                                }
                                if let (Ok(n), Ok(v)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) {
                                    trailers.append(n, v);
                                }
                            }
                            let _ = buf.split_to(len);
                            self.state = State::Done;
                            return Ok(if trailers.is_empty() {
                                Decoded::End
                            } else {
                                Decoded::Trailers(trailers)
                            });
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                            return Err(ChunkError("trailer section too large"))
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                        Err(_) => return Err(ChunkError("invalid trailer section")),
                    }
                }
            }
        }
    }
}

/// Position of the first CRLF, if it is within `limit` bytes.
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, ChunkError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i <= limit => Ok(Some(i)),
        Some(_) => Err(ChunkError("chunk-size line too long")),
        None if buf.len() > limit => Err(ChunkError("chunk-size line too long")),
        None => Ok(None),
    }
}

/// `1a3;ext=1` → 0x1a3. Extensions are ignored.
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 {
        return Err(ChunkError("invalid chunk size"));
    }
    digits.iter().try_fold(0u64, |acc, d| {
        let v = (*d as char)
            .to_digit(16)
            .ok_or(ChunkError("invalid chunk size"))?;
        Ok(acc << 4 | u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), ChunkError> {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut data = Vec::new();
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => return Ok((data, Some(t))),
                Decoded::End => return Ok((data, None)),
                Decoded::NeedMore => {
                    assert!(fed < input.len(), "ran out of input");
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn decodes_whole_and_byte_by_byte() {
        let input = b"5\r\nhello\r\n7;name=v\r\n, world\r\n0\r\n\r\n";
        for step in [1, 2, 3, input.len()] {
            let (data, trailers) = all(input, step).unwrap();
            assert_eq!(data, b"hello, world", "step {step}");
            assert!(trailers.is_none());
        }
    }

    #[test]
    fn trailers_come_out_last() {
        let input = b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nconnection: x\r\ngrpc-message: ok\r\n\r\n";
        for step in [1, input.len()] {
            let (data, trailers) = all(input, step).unwrap();
            assert_eq!(data, b"abc");
            let t = trailers.unwrap();
            assert_eq!(t["grpc-status"], "0");
            assert_eq!(t["grpc-message"], "ok");
            assert!(t.get("connection").is_none(), "hop-by-hop trailer dropped");
        }
    }

    #[test]
    fn what_follows_the_body_stays_in_the_buffer() {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&b"1\r\nx\r\n0\r\n\r\nHTTP/1.1"[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"x")))
        );
        assert_eq!(dec.decode(&mut buf), Ok(Decoded::End));
        assert!(dec.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn rejects_bad_framing() {
        assert!(all(b"zz\r\n", 10).is_err());
        assert!(all(b"3\r\nabcX\r\n", 10).is_err());
        assert!(
            all(b"11111111111111111\r\n", 30).is_err(),
            "size overflows u64"
        );
        let long = vec![b'1'; MAX_SIZE_LINE + 10];
        assert!(all(&long, long.len()).is_err());
        assert_eq!(parse_size(b"A").unwrap(), 10);
        assert_eq!(parse_size(b"ffffffffffffffff").unwrap(), u64::MAX);
    }
}
