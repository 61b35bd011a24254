//! Raw DEFLATE (RFC 1951) for the SAML HTTP-Redirect binding: one final block with the
//! fixed Huffman codes (RFC 1951 §3.2.6) and greedy LZ77 matches found through a small hash
//! table.
//!
//! An AuthnRequest is under a kilobyte of text that repeats itself (namespaces, our URLs);
//! a general-purpose compressor spends most of its time there setting up and clearing
//! state sized for megabytes (flate2's was half of a redirect's cost even when reused).
//! This writer's state is a 16 KiB table on the stack. Its output is plain DEFLATE that any
//! inflater reads; the tests inflate it with flate2 for arbitrary inputs.

/// Bits of the match table's index.
const HASH_BITS: u32 = 12;
/// The farthest back a match may point.
const WINDOW: usize = 32 * 1024;
/// The shortest and longest match DEFLATE can say.
const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;

/// Length codes 257..=285: the shortest length of each and its extra bits.
const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Distance codes 0..=29: the shortest distance of each and its extra bits.
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Writes bits least significant first, as DEFLATE packs them.
struct BitWriter {
    out: Vec<u8>,
    bits: u64,
    count: u32,
}

impl BitWriter {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            out: Vec::with_capacity(capacity),
            bits: 0,
            count: 0,
        }
    }

    /// Appends the low `count` bits of `value` (`count` ≤ 32).
    fn bits(&mut self, value: u32, count: u32) {
        debug_assert!(count <= 32 && (count == 32 || value >> count == 0));
        self.bits |= u64::from(value) << self.count;
        self.count += count;
        while self.count >= 8 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.count -= 8;
        }
    }

    /// Appends a Huffman code of `length` bits, most significant bit first.
    fn code(&mut self, code: u32, length: u32) {
        self.bits(code.reverse_bits() >> (32 - length), length);
    }

    /// A literal/length symbol (0..=285) in the fixed code.
    fn symbol(&mut self, symbol: u32) {
        match symbol {
            0..=143 => self.code(0x30 + symbol, 8),
            144..=255 => self.code(0x190 + symbol - 144, 9),
            256..=279 => self.code(symbol - 256, 7),
            _ => self.code(0xC0 + symbol - 280, 8),
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            self.out.push(self.bits as u8);
        }
        self.out
    }
}

/// The index of the last entry of `bases` that is at most `value`.
fn code_index(bases: &[u16], value: u16) -> usize {
    bases.partition_point(|&base| base <= value) - 1
}

fn hash(bytes: &[u8]) -> usize {
    let trigram = u32::from(bytes[0]) | u32::from(bytes[1]) << 8 | u32::from(bytes[2]) << 16;
    (trigram.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

/// Compresses `input` into raw DEFLATE (no zlib or gzip header).
pub fn deflate(input: &[u8]) -> Vec<u8> {
    // Position + 1 of the last occurrence of each trigram hash (0: none).
    let mut last = [0u32; 1 << HASH_BITS];
    let mut out = BitWriter::with_capacity(input.len() / 2 + 16);
    out.bits(1, 1); // BFINAL: the only block
    out.bits(1, 2); // BTYPE 01: fixed Huffman codes
    let mut at = 0;
    while at < input.len() {
        let mut length = 0;
        let mut distance = 0;
        if input.len() - at >= MIN_MATCH {
            let slot = hash(&input[at..]);
            let candidate = last[slot] as usize;
            last[slot] = at as u32 + 1;
            if candidate > 0 && at - (candidate - 1) <= WINDOW {
                let from = candidate - 1;
                let longest = (input.len() - at).min(MAX_MATCH);
                let same = input[from..from + longest]
                    .iter()
                    .zip(&input[at..at + longest])
                    .take_while(|(a, b)| a == b)
                    .count();
                if same >= MIN_MATCH {
                    length = same;
                    distance = at - from;
                }
            }
        }
        if length == 0 {
            out.symbol(u32::from(input[at]));
            at += 1;
            continue;
        }
        let length_code = code_index(&LENGTH_BASE, length as u16);
        out.symbol(257 + length_code as u32);
        out.bits(
            u32::from(length as u16 - LENGTH_BASE[length_code]),
            u32::from(LENGTH_EXTRA[length_code]),
        );
        let distance_code = code_index(&DISTANCE_BASE, distance as u16);
        out.code(distance_code as u32, 5);
        out.bits(
            u32::from(distance as u16 - DISTANCE_BASE[distance_code]),
            u32::from(DISTANCE_EXTRA[distance_code]),
        );
        // Remember the positions inside the match too, so later text can point at them.
        let end = at + length;
        for inside in at + 1..end.min(input.len().saturating_sub(MIN_MATCH - 1)) {
            last[hash(&input[inside..])] = inside as u32 + 1;
        }
        at = end;
    }
    out.symbol(256); // end of block
    out.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::DeflateDecoder;
    use proptest::prelude::*;

    use super::*;

    fn inflate(deflated: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        DeflateDecoder::new(deflated)
            .read_to_end(&mut bytes)
            .expect("valid DEFLATE");
        bytes
    }

    #[test]
    fn edge_cases_inflate_to_themselves() {
        let long_run = vec![b'a'; 100_000];
        let far = [vec![b'x'; 3], vec![0u8; 40_000], vec![b'x'; 3]].concat();
        let every_length: Vec<u8> = (0..300u32)
            .flat_map(|n| std::iter::repeat_n(b"abcdefgh"[n as usize % 8], n as usize))
            .collect();
        let all_bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        for input in [
            &b""[..],
            b"a",
            b"ab",
            b"abc",
            b"abcabc",
            &long_run,
            &far,
            &every_length,
            &all_bytes,
        ] {
            assert_eq!(inflate(&deflate(input)), input);
        }
    }

    #[test]
    fn an_authn_request_is_compressed() {
        let xml = crate::signin::authn_request_xml(
            "_0123456789abcdef0123456789abcdef",
            chrono::Utc::now(),
            "https://idp.example.com/app/signpost/sso/saml",
            "https://signpost.example.com/saml/01J0000000000000000000000/acs",
            "https://signpost.example.com/saml/01J0000000000000000000000",
        );
        let deflated = deflate(xml.as_bytes());
        assert_eq!(inflate(&deflated), xml.as_bytes());
        assert!(
            deflated.len() * 10 < xml.len() * 8,
            "{} bytes from {}",
            deflated.len(),
            xml.len()
        );
    }

    proptest! {
        #[test]
        fn any_input_inflates_to_itself(input in proptest::collection::vec(any::<u8>(), 0..5000)) {
            prop_assert_eq!(inflate(&deflate(&input)), input);
        }

        #[test]
        fn repetitive_input_inflates_to_itself(
            words in proptest::collection::vec("[a-c]{1,6}", 0..800),
        ) {
            let input = words.concat().into_bytes();
            prop_assert_eq!(inflate(&deflate(&input)), input);
        }
    }
}
