//! OTLP/JSON (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>): the proto3 JSON
//! mapping, except that trace and span ids are hex and enums are integers.
//!
//! opentelemetry-proto's `with-serde` (checked with 0.33.1) is not used because it is not
//! OTLP/JSON: it refuses `"NaN"` and `"Infinity"` in `doubleValue`, `null` members outside AnyValue,
//! an `arrayValue` without `values` and URL-safe base64; it skips snake_case member names as unknown
//! (so a request written with them decodes, silently, to no records); it keeps the last of several
//! oneof values; and it buffers every AnyValue in an intermediate tree. This module decodes
//! straight into the prost types.
//!
//! Receivers are lenient where the Collector's own decoder (pdata) is: besides the lowerCamelCase
//! names the spec prescribes, the proto field names are accepted (the spec calls them invalid, but
//! ignoring them as unknown would drop the data under them), and enum names as well as integers. A member given twice (in either spelling) is an error, and so is a second oneof value.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::common::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use crate::logs::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use crate::resource::Resource;
use crate::{ExportLogsServiceRequest, OtlpError};

/// Decodes an OTLP/JSON (`application/json`) request body. Unknown members are ignored, as the
/// spec requires; everything else that is not OTLP/JSON is refused with a message naming the
/// member and the line and column.
pub fn decode_json(body: &[u8]) -> Result<ExportLogsServiceRequest, OtlpError> {
    decode_json_within(body, usize::MAX)
}

thread_local! {
    /// Bytes the decoding on this thread may still build (see [`decode_json_within`]).
    static ROOM: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// [`decode_json`], refusing a body whose decoded elements would take more than `limit` bytes
/// besides the body's own length (each element of an array counted twice its size, as a `Vec`
/// may hold twice the room it uses): `[{},{},…]` decodes to a hundred times its size.
pub fn decode_json_within(body: &[u8], limit: usize) -> Result<ExportLogsServiceRequest, OtlpError> {
    ROOM.with(|room| room.set(limit));
    let mut de = serde_json::Deserializer::from_slice(body);
    let request = (&mut de).deserialize_map(MessageVisitor::<ExportLogsServiceRequest>(PhantomData));
    let exhausted = ROOM.with(|room| room.replace(usize::MAX)) == 0;
    match request {
        Err(_) if exhausted => Err(OtlpError::TooLarge { limit }),
        request => {
            let request = request?;
            de.end()?;
            Ok(request)
        }
    }
}

/// Takes room for one more element of `T`; false once there is none.
fn take_room<T>() -> bool {
    ROOM.with(|room| {
        let left = room.get().checked_sub(2 * std::mem::size_of::<T>());
        room.set(left.unwrap_or(0));
        left.is_some()
    })
}

/// One protobuf message as a JSON object.
trait JsonMessage: Default {
    const NAME: &'static str;
    /// Per field: the lowerCamelCase JSON name, then the proto field name.
    const FIELDS: &'static [[&'static str; 2]];
    /// Reads the value of field `FIELDS[field]`.
    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error>;
}

struct MessageVisitor<T>(PhantomData<T>);

impl<'de, T: JsonMessage> Visitor<'de> for MessageVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an OTLP {} object", T::NAME)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut message = T::default();
        // FIELDS has fewer than 32 entries.
        let mut seen = 0u32;
        while let Some(field) = map.next_key_seed(FieldName(T::FIELDS))? {
            let Some(i) = field else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if seen & (1 << i) != 0 {
                return Err(A::Error::custom(format_args!(
                    "{}.{} is given more than once",
                    T::NAME,
                    T::FIELDS[i][0]
                )));
            }
            seen |= 1 << i;
            message.read(i, &mut map)?;
        }
        Ok(message)
    }
}

/// A member name, as the index of the field it names (`None`: unknown, to be skipped).
struct FieldName(&'static [[&'static str; 2]]);

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldName {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|names| names.contains(&name)))
    }
}

/// A nested message (never null itself; [`Nullable`] handles null members).
struct Msg<T>(PhantomData<T>);

impl<T> Clone for Msg<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Msg<T> {}

fn msg<T>() -> Msg<T> {
    Msg(PhantomData)
}

impl<'de, T: JsonMessage> DeserializeSeed<'de> for Msg<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_map(MessageVisitor(PhantomData))
    }
}

/// proto3 JSON: `null` stands for the field's default value.
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// A repeated field: a JSON array of `S`.
struct Repeated<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for Repeated<S> {
    type Value = Vec<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for Repeated<S> {
    type Value = Vec<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // The hint is capped so that a hostile length cannot reserve much before the data exists.
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(value) = seq.next_element_seed(self.0)? {
            if !take_room::<S::Value>() {
                return Err(A::Error::custom("the array decodes to more than the memory a request may take"));
            }
            values.push(value);
        }
        Ok(values)
    }
}

/// Reads a member into `slot`, leaving the default for `null`.
fn set<'de, A: MapAccess<'de>, S: DeserializeSeed<'de>>(
    map: &mut A,
    seed: S,
    slot: &mut S::Value,
) -> Result<(), A::Error> {
    if let Some(value) = map.next_value_seed(Nullable(seed))? {
        *slot = value;
    }
    Ok(())
}

/// Reads an optional message member.
fn set_some<'de, A: MapAccess<'de>, T: JsonMessage>(
    map: &mut A,
    slot: &mut Option<T>,
) -> Result<(), A::Error> {
    if let Some(value) = map.next_value_seed(Nullable(msg::<T>()))? {
        *slot = Some(value);
    }
    Ok(())
}

/// An integer field: a JSON number without a fractional part, or a decimal string (how proto3 JSON
/// writes 64-bit integers). Named for error messages.
#[derive(Clone, Copy)]
struct Int {
    name: &'static str,
    min: i128,
    max: i128,
}

const fn int(name: &'static str, min: i128, max: i128) -> Int {
    Int { name, min, max }
}

const U64: (i128, i128) = (0, u64::MAX as i128);
const U32: (i128, i128) = (0, u32::MAX as i128);
const I64: (i128, i128) = (i64::MIN as i128, i64::MAX as i128);
const I32: (i128, i128) = (i32::MIN as i128, i32::MAX as i128);

impl Int {
    fn check<E: serde::de::Error>(self, v: i128) -> Result<i128, E> {
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(E::custom(format_args!("{}: {v} is out of range {}..={}", self.name, self.min, self.max)))
        }
    }

    fn integral<E: serde::de::Error>(self, v: f64) -> Result<i128, E> {
        // Exactly integral and within i128, so the cast below is exact.
        if v.fract() == 0.0 && v.abs() < 1e38 {
            self.check(v as i128)
        } else {
            Err(E::custom(format_args!("{}: {v} is not an integer", self.name)))
        }
    }
}

impl<'de> DeserializeSeed<'de> for Int {
    type Value = i128;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i128, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Int {
    type Value = i128;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} as an integer (a number or a decimal string)", self.name)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i128, E> {
        self.check(v.into())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i128, E> {
        self.check(v.into())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i128, E> {
        self.integral(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<i128, E> {
        match v.parse::<i128>() {
            Ok(n) => self.check(n),
            // Exponent notation ("1e3") is valid proto3 JSON for an integer.
            Err(_) if is_json_number(v) => self.integral(v.parse().map_err(E::custom)?),
            Err(_) => Err(E::custom(format_args!("{}: {v:?} is not an integer", self.name))),
        }
    }
}

/// Whether a string holds a JSON number's characters (Rust's float parser also takes "inf" and
/// "nan", which proto3 JSON spells differently).
fn is_json_number(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
}

/// Reads an integer member into a field of type `T`; [`Int`] has checked the range.
fn set_int<'de, A: MapAccess<'de>, T: TryFrom<i128>>(
    map: &mut A,
    seed: Int,
    slot: &mut T,
) -> Result<(), A::Error> {
    if let Some(v) = map.next_value_seed(Nullable(seed))? {
        *slot = T::try_from(v).map_err(|_| A::Error::custom(format_args!("{}: out of range", seed.name)))?;
    }
    Ok(())
}

/// A double: a number, or a string holding one or `"NaN"`, `"Infinity"`, `"-Infinity"`.
#[derive(Clone, Copy)]
struct Double(&'static str);

impl<'de> DeserializeSeed<'de> for Double {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<f64, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Double {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} as a number, \"NaN\", \"Infinity\" or \"-Infinity\"", self.0)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<f64, E> {
        match v {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ if is_json_number(v) => {
                v.parse().map_err(|_| E::custom(format_args!("{}: {v:?} is not a number", self.0)))
            }
            _ => Err(E::custom(format_args!("{}: {v:?} is not a number", self.0))),
        }
    }
}

#[derive(Clone, Copy)]
struct Bool(&'static str);

impl<'de> DeserializeSeed<'de> for Bool {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_bool(self)
    }
}

impl Visitor<'_> for Bool {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} as true or false", self.0)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
}

#[derive(Clone, Copy)]
struct Str(&'static str);

impl<'de> DeserializeSeed<'de> for Str {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_string(self)
    }
}

impl Visitor<'_> for Str {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} as a string", self.0)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

/// `traceId` and `spanId`: hex, in either case (the OTLP deviation from proto3's base64).
#[derive(Clone, Copy)]
struct Hex(&'static str);

impl<'de> DeserializeSeed<'de> for Hex {
    type Value = Vec<u8>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Hex {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} as a string of hex digits", self.0)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let bad = || E::custom(format_args!("{}: {v:?} is not an even number of hex digits", self.0));
        if !v.len().is_multiple_of(2) {
            return Err(bad());
        }
        v.as_bytes()
            .chunks_exact(2)
            .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)
    }
}

/// `bytesValue`: proto3 JSON takes standard or URL-safe base64, padded or not.
#[derive(Clone, Copy)]
struct Base64(&'static str);

const PADDING_OPTIONAL: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, PADDING_OPTIONAL);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, PADDING_OPTIONAL);

impl<'de> DeserializeSeed<'de> for Base64 {
    type Value = Vec<u8>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Base64 {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} as a base64 string", self.0)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        let engine = if v.contains(['-', '_']) { &URL_SAFE } else { &STANDARD };
        engine.decode(v).map_err(|e| E::custom(format_args!("{}: not base64: {e}", self.0)))
    }
}

/// `severityNumber`: an integer, or (as the Collector accepts) the enum value's name.
#[derive(Clone, Copy)]
struct Severity;

const SEVERITY: Int = int("LogRecord.severityNumber", I32.0, I32.1);

impl<'de> DeserializeSeed<'de> for Severity {
    type Value = i128;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i128, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Severity {
    type Value = i128;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        SEVERITY.expecting(f)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i128, E> {
        SEVERITY.visit_i64(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i128, E> {
        SEVERITY.visit_u64(v)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i128, E> {
        SEVERITY.visit_f64(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<i128, E> {
        match SeverityNumber::from_str_name(v) {
            Some(named) => Ok(named as i128),
            None => SEVERITY.visit_str(v),
        }
    }
}

fn set_severity<'de, A: MapAccess<'de>>(map: &mut A, slot: &mut i32) -> Result<(), A::Error> {
    if let Some(v) = map.next_value_seed(Nullable(Severity))? {
        // Severity has checked the i32 range.
        *slot = v as i32;
    }
    Ok(())
}

impl JsonMessage for ExportLogsServiceRequest {
    const NAME: &'static str = "ExportLogsServiceRequest";
    const FIELDS: &'static [[&'static str; 2]] = &[["resourceLogs", "resource_logs"]];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => set(map, Repeated(msg()), &mut self.resource_logs),
            _ => Ok(()),
        }
    }
}

impl JsonMessage for ResourceLogs {
    const NAME: &'static str = "ResourceLogs";
    const FIELDS: &'static [[&'static str; 2]] =
        &[["resource", "resource"], ["scopeLogs", "scope_logs"], ["schemaUrl", "schema_url"]];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => set_some(map, &mut self.resource),
            1 => set(map, Repeated(msg()), &mut self.scope_logs),
            2 => set(map, Str("ResourceLogs.schemaUrl"), &mut self.schema_url),
            _ => Ok(()),
        }
    }
}

impl JsonMessage for Resource {
    const NAME: &'static str = "Resource";
    const FIELDS: &'static [[&'static str; 2]] = &[
        ["attributes", "attributes"],
        ["droppedAttributesCount", "dropped_attributes_count"],
        ["entityRefs", "entity_refs"],
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => set(map, Repeated(msg()), &mut self.attributes),
            1 => set_int(
                map,
                int("Resource.droppedAttributesCount", U32.0, U32.1),
                &mut self.dropped_attributes_count,
            ),
            2 => set(map, Repeated(msg()), &mut self.entity_refs),
            _ => Ok(()),
        }
    }
}

impl JsonMessage for EntityRef {
    const NAME: &'static str = "EntityRef";
    const FIELDS: &'static [[&'static str; 2]] = &[
        ["schemaUrl", "schema_url"],
        ["type", "type"],
        ["idKeys", "id_keys"],
        ["descriptionKeys", "description_keys"],
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => set(map, Str("EntityRef.schemaUrl"), &mut self.schema_url),
            1 => set(map, Str("EntityRef.type"), &mut self.r#type),
            2 => set(map, Repeated(Str("EntityRef.idKeys")), &mut self.id_keys),
            3 => set(map, Repeated(Str("EntityRef.descriptionKeys")), &mut self.description_keys),
            _ => Ok(()),
        }
    }
}

impl JsonMessage for ScopeLogs {
    const NAME: &'static str = "ScopeLogs";
    const FIELDS: &'static [[&'static str; 2]] =
        &[["scope", "scope"], ["logRecords", "log_records"], ["schemaUrl", "schema_url"]];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => set_some(map, &mut self.scope),
            1 => set(map, Repeated(msg()), &mut self.log_records),
            2 => set(map, Str("ScopeLogs.schemaUrl"), &mut self.schema_url),
            _ => Ok(()),
        }
    }
}

impl JsonMessage for InstrumentationScope {
    const NAME: &'static str = "InstrumentationScope";
    const FIELDS: &'static [[&'static str; 2]] = &[
        ["name", "name"],
        ["version", "version"],
        ["attributes", "attributes"],
        ["droppedAttributesCount", "dropped_attributes_count"],
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => set(map, Str("InstrumentationScope.name"), &mut self.name),
            1 => set(map, Str("InstrumentationScope.version"), &mut self.version),
            2 => set(map, Repeated(msg()), &mut self.attributes),
            3 => set_int(
                map,
                int("InstrumentationScope.droppedAttributesCount", U32.0, U32.1),
                &mut self.dropped_attributes_count,
            ),
            _ => Ok(()),
        }
    }
}

impl JsonMessage for LogRecord {
    const NAME: &'static str = "LogRecord";
    const FIELDS: &'static [[&'static str; 2]] = &[
        ["timeUnixNano", "time_unix_nano"],
        ["observedTimeUnixNano", "observed_time_unix_nano"],
        ["severityNumber", "severity_number"],
        ["severityText", "severity_text"],
        ["body", "body"],
        ["attributes", "attributes"],
        ["droppedAttributesCount", "dropped_attributes_count"],
        ["flags", "flags"],
        ["traceId", "trace_id"],
        ["spanId", "span_id"],
        ["eventName", "event_name"],
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => set_int(map, int("LogRecord.timeUnixNano", U64.0, U64.1), &mut self.time_unix_nano),
            1 => set_int(
                map,
                int("LogRecord.observedTimeUnixNano", U64.0, U64.1),
                &mut self.observed_time_unix_nano,
            ),
            2 => set_severity(map, &mut self.severity_number),
            3 => set(map, Str("LogRecord.severityText"), &mut self.severity_text),
            4 => set_some(map, &mut self.body),
            5 => set(map, Repeated(msg()), &mut self.attributes),
            6 => set_int(
                map,
                int("LogRecord.droppedAttributesCount", U32.0, U32.1),
                &mut self.dropped_attributes_count,
            ),
            7 => set_int(map, int("LogRecord.flags", U32.0, U32.1), &mut self.flags),
            8 => set(map, Hex("LogRecord.traceId"), &mut self.trace_id),
            9 => set(map, Hex("LogRecord.spanId"), &mut self.span_id),
            10 => set(map, Str("LogRecord.eventName"), &mut self.event_name),
            _ => Ok(()),
        }
    }
}

impl JsonMessage for KeyValue {
    const NAME: &'static str = "KeyValue";
    const FIELDS: &'static [[&'static str; 2]] =
        &[["key", "key"], ["value", "value"], ["keyStrindex", "key_strindex"]];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => set(map, Str("KeyValue.key"), &mut self.key),
            1 => set_some(map, &mut self.value),
            2 => set_int(map, int("KeyValue.keyStrindex", I32.0, I32.1), &mut self.key_strindex),
            _ => Ok(()),
        }
    }
}

impl JsonMessage for AnyValue {
    const NAME: &'static str = "AnyValue";
    const FIELDS: &'static [[&'static str; 2]] = &[
        ["stringValue", "string_value"],
        ["boolValue", "bool_value"],
        ["intValue", "int_value"],
        ["doubleValue", "double_value"],
        ["arrayValue", "array_value"],
        ["kvlistValue", "kvlist_value"],
        ["bytesValue", "bytes_value"],
        ["stringValueStrindex", "string_value_strindex"],
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        use any_value::Value;
        let value = match field {
            0 => map.next_value_seed(Nullable(Str("AnyValue.stringValue")))?.map(Value::StringValue),
            1 => map.next_value_seed(Nullable(Bool("AnyValue.boolValue")))?.map(Value::BoolValue),
            2 => {
                let seed = int("AnyValue.intValue", I64.0, I64.1);
                // Int has checked the i64 range.
                map.next_value_seed(Nullable(seed))?.map(|v| Value::IntValue(v as i64))
            }
            3 => map.next_value_seed(Nullable(Double("AnyValue.doubleValue")))?.map(Value::DoubleValue),
            4 => map.next_value_seed(Nullable(msg::<ArrayValue>()))?.map(Value::ArrayValue),
            5 => map.next_value_seed(Nullable(msg::<KeyValueList>()))?.map(Value::KvlistValue),
            6 => map.next_value_seed(Nullable(Base64("AnyValue.bytesValue")))?.map(Value::BytesValue),
            7 => {
                let seed = int("AnyValue.stringValueStrindex", I32.0, I32.1);
                map.next_value_seed(Nullable(seed))?.map(|v| Value::StringValueStrindex(v as i32))
            }
            _ => None,
        };
        if let Some(value) = value {
            if self.value.is_some() {
                return Err(A::Error::custom("AnyValue: more than one of its values is set"));
            }
            self.value = Some(value);
        }
        Ok(())
    }
}

impl JsonMessage for ArrayValue {
    const NAME: &'static str = "ArrayValue";
    const FIELDS: &'static [[&'static str; 2]] = &[["values", "values"]];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => set(map, Repeated(msg()), &mut self.values),
            _ => Ok(()),
        }
    }
}

impl JsonMessage for KeyValueList {
    const NAME: &'static str = "KeyValueList";
    const FIELDS: &'static [[&'static str; 2]] = &[["values", "values"]];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => set(map, Repeated(msg()), &mut self.values),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_of_empty_records_is_refused_before_it_fills_memory() {
        let records = vec!["{}"; 20_000].join(",");
        let body = format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{records}]}}]}}]}}"#);
        let limit = 1 << 20;
        let refused = decode_json_within(body.as_bytes(), limit);
        assert!(matches!(refused, Err(OtlpError::TooLarge { limit: l }) if l == limit), "{refused:?}");
        let decoded = decode_json_within(body.as_bytes(), 64 << 20).unwrap();
        assert_eq!(decoded.resource_logs[0].scope_logs[0].log_records.len(), 20_000);
        // The limit is per call.
        assert!(decode_json(body.as_bytes()).is_ok());
    }
}
