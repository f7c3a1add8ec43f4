//! HPACK (RFC 7541): header compression for HTTP/2.
//!
//! The decoder keeps the dynamic table the peer's encoder drives and hands out fields already
//! checked against HTTP/2's rules for names and values (RFC 9113 §8.2): a field that breaks
//! them is still decoded, so the table stays in step, but comes out as invalid and makes its
//! message malformed. The encoder is stateless: it uses the static table and literals that are
//! never added to the peer's dynamic table, and no Huffman coding, which costs the peer a few
//! bytes and weir no CPU.

mod decode;
mod encode;
mod huffman;
mod table;
mod table_enc;

use http::header::{HeaderName, HeaderValue};

pub(crate) use decode::Decoder;
pub(crate) use encode::{encode_request_indexed, encode_response_indexed, encode_trailers};
pub(crate) use table_enc::Encoder;

/// A dynamic table size update to 0 (RFC 7541 §6.3): what weir's encoder puts at the start
/// of its next header block once the peer lowers SETTINGS_HEADER_TABLE_SIZE below the
/// default, since the peer's decoder may insist on hearing that the table shrank.
pub(crate) const EMPTY_TABLE: u8 = 0x20;

/// The table size both sides start with (RFC 7541 §4.2, RFC 9113 §6.5.2).
pub(crate) const DEFAULT_TABLE_SIZE: u32 = 4096;

/// Whether weir's encoder owes the peer a table size update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableUpdate {
    NotNeeded,
    Due,
    Sent,
}

impl TableUpdate {
    /// The peer's SETTINGS_HEADER_TABLE_SIZE arrived.
    pub(crate) fn on_setting(&mut self, size: u32) {
        if *self == TableUpdate::NotNeeded && size < DEFAULT_TABLE_SIZE {
            *self = TableUpdate::Due;
        }
    }

    /// Prefixes `block` with the update if it is owed (once).
    pub(crate) fn apply<'a>(&mut self, block: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if *self != TableUpdate::Due {
            return std::borrow::Cow::Borrowed(block);
        }
        *self = TableUpdate::Sent;
        let mut out = Vec::with_capacity(block.len() + 1);
        out.push(EMPTY_TABLE);
        out.extend_from_slice(block);
        std::borrow::Cow::Owned(out)
    }
}

/// A pseudo-header name (RFC 9113 §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pseudo {
    Status,
    Method,
    Scheme,
    Authority,
    Path,
    Protocol,
    /// Any other name starting with ':' (its length).
    Unknown(usize),
}

impl Pseudo {
    fn parse(name: &[u8]) -> Self {
        match name {
            b":status" => Pseudo::Status,
            b":method" => Pseudo::Method,
            b":scheme" => Pseudo::Scheme,
            b":authority" => Pseudo::Authority,
            b":path" => Pseudo::Path,
            b":protocol" => Pseudo::Protocol,
            other => Pseudo::Unknown(other.len()),
        }
    }

    fn len(self) -> usize {
        match self {
            Pseudo::Status | Pseudo::Method | Pseudo::Scheme => 7,
            Pseudo::Authority => 10,
            Pseudo::Path => 5,
            Pseudo::Protocol => 9,
            Pseudo::Unknown(len) => len,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Name {
    Pseudo(Pseudo),
    Header(HeaderName),
    /// Not a valid HTTP/2 field name (upper case, or a character a token may not hold).
    Invalid(usize),
}

impl Name {
    fn parse(name: &[u8]) -> Self {
        if name.first() == Some(&b':') {
            return Name::Pseudo(Pseudo::parse(name));
        }
        match HeaderName::from_lowercase(name) {
            Ok(n) => Name::Header(n),
            Err(_) => Name::Invalid(name.len()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Name::Pseudo(p) => p.len(),
            Name::Header(h) => h.as_str().len(),
            Name::Invalid(len) => *len,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Valid(HeaderValue),
    /// Holds NUL, CR, LF or another control character, or starts or ends with white space.
    Invalid(usize),
}

impl Value {
    fn parse(value: bytes::Bytes) -> Self {
        let len = value.len();
        let edges_ok = !matches!(value.first(), Some(b' ' | b'\t'))
            && !matches!(value.last(), Some(b' ' | b'\t'));
        match HeaderValue::from_maybe_shared(value) {
            Ok(v) if edges_ok => Value::Valid(v),
            _ => Value::Invalid(len),
        }
    }

    fn len(&self) -> usize {
        match self {
            Value::Valid(v) => v.len(),
            Value::Invalid(len) => *len,
        }
    }
}

/// One decoded header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) name: Name,
    pub(crate) value: Value,
}

impl Field {
    /// A valid field from text, for tests: names starting with ':' are pseudo-headers.
    #[cfg(test)]
    pub(crate) fn text(name: &str, value: &str) -> Field {
        let name = if name.starts_with(':') {
            Name::Pseudo(Pseudo::parse(name.as_bytes()))
        } else {
            Name::Header(HeaderName::from_bytes(name.as_bytes()).expect("name"))
        };
        Field {
            name,
            value: Value::Valid(HeaderValue::from_str(value).expect("value")),
        }
    }

    /// Name and value length together: what the field counts towards a header list's size
    /// (RFC 9113 §6.5.2 adds 32 per field on top).
    pub(crate) fn len(&self) -> usize {
        self.name.len() + self.value.len()
    }
}
