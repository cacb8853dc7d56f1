//! The push request body and what Loki's answer to it means (sans-IO).

use std::time::Duration;

use prost::Message;
use teelog_core::timestamp::{parse_rfc3339, UnixNanos};

use crate::layout::LayoutError;
use crate::proto::PushRequest;

/// The push API's path, under Loki's base URL.
pub const PUSH_PATH: &str = "/loki/api/v1/push";
/// Loki reads a protobuf body as a raw snappy block; no `Content-Encoding` is sent with it.
pub const PUSH_CONTENT_TYPE: &str = "application/x-protobuf";

/// The body of a push: the protobuf encoding, compressed as one raw (unframed) snappy block.
pub fn encode_push(request: &PushRequest) -> Result<Vec<u8>, LayoutError> {
    let encoded = request.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&encoded).map_err(|_| LayoutError::PushTooLarge(encoded.len()))
}

/// When Loki asked to be retried (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// A number of seconds from the answer.
    Seconds(u64),
    /// An HTTP date, as Unix nanoseconds.
    At(UnixNanos),
}

impl RetryAfter {
    /// Reads delta-seconds or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`); anything else,
    /// including the obsolete date forms, is ignored.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            return value.parse().ok().map(RetryAfter::Seconds);
        }
        let parts: Vec<&str> = value.split(' ').collect();
        let [_weekday, day, month, year, time, "GMT"] = parts.as_slice() else {
            return None;
        };
        const MONTHS: [&str; 12] =
            ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let month = MONTHS.iter().position(|m| m == month)? + 1;
        parse_rfc3339(&format!("{year}-{month:02}-{day}T{time}Z")).ok().map(RetryAfter::At)
    }

    /// How long to wait from `now`; a date in the past means now.
    pub fn delay(self, now: UnixNanos) -> Duration {
        match self {
            RetryAfter::Seconds(s) => Duration::from_secs(s),
            RetryAfter::At(at) => Duration::from_nanos(u64::try_from(at.saturating_sub(now)).unwrap_or(0)),
        }
    }
}

/// What became of a push that Loki answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Every entry was stored.
    Accepted,
    /// Loki refused some or all entries (400) and stored the rest; its message names the refused
    /// entries and why. Sending the same body again would be refused again: do not retry.
    Rejected {
        /// Loki's message.
        message: String,
    },
    /// Nothing can be assumed stored; send the same body again later (it is idempotent: Loki
    /// de-duplicates entries it already has).
    Retry {
        /// The HTTP status (429, 5xx), or `None` when no answer came.
        status: Option<u16>,
        /// When Loki asked to be tried again, if it said.
        retry_after: Option<RetryAfter>,
        /// What happened, for the log.
        reason: String,
    },
}

/// A push that will not succeed by being repeated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Loki refused the push as a whole (authentication, limits, a body it cannot read).
    #[error("Loki refused the push with HTTP {status}: {message} ({})", refusal_hint(*status))]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Loki's message.
        message: String,
    },
    /// A status Loki's push API does not answer with (e.g. a proxy's redirect).
    #[error("Loki answered the push with HTTP {status}, which a push never gets: {message}")]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        message: String,
    },
}

fn refusal_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "check the bearer token and the tenant (X-Scope-OrgID)",
        404 => "check the base URL: the push goes to <base>/loki/api/v1/push",
        413 => "the body is too large for Loki or a proxy in front of it: push fewer batches at a time",
        _ => "the request itself is refused; repeating it will not help",
    }
}

/// The body of an answer as text for a message: lossy (it is only shown), trimmed.
pub(crate) fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "(no message)".into()
    } else {
        text.to_string()
    }
}

/// Classifies Loki's answer to a push: `status`, the `Retry-After` header if any, the body.
pub fn classify_push_response(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Result<PushOutcome, PushError> {
    match status {
        200 | 204 => Ok(PushOutcome::Accepted),
        400 => Ok(PushOutcome::Rejected { message: body_text(body) }),
        429 | 500..=599 => Ok(PushOutcome::Retry {
            status: Some(status),
            retry_after: retry_after.and_then(RetryAfter::parse),
            reason: body_text(body),
        }),
        // Any other 2xx stored nothing: Loki answers blocked ingestion (block_ingestion_until)
        // with block_ingestion_status_code, 260 by default.
        201..=299 => Ok(PushOutcome::Retry {
            status: Some(status),
            retry_after: retry_after.and_then(RetryAfter::parse),
            reason: format!("Loki is not ingesting now (blocked ingestion?): {}", body_text(body)),
        }),
        401..=499 => Err(PushError::Refused { status, message: body_text(body) }),
        _ => Err(PushError::Unexpected { status, message: body_text(body) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{EntryAdapter, StreamAdapter, Timestamp};

    #[test]
    fn body_is_raw_snappy_of_the_protobuf() {
        let request = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{job="teelog"}"#.into(),
                entries: (0..50)
                    .map(|i| EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(i)),
                        line: format!("{{\"message\":\"line {i} repeats repeats repeats\"}}"),
                        structured_metadata: vec![],
                    })
                    .collect(),
                hash: 0,
            }],
        };
        let body = encode_push(&request).unwrap();
        let encoded = request.encode_to_vec();
        // A raw block starts with the uncompressed length; the framed format would start with
        // its stream identifier chunk (0xff 0x06 0x00 0x00 "sNaPpY").
        assert_eq!(snap::raw::decompress_len(&body).unwrap(), encoded.len());
        assert_ne!(body[0], 0xff);
        assert!(body.len() < encoded.len());
        let decoded = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(PushRequest::decode(decoded.as_slice()).unwrap(), request);
    }

    #[test]
    fn classifies_answers() {
        assert_eq!(classify_push_response(204, None, b""), Ok(PushOutcome::Accepted));
        assert_eq!(classify_push_response(200, None, b""), Ok(PushOutcome::Accepted));
        let partial =
            b"entry for stream '{job=\"teelog\"}' has timestamp too old, total ignored: 1 out of 3\n";
        assert_eq!(
            classify_push_response(400, None, partial),
            Ok(PushOutcome::Rejected {
                message:
                    "entry for stream '{job=\"teelog\"}' has timestamp too old, total ignored: 1 out of 3"
                        .into()
            })
        );
        assert_eq!(
            classify_push_response(429, Some("7"), b"ingestion rate limit exceeded"),
            Ok(PushOutcome::Retry {
                status: Some(429),
                retry_after: Some(RetryAfter::Seconds(7)),
                reason: "ingestion rate limit exceeded".into()
            })
        );
        for status in [500, 502, 503, 504] {
            assert!(matches!(
                classify_push_response(status, None, b""),
                Ok(PushOutcome::Retry { status: Some(s), retry_after: None, .. }) if s == status
            ));
        }
        assert!(matches!(classify_push_response(260, None, b"blocked"), Ok(PushOutcome::Retry { .. })));
        for status in [401, 403, 404, 413, 422] {
            let err = classify_push_response(status, None, b"no\n").unwrap_err();
            assert_eq!(err, PushError::Refused { status, message: "no".into() });
        }
        let err = classify_push_response(401, None, b"").unwrap_err().to_string();
        assert!(err.contains("HTTP 401: (no message)") && err.contains("bearer token"), "{err}");
        assert!(matches!(
            classify_push_response(302, None, b""),
            Err(PushError::Unexpected { status: 302, .. })
        ));
        assert!(matches!(classify_push_response(100, None, b""), Err(PushError::Unexpected { .. })));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(RetryAfter::parse(" 120 "), Some(RetryAfter::Seconds(120)));
        let at = RetryAfter::parse("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(at, RetryAfter::At(784_111_777_000_000_000));
        assert_eq!(at.delay(784_111_770_000_000_000), Duration::from_secs(7));
        assert_eq!(at.delay(784_111_780_000_000_000), Duration::ZERO);
        assert_eq!(RetryAfter::Seconds(3).delay(0), Duration::from_secs(3));
        for junk in
            ["", "soon", "-1", "1.5", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT"]
        {
            assert_eq!(RetryAfter::parse(junk), None, "{junk:?}");
        }
        assert_eq!(RetryAfter::parse("99999999999999999999999"), None);
    }
}
