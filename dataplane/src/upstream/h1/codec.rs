//! HTTP/1.1 message framing towards a backend (RFC 9112): the request head weir writes, the
//! response head it parses, and how long each body is. Pure: bytes in, values out.

use std::mem::MaybeUninit;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use bytes::{Bytes, BytesMut};

use crate::http1::{declared_length, write_fields, Fields, Span, MAX_HEADERS, MAX_HEAD_BYTES};
use crate::proxy::headers::is_hop_by_hop_field;

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No body at all.
    Empty,
    /// `Content-Length: n`, then exactly n bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked` (length unknown when the head is written).
    Chunked,
}

impl RequestFraming {
    /// Chooses the framing from the request's own `Content-Length` (validated by the server
    /// side already), else from what the body says about itself.
    pub(crate) fn choose(headers: &HeaderMap, body_empty: bool, exact: Option<u64>) -> Self {
        let values = headers.get_all(header::CONTENT_LENGTH);
        if let Some(Some(len)) = declared_length(values.iter().map(HeaderValue::as_bytes)) {
            return if len == 0 {
                RequestFraming::Empty
            } else {
                RequestFraming::Length(len)
            };
        }
        match (body_empty, exact) {
            (true, _) | (false, Some(0)) => RequestFraming::Empty,
            (false, Some(len)) => RequestFraming::Length(len),
            (false, None) => RequestFraming::Chunked,
        }
    }
}

/// Writes `METHOD target HTTP/1.1`, the headers, and the framing header the body needs.
/// The caller has already removed hop-by-hop headers (including `Transfer-Encoding`).
pub(crate) fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(out, headers);
    let has_length = headers.contains_key(header::CONTENT_LENGTH);
    match framing {
        RequestFraming::Empty => {
            // A method that defines a meaning for content says "none" explicitly.
            if !has_length && matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        RequestFraming::Length(len) if !has_length => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(len.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Length(_) => {}
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseFraming {
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: ResponseFraming,
    /// The connection may carry another request after this response.
    pub(crate) keep_alive: bool,
}

/// Why a response head is unacceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("invalid response head: {0}")]
    Syntax(String),
    #[error("response head over {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("invalid header {0}")]
    Header(String),
    #[error("status 101: the backend switched protocols, which weir does not proxy")]
    SwitchingProtocols,
}

/// Parses one response head from the start of `buf`. `Ok(None)`: not complete yet.
/// Informational (1xx) heads are returned like any other; the caller skips them.
///
/// Framing comes from the raw fields. Hop-by-hop fields (and those `Connection` names) are
/// read for framing and keep-alive but left out of the returned headers: they never travel on.
///
/// A complete head is taken out of `buf`; its header values are slices of it, not copies.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError::Syntax(e.to_string())),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|e| HeadError::Syntax(e.to_string()))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(HeadError::SwitchingProtocols);
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let fields = Fields::read(parsed.headers);
    let mut spans = [Span::default(); MAX_HEADERS];
    let mut kept = 0;
    for h in parsed.headers.iter() {
        if is_hop_by_hop_field(h.name) || fields.named_by_connection(h.name) {
            continue;
        }
        // With Transfer-Encoding, Content-Length is wrong by definition: it must not reach
        // the client, whose framing it would set (RFC 9112 §6.3).
        if fields.chunked.is_some() && h.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        spans[kept] = Span::of(buf, h.name.as_bytes(), h.value);
        kept += 1;
    }
    let fields = fields.into_framing();
    let head: Bytes = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(kept);
    for span in &spans[..kept] {
        let name = span.name(&head);
        let header = || HeadError::Header(String::from_utf8_lossy(name).into_owned());
        let name = HeaderName::from_bytes(name).map_err(|_| header())?;
        let value = HeaderValue::from_maybe_shared(span.value(&head)).map_err(|_| header())?;
        headers.append(name, value);
    }
    let mut keep_alive = fields.keep_alive(version);
    let framing = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || *method == Method::HEAD
    {
        ResponseFraming::Empty
    } else if let Some(chunked) = fields.chunked {
        // Transfer-Encoding overrides Content-Length; a message carrying both is a smuggling
        // risk, so its connection is not reused (RFC 9112 §6.3). HTTP/1.0 has no
        // Transfer-Encoding: its framing is suspect too (§6.1).
        if fields.length.is_some() || version == Version::HTTP_10 {
            keep_alive = false;
        }
        if chunked {
            ResponseFraming::Chunked
        } else {
            keep_alive = false;
            ResponseFraming::UntilClose
        }
    } else if let Some(length) = fields.length {
        ResponseFraming::Length(length.ok_or(HeadError::ContentLength)?)
    } else {
        keep_alive = false;
        ResponseFraming::UntilClose
    };
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], method: &Method) -> Result<Option<ResponseHead>, HeadError> {
        parse_head(&mut BytesMut::from(raw), method)
    }

    fn head(raw: &str) -> ResponseHead {
        parse(raw.as_bytes(), &Method::GET).unwrap().unwrap()
    }

    #[test]
    fn request_head_with_each_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a.example"));
        let mut out = Vec::new();
        encode_head(
            &mut out,
            &Method::GET,
            "/x?y=1",
            &headers,
            RequestFraming::Empty,
        );
        assert_eq!(out, b"GET /x?y=1 HTTP/1.1\r\nhost: a.example\r\n\r\n");
        out.clear();
        encode_head(
            &mut out,
            &Method::POST,
            "/",
            &headers,
            RequestFraming::Empty,
        );
        assert!(out.ends_with(b"content-length: 0\r\n\r\n"));
        out.clear();
        encode_head(
            &mut out,
            &Method::PUT,
            "/",
            &headers,
            RequestFraming::Length(12),
        );
        assert!(out.ends_with(b"content-length: 12\r\n\r\n"));
        out.clear();
        encode_head(
            &mut out,
            &Method::POST,
            "/",
            &headers,
            RequestFraming::Chunked,
        );
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
        out.clear();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        encode_head(
            &mut out,
            &Method::PUT,
            "/",
            &headers,
            RequestFraming::Length(3),
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
    }

    #[test]
    fn framing_prefers_the_declared_length() {
        let mut h = HeaderMap::new();
        assert_eq!(
            RequestFraming::choose(&h, true, None),
            RequestFraming::Empty
        );
        assert_eq!(
            RequestFraming::choose(&h, false, None),
            RequestFraming::Chunked
        );
        assert_eq!(
            RequestFraming::choose(&h, false, Some(9)),
            RequestFraming::Length(9)
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        assert_eq!(
            RequestFraming::choose(&h, false, None),
            RequestFraming::Length(7)
        );
    }

    #[test]
    fn response_framing() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"[..]);
        let h = parse_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(h.framing, ResponseFraming::Length(5));
        assert!(h.keep_alive);
        assert_eq!(&buf[..], b"hello", "the head is taken out of the buffer");
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, ResponseFraming::Chunked);
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(h.framing, ResponseFraming::Chunked);
        assert!(!h.keep_alive, "both headers: never reuse");
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, ResponseFraming::UntilClose);
        let h = head("HTTP/1.1 200 OK\r\nserver: x\r\n\r\n");
        assert_eq!(h.framing, ResponseFraming::UntilClose);
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(h.framing, ResponseFraming::Empty);
        let h = head("HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n");
        assert_eq!(h.framing, ResponseFraming::Empty);
        let h = head("HTTP/1.1 100 Continue\r\n\r\n");
        assert!(h.status.is_informational());
        let raw = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n";
        let h = parse(raw.as_bytes(), &Method::HEAD).unwrap().unwrap();
        assert_eq!(h.framing, ResponseFraming::Empty);
    }

    #[test]
    fn content_length_beside_transfer_encoding_is_dropped() {
        let h =
            head("HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, ResponseFraming::Chunked);
        assert!(h.headers.get("content-length").is_none());
        assert!(!h.keep_alive);
        let h =
            head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, ResponseFraming::Chunked);
        assert!(!h.keep_alive, "HTTP/1.0 with Transfer-Encoding");
    }

    #[test]
    fn hop_by_hop_fields_stay_behind() {
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nx-hop: 1\r\nKeep-Alive: timeout=5\r\n\
             transfer-encoding: chunked\r\ncontent-type: text/plain\r\ntrailer: x-sum\r\n\r\n",
        );
        let names: Vec<&str> = h.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-type", "trailer"]);
        assert!(h.keep_alive);
        assert_eq!(h.framing, ResponseFraming::Chunked);
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        assert!(
            !head("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").keep_alive
        );
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n");
        assert!(h.keep_alive);
        assert_eq!(h.version, Version::HTTP_10);
    }

    #[test]
    fn bad_heads_are_errors() {
        let get = &Method::GET;
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-", get)
                .unwrap()
                .map(|h| h.status),
            None
        );
        assert!(matches!(
            parse(b"garbage\r\n\r\n", get),
            Err(HeadError::Syntax(_))
        ));
        let two = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n";
        assert_eq!(parse(two, get).unwrap_err(), HeadError::ContentLength);
        let same = b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n";
        assert_eq!(
            parse(same, get).unwrap().unwrap().framing,
            ResponseFraming::Length(3)
        );
        let neg = b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n";
        assert_eq!(parse(neg, get).unwrap_err(), HeadError::ContentLength);
        let up = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
        assert_eq!(parse(up, get).unwrap_err(), HeadError::SwitchingProtocols);
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() <= MAX_HEAD_BYTES {
            big.extend_from_slice(b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(matches!(
            parse(&big, get),
            Err(HeadError::TooLarge) | Err(HeadError::Syntax(_))
        ));
    }
}
