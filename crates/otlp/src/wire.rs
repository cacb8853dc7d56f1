//! An OTLP/protobuf request body looked at on the wire, without decoding it: how much memory
//! decoding it takes at most, and which of its log records do not decode, so that one bad record
//! is refused alone rather than with the whole request.

use std::collections::HashSet;
use std::mem::size_of;

use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};
use prost::Message;

use crate::common::{AnyValue, EntityRef, KeyValue};
use crate::logs::{LogRecord, ResourceLogs, ScopeLogs};
use crate::OtlpError;

/// Nesting deeper than prost decodes (its recursion limit) is refused by the walk too.
const MAX_DEPTH: u32 = 100;

/// The message types of a logs request, for the walk.
#[derive(Clone, Copy)]
enum Kind {
    Request,
    ResourceLogs,
    Resource,
    ScopeLogs,
    Scope,
    LogRecord,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    EntityRef,
}

/// What a length-delimited field of a message holds.
enum Field {
    /// A message, and whether the field is repeated (each element then lives in a `Vec`).
    Message(Kind, bool),
    /// A repeated string (each element a `String` in a `Vec`).
    Strings,
    /// A string or bytes held inline, whose content the body's length already counts.
    Inline,
}

impl Kind {
    fn field(self, tag: u32) -> Field {
        use Field::{Inline, Message, Strings};
        match (self, tag) {
            (Kind::Request, 1) => Message(Kind::ResourceLogs, true),
            (Kind::ResourceLogs, 1) => Message(Kind::Resource, false),
            (Kind::ResourceLogs, 2) => Message(Kind::ScopeLogs, true),
            (Kind::Resource, 1) | (Kind::Scope, 3) | (Kind::LogRecord, 6) | (Kind::KeyValueList, 1) => {
                Message(Kind::KeyValue, true)
            }
            (Kind::Resource, 3) => Message(Kind::EntityRef, true),
            (Kind::ScopeLogs, 1) => Message(Kind::Scope, false),
            (Kind::ScopeLogs, 2) => Message(Kind::LogRecord, true),
            (Kind::LogRecord, 5) | (Kind::KeyValue, 2) => Message(Kind::AnyValue, false),
            (Kind::AnyValue, 5) => Message(Kind::ArrayValue, false),
            (Kind::AnyValue, 6) => Message(Kind::KeyValueList, false),
            (Kind::ArrayValue, 1) => Message(Kind::AnyValue, true),
            (Kind::EntityRef, 3 | 4) => Strings,
            _ => Inline,
        }
    }

    /// The size of one decoded element of this kind in a `Vec`.
    fn size(self) -> usize {
        match self {
            Kind::Request => 0,
            Kind::ResourceLogs => size_of::<ResourceLogs>(),
            Kind::ScopeLogs => size_of::<ScopeLogs>(),
            Kind::LogRecord => size_of::<LogRecord>(),
            Kind::KeyValue => size_of::<KeyValue>(),
            Kind::AnyValue => size_of::<AnyValue>(),
            Kind::EntityRef => size_of::<EntityRef>(),
            // Held inline in their parent, never as elements of a Vec.
            Kind::Resource | Kind::Scope | Kind::ArrayValue | Kind::KeyValueList => 0,
        }
    }
}

/// One field of a message: its tag, the bytes of the whole field (key included) and, for a
/// length-delimited one, those of its value; for another, its wire type and number (a varint, or
/// the little-endian value of a fixed32 or fixed64).
pub(crate) struct Raw<'a> {
    pub(crate) tag: u32,
    whole: &'a [u8],
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) wire: WireType,
    pub(crate) number: u64,
}

/// The fields of the message in `bytes`, in order; an error (and the end) for bytes that are
/// not protobuf.
pub(crate) fn fields(bytes: &[u8]) -> Fields<'_> {
    Fields { rest: bytes }
}

/// See [`fields`].
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Raw<'a>, OtlpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = next_field(&mut self.rest);
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

fn next_field<'a>(rest: &mut &'a [u8]) -> Result<Raw<'a>, OtlpError> {
    let start: &'a [u8] = rest;
    let (tag, wire) = decode_key(rest)?;
    let little_endian = |bytes: &[u8]| bytes.iter().rev().fold(0u64, |n, &b| n << 8 | u64::from(b));
    let (value, number) = match wire {
        WireType::Varint => (None, decode_varint(rest)?),
        WireType::SixtyFourBit => (None, little_endian(skip(rest, 8)?)),
        WireType::ThirtyTwoBit => (None, little_endian(skip(rest, 4)?)),
        WireType::LengthDelimited => {
            let len = decode_varint(rest)?;
            (Some(skip(rest, len)?), 0)
        }
        WireType::StartGroup | WireType::EndGroup => {
            return Err(OtlpError::Wire("groups are not part of OTLP"))
        }
    };
    Ok(Raw { tag, whole: &start[..start.len() - rest.len()], value, wire, number })
}

/// The next `n` bytes, taken.
fn skip<'a>(rest: &mut &'a [u8], n: u64) -> Result<&'a [u8], OtlpError> {
    let n = usize::try_from(n).ok().filter(|&n| n <= rest.len());
    let n = n.ok_or(OtlpError::Wire("a field runs past the end of its message"))?;
    let (value, after) = rest.split_at(n);
    *rest = after;
    Ok(value)
}

/// An upper bound on the memory that decoding an `ExportLogsServiceRequest` from `body` takes:
/// the body's length (every string and bytes field is at most that) and, for each element of a
/// repeated field, twice its size (a `Vec` may hold twice the room it uses). A body of many empty
/// messages decodes to tens of times its size; this says how many before any is built.
pub fn decoded_bound(body: &[u8]) -> Result<usize, OtlpError> {
    let mut total = body.len();
    walk(body, Kind::Request, 0, &mut total)?;
    Ok(total)
}

fn walk(bytes: &[u8], kind: Kind, depth: u32, total: &mut usize) -> Result<(), OtlpError> {
    if depth > MAX_DEPTH {
        return Err(OtlpError::Wire("nested deeper than protobuf decoding goes"));
    }
    for field in fields(bytes) {
        let field = field?;
        let Some(value) = field.value else { continue };
        match kind.field(field.tag) {
            Field::Message(child, repeated) => {
                if repeated {
                    *total = total.saturating_add(2 * child.size());
                }
                walk(value, child, depth + 1, total)?;
            }
            Field::Strings => *total = total.saturating_add(2 * size_of::<String>()),
            Field::Inline => {}
        }
    }
    Ok(())
}

/// A log record of a request that does not decode.
#[derive(Debug)]
pub struct BadRecord {
    /// `resource_logs[i].scope_logs[j].log_records[k]`
    pub path: String,
    /// Why it does not decode.
    pub error: String,
    /// Its encoded bytes, for the notice that stands for it.
    pub bytes: Vec<u8>,
    at: At,
}

/// The log records of `body` that do not decode on their own (a string that is not UTF-8, a
/// field of the wrong type, …), at most `limit` of them.
pub fn undecodable_records(body: &[u8], limit: usize) -> Result<Vec<BadRecord>, OtlpError> {
    let mut bad = Vec::new();
    for_each_record(body, &mut |at, bytes| {
        if bad.len() < limit {
            if let Err(e) = LogRecord::decode(bytes) {
                let path = format!("resource_logs[{}].scope_logs[{}].log_records[{}]", at.0, at.1, at.2);
                bad.push(BadRecord { path, error: e.to_string(), bytes: bytes.to_vec(), at });
            }
        }
    })?;
    Ok(bad)
}

/// Where a log record is: its resource_logs, scope_logs and log_records indexes.
type At = (usize, usize, usize);

fn for_each_record(body: &[u8], f: &mut dyn FnMut(At, &[u8])) -> Result<(), OtlpError> {
    for (i, resource_logs) in messages(body, 1).enumerate() {
        for (j, scope_logs) in messages(resource_logs?, 2).enumerate() {
            for (k, record) in messages(scope_logs?, 2).enumerate() {
                f((i, j, k), record?);
            }
        }
    }
    Ok(())
}

/// The values of the length-delimited fields numbered `tag` of the message in `bytes`.
fn messages(bytes: &[u8], tag: u32) -> impl Iterator<Item = Result<&[u8], OtlpError>> {
    fields(bytes).filter_map(move |field| match field {
        Ok(Raw { tag: t, value: Some(value), .. }) if t == tag => Some(Ok(value)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

/// `body` without the log records of `bad`, re-encoded.
pub fn without_records(body: &[u8], bad: &[BadRecord]) -> Result<Vec<u8>, OtlpError> {
    let bad: HashSet<At> = bad.iter().map(|b| b.at).collect();
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    for field in fields(body) {
        let field = field?;
        let Some(resource_logs) = field.value.filter(|_| field.tag == 1) else {
            out.extend_from_slice(field.whole);
            continue;
        };
        let mut rl = Vec::with_capacity(resource_logs.len());
        let mut j = 0;
        for field in fields(resource_logs) {
            let field = field?;
            let Some(scope_logs) = field.value.filter(|_| field.tag == 2) else {
                rl.extend_from_slice(field.whole);
                continue;
            };
            let mut sl = Vec::with_capacity(scope_logs.len());
            let mut k = 0;
            for field in fields(scope_logs) {
                let field = field?;
                let is_record = field.tag == 2 && field.value.is_some();
                if !(is_record && bad.contains(&(i, j, k))) {
                    sl.extend_from_slice(field.whole);
                }
                k += usize::from(is_record);
            }
            push_message(&mut rl, 2, &sl);
            j += 1;
        }
        push_message(&mut out, 1, &rl);
        i += 1;
    }
    Ok(out)
}

fn push_message(out: &mut Vec<u8>, tag: u32, message: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(message.len() as u64, out);
    out.extend_from_slice(message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::any_value::Value;
    use crate::ExportLogsServiceRequest;

    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    fn body_record(text: &str) -> LogRecord {
        LogRecord {
            body: Some(AnyValue { value: Some(Value::StringValue(text.into())) }),
            ..Default::default()
        }
    }

    #[test]
    fn the_bound_counts_every_element_before_anything_is_built() {
        let empty = request(vec![LogRecord::default(); 10_000]).encode_to_vec();
        let bound = decoded_bound(&empty).unwrap();
        assert!(bound >= 10_000 * size_of::<LogRecord>(), "{bound}");
        assert!(bound > 50 * empty.len(), "empty records decode to far more than their bytes");
        let honest = request((0..100).map(|n| body_record(&format!("payment {n} approved"))).collect());
        let honest = honest.encode_to_vec();
        assert!(decoded_bound(&honest).unwrap() < 20 * honest.len());
        assert!(decoded_bound(&[0x0a, 0x05, 0x01]).is_err(), "a field past the end");
    }

    #[test]
    fn a_record_that_does_not_decode_is_found_and_taken_out_alone() {
        let mut body =
            request(vec![body_record("one"), body_record("TWO"), body_record("three")]).encode_to_vec();
        // "TWO" becomes bytes that are not UTF-8.
        let at = body.windows(3).position(|w| w == b"TWO").unwrap();
        body[at] = 0xff;
        assert!(crate::decode_protobuf(&body).is_err());
        let bad = undecodable_records(&body, 10).unwrap();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].path, "resource_logs[0].scope_logs[0].log_records[1]");
        let rest = crate::decode_protobuf(&without_records(&body, &bad).unwrap()).unwrap();
        let bodies: Vec<_> =
            rest.resource_logs[0].scope_logs[0].log_records.iter().map(|r| r.body.clone()).collect();
        assert_eq!(bodies, [body_record("one").body, body_record("three").body]);
    }
}
