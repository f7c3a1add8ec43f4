//! The response head weir writes to an HTTP/1.1 client, and how its body is framed on the
//! wire (RFC 9112 §6). Pure apart from the clock behind `Date`.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName};
use http::{StatusCode, Version};

use crate::http1::declared_length;
use crate::proxy::headers::is_hop_by_hop_field;

/// How the response body goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body bytes at all (HEAD, 204, 304, or an empty body).
    Empty,
    Length(u64),
    /// The trailer fields the response announced in `Trailer`: only those are sent.
    Chunked(Vec<HeaderName>),
    /// The body runs until the connection closes (an HTTP/1.0 client, length unknown).
    UntilClose,
}

/// What the connection knows about the request the response answers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answering {
    pub(super) version: Version,
    pub(super) head_method: bool,
    /// Both sides allow another request after this one.
    pub(super) keep_alive: bool,
}

/// What the body says about its length before it is read.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyHint {
    pub(super) end_stream: bool,
    pub(super) exact: Option<u64>,
}

/// Writes the status line and fields; returns the body framing and whether the connection
/// stays open after the body.
pub(super) fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    answering: Answering,
    hint: BodyHint,
) -> (Framing, bool) {
    let mut keep_alive = answering.keep_alive;
    let no_body = answering.head_method
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = declared_length(
        headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .map(|v| v.as_bytes()),
    );
    // An invalid Content-Length is not passed on: it would set the client's framing. Nor is
    // one on a 1xx or 204, which have no content at all (RFC 9110 §8.6); a HEAD or 304 keeps
    // it, as it describes the representation.
    let keep_length = matches!(declared, Some(Some(_)))
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT;
    let mut framing = match (no_body, declared) {
        (true, _) => Framing::Empty,
        (false, Some(Some(0))) => Framing::Empty,
        (false, Some(Some(n))) => Framing::Length(n),
        (false, _) => match hint.exact {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None if hint.end_stream => Framing::Empty,
            None if answering.version == Version::HTTP_11 => Framing::Chunked(Vec::new()),
            None => Framing::UntilClose,
        },
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }

    status_line(out, answering.version, status);
    let mut has_date = false;
    for (name, value) in headers {
        if *name == header::CONNECTION
            || *name == header::TRANSFER_ENCODING
            || (*name == header::CONTENT_LENGTH && !keep_length)
            || name.as_str() == "keep-alive"
        {
            continue;
        }
        if *name == header::TRAILER {
            if let Framing::Chunked(allowed) = &mut framing {
                allowed.extend(trailer_names(value.as_bytes()));
            }
        }
        has_date |= *name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_length && !no_body {
        match framing {
            Framing::Empty => out.extend_from_slice(b"content-length: 0\r\n"),
            Framing::Length(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
    }
    if matches!(framing, Framing::Chunked(_)) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if answering.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        write_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

/// The field names a `Trailer` value lists, except ones that may never be trailers.
fn trailer_names(value: &[u8]) -> impl Iterator<Item = HeaderName> + '_ {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter_map(|n| HeaderName::from_bytes(n).ok())
        .filter(|n| !is_hop_by_hop_field(n.as_str()) && *n != header::CONTENT_LENGTH)
}

/// `HTTP/1.1 200 OK` and its line end; the standard reason phrase.
fn status_line(out: &mut Vec<u8>, version: Version, status: StatusCode) {
    out.extend_from_slice(match version {
        Version::HTTP_10 => b"HTTP/1.0 ",
        _ => b"HTTP/1.1 ",
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The trailer fields of a chunked response that its `Trailer` header announced.
pub(super) fn allowed_trailers(trailers: &HeaderMap, allowed: &[HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in trailers {
        if allowed.contains(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A minimal response weir writes itself when a request head is refused.
pub(super) fn refusal(out: &mut Vec<u8>, status: StatusCode) {
    status_line(out, Version::HTTP_11, status);
    out.extend_from_slice(b"content-length: 0\r\nconnection: close\r\ndate: ");
    write_date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn write_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    const GET11: Answering = Answering {
        version: Version::HTTP_11,
        head_method: false,
        keep_alive: true,
    };
    const UNKNOWN: BodyHint = BodyHint {
        end_stream: false,
        exact: None,
    };

    fn encode(
        status: u16,
        headers: &[(&'static str, &'static str)],
        answering: Answering,
        hint: BodyHint,
    ) -> (String, Framing, bool) {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(*n, HeaderValue::from_static(v));
        }
        let mut out = Vec::new();
        let status = StatusCode::from_u16(status).unwrap();
        let (framing, keep) = encode_head(&mut out, status, &map, answering, hint);
        (String::from_utf8(out).unwrap(), framing, keep)
    }

    #[test]
    fn declared_length_is_kept_and_used() {
        let (text, framing, keep) = encode(200, &[("content-length", "5")], GET11, UNKNOWN);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(framing, Framing::Length(5));
        assert!(keep);
        assert_eq!(text.matches("content-length").count(), 1);
    }

    #[test]
    fn length_from_the_body_else_chunked_else_until_close() {
        let exact = BodyHint {
            end_stream: false,
            exact: Some(12),
        };
        let (text, framing, _) = encode(404, &[], GET11, exact);
        assert!(text.contains("content-length: 12\r\n"), "{text}");
        assert_eq!(framing, Framing::Length(12));
        let (text, framing, keep) = encode(200, &[], GET11, UNKNOWN);
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert_eq!(framing, Framing::Chunked(Vec::new()));
        assert!(keep);
        let http10 = Answering {
            version: Version::HTTP_10,
            ..GET11
        };
        let (text, framing, keep) = encode(200, &[], http10, UNKNOWN);
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!(framing, Framing::UntilClose);
        assert!(!keep);
        let (text, _, keep) = encode(200, &[("content-length", "0")], http10, UNKNOWN);
        assert!(text.contains("connection: keep-alive\r\n"), "{text}");
        assert!(keep);
    }

    #[test]
    fn bodiless_answers() {
        let head = Answering {
            head_method: true,
            ..GET11
        };
        let (text, framing, _) = encode(200, &[("content-length", "99")], head, UNKNOWN);
        assert!(
            text.contains("content-length: 99\r\n"),
            "HEAD keeps the GET's length"
        );
        assert_eq!(framing, Framing::Empty);
        let (text, _, _) = encode(204, &[("content-length", "7")], GET11, UNKNOWN);
        assert!(!text.contains("content-length"), "{text}");
        let (text, framing, _) = encode(304, &[], GET11, UNKNOWN);
        assert!(!text.contains("content-length"), "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert_eq!(framing, Framing::Empty);
        let empty = BodyHint {
            end_stream: true,
            exact: None,
        };
        let (text, framing, _) = encode(200, &[], GET11, empty);
        assert!(text.contains("content-length: 0\r\n"), "{text}");
        assert_eq!(framing, Framing::Empty);
    }

    #[test]
    fn connection_fields_are_weirs_own() {
        let closing = Answering {
            keep_alive: false,
            ..GET11
        };
        let (text, _, keep) = encode(
            200,
            &[
                ("connection", "keep-alive"),
                ("transfer-encoding", "chunked"),
                ("content-length", "1, 2"),
                ("date", "Tue, 01 Dec 2026 00:00:00 GMT"),
            ],
            closing,
            UNKNOWN,
        );
        assert!(!keep);
        assert_eq!(text.matches("connection").count(), 1, "{text}");
        assert!(text.contains("connection: close\r\n"));
        assert!(
            !text.contains("1, 2"),
            "an invalid length is not passed on: {text}"
        );
        assert_eq!(text.matches("date: ").count(), 1, "{text}");
        assert_eq!(text.matches("transfer-encoding").count(), 1, "{text}");
    }

    #[test]
    fn only_announced_trailers_are_sent() {
        let (_, framing, _) = encode(
            200,
            &[("trailer", "grpc-status, Grpc-Message, content-length")],
            GET11,
            UNKNOWN,
        );
        let Framing::Chunked(allowed) = framing else {
            panic!("chunked")
        };
        assert_eq!(allowed, ["grpc-status", "grpc-message"]);
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert("x-other", HeaderValue::from_static("1"));
        let sent = allowed_trailers(&t, &allowed);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent["grpc-status"], "0");
    }

    #[test]
    fn refusals_close() {
        let mut out = Vec::new();
        refusal(&mut out, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(text.contains("connection: close\r\n"));
    }
}
