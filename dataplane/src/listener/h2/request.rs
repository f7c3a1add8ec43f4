//! Turning a client's decoded header block into a request head (RFC 9113 §8.1–§8.3). A block
//! that breaks HTTP/2's rules is a malformed request: the stream is reset with
//! PROTOCOL_ERROR and the request never reaches a backend.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Uri, Version};

use crate::h2::hpack::{Field, Pseudo};
use crate::h2::message::{content_length, Admitted, Malformed, Rules};

/// Collects a request's (or its trailers') fields while the block is decoded.
pub(super) struct Collect {
    trailers: bool,
    /// Method and scheme are only read, so they stay the decoder's values; the authority and
    /// path become parts of the URI, which takes them as `Bytes`.
    method: Option<HeaderValue>,
    scheme: Option<HeaderValue>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    headers: HeaderMap,
    cookies: usize,
    rules: Rules,
}

pub(super) enum Block {
    Request {
        head: http::request::Parts,
        content_length: Option<u64>,
    },
    Trailers(HeaderMap),
}

impl Collect {
    pub(super) fn new(trailers: bool) -> Self {
        Self {
            trailers,
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers: HeaderMap::new(),
            cookies: 0,
            rules: Rules::default(),
        }
    }

    pub(super) fn field(&mut self, field: Field) {
        let (pseudo, value) = match self.rules.admit(field, self.trailers) {
            None => return,
            Some(Admitted::Regular(name, value)) => {
                if name == header::COOKIE {
                    self.cookies += 1;
                }
                self.headers.append(name, value);
                return;
            }
            Some(Admitted::Pseudo(p, v)) => (p, v),
        };
        let repeated = match pseudo {
            Pseudo::Method => self.method.replace(value).is_some(),
            Pseudo::Scheme => self.scheme.replace(value).is_some(),
            Pseudo::Authority => self.authority.replace(owned(&value)).is_some(),
            Pseudo::Path => self.path.replace(owned(&value)).is_some(),
            _ => {
                self.rules.fail::<()>("unknown or response pseudo-header");
                return;
            }
        };
        if repeated {
            self.rules.fail::<()>("repeated pseudo-header");
        }
    }

    pub(super) fn finish(mut self) -> Result<Block, Malformed> {
        if let Some(e) = self.rules.error {
            return Err(e);
        }
        if self.trailers {
            return Ok(Block::Trailers(self.headers));
        }
        let method = self.method.take().ok_or(Malformed("no :method"))?;
        let method =
            Method::from_bytes(method.as_bytes()).map_err(|_| Malformed("invalid :method"))?;
        if let (Some(a), Some(host)) = (&self.authority, self.headers.get(header::HOST)) {
            if !a.eq_ignore_ascii_case(host.as_bytes()) {
                return Err(Malformed("host differs from :authority"));
            }
        }
        let authority = match self.authority.take() {
            Some(a) => {
                Some(Authority::from_maybe_shared(a).map_err(|_| Malformed("invalid :authority"))?)
            }
            None => None,
        };
        let uri = if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err(Malformed("CONNECT with :scheme or :path"));
            }
            let authority = authority.ok_or(Malformed("CONNECT without :authority"))?;
            Uri::from(authority)
        } else {
            let scheme = match self
                .scheme
                .take()
                .ok_or(Malformed("no :scheme"))?
                .as_bytes()
            {
                b"http" => Scheme::HTTP,
                b"https" => Scheme::HTTPS,
                other => Scheme::try_from(other).map_err(|_| Malformed("invalid :scheme"))?,
            };
            let path = self.path.take().ok_or(Malformed("no :path"))?;
            if path.is_empty() {
                return Err(Malformed("empty :path"));
            }
            let path =
                PathAndQuery::from_maybe_shared(path).map_err(|_| Malformed("invalid :path"))?;
            let mut parts = http::uri::Parts::default();
            parts.scheme = authority.is_some().then_some(scheme);
            parts.authority = authority;
            parts.path_and_query = Some(path);
            Uri::from_parts(parts).map_err(|_| Malformed("invalid request target"))?
        };
        if self.cookies > 1 {
            join_cookies(&mut self.headers);
        }
        let content_length = content_length(&self.headers)?;
        let mut req = http::Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = self.headers;
        Ok(Block::Request {
            head: req.into_parts().0,
            content_length,
        })
    }
}

fn owned(value: &HeaderValue) -> Bytes {
    Bytes::copy_from_slice(value.as_bytes())
}

/// Cookie crumbs become one field before they travel on (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut joined = BytesMut::new();
    for (i, v) in headers.get_all(header::COOKIE).iter().enumerate() {
        if i > 0 {
            joined.put_slice(b"; ");
        }
        joined.put_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(joined.freeze()) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(trailers: bool, fields: &[(&str, &str)]) -> Result<Block, Malformed> {
        let mut c = Collect::new(trailers);
        for (n, v) in fields {
            c.field(Field::text(n, v));
        }
        c.finish()
    }

    const GET: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "a.example"),
        (":path", "/x?y"),
    ];

    #[test]
    fn a_plain_request() {
        let mut fields = GET.to_vec();
        fields.extend([
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("content-length", "0"),
        ]);
        let Ok(Block::Request {
            head,
            content_length,
        }) = check(false, &fields)
        else {
            panic!("request expected")
        };
        assert_eq!(head.uri, "https://a.example/x?y");
        assert_eq!(head.version, Version::HTTP_2);
        assert_eq!(head.headers["cookie"], "a=1; b=2");
        assert_eq!(content_length, Some(0));
    }

    #[test]
    fn without_authority_the_target_is_the_path() {
        let Ok(Block::Request { head, .. }) = check(
            false,
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("host", "h"),
            ],
        ) else {
            panic!("request expected")
        };
        assert_eq!(head.uri, "/");
        assert_eq!(head.headers["host"], "h");
    }

    #[test]
    fn malformed_requests() {
        let bad = |f: &[(&str, &str)]| check(false, f).err().map(|m| m.0);
        assert_eq!(bad(&GET[1..]), Some("no :method"));
        assert_eq!(bad(&[GET[0], GET[2], GET[3]]), Some("no :scheme"));
        assert_eq!(bad(&GET[..3]), Some("no :path"));
        let mut dup = GET.to_vec();
        dup.push((":path", "/"));
        assert_eq!(bad(&dup), Some("repeated pseudo-header"));
        let late = [GET[0], GET[1], ("accept", "*/*"), GET[2], GET[3]];
        assert_eq!(
            bad(&late),
            Some("pseudo-header after regular fields or in trailers")
        );
        let mut status = GET.to_vec();
        status.insert(0, (":status", "200"));
        assert_eq!(bad(&status), Some("unknown or response pseudo-header"));
        let mut conn = GET.to_vec();
        conn.push(("connection", "keep-alive"));
        assert_eq!(bad(&conn), Some("connection-specific header field"));
        let mut te = GET.to_vec();
        te.push(("te", "trailers"));
        assert!(bad(&te).is_none(), "te: trailers is allowed");
        let mut cl = GET.to_vec();
        cl.push(("content-length", "x"));
        assert_eq!(bad(&cl), Some("invalid content-length"));
        let mut host = GET.to_vec();
        host.push(("host", "b.example"));
        assert_eq!(bad(&host), Some("host differs from :authority"));
        let mut empty = GET[..3].to_vec();
        empty.push((":path", ""));
        assert_eq!(bad(&empty), Some("empty :path"));
        assert!(matches!(
            check(true, &[("grpc-status", "0")]),
            Ok(Block::Trailers(_))
        ));
        assert_eq!(
            check(true, &[(":path", "/")]).err().map(|m| m.0),
            Some("pseudo-header after regular fields or in trailers")
        );
    }
}
