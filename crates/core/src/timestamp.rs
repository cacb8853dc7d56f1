//! Timestamps: signed 64-bit nanoseconds since the Unix epoch (1677-09-21 .. 2262-04-11), written
//! as RFC 3339 in UTC with exactly nine fractional digits so that every instant has one spelling.
//!
//! Parsing and formatting are done here rather than by a date library because they run once per
//! record on the signing hot path; the calendar arithmetic is the proleptic Gregorian
//! days-from-civil algorithm.

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type UnixNanos = i64;

/// Why a timestamp was refused; each variant carries the text as given (lossily decoded when it
/// was not UTF-8).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    /// Not an RFC 3339 `date-time`, or a field out of its calendar range (month 13, 30 February,
    /// a leap second).
    #[error("{0:?} is not an RFC 3339 timestamp (e.g. 2026-12-02T16:37:38.5Z)")]
    NotRfc3339(String),
    /// A valid date-time that [`UnixNanos`] cannot hold (before 1677-09-21 or after 2262-04-11).
    #[error("{0} is outside the range of 64-bit Unix nanoseconds (1677..2262)")]
    OutOfRange(String),
}

/// Why a duration was refused by [`parse_duration`]; each variant carries the text as given.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// Not digits followed by one of the units `ms`, `s`, `m`, `h`, `d`.
    #[error("{0:?}: expected a number and ms, s, m, h or d, e.g. 10s")]
    Syntax(String),
    /// Zero, or more than [`UnixNanos`] can hold (about 292 years).
    #[error("{0:?}: out of range (more than zero and at most 292 years)")]
    OutOfRange(String),
}

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Parses an RFC 3339 `date-time` (`T` or `t`, `Z`, `z` or a numeric offset; fractions beyond
/// nanoseconds are truncated). Leap seconds (`:60`) have no Unix time and are refused.
pub fn parse_rfc3339(text: &str) -> Result<UnixNanos, TimestampError> {
    parse_rfc3339_bytes(text.as_bytes())
}

/// [`parse_rfc3339`] of bytes, which need not be UTF-8 (anything else is refused anyway).
pub fn parse_rfc3339_bytes(b: &[u8]) -> Result<UnixNanos, TimestampError> {
    let bad = || TimestampError::NotRfc3339(String::from_utf8_lossy(b).into_owned());
    let fields = canonical_fields(b).or_else(|| general_fields(b)).ok_or_else(bad)?;
    let Fields { year, month, day, hour, minute, second, nanos, offset_seconds } = fields;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second)
        - offset_seconds;
    let total = i128::from(seconds) * NANOS_PER_SEC + i128::from(nanos);
    UnixNanos::try_from(total)
        .map_err(|_| TimestampError::OutOfRange(String::from_utf8_lossy(b).into_owned()))
}

/// A date-time as written, before its ranges are checked.
struct Fields {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    offset_seconds: i64,
}

/// The digits of `b[at..at + n]` as a number, if they are all digits.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    b.get(at..at + n)?
        .iter()
        .try_fold(0u32, |acc, &d| d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0')))
}

/// Whether `b` is laid out as the one spelling [`write_rfc3339`] produces,
/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (its digits aside): a timestamp that parses and has this
/// layout is already canonical.
pub(crate) fn is_canonical_spelling(b: &[u8]) -> bool {
    b.len() == 30
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[29] == b'Z'
}

/// The fields of a timestamp in the canonical spelling, read without the general grammar's
/// branches: most records carry it.
fn canonical_fields(b: &[u8]) -> Option<Fields> {
    if !is_canonical_spelling(b) {
        return None;
    }
    Some(Fields {
        year: i64::from(digits(b, 0, 4)?),
        month: digits(b, 5, 2)?,
        day: digits(b, 8, 2)?,
        hour: digits(b, 11, 2)?,
        minute: digits(b, 14, 2)?,
        second: digits(b, 17, 2)?,
        nanos: digits(b, 20, 9)?,
        offset_seconds: 0,
    })
}

/// The fields of any RFC 3339 `date-time`.
fn general_fields(b: &[u8]) -> Option<Fields> {
    let expect = |at: usize, options: &[u8]| b.get(at).is_some_and(|c| options.contains(c)).then_some(());
    let year = i64::from(digits(b, 0, 4)?);
    expect(4, b"-")?;
    let month = digits(b, 5, 2)?;
    expect(7, b"-")?;
    let day = digits(b, 8, 2)?;
    expect(10, b"Tt")?;
    let hour = digits(b, 11, 2)?;
    expect(13, b":")?;
    let minute = digits(b, 14, 2)?;
    expect(16, b":")?;
    let second = digits(b, 17, 2)?;
    let mut at = 19;
    let mut nanos = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanos = nanos * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return None;
        }
        for _ in (at - start)..9 {
            nanos *= 10;
        }
    }
    let offset_seconds: i64 = match b.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, at + 1, 2)?;
            expect(at + 3, b":")?;
            let om = digits(b, at + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            at += 6;
            let s = i64::from(oh * 3600 + om * 60);
            if sign == b'-' {
                -s
            } else {
                s
            }
        }
        _ => return None,
    };
    (at == b.len()).then_some(Fields { year, month, day, hour, minute, second, nanos, offset_seconds })
}

/// Appends the canonical spelling, e.g. `2026-12-02T16:37:38.500000000Z`.
pub fn write_rfc3339(nanos: UnixNanos, out: &mut Vec<u8>) {
    let seconds = nanos.div_euclid(NANOS_PER_SEC as i64);
    let fraction = nanos.rem_euclid(NANOS_PER_SEC as i64) as u32;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400) as u32;
    // i64 nanoseconds span years 1677..2262: always four digits.
    write_padded(out, year as u32, 4);
    for (separator, value, width) in [
        (b'-', month, 2),
        (b'-', day, 2),
        (b'T', of_day / 3600, 2),
        (b':', of_day / 60 % 60, 2),
        (b':', of_day % 60, 2),
        (b'.', fraction, 9),
    ] {
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

/// A duration such as `250ms`, `30s`, `10m`, `2h` or `1d`, as nanoseconds (more than zero).
pub fn parse_duration(text: &str) -> Result<UnixNanos, DurationError> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let syntax = || DurationError::Syntax(text.to_string());
    let nanos: i64 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return Err(syntax()),
    };
    // Digits only, so the one failure left is a number too long for i64.
    let n: i64 = match number.parse() {
        Ok(n) => n,
        Err(_) if number.is_empty() => return Err(syntax()),
        Err(_) => return Err(DurationError::OutOfRange(text.to_string())),
    };
    n.checked_mul(nanos).filter(|&ns| ns > 0).ok_or_else(|| DurationError::OutOfRange(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_normalises_offsets() {
        let t = parse_rfc3339("2026-12-02T17:37:38.5+01:00").unwrap();
        assert_eq!(format_rfc3339(t), "2026-12-02T16:37:38.500000000Z");
        assert_eq!(parse_rfc3339(&format_rfc3339(t)).unwrap(), t);
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(format_rfc3339(i64::MAX), "2262-04-11T23:47:16.854775807Z");
        assert_eq!(format_rfc3339(i64::MIN), "1677-09-21T00:12:43.145224192Z");
        assert_eq!(parse_rfc3339("2000-02-29t00:00:00.1234567899z").unwrap(), 951_782_400_123_456_789);
        assert_eq!(parse_rfc3339("1969-12-31T19:00:00-05:00").unwrap(), 0);
    }

    #[test]
    fn rejects_junk_and_out_of_range() {
        for junk in [
            "yesterday",
            "2026-12-02",
            "2026-12-02T16:37:38",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-12-02T24:00:00Z",
            "2026-12-02T16:37:60Z",
            "2026-12-02T16:37:38.Z",
            "2026-12-02T16:37:38Z ",
            "2026-12-02 16:37:38Z",
            "2026-12-02T16:37:38+0100",
            "٢٠٢٦-12-02T16:37:38Z",
            // The canonical layout, with its ranges checked all the same.
            "2026-13-01T00:00:00.000000000Z",
            "2026-02-29T00:00:00.000000000Z",
            "2026-12-02T24:00:00.000000000Z",
            "2026-12-02T16:60:00.000000000Z",
            "2026-12-02T16:37:60.000000000Z",
            "2026-12-00T16:37:38.000000000Z",
            "2026-12-02T16:37:38.00000000aZ",
            "2026-12-02T16:37:38.000000000z ",
        ] {
            assert!(matches!(parse_rfc3339(junk), Err(TimestampError::NotRfc3339(_))), "{junk}");
        }
        assert!(matches!(parse_rfc3339("2300-01-01T00:00:00Z"), Err(TimestampError::OutOfRange(_))));
    }

    proptest! {
        /// Agrees with the `time` crate's RFC 3339 formatting on every instant.
        #[test]
        fn matches_an_independent_calendar(nanos in any::<i64>()) {
            let reference = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).unwrap();
            let ours = format_rfc3339(nanos);
            let theirs = time::OffsetDateTime::parse(&ours, &time::format_description::well_known::Rfc3339).unwrap();
            prop_assert_eq!(theirs, reference);
            prop_assert_eq!(parse_rfc3339(&ours).unwrap(), nanos);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000_000_000));
        for bad in ["", "10", "s", "1w", "-1s", "1.5s", "10 s"] {
            assert_eq!(parse_duration(bad), Err(DurationError::Syntax(bad.into())), "{bad}");
        }
        for big in ["0s", "99999999999d", "99999999999999999999ms"] {
            assert_eq!(parse_duration(big), Err(DurationError::OutOfRange(big.into())), "{big}");
        }
    }
}
