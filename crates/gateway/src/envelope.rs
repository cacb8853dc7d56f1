//! The gateway's spool lines (docs/FORMAT.md §15): each received line as it came, after a small
//! JSON object with what the gateway found out about it, which the sinks need (Loki's
//! `signature_valid` label, the stream an attestation document belongs to). Stream names need
//! no JSON escapes (FORMAT.md §4), so the note is read without copying.
//!
//! ```text
//! {"stream":"payments","signature_valid":true}{"v":1,"header":{…},…}
//! ```

use serde::{Deserialize, Serialize};
use teelog_deliver::delivery::Entry;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Note<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    stream: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature_valid: Option<bool>,
}

/// Appends the spool line (with its newline) for `line`, received from a shipper, to `out`:
/// written in place, since batch lines are large.
pub fn encode(out: &mut Vec<u8>, stream: Option<&str>, signature_valid: Option<bool>, line: &[u8]) {
    let start = out.len();
    // A struct of a string and a bool always serialises.
    if serde_json::to_writer(&mut *out, &Note { stream, signature_valid }).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// Reads a spool line (without its newline) back; a line without a readable note, which the
/// gateway never writes, is handed on whole and unlabelled.
pub fn decode(spool_line: &[u8]) -> Entry<'_> {
    let mut notes = serde_json::Deserializer::from_slice(spool_line).into_iter::<Note<'_>>();
    match notes.next() {
        Some(Ok(note)) => Entry {
            line: &spool_line[notes.byte_offset()..],
            stream: note.stream,
            signature_valid: note.signature_valid,
        },
        _ => Entry { line: spool_line, stream: None, signature_valid: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_back_byte_for_byte_with_their_note() {
        let line = br#"{"v":1,"header":{"stream":"a\"}"},"records":[]}"#;
        for (stream, valid) in
            [(Some("pay/ments:1"), Some(true)), (None, Some(false)), (Some("x"), None), (None, None)]
        {
            let mut spooled = b"before\n".to_vec();
            encode(&mut spooled, stream, valid, line);
            let spooled = spooled.split_off(7);
            assert_eq!(spooled.last(), Some(&b'\n'));
            let entry = decode(&spooled[..spooled.len() - 1]);
            assert_eq!(entry.line, line);
            assert_eq!((entry.stream, entry.signature_valid), (stream, valid));
        }
        let mut spooled = Vec::new();
        encode(&mut spooled, Some("s"), Some(true), b"{}");
        assert_eq!(spooled, b"{\"stream\":\"s\",\"signature_valid\":true}{}\n");
        // Not a note the gateway wrote: the whole line goes on, unlabelled.
        let odd = decode(b"{\"other\":1}{}");
        assert_eq!((odd.line, odd.signature_valid), (&b"{\"other\":1}{}"[..], None));
        // A malformed line received from a shipper is kept as it came, whatever its bytes.
        let mut spooled = Vec::new();
        encode(&mut spooled, None, Some(false), b"\xff not json");
        assert_eq!(decode(&spooled[..spooled.len() - 1]).line, b"\xff not json");
    }
}
