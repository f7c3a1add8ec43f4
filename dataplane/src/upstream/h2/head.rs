//! Turning a backend's decoded header block into a response head or trailers, enforcing
//! HTTP/2's rules for messages (RFC 9113 §8.1–§8.3). A block that breaks them makes the
//! response malformed: a stream error, never a crash or a half-built response.

use http::header::HeaderMap;
use http::{HeaderValue, StatusCode};

use crate::h2::hpack::{Field, Pseudo};
use crate::h2::message::{content_length, Admitted, Malformed, Rules};

/// Collects fields while the block is decoded.
pub(super) struct Collect {
    trailers: bool,
    status: Option<StatusCode>,
    headers: HeaderMap,
    rules: Rules,
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
            rules: Rules::default(),
        }
    }

    pub(super) fn field(&mut self, field: Field) {
        match self.rules.admit(field, self.trailers) {
            None => {}
            Some(Admitted::Regular(name, value)) => {
                self.headers.append(name, value);
            }
            Some(Admitted::Pseudo(Pseudo::Status, value)) => {
                if self.status.is_some() {
                    self.rules.fail::<()>("repeated :status");
                } else if let Some(s) = parse_status(&value) {
                    self.status = Some(s);
                } else {
                    self.rules.fail::<()>("invalid :status");
                }
            }
            Some(Admitted::Pseudo(..)) => {
                self.rules
                    .fail::<()>("request or unknown pseudo-header in a response");
            }
        }
    }

    pub(super) fn finish(self) -> Result<Block, Malformed> {
        if let Some(e) = self.rules.error {
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
        let content_length = content_length(&self.headers)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::message::MAX_HEADER_LIST;

    fn check(trailers: bool, fields: &[(&str, &str)]) -> Result<Block, Malformed> {
        let mut c = Collect::new(trailers);
        for (n, v) in fields {
            c.field(Field::text(n, v));
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
            Some("pseudo-header after regular fields or in trailers")
        );
        assert_eq!(bad(false, &[(":status", "20")]), Some("invalid :status"));
        assert_eq!(bad(false, &[(":status", "101")]), Some("101 in HTTP/2"));
        assert_eq!(
            bad(false, &[(":status", "200"), (":path", "/")]),
            Some("request or unknown pseudo-header in a response")
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
            Some("pseudo-header after regular fields or in trailers")
        );
        let huge = "v".repeat(MAX_HEADER_LIST);
        assert_eq!(
            bad(false, &[(":status", "200"), ("x", &huge)]),
            Some("header list too large")
        );
    }
}
