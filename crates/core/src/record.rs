//! Input records: one JSON object per NDJSON line, turned into the canonical bytes that are
//! hashed, signed and stored.

use crate::canon::{CanonError, Canonicalizer, RecordRules};
use crate::timestamp::UnixNanos;

/// Why a record was refused; the message names the field where there is one.
pub type RecordError = CanonError;

/// The fields whose types are fixed (by the first byte of their JSON value); all other fields
/// are free-form and kept as they are.
const TYPED_FIELDS: [(&str, u8, &str); 3] =
    [("level", b'"', "a string"), ("message", b'"', "a string"), ("attributes", b'{', "an object")];

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

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(line: &str, now: UnixNanos) -> Result<(String, UnixNanos), RecordError> {
        let mut out = Vec::new();
        let ts = canonicalize_record(&mut Canonicalizer::new(), line.as_bytes(), &|| now, &mut out)?;
        Ok((String::from_utf8(out).unwrap(), ts))
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
            (r#"{"big":12345678901234567890}"#, "send it as a string"),
        ] {
            let err = canonicalize_record(&mut canonicalizer, bad.as_bytes(), &|| 0, &mut out).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
        assert_eq!(out, b"kept");
    }
}
