//! Input records: one JSON object per NDJSON line, turned into the canonical bytes that are
//! hashed, signed and stored.

use crate::canon::{write_string, CanonError, Canonicalizer, RecordRules};
use crate::merkle::Digest;
use crate::timestamp::{write_rfc3339, UnixNanos};

/// Why a record was refused; the message names the field where there is one.
pub type RecordError = CanonError;

/// The fields whose types are fixed (by the first byte of their JSON value); all other fields
/// are free-form and kept as they are.
const TYPED_FIELDS: [(&str, u8, &str); 3] =
    [("level", b'"', "a string"), ("message", b'"', "a string"), ("attributes", b'{', "an object")];

/// Whether a line is blank: empty, or JSON's white space only (space, tab, carriage return),
/// which NDJSON readers skip. Anything else, a form feed or vertical tab included, is a line to
/// sign, or to refuse with a notice, or (to a verifier) to report.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// Appends the canonical form of one input record to `out` and returns its timestamp.
///
/// `ts` becomes the canonical RFC 3339 spelling (it may be given as RFC 3339 text with any
/// offset, or as integer Unix nanoseconds); `now()` fills it in where it is absent. Nothing is
/// appended when the record is refused.
pub fn canonicalize_record(
    canon: &mut Canonicalizer,
    line: &[u8],
    now: &dyn Fn() -> UnixNanos,
    out: &mut Vec<u8>,
) -> Result<UnixNanos, RecordError> {
    canon.record(line, out, &RecordRules { now, typed: &TYPED_FIELDS })
}

/// Bytes of a refusal's reason and source kept in its notice: a reason can quote the input (a
/// member name), and a notice must stay small.
const MAX_NOTICE_TEXT: usize = 256;

/// An input the signer could not sign as a record, as its notice describes it.
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    /// Where it came from: `stdin:17`, `otlp-http record 3`.
    pub source: &'a str,
    /// Why it was refused, in words (cut to a bounded length in the notice).
    pub reason: &'a str,
    /// Its length and SHA-256 as received, so that a copy kept elsewhere can be matched.
    pub bytes: u64,
    /// The SHA-256 of the input's bytes as received.
    pub sha256: Digest,
}

/// Appends the notice record that stands in a batch for a refused input (docs/FORMAT.md §2.4),
/// already in canonical form (its members are written in sorted order), with `ts` as its time.
pub fn refusal_notice(refused: &Refused<'_>, ts: UnixNanos, out: &mut Vec<u8>) {
    let source = clip(refused.source);
    let reason = clip(refused.reason);
    out.extend_from_slice(b"{\"level\":\"WARN\",\"message\":");
    write_string(&format!("teelog refused a record from {source}: {reason}"), out);
    out.extend_from_slice(b",\"refused_bytes\":");
    out.extend_from_slice(itoa::Buffer::new().format(refused.bytes).as_bytes());
    out.extend_from_slice(b",\"refused_reason\":");
    write_string(&reason, out);
    out.extend_from_slice(b",\"refused_sha256\":\"");
    out.extend_from_slice(hex::encode(refused.sha256).as_bytes());
    out.extend_from_slice(b"\",\"refused_source\":");
    write_string(&source, out);
    out.extend_from_slice(b",\"teelog_notice\":\"record_refused\",\"ts\":\"");
    write_rfc3339(ts, out);
    out.extend_from_slice(b"\"}");
}

/// `text` cut to at most [`MAX_NOTICE_TEXT`] bytes, at a character boundary.
fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_NOTICE_TEXT {
        return text.into();
    }
    let end = (0..=MAX_NOTICE_TEXT).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}…", &text[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(line: &str, now: UnixNanos) -> Result<(String, UnixNanos), RecordError> {
        let mut out = Vec::new();
        let ts = canonicalize_record(&mut Canonicalizer::new(), line.as_bytes(), &|| now, &mut out)?;
        Ok((String::from_utf8(out).unwrap(), ts))
    }

    #[test]
    fn only_json_white_space_is_blank() {
        for blank in ["", " ", "\t \r", "   \r"] {
            assert!(is_blank(blank.as_bytes()), "{blank:?}");
        }
        // Not JSON's white space: a line to refuse with a notice, not to skip unseen.
        for not_blank in ["\x0c", "\x0b", " \x0c ", "{}"] {
            assert!(!is_blank(not_blank.as_bytes()), "{not_blank:?}");
            assert!(canon(not_blank, 0).is_err() || not_blank == "{}");
        }
    }

    #[test]
    fn normalises_ts_and_keeps_every_field() {
        let (text, ts) = canon(
            r#"{"message":"hi","ts":"2026-12-02T17:00:00+01:00","level":"info","extra":[1,2],"attributes":{"b":1,"a":2}}"#,
            0,
        )
        .unwrap();
        assert_eq!(
            text,
            r#"{"attributes":{"a":2,"b":1},"extra":[1,2],"level":"info","message":"hi","ts":"2026-12-02T16:00:00.000000000Z"}"#
        );
        assert_eq!(ts, 1_796_227_200_000_000_000);
    }

    #[test]
    fn integer_nanoseconds_and_missing_ts() {
        let (text, ts) = canon(r#"{"ts":1796227200000000001}"#, 0).unwrap();
        assert_eq!(text, r#"{"ts":"2026-12-02T16:00:00.000000001Z"}"#);
        assert_eq!(ts, 1_796_227_200_000_000_001);
        let (text, ts) = canon(r#"{"message":"x","z":{"ts":1}}"#, 5).unwrap();
        assert_eq!(text, r#"{"message":"x","ts":"1970-01-01T00:00:00.000000005Z","z":{"ts":1}}"#);
        assert_eq!(ts, 5);
    }

    #[test]
    fn integers_beyond_2_pow_53_become_strings() {
        let (text, _) = canon(
            r#"{"ts":0,"a":[12345678901234567890,-9007199254740993,9007199254740992,33685569120962456,1e21]}"#,
            0,
        )
        .unwrap();
        assert_eq!(
            text,
            r#"{"a":["12345678901234567890","-9007199254740993",9007199254740992,"33685569120962456",1e+21],"ts":"1970-01-01T00:00:00.000000000Z"}"#
        );
        // Nested in objects too, and a number's string is not taken for `ts`.
        let (text, _) = canon(r#"{"ts":1,"o":{"big":-100000000000000000000}}"#, 0).unwrap();
        assert_eq!(text, r#"{"o":{"big":"-100000000000000000000"},"ts":"1970-01-01T00:00:00.000000001Z"}"#);
    }

    #[test]
    fn a_refusal_notice_is_a_canonical_record() {
        let refused = Refused {
            source: "stdin:7",
            reason: &format!("duplicate member name \"{}\"\n", "\u{e9}".repeat(200)),
            bytes: 12,
            sha256: [0xab; 32],
        };
        let mut notice = Vec::new();
        refusal_notice(&refused, 1_796_227_200_000_000_000, &mut notice);
        let mut again = Vec::new();
        let ts = canonicalize_record(&mut Canonicalizer::new(), &notice, &|| 0, &mut again).unwrap();
        assert_eq!(String::from_utf8(again).unwrap(), String::from_utf8(notice.clone()).unwrap());
        assert_eq!(ts, 1_796_227_200_000_000_000);
        let value: serde_json::Value = serde_json::from_slice(&notice).unwrap();
        assert_eq!(value["teelog_notice"], "record_refused");
        assert_eq!(value["refused_bytes"], 12);
        assert_eq!(value["refused_sha256"], "ab".repeat(32));
        assert_eq!(value["refused_source"], "stdin:7");
        let reason = value["refused_reason"].as_str().unwrap();
        // Cut at a character boundary, and said to be cut.
        assert!(reason.len() <= MAX_NOTICE_TEXT + 3 && reason.ends_with('…'), "{reason}");
        assert!(value["message"]
            .as_str()
            .unwrap()
            .starts_with("teelog refused a record from stdin:7: duplicate"));
    }

    #[test]
    fn refuses_bad_records_without_writing() {
        let mut out = b"kept".to_vec();
        let mut canonicalizer = Canonicalizer::new();
        for (bad, why) in [
            ("[1]", "must be a JSON object"),
            ("{", "at byte 1"),
            (r#"{"ts":true}"#, "field \"ts\" must be"),
            (r#"{"ts":"noon"}"#, "not an RFC 3339 timestamp"),
            (r#"{"ts":1.5}"#, "field \"ts\" must be"),
            (r#"{"message":5}"#, "field \"message\" must be a string"),
            (r#"{"attributes":"x"}"#, "field \"attributes\" must be an object"),
            (r#"{"a":1,"a":1}"#, "duplicate member name \"a\""),
            (r#"{"ts":1,"ts":2}"#, "duplicate member name \"ts\""),
        ] {
            let err = canonicalize_record(&mut canonicalizer, bad.as_bytes(), &|| 0, &mut out).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
        assert_eq!(out, b"kept");
    }
}
