//! A client's HTTP/1.1 request head (RFC 9112), parsed from the connection's read buffer into
//! the `http` types the proxy works with. Header values and the target are slices of the
//! buffer, not copies. Pure: bytes in, values out.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

use crate::http1::{range, Fields, Span, MAX_HEADERS, MAX_HEAD_BYTES};

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head and what the connection must know about it.
#[derive(Debug)]
pub(super) struct RequestHead {
    pub(super) parts: http::request::Parts,
    pub(super) framing: BodyFraming,
    /// The client allows another request on the connection after this one.
    pub(super) keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for `100 Continue` before sending the body.
    pub(super) expect_continue: bool,
}

/// Why a request head is refused; the connection answers with [`Rejection::status`] and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Rejection {
    #[error("invalid request head: {0}")]
    Syntax(String),
    #[error("request head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} fields")]
    TooLarge,
    #[error("unsupported HTTP version")]
    Version,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("both Transfer-Encoding and Content-Length")]
    Ambiguous,
    #[error("Transfer-Encoding other than chunked: {0}")]
    Coding(String),
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    CodingInHttp10,
    #[error("more than one Host field")]
    Hosts,
    #[error("invalid field {0}")]
    Field(String),
}

impl Rejection {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Rejection::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Rejection::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Rejection::Coding(_) => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Parses one request head from the front of `buf` and takes its bytes out of the buffer.
/// `Ok(None)`: the head is not complete yet, and the buffer is untouched.
pub(super) fn parse(buf: &mut BytesMut) -> Result<Option<RequestHead>, Rejection> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut spans = [Span::default(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_request_with_uninit_headers(&mut req, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Rejection::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Rejection::TooLarge),
        Err(httparse::Error::Version) => return Err(Rejection::Version),
        Err(e) => return Err(Rejection::Syntax(e.to_string())),
    };
    if len > MAX_HEAD_BYTES {
        return Err(Rejection::TooLarge);
    }
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| Rejection::Syntax("method".into()))?;
    let target = range(buf, req.path.unwrap_or_default().as_bytes());
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let fields = req.headers.len();
    let framing = Fields::read(req.headers).into_framing();
    // weir does not decode codings; only a body that is exactly `chunked` can be read and
    // forwarded with its meaning intact (RFC 9112 §6.1).
    let coding = framing.chunked.map(|_| {
        if framing.only_chunked() {
            Ok(())
        } else {
            Err(codings(req.headers))
        }
    });
    for (span, h) in spans.iter_mut().zip(req.headers.iter()) {
        *span = Span::of(buf, h.name.as_bytes(), h.value);
    }
    // The head leaves the buffer as one shared piece; fields point into it.
    let head: Bytes = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0 as usize..target.1 as usize))
        .map_err(|e| Rejection::Syntax(format!("request target: {e}")))?;
    // Room for the fields the proxy adds on the way out (X-Forwarded-*, TE), so that adding
    // them does not grow the map.
    let mut headers = HeaderMap::with_capacity(fields + 4);
    for span in &spans[..fields] {
        let name = span.name(&head);
        let name = HeaderName::from_bytes(name)
            .map_err(|_| Rejection::Field(String::from_utf8_lossy(name).into_owned()))?;
        let value = HeaderValue::from_maybe_shared(span.value(&head))
            .map_err(|_| Rejection::Field(name.to_string()))?;
        headers.append(name, value);
    }
    let body = match (coding, framing.length) {
        (Some(_), Some(_)) => return Err(Rejection::Ambiguous),
        (Some(_), None) if version == Version::HTTP_10 => return Err(Rejection::CodingInHttp10),
        (Some(Ok(())), None) => BodyFraming::Chunked,
        (Some(Err(coding)), None) => return Err(Rejection::Coding(coding)),
        (None, Some(Some(0))) | (None, None) => BodyFraming::Empty,
        (None, Some(Some(n))) => BodyFraming::Length(n),
        (None, Some(None)) => return Err(Rejection::ContentLength),
    };
    if let BodyFraming::Length(n) = body {
        // `Content-Length: 5, 5` (or the field twice) goes on as one plain value.
        let plain = headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().iter().all(u8::is_ascii_digit))
            && headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .nth(1)
                .is_none();
        if !plain {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(Rejection::Hosts);
    }
    let keep_alive = framing.keep_alive(version);
    let expect_continue = version == Version::HTTP_11
        && body != BodyFraming::Empty
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));

    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        parts,
        framing: body,
        keep_alive,
        expect_continue,
    }))
}

/// The transfer codings a request names, for the error that refuses them.
fn codings(raw: &[httparse::Header<'_>]) -> String {
    let mut all = Vec::new();
    for h in raw {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            let named = value.split(',').map(str::trim).filter(|c| !c.is_empty());
            all.extend(named.map(str::to_string));
        }
    }
    all.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(raw: &str) -> Result<Option<RequestHead>, Rejection> {
        parse(&mut BytesMut::from(raw.as_bytes()))
    }

    fn ok(raw: &str) -> RequestHead {
        parse_str(raw).unwrap().unwrap()
    }

    #[test]
    fn origin_form_request_and_what_follows() {
        let mut buf = BytesMut::from(
            &b"GET /a/b?c=d HTTP/1.1\r\nHost: shop.example\r\nX-Custom: v1\r\nx-custom: v2\r\n\r\nGET /next"[..],
        );
        let h = parse(&mut buf).unwrap().unwrap();
        assert_eq!(h.parts.method, Method::GET);
        assert_eq!(h.parts.uri.path(), "/a/b");
        assert_eq!(h.parts.uri.query(), Some("c=d"));
        assert_eq!(h.parts.version, Version::HTTP_11);
        assert_eq!(h.parts.headers["host"], "shop.example");
        let custom: Vec<_> = h.parts.headers.get_all("x-custom").iter().collect();
        assert_eq!(custom, ["v1", "v2"]);
        assert_eq!(h.framing, BodyFraming::Empty);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
        assert_eq!(
            &buf[..],
            b"GET /next",
            "the next request stays in the buffer"
        );
    }

    #[test]
    fn partial_heads_leave_the_buffer_alone() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n"[..]);
        assert!(parse(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 25);
    }

    #[test]
    fn absolute_form_keeps_its_authority() {
        let h = ok("GET http://shop.example:8080/x HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(
            h.parts.uri.authority().map(|a| a.as_str()),
            Some("shop.example:8080")
        );
        assert_eq!(h.parts.uri.path(), "/x");
    }

    #[test]
    fn body_framing() {
        let h = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(12));
        let h = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Empty);
        let h = ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
        let h = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert_eq!(
            h.parts.headers["content-length"], "5",
            "forwarded as one value"
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let both =
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_str(both).unwrap_err(), Rejection::Ambiguous);
        let two = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(parse_str(two).unwrap_err(), Rejection::ContentLength);
        let neg = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n";
        assert_eq!(parse_str(neg).unwrap_err(), Rejection::ContentLength);
        let gz = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert!(matches!(parse_str(gz), Err(Rejection::Coding(c)) if c == "gzip, chunked"));
        let twice =
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse_str(twice), Err(Rejection::Coding(_))));
        let old = "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_str(old).unwrap_err(), Rejection::CodingInHttp10);
        let hosts = "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        assert_eq!(parse_str(hosts).unwrap_err(), Rejection::Hosts);
    }

    #[test]
    fn keep_alive_and_expect() {
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        let h = ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
        assert_eq!(h.parts.version, Version::HTTP_10);
        let e = "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n";
        assert!(ok(e).expect_continue);
        let no_body = "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n";
        assert!(!ok(no_body).expect_continue, "nothing to wait for");
    }

    #[test]
    fn rejections_and_their_statuses() {
        let e = parse_str("GET / HTTP/2.0\r\n\r\n").unwrap_err();
        assert_eq!(e.status(), StatusCode::HTTP_VERSION_NOT_SUPPORTED);
        let e = parse_str("GET / HTTP/1.1\r\nbad header\r\n\r\n").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        while big.len() <= MAX_HEAD_BYTES {
            big.extend_from_slice(
                b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        let e = parse(&mut BytesMut::from(&big[..])).unwrap_err();
        assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let e = parse_str("GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap_err();
        assert_eq!(e.status(), StatusCode::NOT_IMPLEMENTED);
    }
}
