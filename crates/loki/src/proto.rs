//! The messages of Loki's push API (`package logproto`), declared by hand with prost so that no
//! build script or protoc is needed.
//!
//! Checked against `pkg/push/push.proto` of grafana/loki (the stored copy at commit
//! 01a3f3fa0e17d8196702e93c409d7e1bfc91bc02, the Loki 3 line), and against the hand-written
//! marshalling in `pkg/push/types.go` (`Stream`: labels=1, entries=2, hash=3; `Entry`:
//! timestamp=1, line=2, structuredMetadata=3, parsed=4; `LabelAdapter`: name=1, value=2), which
//! is what Loki actually decodes. Before Loki 3 field 3 of an entry was a single `labels` string;
//! the wire type is the same, which is why a Loki 2.x distributor would misread structured
//! metadata rather than refuse it.
//!
//! Left out on purpose: `PushRequest.format` (2), which Loki sets internally for OTLP, and
//! `EntryAdapter.parsed` (4), which only appears in query responses.

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// The streams pushed, each with its entries.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: one stream (one label set) and its entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// The label set in Prometheus text form, e.g. `{job="teelog", teelog_kind="batch"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// Its entries, in time order.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Loki computes the hash itself; clients leave it 0 (not sent).
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`: one log line.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    /// When the entry is stored (Loki requires one).
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The line, stored byte for byte.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Name-value pairs stored with the entry but not indexed (Loki 3).
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`: one structured metadata pair.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LabelPairAdapter {
    /// The name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`: `nanos` is always in 0..1e9, also before 1970.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    /// Whole seconds since the Unix epoch (negative before 1970).
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds after `seconds`.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// The instant `nanos` nanoseconds after the Unix epoch.
    pub fn from_unix_nanos(nanos: i64) -> Self {
        // rem_euclid keeps nanos non-negative, as the well-known type requires.
        Self { seconds: nanos.div_euclid(1_000_000_000), nanos: nanos.rem_euclid(1_000_000_000) as i32 }
    }

    /// The instant as Unix nanoseconds, or None outside the i64 range.
    pub fn to_unix_nanos(self) -> Option<i64> {
        i64::try_from(i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The bytes below are worked out by hand from the .proto field numbers and wire types
    /// (tag byte = field << 3 | wire type), so a wrong tag in a derive fails here.
    #[test]
    fn field_numbers_match_a_hand_encoded_golden() {
        let request = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{a="b"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp { seconds: 1, nanos: 2 }),
                    line: "hi".into(),
                    structured_metadata: vec![LabelPairAdapter { name: "k".into(), value: "v".into() }],
                }],
                hash: 300,
            }],
        };
        #[rustfmt::skip]
        let golden: &[u8] = &[
            0x0a, 0x20,                         // PushRequest.streams (1, len) 32 bytes
              0x0a, 0x07, b'{', b'a', b'=', b'"', b'b', b'"', b'}', // StreamAdapter.labels (1, len)
              0x12, 0x12,                       // StreamAdapter.entries (2, len) 18 bytes
                0x0a, 0x04,                     // EntryAdapter.timestamp (1, len)
                  0x08, 0x01,                   // Timestamp.seconds (1, varint) = 1
                  0x10, 0x02,                   // Timestamp.nanos (2, varint) = 2
                0x12, 0x02, b'h', b'i',         // EntryAdapter.line (2, len)
                0x1a, 0x06,                     // EntryAdapter.structuredMetadata (3, len)
                  0x0a, 0x01, b'k',             // LabelPairAdapter.name (1, len)
                  0x12, 0x01, b'v',             // LabelPairAdapter.value (2, len)
              0x18, 0xac, 0x02,                 // StreamAdapter.hash (3, varint) = 300
        ];
        assert_eq!(request.encode_to_vec(), golden);
        assert_eq!(PushRequest::decode(golden).unwrap(), request);
    }

    #[test]
    fn timestamps_before_1970_keep_nanos_positive() {
        let t = Timestamp::from_unix_nanos(-1);
        assert_eq!(t, Timestamp { seconds: -1, nanos: 999_999_999 });
        assert_eq!(t.to_unix_nanos(), Some(-1));
        for n in [0, 1, 1_796_202_000_123_456_789, i64::MAX, i64::MIN] {
            assert_eq!(Timestamp::from_unix_nanos(n).to_unix_nanos(), Some(n));
        }
    }
}
