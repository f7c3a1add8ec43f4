//! Header rewriting between client and backend: hop-by-hop removal and X-Forwarded-*.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop and never travel through a proxy (RFC 9110 §7.6.1), plus the
/// informal ones that clients still send, lower case as `HeaderName::as_str` gives them.
/// `Trailer` is end-to-end and is kept: HTTP/1.1 needs it to send trailers at all.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "keep-alive",
    "proxy-connection",
];

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// The same test on a raw field name, in any case.
pub(crate) fn is_hop_by_hop_field(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Removes hop-by-hop headers, including those the Connection header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most messages carry none, and then nothing is looked up
    // or removed.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Names the Connection header lists beyond the fixed set (usually none: `close` and
    // `keep-alive` are what it says in practice).
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h))
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in present.iter().chain(&named) {
        headers.remove(name);
    }
}

/// True when the client's TE header asks for trailers (the only TE value HTTP/2 allows).
pub(crate) fn wants_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().split(';').next() == Some("trailers"))
}

/// The client's address as an `X-Forwarded-For` element, formatted once per client connection.
pub(crate) fn client_address(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Prepares the headers of a request going to a backend. `client` is [`client_address`].
pub(crate) fn forward_request(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    proto: &'static str,
    host: &HeaderValue,
) {
    let trailers = wants_trailers(headers);
    strip_hop_by_hop(headers);
    // The proxy answers `Expect: 100-continue` itself when it starts reading the body.
    headers.remove(header::EXPECT);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let prior = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|prior| !prior.trim().is_empty());
    let xff = match prior {
        Some(prior) => {
            let client = client.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{prior}, {client}")).ok()
        }
        None => Some(client.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    headers.insert(X_FORWARDED_HOST.clone(), host.clone());
}

/// gRPC sends its status in trailers. An HTTP/1.1 client can only receive trailers the response
/// announces in `Trailer`, and gRPC servers speaking HTTP/2 do not announce them: announce the
/// standard ones for a gRPC response to a client that asked for trailers.
pub(crate) fn announce_grpc_trailers(resp: &mut HeaderMap, client_wants_trailers: bool) {
    if !client_wants_trailers {
        return;
    }
    let is_grpc = resp
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    if is_grpc && !resp.contains_key(header::TRAILER) && !resp.contains_key(header::CONTENT_LENGTH)
    {
        resp.insert(
            header::TRAILER,
            HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwards_trailers_and_appends_xff() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        let client = client_address("192.0.2.7".parse().unwrap());
        forward_request(
            &mut h,
            &client,
            "https",
            &HeaderValue::from_static("shop.example"),
        );
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert!(!h.contains_key(header::EXPECT));
    }

    #[test]
    fn first_hop_sets_xff_and_plain_messages_are_untouched() {
        let mut h = HeaderMap::new();
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        let client = client_address("2001:db8::1".parse().unwrap());
        forward_request(
            &mut h,
            &client,
            "http",
            &HeaderValue::from_static("shop.example"),
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
    }

    #[test]
    fn every_hop_by_hop_name_alone_is_removed() {
        for name in [
            "te",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}");
        }
    }
}
