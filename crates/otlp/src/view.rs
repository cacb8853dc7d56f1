//! OTLP/protobuf requests read in place.
//!
//! prost decodes a request into a tree with a `String` or a `Vec` for nearly every field, and
//! building and dropping it was most of what taking a request cost. The mapping needs none of it:
//! it reads each field once and writes the record. So a body is first checked to be plain: every
//! field decodes as prost would decode it, and means what it says (no singular message or oneof
//! given twice, which prost would merge, and no nesting deeper than [`MAX_NESTING`]). Its records
//! are then mapped from views into its bytes. A body that is not plain goes through prost, as
//! every body did before, and prost's errors still name what is wrong with it.
//!
//! The same views are made from prost's tree (an OTLP/JSON request, or a protobuf one that is not
//! plain), so that there is one mapping.

use prost::encoding::WireType;
use prost::Message;

use crate::common::any_value::Value as Decoded;
use crate::common::{AnyValue, EntityRef, InstrumentationScope, KeyValue};
use crate::logs::{LogRecord, ResourceLogs, ScopeLogs};
use crate::resource::Resource;
use crate::wire::{fields, Fields, Raw};
use crate::ExportLogsServiceRequest;

/// Messages nested deeper than this are left to prost, whose recursion limit (100) decides.
const MAX_NESTING: u32 = 64;

/// The part of a body that is not plain (see the module); prost judges it.
#[derive(Debug)]
pub(crate) struct NotPlain;

type Read<T> = Result<T, NotPlain>;

/// An OTLP/protobuf `ExportLogsServiceRequest` body, checked to be plain: its records are mapped
/// from its bytes (see the module).
pub struct WireRequest(Vec<u8>);

impl WireRequest {
    /// The body, if it is plain; else the body back, for prost to decode.
    pub fn new(body: Vec<u8>) -> Result<Self, Vec<u8>> {
        match check_request(&body) {
            Ok(()) => Ok(Self(body)),
            Err(NotPlain) => Err(body),
        }
    }

    /// The body.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A request to map: decoded by prost, or read in place.
#[derive(Clone, Copy)]
pub enum RequestRef<'a> {
    /// Decoded by prost (or from OTLP/JSON).
    Decoded(&'a ExportLogsServiceRequest),
    /// Read in place.
    Wire(&'a WireRequest),
}

impl<'a> From<&'a ExportLogsServiceRequest> for RequestRef<'a> {
    fn from(request: &'a ExportLogsServiceRequest) -> Self {
        RequestRef::Decoded(request)
    }
}

impl<'a> From<&'a WireRequest> for RequestRef<'a> {
    fn from(request: &'a WireRequest) -> Self {
        RequestRef::Wire(request)
    }
}

impl<'a> RequestRef<'a> {
    pub(crate) fn resource_logs(self) -> Repeated<'a, ResourceLogsView<'a>> {
        match self {
            RequestRef::Decoded(request) => Repeated::Decoded(&request.resource_logs),
            RequestRef::Wire(request) => Repeated::Wire(&request.0, 1),
        }
    }
}

/// A log record as it came, decoded by prost or as its bytes in a body read in place.
#[derive(Clone, Copy)]
pub enum LogRecordRef<'a> {
    /// Decoded by prost.
    Decoded(&'a LogRecord),
    /// Its bytes in a plain body.
    Wire(&'a [u8]),
}

impl LogRecordRef<'_> {
    /// Its protobuf encoding as prost writes it, whichever way it came: a notice that stands for
    /// a refused record describes the same bytes either way.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            LogRecordRef::Decoded(record) => record.encode_to_vec(),
            LogRecordRef::Wire(bytes) => {
                LogRecord::decode(*bytes).map_or_else(|_| bytes.to_vec(), |record| record.encode_to_vec())
            }
        }
    }
}

/// A message type the mapping reads, as a view of prost's struct or of its bytes.
pub(crate) trait View<'a>: Sized + 'a {
    /// prost's struct.
    type Decoded: 'a;
    fn of_decoded(decoded: &'a Self::Decoded) -> Self;
    /// The view of a message's bytes; `NotPlain` where prost would fail or merge.
    fn read(bytes: &'a [u8]) -> Read<Self>;
}

/// A repeated field: the elements numbered `tag` among a message's fields, or prost's vector.
pub(crate) enum Repeated<'a, V: View<'a>> {
    Wire(&'a [u8], u32),
    Decoded(&'a [V::Decoded]),
}

impl<'a, V: View<'a>> Clone for Repeated<'a, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<'a, V: View<'a>> Copy for Repeated<'a, V> {}

impl<'a, V: View<'a>> Repeated<'a, V> {
    /// Each element, as read (`NotPlain` for one that is not).
    fn read_each(self) -> ReadEach<'a, V> {
        match self {
            Repeated::Wire(message, tag) => ReadEach::Wire(fields(message), tag),
            Repeated::Decoded(elements) => ReadEach::Decoded(elements.iter()),
        }
    }

    /// Each element of a field of a checked body, which reads as it read when it was checked.
    pub(crate) fn each(self) -> impl Iterator<Item = V> + 'a {
        self.read_each().map_while(|element| {
            debug_assert!(element.is_ok(), "a checked body reads again as it did");
            element.ok()
        })
    }

    pub(crate) fn is_empty(self) -> bool {
        self.read_each().next().is_none()
    }
}

pub(crate) enum ReadEach<'a, V: View<'a>> {
    Wire(Fields<'a>, u32),
    Decoded(std::slice::Iter<'a, V::Decoded>),
}

impl<'a, V: View<'a>> Iterator for ReadEach<'a, V> {
    type Item = Read<V>;

    fn next(&mut self) -> Option<Read<V>> {
        match self {
            ReadEach::Decoded(elements) => elements.next().map(|element| Ok(V::of_decoded(element))),
            ReadEach::Wire(fields, tag) => loop {
                match fields.next()? {
                    Ok(Raw { tag: t, value, .. }) if t == *tag => {
                        return Some(value.ok_or(NotPlain).and_then(V::read));
                    }
                    Ok(_) => {}
                    Err(_) => return Some(Err(NotPlain)),
                }
            },
        }
    }
}

fn text(bytes: &[u8]) -> Read<&str> {
    std::str::from_utf8(bytes).map_err(|_| NotPlain)
}

/// Reads the fields of `message`: `field` takes each known one and says whether it was known;
/// an unknown field is passed over, as prost passes it over.
fn read_fields<'a>(message: &'a [u8], mut field: impl FnMut(&Raw<'a>) -> Read<bool>) -> Read<()> {
    for raw in fields(message) {
        let raw = raw.map_err(|_| NotPlain)?;
        field(&raw)?;
    }
    Ok(())
}

/// The value of a length-delimited field, or `NotPlain` for another wire type.
fn delimited<'a>(raw: &Raw<'a>) -> Read<&'a [u8]> {
    raw.value.ok_or(NotPlain)
}

/// The number of a field of `wire` type, or `NotPlain` for another.
fn number(raw: &Raw<'_>, wire: WireType) -> Read<u64> {
    if raw.wire == wire {
        Ok(raw.number)
    } else {
        Err(NotPlain)
    }
}

/// A singular message field's value, which must be given once: prost merges a second one into
/// the first.
fn once<T>(slot: &mut Option<T>, value: Read<T>) -> Read<bool> {
    if slot.is_some() {
        return Err(NotPlain);
    }
    *slot = Some(value?);
    Ok(true)
}

impl<'a> View<'a> for &'a str {
    type Decoded = String;

    fn of_decoded(decoded: &'a String) -> Self {
        decoded
    }

    fn read(bytes: &'a [u8]) -> Read<Self> {
        text(bytes)
    }
}

/// An `AnyValue`; `Empty` stands for no value, and for an index into a profiles string table,
/// which means nothing in logs.
#[derive(Clone, Copy)]
pub(crate) enum Value<'a> {
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(Repeated<'a, Value<'a>>),
    Kvlist(Repeated<'a, Pair<'a>>),
}

impl<'a> View<'a> for Value<'a> {
    type Decoded = AnyValue;

    fn of_decoded(decoded: &'a AnyValue) -> Self {
        match &decoded.value {
            None | Some(Decoded::StringValueStrindex(_)) => Value::Empty,
            Some(Decoded::StringValue(s)) => Value::Str(s),
            Some(Decoded::BoolValue(b)) => Value::Bool(*b),
            Some(Decoded::IntValue(i)) => Value::Int(*i),
            Some(Decoded::DoubleValue(d)) => Value::Double(*d),
            Some(Decoded::BytesValue(bytes)) => Value::Bytes(bytes),
            Some(Decoded::ArrayValue(array)) => Value::Array(Repeated::Decoded(&array.values)),
            Some(Decoded::KvlistValue(list)) => Value::Kvlist(Repeated::Decoded(&list.values)),
        }
    }

    fn read(bytes: &'a [u8]) -> Read<Self> {
        let mut value = None;
        read_fields(bytes, |raw| {
            // As prost decodes the oneof: wire types checked, integers truncated as prost does.
            let read = match raw.tag {
                1 => text(delimited(raw)?).map(Value::Str),
                2 => number(raw, WireType::Varint).map(|n| Value::Bool(n != 0)),
                3 => number(raw, WireType::Varint).map(|n| Value::Int(n as i64)),
                4 => number(raw, WireType::SixtyFourBit).map(|n| Value::Double(f64::from_bits(n))),
                5 => delimited(raw).map(|array| Value::Array(Repeated::Wire(array, 1))),
                6 => delimited(raw).map(|list| Value::Kvlist(Repeated::Wire(list, 1))),
                7 => delimited(raw).map(Value::Bytes),
                8 => number(raw, WireType::Varint).map(|_| Value::Empty),
                _ => return Ok(false),
            };
            once(&mut value, read)
        })?;
        Ok(value.unwrap_or(Value::Empty))
    }
}

/// A `KeyValue`.
#[derive(Clone, Copy)]
pub(crate) struct Pair<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: Option<Value<'a>>,
}

impl<'a> View<'a> for Pair<'a> {
    type Decoded = KeyValue;

    fn of_decoded(decoded: &'a KeyValue) -> Self {
        Pair { key: &decoded.key, value: decoded.value.as_ref().map(Value::of_decoded) }
    }

    fn read(bytes: &'a [u8]) -> Read<Self> {
        let (mut key, mut value) = ("", None);
        read_fields(bytes, |raw| match raw.tag {
            1 => text(delimited(raw)?).map(|k| key = k).map(|()| true),
            2 => once(&mut value, delimited(raw).and_then(Value::read)),
            // key_strindex, of profiles: read for its wire type, and not used.
            3 => number(raw, WireType::Varint).map(|_| true),
            _ => Ok(false),
        })?;
        Ok(Pair { key, value })
    }
}

/// A `LogRecord`.
pub(crate) struct RecordView<'a> {
    pub(crate) time_unix_nano: u64,
    pub(crate) observed_time_unix_nano: u64,
    pub(crate) severity_number: i32,
    pub(crate) severity_text: &'a str,
    pub(crate) body: Option<Value<'a>>,
    pub(crate) attributes: Repeated<'a, Pair<'a>>,
    pub(crate) dropped_attributes_count: u32,
    pub(crate) flags: u32,
    pub(crate) trace_id: &'a [u8],
    pub(crate) span_id: &'a [u8],
    pub(crate) event_name: &'a str,
    pub(crate) whole: LogRecordRef<'a>,
}

impl<'a> View<'a> for RecordView<'a> {
    type Decoded = LogRecord;

    fn of_decoded(r: &'a LogRecord) -> Self {
        RecordView {
            time_unix_nano: r.time_unix_nano,
            observed_time_unix_nano: r.observed_time_unix_nano,
            severity_number: r.severity_number,
            severity_text: &r.severity_text,
            body: r.body.as_ref().map(Value::of_decoded),
            attributes: Repeated::Decoded(&r.attributes),
            dropped_attributes_count: r.dropped_attributes_count,
            flags: r.flags,
            trace_id: &r.trace_id,
            span_id: &r.span_id,
            event_name: &r.event_name,
            whole: LogRecordRef::Decoded(r),
        }
    }

    fn read(bytes: &'a [u8]) -> Read<Self> {
        let mut r = RecordView {
            time_unix_nano: 0,
            observed_time_unix_nano: 0,
            severity_number: 0,
            severity_text: "",
            body: None,
            attributes: Repeated::Wire(bytes, 6),
            dropped_attributes_count: 0,
            flags: 0,
            trace_id: &[],
            span_id: &[],
            event_name: "",
            whole: LogRecordRef::Wire(bytes),
        };
        // A scalar given twice is the last one, as prost takes it.
        read_fields(bytes, |raw| {
            match raw.tag {
                1 => r.time_unix_nano = number(raw, WireType::SixtyFourBit)?,
                2 => r.severity_number = number(raw, WireType::Varint)? as i32,
                3 => r.severity_text = text(delimited(raw)?)?,
                5 => return once(&mut r.body, delimited(raw).and_then(Value::read)),
                6 => _ = delimited(raw)?,
                7 => r.dropped_attributes_count = number(raw, WireType::Varint)? as u32,
                8 => r.flags = number(raw, WireType::ThirtyTwoBit)? as u32,
                9 => r.trace_id = delimited(raw)?,
                10 => r.span_id = delimited(raw)?,
                11 => r.observed_time_unix_nano = number(raw, WireType::SixtyFourBit)?,
                12 => r.event_name = text(delimited(raw)?)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(r)
    }
}

/// An `EntityRef` of a resource.
pub(crate) struct EntityView<'a> {
    pub(crate) schema_url: &'a str,
    pub(crate) r#type: &'a str,
    pub(crate) id_keys: Repeated<'a, &'a str>,
    pub(crate) description_keys: Repeated<'a, &'a str>,
}

impl<'a> View<'a> for EntityView<'a> {
    type Decoded = EntityRef;

    fn of_decoded(e: &'a EntityRef) -> Self {
        EntityView {
            schema_url: &e.schema_url,
            r#type: &e.r#type,
            id_keys: Repeated::Decoded(&e.id_keys),
            description_keys: Repeated::Decoded(&e.description_keys),
        }
    }

    fn read(bytes: &'a [u8]) -> Read<Self> {
        let mut e = EntityView {
            schema_url: "",
            r#type: "",
            id_keys: Repeated::Wire(bytes, 3),
            description_keys: Repeated::Wire(bytes, 4),
        };
        read_fields(bytes, |raw| {
            match raw.tag {
                1 => e.schema_url = text(delimited(raw)?)?,
                2 => e.r#type = text(delimited(raw)?)?,
                3 | 4 => _ = text(delimited(raw)?)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(e)
    }
}

/// A `Resource`, or an `InstrumentationScope` (the same parts, a scope with a name and version).
pub(crate) struct PartView<'a> {
    pub(crate) name: &'a str,
    pub(crate) version: &'a str,
    pub(crate) attributes: Repeated<'a, Pair<'a>>,
    pub(crate) dropped_attributes_count: u32,
    pub(crate) entity_refs: Repeated<'a, EntityView<'a>>,
}

impl<'a> PartView<'a> {
    fn of_resource(r: &'a Resource) -> Self {
        PartView {
            name: "",
            version: "",
            attributes: Repeated::Decoded(&r.attributes),
            dropped_attributes_count: r.dropped_attributes_count,
            entity_refs: Repeated::Decoded(&r.entity_refs),
        }
    }

    fn of_scope(s: &'a InstrumentationScope) -> Self {
        PartView {
            name: &s.name,
            version: &s.version,
            attributes: Repeated::Decoded(&s.attributes),
            dropped_attributes_count: s.dropped_attributes_count,
            entity_refs: Repeated::Decoded(&[]),
        }
    }

    fn read_resource(bytes: &'a [u8]) -> Read<Self> {
        let mut r = PartView {
            name: "",
            version: "",
            attributes: Repeated::Wire(bytes, 1),
            dropped_attributes_count: 0,
            entity_refs: Repeated::Wire(bytes, 3),
        };
        read_fields(bytes, |raw| {
            match raw.tag {
                1 | 3 => _ = delimited(raw)?,
                2 => r.dropped_attributes_count = number(raw, WireType::Varint)? as u32,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(r)
    }

    fn read_scope(bytes: &'a [u8]) -> Read<Self> {
        let mut s = PartView {
            name: "",
            version: "",
            attributes: Repeated::Wire(bytes, 3),
            dropped_attributes_count: 0,
            entity_refs: Repeated::Decoded(&[]),
        };
        read_fields(bytes, |raw| {
            match raw.tag {
                1 => s.name = text(delimited(raw)?)?,
                2 => s.version = text(delimited(raw)?)?,
                3 => _ = delimited(raw)?,
                4 => s.dropped_attributes_count = number(raw, WireType::Varint)? as u32,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(s)
    }
}

/// A `ResourceLogs`, or a `ScopeLogs`: a part (the resource, or the scope), what it holds, and a
/// schema URL.
pub(crate) struct GroupView<'a, V: View<'a>> {
    pub(crate) part: Option<PartView<'a>>,
    pub(crate) held: Repeated<'a, V>,
    pub(crate) schema_url: &'a str,
}

pub(crate) type ResourceLogsView<'a> = GroupView<'a, ScopeLogsView<'a>>;
pub(crate) type ScopeLogsView<'a> = GroupView<'a, RecordView<'a>>;

/// Reads a group whose fields are 1 the part, 2 what it holds and 3 the schema URL.
fn read_group<'a, V: View<'a>>(
    bytes: &'a [u8],
    read_part: fn(&'a [u8]) -> Read<PartView<'a>>,
) -> Read<GroupView<'a, V>> {
    let mut group = GroupView { part: None, held: Repeated::Wire(bytes, 2), schema_url: "" };
    read_fields(bytes, |raw| match raw.tag {
        1 => once(&mut group.part, delimited(raw).and_then(read_part)),
        2 => delimited(raw).map(|_| true),
        3 => text(delimited(raw)?).map(|url| group.schema_url = url).map(|()| true),
        _ => Ok(false),
    })?;
    Ok(group)
}

impl<'a> View<'a> for ResourceLogsView<'a> {
    type Decoded = ResourceLogs;

    fn of_decoded(r: &'a ResourceLogs) -> Self {
        GroupView {
            part: r.resource.as_ref().map(PartView::of_resource),
            held: Repeated::Decoded(&r.scope_logs),
            schema_url: &r.schema_url,
        }
    }

    fn read(bytes: &'a [u8]) -> Read<Self> {
        read_group(bytes, PartView::read_resource)
    }
}

impl<'a> View<'a> for ScopeLogsView<'a> {
    type Decoded = ScopeLogs;

    fn of_decoded(s: &'a ScopeLogs) -> Self {
        GroupView {
            part: s.scope.as_ref().map(PartView::of_scope),
            held: Repeated::Decoded(&s.log_records),
            schema_url: &s.schema_url,
        }
    }

    fn read(bytes: &'a [u8]) -> Read<Self> {
        read_group(bytes, PartView::read_scope)
    }
}

/// Whether every field of `body` reads plainly, down to the last value.
fn check_request(body: &[u8]) -> Read<()> {
    // Nesting: the request 1, a ResourceLogs 2, its Resource or ScopeLogs 3, a LogRecord or
    // InstrumentationScope 4.
    for resource_logs in Repeated::<ResourceLogsView>::Wire(body, 1).read_each() {
        let resource_logs = resource_logs?;
        if let Some(resource) = resource_logs.part {
            check_part(&resource, 3)?;
        }
        for scope_logs in resource_logs.held.read_each() {
            let scope_logs = scope_logs?;
            if let Some(scope) = scope_logs.part {
                check_part(&scope, 4)?;
            }
            for record in scope_logs.held.read_each() {
                let record = record?;
                check_pairs(record.attributes, 5)?;
                if let Some(body) = record.body {
                    check_value(body, 5)?;
                }
            }
        }
    }
    Ok(())
}

fn check_part(part: &PartView<'_>, depth: u32) -> Read<()> {
    check_pairs(part.attributes, depth + 1)?;
    for entity in part.entity_refs.read_each() {
        let entity = entity?;
        for key in entity.id_keys.read_each().chain(entity.description_keys.read_each()) {
            key?;
        }
    }
    Ok(())
}

/// The pairs of a list at nesting `depth`, each value one deeper.
fn check_pairs<'a>(pairs: Repeated<'a, Pair<'a>>, depth: u32) -> Read<()> {
    for pair in pairs.read_each() {
        if let Some(value) = pair?.value {
            check_value(value, depth + 1)?;
        }
    }
    Ok(())
}

/// A value at nesting `depth`; its array or list is one deeper, and their elements one more.
fn check_value(value: Value<'_>, depth: u32) -> Read<()> {
    if depth > MAX_NESTING {
        return Err(NotPlain);
    }
    match value {
        Value::Array(values) => {
            for value in values.read_each() {
                check_value(value?, depth + 2)?;
            }
            Ok(())
        }
        Value::Kvlist(pairs) => check_pairs(pairs, depth + 2),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use prost::encoding::{encode_key, encode_varint};

    use super::*;
    use crate::common::KeyValueList;

    fn field(tag: u32, wire: WireType, value: &[u8], out: &mut Vec<u8>) {
        encode_key(tag, wire, out);
        if wire == WireType::LengthDelimited {
            encode_varint(value.len() as u64, out);
        }
        out.extend_from_slice(value);
    }

    /// A request of one log record whose bytes are `record`.
    fn request_of(record: &[u8]) -> Vec<u8> {
        let (mut scope_logs, mut resource_logs, mut request) = (Vec::new(), Vec::new(), Vec::new());
        field(2, WireType::LengthDelimited, record, &mut scope_logs);
        field(2, WireType::LengthDelimited, &scope_logs, &mut resource_logs);
        field(1, WireType::LengthDelimited, &resource_logs, &mut request);
        request
    }

    fn records<'a>(request: impl Into<RequestRef<'a>>) -> Vec<String> {
        let mut out = Vec::new();
        crate::for_each_record(request, 0, &mut Vec::new(), |record| -> Result<(), ()> {
            out.push(String::from_utf8_lossy(record).into_owned());
            Ok(())
        })
        .unwrap();
        out
    }

    fn list(key: &str) -> Vec<u8> {
        let pair = KeyValue { key: key.into(), value: None, key_strindex: 0 };
        AnyValue { value: Some(Decoded::KvlistValue(KeyValueList { values: vec![pair] })) }.encode_to_vec()
    }

    #[test]
    fn a_singular_message_given_twice_is_left_to_prost_which_merges_it() {
        let mut record = Vec::new();
        field(5, WireType::LengthDelimited, &list("a"), &mut record);
        field(5, WireType::LengthDelimited, &list("b"), &mut record);
        let body = request_of(&record);
        let prost = crate::decode_protobuf(&body).unwrap();
        assert_eq!(
            records(&prost),
            [r#"{"body":{"a":null,"b":null},"ts":"1970-01-01T00:00:00.000000000Z"}"#]
        );
        assert!(WireRequest::new(body).is_err(), "read in place, it would be one of the two");
    }

    #[test]
    fn scalars_given_twice_and_unknown_fields_read_as_prost_reads_them() {
        let mut record = Vec::new();
        field(3, WireType::LengthDelimited, b"INFO", &mut record);
        field(3, WireType::LengthDelimited, b"WARN", &mut record);
        field(4, WireType::Varint, &[7], &mut record);
        field(99, WireType::LengthDelimited, b"\xff not text", &mut record);
        let body = request_of(&record);
        let wire = WireRequest::new(body.clone()).unwrap_or_else(|_| panic!("plain"));
        let prost = crate::decode_protobuf(&body).unwrap();
        assert_eq!(records(&wire), records(&prost));
        assert_eq!(records(&wire), [r#"{"level":"WARN","ts":"1970-01-01T00:00:00.000000000Z"}"#]);
    }

    #[test]
    fn what_prost_refuses_is_not_read_in_place() {
        let wrong_type = {
            let mut record = Vec::new();
            field(2, WireType::LengthDelimited, b"9", &mut record);
            record
        };
        let not_text = {
            let mut record = Vec::new();
            field(12, WireType::LengthDelimited, b"\xff", &mut record);
            record
        };
        let mut deep = list("leaf");
        for _ in 0..60 {
            let mut array = Vec::new();
            field(1, WireType::LengthDelimited, &deep, &mut array);
            deep.clear();
            field(5, WireType::LengthDelimited, &array, &mut deep);
        }
        let too_deep = {
            let mut record = Vec::new();
            field(5, WireType::LengthDelimited, &deep, &mut record);
            record
        };
        let truncated = request_of(b"\x1a\x05INF");
        for (what, body) in [
            ("a known field of another wire type", request_of(&wrong_type)),
            ("a string that is not UTF-8", request_of(&not_text)),
            ("nesting past MAX_NESTING", request_of(&too_deep)),
            ("a field past the end of its message", truncated),
        ] {
            assert!(WireRequest::new(body).is_err(), "{what}");
        }
    }
}
