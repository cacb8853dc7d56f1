//! Input records: one JSON object per NDJSON line, turned into the canonical bytes that are
//! hashed, signed and stored.

use std::borrow::Cow;

use crate::canon::{write_object, CanonError, Json};
use crate::timestamp::{parse_rfc3339, write_rfc3339, TimestampError, UnixNanos};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("{0}")]
    Json(#[from] CanonError),
    #[error("a record must be a JSON object")]
    NotAnObject,
    #[error("field \"ts\": {0}")]
    Timestamp(#[from] TimestampError),
    #[error("field \"ts\" must be an RFC 3339 string or integer Unix nanoseconds")]
    TimestampType,
    #[error("field {0:?} must be {1}")]
    FieldType(&'static str, &'static str),
}

/// The fields whose types are fixed; all other fields are free-form and kept as they are.
const TYPED_FIELDS: [(&str, &str); 3] = [
    ("level", "a string"),
    ("message", "a string"),
    ("attributes", "an object"),
];

/// Appends the canonical form of one input record to `out` and returns its timestamp.
///
/// `ts` becomes the canonical RFC 3339 spelling; `now` fills it in where it is absent. Nothing
/// is appended when the record is refused.
pub fn canonicalize_record(
    line: &[u8],
    now: UnixNanos,
    out: &mut Vec<u8>,
) -> Result<UnixNanos, RecordError> {
    let Json::Object(mut members) = Json::parse(line)? else {
        return Err(RecordError::NotAnObject);
    };
    let mut ts = None;
    for (name, value) in members.iter_mut() {
        if name == "ts" {
            let nanos = match value {
                Json::String(text) => parse_rfc3339(text)?,
                Json::Integer(n) => UnixNanos::try_from(*n)
                    .map_err(|_| TimestampError::OutOfRange(n.to_string()))?,
                _ => return Err(RecordError::TimestampType),
            };
            let mut spelled = Vec::with_capacity(30);
            write_rfc3339(nanos, &mut spelled);
            *value = Json::String(Cow::Owned(String::from_utf8(spelled).unwrap_or_default()));
            ts = Some(nanos);
        } else if let Some((field, expected)) = TYPED_FIELDS.iter().find(|(f, _)| name == f) {
            let ok = matches!(
                (*field, &*value),
                ("attributes", Json::Object(_)) | ("level" | "message", Json::String(_))
            );
            if !ok {
                return Err(RecordError::FieldType(field, expected));
            }
        }
    }
    let ts = match ts {
        Some(ts) => ts,
        None => {
            let mut spelled = Vec::with_capacity(30);
            write_rfc3339(now, &mut spelled);
            members.push((
                Cow::Borrowed("ts"),
                Json::String(Cow::Owned(String::from_utf8(spelled).unwrap_or_default())),
            ));
            now
        }
    };
    let start = out.len();
    if let Err(e) = write_object(&members, out) {
        out.truncate(start);
        return Err(e.into());
    }
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(line: &str, now: UnixNanos) -> Result<(String, UnixNanos), RecordError> {
        let mut out = Vec::new();
        let ts = canonicalize_record(line.as_bytes(), now, &mut out)?;
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
        let (text, ts) = canon(r#"{"message":"x"}"#, 5).unwrap();
        assert_eq!(
            text,
            r#"{"message":"x","ts":"1970-01-01T00:00:00.000000005Z"}"#
        );
        assert_eq!(ts, 5);
    }

    #[test]
    fn refuses_bad_records_without_writing() {
        let mut out = b"kept".to_vec();
        for bad in [
            "[1]",
            "{",
            r#"{"ts":true}"#,
            r#"{"ts":"noon"}"#,
            r#"{"message":5}"#,
            r#"{"attributes":"x"}"#,
            r#"{"a":1,"a":1}"#,
            r#"{"big":12345678901234567890}"#,
        ] {
            assert!(
                canonicalize_record(bad.as_bytes(), 0, &mut out).is_err(),
                "{bad}"
            );
        }
        assert_eq!(out, b"kept");
    }
}
