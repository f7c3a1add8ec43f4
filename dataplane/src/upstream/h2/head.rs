//! Turning a backend's decoded header block into a response head or trailers, enforcing
//! HTTP/2's rules for messages (RFC 9113 §8.1–§8.3). A block that breaks them makes the
//! response malformed: a stream error, never a crash or a half-built response.

use http::header::{self, HeaderMap, HeaderName};
use http::{HeaderValue, StatusCode};

use crate::h2::hpack::{Field, Name, Pseudo, Value};
use crate::http1::declared_length;

/// The most header bytes (name + value + 32 per field) weir takes in one block; what it
/// announces as SETTINGS_MAX_HEADER_LIST_SIZE.
pub(super) const MAX_HEADER_LIST: usize = 64 << 10;

/// Why a header block was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Malformed(pub(super) &'static str);

/// Collects fields while the block is decoded.
pub(super) struct Collect {
    trailers: bool,
    status: Option<StatusCode>,
    headers: HeaderMap,
    regular_seen: bool,
    size: usize,
    error: Option<Malformed>,
}

/// A checked header block.
pub(super) enum Block {
    /// A 1xx response other than 101: skipped, the final response follows.
    Interim,
    Response {
        status: StatusCode,
        headers: HeaderMap,
        content_length: Option<u64>,
    },
    Trailers(HeaderMap),
}

impl Collect {
    pub(super) fn new(trailers: bool) -> Self {
        Self {
            trailers,
            status: None,
            headers: HeaderMap::new(),
            regular_seen: false,
            size: 0,
            error: None,
        }
    }

    pub(super) fn field(&mut self, field: Field) {
        if self.error.is_some() {
            return;
        }
        self.size += field.len() + 32;
        if self.size > MAX_HEADER_LIST {
            return self.fail("header list too large");
        }
        let value = match field.value {
            Value::Valid(v) => v,
            Value::Invalid(_) => return self.fail("invalid field value"),
        };
        match field.name {
            Name::Pseudo(Pseudo::Status) if !self.trailers && !self.regular_seen => {
                if self.status.is_some() {
                    return self.fail("repeated :status");
                }
                match parse_status(&value) {
                    Some(s) => self.status = Some(s),
                    None => self.fail("invalid :status"),
                }
            }
            Name::Pseudo(_) => self.fail("unexpected pseudo-header"),
            Name::Invalid(_) => self.fail("invalid field name"),
            Name::Header(name) => {
                self.regular_seen = true;
                if is_connection_specific(&name, &value) {
                    return self.fail("connection-specific header field");
                }
                self.headers.append(name, value);
            }
        }
    }

    fn fail(&mut self, why: &'static str) {
        self.error = Some(Malformed(why));
    }

    pub(super) fn finish(self) -> Result<Block, Malformed> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.trailers {
            return Ok(Block::Trailers(self.headers));
        }
        let status = self.status.ok_or(Malformed("no :status"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Malformed("101 in HTTP/2"));
        }
        if status.is_informational() {
            return Ok(Block::Interim);
        }
        let content_length = match declared_length(
            self.headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .map(HeaderValue::as_bytes),
        ) {
            None => None,
            Some(Some(len)) => Some(len),
            Some(None) => return Err(Malformed("invalid content-length")),
        };
        Ok(Block::Response {
            status,
            headers: self.headers,
            content_length,
        })
    }
}

fn parse_status(value: &HeaderValue) -> Option<StatusCode> {
    let b = value.as_bytes();
    if b.len() != 3 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    StatusCode::from_bytes(b).ok()
}

/// Fields HTTP/2 forbids (RFC 9113 §8.2.2).
fn is_connection_specific(name: &HeaderName, value: &HeaderValue) -> bool {
    match name.as_str() {
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" => true,
        "te" => value.as_bytes() != b"trailers",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> Field {
        let name = match name {
            ":status" => Name::Pseudo(Pseudo::Status),
            ":path" => Name::Pseudo(Pseudo::Path),
            n => Name::Header(HeaderName::from_bytes(n.as_bytes()).expect("name")),
        };
        Field {
            name,
            value: Value::Valid(HeaderValue::from_str(value).expect("value")),
        }
    }

    fn check(trailers: bool, fields: &[(&str, &str)]) -> Result<Block, Malformed> {
        let mut c = Collect::new(trailers);
        for (n, v) in fields {
            c.field(field(n, v));
        }
        c.finish()
    }

    #[test]
    fn a_plain_response() {
        let Ok(Block::Response {
            status,
            headers,
            content_length,
        }) = check(
            false,
            &[
                (":status", "200"),
                ("content-length", "13"),
                ("server", "x"),
            ],
        )
        else {
            panic!("response expected")
        };
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_length, Some(13));
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn interim_and_trailers() {
        assert!(matches!(
            check(false, &[(":status", "103")]),
            Ok(Block::Interim)
        ));
        assert!(matches!(
            check(true, &[("grpc-status", "0")]),
            Ok(Block::Trailers(_))
        ));
    }

    #[test]
    fn malformed_blocks() {
        let bad = |trailers, f: &[(&str, &str)]| check(trailers, f).err().map(|m| m.0);
        assert_eq!(bad(false, &[("server", "x")]), Some("no :status"));
        assert_eq!(
            bad(false, &[(":status", "200"), (":status", "200")]),
            Some("repeated :status")
        );
        assert_eq!(
            bad(false, &[("server", "x"), (":status", "200")]),
            Some("unexpected pseudo-header")
        );
        assert_eq!(bad(false, &[(":status", "20")]), Some("invalid :status"));
        assert_eq!(bad(false, &[(":status", "101")]), Some("101 in HTTP/2"));
        assert_eq!(
            bad(false, &[(":status", "200"), (":path", "/")]),
            Some("unexpected pseudo-header")
        );
        assert_eq!(
            bad(false, &[(":status", "200"), ("connection", "close")]),
            Some("connection-specific header field")
        );
        assert_eq!(
            bad(false, &[(":status", "200"), ("te", "gzip")]),
            Some("connection-specific header field")
        );
        assert_eq!(
            bad(
                false,
                &[
                    (":status", "200"),
                    ("content-length", "1"),
                    ("content-length", "2")
                ]
            ),
            Some("invalid content-length")
        );
        assert_eq!(
            bad(true, &[(":status", "200")]),
            Some("unexpected pseudo-header")
        );
        let huge = "v".repeat(MAX_HEADER_LIST);
        assert_eq!(
            bad(false, &[(":status", "200"), ("x", &huge)]),
            Some("header list too large")
        );
    }
}
