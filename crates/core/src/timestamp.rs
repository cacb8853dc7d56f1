//! Timestamps: signed 64-bit nanoseconds since the Unix epoch (1677-09-21 .. 2262-04-11), written
//! as RFC 3339 in UTC with exactly nine fractional digits so that every instant has one spelling.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type UnixNanos = i64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("{0:?} is not an RFC 3339 timestamp (e.g. 2026-12-02T16:37:38.5Z)")]
    NotRfc3339(String),
    #[error("{0} is outside the range of 64-bit Unix nanoseconds (1677..2262)")]
    OutOfRange(String),
}

/// Parses an RFC 3339 timestamp with any offset.
pub fn parse_rfc3339(text: &str) -> Result<UnixNanos, TimestampError> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| TimestampError::NotRfc3339(text.to_string()))?;
    UnixNanos::try_from(parsed.unix_timestamp_nanos())
        .map_err(|_| TimestampError::OutOfRange(text.to_string()))
}

/// Appends the canonical spelling, e.g. `2026-12-02T16:37:38.500000000Z`.
pub fn write_rfc3339(nanos: UnixNanos, out: &mut Vec<u8>) {
    // Every i64 of nanoseconds is a valid OffsetDateTime, so this cannot fail.
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    write_padded(out, t.year().unsigned_abs(), 4);
    let fields = [
        (b'-', u32::from(u8::from(t.month())), 2),
        (b'-', u32::from(t.day()), 2),
        (b'T', u32::from(t.hour()), 2),
        (b':', u32::from(t.minute()), 2),
        (b':', u32::from(t.second()), 2),
        (b'.', t.nanosecond(), 9),
    ];
    for (separator, value, width) in fields {
        out.push(separator);
        write_padded(out, value, width);
    }
    out.push(b'Z');
}

fn write_padded(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let mut digits = [b'0'; 9];
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// The canonical spelling as a `String`.
pub fn format_rfc3339(nanos: UnixNanos) -> String {
    let mut out = Vec::with_capacity(30);
    write_rfc3339(nanos, &mut out);
    // Only ASCII digits and separators were written.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_normalises_offsets() {
        let t = parse_rfc3339("2026-12-02T17:37:38.5+01:00").unwrap();
        assert_eq!(format_rfc3339(t), "2026-12-02T16:37:38.500000000Z");
        assert_eq!(parse_rfc3339(&format_rfc3339(t)).unwrap(), t);
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(format_rfc3339(i64::MAX), "2262-04-11T23:47:16.854775807Z");
    }

    #[test]
    fn rejects_junk_and_out_of_range() {
        assert!(matches!(
            parse_rfc3339("yesterday"),
            Err(TimestampError::NotRfc3339(_))
        ));
        assert!(matches!(
            parse_rfc3339("2026-12-02"),
            Err(TimestampError::NotRfc3339(_))
        ));
        assert!(matches!(
            parse_rfc3339("2300-01-01T00:00:00Z"),
            Err(TimestampError::OutOfRange(_))
        ));
    }
}
