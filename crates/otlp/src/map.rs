//! OTLP log records → teelog input records, as docs/FORMAT.md §13 specifies.
//!
//! One pass per record, written straight into one reused buffer: the resource and the scope are
//! rendered once per `ResourceLogs` and `ScopeLogs` at the front of the buffer and copied into each
//! of their records. What is written is already the record's canonical form (docs/FORMAT.md §2.2),
//! which the signer takes as it is: members in canonical order, `ts` in its canonical spelling,
//! integers beyond ±2^53 and non-finite doubles as strings; keys are checked for duplicates and
//! nesting for depth here, where the error can still name the OTLP field.

use std::fmt::Write as _;
use std::ops::Range;

use base64::Engine;
use teelog_core::canon::{compare_names, write_string, MAX_DEPTH, MAX_EXACT_INTEGER};
use teelog_core::timestamp::{write_rfc3339, UnixNanos};

use crate::view::{
    LogRecordRef, Pair, RecordView, Repeated, RequestRef, ResourceLogsView, ScopeLogsView, Value,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why an OTLP log record cannot become a teelog record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// A key list names a key twice, which a JSON object cannot hold unambiguously.
    #[error("duplicate key {0:?}")]
    DuplicateKey(String),
    /// A trace or span id of another length than OTLP's.
    #[error("{len} bytes, but a {what} has {expected} (or is empty)")]
    IdLength {
        /// `trace id` or `span id`.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The length OTLP gives it (16 or 8).
        expected: usize,
    },
    /// Values nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than the {MAX_DEPTH} levels a teelog record may have")]
    TooDeep,
    /// A timestamp past what teelog's signed 64-bit nanoseconds hold.
    #[error("{0} ns is after 2262-04-11T23:47:16.854775807Z, the last instant a teelog timestamp holds")]
    TimeOutOfRange(u64),
}

/// A record refused by the mapping, or by the caller's function.
#[derive(Debug, thiserror::Error)]
pub enum MapError<E> {
    /// `path` names the field, e.g.
    /// `resource_logs[0].scope_logs[2].log_records[5].attributes["user"][3]`.
    #[error("{path}: {fault}")]
    Invalid {
        /// Where the fault is.
        path: String,
        /// What it is.
        fault: Fault,
    },
    /// `path` names the record, e.g. `resource_logs[0].scope_logs[2].log_records[5]`.
    #[error("{path}: {error}")]
    Sink {
        /// The record.
        path: String,
        /// The caller's error.
        error: E,
    },
}

/// Maps every log record of `request` to one teelog record in canonical form and hands it to
/// `f`, in request order; returns how many were handed over. A record with neither time gets
/// `now` as its `ts`. `out` is the working buffer, reused across records (its contents afterwards
/// are unspecified). The first refused record stops the mapping.
pub fn for_each_record<'a, E>(
    request: impl Into<RequestRef<'a>>,
    now: UnixNanos,
    out: &mut Vec<u8>,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, MapError<E>> {
    let mut count = 0;
    for_each_mapped(request, now, out, |mapped| match mapped {
        Mapped::Record { record, path, .. } => {
            count += 1;
            f(record).map_err(|error| MapError::Sink { path: path(), error })
        }
        Mapped::Refused { path, fault, .. } | Mapped::Empty { path, fault } => {
            Err(MapError::Invalid { path, fault })
        }
    })?;
    Ok(count)
}

/// One log record of a request, as the mapping made it.
pub enum Mapped<'a> {
    /// The teelog input record; `path` names the log record, for messages.
    Record {
        /// The record's canonical bytes, valid until the callback returns.
        record: &'a [u8],
        /// Its `ts`.
        ts: UnixNanos,
        /// Makes the log record's path, only when a message needs it.
        path: &'a dyn Fn() -> String,
    },
    /// A log record the mapping refused (a fault in it, or in its resource or scope, which
    /// refuses each of their records): where the fault is and what it is, and the record.
    Refused {
        /// Where the fault is.
        path: String,
        /// What it is.
        fault: Fault,
        /// The refused log record, as received (e.g. to describe it in a notice).
        log_record: LogRecordRef<'a>,
    },
    /// A fault in a resource or scope that has no log records: it refuses nothing.
    Empty {
        /// Where the fault is.
        path: String,
        /// What it is.
        fault: Fault,
    },
}

/// As [`for_each_record`], but a refused record does not stop the mapping: `f` is told of it and
/// the next is mapped, so that a sink can sign a notice in its place and go on. Stops at the
/// first error of `f`.
pub fn for_each_mapped<'a, E>(
    request: impl Into<RequestRef<'a>>,
    now: UnixNanos,
    out: &mut Vec<u8>,
    mut f: impl FnMut(Mapped<'_>) -> Result<(), E>,
) -> Result<(), E> {
    for (i, resource_logs) in request.into().resource_logs().each().enumerate() {
        let in_resource = |bad: Box<Bad>| bad.at(Seg::Index(i)).at(Seg::Field("resource_logs"));
        out.clear();
        let resource = write_resource(&resource_logs, out).map_err(in_resource);
        let resource_end = out.len();
        let mut records = 0;
        for (j, scope_logs) in resource_logs.held.each().enumerate() {
            let in_scope = |bad: Box<Bad>| in_resource(bad.at(Seg::Index(j)).at(Seg::Field("scope_logs")));
            out.truncate(resource_end);
            let scope = match &resource {
                // Each record of a refused resource is refused for the resource's fault.
                Err(bad) => Err(bad.clone()),
                Ok(()) => write_scope(&scope_logs, out).map_err(in_scope),
            };
            let scope_end = out.len();
            for (k, log_record) in scope_logs.held.each().enumerate() {
                out.truncate(scope_end);
                let written = match &scope {
                    Err(bad) => Err(bad.clone()),
                    Ok(()) => write_record(&log_record, now, out, 0..resource_end, resource_end..scope_end)
                        .map_err(|bad| in_scope(bad.at(Seg::Index(k)).at(Seg::Field("log_records")))),
                };
                let path = || format!("resource_logs[{i}].scope_logs[{j}].log_records[{k}]");
                records += 1;
                match written {
                    Ok(ts) => f(Mapped::Record { record: &out[scope_end..], ts, path: &path })?,
                    Err(bad) => {
                        let (path, fault) = bad.into_path();
                        f(Mapped::Refused { path, fault, log_record: log_record.whole })?
                    }
                }
            }
            if let (Ok(()), Err(bad)) = (&resource, scope) {
                if scope_logs.held.is_empty() {
                    let (path, fault) = bad.into_path();
                    f(Mapped::Empty { path, fault })?;
                }
            }
        }
        if let (Err(bad), 0) = (resource, records) {
            let (path, fault) = bad.into_path();
            f(Mapped::Empty { path, fault })?;
        }
    }
    Ok(())
}

/// One step of the path to a refused field.
#[derive(Clone)]
enum Seg {
    Field(&'static str),
    Index(usize),
    Key(String),
}

/// A fault and its path, innermost step first (it is built while the error propagates, so that
/// the success path does no work for it).
#[derive(Clone)]
struct Bad {
    fault: Fault,
    path: Vec<Seg>,
}

type Written = Result<(), Box<Bad>>;

fn bad(fault: Fault) -> Box<Bad> {
    Box::new(Bad { fault, path: Vec::new() })
}

impl Bad {
    fn at(mut self: Box<Self>, seg: Seg) -> Box<Self> {
        self.path.push(seg);
        self
    }

    /// The path, outermost step first, and the fault.
    fn into_path(self) -> (String, Fault) {
        let mut path = String::new();
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Field(name) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(name);
                }
                Seg::Index(i) => {
                    let _ = write!(path, "[{i}]");
                }
                Seg::Key(key) => {
                    let _ = write!(path, "[{key:?}]");
                }
            }
        }
        (path, self.fault)
    }
}

/// Writes `"name":`, preceded by a comma unless it is the object's first member.
fn member(out: &mut Vec<u8>, first: &mut bool, name: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn write_u64(v: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Integers beyond ±2^53 would be refused (or changed) by canonical JSON: they become strings.
fn write_int(v: i64, out: &mut Vec<u8>) {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(v).as_bytes();
    if v.unsigned_abs() <= MAX_EXACT_INTEGER {
        out.extend_from_slice(text);
    } else {
        out.push(b'"');
        out.extend_from_slice(text);
        out.push(b'"');
    }
}

/// JSON has no NaN or infinities: they become the strings proto3 JSON uses for them. A double
/// whose shortest form is an integer literal beyond ±2^53 (e.g. 1.0210603806793571e17, written
/// `102106038067935710`) becomes a string, as the canonicaliser makes of such a literal (§2.2).
fn write_double(v: f64, out: &mut Vec<u8>) {
    if v.is_finite() {
        let mut buffer = ryu_js::Buffer::new();
        let text = buffer.format_finite(v);
        let integer_literal = !text.contains(['.', 'e']);
        if integer_literal && v.abs() > MAX_EXACT_INTEGER as f64 {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(text.as_bytes());
        }
    } else if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v > 0.0 {
        out.extend_from_slice(b"\"Infinity\"");
    } else {
        out.extend_from_slice(b"\"-Infinity\"");
    }
}

fn write_base64(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let at = out.len();
    // Padded base64 takes 4 characters per started 3 bytes: exactly the room encode_slice needs.
    out.resize(at + bytes.len().div_ceil(3) * 4, 0);
    let written = B64.encode_slice(bytes, &mut out[at..]).unwrap_or(0);
    out.truncate(at + written);
    out.push(b'"');
}

fn write_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
    out.push(b'"');
}

/// Writes key/value pairs as a JSON object at nesting level `depth` (the record is level 0), its
/// members in canonical order.
fn write_object<'a>(pairs: Repeated<'a, Pair<'a>>, depth: usize, out: &mut Vec<u8>) -> Written {
    if depth >= MAX_DEPTH {
        return Err(bad(Fault::TooDeep));
    }
    let mut previous: Option<&str> = None;
    let in_order = pairs.each().all(|pair| {
        let before = previous.replace(pair.key);
        before.is_none_or(|before| compare_names(before, pair.key).is_lt())
    });
    if in_order {
        // Already strictly in order, so no key twice: written as they are, nothing allocated.
        return write_members(pairs.each(), depth, out);
    }
    let mut order: Vec<Pair<'_>> = pairs.each().collect();
    order.sort_unstable_by(|a, b| compare_names(a.key, b.key));
    if let Some(twice) = order.windows(2).find(|w| w[0].key == w[1].key) {
        return Err(bad(Fault::DuplicateKey(twice[0].key.to_string())));
    }
    write_members(order.into_iter(), depth, out)
}

fn write_members<'a>(pairs: impl Iterator<Item = Pair<'a>>, depth: usize, out: &mut Vec<u8>) -> Written {
    out.push(b'{');
    for (i, pair) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(pair.key, out);
        out.push(b':');
        match pair.value {
            Some(value) => {
                write_value(value, depth + 1, out).map_err(|b| b.at(Seg::Key(pair.key.to_string())))?
            }
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
    Ok(())
}

/// Writes an AnyValue; a container opened here is at nesting level `depth`.
fn write_value(value: Value<'_>, depth: usize, out: &mut Vec<u8>) -> Written {
    match value {
        // Also an index into a profiles string table, which means nothing in logs: the spec says
        // to treat the value as empty.
        Value::Empty => out.extend_from_slice(b"null"),
        Value::Str(s) => write_string(s, out),
        Value::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Value::Int(i) => write_int(i, out),
        Value::Double(d) => write_double(d, out),
        Value::Bytes(bytes) => write_base64(bytes, out),
        Value::Kvlist(pairs) => write_object(pairs, depth, out)?,
        Value::Array(values) => {
            if depth >= MAX_DEPTH {
                return Err(bad(Fault::TooDeep));
            }
            out.push(b'[');
            for (i, item) in values.each().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, depth + 1, out).map_err(|b| b.at(Seg::Index(i)))?;
            }
            out.push(b']');
        }
    }
    Ok(())
}

/// The `resource` member's value, or nothing when every part is empty.
fn write_resource(resource_logs: &ResourceLogsView<'_>, out: &mut Vec<u8>) -> Written {
    let (attributes, dropped, entity_refs) = match &resource_logs.part {
        Some(r) => (r.attributes, r.dropped_attributes_count, r.entity_refs),
        None => (Repeated::Decoded(&[]), 0, Repeated::Decoded(&[])),
    };
    let schema_url = resource_logs.schema_url;
    if attributes.is_empty() && dropped == 0 && entity_refs.is_empty() && schema_url.is_empty() {
        return Ok(());
    }
    let first = &mut true;
    out.push(b'{');
    if !attributes.is_empty() {
        member(out, first, "attributes");
        write_object(attributes, 2, out)
            .map_err(|b| b.at(Seg::Field("attributes")).at(Seg::Field("resource")))?;
    }
    if dropped != 0 {
        member(out, first, "dropped_attributes_count");
        write_u64(dropped.into(), out);
    }
    if !entity_refs.is_empty() {
        member(out, first, "entity_refs");
        out.push(b'[');
        for (i, entity) in entity_refs.each().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let first = &mut true;
            out.push(b'{');
            for (name, keys) in [("description_keys", entity.description_keys), ("id_keys", entity.id_keys)] {
                if !keys.is_empty() {
                    member(out, first, name);
                    out.push(b'[');
                    for (k, key) in keys.each().enumerate() {
                        if k > 0 {
                            out.push(b',');
                        }
                        write_string(key, out);
                    }
                    out.push(b']');
                }
            }
            for (name, text) in [("schema_url", entity.schema_url), ("type", entity.r#type)] {
                if !text.is_empty() {
                    member(out, first, name);
                    write_string(text, out);
                }
            }
            out.push(b'}');
        }
        out.push(b']');
    }
    if !schema_url.is_empty() {
        member(out, first, "schema_url");
        write_string(schema_url, out);
    }
    out.push(b'}');
    Ok(())
}

/// The `scope` member's value, or nothing when every part is empty.
fn write_scope(scope_logs: &ScopeLogsView<'_>, out: &mut Vec<u8>) -> Written {
    let (name, version, attributes, dropped) = match &scope_logs.part {
        Some(s) => (s.name, s.version, s.attributes, s.dropped_attributes_count),
        None => ("", "", Repeated::Decoded(&[]), 0),
    };
    let schema_url = scope_logs.schema_url;
    if name.is_empty() && version.is_empty() && attributes.is_empty() && dropped == 0 && schema_url.is_empty()
    {
        return Ok(());
    }
    let first = &mut true;
    out.push(b'{');
    if !attributes.is_empty() {
        member(out, first, "attributes");
        write_object(attributes, 2, out)
            .map_err(|b| b.at(Seg::Field("attributes")).at(Seg::Field("scope")))?;
    }
    if dropped != 0 {
        member(out, first, "dropped_attributes_count");
        write_u64(dropped.into(), out);
    }
    for (member_name, text) in [("name", name), ("schema_url", schema_url), ("version", version)] {
        if !text.is_empty() {
            member(out, first, member_name);
            write_string(text, out);
        }
    }
    out.push(b'}');
    Ok(())
}

/// The OpenTelemetry short name of a severity number and its rank within the name (logs data
/// model, "Displaying Severity"): 10 is INFO 2, written `INFO2`.
fn short_name(severity_number: i32) -> Option<(&'static str, u8)> {
    const NAMES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let n = usize::try_from(severity_number).ok()?.checked_sub(1)?;
    Some((NAMES.get(n / 4)?, (n % 4) as u8 + 1))
}

/// A timestamp as teelog's signed 64-bit nanoseconds.
fn nanos(v: u64, field: &'static str) -> Result<i64, Box<Bad>> {
    i64::try_from(v).map_err(|_| bad(Fault::TimeOutOfRange(v)).at(Seg::Field(field)))
}

fn check_id(id: &[u8], what: &'static str, expected: usize, field: &'static str) -> Written {
    if id.is_empty() || id.len() == expected {
        Ok(())
    } else {
        Err(bad(Fault::IdLength { what, len: id.len(), expected }).at(Seg::Field(field)))
    }
}

/// Writes one record in canonical form and returns its `ts` (`now` if it has no time);
/// `resource` and `scope` are the ranges of `out` holding their rendering.
fn write_record(
    record: &RecordView<'_>,
    now: UnixNanos,
    out: &mut Vec<u8>,
    resource: Range<usize>,
    scope: Range<usize>,
) -> Result<UnixNanos, Box<Bad>> {
    check_id(record.trace_id, "trace id", 16, "trace_id")?;
    check_id(record.span_id, "span id", 8, "span_id")?;
    let ts = match (record.time_unix_nano, record.observed_time_unix_nano) {
        (0, 0) => now,
        (0, observed) => nanos(observed, "observed_time_unix_nano")?,
        (time, _) => nanos(time, "time_unix_nano")?,
    };
    let observed = match record.observed_time_unix_nano {
        0 => None,
        observed => Some(nanos(observed, "observed_time_unix_nano")?),
    };
    let message = match record.body {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    };

    let first = &mut true;
    out.push(b'{');
    if !record.attributes.is_empty() {
        member(out, first, "attributes");
        write_object(record.attributes, 1, out).map_err(|b| b.at(Seg::Field("attributes")))?;
    }
    if let (Some(body), None) = (record.body, message) {
        member(out, first, "body");
        write_value(body, 1, out).map_err(|b| b.at(Seg::Field("body")))?;
    }
    if record.dropped_attributes_count != 0 {
        member(out, first, "dropped_attributes_count");
        write_u64(record.dropped_attributes_count.into(), out);
    }
    if !record.event_name.is_empty() {
        member(out, first, "event_name");
        write_string(record.event_name, out);
    }
    if record.flags != 0 {
        member(out, first, "flags");
        write_u64(record.flags.into(), out);
    }
    if !record.severity_text.is_empty() {
        member(out, first, "level");
        write_string(record.severity_text, out);
    } else if let Some((name, rank)) = short_name(record.severity_number) {
        member(out, first, "level");
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        if rank > 1 {
            out.push(b'0' + rank);
        }
        out.push(b'"');
    }
    if let Some(message) = message {
        member(out, first, "message");
        write_string(message, out);
    }
    if let Some(observed) = observed {
        member(out, first, "observed_ts");
        out.push(b'"');
        write_rfc3339(observed, out);
        out.push(b'"');
    }
    if !resource.is_empty() {
        member(out, first, "resource");
        out.extend_from_within(resource);
    }
    if !scope.is_empty() {
        member(out, first, "scope");
        out.extend_from_within(scope);
    }
    if record.severity_number != 0 {
        member(out, first, "severity_number");
        write_int(record.severity_number.into(), out);
    }
    if !record.span_id.is_empty() {
        member(out, first, "span_id");
        write_hex(record.span_id, out);
    }
    if !record.trace_id.is_empty() {
        member(out, first, "trace_id");
        write_hex(record.trace_id, out);
    }
    // Last: no other member sorts after it.
    member(out, first, "ts");
    out.push(b'"');
    write_rfc3339(ts, out);
    out.push(b'"');
    out.push(b'}');
    Ok(ts)
}
