//! A quick reading of a batch line in the one layout docs/FORMAT.md §7 gives it, for the
//! verifier's hot path. It accepts only lines that `serde_json` reads into the same members:
//! the exact framing, a header that is an object, `sig` and `hints` without escapes and in
//! ASCII, and records that are JSON values (validated byte by byte, UTF-8 included, as
//! `serde_json` would) with nothing between them but single commas. Anything else, however
//! small the departure, is left to `serde_json`, whose verdict and error text stand, so that
//! what a line is judged to be never depends on which of the two read it.

use crate::batch::{LineFields, Raw};

/// Containers nested deeper than this are left to `serde_json`, which has its own limit (128
/// in all, the line's object and the records' array among them).
const MAX_DEPTH: u32 = 64;

/// `line`'s members, when it is a batch line in the layout a signer writes.
pub(crate) fn batch_line(line: &[u8]) -> Option<LineFields<'_>> {
    let mut at = b"{\"v\":1,\"header\":".len();
    if !line.starts_with(b"{\"v\":1,\"header\":") || line.get(at) != Some(&b'{') {
        return None;
    }
    let header_start = at;
    at = skip_value(line, at)?;
    let header = Raw(&line[header_start..at]);
    at = expect(line, at, b",\"sig\":\"")?;
    let (sig, after) = plain_string(line, at)?;
    at = expect(line, after, b",\"hints\":\"")?;
    let (hints, after) = plain_string(line, at)?;
    at = expect(line, after, b",\"records\":[")?;
    let mut records = Vec::new();
    if line.get(at) == Some(&b']') {
        at += 1;
    } else {
        loop {
            let start = at;
            at = skip_value(line, at)?;
            records.push(Raw(&line[start..at]));
            match line.get(at) {
                Some(b',') => at += 1,
                Some(b']') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (line.get(at..) == Some(b"}")).then_some(LineFields {
        v: Some(crate::batch::FORMAT_VERSION),
        header: Some(header),
        sig: Some(sig),
        hints: Some(hints),
        records: Some(records),
        attestation: None,
        checkpoint: None,
        timestamp: None,
        seed_sequence: None,
        seed_payload: None,
        seed_signature: None,
        seed_thumbprint: None,
    })
}

/// The index after `expected`, which must come at `at`.
fn expect(line: &[u8], at: usize, expected: &[u8]) -> Option<usize> {
    line.get(at..)?.starts_with(expected).then(|| at + expected.len())
}

/// A string's text from `at` (just after its opening quote) to its closing quote, and the index
/// after that quote, when it is printable ASCII without escapes (what `serde_json` lends as a
/// `&str`).
fn plain_string(line: &[u8], at: usize) -> Option<(&str, usize)> {
    let rest = line.get(at..)?;
    let len = memchr::memchr(b'"', rest)?;
    let text = &rest[..len];
    if !text.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\') {
        return None;
    }
    Some((std::str::from_utf8(text).ok()?, at + len + 1))
}

/// JSON white space, as `serde_json` skips it.
fn skip_ws(b: &[u8], mut at: usize) -> usize {
    while matches!(b.get(at), Some(b' ' | b'\n' | b'\t' | b'\r')) {
        at += 1;
    }
    at
}

/// The index after the JSON value that starts at `at` (no white space before it), if it is one.
/// Iterative, with the open containers as bits (1: object), so its memory is fixed.
fn skip_value(b: &[u8], mut at: usize) -> Option<usize> {
    let mut objects: u64 = 0;
    let mut depth: u32 = 0;
    'value: loop {
        // A value starts at `at`.
        match *b.get(at)? {
            b'"' => at = skip_string(b, at + 1)?,
            b'{' | b'[' => {
                let object = b[at] == b'{';
                let close = if object { b'}' } else { b']' };
                at = skip_ws(b, at + 1);
                if b.get(at) == Some(&close) {
                    at += 1;
                } else {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    objects = (objects << 1) | u64::from(object);
                    depth += 1;
                    if object {
                        at = skip_key(b, at)?;
                    }
                    continue 'value;
                }
            }
            b't' => at = expect(b, at, b"true")?,
            b'f' => at = expect(b, at, b"false")?,
            b'n' => at = expect(b, at, b"null")?,
            b'-' | b'0'..=b'9' => at = skip_number(b, at)?,
            _ => return None,
        }
        // A value ended at `at`: close what it ends, up to the next value.
        loop {
            if depth == 0 {
                return Some(at);
            }
            at = skip_ws(b, at);
            let object = objects & 1 == 1;
            match (*b.get(at)?, object) {
                (b',', _) => {
                    at = skip_ws(b, at + 1);
                    if object {
                        at = skip_key(b, at)?;
                    }
                    continue 'value;
                }
                (b'}', true) | (b']', false) => {
                    objects >>= 1;
                    depth -= 1;
                    at += 1;
                }
                _ => return None,
            }
        }
    }
}

/// An object's key and colon at `at`: the index of its value (white space skipped).
fn skip_key(b: &[u8], at: usize) -> Option<usize> {
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let at = skip_ws(b, skip_string(b, at + 1)?);
    (b.get(at) == Some(&b':')).then(|| skip_ws(b, at + 1))
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// The bytes of `word` that are a quote, a backslash, a control character or not ASCII, as
/// their high bits. The lowest one set is exact (borrows only carry upwards), which is the only
/// one read.
fn specials(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    (zero(quote) | zero(backslash) | (word.wrapping_sub(ONES * 0x20) & !word) | word) & HIGHS
}

/// The index after the closing quote of the string whose text starts at `at`, if it is a JSON
/// string `serde_json` accepts: no control characters, valid escapes, valid UTF-8.
fn skip_string(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        // Eight bytes at a time to the next byte that needs a look.
        while let Some(chunk) = b.get(at..at + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let found = specials(u64::from_le_bytes(word));
            if found != 0 {
                at += (found.trailing_zeros() / 8) as usize;
                break;
            }
            at += 8;
        }
        match *b.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => {
                at += 1;
                match *b.get(at)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 1,
                    b'u' => {
                        let digits = b.get(at + 1..at + 5)?;
                        if !digits.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        at += 5;
                    }
                    _ => return None,
                }
            }
            0x00..=0x1f => return None,
            0x20..=0x7f => at += 1,
            lead => {
                let len = match lead {
                    0xc2..=0xdf => 2,
                    0xe0..=0xef => 3,
                    0xf0..=0xf4 => 4,
                    _ => return None,
                };
                std::str::from_utf8(b.get(at..at + len)?).ok()?;
                at += len;
            }
        }
    }
}

/// The index after the JSON number at `at`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn skip_number(b: &[u8], mut at: usize) -> Option<usize> {
    let digits =
        |at: usize| at + b.get(at..).map_or(0, |rest| rest.iter().take_while(|c| c.is_ascii_digit()).count());
    if b.get(at) == Some(&b'-') {
        at += 1;
    }
    match b.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits(at + 1),
        _ => return None,
    }
    if b.get(at) == Some(&b'.') {
        let end = digits(at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if matches!(b.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(b.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let end = digits(at);
        if end == at {
            return None;
        }
        at = end;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Where each member's bytes lie (address and length), so that two readings are compared
    /// by the very bytes they lend, as the layout check needs.
    type Spans = (
        Option<u64>,
        Option<(usize, usize)>,
        Option<(usize, usize)>,
        Option<(usize, usize)>,
        Vec<(usize, usize)>,
    );

    fn spans(fields: &LineFields<'_>) -> Spans {
        let span = |b: &[u8]| (b.as_ptr() as usize, b.len());
        assert!(
            fields.attestation.is_none() && fields.checkpoint.is_none() && fields.seed_sequence.is_none()
        );
        (
            fields.v,
            fields.header.map(|h| span(h.0)),
            fields.sig.map(|s| span(s.as_bytes())),
            fields.hints.map(|s| span(s.as_bytes())),
            fields.records.iter().flatten().map(|r| span(r.0)).collect(),
        )
    }

    /// Whatever the scan reads, `serde_json` reads into the same members; true if the scan read it.
    fn agrees(line: &[u8]) -> bool {
        let slow = serde_json::from_slice::<LineFields<'_>>(line);
        let Some(fast) = batch_line(line) else { return false };
        let slow = slow.unwrap_or_else(|e| {
            panic!("serde_json refuses what the scan read ({e}): {}", String::from_utf8_lossy(line))
        });
        assert_eq!(spans(&fast), spans(&slow), "{}", String::from_utf8_lossy(line));
        true
    }

    fn line(records: &[&str]) -> Vec<u8> {
        format!(
            "{{\"v\":1,\"header\":{{\"v\":1,\"stream\":\"s\",\"seq\":3}},\"sig\":\"MEUCIQ+/=\",\"hints\":\"00ff\",\"records\":[{}]}}",
            records.join(",")
        )
        .into_bytes()
    }

    const VALUES: [&str; 14] = [
        r#"{"ts":"2026-12-01T00:00:00.000Z","level":"Information","attributes":{"n":12,"ok":true}}"#,
        r#"{}"#,
        r#"[]"#,
        r#""plain""#,
        r#""esc \" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00""#,
        "\"caf\u{e9} \u{1f600} \u{800}\u{10ffff}\"",
        r#"[0,-0,1.5,-12.25e+3,4E-2,9e9,null,false]"#,
        r#"{ "a" : [ 1 , { "b" : null } ] ,"c":"" }"#,
        r#"12345678901234567890"#,
        r#"true"#,
        r#"null"#,
        r#"{"":{"":{"":[[[[]]]]}}}"#,
        r#""0123456789abcdef0123456789abcdef""#,
        r#"-0.0e0"#,
    ];

    #[test]
    fn the_scan_reads_signers_lines_as_serde_json_does() {
        for value in VALUES {
            assert!(agrees(&line(&[value])), "{value}");
        }
        assert!(agrees(&line(&VALUES)));
        assert!(agrees(&line(&[])));
    }

    #[test]
    fn what_is_not_json_or_not_the_layout_is_left_to_serde_json() {
        let not_json = [
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            "tru",
            "nul",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{a:1}",
            "[1 2]",
            "\"\u{1}\"",
            "\"\\x\"",
            "\"\\u12G4\"",
            "\"\\u12\"",
            "\"open",
            "{",
            "[",
            "]",
            "'a'",
            "NaN",
        ];
        for value in not_json {
            let text = line(&[value]);
            assert!(!agrees(&text), "{value}");
            assert!(serde_json::from_slice::<LineFields<'_>>(&text).is_err(), "{value}");
        }
        for bytes in
            [&b"\"\xc0\x80\""[..], b"\"\xed\xa0\x80\"", b"\"\xf5\x80\x80\x80\"", b"\"\xe9\"", b"\"\xc3\""]
        {
            let mut text = line(&["0"]);
            let at = text.len() - 3;
            text.splice(at..at + 1, bytes.iter().copied());
            assert!(!agrees(&text));
            assert!(serde_json::from_slice::<LineFields<'_>>(&text).is_err());
        }
        // Readable JSON in another layout: serde_json reads it, the layout check judges it.
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        for other in [
            b" {\"v\":1}".to_vec(),
            [line(&["1"]), b" ".to_vec()].concat(),
            line(&[" 1"]),
            line(&["1 "]),
            line(&[&deep]),
            String::from_utf8(line(&["1"]))
                .unwrap()
                .replace("\"MEUCIQ+/=\"", "\"MEUC\\u0049Q\"")
                .into_bytes(),
            String::from_utf8(line(&["1"])).unwrap().replace("\"hints\"", "\"hint\\u0073\"").into_bytes(),
        ] {
            assert!(!agrees(&other), "{}", String::from_utf8_lossy(&other));
        }
        assert!(serde_json::from_slice::<LineFields<'_>>(&line(&[&deep])).is_ok());
    }

    const ALPHABET: &[u8] = b"\"\\{}[],: 0123456789-+.eEutrfalsn\x01\x1f\x7f\x80\xbf\xc3\xe2\xed\xf0\xff";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Lines a byte or three away from a signer's: the scan reads none that serde_json would
        /// read otherwise (and none it refuses).
        #[test]
        fn the_scan_never_departs_from_serde_json(
            picks in proptest::collection::vec(0..VALUES.len(), 0..4),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0..3u8, prop::sample::select(ALPHABET)), 1..4),
        ) {
            let values: Vec<&str> = picks.iter().map(|&i| VALUES[i]).collect();
            let mut text = line(&values);
            prop_assert!(agrees(&text));
            for (at, how, byte) in edits {
                let at = at.index(text.len());
                match how {
                    0 => text[at] = byte,
                    1 => text.insert(at, byte),
                    _ => { text.remove(at); }
                }
                if text.is_empty() { break; }
            }
            agrees(&text);
        }
    }
}
