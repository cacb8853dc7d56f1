//! Signed batches out as OTLP, for an export sink (an OpenTelemetry Collector, Loki's
//! `/otlp/v1/logs`): each record, and the batch itself, becomes a log record whose body is the exact
//! text that teelog hashed or signed, so that the evidence survives the trip and a verifier at the
//! far end can check it (docs/FORMAT.md §13.3).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use teelog_core::batch::ParsedBatch;
use teelog_core::canon::write_string;
use teelog_core::timestamp::parse_rfc3339;

use crate::common::{any_value::Value, AnyValue, KeyValue};
use crate::logs::{LogRecord, ResourceLogs, ScopeLogs};
use crate::resource::Resource;
use crate::ExportLogsServiceRequest;

/// Attribute names of exported log records.
///
/// `audit.sequence.number` is the OpenTelemetry Audit Logging draft's name for a record's place in
/// its stream (draft data model, "Ordering Attributes": `specification/audit/data-model.md` in
/// github.com/apeirora/opentelemetry-specification, proposed upstream as
/// open-telemetry/opentelemetry-specification#5059). The draft's `audit.integrity.value` is not
/// used for the signature: there it is a signature over the JCS form of the OTLP log record itself,
/// which a teelog batch signature is not, and a draft verifier must not take one for the other.
/// The other names are teelog's, in the draft's namespaces.
pub mod attributes {
    /// `"record"` or `"batch"`.
    pub const KIND: &str = "audit.integrity.kind";
    /// The batch's stream.
    pub const STREAM: &str = "audit.integrity.stream";
    /// The batch's epoch (hex).
    pub const EPOCH: &str = "audit.integrity.epoch";
    /// The batch's `seq` (an integer).
    pub const SEQUENCE_NUMBER: &str = "audit.sequence.number";
    /// A record's position in its batch, from 0 (an integer).
    pub const SEQUENCE_INDEX: &str = "audit.sequence.index";
    /// The batch signature, standard base64 as in the batch line.
    pub const SIGNATURE: &str = "audit.integrity.signature";
    /// The batch's Merkle root, hex.
    pub const ROOT: &str = "audit.integrity.root";
}

/// Why a line cannot be exported.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    /// The line does not parse as a teelog batch line; says why.
    #[error("not a teelog batch line: {0}")]
    NotABatch(String),
}

/// The verbatim parts of a batch line. `ParsedBatch` checks the line but does not hand out its
/// record text, which is needed here byte for byte.
#[derive(Deserialize)]
struct LineParts<'a> {
    #[serde(borrow)]
    header: &'a RawValue,
    #[serde(borrow)]
    sig: Cow<'a, str>,
    #[serde(borrow)]
    hints: Cow<'a, str>,
    #[serde(borrow)]
    records: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RecordTs<'a> {
    #[serde(borrow)]
    ts: Cow<'a, str>,
}

/// A record's `ts` as OTLP time; 0 (unknown, to OTLP) when it has none that fits, which only an
/// altered record or one from before 1970 can lack. The record is exported either way: its body is
/// the evidence, and the verifier judges it.
fn record_time(record: &str) -> u64 {
    serde_json::from_str::<RecordTs>(record)
        .ok()
        .and_then(|r| parse_rfc3339(&r.ts).ok())
        .and_then(|nanos| u64::try_from(nanos).ok())
        .unwrap_or(0)
}

fn string_value(text: String) -> Option<AnyValue> {
    Some(AnyValue { value: Some(Value::StringValue(text)) })
}

fn text_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.to_string(), value: string_value(value.to_string()), ..Default::default() }
}

fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(Value::IntValue(value)) }),
        ..Default::default()
    }
}

/// Turns one batch line (docs/FORMAT.md §7) into an OTLP request: first a log record for the batch,
/// whose body is the line without its `records` member, then one per record, whose body is the
/// record's canonical text exactly as it stands in the line. `resource_attrs` become the resource's
/// attributes (e.g. `service.name`). The line is not verified: a tampered batch is exported as it is,
/// for the verifier downstream to find.
pub fn export_batch(
    batch_line: &[u8],
    resource_attrs: &[(String, String)],
) -> Result<ExportLogsServiceRequest, ExportError> {
    use attributes::*;

    let batch = ParsedBatch::parse(batch_line).map_err(|e| ExportError::NotABatch(e.to_string()))?;
    let parts: LineParts<'_> =
        serde_json::from_slice(batch_line).map_err(|e| ExportError::NotABatch(e.to_string()))?;
    let header = &batch.header;
    let seq = i64::try_from(header.seq).map_err(|_| {
        ExportError::NotABatch(format!("seq {} is beyond a 64-bit signed integer", header.seq))
    })?;
    let common = |kind: &str| {
        vec![
            text_attribute(KIND, kind),
            text_attribute(STREAM, &header.stream),
            text_attribute(EPOCH, &header.epoch),
            int_attribute(SEQUENCE_NUMBER, seq),
        ]
    };

    // The header verbatim (its bytes are what the signature covers); sig and hints re-quoted.
    let mut batch_body =
        Vec::with_capacity(parts.header.get().len() + parts.sig.len() + parts.hints.len() + 40);
    batch_body.extend_from_slice(b"{\"v\":1,\"header\":");
    batch_body.extend_from_slice(parts.header.get().as_bytes());
    batch_body.extend_from_slice(b",\"sig\":");
    write_string(&parts.sig, &mut batch_body);
    batch_body.extend_from_slice(b",\"hints\":");
    write_string(&parts.hints, &mut batch_body);
    batch_body.push(b'}');
    let batch_body = String::from_utf8(batch_body).map_err(|e| ExportError::NotABatch(e.to_string()))?;

    let mut batch_attributes = common("batch");
    batch_attributes.push(text_attribute(SIGNATURE, &parts.sig));
    batch_attributes.push(text_attribute(ROOT, &header.root));
    let mut log_records = Vec::with_capacity(parts.records.len() + 1);
    log_records.push(LogRecord {
        time_unix_nano: header.sealed_at_nanos().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
        body: string_value(batch_body),
        attributes: batch_attributes,
        ..Default::default()
    });
    for (index, record) in parts.records.iter().enumerate() {
        let text = record.get();
        let mut record_attributes = common("record");
        // A Vec holds at most isize::MAX elements, so the index fits.
        record_attributes.push(int_attribute(SEQUENCE_INDEX, index as i64));
        log_records.push(LogRecord {
            time_unix_nano: record_time(text),
            body: string_value(text.to_string()),
            attributes: record_attributes,
            ..Default::default()
        });
    }

    let resource = (!resource_attrs.is_empty()).then(|| Resource {
        attributes: resource_attrs.iter().map(|(k, v)| text_attribute(k, v)).collect(),
        ..Default::default()
    });
    Ok(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource,
            // No scope: the Audit Logging draft has exporters leave InstrumentationScope empty.
            scope_logs: vec![ScopeLogs { scope: None, log_records, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    })
}
