//! Encoding header blocks: static-table references and literals that the peer never adds to
//! its dynamic table (RFC 7541 §6.1, §6.2.2, §6.2.3), so no state is shared with the peer.

use http::header::{self, HeaderMap, HeaderName};
use http::Method;

use super::table_enc::{Code, Encoder};

/// Writes a response's header block with the connection's dynamic table: fields sent before
/// become indexes, new ones are added (except credentials and long values).
pub(crate) fn encode_response_indexed(
    out: &mut Vec<u8>,
    table: &mut Encoder,
    status: http::StatusCode,
    headers: &HeaderMap,
) {
    status_field(out, status);
    indexed_fields(out, table, headers);
}

fn indexed_fields(out: &mut Vec<u8>, table: &mut Encoder, headers: &HeaderMap) {
    for (name, value) in headers {
        if is_connection_specific(name) {
            continue;
        }
        if name == header::TE && !value.as_bytes().eq_ignore_ascii_case(b"trailers") {
            continue;
        }
        if sensitive(name) || *name == header::SET_COOKIE {
            literal_field(out, name, value.as_bytes(), true);
            continue;
        }
        match table.code(name.as_str(), value.as_bytes()) {
            Code::Indexed(i) => indexed(out, i),
            Code::Literal => literal_field(out, name, value.as_bytes(), false),
            Code::Insert => {
                match static_index(name) {
                    Some(i) => integer(out, i, 6, 0x40),
                    None => {
                        out.push(0x40);
                        string(out, name.as_str().as_bytes());
                    }
                }
                string(out, value.as_bytes());
            }
        }
    }
}

fn literal_field(out: &mut Vec<u8>, name: &HeaderName, value: &[u8], never: bool) {
    match static_index(name) {
        Some(i) => literal_indexed_name(out, i, value, never),
        None => {
            out.push(if never { 0x10 } else { 0x00 });
            string(out, name.as_str().as_bytes());
            string(out, value);
        }
    }
}

/// Writes a response's header block: `:status`, then `headers`.
#[cfg(test)]
pub(crate) fn encode_response(out: &mut Vec<u8>, status: http::StatusCode, headers: &HeaderMap) {
    status_field(out, status);
    fields(out, headers);
}

fn status_field(out: &mut Vec<u8>, status: http::StatusCode) {
    match status.as_u16() {
        200 => indexed(out, 8),
        204 => indexed(out, 9),
        206 => indexed(out, 10),
        304 => indexed(out, 11),
        400 => indexed(out, 12),
        404 => indexed(out, 13),
        500 => indexed(out, 14),
        _ => literal_indexed_name(out, 8, status.as_str().as_bytes(), false),
    }
}

/// Paths longer than this are not indexed: they rarely repeat and would crowd the table.
const MAX_INDEXED_PATH: usize = 128;

/// Writes a request's header block with the connection's dynamic table (see
/// [`encode_response_indexed`]); `:authority`, short paths and the regular fields are indexed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_request_indexed(
    out: &mut Vec<u8>,
    table: &mut Encoder,
    method: &Method,
    scheme: &str,
    authority: &str,
    path: &str,
    headers: &HeaderMap,
) {
    match *method {
        Method::GET => indexed(out, 2),
        Method::POST => indexed(out, 3),
        ref other => literal_indexed_name(out, 2, other.as_str().as_bytes(), false),
    }
    match scheme {
        "http" => indexed(out, 6),
        "https" => indexed(out, 7),
        other => literal_indexed_name(out, 6, other.as_bytes(), false),
    }
    pseudo(out, table, 1, ":authority", authority.as_bytes());
    match path {
        "/" => indexed(out, 4),
        "/index.html" => indexed(out, 5),
        p if p.len() <= MAX_INDEXED_PATH => pseudo(out, table, 4, ":path", p.as_bytes()),
        p => literal_indexed_name(out, 4, p.as_bytes(), false),
    }
    indexed_fields(out, table, headers);
}

fn pseudo(out: &mut Vec<u8>, table: &mut Encoder, static_name: usize, name: &str, value: &[u8]) {
    match table.code(name, value) {
        Code::Indexed(i) => indexed(out, i),
        Code::Literal => literal_indexed_name(out, static_name, value, false),
        Code::Insert => {
            integer(out, static_name, 6, 0x40);
            string(out, value);
        }
    }
}

/// Writes a trailer block.
pub(crate) fn encode_trailers(out: &mut Vec<u8>, headers: &HeaderMap) {
    fields(out, headers);
}

fn fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        if is_connection_specific(name) {
            continue;
        }
        if name == header::TE && !value.as_bytes().eq_ignore_ascii_case(b"trailers") {
            continue;
        }
        literal_field(out, name, value.as_bytes(), sensitive(name));
    }
}

/// Fields HTTP/2 forbids (RFC 9113 §8.2.2); `te` is allowed only as "trailers".
fn is_connection_specific(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
    ) || name == header::HOST
}

/// Values an intermediary must never add to a compression table (RFC 7541 §7.1.3).
fn sensitive(name: &HeaderName) -> bool {
    name == header::AUTHORIZATION || name == header::PROXY_AUTHORIZATION || name == header::COOKIE
}

fn indexed(out: &mut Vec<u8>, index: usize) {
    integer(out, index, 7, 0x80);
}

fn literal_indexed_name(out: &mut Vec<u8>, index: usize, value: &[u8], never: bool) {
    integer(out, index, 4, if never { 0x10 } else { 0x00 });
    string(out, value);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

fn integer(out: &mut Vec<u8>, mut value: usize, prefix: u8, flags: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The static table's index for a regular header name (RFC 7541 Appendix A).
fn static_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "accept-charset" => 15,
        "accept-encoding" => 16,
        "accept-language" => 17,
        "accept-ranges" => 18,
        "accept" => 19,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "authorization" => 23,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "cookie" => 32,
        "date" => 33,
        "etag" => 34,
        "expect" => 35,
        "expires" => 36,
        "from" => 37,
        "if-match" => 39,
        "if-modified-since" => 40,
        "if-none-match" => 41,
        "if-range" => 42,
        "if-unmodified-since" => 43,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "max-forwards" => 47,
        "proxy-authenticate" => 48,
        "proxy-authorization" => 49,
        "range" => 50,
        "referer" => 51,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "user-agent" => 58,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Decoder, Name, Pseudo, Value};
    use super::*;
    use bytes::Bytes;
    use http::HeaderValue;

    #[test]
    fn requests_round_trip_through_the_decoder() {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_static("h2load"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("198.18.0.1"));
        headers.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        headers.insert("connection", HeaderValue::from_static("close"));
        headers.insert("te", HeaderValue::from_static("gzip"));
        headers.insert("host", HeaderValue::from_static("example.com"));
        let long = "a".repeat(300);
        headers.insert("x-long", HeaderValue::from_str(&long).expect("valid"));
        let mut out = Vec::new();
        let method = Method::from_bytes(b"PATCH").expect("method");
        encode_request_indexed(
            &mut out,
            &mut Encoder::new(0),
            &method,
            "https",
            "example.com:8443",
            "/x?y=1",
            &headers,
        );
        let mut fields = Vec::new();
        Decoder::new(4096)
            .decode(&Bytes::from(out.clone()), |f| fields.push(f))
            .expect("decodes");
        let valid = |s: &str| Value::Valid(HeaderValue::from_str(s).expect("valid"));
        assert_eq!(fields[0].name, Name::Pseudo(Pseudo::Method));
        assert_eq!(fields[0].value, valid("PATCH"));
        assert_eq!(fields[1].value, valid("https"));
        assert_eq!(fields[2].value, valid("example.com:8443"));
        assert_eq!(fields[3].value, valid("/x?y=1"));
        let names: Vec<_> = fields[4..]
            .iter()
            .map(|f| match &f.name {
                Name::Header(h) => h.as_str().to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            ["user-agent", "x-forwarded-for", "authorization", "x-long"]
        );
        assert_eq!(fields[7].value, valid(&long));
        // The credential goes out as never-indexed (0001 prefix, name index 23 → 0x1f 0x08).
        let auth = out
            .windows(2)
            .position(|w| w == [0x1f, 0x08])
            .expect("never-indexed authorization");
        assert_eq!(out[auth + 2] as usize, "Bearer s3cret".len());
    }

    #[test]
    fn responses_round_trip_through_the_decoder() {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from_static("13"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        for (status, first) in [(200, vec![0x88]), (418, vec![0x08, 3, b'4', b'1', b'8'])] {
            let mut out = Vec::new();
            encode_response(
                &mut out,
                http::StatusCode::from_u16(status).expect("status"),
                &headers,
            );
            assert_eq!(out[..first.len()], first[..]);
            let mut fields = Vec::new();
            Decoder::new(4096)
                .decode(&Bytes::from(out), |f| fields.push(f))
                .expect("decodes");
            assert_eq!(fields.len(), 2, "transfer-encoding is left out");
            assert_eq!(fields[0].name, Name::Pseudo(Pseudo::Status));
        }
    }

    #[test]
    fn repeated_response_fields_become_indexes() {
        let mut headers = HeaderMap::new();
        headers.insert("server", HeaderValue::from_static("nghttpd"));
        headers.insert("x-custom", HeaderValue::from_static("v"));
        headers.insert("authorization", HeaderValue::from_static("secret"));
        let mut table = Encoder::new(4096);
        let mut decoder = Decoder::new(4096);
        let mut sizes = Vec::new();
        for round in 0..3 {
            let mut out = Vec::new();
            if round == 2 {
                headers.insert("x-custom", HeaderValue::from_static("w"));
            }
            encode_response_indexed(&mut out, &mut table, http::StatusCode::OK, &headers);
            sizes.push(out.len());
            let mut fields = Vec::new();
            decoder
                .decode(&Bytes::from(out), |f| fields.push(f))
                .expect("decodes");
            let values: Vec<_> = fields
                .iter()
                .map(|f| match &f.value {
                    Value::Valid(v) => v.to_str().expect("ascii").to_string(),
                    Value::Invalid(_) => panic!("invalid"),
                })
                .collect();
            let custom = if round == 2 { "w" } else { "v" };
            assert_eq!(values, ["200", "nghttpd", custom, "secret"]);
        }
        // Second response: :status, two indexes, and the credential again as a literal.
        assert_eq!(sizes[1], 1 + 1 + 1 + 2 + 1 + "secret".len());
        assert!(sizes[0] > sizes[1] && sizes[2] > sizes[1]);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_in_step_with_the_decoder() {
        let mut table = Encoder::new(200);
        let mut decoder = Decoder::new(200);
        for i in 0..50 {
            let mut headers = HeaderMap::new();
            headers.insert(
                "x-n",
                HeaderValue::from_str(&format!("{}", i % 7)).expect("value"),
            );
            headers.insert(
                "x-m",
                HeaderValue::from_str(&format!("{}", i % 3)).expect("value"),
            );
            let mut out = Vec::new();
            encode_response_indexed(&mut out, &mut table, http::StatusCode::OK, &headers);
            let mut values = Vec::new();
            decoder
                .decode(&Bytes::from(out), |f| values.push(f.value))
                .expect("decodes");
            let want = |s: String| Value::Valid(HeaderValue::from_str(&s).expect("value"));
            assert_eq!(values[1], want(format!("{}", i % 7)), "round {i}");
            assert_eq!(values[2], want(format!("{}", i % 3)), "round {i}");
        }
    }

    #[test]
    fn repeated_requests_index_authority_path_and_fields() {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_static("h2load"));
        headers.insert("cookie", HeaderValue::from_static("s=1"));
        let mut table = Encoder::new(4096);
        let mut decoder = Decoder::new(4096);
        let mut sizes = Vec::new();
        for _ in 0..2 {
            let mut out = Vec::new();
            encode_request_indexed(
                &mut out,
                &mut table,
                &Method::GET,
                "http",
                "a.example",
                "/app/x",
                &headers,
            );
            sizes.push(out.len());
            let mut fields = Vec::new();
            decoder
                .decode(&Bytes::from(out), |f| fields.push(f))
                .expect("decodes");
            assert_eq!(fields.len(), 6);
            assert_eq!(
                fields[3].value,
                Value::Valid(HeaderValue::from_static("/app/x"))
            );
        }
        // method, scheme, then three indexes, then the cookie as a never-indexed literal.
        assert_eq!(sizes[1], 1 + 1 + 1 + 1 + 1 + 2 + 1 + "s=1".len());
    }

    #[test]
    fn common_requests_are_small() {
        let mut out = Vec::new();
        encode_request_indexed(
            &mut out,
            &mut Encoder::new(0),
            &Method::GET,
            "http",
            "a.example",
            "/",
            &HeaderMap::new(),
        );
        assert_eq!(
            out,
            [0x82, 0x86, 0x01, 9, b'a', b'.', b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0x84]
        );
    }
}
