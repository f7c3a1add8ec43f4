//! Decoding header blocks (RFC 7541 §6).

use bytes::Bytes;

use super::huffman;
use super::table::Dynamic;
use super::{Field, Name, Value};

/// The header block cannot be decoded: a connection error of type COMPRESSION_ERROR, since the
/// peer's table and ours no longer agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    Overflow,
    #[error("table index {0} does not exist")]
    BadIndex(usize),
    #[error("invalid Huffman code")]
    Huffman,
    #[error("table size update to {0} is over the limit we announced")]
    TableSize(usize),
    #[error("table size update after the first field")]
    LateTableSizeUpdate,
}

/// The largest integer accepted: no length or index of ours is anywhere near it.
const MAX_INTEGER: usize = 1 << 24;

pub(crate) struct Decoder {
    table: Dynamic,
    /// The table size we announced (SETTINGS_HEADER_TABLE_SIZE): the peer may not exceed it.
    limit: usize,
}

impl Decoder {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            table: Dynamic::new(limit),
            limit,
        }
    }

    /// Decodes one whole header block, handing each field to `emit` in order.
    pub(crate) fn decode(
        &mut self,
        block: &Bytes,
        mut emit: impl FnMut(Field),
    ) -> Result<(), DecodeError> {
        let mut at = 0;
        let mut fields = 0usize;
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                let index = integer(block, &mut at, 7)?;
                let field = self.table.get(index).ok_or(DecodeError::BadIndex(index))?;
                emit(field.clone());
            } else if first & 0xc0 == 0x40 {
                let field = self.literal(block, &mut at, 6)?;
                self.table.insert(field.clone());
                emit(field);
            } else if first & 0xe0 == 0x20 {
                if fields > 0 {
                    return Err(DecodeError::LateTableSizeUpdate);
                }
                let size = integer(block, &mut at, 5)?;
                if size > self.limit {
                    return Err(DecodeError::TableSize(size));
                }
                self.table.resize(size);
                continue;
            } else {
                // Without indexing (0000) or never indexed (0001): not added to the table.
                emit(self.literal(block, &mut at, 4)?);
            }
            fields += 1;
        }
        Ok(())
    }

    fn literal(&self, block: &Bytes, at: &mut usize, prefix: u8) -> Result<Field, DecodeError> {
        let index = integer(block, at, prefix)?;
        let name = if index == 0 {
            Name::parse(&string(block, at)?)
        } else {
            let field = self.table.get(index).ok_or(DecodeError::BadIndex(index))?;
            field.name.clone()
        };
        let value = Value::parse(string(block, at)?);
        Ok(Field { name, value })
    }
}

/// An integer with an N-bit prefix (RFC 7541 §5.1).
fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, DecodeError> {
    let mask = (1usize << prefix) - 1;
    let first = *block.get(*at).ok_or(DecodeError::Truncated)?;
    *at += 1;
    let mut value = usize::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*at).ok_or(DecodeError::Truncated)?;
        *at += 1;
        // Past 28 bits of continuation the value is over MAX_INTEGER (or is padded with
        // zero groups, which no encoder needs): refuse before the shift could overflow.
        if shift > 28 {
            return Err(DecodeError::Overflow);
        }
        value += usize::from(b & 0x7f) << shift;
        if value > MAX_INTEGER {
            return Err(DecodeError::Overflow);
        }
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// A string literal (RFC 7541 §5.2): a slice of the block, or its Huffman decoding.
fn string(block: &Bytes, at: &mut usize) -> Result<Bytes, DecodeError> {
    let huffman = block.get(*at).ok_or(DecodeError::Truncated)? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let end = at.checked_add(len).ok_or(DecodeError::Truncated)?;
    if end > block.len() {
        return Err(DecodeError::Truncated);
    }
    let raw = &block[*at..end];
    let out = if huffman {
        let mut out = Vec::new();
        huffman::decode(raw, &mut out).map_err(|_| DecodeError::Huffman)?;
        Bytes::from(out)
    } else {
        block.slice(*at..end)
    };
    *at = end;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::Pseudo;
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    fn hex(s: &str) -> Bytes {
        let s: String = s.split_whitespace().collect();
        Bytes::from(
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
                .collect::<Vec<u8>>(),
        )
    }

    fn decode(d: &mut Decoder, block: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        d.decode(&hex(block), |f| {
            let name = match f.name {
                Name::Pseudo(Pseudo::Status) => ":status".to_string(),
                Name::Pseudo(Pseudo::Method) => ":method".to_string(),
                Name::Pseudo(Pseudo::Scheme) => ":scheme".to_string(),
                Name::Pseudo(Pseudo::Path) => ":path".to_string(),
                Name::Pseudo(Pseudo::Authority) => ":authority".to_string(),
                Name::Header(h) => h.as_str().to_string(),
                other => panic!("unexpected {other:?}"),
            };
            let Value::Valid(v) = f.value else {
                panic!("invalid value")
            };
            out.push((name, v.to_str().expect("ascii").to_string()));
        })
        .expect("decodes");
        out
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rfc7541_c6_responses_with_huffman_and_eviction() {
        // RFC 7541 C.6: three responses through a 256-byte table.
        let mut d = Decoder::new(256);
        let first = decode(
            &mut d,
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        );
        assert_eq!(
            first,
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(d.table.size(), 222);
        let second = decode(&mut d, "4883 640e ffc1 c0bf");
        assert_eq!(second[0], (":status".into(), "307".into()));
        assert_eq!(
            second[3],
            ("location".into(), "https://www.example.com".into())
        );
        assert_eq!(d.table.size(), 222);
        let third = decode(
            &mut d,
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        );
        assert_eq!(third.len(), 6);
        assert_eq!(third[0], (":status".into(), "200".into()));
        assert_eq!(third[4], ("content-encoding".into(), "gzip".into()));
        assert_eq!(
            third[5],
            (
                "set-cookie".into(),
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1".into()
            )
        );
        assert_eq!(d.table.size(), 215);
    }

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        let mut d = Decoder::new(4096);
        let first = decode(&mut d, "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        assert_eq!(
            first,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        let second = decode(&mut d, "8286 84be 5808 6e6f 2d63 6163 6865");
        assert_eq!(second[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(second[4], ("cache-control".into(), "no-cache".into()));
        assert_eq!(d.table.size(), 110);
    }

    #[test]
    fn invalid_fields_are_flagged_but_keep_the_table_in_step() {
        let mut d = Decoder::new(4096);
        let mut block = vec![0x40, 3];
        block.extend_from_slice(b"X-A"); // upper case: invalid in HTTP/2
        block.push(1);
        block.push(b'v');
        block.push(0x40);
        block.push(1);
        block.push(b'a');
        block.push(3);
        block.extend_from_slice(b" v "); // white space at the edges
        let mut seen = Vec::new();
        d.decode(&Bytes::from(block), |f| seen.push(f))
            .expect("decodes");
        assert_eq!(seen[0].name, Name::Invalid(3));
        assert_eq!(seen[1].value, Value::Invalid(3));
        // Both entries were added: index 62 is the newest.
        let mut again = Vec::new();
        d.decode(&Bytes::from_static(&[0xbe, 0xbf]), |f| again.push(f))
            .expect("decodes");
        assert_eq!(again[0].name, Name::Header(HeaderName::from_static("a")));
        assert_eq!(again[1].value, Value::Valid(HeaderValue::from_static("v")));
    }

    #[test]
    fn broken_blocks_are_compression_errors() {
        let mut d = Decoder::new(4096);
        let err = |d: &mut Decoder, b: &'static [u8]| {
            d.decode(&Bytes::from_static(b), |_| {})
                .expect_err("must fail")
        };
        assert_eq!(err(&mut d, &[0x80]), DecodeError::BadIndex(0));
        assert_eq!(err(&mut d, &[0xbe]), DecodeError::BadIndex(62));
        assert_eq!(err(&mut d, &[0x40, 0x05, b'a']), DecodeError::Truncated);
        assert_eq!(
            err(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            DecodeError::Overflow
        );
        assert_eq!(
            err(&mut d, &[0x3f, 0xe2, 0x1f]),
            DecodeError::TableSize(4097)
        );
        assert_eq!(err(&mut d, &[0x82, 0x20]), DecodeError::LateTableSizeUpdate);
        assert_eq!(err(&mut d, &[0x00, 0x81, 0x00, 0x00]), DecodeError::Huffman);
        // A size update at the start is fine, and evicts.
        d.decode(&Bytes::from_static(&[0x20, 0x82]), |_| {})
            .expect("size update then a field");
    }
}
