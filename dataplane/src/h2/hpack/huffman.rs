//! HPACK's Huffman code (RFC 7541 Appendix B) and its decoder.
//!
//! The code is canonical: within each length, codes are consecutive and follow symbol order,
//! so the table of code lengths alone defines it. Decoding keeps, per length, the first code
//! and how many symbols have it, and reads one symbol by trying lengths from the shortest.

/// Code length in bits of each symbol, 0..=255, then EOS (256); RFC 7541 Appendix B.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

/// Per code length: the first code, the number of symbols, and where they start in `SYMBOLS`.
struct Canon {
    first: [u32; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    offset: [u16; MAX_LEN + 1],
    /// Symbols ordered by (code length, symbol).
    symbols: [u16; 257],
}

const fn canon() -> Canon {
    let mut c = Canon {
        first: [0; MAX_LEN + 1],
        count: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        symbols: [0; 257],
    };
    let mut n = 0;
    let mut len = 1;
    let mut code: u32 = 0;
    while len <= MAX_LEN {
        c.first[len] = code;
        c.offset[len] = n as u16;
        let mut sym = 0;
        while sym < 257 {
            if LENGTHS[sym] as usize == len {
                c.symbols[n] = sym as u16;
                n += 1;
                c.count[len] += 1;
            }
            sym += 1;
        }
        code = (code + c.count[len]) << 1;
        len += 1;
    }
    c
}

static CANON: Canon = canon();

/// The input is not a valid Huffman-coded string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HuffmanError;

/// Appends the decoded form of `src` to `out`. Padding must be at most 7 bits, all ones
/// (a prefix of EOS), and EOS itself must not appear (RFC 7541 §5.2).
pub(crate) fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    out.reserve(src.len() + src.len() / 2);
    let mut acc: u64 = 0;
    let mut bits: usize = 0;
    let mut input = src.iter();
    loop {
        while bits <= 56 {
            match input.next() {
                Some(&b) => {
                    acc = (acc << 8) | u64::from(b);
                    bits += 8;
                }
                None => break,
            }
        }
        if bits == 0 {
            return Ok(());
        }
        match next_symbol(acc, bits) {
            Some((sym, len)) => {
                if sym == EOS {
                    return Err(HuffmanError);
                }
                out.push(sym as u8);
                bits -= len;
                acc &= (1u64 << bits) - 1;
            }
            None => {
                // What is left is not a whole code: it must be padding.
                let ones = (1u64 << bits) - 1;
                return if bits <= 7 && acc == ones {
                    Ok(())
                } else {
                    Err(HuffmanError)
                };
            }
        }
    }
}

/// The symbol at the top of the `bits` valid low bits of `acc`, with its length.
fn next_symbol(acc: u64, bits: usize) -> Option<(u16, usize)> {
    let c = &CANON;
    let mut len = 5;
    while len <= MAX_LEN.min(bits) {
        let code = ((acc >> (bits - len)) & ((1u64 << len) - 1)) as u32;
        let count = c.count[len];
        if count > 0 && code >= c.first[len] && code - c.first[len] < count {
            let at = c.offset[len] as usize + (code - c.first[len]) as usize;
            return Some((c.symbols[at], len));
        }
        len += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes with the same canonical code, for round trips.
    fn encode(src: &[u8]) -> Vec<u8> {
        let c = &CANON;
        let code_of = |sym: u16| {
            let len = LENGTHS[sym as usize] as usize;
            let rank = (c.offset[len] as usize..c.offset[len] as usize + c.count[len] as usize)
                .position(|i| c.symbols[i] == sym)
                .expect("symbol has a code");
            (c.first[len] + rank as u32, len)
        };
        let mut out = Vec::new();
        let mut acc: u64 = 0;
        let mut bits = 0;
        for &b in src {
            let (code, len) = code_of(u16::from(b));
            acc = (acc << len) | u64::from(code);
            bits += len;
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | ((1u8 << (8 - bits)) - 1));
        }
        out
    }

    #[test]
    fn the_code_is_complete_and_prefix_free() {
        // Kraft: a complete prefix code sums to exactly 1.
        let sum: f64 = LENGTHS.iter().map(|&l| 2f64.powi(-(l as i32))).sum();
        assert!((sum - 1.0).abs() < 1e-12, "{sum}");
    }

    #[test]
    fn rfc7541_examples_decode() {
        // RFC 7541 C.4.1 and C.6.1: "www.example.com" and "private".
        let www = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        let mut out = Vec::new();
        decode(&www, &mut out).expect("valid");
        assert_eq!(out, b"www.example.com");
        out.clear();
        decode(&[0xae, 0xc3, 0x77, 0x1a, 0x4b], &mut out).expect("valid");
        assert_eq!(out, b"private");
        assert_eq!(encode(b"www.example.com"), www);
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        decode(&encode(&all), &mut out).expect("valid");
        assert_eq!(out, all);
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // 'a' is 00011 (5 bits): padding with zeros is not a prefix of EOS.
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(HuffmanError));
        // A whole byte of ones after a symbol is more than 7 bits of padding.
        assert_eq!(decode(&[0b0001_1111, 0xff], &mut out), Err(HuffmanError));
        // EOS itself (30 ones) is an error even when it ends the input.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xfc], &mut out),
            Err(HuffmanError)
        );
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HuffmanError)
        );
    }
}
