//! Rules every HTTP/2 message's fields follow, requests and responses alike (RFC 9113 §8.2):
//! the header list size, valid names and values, no connection-specific fields, pseudo-headers
//! before the others, and a Content-Length that parses.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::hpack::{Field, Name, Pseudo, Value};
use crate::http1::declared_length;

/// The most header bytes (name + value + 32 per field) weir takes in one block; what it
/// announces as SETTINGS_MAX_HEADER_LIST_SIZE.
pub(crate) const MAX_HEADER_LIST: usize = 64 << 10;

/// Why a message was refused: a stream error of type PROTOCOL_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

/// A field that passed the shared rules.
pub(crate) enum Admitted {
    Pseudo(Pseudo, HeaderValue),
    Regular(HeaderName, HeaderValue),
}

/// The shared checks, applied field by field as a block is decoded; the first failure sticks.
#[derive(Default)]
pub(crate) struct Rules {
    size: usize,
    regular_seen: bool,
    pub(crate) error: Option<Malformed>,
}

impl Rules {
    /// Checks `field`; `None` once the message is malformed. `trailers` blocks may hold no
    /// pseudo-headers.
    pub(crate) fn admit(&mut self, field: Field, trailers: bool) -> Option<Admitted> {
        if self.error.is_some() {
            return None;
        }
        self.size += field.len() + 32;
        if self.size > MAX_HEADER_LIST {
            return self.fail("header list too large");
        }
        let Value::Valid(value) = field.value else {
            return self.fail("invalid field value");
        };
        match field.name {
            Name::Invalid(_) => self.fail("invalid field name"),
            Name::Pseudo(_) if trailers || self.regular_seen => {
                self.fail("pseudo-header after regular fields or in trailers")
            }
            Name::Pseudo(p) => Some(Admitted::Pseudo(p, value)),
            Name::Header(name) => {
                self.regular_seen = true;
                if is_connection_specific(&name, &value) {
                    return self.fail("connection-specific header field");
                }
                Some(Admitted::Regular(name, value))
            }
        }
    }

    pub(crate) fn fail<T>(&mut self, why: &'static str) -> Option<T> {
        if self.error.is_none() {
            self.error = Some(Malformed(why));
        }
        None
    }
}

/// Fields HTTP/2 forbids (RFC 9113 §8.2.2); `te` is allowed only as "trailers".
pub(crate) fn is_connection_specific(name: &HeaderName, value: &HeaderValue) -> bool {
    match name.as_str() {
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" => true,
        "te" => !value.as_bytes().eq_ignore_ascii_case(b"trailers"),
        _ => false,
    }
}

/// The message's Content-Length, if it declares one that parses.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Malformed> {
    let values = headers.get_all(header::CONTENT_LENGTH);
    match declared_length(values.iter().map(HeaderValue::as_bytes)) {
        None => Ok(None),
        Some(Some(len)) => Ok(Some(len)),
        Some(None) => Err(Malformed("invalid content-length")),
    }
}
