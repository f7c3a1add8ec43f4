//! The static table (RFC 7541 Appendix A) and the dynamic table (§2.3.2, §4).

use std::collections::VecDeque;

use http::header::{HeaderName, HeaderValue};

use super::{Field, Name, Pseudo, Value};

/// RFC 7541 Appendix A; index 1 is `STATIC[0]`.
pub(super) static STATIC: [Field; 61] = [
    Field {
        name: Name::Pseudo(Pseudo::Authority),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Method),
        value: Value::Valid(HeaderValue::from_static("GET")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Method),
        value: Value::Valid(HeaderValue::from_static("POST")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Path),
        value: Value::Valid(HeaderValue::from_static("/")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Path),
        value: Value::Valid(HeaderValue::from_static("/index.html")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Scheme),
        value: Value::Valid(HeaderValue::from_static("http")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Scheme),
        value: Value::Valid(HeaderValue::from_static("https")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Status),
        value: Value::Valid(HeaderValue::from_static("200")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Status),
        value: Value::Valid(HeaderValue::from_static("204")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Status),
        value: Value::Valid(HeaderValue::from_static("206")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Status),
        value: Value::Valid(HeaderValue::from_static("304")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Status),
        value: Value::Valid(HeaderValue::from_static("400")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Status),
        value: Value::Valid(HeaderValue::from_static("404")),
    },
    Field {
        name: Name::Pseudo(Pseudo::Status),
        value: Value::Valid(HeaderValue::from_static("500")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("accept-charset")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("accept-encoding")),
        value: Value::Valid(HeaderValue::from_static("gzip, deflate")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("accept-language")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("accept-ranges")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("accept")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("access-control-allow-origin")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("age")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("allow")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("authorization")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("cache-control")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("content-disposition")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("content-encoding")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("content-language")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("content-length")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("content-location")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("content-range")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("content-type")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("cookie")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("date")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("etag")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("expect")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("expires")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("from")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("host")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("if-match")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("if-modified-since")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("if-none-match")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("if-range")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("if-unmodified-since")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("last-modified")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("link")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("location")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("max-forwards")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("proxy-authenticate")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("proxy-authorization")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("range")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("referer")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("refresh")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("retry-after")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("server")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("set-cookie")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("strict-transport-security")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("transfer-encoding")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("user-agent")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("vary")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("via")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
    Field {
        name: Name::Header(HeaderName::from_static("www-authenticate")),
        value: Value::Valid(HeaderValue::from_static("")),
    },
];

/// Entry overhead counted towards the table size (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The decoder's dynamic table: newest entry first, evicting the oldest past `max`.
pub(super) struct Dynamic {
    entries: VecDeque<(Field, usize)>,
    size: usize,
    max: usize,
}

impl Dynamic {
    pub(super) fn new(max: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max,
        }
    }

    /// Entry `index` counted from 1 across both tables (1..=61 static, then dynamic).
    pub(super) fn get(&self, index: usize) -> Option<&Field> {
        match index {
            0 => None,
            1..=61 => Some(&STATIC[index - 1]),
            _ => self.entries.get(index - 62).map(|(f, _)| f),
        }
    }

    pub(super) fn insert(&mut self, field: Field) {
        let size = field.len() + ENTRY_OVERHEAD;
        if size > self.max {
            // An entry larger than the table empties it and is not added (§4.4).
            self.entries.clear();
            self.size = 0;
            return;
        }
        while self.size + size > self.max {
            self.evict();
        }
        self.size += size;
        self.entries.push_front((field, size));
    }

    pub(super) fn resize(&mut self, max: usize) {
        self.max = max;
        while self.size > self.max {
            self.evict();
        }
    }

    fn evict(&mut self) {
        if let Some((_, size)) = self.entries.pop_back() {
            self.size -= size;
        }
    }

    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        self.size
    }
}
