//! The chunked transfer coding of a response body (RFC 9112 §7.1), decoded in place from the
//! connection's read buffer: data comes out as slices of that buffer, without copying.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::{has_head_end, MAX_HEADERS};
use crate::proxy::headers::is_hop_by_hop_field;

/// Longest chunk-size line (size plus extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// Chunk-extension bytes a whole body may carry: they are read and dropped, so a body made of
/// extensions would cost memory and time for nothing (hyper's limit too).
const MAX_EXTENSION_BYTES: usize = 16 * 1024;
/// Largest trailer section accepted.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

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
    /// Bytes at the front of the buffer already searched for the end of the current size
    /// line or trailer section, so that one that trickles in is not searched again.
    scanned: usize,
    /// Chunk-extension bytes seen so far in this body.
    extensions: usize,
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
        Self {
            state: State::Size,
            scanned: 0,
            extensions: 0,
        }
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
                    let Some(end) = self.line_end(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let (size, extension) = parse_size_line(&buf[..end])?;
                    self.extensions += extension;
                    if self.extensions > MAX_EXTENSION_BYTES {
                        return Err(ChunkError("too many chunk-extension bytes"));
                    }
                    let _ = buf.split_to(end + 2);
                    self.scanned = 0;
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
                    // Parsed only once the blank line that ends the section is in.
                    let complete = buf.starts_with(b"\r\n")
                        || buf.starts_with(b"\n")
                        || has_head_end(buf, self.scanned);
                    if !complete {
                        if buf.len() > MAX_TRAILER_BYTES {
                            return Err(ChunkError("trailer section too large"));
                        }
                        self.scanned = buf.len();
                        return Ok(Decoded::NeedMore);
                    }
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
                        Ok(httparse::Status::Partial) => {
                            return Err(ChunkError("invalid trailer section"))
                        }
                        Err(_) => return Err(ChunkError("invalid trailer section")),
                    }
                }
            }
        }
    }
}

impl Decoder {
    /// Where the CRLF that ends the size line at the front of `buf` is, once it is in. A
    /// bare LF, or a line over [`MAX_SIZE_LINE`], is an error.
    fn line_end(&mut self, buf: &[u8]) -> Result<Option<usize>, ChunkError> {
        let from = self.scanned.min(buf.len());
        match buf[from..].iter().position(|b| *b == b'\n') {
            Some(i) => {
                let lf = from + i;
                if lf == 0 || buf[lf - 1] != b'\r' {
                    return Err(ChunkError("chunk-size line not ended by CRLF"));
                }
                if lf - 1 > MAX_SIZE_LINE {
                    return Err(ChunkError("chunk-size line too long"));
                }
                Ok(Some(lf - 1))
            }
            // The line may be MAX_SIZE_LINE long with its CR in, waiting for the LF.
            None if buf.len() > MAX_SIZE_LINE + 1 => Err(ChunkError("chunk-size line too long")),
            None => {
                self.scanned = buf.len();
                Ok(None)
            }
        }
    }
}

/// `1a3;ext=1` → (0x1a3, extension bytes). Strict where parsers could disagree on where the
/// line (and so the chunk) ends (RFC 9112 §7.1.1): hex digits, then optional spaces or tabs,
/// then nothing or a `;` and extensions of visible characters, spaces, tabs and obs-text; no
/// CR, LF or other control byte anywhere.
fn parse_size_line(line: &[u8]) -> Result<(u64, usize), ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let zeros = line[..digits].iter().take_while(|b| **b == b'0').count();
    if digits == 0 || digits - zeros.min(digits - 1) > 16 {
        return Err(ChunkError("invalid chunk size"));
    }
    let size = line[..digits].iter().try_fold(0u64, |acc, d| {
        let v = (*d as char)
            .to_digit(16)
            .ok_or(ChunkError("invalid chunk size"))?;
        Ok(acc << 4 | u64::from(v))
    })?;
    let rest = &line[digits..];
    let spaces = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    match rest[spaces..].split_first() {
        None => Ok((size, rest.len())),
        Some((b';', ext))
            if ext
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | 0x21..=0x7e | 0x80..)) =>
        {
            Ok((size, rest.len()))
        }
        _ => Err(ChunkError("invalid chunk-size line")),
    }
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
        assert_eq!(parse_size_line(b"A").unwrap(), (10, 0));
        assert_eq!(parse_size_line(b"ffffffffffffffff").unwrap(), (u64::MAX, 0));
        assert_eq!(parse_size_line(b"5 ;a=b").unwrap(), (5, 5));
        assert_eq!(parse_size_line(b"5 ").unwrap(), (5, 1));
        assert_eq!(parse_size_line(b"00000000000000005").unwrap(), (5, 0));
        assert_eq!(
            parse_size_line("5;n=\"é\"".as_bytes()).unwrap().0,
            5,
            "obs-text in a quoted value"
        );
        assert!(
            parse_size_line(b"1ffffffffffffffff").is_err(),
            "over 64 bits"
        );
    }

    #[test]
    fn lenient_size_lines_are_refused() {
        // Each of these ends the line, or the size, differently for some other parser.
        for bad in [
            &b"2;\nxx\r\n45\r\n0\r\n\r\n"[..],
            b"5\n\r\nhello\r\n0\r\n\r\n",
            b"5\x0c\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                all(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn extensions_and_trailers_are_bounded() {
        let mut input = Vec::new();
        while input.len() <= MAX_EXTENSION_BYTES + 4096 {
            input.extend_from_slice(b"1;");
            input.extend_from_slice(&[b'a'; 1000]);
            input.extend_from_slice(b"\r\nx\r\n");
        }
        input.extend_from_slice(b"0\r\n\r\n");
        assert!(all(&input, input.len()).is_err());
        let mut input = b"1\r\nx\r\n0\r\n".to_vec();
        while input.len() <= MAX_TRAILER_BYTES + 100 {
            input.extend_from_slice(b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        for step in [64, 4096] {
            let mut dec = Decoder::new();
            let mut buf = BytesMut::new();
            let mut fed = 0;
            let failed = loop {
                match dec.decode(&mut buf) {
                    Err(_) => break true,
                    Ok(Decoded::NeedMore) if fed < input.len() => {
                        let next = (fed + step).min(input.len());
                        buf.extend_from_slice(&input[fed..next]);
                        fed = next;
                    }
                    Ok(Decoded::NeedMore) => break false,
                    Ok(_) => {}
                }
            };
            assert!(
                failed,
                "an endless trailer section is refused (step {step})"
            );
        }
    }
}
